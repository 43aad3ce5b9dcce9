//! Reconstruction of one cumulative register into a monotone curve, physics first.
//!
//! Readings arrive in time order. Each becomes a point of the curve (with the energy booked on
//! the segment that ends at it), or is left off the curve. The rules, in the terms of the
//! design note's revision 2 (`h`: the high-water mark; `tol`: the jitter tolerance,
//! `max(jitter_kwh, jitter_rel·h)`; the *bound* `B(Δt)` of an interval: the most energy the
//! device can have delivered in it, see [`Register::bound`]):
//!
//! * **Flat and jitter.** A reading in `[h − tol, h]` is a point with no energy. A jitter
//!   reading ends a segment (R2: later rises are judged from it) but does not lower `h`.
//! * **Normal rise.** `v − h` within `B` of the segment since the last point is energy.
//! * **Spike (R4).** A reading that departs from a trajectory its two neighbours agree on (the
//!   next one comes back to the old curve, plausibly) is left off the curve.
//! * **Jump (R5).** A rise beyond `B` over its own segment that the next reading keeps is a
//!   re-base: no energy. One that the last reading of the data shows is not energy yet.
//! * **Drop (R3).** Below `h − tol`: the first of rollover (`W − h + v`, `W` the register's
//!   wrap) and reset (`v`) that is plausible over the segment, else a re-base.
//! * **Recovered dips (R6).** A re-base, reset or rollover is revoked when, within
//!   [`WINDOW`] readings, the register comes back to the old curve: the readings in between were
//!   a dip (or a run of spikes) of the old curve.
//! * **Nothing silently (R7).** Every amount not booked is reported with its reason.
//!
//! With `max_power_kw` known, `B(Δt) = P·1.1·Δt + tol` (the tolerance covers a reading's
//! uncertainty, e.g. a dip's recovery), and no segment books more than `P·1.1·Δt`: an excess
//! within the tolerance is booked on the following segments as their headroom allows, or set
//! aside as implausible after [`WINDOW`] readings. So the curve never rises faster than the
//! device can. Without it, the device's own evidence bounds a rise: [`RATE_HEADROOM`] times the
//! fastest rate its booked curve showed over the last [`WINDOW`] readings or the rate of the
//! next segment, or [`POWER_HEADROOM`] times the largest power it reported around the segment;
//! with no evidence at all, rises are not bounded and a drop is a reset only down to
//! `reset_fraction` of `h` (a rollover only within `reset_fraction` of `W`).
//!
//! **Locality (R8).** Every decision uses only the readings of this register within
//! [`WINDOW`] before and after it: the mark is the highest accepted value of the last
//! [`WINDOW`] readings (so a register that sits below its mark for longer is re-anchored
//! there), the evidence covers the same readings, and a revocation looks [`WINDOW`] readings
//! ahead. Starting afresh [`CONTEXT`] readings before a range therefore reproduces the state a
//! longer computation has there.

use crate::params::{Params, HEADROOM};
use crate::quality::{Quality, SetAside};
use crate::time::MICROS_PER_HOUR;

/// How many readings of a register one decision may look back or ahead (K).
pub const WINDOW: usize = 8;

/// Readings of a register, before and after a range, that reproduce every decision inside it:
/// the state entering the range depends on [`WINDOW`] readings, each of which was decided with
/// [`WINDOW`] readings of its own around it.
pub const CONTEXT: usize = 3 * WINDOW;

/// Without `max_power_kw`: a rise may be this many times the fastest rate the device showed.
/// Loads switch on and off, so the margin is wide: it only has to catch what no load does (a
/// replacement meter's jump is typically thousands of times the rate around it).
pub const RATE_HEADROOM: f64 = 100.0;

/// Without `max_power_kw`: a rise of up to this fraction of the register's value is never
/// judged against the device's evidence, which a large register's history rarely contradicts.
pub const EVIDENCE_FLOOR: f64 = 0.01;

/// Without `max_power_kw`: a rise may be this many times the largest power it reported.
pub const POWER_HEADROOM: f64 = 2.0;

/// Receives the reconstructed curve of one register, in time order.
pub(crate) trait CurveSink {
    /// Curve point at `t`: the curve rises by `inc` (>= 0) since the previous point, linearly
    /// in time; `event` holds the flags of the event at this reading, if any.
    fn point(&mut self, t: i64, inc: f64, event: Quality);
    /// Energy not booked, detected at `t`, and why.
    fn set_aside(&mut self, t: i64, energy: f64, reason: SetAside);
    /// The reading at `t` is not on the curve (a spike, or part of a dip that recovered).
    fn dropped(&mut self, t: i64);
}

