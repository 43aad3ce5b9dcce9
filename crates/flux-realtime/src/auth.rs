//! Who a subscriber is: a verified JWT's role and claims.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub role: String,
    /// The claims as JSON text with sorted keys, so equal claims group together and can be
    /// passed to `request.jwt.claims` as they are.
    pub claims: String,
    pub exp: i64,
}

impl Auth {
    /// The same role and claims, but for the token's lifetime (`exp`, `iat`, `nbf`): what a
    /// routine token refresh changes, and no policy should depend on.
    pub fn same_identity(&self, other: &Auth) -> bool {
        let identity = |a: &Auth| {
            let mut claims: serde_json::Map<String, Value> =
                serde_json::from_str(&a.claims).unwrap_or_default();
            for lifetime in ["exp", "iat", "nbf"] {
                claims.remove(lifetime);
            }
            claims
        };
        self.role == other.role && identity(self) == identity(other)
    }
}

/// Verifies an HS256 token as Supabase's realtime does: signature, then `exp` and `role`
/// must be present.
pub fn verify(token: &str, secret: &[u8], now: i64) -> Result<Auth, String> {
    from_claims(flux_jwt::verify(token, secret, now).map_err(|e| e.to_string())?)
}

/// The subscriber of verified claims; `exp` and `role` must be present.
pub fn from_claims(claims: flux_jwt::Claims) -> Result<Auth, String> {
    let exp = flux_jwt::numeric_claim(&claims, "exp")
        .map_err(|e| e.to_string())?
        .ok_or("JWT has no exp claim")?;
    let role = match claims.get("role") {
        Some(Value::String(r)) if !r.is_empty() => r.clone(),
        _ => return Err("JWT has no role claim".into()),
    };
    Ok(Auth {
        role,
        claims: Value::Object(claims).to_string(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-that-is-at-least-32-characters";

    #[test]
    fn a_refreshed_token_is_the_same_identity_new_claims_are_not() {
        let auth = |claims: Value| from_claims(claims.as_object().unwrap().clone()).unwrap();
        let a = auth(json!({"role": "authenticated", "site": "W", "exp": 10, "iat": 1}));
        let refreshed = auth(json!({"role": "authenticated", "site": "W", "exp": 20, "iat": 11}));
        assert!(a.same_identity(&refreshed));
        assert!(!a.same_identity(&auth(
            json!({"role": "authenticated", "site": "X", "exp": 10})
        )));
        assert!(!a.same_identity(&auth(
            json!({"role": "anon", "site": "W", "exp": 10, "iat": 1})
        )));
    }

    fn token(claims: Value) -> String {
        flux_jwt::sign(claims.as_object().unwrap(), SECRET).unwrap()
    }

    #[test]
    fn accepts_a_valid_token() {
        let t =
            token(json!({"role": "authenticated", "exp": 2000, "sub": "u1", "sites": ["WLCE"]}));
        let auth = verify(&t, SECRET, 1000).unwrap();
        assert_eq!(auth.role, "authenticated");
        assert_eq!(auth.exp, 2000);
        assert_eq!(
            auth.claims,
            r#"{"exp":2000,"role":"authenticated","sites":["WLCE"],"sub":"u1"}"#
        );
    }

    #[test]
    fn requires_exp_and_role() {
        assert!(verify(&token(json!({"role": "anon"})), SECRET, 0)
            .unwrap_err()
            .contains("exp"));
        assert!(verify(&token(json!({"exp": 10})), SECRET, 0)
            .unwrap_err()
            .contains("role"));
        assert!(verify(&token(json!({"exp": 10, "role": ""})), SECRET, 0).is_err());
    }

    #[test]
    fn rejects_expired_and_forged() {
        let t = token(json!({"role": "anon", "exp": 10}));
        assert_eq!(verify(&t, SECRET, 10).unwrap_err(), "JWT expired");
        let other = b"another-secret-that-is-at-least-32-characters";
        assert!(verify(&t, other, 0).unwrap_err().contains("signature"));
        assert!(verify("garbage", SECRET, 0).is_err());
    }
}
