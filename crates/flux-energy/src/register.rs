//! Streaming reconstruction of one cumulative register into a monotone curve.
//!
//! The reconstructor keeps the high-water mark `h` (last accepted value) and the time `t_h`
//! it was accepted, classifies each reading against them, and holds back at most one
//! anomalous reading (a *candidate*) until the next reading shows whether it was a
//! single-reading glitch or a real change. Accepted readings become curve points, handed to a
//! [`CurveSink`] in time order.

use crate::params::{Params, HEADROOM};
use crate::quality::Quality;
use crate::time::MICROS_PER_HOUR;

/// Receives the reconstructed curve of one register.
pub(crate) trait CurveSink {
    /// Curve point at `t`: the curve rises by `inc` (>= 0) since the previous point, linearly
    /// in time; `event` holds the flags of the event detected at this reading, if any.
    fn point(&mut self, t: i64, inc: f64, event: Quality);
    /// The candidate reading at `t` was a single-reading glitch and is not on the curve.
    fn spike_dropped(&mut self, t: i64);
}

/// Thresholds derived from [`Params`] once, so that classifying costs a few float operations.
#[derive(Debug, Clone, Copy)]
struct Limits {
    jitter_abs: f64,
    jitter_rel: f64,
    reset_fraction: f64,
    modulus: Option<f64>,
    /// Most energy per µs a plausible rise may add (max power with headroom).
    max_rate: Option<f64>,
}

/// The high-water mark: last accepted value and when it was accepted.
#[derive(Debug, Clone, Copy)]
struct Mark {
    h: f64,
    t_h: i64,
}

/// An anomalous reading awaiting the next one. `inc` and `event` are what confirming it adds
/// to the curve.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    t: i64,
    v: f64,
    inc: f64,
    event: Quality,
}

enum Class {
    Normal(f64),
    Jitter,
    Candidate { inc: f64, event: Quality },
}

impl Limits {
    fn tolerance(&self, h: f64) -> f64 {
        self.jitter_abs.max(self.jitter_rel * h)
    }

    /// Whether the register can have gained `inc` in `dt` µs; with unknown max power, whether
    /// it is at most `cap`. Non-finite increments (absurd values) are never plausible.
    fn could_gain(&self, inc: f64, dt: u64, cap: f64) -> bool {
        inc.is_finite()
            && match self.max_rate {
                Some(rate) => inc <= rate * dt as f64 + self.jitter_abs,
                None => inc <= cap,
            }
    }

    /// Whether reading `(t, v)` continues the curve of `mark`.
    fn fits(&self, mark: Mark, t: i64, v: f64) -> bool {
        v >= mark.h - self.tolerance(mark.h)
            && self.could_gain(v - mark.h, t.abs_diff(mark.t_h), f64::INFINITY)
    }

    fn classify(&self, mark: Mark, t: i64, v: f64) -> Class {
        let dt = t.abs_diff(mark.t_h);
        if v >= mark.h {
            let inc = v - mark.h;
            return if self.could_gain(inc, dt, f64::INFINITY) {
                Class::Normal(inc)
            } else {
                // Implausible rise: if it persists the register was re-based, and the jump
                // is not energy.
                Class::Candidate {
                    inc: 0.0,
                    event: Quality::METER_CHANGE,
                }
            };
        }
        if mark.h - v <= self.tolerance(mark.h) {
            return Class::Jitter;
        }
        if let Some(modulus) = self.modulus {
            let wrapped = (v - mark.h).rem_euclid(modulus);
            if self.could_gain(wrapped, dt, self.reset_fraction * modulus) {
                return Class::Candidate {
                    inc: wrapped,
                    event: Quality::ROLLOVER,
                };
            }
        }
        // A negative value cannot have accumulated from zero.
        if v >= 0.0 && self.could_gain(v, dt, self.reset_fraction * mark.h) {
            Class::Candidate {
                inc: v,
                event: Quality::RESET,
            }
        } else {
            Class::Candidate {
                inc: 0.0,
                event: Quality::METER_CHANGE,
            }
        }
    }
}

/// Reconstructor of one register; feed it the register's finite values in time order.
#[derive(Debug, Clone)]
pub(crate) struct Register {
    limits: Limits,
    mark: Option<Mark>,
    pending: Option<Candidate>,
}

impl Register {
    pub(crate) fn new(params: &Params) -> Register {
        Register {
            limits: Limits {
                jitter_abs: params.jitter_kwh,
                jitter_rel: params.jitter_rel,
                reset_fraction: params.reset_fraction,
                modulus: params.register_max_kwh,
                max_rate: params
                    .max_power_kw
                    .map(|kw| kw * HEADROOM / MICROS_PER_HOUR as f64),
            },
            mark: None,
            pending: None,
        }
    }

    /// Takes the next reading; `t` must be later than every earlier one and `v` finite.
    pub(crate) fn push<S: CurveSink>(&mut self, t: i64, v: f64, sink: &mut S) {
        let Some(mut mark) = self.mark else {
            self.mark = Some(Mark { h: v, t_h: t });
            sink.point(t, 0.0, Quality::empty());
            return;
        };
        if let Some(candidate) = self.pending.take() {
            if self.limits.fits(mark, t, v) {
                sink.spike_dropped(candidate.t);
            } else {
                mark = confirm(candidate, sink);
            }
        }
        match self.limits.classify(mark, t, v) {
            Class::Normal(inc) => {
                mark = Mark { h: v, t_h: t };
                sink.point(t, inc, Quality::empty());
            }
            // A dip that recovers is counted once: h stays, so the recovery adds nothing.
            Class::Jitter => sink.point(t, 0.0, Quality::JITTER),
            Class::Candidate { inc, event } => {
                self.pending = Some(Candidate { t, v, inc, event });
            }
        }
        self.mark = Some(mark);
    }