/// One reading of the register, with the largest power (kW, absolute) the device reported in
/// the rows since the register's previous reading, this one's included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub t: i64,
    pub v: f64,
    pub power_kw: Option<f64>,
}

/// The two readings after the one being decided, as far as there are any.
#[derive(Debug, Clone, Copy, Default)]
struct Ahead {
    next: Option<Sample>,
    then: Option<Sample>,
}

impl Ahead {
    /// The rate at which the register goes on rising after `r`: the slower of the next two
    /// segments (so that one jumping reading is no evidence), or the next one at the end.
    fn rate_after(&self, r: Sample) -> Option<f64> {
        let rise = |a: Sample, b: Sample| {
            (b.v > a.v && b.t > a.t).then(|| (b.v - a.v) / (b.t - a.t) as f64)
        };
        let first = rise(r, self.next?)?;
        match self.then {
            Some(then) => rise(self.next?, then).map(|second| first.min(second)),
            None => Some(first),
        }
    }

    /// The largest power the device reported up to the next reading.
    fn power(&self, r: Sample) -> Option<f64> {
        [r.power_kw, self.next.and_then(|n| n.power_kw)]
            .into_iter()
            .flatten()
            .filter(|&kw| kw > 0.0)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    }
}

/// Thresholds derived from [`Params`] once.
#[derive(Debug, Clone, Copy)]
struct Limits {
    jitter_abs: f64,
    jitter_rel: f64,
    reset_fraction: f64,
    /// The value after which the register shows 0 again.
    wrap: Option<f64>,
    /// Most energy per µs the device can deliver (max power with headroom).
    max_rate: Option<f64>,
}

/// An entry of a ring of the last [`WINDOW`] curve points, by point number.
#[derive(Debug, Clone, Copy)]
struct Slot {
    point: u64,
    /// Register value accepted on the current base.
    value: Option<f64>,
    /// The rise the point ended (kWh) and the µs since the mark was raised before it: the
    /// rate is worked out only when evidence is needed (a division per reading otherwise).
    rise: f64,
    over: u64,
    /// Energy of that point's segment beyond the bound, still to be booked.
    carry: f64,
}

const EMPTY: Slot = Slot {
    point: u64::MAX,
    value: None,
    rise: 0.0,
    over: 0,
    carry: 0.0,
};

/// What decisions depend on: the last [`WINDOW`] curve points. (Readings left off the curve
/// take no place in it, so that a run of them does not push the mark out of the window.)
#[derive(Debug, Clone, Copy)]
struct State {
    slots: [Slot; WINDOW],
    /// Curve points so far.
    points: u64,
    /// The high-water mark: the highest value accepted on this base within the window, and
    /// the point that holds it.
    mark: f64,
    mark_point: u64,
    /// Time of the last curve point: where the next segment starts.
    last_point: i64,
    /// When the mark was last raised: a rate measured from there is not inflated by a dip in
    /// between (whose recovery is booked on a shorter segment).
    mark_time: i64,
    /// Sum of the carries: 0 on the common path, where nothing needs looking up.
    carried: f64,
}

impl State {
    fn first(t: i64, v: f64) -> State {
        let mut slots = [EMPTY; WINDOW];
        slots[0] = Slot {
            point: 0,
            value: Some(v),
            ..EMPTY
        };
        State {
            slots,
            points: 1,
            mark: v,
            mark_point: 0,
            last_point: t,
            mark_time: t,
            carried: 0.0,
        }
    }

    fn live(&self) -> impl Iterator<Item = &Slot> {
        let now = self.points;
        self.slots
            .iter()
            .filter(move |s| s.point != u64::MAX && s.point + WINDOW as u64 >= now)
    }

    /// The fastest rise of the booked curve in the window; a flat curve is no evidence of
    /// how fast the register can rise.
    fn max_rate(&self) -> Option<f64> {
        self.live()
            .filter(|s| s.rise > 0.0 && s.over > 0)
            .map(|s| s.rise / s.over as f64)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
    }

    /// Adds a point with `value` (and a new base first, when `rebase`).
    fn accept(&mut self, slot: usize, value: f64, rebase: bool) {
        let point = self.slots[slot].point;
        if rebase {
            // Earlier values no longer bound the mark.
            for s in &mut self.slots {
                s.value = None;
            }
        }
        self.slots[slot].value = Some(value);
        if rebase || value >= self.mark {
            self.mark = value;
            self.mark_point = point;
        } else if self.mark_point + (WINDOW as u64) < self.points {
            // The highest value left the window: the highest of those in it.
            let (mark, mark_point) = self
                .live()
                .filter_map(|s| s.value.map(|v| (v, s.point)))
                .fold(
                    (f64::NEG_INFINITY, point),
                    |m, x| if x.0 > m.0 { x } else { m },
                );
            self.mark = mark;
            self.mark_point = mark_point;
        }
    }
}

