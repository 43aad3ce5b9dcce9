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
    /// A single anomalous reading was ignored because the next reading continued the old curve.
    pub const SPIKE_DROPPED: Quality = Quality(1 << 5);

    const NAMES: [&'static str; 6] = [
        "interpolated",
        "reset",
        "rollover",
        "jitter",
        "meter_change",
        "spike_dropped",
    ];

    /// No flags.
    pub const fn empty() -> Quality {
        Quality(0)
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

    /// Names of the set flags: "interpolated", "reset", "rollover", "jitter", "meter_change",
    /// "spike_dropped", in that order.
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
                "spike_dropped"
            ]
        );
        assert_eq!(all.bits(), 0b11_1111);

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