    /// End of data: a pending candidate has no next reading to refute it, so it stands.
    pub(crate) fn finish<S: CurveSink>(&mut self, sink: &mut S) {
        if let Some(candidate) = self.pending.take() {
            self.mark = Some(confirm(candidate, sink));
        }
    }
}

fn confirm<S: CurveSink>(candidate: Candidate, sink: &mut S) -> Mark {
    sink.point(candidate.t, candidate.inc, candidate.event);
    Mark {
        h: candidate.v,
        t_h: candidate.t,
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
    }

    impl CurveSink for Recorder {
        fn point(&mut self, t: i64, inc: f64, event: Quality) {
            assert!(inc >= 0.0, "negative increment {inc} at {t}");
            let c = self.points.last().map_or(0.0, |p| p.1) + inc;
            self.points.push((t, c, event));
        }
        fn spike_dropped(&mut self, t: i64) {
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
            register.push(minute * MIN, v, &mut recorder);
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
        recorder
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
    fn rollover_with_known_modulus() {
        for max_power_kw in [None, Some(100.0)] {
            let params = Params {
                max_power_kw,
                register_max_kwh: Some(100_000.0),
                ..Params::default()
            };
            let r = run(&params, &[(0, 99_990.0), (30, 5.0), (60, 8.0)]);
            assert_eq!(curve(&r), [(0, 0.0), (30, 15.0), (60, 18.0)]);
            assert_eq!(events(&r), [(30, Quality::ROLLOVER)]);
        }
        // At 100 kW, 5 minutes allow 9.7 kWh: too little for the 15 kWh wrap, enough for 5
        // kWh from zero.
        let params = Params {
            register_max_kwh: Some(100_000.0),
            ..with_power(100.0)
        };
        let r = run(&params, &[(0, 99_990.0), (5, 5.0), (10, 8.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (5, 5.0), (10, 8.0)]);
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
    fn reset_without_max_power_uses_reset_fraction() {
        let r = run(&Params::default(), &[(0, 1000.0), (30, 5.0), (60, 8.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 5.0), (60, 8.0)]);
        assert_eq!(events(&r), [(30, Quality::RESET)]);
    }

    #[test]
    fn replacement_meter_is_rebased_not_counted() {
        // Without max power: 3000 is more than 10% of 5000, so not a reset.
        let r = run(
            &Params::default(),
            &[(0, 5000.0), (30, 3000.0), (60, 3002.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 2.0)]);
        assert_eq!(events(&r), [(30, Quality::METER_CHANGE)]);
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
    }

    #[test]
    fn upward_spike_is_dropped_with_max_power() {
        let r = run(
            &with_power(100.0),
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
    fn candidate_at_end_of_data_is_confirmed() {
        let r = run(&Params::default(), &[(0, 1000.0), (30, 5.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 5.0)]);
        assert_eq!(events(&r), [(30, Quality::RESET)]);
    }

    #[test]
    fn reading_after_dropped_candidate_can_be_a_candidate() {
        // 0 is a glitch (101 continues the old curve); 2 then resets and 3 confirms it.
        let r = run(
            &Params::default(),
            &[(0, 100.0), (5, 0.0), (10, 101.0), (15, 2.0), (20, 3.0)],
        );
        assert_eq!(curve(&r), [(0, 0.0), (10, 1.0), (15, 3.0), (20, 4.0)]);
        assert_eq!(
            events(&r),
            [(15, Quality::RESET), (5, Quality::SPIKE_DROPPED)]
        );
    }

    #[test]
    fn confirmed_candidate_then_next_reading_classified_against_new_mark() {
        // 5 resets; 4 is within jitter tolerance of the new mark 5.
        let r = run(&Params::default(), &[(0, 1000.0), (30, 5.0), (60, 4.8)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 5.0), (60, 5.0)]);
        assert_eq!(events(&r), [(30, Quality::RESET), (60, Quality::JITTER)]);
    }

    #[test]
    fn negative_value_is_never_a_reset() {
        let r = run(&with_power(100.0), &[(0, 10.0), (30, -3.0), (60, -2.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 1.0)]);
        assert_eq!(events(&r), [(30, Quality::METER_CHANGE)]);
    }

    #[test]
    fn plausibility_is_measured_from_the_high_water_mark_time() {
        // At 100 kW, 60 minutes allow 100 * 1.1 + 0.5 = 110.5 kWh; the jitter reading at 30
        // does not shorten that interval.
        let r = run(&with_power(100.0), &[(0, 0.0), (30, -0.1), (60, 110.4)]);
        assert_eq!(curve(&r), [(0, 0.0), (30, 0.0), (60, 110.4)]);
        let r = run(&with_power(100.0), &[(0, 0.0), (60, 110.6)]);
        assert_eq!(curve(&r), [(0, 0.0), (60, 0.0)]);
        assert_eq!(events(&r), [(60, Quality::METER_CHANGE)]);
        // A persisting implausible rise re-bases the curve.
        let r = run(&with_power(100.0), &[(0, 0.0), (60, 500.0), (90, 502.0)]);
        assert_eq!(curve(&r), [(0, 0.0), (60, 0.0), (90, 2.0)]);
        assert_eq!(events(&r), [(60, Quality::METER_CHANGE)]);
    }
}
