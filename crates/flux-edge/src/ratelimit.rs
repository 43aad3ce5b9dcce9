//! Token-bucket rate limits in a fixed-size table, designed to live in shared memory: plain
//! data (`Copy`, no pointers), one lock around the whole table held for a few hundred
//! nanoseconds per request.
//!
//! A bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens per second; a
//! request takes one token. A new identity starts with a full bucket. So over any interval of
//! `t` seconds an identity gets at most `burst + t · per_minute / 60` requests, and that holds
//! however many other identities come and go:
//!
//! * Identities are placed by a keyed hash ([`BucketKeyer`], SipHash-1-3 with a secret key), so
//!   a client cannot compute identities that crowd one part of the table.
//! * A slot is reused only when its bucket has refilled completely, i.e. when forgetting it
//!   loses nothing. When no slot near its home is free, a newcomer is refused (with the wait
//!   until one is) rather than an active bucket being reset.
//! * Only a request that is allowed changes its slot: a refused request neither takes a slot
//!   nor refreshes one.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

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

    /// µs for an empty-by-`missing`-tokens bucket to refill them.
    fn refill_us(self, missing: f64) -> i64 {
        let rate = self.tokens_per_us();
        if rate > 0.0 {
            (missing.max(0.0) / rate).ceil().min(i64::MAX as f64 / 2.0) as i64
        } else {
            i64::MAX / 2
        }
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
    /// Bucket key of the identity; 0 = free.
    key: u64,
    tokens: f64,
    updated_us: i64,
    /// When the bucket is full again: from then on the slot may be reused.
    full_at_us: i64,
}

impl Slot {
    fn tokens_at(&self, tier: Tier, now_us: i64) -> f64 {
        let elapsed = (now_us - self.updated_us).max(0) as f64;
        (self.tokens + elapsed * tier.tokens_per_us()).min(f64::from(tier.burst))
    }
}

/// How many slots from its home position a key may sit. Bounds the work per request.
const PROBE: usize = 32;

/// `N` buckets (a power of two).
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
    /// Takes one token from the bucket of `key` (see [`BucketKeyer`]) at `now_us` (µs since
    /// the Unix epoch). A clock that steps back refills nothing rather than failing.
    pub fn take(&mut self, key: u64, tier: Tier, now_us: i64) -> Decision {
        let index = match self.slot_for(key, now_us) {
            Ok(index) => index,
            Err(free_at_us) => return Self::crowded(tier, now_us, free_at_us),
        };
        let slot = &mut self.slots[index];
        if slot.key != key {
            *slot = Slot {
                key,
                tokens: f64::from(tier.burst),
                updated_us: now_us,
                full_at_us: now_us,
            };
        }
        let tokens = slot.tokens_at(tier, now_us);
        if tokens < 1.0 {
            return decision(false, tier, tokens, now_us);
        }
        let left = tokens - 1.0;
        slot.tokens = left;
        slot.updated_us = now_us.max(slot.updated_us);
        slot.full_at_us = slot.updated_us + tier.refill_us(f64::from(tier.burst) - left);
        decision(true, tier, left, now_us)
    }

    /// The state of `key`'s bucket at `now_us`, changing nothing (a new identity's is full).
    pub fn peek(&self, key: u64, tier: Tier, now_us: i64) -> Decision {
        let tokens = self
            .window(key)
            .map(|i| &self.slots[i])
            .find(|s| s.key == key)
            .map_or(f64::from(tier.burst), |s| s.tokens_at(tier, now_us));
        decision(tokens >= 1.0, tier, tokens, now_us)
    }

    fn window(&self, key: u64) -> impl Iterator<Item = usize> {
        let home = (key as usize) & (N - 1);
        (0..PROBE).map(move |i| (home + i) & (N - 1))
    }

    /// The slot of `key`: its own, else a free or fully refilled one; else when the first
    /// slot of its window frees up.
    fn slot_for(&self, key: u64, now_us: i64) -> Result<usize, i64> {
        let mut reusable = None;
        let mut free_at = i64::MAX;
        for i in self.window(key) {
            let slot = &self.slots[i];
            if slot.key == key {
                return Ok(i);
            }
            if slot.key == 0 || slot.full_at_us <= now_us {
                reusable.get_or_insert(i);
            } else {
                free_at = free_at.min(slot.full_at_us);
            }
        }
        reusable.ok_or(free_at)
    }

    /// A newcomer refused because its part of the table is full of active buckets.
    fn crowded(tier: Tier, now_us: i64, free_at_us: i64) -> Decision {
        let wait_s = ((free_at_us - now_us).max(0) as f64 / 1e6).ceil().max(1.0);
        Decision {
            allowed: false,
            limit: tier.per_minute,
            remaining: 0,
            reset: now_us.div_euclid(1_000_000) + wait_s as i64,
            retry_after: wait_s.min(f64::from(u32::MAX)) as u32,
        }
    }
}

