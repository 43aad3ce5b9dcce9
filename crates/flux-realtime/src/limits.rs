//! Limits on what one client may ask of the server (README: Realtime, "Limits"): token
//! buckets for joins and messages, and open connections per client address and in all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
pub struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            rate,
            burst,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a connection is refused before the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This client address has as many connections open as it may.
    ClientConnections(usize),
    /// The server has as many connections open as it may.
    Connections(usize),
}

/// Open connections, per client address and in all.
pub struct Connections {
    per_client: usize,
    total: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it gives its place back.
pub struct Admitted {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Connections {
    pub fn new(per_client: usize, total: usize) -> Arc<Connections> {
        Arc::new(Connections {
            per_client,
            total,
            open: Mutex::default(),
        })
    }

    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= self.total {
            return Err(Refusal::Connections(self.total));
        }
        let mine = open.1.entry(client).or_default();
        if *mine >= self.per_client {
            return Err(Refusal::ClientConnections(self.per_client));
        }
        *mine += 1;
        open.0 += 1;
        Ok(Admitted {
            connections: self.clone(),
            client,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

/// Ceilings on the events the server sends (changes and broadcasts): one in all, and one per
/// role for the roles given one. Bursts of one second's worth.
pub struct EventRates {
    buckets: Mutex<(Bucket, HashMap<String, Bucket>)>,
}

impl EventRates {
    pub fn new(total: usize, per_role: &HashMap<String, usize>) -> EventRates {
        let now = Instant::now();
        let bucket = |n: usize| Bucket::new(n as f64, n as f64, now);
        EventRates {
            buckets: Mutex::new((
                bucket(total),
                per_role
                    .iter()
                    .map(|(r, &n)| (r.clone(), bucket(n)))
                    .collect(),
            )),
        }
    }

    /// Takes one event of `role` from its ceiling and the total; false: over one of them.
    pub fn take(&self, role: &str, now: Instant) -> bool {
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (total, roles) = &mut *guard;
        match roles.get_mut(role) {
            Some(bucket) => bucket.take(now) && total.take(now),
            None => total.take(now),
        }
    }
}

/// Parses `role=n,role=n` (`FLUX_REALTIME_ROLE_EVENTS_PER_SECOND`).
pub fn parse_role_rates(text: &str) -> Result<HashMap<String, usize>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (role, n) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not role=events_per_second"))?;
            let n = n
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{pair:?}: the rate must be a positive integer"))?;
            Ok((role.trim().to_owned(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, 3.0, t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(500)));
        assert!(!b.take(t0 + Duration::from_millis(600)));
        // Never more than the burst saved up, however long it waits.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn connections_per_client_and_in_all() {
        let c = Connections::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(a).unwrap();
        assert_eq!(c.admit(a).err(), Some(Refusal::ClientConnections(2)));
        let _b1 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).err(), Some(Refusal::Connections(3)));
        drop(a1);
        assert!(
            c.admit(b).is_ok(),
            "a closed connection gives its place back"
        );
    }

    #[test]
    fn event_ceilings_per_role_and_in_all() {
        let t0 = Instant::now();
        let roles = parse_role_rates("anon=2, authenticated = 5").unwrap();
        let rates = EventRates::new(6, &roles);
        assert_eq!((0..5).filter(|_| rates.take("anon", t0)).count(), 2);
        // A role without a ceiling of its own has the total's.
        assert_eq!((0..9).filter(|_| rates.take("service_role", t0)).count(), 4);
        assert!(!rates.take("authenticated", t0), "the total is spent");
        assert!(rates.take("anon", t0 + Duration::from_millis(600)));
    }

    #[test]
    fn role_rates_are_parsed_or_refused_with_the_reason() {
        assert_eq!(parse_role_rates("").unwrap().len(), 0);
        assert_eq!(parse_role_rates("anon=10").unwrap()["anon"], 10);
        assert!(parse_role_rates("anon")
            .unwrap_err()
            .contains("role=events_per_second"));
        assert!(parse_role_rates("anon=0").unwrap_err().contains("positive"));
        assert!(parse_role_rates("anon=x").unwrap_err().contains("positive"));
    }
}
