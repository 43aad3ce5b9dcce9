//! The claims `flux.sign_jwt` signs: api keys and access tokens of the project's roles, always
//! with an expiry.

use serde_json::{Map, Value};

/// Roles a minted token may carry.
pub const MINTABLE_ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// The claims to sign for `claims` (a JSON object with a `role` of [`MINTABLE_ROLES`], and no
/// `exp`, `iat` or `nbf` of its own), issued at `now` and valid until `exp` (Unix seconds).
/// The error is the message for the caller.
pub fn mint_claims(claims: &Value, now: i64, exp: i64) -> Result<Map<String, Value>, String> {
    let Value::Object(given) = claims else {
        return Err("claims must be a JSON object".into());
    };
    match given.get("role").and_then(Value::as_str) {
        Some(role) if MINTABLE_ROLES.contains(&role) => {}
        _ => {
            let got = given.get("role").map_or("null".into(), Value::to_string);
            return Err(format!(
                "claims.role must be anon, authenticated or service_role, got {}",
                excerpt(&got)
            ));
        }
    }
    if ["exp", "iat", "nbf"].iter().any(|k| given.contains_key(*k)) {
        return Err(
            "claims must not set exp, iat or nbf: the token is valid from now for valid_for".into(),
        );
    }
    if exp <= now {
        return Err("valid_for must be a positive interval".into());
    }
    let mut signed = Map::new();
    signed.insert("iss".into(), "flux".into());
    signed.insert("iat".into(), now.into());
    signed.insert("exp".into(), exp.into());
    signed.extend(given.clone());
    Ok(signed)
}

/// At most 40 characters of a value the caller sent, for an error message.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn adds_issuer_and_times() {
        let signed = mint_claims(
            &json!({"role": "authenticated", "sub": "gw", "sites": ["WLCE"]}),
            100,
            200,
        )
        .unwrap();
        assert_eq!(
            Value::Object(signed),
            json!({"iss": "flux", "iat": 100, "exp": 200, "role": "authenticated", "sub": "gw", "sites": ["WLCE"]})
        );
        // A caller's own issuer wins.
        let signed = mint_claims(&json!({"role": "anon", "iss": "me"}), 100, 200).unwrap();
        assert_eq!(signed["iss"], "me");
    }

    #[test]
    fn refuses_what_must_not_be_signed() {
        let refuse = |claims: Value, exp: i64| mint_claims(&claims, 100, exp).unwrap_err();
        assert_eq!(refuse(json!([1]), 200), "claims must be a JSON object");
        assert_eq!(
            refuse(json!({"role": "postgres"}), 200),
            r#"claims.role must be anon, authenticated or service_role, got "postgres""#
        );
        assert_eq!(
            refuse(json!({}), 200),
            "claims.role must be anon, authenticated or service_role, got null"
        );
        assert!(refuse(json!({"role": "x".repeat(1000)}), 200).len() < 120);
        assert!(
            refuse(json!({"role": "anon", "exp": 5}), 200).starts_with("claims must not set exp")
        );
        assert!(
            refuse(json!({"role": "anon", "nbf": 5}), 200).starts_with("claims must not set exp")
        );
        assert_eq!(
            refuse(json!({"role": "anon"}), 100),
            "valid_for must be a positive interval"
        );
    }
}
