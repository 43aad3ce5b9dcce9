//! Token-bucket rate limits in a fixed-size table, designed to live in shared memory: plain
//! data (`Copy`, no pointers), one lock around the whole table held for a few hundred
//! nanoseconds per request.
//!
//! A bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens per second; a
//! request takes one token. A new identity starts with a full bucket. So over any interval of
//! `t` seconds an identity gets at most `burst + t · per_minute / 60` requests.

/// One rate-limit tier (the reference's table: anon 60/100, authenticated 300/500,
/// service_role 1000/2000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub per_minute: u32,
    pub burst: u32,
}

impl Tier {
    fn tokens_per_us(self) -> f64 {
        f64::from(self.per_minute) / 60e6
    }
}

/// The outcome of one request against its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The tier's per-minute rate (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Whole tokens left after this request (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Unix time (s) at which the bucket is full again (`X-RateLimit-Reset`).
    pub reset: i64,
    /// Seconds until a request would be allowed (`Retry-After`); 0 when allowed.
    pub retry_after: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// `bucket_key` of the identity; 0 = free.
    key: u64,
    tokens: f64,
    updated_us: i64,
}

/// How many slots from its home position a key may sit. Bounds the work per request.
const PROBE: usize = 32;

/// `N` buckets (a power of two). When the slots a key may use are all taken, the one that has
/// been idle longest is reused; if it has refilled completely (the usual case for idle
/// identities) nothing is lost, since a new bucket starts full.
#[derive(Debug, Clone, Copy)]
pub struct BucketTable<const N: usize> {
    slots: [Slot; N],
}

impl<const N: usize> Default for BucketTable<N> {
    fn default() -> Self {
        assert!(N.is_power_of_two() && N >= PROBE);
        BucketTable {
            slots: [Slot::default(); N],
        }
    }
}

impl<const N: usize> BucketTable<N> {
    /// Takes one token from the bucket of `key` (see [`bucket_key`]) at `now_us` (µs since the
    /// Unix epoch). A clock that steps back refills nothing rather than failing.
    pub fn take(&mut self, key: u64, tier: Tier, now_us: i64) -> Decision {
        let slot = self.slot_for(key, tier, now_us);
        let burst = f64::from(tier.burst);
        let rate = tier.tokens_per_us();
        let elapsed = (now_us - slot.updated_us).max(0) as f64;
        let mut tokens = (slot.tokens + elapsed * rate).min(burst);
        let allowed = tokens >= 1.0;
        if allowed {
            tokens -= 1.0;
        }
        slot.tokens = tokens;
        slot.updated_us = now_us.max(slot.updated_us);
        let seconds_until = |target: f64| {
            if rate > 0.0 {
                ((target - tokens).max(0.0) / rate / 1e6).ceil()
            } else {
                f64::from(u32::MAX)
            }
        };
        Decision {
            allowed,
            limit: tier.per_minute,
            remaining: tokens.floor() as u32,
            reset: now_us.div_euclid(1_000_000) + seconds_until(burst) as i64,
            retry_after: if allowed {
                0
            } else {
                seconds_until(1.0).max(1.0) as u32
            },
        }
    }

    fn slot_for(&mut self, key: u64, tier: Tier, now_us: i64) -> &mut Slot {
        let home = (key as usize) & (N - 1);
        let window = |i: usize| (home + i) & (N - 1);
        let found = (0..PROBE)
            .map(window)
            .find(|&i| self.slots[i].key == key || self.slots[i].key == 0);
        let index = found.unwrap_or_else(|| {
            (0..PROBE)
                .map(window)
                .min_by_key(|&i| self.slots[i].updated_us)
                .expect("PROBE > 0")
        });
        let slot = &mut self.slots[index];
        if slot.key != key {
            *slot = Slot {
                key,
                tokens: f64::from(tier.burst),
                updated_us: now_us,
            };
        }
        slot
    }
}