fn decision(allowed: bool, tier: Tier, tokens: f64, now_us: i64) -> Decision {
    let seconds_until = |target: f64| {
        let us = tier.refill_us(target - tokens);
        (us as f64 / 1e6).ceil()
    };
    Decision {
        allowed,
        limit: tier.per_minute,
        remaining: tokens.floor() as u32,
        reset: now_us.div_euclid(1_000_000) + seconds_until(f64::from(tier.burst)) as i64,
        retry_after: if allowed {
            0
        } else {
            seconds_until(1.0).clamp(1.0, f64::from(u32::MAX)) as u32
        },
    }
}

/// Turns (tier, identity) into a bucket key with a secret SipHash key, so that which
/// identities share a part of the table cannot be worked out from outside. Plain data: it
/// lives in shared memory beside the table it keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketKeyer {
    k0: u64,
    k1: u64,
}

impl BucketKeyer {
    pub fn new(secret: [u8; 16]) -> BucketKeyer {
        let (k0, k1) = secret.split_at(8);
        BucketKeyer {
            k0: u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        }
    }

    /// A keyer with a fresh secret from the operating system.
    pub fn random() -> BucketKeyer {
        let mut secret = [0; 16];
        getrandom::fill(&mut secret).expect("the operating system's random source");
        BucketKeyer::new(secret)
    }

    /// Whether this keyer still needs its secret (shared memory starts zeroed).
    pub fn is_unset(&self) -> bool {
        *self == BucketKeyer::default()
    }

