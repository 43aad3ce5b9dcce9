//! Quality flags of one register in one bucket.

use std::fmt;

/// A set of quality flags for one register in one bucket.
///
/// Event flags (everything but [`Quality::INTERPOLATED`]) go on the bucket containing the
/// reading at which the event was detected; an event at a reading outside the grid is not
/// recorded anywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Quality(u8);

impl Quality {
    /// The bucket intersects the register's span but holds no reading of the register: its
    /// delta comes from interpolation alone.
    pub const INTERPOLATED: Quality = Quality(1);
    /// The register fell back towards zero and counted on from there.
    pub const RESET: Quality = Quality(1 << 1);
    /// The register wrapped at its modulus (`energy_register_max_kwh`).
    pub const ROLLOVER: Quality = Quality(1 << 2);
    /// A reading dipped below the high-water mark within tolerance and was counted as no change.
    pub const JITTER: Quality = Quality(1 << 3);
    /// The register jumped to an unrelated value (meter replaced, implausible rise that
    /// persisted); the curve was re-based without counting the jump.
    pub const METER_CHANGE: Quality = Quality(1 << 4);
    /// A reading was left off the curve: it departed from a trajectory its neighbours agree
    /// on, or was part of a dip the register came back from, or jumped at the end of the data
    /// with nothing after it to confirm it.
    pub const SPIKE_DROPPED: Quality = Quality(1 << 5);
    /// Energy the physical bound could not take was set aside (see [`SetAside::Implausible`]).
    pub const IMPLAUSIBLE: Quality = Quality(1 << 6);
    /// A drop both a rollover and a reset could explain: the one the evidence favours was
    /// booked (see [`SetAside::Ambiguous`]).
    pub const AMBIGUOUS: Quality = Quality(1 << 7);
    /// Events that start a new base of the register: a later return to the old curve within
    /// the decision window revokes them.
    pub const REBASED: Quality = Quality(Self::RESET.0 | Self::ROLLOVER.0 | Self::METER_CHANGE.0);

    const NAMES: [&'static str; 8] = [
        "interpolated",
        "reset",
        "rollover",
        "jitter",
        "meter_change",
        "spike_dropped",
        "implausible",
        "ambiguous",
    ];

    /// No flags.
    pub const fn empty() -> Quality {
        Quality(0)
    }

    /// The flags of [`Quality::bits`].
    pub const fn from_bits(bits: u8) -> Quality {
        Quality(bits)
    }

    /// The raw bits, in the order of [`Quality::names`] from the least significant bit.
    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Quality) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Quality) -> Quality {
        Quality(self.0 | other.0)
    }

    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: Quality) -> bool {
        self.0 & other.0 != 0
    }

    /// Names of the set flags: "interpolated", "reset", "rollover", "jitter", "meter_change",
    /// "spike_dropped", "implausible", "ambiguous", in that order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        let bits = self.0;
        Self::NAMES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| bits & (1 << bit) != 0)
            .map(|(_, name)| *name)
    }
}

impl fmt::Debug for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Quality(")?;
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
        }
        f.write_str(")")
    }
}

/// Why energy was not booked (R7: nothing is discarded silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAside {
    /// What a reading left off the curve showed beyond the curve.
    Spike,
    /// A jump or drop to an unrelated value (meter replaced, re-based): the jump, or the
    /// smallest reset or rollover that could have explained a drop.
    Rebase,
    /// Energy beyond the maximum power that the following readings had no headroom for.
    Implausible,
    /// The difference to the larger of two readings of a drop (rollover or reset) that were
    /// both physically possible.
    Ambiguous,
}

impl SetAside {
    pub const ALL: [SetAside; 4] = [
        SetAside::Spike,
        SetAside::Rebase,
        SetAside::Implausible,
        SetAside::Ambiguous,
    ];

    /// The name the SQL functions report.
    pub const fn name(self) -> &'static str {
        match self {
            SetAside::Spike => "spike",
            SetAside::Rebase => "re-base",
            SetAside::Implausible => "implausible",
            SetAside::Ambiguous => "ambiguous",
        }
    }

    /// The flag its bucket gets.
    pub const fn flag(self) -> Quality {
        match self {
            SetAside::Spike => Quality::SPIKE_DROPPED,
            SetAside::Rebase => Quality::METER_CHANGE,
            SetAside::Implausible => Quality::IMPLAUSIBLE,
            SetAside::Ambiguous => Quality::AMBIGUOUS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_names() {
        let all = [
            Quality::INTERPOLATED,
            Quality::RESET,
            Quality::ROLLOVER,
            Quality::JITTER,
            Quality::METER_CHANGE,
            Quality::SPIKE_DROPPED,
            Quality::IMPLAUSIBLE,
            Quality::AMBIGUOUS,
        ]
        .into_iter()
        .fold(Quality::empty(), Quality::union);
        assert_eq!(
            all.names().collect::<Vec<_>>(),
            [
                "interpolated",
                "reset",
                "rollover",
                "jitter",
                "meter_change",
                "spike_dropped",
                "implausible",
                "ambiguous"
            ]
        );
        assert_eq!(all.bits(), 0b1111_1111);
        assert!(Quality::REBASED.intersects(Quality::RESET));
        assert!(!Quality::REBASED.intersects(Quality::JITTER));

        let q = Quality::SPIKE_DROPPED.union(Quality::RESET);
        assert!(q.contains(Quality::RESET) && q.contains(Quality::SPIKE_DROPPED));
        assert!(!q.contains(Quality::RESET.union(Quality::JITTER)));
        assert!(q.contains(Quality::empty()));
        assert!(!q.is_empty() && Quality::default().is_empty());
        assert_eq!(q.names().collect::<Vec<_>>(), ["reset", "spike_dropped"]);
        assert_eq!(format!("{q:?}"), "Quality(reset | spike_dropped)");
        assert_eq!(format!("{:?}", Quality::empty()), "Quality()");
    }
}