/// The bucket of an identity in a tier. FNV-1a: the same in every backend process (the table
/// is shared), and never 0 (the free-slot marker).
pub fn bucket_key(tier: &str, identity: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tier.bytes().chain([0]).chain(identity.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ANON: Tier = Tier {
        per_minute: 60,
        burst: 100,
    };
    const S: i64 = 1_000_000;

    #[test]
    fn burst_then_refill_at_the_tier_rate() {
        let mut table = Box::<BucketTable<64>>::default();
        let key = bucket_key("anon", "ip:1.2.3.4");
        let t0 = 1_700_000_000 * S;
        for i in 0..100 {
            let d = table.take(key, ANON, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 99 - i);
            assert_eq!(d.limit, 60);
        }
        let denied = table.take(key, ANON, t0);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, 1);
        assert_eq!(denied.reset, 1_700_000_000 + 100);
        // One token per second at 60/min.
        assert!(table.take(key, ANON, t0 + S).allowed);
        assert!(!table.take(key, ANON, t0 + S).allowed);
        assert!(table.take(key, ANON, t0 + 3 * S).allowed);
        assert!(table.take(key, ANON, t0 + 3 * S).allowed);
        assert!(!table.take(key, ANON, t0 + 3 * S).allowed);
    }

    #[test]
    fn identities_and_tiers_are_separate() {
        let mut table = Box::<BucketTable<64>>::default();
        let t = 5 * S;
        let tiny = Tier {
            per_minute: 1,
            burst: 1,
        };
        assert!(table.take(bucket_key("anon", "a"), tiny, t).allowed);
        assert!(!table.take(bucket_key("anon", "a"), tiny, t).allowed);
        assert!(table.take(bucket_key("anon", "b"), tiny, t).allowed);
        assert!(table.take(bucket_key("service_role", "a"), tiny, t).allowed);
    }

    #[test]
    fn a_full_table_reuses_the_longest_idle_slot() {
        let mut table = Box::<BucketTable<32>>::default();
        let tier = Tier {
            per_minute: 60,
            burst: 2,
        };
        for i in 0..32 {
            table.take(bucket_key("anon", &i.to_string()), tier, i * S);
        }
        // A 33rd identity evicts identity 0 (idle longest, refilled by now): no state lost.
        let newcomer = table.take(bucket_key("anon", "new"), tier, 40 * S);
        assert!(newcomer.allowed);
        assert_eq!(newcomer.remaining, 1);
        let zero = table.take(bucket_key("anon", "0"), tier, 40 * S);
        assert_eq!(
            zero.remaining, 1,
            "a fresh bucket, as a refilled one would be"
        );
    }

    #[test]
    fn a_clock_step_back_refills_nothing() {
        let mut table = Box::<BucketTable<64>>::default();
        let tier = Tier {
            per_minute: 60,
            burst: 1,
        };
        let key = bucket_key("anon", "x");
        assert!(table.take(key, tier, 100 * S).allowed);
        assert!(!table.take(key, tier, 50 * S).allowed);
        assert!(!table.take(key, tier, 100 * S).allowed);
        assert!(table.take(key, tier, 101 * S).allowed);
    }

    proptest! {
        /// Over any span, an identity never gets more than the burst plus the refill.
        #[test]
        fn never_more_than_burst_plus_refill(
            per_minute in 1u32..5000,
            burst in 1u32..3000,
            gaps in proptest::collection::vec(0i64..2_000_000, 1..400),
        ) {
            let tier = Tier { per_minute, burst };
            let mut table = Box::<BucketTable<64>>::default();
            let key = bucket_key("t", "id");
            let start = 1_000 * S;
            let mut now = start;
            let mut allowed = 0u64;
            for gap in gaps {
                now += gap;
                if table.take(key, tier, now).allowed {
                    allowed += 1;
                }
            }
            let refill = (now - start) as f64 * f64::from(per_minute) / 60e6;
            prop_assert!(allowed as f64 <= f64::from(burst) + refill + 1e-9);
        }

        /// A request at a steady rate below the tier's is always allowed.
        #[test]
        fn a_client_within_the_rate_is_never_refused(per_minute in 1u32..5000, n in 1usize..300) {
            let tier = Tier { per_minute, burst: 1 };
            let mut table = Box::<BucketTable<64>>::default();
            let key = bucket_key("t", "steady");
            let interval = (60e6 / f64::from(per_minute)).ceil() as i64;
            for i in 0..n as i64 {
                prop_assert!(table.take(key, tier, 10 * S + i * interval).allowed);
            }
        }
    }
}