/// What a reading turned out to be, before booking.
enum Class {
    /// A point; `inc` is the energy of its segment (before the bound's cap).
    Point {
        inc: f64,
        event: Quality,
        rebase: bool,
        set_aside: Option<(f64, SetAside)>,
    },
    /// Left off the curve, with the energy it showed.
    Dropped(f64),
}

impl Limits {
    fn tolerance(&self, h: f64) -> f64 {
        self.jitter_abs.max(self.jitter_rel * h.abs())
    }

    /// The most energy the device can have delivered between `from` and reading `r` (whose
    /// readings after it are `ahead`): `None` when nothing bounds it.
    fn bound(&self, state: &State, from: i64, r: Sample, ahead: &Ahead, h: f64) -> Option<f64> {
        let dt = r.t.abs_diff(from) as f64;
        let tol = self.tolerance(h);
        if let Some(max_rate) = self.max_rate {
            return Some(max_rate * dt + tol);
        }
        self.evidence_rate(state, r, ahead)
            .map(|rate| rate * dt + tol.max(EVIDENCE_FLOOR * h.abs()))
    }

    /// The device's own evidence of how fast the register can rise (kWh/µs), with headroom.
    fn evidence_rate(&self, state: &State, r: Sample, ahead: &Ahead) -> Option<f64> {
        let rate = [state.max_rate(), ahead.rate_after(r)]
            .into_iter()
            .flatten()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            .map(|x| RATE_HEADROOM * x);
        let power = ahead
            .power(r)
            .map(|kw| POWER_HEADROOM * kw / MICROS_PER_HOUR as f64);
        match (rate, power) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn classify(&self, state: &State, r: Sample, ahead: &Ahead) -> Class {
        let h = state.mark;
        let tol = self.tolerance(h);
        let from = state.last_point;
        if r.v >= h - tol && r.v <= h {
            let event = if r.v < h {
                Quality::JITTER
            } else {
                Quality::empty()
            };
            return Class::Point {
                inc: 0.0,
                event,
                rebase: false,
                set_aside: None,
            };
        }
        let next = ahead.next;
        // R4: the neighbours agree (the next reading continues the curve plausibly) and this
        // reading departs from their trajectory. Only a reading above the next one, or below
        // the mark, can depart: the usual rise needs no more than its own bound.
        let agree = || {
            next.is_some_and(|n| {
                n.v >= h - tol
                    && self
                        .bound(state, from, n, &Ahead::default(), h)
                        .is_none_or(|b| n.v - h <= b)
            })
        };
        let departs = |n: Sample| r.v > n.v + tol + (n.v - h).max(tol) || r.v < h - tol;
        if r.v > h {
            let inc = r.v - h;
            let plausible = self
                .bound(state, from, r, ahead, h)
                .is_none_or(|b| inc <= b);
            let normal = Class::Point {
                inc,
                event: Quality::empty(),
                rebase: false,
                set_aside: None,
            };
            let fell_back = next.is_some_and(|n| r.v > n.v + tol);
            if plausible && !fell_back {
                return normal;
            }
            let agree = agree();
            if agree && next.is_some_and(departs) {
                return Class::Dropped(inc);
            }
            if plausible {
                return normal;
            }
            // R5: implausible over its own segment. Left by the next reading for the old
            // curve: a spike; kept: a re-base; nothing after it yet: not energy.
            return match next {
                None => Class::Dropped(inc),
                Some(n) if agree && n.v < r.v - tol => Class::Dropped(inc),
                Some(_) => Class::Point {
                    inc: 0.0,
                    event: Quality::METER_CHANGE,
                    rebase: true,
                    set_aside: Some((inc, SetAside::Rebase)),
                },
            };
        }
        if agree() && next.is_some_and(departs) {
            return Class::Dropped(0.0);
        }
        // A drop beyond the tolerance (the next reading did not come back); at the end of the
        // data nothing confirms it.
        if next.is_none() {
            return Class::Dropped(0.0);
        }
        self.drop_class(state, r, ahead)
    }

    /// R3: rollover, reset or re-base.
    fn drop_class(&self, state: &State, r: Sample, ahead: &Ahead) -> Class {
        let h = state.mark;
        let dt = r.t.abs_diff(state.last_point) as f64;
        let tol = self.tolerance(h);
        let rollover = self
            .wrap
            .filter(|&w| (0.0..w).contains(&r.v) && h < w)
            .map(|w| (w - h) + r.v);
        let reset = (r.v >= 0.0).then_some(r.v);
        let hard = self.max_rate.map(|rate| rate * dt + tol);
        let evidence = self
            .evidence_rate(state, r, ahead)
            .map(|rate| rate * dt + tol);
        let shape = |inc: f64, is_rollover: bool| {
            let f = self.reset_fraction;
            if is_rollover {
                self.wrap.is_some_and(|w| inc <= f * w)
            } else {
                inc <= f * h
            }
        };
        // With a maximum power, physics decides; without, the device's evidence, and where
        // there is none, the drop's shape: a fall to near zero is a reset, one near the wrap a
        // rollover.
        let plausible = |inc: f64, is_rollover: bool| match (hard, evidence) {
            (Some(b), _) | (None, Some(b)) => inc <= b,
            (None, None) => shape(inc, is_rollover),
        };
        let mut candidates: Vec<(f64, Quality)> =
            [(rollover, Quality::ROLLOVER), (reset, Quality::RESET)]
                .into_iter()
                .filter_map(|(inc, q)| inc.map(|i| (i, q)))
                .filter(|&(inc, q)| plausible(inc, q == Quality::ROLLOVER))
                .collect();
        // Evidence too thin to allow even a fall to near zero: the shape still reads it as a
        // reset.
        if candidates.is_empty() && hard.is_none() && reset.is_some_and(|v| shape(v, false)) {
            candidates.push((r.v, Quality::RESET));
        }
        let point = |inc: f64, event: Quality, set_aside: Option<(f64, SetAside)>| Class::Point {
            inc,
            event,
            rebase: true,
            set_aside,
        };
        match candidates.as_slice() {
            [] => {
                let smallest = [rollover, reset]
                    .into_iter()
                    .flatten()
                    .fold(f64::INFINITY, f64::min);
                point(
                    0.0,
                    Quality::METER_CHANGE,
                    smallest.is_finite().then_some((smallest, SetAside::Rebase)),
                )
            }
            [(inc, event)] => point(*inc, *event, None),
            [(roll, _), (res, _)] => {
                // Both possible. A wrap the device's own rate explains is the natural reading
                // of a drop near the top; otherwise the smaller increment, flagged, with the
                // difference set aside.
                if evidence.is_some_and(|b| *roll <= b) {
                    point(*roll, Quality::ROLLOVER, None)
                } else {
                    let (small, large, event) = if roll <= res {
                        (*roll, *res, Quality::ROLLOVER)
                    } else {
                        (*res, *roll, Quality::RESET)
                    };
                    point(
                        small,
                        event.union(Quality::AMBIGUOUS),
                        Some((large - small, SetAside::Ambiguous)),
                    )
                }
            }
            _ => unreachable!("two candidates at most"),
        }
    }

    /// Whether reading `r` is back on the curve that `episode` left (R6).
    fn returns(&self, episode: &Episode, r: Sample, ahead: &Ahead) -> bool {
        let before = &episode.before;
        let h = before.mark;
        let tol = self.tolerance(h);
        let away = if episode.up {
            r.v < episode.level - tol
        } else {
            r.v > episode.level + tol
        };
        away && r.v >= h - tol
            && self
                .bound(before, before.last_point, r, ahead, h)
                .is_none_or(|b| r.v - h <= b)
    }

    /// Books `inc` on a segment of `dt` µs ending at the point in `slot`: with a maximum power,
    /// at most the bound, older carries first; what does not fit is carried.
    fn book(&self, state: &mut State, slot: usize, inc: f64, dt: u64) -> f64 {
        let Some(max_rate) = self.max_rate else {
            return inc;
        };
        let mut room = max_rate * dt as f64;
        let mut booked = 0.0;
        // Older carries, oldest first (rare: most segments fit their bound).
        while room > 0.0 && state.carried > 0.0 {
            let oldest = (0..WINDOW)
                .filter(|&i| i != slot && state.slots[i].carry > 0.0)
                .min_by_key(|&i| state.slots[i].point);
            let Some(i) = oldest else { break };
            let take = state.slots[i].carry.min(room);
            state.slots[i].carry -= take;
            state.carried -= take;
            room -= take;
            booked += take;
        }
        let take = inc.min(room);
        state.slots[slot].carry = inc - take;
        state.carried = (state.carried + inc - take).max(0.0);
        booked + take
    }
}

/// A re-base, reset or rollover that a return to the old curve within [`WINDOW`] readings
/// revokes.
#[derive(Debug, Clone)]
struct Episode {
    start: u64,
    /// The state before the episode's first reading.
    before: State,
    /// The value the register moved to.
    level: f64,
    up: bool,
    /// How much of the pending output predates the episode.
    output_before: usize,
    /// Readings of the episode so far, and what each showed beyond the old curve.
    readings: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, Copy)]
