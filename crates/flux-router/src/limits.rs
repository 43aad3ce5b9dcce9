//! Per-client limits at the door: open connections (counted from accept, so idle or half-open
//! connections count too) and request rate. They protect the router and PostgREST from one
//! client; per-identity API limits are the database's (`flux.rate_limit_*`).

use flux_edge::ratelimit::{BucketKeyer, BucketTable, Decision, Tier};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Buckets for this many client addresses at once; idle ones make room.
const ADDRESSES: usize = 16_384;

pub struct Limits {
    per_client: u32,
    total: u32,
    open: Mutex<Open>,
    rate: Tier,
    buckets: Mutex<Box<BucketTable<ADDRESSES>>>,
    keyer: BucketKeyer,
}

#[derive(Default)]
struct Open {
    total: u32,
    by_client: HashMap<IpAddr, u32>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ClientConnections,
    TotalConnections,
}

/// An admitted connection; dropping it frees its place.
pub struct Admitted {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("not poisoned");
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

impl Limits {
    pub fn new(per_client: u32, total: u32, rate_per_second: u32, burst: u32) -> Limits {
        Limits {
            per_client,
            total,
            open: Mutex::default(),
            rate: Tier {
                per_minute: rate_per_second.saturating_mul(60),
                burst,
            },
            buckets: Mutex::new(Box::default()),
            keyer: BucketKeyer::random(),
        }
    }

    /// Admits a new connection from `client`, or says why not.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().expect("not poisoned");
        if open.total >= self.total {
            return Err(Refusal::TotalConnections);
        }
        let n = open.by_client.entry(client).or_insert(0);
        if *n >= self.per_client {
            return Err(Refusal::ClientConnections);
        }
        *n += 1;
        open.total += 1;
        Ok(Admitted {
            limits: self.clone(),
            client,
        })
    }

    /// Takes one request from `client`'s rate at `now_us` (µs since the Unix epoch).
    pub fn request(&self, client: IpAddr, now_us: i64) -> Decision {
        let key = self.keyer.key("router", &client.to_string());
        self.buckets
            .lock()
            .expect("not poisoned")
            .take(key, self.rate, now_us)
    }

    pub fn rate_per_second(&self) -> u32 {
        self.rate.per_minute / 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_client_and_in_all() {
        let limits = Arc::new(Limits::new(2, 3, 10, 10));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refusal::ClientConnections));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refusal::TotalConnections));
        drop(a1);
        assert!(limits.admit(b).is_ok());
        assert_eq!(limits.open.lock().unwrap().by_client.len(), 2);
    }

    #[test]
    fn request_rate_per_client() {
        let limits = Limits::new(10, 10, 1, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let t = 1_700_000_000_000_000;
        assert!(limits.request(a, t).allowed);
        assert!(limits.request(a, t).allowed);
        let refused = limits.request(a, t);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 1);
        assert!(limits.request(b, t).allowed);
        assert!(limits.request(a, t + 1_000_000).allowed);
    }
}
