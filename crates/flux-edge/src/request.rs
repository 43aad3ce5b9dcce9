//! Who is calling: the api key and the rate-limit identity of a request.

use serde_json::Value;
use std::fmt;

/// Roles an api key may carry. User tokens (`authenticated`) go in `Authorization`, not here.
const KEY_ROLES: [&str; 2] = ["anon", "service_role"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No `apikey` header (the router turns an `apikey` query parameter into the header).
    Missing,
    /// A key that is not this project's, with the reason.
    Invalid(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Missing => f.write_str("No API key found in request"),
            KeyError::Invalid(why) => write!(f, "Invalid API key: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks the `apikey` header of `headers` (PostgREST's `request.headers`: a JSON object with
/// lower-case names). Returns the key's role.
pub fn check_api_key(headers: &Value, secret: &[u8], now: i64) -> Result<String, KeyError> {
    let key = api_key(headers).ok_or(KeyError::Missing)?;
    let claims =
        flux_jwt::verify(key, secret, now).map_err(|e| KeyError::Invalid(e.to_string()))?;
    match claims.get("role").and_then(Value::as_str) {
        Some(role) if KEY_ROLES.contains(&role) => Ok(role.to_owned()),
        Some(role) => Err(KeyError::Invalid(format!(
            "role {role:?} is not an api key role (anon or service_role)"
        ))),
        None => Err(KeyError::Invalid("the key has no role".into())),
    }
}

fn api_key(headers: &Value) -> Option<&str> {
    headers
        .get("apikey")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The identity a rate limit applies to: `sub:<JWT sub>` when the request's claims have one;
/// else `ip:<address>`, the last entry of `X-Forwarded-For` (the one the proxy nearest to
/// PostgREST wrote from its socket; earlier entries are whatever the client sent); else
/// `key:<the api key>`.
pub fn identity(claims: &Value, headers: &Value) -> String {
    if let Some(sub) = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return format!("sub:{sub}");
    }
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(Value::as_str)
        .and_then(|list| list.rsplit(',').next())
        .map(str::trim)
        .filter(|ip| !ip.is_empty());
    match forwarded {
        Some(ip) => format!("ip:{ip}"),
        None => format!("key:{}", api_key(headers).unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"edge-test-secret-that-is-at-least-32-chars";

    fn key(claims: Value) -> String {
        flux_jwt::sign(claims.as_object().unwrap(), SECRET).unwrap()
    }

    #[test]
    fn accepts_anon_and_service_keys() {
        for role in KEY_ROLES {
            let headers = json!({ "apikey": key(json!({"role": role, "exp": 2_000_000_000})) });
            assert_eq!(
                check_api_key(&headers, SECRET, 1_700_000_000),
                Ok(role.to_owned())
            );
        }
    }

    #[test]
    fn rejects_missing_foreign_expired_and_unsigned_keys() {
        assert_eq!(check_api_key(&json!({}), SECRET, 0), Err(KeyError::Missing));
        assert_eq!(
            check_api_key(&json!({"apikey": "  "}), SECRET, 0),
            Err(KeyError::Missing)
        );
        let foreign = flux_jwt::sign(
            json!({"role": "anon"}).as_object().unwrap(),
            b"another-project-secret-also-32-characters!",
        )
        .unwrap();
        let cases = [
            foreign,
            key(json!({"role": "anon", "exp": 10})),
            key(json!({"role": "authenticated"})),
            key(json!({"role": "postgres"})),
            key(json!({"sub": "x"})),
            "eyJhbGciOiJub25lIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.".to_owned(),
            "not-a-jwt".to_owned(),
        ];
        for apikey in cases {
            let result = check_api_key(&json!({ "apikey": apikey }), SECRET, 1_700_000_000);
            assert!(
                matches!(result, Err(KeyError::Invalid(_))),
                "{apikey}: {result:?}"
            );
        }
    }

    #[test]
    fn identity_prefers_sub_then_proxy_address_then_key() {
        let headers = json!({"apikey": "K", "x-forwarded-for": "6.6.6.6, 10.0.0.7"});
        assert_eq!(
            identity(&json!({"role": "authenticated", "sub": "u1"}), &headers),
            "sub:u1"
        );
        assert_eq!(identity(&json!({"role": "anon"}), &headers), "ip:10.0.0.7");
        assert_eq!(
            identity(&json!({"role": "anon", "sub": ""}), &json!({"apikey": "K"})),
            "key:K"
        );
    }
}