enum Output {
    Point(i64, f64, Quality),
    SetAside(i64, f64, SetAside),
    Dropped(i64),
}

impl Output {
    fn emit<S: CurveSink>(self, sink: &mut S) {
        match self {
            Output::Point(t, inc, event) => sink.point(t, inc, event),
            Output::SetAside(t, energy, reason) => sink.set_aside(t, energy, reason),
            Output::Dropped(t) => sink.dropped(t),
        }
    }
}

/// Reconstructor of one register; feed it the register's finite values in time order.
#[derive(Debug, Clone)]
pub(crate) struct Register {
    limits: Limits,
    state: Option<State>,
    /// The latest readings (up to three, oldest first), each decided once the two after it
    /// have arrived (or at the end).
    held: [Sample; 3],
    held_len: usize,
    next_index: u64,
    /// Open episodes, oldest first; while there are any, output waits in `pending`.
    episodes: Vec<Episode>,
    pending: Vec<Output>,
}

impl Register {
    pub(crate) fn new(params: &Params) -> Register {
        Register {
            limits: Limits {
                jitter_abs: params.jitter_kwh,
                jitter_rel: params.jitter_rel,
                reset_fraction: params.reset_fraction,
                wrap: params.register_wrap_kwh(),
                max_rate: params
                    .max_power_kw
                    .map(|kw| kw * HEADROOM / MICROS_PER_HOUR as f64),
            },
            state: None,
            held: [Sample {
                t: 0,
                v: 0.0,
                power_kw: None,
            }; 3],
            held_len: 0,
            next_index: 0,
            episodes: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Takes the next reading; `t` must be later than every earlier one and `v` finite.
    pub(crate) fn push<S: CurveSink>(&mut self, sample: Sample, sink: &mut S) {
        let index = self.next_index;
        self.next_index += 1;
        if self.state.is_none() {
            // The first reading starts the curve.
            self.state = Some(State::first(sample.t, sample.v));
            sink.point(sample.t, 0.0, Quality::empty());
            return;
        }
        // A ring of three: the reading two back is decided now, with the two after it.
        self.held[index as usize % 3] = sample;
        self.held_len += 1;
        if self.held_len == 3 {
            let r = self.held[(index as usize + 1) % 3];
            let ahead = Ahead {
                next: Some(self.held[(index as usize + 2) % 3]),
                then: Some(sample),
            };
            self.decide(index - 2, r, &ahead, sink);
            self.held_len = 2;
        }
    }

    /// End of data: the last readings have fewer (or no) readings after them to confirm them.
    pub(crate) fn finish<S: CurveSink>(&mut self, sink: &mut S) {
        let n = self.held_len as u64;
        self.held_len = 0;
        let ring = self.held;
        let held = |k: u64| ring[k as usize % 3];
        let first = self.next_index - n;
        for index in first..self.next_index {
            let ahead = Ahead {
                next: (index + 1 < self.next_index).then(|| held(index + 1)),
                then: (index + 2 < self.next_index).then(|| held(index + 2)),
            };
            let r = held(index);
            self.decide(index, r, &ahead, sink);
        }
        self.episodes.clear();
        for out in self.pending.drain(..) {
            out.emit(sink);
        }
    }

    fn output<S: CurveSink>(&mut self, out: Output, sink: &mut S) {
        if self.episodes.is_empty() {
            out.emit(sink);
        } else {
            self.pending.push(out);
        }
    }

    fn decide<S: CurveSink>(&mut self, index: u64, r: Sample, ahead: &Ahead, sink: &mut S) {
        if !self.episodes.is_empty() {
            // Episodes older than the window are final.
            self.episodes.retain(|e| e.start + WINDOW as u64 >= index);
            if !self.episodes.is_empty() {
                self.revoke_if_returned(r, ahead);
            }
            if self.episodes.is_empty() {
                for out in self.pending.drain(..) {
                    out.emit(sink);
                }
            }
        }
        let state = self
            .state
            .as_ref()
            .expect("decided after the first reading");
        match self.limits.classify(state, r, ahead) {
            Class::Dropped(showed) => {
                self.output(Output::Dropped(r.t), sink);
                self.output(Output::SetAside(r.t, showed, SetAside::Spike), sink);
                for e in &mut self.episodes {
                    e.readings.push((r.t, showed));
                }
            }
            Class::Point {
                inc,
                event,
                rebase,
                set_aside,
            } => {
                let state = self
                    .state
                    .as_mut()
                    .expect("decided after the first reading");
                let h = state.mark;
                let before = rebase.then_some(*state);
                let dt = r.t.abs_diff(state.last_point);
                // The point takes the slot of the one WINDOW points back, whose carry, if any,
                // found no room within the window.
                let slot = state.points as usize % WINDOW;
                let expired = std::mem::replace(
                    &mut state.slots[slot],
                    Slot {
                        point: state.points,
                        ..EMPTY
                    },
                );
                state.points += 1;
                if expired.carry > 0.0 {
                    state.carried = (state.carried - expired.carry).max(0.0);
                }
                let booked = self.limits.book(state, slot, inc, dt);
                // Evidence of how fast the register rises: from where the mark was raised.
                state.slots[slot].rise = inc;
                state.slots[slot].over = r.t.abs_diff(state.mark_time);
                state.accept(slot, r.v, rebase);
                state.last_point = r.t;
                if inc > 0.0 || rebase {
                    state.mark_time = r.t;
                }
                if expired.carry > 0.0 {
                    self.output(
                        Output::SetAside(r.t, expired.carry, SetAside::Implausible),
                        sink,
                    );
                }
                for e in &mut self.episodes {
                    e.readings.push((r.t, 0.0));
                }
                if let Some(before) = before {
                    self.episodes.push(Episode {
                        start: index,
                        before,
                        level: r.v,
                        up: r.v > h,
                        output_before: self.pending.len(),
                        // Revoked, a jump showed its rise as a spike; a drop showed nothing.
                        readings: vec![(
                            r.t,
                            if r.v > h {
                                set_aside.map_or(0.0, |s| s.0)
                            } else {
                                0.0
                            },
                        )],
                    });
                }
                self.output(Output::Point(r.t, booked, event), sink);
                if let Some((energy, reason)) = set_aside {
                    self.output(Output::SetAside(r.t, energy, reason), sink);
                }
            }
        }
    }

    /// R6: a reading back on the curve that an open episode left revokes that episode (and
    /// every later one): its readings become a dip of the old curve.
    fn revoke_if_returned(&mut self, r: Sample, ahead: &Ahead) {
        let Some(position) = self
            .episodes
            .iter()
            .position(|e| self.limits.returns(e, r, ahead))
        else {
            return;
        };
        let episode = self.episodes[position].clone();
        self.episodes.truncate(position);
        self.pending.truncate(episode.output_before);
        for &(t, showed) in &episode.readings {
            self.pending.push(Output::Dropped(t));
            self.pending
                .push(Output::SetAside(t, showed, SetAside::Spike));
        }
        for e in &mut self.episodes {
            e.readings.extend_from_slice(&episode.readings);
        }
        self.state = Some(episode.before);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records the curve for checking against the contract directly.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        /// (t, cumulative C, event flags)
        pub(crate) points: Vec<(i64, f64, Quality)>,
        pub(crate) dropped: Vec<i64>,
        pub(crate) set_aside: Vec<(i64, f64, SetAside)>,
    }

    impl CurveSink for Recorder {
        fn point(&mut self, t: i64, inc: f64, event: Quality) {
            assert!(inc >= 0.0, "negative increment {inc} at {t}");
            if let Some(&(last, _, _)) = self.points.last() {
                assert!(t > last, "point at {t} after {last}");
            }
            let c = self.points.last().map_or(0.0, |p| p.1) + inc;
            self.points.push((t, c, event));
        }
        fn set_aside(&mut self, t: i64, energy: f64, reason: SetAside) {
            self.set_aside.push((t, energy, reason));
        }
        fn dropped(&mut self, t: i64) {
            self.dropped.push(t);
        }
    }

    impl Recorder {
        /// C(t) by linear interpolation between points; `t` within the span.
        pub(crate) fn curve_at(&self, t: i64) -> f64 {
            let i = self.points.partition_point(|p| p.0 < t);
            let (t1, c1, _) = self.points[i];
            if t1 == t {
                return c1;
            }
            let (t0, c0, _) = self.points[i - 1];
            c0 + (c1 - c0) * ((t - t0) as f64 / (t1 - t0) as f64)
        }
    }

    const MIN: i64 = 60_000_000;

    /// Reconstructs values given at minutes.
    pub(crate) fn run(params: &Params, readings: &[(i64, f64)]) -> Recorder {
        let mut register = Register::new(params);
        let mut recorder = Recorder::default();
        for &(minute, v) in readings {
            register.push(
                Sample {
                    t: minute * MIN,
                    v,
                    power_kw: None,
                },
                &mut recorder,
            );
        }
        register.finish(&mut recorder);
        recorder
    }

    fn curve(recorder: &Recorder) -> Vec<(i64, f64)> {
        recorder
            .points
            .iter()
            .map(|&(t, c, _)| (t / MIN, (c * 1e9).round() / 1e9))
            .collect()
    }

    fn events(recorder: &Recorder) -> Vec<(i64, Quality)> {
        let mut events: Vec<(i64, Quality)> = recorder
            .points
            .iter()
            .filter(|p| !p.2.is_empty())
            .map(|&(t, _, q)| (t / MIN, q))
            .chain(
                recorder
                    .dropped
                    .iter()
                    .map(|&t| (t / MIN, Quality::SPIKE_DROPPED)),
            )
            .collect();
        events.sort_by_key(|e| e.0);
        events
    }

    fn set_aside(recorder: &Recorder) -> Vec<(i64, f64, SetAside)> {
        recorder
            .set_aside
            .iter()
            .filter(|s| s.1 > 0.0)
            .map(|&(t, e, r)| (t / MIN, (e * 1e9).round() / 1e9, r))
            .collect()
    }

    fn with_power(kw: f64) -> Params {
        Params {
            max_power_kw: Some(kw),
            ..Params::default()
        }
    }

    #[test]
    fn normal_rises_accumulate() {
        let r = run(&Params::default(), &[(0, 100.0), (30, 110.0), (60, 125.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 10.0), (60, 25.0)]);
        assert!(events(&r).is_empty());
    }

    #[test]
    fn jitter_dip_is_flat_and_counted_once() {
        let r = run(
            &Params::default(),
            &[(0, 3598.0), (10, 3598.3), (20, 3598.2), (30, 3598.4)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (10, 0.3), (20, 0.3), (30, 0.4)]);
        assert_eq!(events(&r), [(20, Quality::JITTER)]);
    }

    #[test]
    fn relative_jitter_tolerance_applies_to_large_registers() {
        // tol = max(0.5, 1e-4 * 50000) = 5 kWh.
        let r = run(
            &Params::default(),
            &[(0, 50_000.0), (5, 49_996.0), (10, 50_001.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (5, 0.0), (10, 1.0)]);
        assert_eq!(events(&r), [(5, Quality::JITTER)]);
    }

    #[test]
    fn rollover_at_the_registers_largest_value() {
        // The register shows at most 99,999.9 and 0.0 after it (F8: the wrap step counts).
        for max_power_kw in [None, Some(100.0)] {
            let params = Params {
                max_power_kw,
                register_max_kwh: Some(99_999.9),
                ..Params::default()
            };
            let r = run(&params, &[(0, 99_999.8), (30, 0.1), (60, 0.4)]);
            assert_eq!(curve(&r), [(0, 0.0), (30, 0.3), (60, 0.6)]);
            assert_eq!(events(&r), [(30, Quality::ROLLOVER)]);
            let r = run(&params, &[(0, 99_990.0), (30, 5.0), (60, 8.0)]);
            assert_eq!(curve(&r), [(0, 0.0), (30, 15.0), (60, 18.0)]);
        }
        // At 50 kW, 5 minutes allow 4.6 kWh, and the register's tolerance 10 more: too little
        // for the 15 kWh wrap, enough for 5 kWh from zero.
        let params = Params {
            register_max_kwh: Some(99_999.9),
            ..with_power(50.0)
        };
        // (5 kWh in 5 minutes is more than 50 kW allow: the segment books 4.58, the next one
        // the rest.)
        let r = run(&params, &[(0, 99_990.0), (5, 5.0), (10, 8.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (5, 4.583333333), (10, 8.0)]);
        assert_eq!(events(&r), [(5, Quality::RESET)]);
    }

    #[test]
    fn reset_with_max_power() {
        let r = run(
            &with_power(100.0),
            &[(0, 1000.0), (30, 1010.0), (60, 5.0), (90, 20.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (30, 10.0), (60, 15.0), (90, 30.0)]);
        assert_eq!(events(&r), [(60, Quality::RESET)]);
    }

    #[test]
    fn reset_without_max_power_is_judged_by_the_devices_rate() {
        let r = run(&Params::default(), &[(0, 1000.0), (30, 5.0), (60, 8.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 5.0), (60, 8.0)]);
        assert_eq!(events(&r), [(30, Quality::RESET)]);
    }

    #[test]
    fn replacement_meter_is_rebased_not_counted() {
        // 3,000 kWh in 30 minutes is far beyond what the meter shows it does (2 kWh then).
        let r = run(
            &Params::default(),
            &[(0, 5000.0), (30, 3000.0), (60, 3002.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 2.0)]);
        assert_eq!(events(&r), [(30, Quality::METER_CHANGE)]);
        assert_eq!(set_aside(&r), [(30, 3000.0, SetAside::Rebase)]);
        // With max power: 500 kWh cannot accumulate from zero in 30 minutes at 100 kW.
        let r = run(&with_power(100.0), &[(0, 5000.0), (30, 500.0), (60, 502.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 2.0)]);
        assert_eq!(events(&r), [(30, Quality::METER_CHANGE)]);
        // A replacement reading higher than the old one is an implausible rise that persists.
        let r = run(
            &with_power(100.0),
            &[(0, 500.0), (30, 9000.0), (60, 9002.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 2.0)]);
        assert_eq!(events(&r), [(30, Quality::METER_CHANGE)]);
        assert_eq!(set_aside(&r), [(30, 8500.0, SetAside::Rebase)]);
    }

    #[test]
    fn upward_spike_is_dropped_with_or_without_max_power() {
        for params in [Params::default(), with_power(100.0)] {
            let r = run(
                &params,
                &[
                    (0, 100.0),
                    (30, 105.0),
                    (35, 9999.0),
                    (40, 106.0),
                    (45, 107.0),
                ],
            );
            assert_eq!(curve(&r), [(0, 0.0), (30, 5.0), (40, 6.0), (45, 7.0)]);
            assert_eq!(events(&r), [(35, Quality::SPIKE_DROPPED)]);
            assert_eq!(set_aside(&r), [(35, 9894.0, SetAside::Spike)]);
        }
    }

    #[test]
    fn zero_glitch_is_dropped() {
        for params in [Params::default(), with_power(100.0)] {
            let r = run(&params, &[(0, 100.0), (5, 0.0), (10, 100.2)]);
            assert_eq!(curve(&r), [(0, 0.0), (10, 0.2)]);
            assert_eq!(events(&r), [(5, Quality::SPIKE_DROPPED)]);
        }
    }

    #[test]
    fn an_unconfirmed_last_reading_is_not_energy() {
        let r = run(&Params::default(), &[(0, 100.0), (30, 110.0), (35, 9999.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 10.0)]);
        assert_eq!(events(&r), [(35, Quality::SPIKE_DROPPED)]);
        let r = run(&Params::default(), &[(0, 1000.0), (30, 1010.0), (60, 5.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 10.0)]);
    }

    #[test]
    fn a_confirmed_reset_then_jitter_against_the_new_mark() {
        let r = run(
            &Params::default(),
            &[(0, 1000.0), (30, 5.0), (60, 4.8), (90, 6.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (30, 5.0), (60, 5.0), (90, 6.0)]);
        assert_eq!(events(&r), [(30, Quality::RESET), (60, Quality::JITTER)]);
    }

    #[test]
    fn negative_value_is_never_a_reset() {
        let r = run(&with_power(100.0), &[(0, 10.0), (30, -3.0), (60, -2.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 1.0)]);
        assert_eq!(events(&r), [(30, Quality::METER_CHANGE)]);
    }

    #[test]
    fn plausibility_is_judged_on_the_segment_the_energy_is_booked_on() {
        // R2: the jitter reading at 30 says the register was still at 0 then; 110.4 kWh in the
        // 30 minutes after it is beyond 100 kW (55.5 kWh with headroom and tolerance).
        let r = run(
            &with_power(100.0),
            &[(0, 0.0), (30, -0.1), (60, 110.4), (90, 111.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 0.0), (90, 0.6)]);
        assert_eq!(
            events(&r),
            [(30, Quality::JITTER), (60, Quality::METER_CHANGE)]
        );
        // Without the dip, 60 minutes allow it: 110 kWh are booked by 60 (100 kW with
        // headroom), the 0.4 within the tolerance on the next segment.
        let r = run(&with_power(100.0), &[(0, 0.0), (60, 110.4), (90, 111.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (60, 110.0), (90, 111.0)]);
        assert_eq!(set_aside(&r), []);
    }

    #[test]
    fn no_segment_books_more_than_the_maximum_power() {
        // A dip's recovery shows 0.6 kWh in 10 s at 100 kW (0.31 kWh allowed): within the
        // tolerance, so energy, but booked as the following segments have room for it.
        let params = with_power(100.0);
        let readings: Vec<(i64, f64)> = (0..20)
            .map(|i| (i, 100.0 + 1.5 * i as f64 - if i == 4 { 0.5 } else { 0.0 }))
            .collect();
        let mut register = Register::new(&params);
        let mut r = Recorder::default();
        for &(minute, v) in &readings {
            register.push(
                Sample {
                    t: minute * MIN,
                    v,
                    power_kw: None,
                },
                &mut r,
            );
        }
        register.finish(&mut r);
        let cap = 100.0 * HEADROOM / 60.0;
        for pair in r.points.windows(2) {
            let minutes = (pair[1].0 - pair[0].0) as f64 / MIN as f64;
            assert!(pair[1].1 - pair[0].1 <= cap * minutes + 1e-9, "{pair:?}");
        }
        let total = r.points.last().unwrap().1;
        assert!((total - 1.5 * 19.0).abs() < 1e-9, "{total}");
    }
}
