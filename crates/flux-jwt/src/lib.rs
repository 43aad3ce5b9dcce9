//! HS256 JSON Web Tokens, the only kind Flux issues and accepts.
//!
//! The same code verifies tokens in the database (the API key check of the pre-request hook) and
//! in the realtime server, and signs the keys the stack prints. Only `HS256` is accepted: a token
//! whose header names any other algorithm — `none` in particular — is rejected before its
//! signature is looked at, so a forged unsigned token can never pass.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::fmt;

pub type Claims = Map<String, Value>;

/// PostgREST refuses secrets shorter than this; we hold ours to the same rule.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts, or a part is not the JSON it should be.
    Malformed(&'static str),
    UnsupportedAlgorithm(String),
    BadSignature,
    Expired,
    NotYetValid,
    /// A registered claim has the wrong JSON type (e.g. `"exp": "tomorrow"`).
    InvalidClaim(&'static str),
    SecretTooShort,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(what) => write!(f, "malformed JWT: {what}"),
            JwtError::UnsupportedAlgorithm(alg) => {
                write!(f, "JWT algorithm {alg:?} is not accepted (only HS256)")
            }
            JwtError::BadSignature => f.write_str("JWT signature does not match"),
            JwtError::Expired => f.write_str("JWT expired"),
            JwtError::NotYetValid => f.write_str("JWT not valid yet (nbf is in the future)"),
            JwtError::InvalidClaim(claim) => write!(f, "JWT claim \"{claim}\" must be a number"),
            JwtError::SecretTooShort => write!(
                f,
                "JWT secret must be at least {MIN_SECRET_LEN} characters long"
            ),
        }
    }
}

impl std::error::Error for JwtError {}

fn mac(secret: &[u8]) -> Result<Hmac<Sha256>, JwtError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(JwtError::SecretTooShort);
    }
    Ok(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length"))
}

/// Signs `claims` as a compact HS256 JWT.
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, JwtError> {
    let mut mac = mac(secret)?;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string());
    let signing_input = format!("{header}.{payload}");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

