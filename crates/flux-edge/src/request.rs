//! Who is calling: the api key and the rate-limit identity of a request.

use flux_jwt::Claims;
use serde_json::Value;

/// Roles an api key may carry. User tokens (`authenticated`) go in `Authorization`, not here.
const KEY_ROLES: [&str; 2] = ["anon", "service_role"];

/// A verified api key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub role: String,
    pub claims: Claims,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No key (the router turns an `apikey` query parameter into the `apikey` header).
    Missing,
    /// A key that is not a current key of this project, with the reason.
    Invalid(String),
}

impl KeyError {
    /// What the client is told.
    pub fn message(&self) -> &'static str {
        match self {
            KeyError::Missing => "No API key found in request",
            KeyError::Invalid(_) => "Invalid API key",
        }
    }

    /// Why a key is invalid.
    pub fn details(&self) -> Option<&str> {
        match self {
            KeyError::Missing => None,
            KeyError::Invalid(why) => Some(why),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            KeyError::Missing => "Send the project's anon or service_role key in the apikey header (or the apikey query parameter).",
            KeyError::Invalid(_) => "Use the anon or service_role key printed by ./flux up (or minted with flux.sign_jwt).",
        }
    }
}

/// Checks an api key: an HS256 JWT of this project (`secret`), not expired at `now` (Unix
/// seconds) and with an `exp` at all, whose `role` is `anon` or `service_role`. The REST edge
/// and the realtime server apply this same rule.
pub fn check_api_key(key: Option<&str>, secret: &[u8], now: i64) -> Result<ApiKey, KeyError> {
    let key = key
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(KeyError::Missing)?;
    let invalid = |why: String| KeyError::Invalid(why);
    let claims = flux_jwt::verify(key, secret, now).map_err(|e| invalid(e.to_string()))?;
    if flux_jwt::numeric_claim(&claims, "exp")
        .map_err(|e| invalid(e.to_string()))?
        .is_none()
    {
        return Err(invalid("the key has no exp claim".into()));
    }
    match claims.get("role").and_then(Value::as_str) {
        Some(role) if KEY_ROLES.contains(&role) => Ok(ApiKey {
            role: role.to_owned(),
            claims,
        }),
        Some(role) => Err(invalid(format!(
            "role {role:?} is not an api key role (anon or service_role)"
        ))),
        None => Err(invalid("the key has no role".into())),
    }
}

/// Why the Bearer token of a request is refused although PostgREST verified it, or `None`.
/// PostgREST accepts a token without `exp`; Flux does not, for the same reason as for api
/// keys: a token that never expires cannot be taken back. `claims` are the verified claims
/// (PostgREST's `request.jwt.claims`), `headers` the request's.
pub fn bearer_problem(claims: &Value, headers: &Value) -> Option<&'static str> {
    let bearer = headers
        .get("authorization")
        .and_then(Value::as_str)
        .and_then(|v| v.trim_start().get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "));
    (bearer && claims.get("exp").is_none_or(Value::is_null)).then_some("JWT has no exp claim")
}

/// The 128-bit request id the router gives every request (`x-flux-request-id`, 32 hex digits).
pub fn request_id(headers: &Value) -> Option<[u8; 16]> {
    parse_request_id(headers.get("x-flux-request-id")?.as_str()?)
}

/// 32 hex digits as 16 bytes.
pub fn parse_request_id(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (byte, pair) in id.iter_mut().zip(text.chunks(2)) {
        let digit = |b: u8| (b as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(id)
}

/// The `apikey` header of PostgREST's `request.headers` (a JSON object, lower-case names).
pub fn api_key(headers: &Value) -> Option<&str> {
    headers.get("apikey").and_then(Value::as_str)
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
        None => format!("key:{}", api_key(headers).unwrap_or("").trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"edge-test-secret-that-is-at-least-32-chars";
    const NOW: i64 = 1_700_000_000;

    fn key(claims: Value) -> String {
        flux_jwt::sign(claims.as_object().unwrap(), SECRET).unwrap()
    }

    #[test]
    fn accepts_anon_and_service_keys() {
        for role in KEY_ROLES {
            let k = key(json!({"role": role, "exp": 2_000_000_000}));
            let checked = check_api_key(Some(&k), SECRET, NOW).unwrap();
            assert_eq!(checked.role, role);
            assert_eq!(checked.claims["exp"], 2_000_000_000);
        }
    }

    #[test]
    fn rejects_missing_foreign_expired_eternal_and_unsigned_keys() {
        assert_eq!(check_api_key(None, SECRET, 0), Err(KeyError::Missing));
        assert_eq!(check_api_key(Some("  "), SECRET, 0), Err(KeyError::Missing));
        let foreign = flux_jwt::sign(
            json!({"role": "anon", "exp": 2_000_000_000})
                .as_object()
                .unwrap(),
            b"another-project-secret-also-32-characters!",
        )
        .unwrap();
        let cases = [
            foreign,
            key(json!({"role": "anon", "exp": 10})),
            key(json!({"role": "anon"})),
            key(json!({"role": "authenticated", "exp": 2_000_000_000})),
            key(json!({"role": "postgres", "exp": 2_000_000_000})),
            key(json!({"sub": "x", "exp": 2_000_000_000})),
            "eyJhbGciOiJub25lIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.".to_owned(),
            "not-a-jwt".to_owned(),
        ];
        for apikey in cases {
            let result = check_api_key(Some(&apikey), SECRET, NOW);
            assert!(
                matches!(result, Err(KeyError::Invalid(_))),
                "{apikey}: {result:?}"
            );
        }
    }

    #[test]
    fn bearer_tokens_need_exp() {
        let bearer = json!({"authorization": "Bearer x.y.z"});
        assert_eq!(
            bearer_problem(&json!({"role": "service_role"}), &bearer),
            Some("JWT has no exp claim")
        );
        assert_eq!(
            bearer_problem(
                &json!({"role": "anon", "exp": null}),
                &json!({"authorization": " bearer t"})
            ),
            Some("JWT has no exp claim")
        );
        assert_eq!(
            bearer_problem(&json!({"role": "anon", "exp": 5}), &bearer),
            None
        );
        // Without a Bearer token, PostgREST's claims are just the anon role.
        assert_eq!(bearer_problem(&json!({"role": "anon"}), &json!({})), None);
        assert_eq!(
            bearer_problem(
                &json!({"role": "anon"}),
                &json!({"authorization": "Basic x"})
            ),
            None
        );
    }

    #[test]
    fn request_ids() {
        let id = "00112233445566778899aabbccddeeff";
        assert_eq!(
            request_id(&json!({"x-flux-request-id": id})),
            Some([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ])
        );
        assert_eq!(
            parse_request_id(&id.to_uppercase()),
            request_id(&json!({"x-flux-request-id": id}))
        );
        for bad in [
            "",
            "00",
            &format!("{id}0"),
            "0011223344556677889gaabbccddeeff",
            "+0112233445566778899aabbccddeef",
        ] {
            assert_eq!(parse_request_id(bad), None, "{bad}");
        }
        assert_eq!(request_id(&json!({})), None);
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
