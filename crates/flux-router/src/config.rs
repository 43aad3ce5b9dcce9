//! The router's settings, from the environment (`./flux up` sets them; README: "The router").

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `FLUX_ROUTER_LISTEN`: where clients connect.
    pub listen: SocketAddr,
    /// `FLUX_ROUTER_POSTGREST`: PostgREST's address; `/rest/v1/…` goes there.
    pub postgrest: SocketAddr,
    /// `FLUX_ROUTER_REALTIME`: the realtime server's address; `/realtime/v1/…` goes there.
    pub realtime: SocketAddr,
    /// `FLUX_ROUTER_DB_URL`: a connection that may call `flux_internal.cancel_request`, to
    /// cancel the statement of a request whose client left. Unset: no cancelling.
    pub db_url: Option<String>,
    /// `FLUX_ROUTER_STATIC`: a directory served at `/` (the dashboard). Unset: nothing is.
    pub static_dir: Option<std::path::PathBuf>,
    /// `FLUX_ROUTER_MAX_BODY_BYTES` (8 MiB): largest request body.
    pub max_body_bytes: u64,
    /// `FLUX_ROUTER_CLIENT_CONNECTIONS` (1024): open connections per client address.
    pub client_connections: u32,
    /// `FLUX_ROUTER_MAX_CONNECTIONS` (16384): open connections in all.
    pub max_connections: u32,
    /// `FLUX_ROUTER_CLIENT_RATE` (500) and `FLUX_ROUTER_CLIENT_BURST` (1000): requests per
    /// second and burst per client address.
    pub client_rate: u32,
    pub client_burst: u32,
    /// `FLUX_ROUTER_HEADER_TIMEOUT_S` (10): to send a request's headers, and idle time of a
    /// kept-alive connection.
    pub header_timeout: Duration,
    /// `FLUX_ROUTER_BODY_TIMEOUT_S` (10): longest pause while sending a request body.
    pub body_timeout: Duration,
    /// `FLUX_ROUTER_UPSTREAM_TIMEOUT_S` (75): longest wait for PostgREST's answer; longer than
    /// every API role's statement timeout, so that the database ends a slow statement first.
    pub upstream_timeout: Duration,
    /// `FLUX_ROUTER_UPGRADE_WAIT_S` (15): how long a WebSocket upgrade waits for a realtime
    /// server that is not listening (restarting) before its 503. Clients on Node 22's own
    /// WebSocket never retry after a failed handshake, so a restart must not fail theirs.
    pub upgrade_wait: Duration,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let address = |name: &str| -> Result<SocketAddr, String> {
            let value = get(name).ok_or_else(|| format!("{name} is not set"))?;
            value
                .parse()
                .map_err(|e| format!("{name}={value:?} is not an address: {e}"))
        };
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name}={v:?} must be a positive whole number")),
                },
            }
        };
        let small = |name: &str, default: u32| -> Result<u32, String> {
            u32::try_from(number(name, default.into())?).map_err(|_| format!("{name} is too large"))
        };
        let seconds = |name: &str, default: u64| number(name, default).map(Duration::from_secs);
        Ok(Config {
            listen: address("FLUX_ROUTER_LISTEN")?,
            postgrest: address("FLUX_ROUTER_POSTGREST")?,
            realtime: address("FLUX_ROUTER_REALTIME")?,
            db_url: get("FLUX_ROUTER_DB_URL").filter(|u| !u.is_empty()),
            static_dir: get("FLUX_ROUTER_STATIC")
                .filter(|d| !d.is_empty())
                .map(Into::into),
            max_body_bytes: number("FLUX_ROUTER_MAX_BODY_BYTES", 8 << 20)?,
            client_connections: small("FLUX_ROUTER_CLIENT_CONNECTIONS", 1024)?,
            max_connections: small("FLUX_ROUTER_MAX_CONNECTIONS", 16384)?,
            client_rate: small("FLUX_ROUTER_CLIENT_RATE", 500)?,
            client_burst: small("FLUX_ROUTER_CLIENT_BURST", 1000)?,
            header_timeout: seconds("FLUX_ROUTER_HEADER_TIMEOUT_S", 10)?,
            body_timeout: seconds("FLUX_ROUTER_BODY_TIMEOUT_S", 10)?,
            upstream_timeout: seconds("FLUX_ROUTER_UPSTREAM_TIMEOUT_S", 75)?,
            upgrade_wait: seconds("FLUX_ROUTER_UPGRADE_WAIT_S", 15)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const ADDRESSES: [(&str, &str); 3] = [
        ("FLUX_ROUTER_LISTEN", "127.0.0.1:54321"),
        ("FLUX_ROUTER_POSTGREST", "127.0.0.1:54324"),
        ("FLUX_ROUTER_REALTIME", "127.0.0.1:54325"),
    ];

    #[test]
    fn defaults() {
        let c = config(&ADDRESSES).unwrap();
        assert_eq!(c.max_body_bytes, 8 << 20);
        assert_eq!(c.client_connections, 1024);
        assert_eq!(c.upstream_timeout, Duration::from_secs(75));
        assert_eq!(c.upgrade_wait, Duration::from_secs(15));
        assert_eq!(c.db_url, None);
        assert_eq!(c.static_dir, None);
    }

    #[test]
    fn refuses_bad_values_naming_them() {
        assert_eq!(config(&[]).unwrap_err(), "FLUX_ROUTER_LISTEN is not set");
        let mut pairs = ADDRESSES.to_vec();
        pairs.push(("FLUX_ROUTER_CLIENT_RATE", "-3"));
        assert_eq!(
            config(&pairs).unwrap_err(),
            r#"FLUX_ROUTER_CLIENT_RATE="-3" must be a positive whole number"#
        );
        pairs.pop();
        pairs[1].1 = "nowhere";
        assert!(config(&pairs)
            .unwrap_err()
            .starts_with(r#"FLUX_ROUTER_POSTGREST="nowhere" is not an address"#));
    }
}