/// Verifies `token` and returns its claims. `now` is the current time in Unix seconds; `exp`
/// and `nbf` are checked against it when present (callers that require `exp` check for it).
pub fn verify(token: &str, secret: &[u8], now: i64) -> Result<Claims, JwtError> {
    let malformed = JwtError::Malformed("expected three dot-separated parts");
    let (signing_input, signature) = token.trim().rsplit_once('.').ok_or(malformed.clone())?;
    let (header, payload) = signing_input.split_once('.').ok_or(malformed.clone())?;
    if payload.contains('.') {
        return Err(malformed);
    }
    let header: Value = decode_json(header, "header is not base64url-encoded JSON")?;
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => {}
        Some(other) => return Err(JwtError::UnsupportedAlgorithm(other.to_owned())),
        None => return Err(JwtError::Malformed("header has no alg")),
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let mut mac = mac(secret)?;
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::BadSignature)?;
    let Value::Object(claims) = decode_json(payload, "payload is not base64url-encoded JSON")?
    else {
        return Err(JwtError::Malformed("payload is not a JSON object"));
    };
    if let Some(exp) = numeric_claim(&claims, "exp")? {
        if now >= exp {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = numeric_claim(&claims, "nbf")? {
        if now < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(claims)
}

fn decode_json(part: &str, what: &'static str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))
}

/// `exp`/`nbf` as whole seconds; fractional values (allowed by RFC 7519) are floored.
pub fn numeric_claim(claims: &Claims, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))
            .map(Some)
            .ok_or(JwtError::InvalidClaim(name)),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    fn forge(header: &str, payload: &str, signature: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            signature
        )
    }

    #[test]
    fn round_trip() {
        let c = claims(json!({"role": "anon", "exp": 2_000_000_000}));
        let token = sign(&c, SECRET).unwrap();
        assert_eq!(verify(&token, SECRET, 1_700_000_000).unwrap(), c);
    }

    /// A token signed by an independent implementation (Python's hmac module) must verify:
    /// our signing input and encoding match the standard.
    #[test]
    fn verifies_foreign_token() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJyb2xlIjoiYW5vbiIsImlzcyI6InN1cGFiYXNlLWRlbW8ifQ.\
                     Z-y1yBxYx8YoPVLK_ZYDdfXekgiUDMsLQAxYHn8BMks";
        assert_eq!(
            verify(token, SECRET, 0).unwrap(),
            claims(json!({"role": "anon", "iss": "supabase-demo"}))
        );
    }

    #[test]
    fn rejects_wrong_secret() {
        let token = sign(&claims(json!({"role": "anon"})), SECRET).unwrap();
        let other = b"another-secret-that-is-also-32-characters-long!!";
        assert_eq!(verify(&token, other, 0), Err(JwtError::BadSignature));
    }

    #[test]
    fn rejects_alg_none_and_others() {
        let none = forge(r#"{"alg":"none"}"#, r#"{"role":"service_role"}"#, "");
        assert_eq!(
            verify(&none, SECRET, 0),
            Err(JwtError::UnsupportedAlgorithm("none".into()))
        );
        let rs = forge(r#"{"alg":"RS256"}"#, r#"{"role":"anon"}"#, "abc");
        assert_eq!(
            verify(&rs, SECRET, 0),
            Err(JwtError::UnsupportedAlgorithm("RS256".into()))
        );
    }

    #[test]
    fn rejects_tampered_payload() {
        let token = sign(&claims(json!({"role": "anon"})), SECRET).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(r#"{"role":"service_role"}"#);
        let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
        assert_eq!(verify(&tampered, SECRET, 0), Err(JwtError::BadSignature));
    }

    #[test]
    fn checks_exp_and_nbf() {
        let token = sign(&claims(json!({"exp": 100, "nbf": 50})), SECRET).unwrap();
        assert_eq!(verify(&token, SECRET, 100), Err(JwtError::Expired));
        assert_eq!(verify(&token, SECRET, 49), Err(JwtError::NotYetValid));
        assert!(verify(&token, SECRET, 99).is_ok());
        let bad = sign(&claims(json!({"exp": "later"})), SECRET).unwrap();
        assert_eq!(verify(&bad, SECRET, 0), Err(JwtError::InvalidClaim("exp")));
    }

    #[test]
    fn rejects_malformed() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.AAAA"] {
            assert!(
                matches!(
                    verify(token, SECRET, 0),
                    Err(JwtError::Malformed(_) | JwtError::BadSignature)
                ),
                "{token:?} accepted"
            );
        }
        assert!(matches!(
            verify(&forge(r#"{"alg":"HS256"}"#, "[1]", ""), SECRET, 0),
            Err(JwtError::BadSignature)
        ));
    }

    #[test]
    fn refuses_short_secret() {
        assert_eq!(
            sign(&Claims::new(), b"short"),
            Err(JwtError::SecretTooShort)
        );
    }

    proptest! {
        #[test]
        fn any_claims_round_trip(role in "[a-z_]{1,20}", exp in 1i64..4_000_000_000, sub in ".*") {
            let c = claims(json!({"role": role, "exp": exp, "sub": sub}));
            let token = sign(&c, SECRET).unwrap();
            prop_assert_eq!(verify(&token, SECRET, exp - 1).unwrap(), c);
        }

        #[test]
        fn flipping_any_signature_byte_fails(idx in 0usize..32, bit in 0u8..8) {
            let token = sign(&claims(json!({"role": "anon"})), SECRET).unwrap();
            let (input, sig) = token.rsplit_once('.').unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            raw[idx] ^= 1 << bit;
            let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw));
            prop_assert_eq!(verify(&forged, SECRET, 0), Err(JwtError::BadSignature));
        }
    }
}