    /// The bucket of an identity in a tier; never 0 (the free-slot marker).
    pub fn key(&self, tier: &str, identity: &str) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(tier.as_bytes());
        hasher.write_u8(0);
        hasher.write(identity.as_bytes());
        hasher.finish().max(1)
    }
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

    fn keyer() -> BucketKeyer {
        BucketKeyer::new(*b"0123456789abcdef")
    }

    #[test]
    fn burst_then_refill_at_the_tier_rate() {
        let mut table = Box::<BucketTable<64>>::default();
        let key = keyer().key("anon", "ip:1.2.3.4");
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
        let k = keyer();
        let t = 5 * S;
        let tiny = Tier {
            per_minute: 1,
            burst: 1,
        };
        assert!(table.take(k.key("anon", "a"), tiny, t).allowed);
        assert!(!table.take(k.key("anon", "a"), tiny, t).allowed);
        assert!(table.take(k.key("anon", "b"), tiny, t).allowed);
        assert!(table.take(k.key("service_role", "a"), tiny, t).allowed);
    }

    /// Keys that all share one window of a 32-slot table: every key does.
    fn crowd(n: usize) -> Vec<u64> {
        (0..n as u64).map(|i| i * 32 + 1).collect()
    }

    #[test]
    fn a_refilled_bucket_makes_room_and_an_active_one_never_does() {
        let mut table = Box::<BucketTable<32>>::default();
        let tier = Tier {
            per_minute: 60,
            burst: 2,
        };
        let keys = crowd(64);
        let t = 40 * S;
        for &key in &keys[..32] {
            assert!(table.take(key, tier, t).allowed);
        }
        // Key 5 is exhausted; the others are full again at t + 1 s, key 5 at t + 2 s.
        assert!(table.take(keys[5], tier, t).allowed);
        assert!(!table.take(keys[5], tier, t).allowed);
        // Nothing has refilled yet: a newcomer waits rather than resetting anyone.
        let early = table.take(keys[32], tier, t + S / 2);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, 1);
        // Refilled buckets make room (forgetting them loses nothing); the exhausted one
        // does not, however many newcomers arrive.
        let later = t + 3 * S / 2;
        for &key in &keys[32..63] {
            assert!(table.take(key, tier, later).allowed);
        }
        assert!(!table.take(keys[63], tier, later).allowed);
        let five = table.take(keys[5], tier, later);
        assert!(five.allowed);
        assert_eq!(five.remaining, 0, "refilled by 1.5 tokens, not reset to 2");
    }

    #[test]
    fn refused_requests_change_nothing() {
        let mut table = Box::<BucketTable<64>>::default();
        let tier = Tier {
            per_minute: 60,
            burst: 1,
        };
        let key = keyer().key("anon", "x");
        assert!(table.take(key, tier, 100 * S).allowed);
        let before = table.slots;
        for _ in 0..10 {
            assert!(!table.take(key, tier, 100 * S + S / 2).allowed);
        }
        assert!(table
            .slots
            .iter()
            .zip(&before)
            .all(|(a, b)| a.key == b.key && a.updated_us == b.updated_us && a.tokens == b.tokens));
        assert!(table.take(key, tier, 101 * S).allowed);
    }

    #[test]
    fn peek_changes_nothing() {
        let mut table = Box::<BucketTable<64>>::default();
        let key = keyer().key("anon", "p");
        assert_eq!(table.peek(key, ANON, S).remaining, 100);
        table.take(key, ANON, S);
        for _ in 0..5 {
            assert_eq!(table.peek(key, ANON, S).remaining, 99);
        }
    }

    #[test]
    fn a_clock_step_back_refills_nothing() {
        let mut table = Box::<BucketTable<64>>::default();
        let tier = Tier {
            per_minute: 60,
            burst: 1,
        };
        let key = keyer().key("anon", "x");
        assert!(table.take(key, tier, 100 * S).allowed);
        assert!(!table.take(key, tier, 50 * S).allowed);
        assert!(!table.take(key, tier, 100 * S).allowed);
        assert!(table.take(key, tier, 101 * S).allowed);
    }

    #[test]
    fn keys_depend_on_the_secret() {
        let a = BucketKeyer::new(*b"0123456789abcdef");
        let b = BucketKeyer::new(*b"fedcba9876543210");
        assert_ne!(a.key("anon", "ip:1.2.3.4"), b.key("anon", "ip:1.2.3.4"));
        assert_eq!(a.key("anon", "ip:1.2.3.4"), a.key("anon", "ip:1.2.3.4"));
        assert_ne!(a.key("anon", "x"), a.key("anonx", ""));
        assert!(BucketKeyer::default().is_unset());
        assert!(!BucketKeyer::random().is_unset());
    }

    proptest! {
        /// Over any span, an identity never gets more than the burst plus the refill, however
        /// many other identities crowd its part of the table.
        #[test]
        fn never_more_than_burst_plus_refill(
            per_minute in 1u32..5000,
            burst in 1u32..3000,
            steps in proptest::collection::vec((0i64..2_000_000, 0u64..80), 1..400),
        ) {
            let tier = Tier { per_minute, burst };
            let mut table = Box::<BucketTable<32>>::default();
            let me = 7 * 32 + 1;
            let start = 1_000 * S;
            let mut now = start;
            let mut allowed = 0u64;
            for (gap, other) in steps {
                now += gap;
                table.take(other * 32 + 2, tier, now);
                if table.take(me, tier, now).allowed {
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
            let key = keyer().key("t", "steady");
            let interval = (60e6 / f64::from(per_minute)).ceil() as i64;
            for i in 0..n as i64 {
                prop_assert!(table.take(key, tier, 10 * S + i * interval).allowed);
            }
        }
    }
}
