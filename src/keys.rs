//! Signing of API keys and access tokens (see `sql/keys.sql` for the SQL front door).

use crate::error::{raise, raise_with_hint};
use crate::guc;
use pgrx::prelude::*;
use pgrx::JsonB;

/// The configured secret, or a clear error naming the setting to fix.
pub fn jwt_secret() -> Vec<u8> {
    match guc::JWT_SECRET.get() {
        Some(secret) if !secret.as_bytes().is_empty() => secret.into_bytes(),
        _ => raise_with_hint(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "flux.jwt_secret is not set",
            "Set flux.jwt_secret in postgresql.conf to the secret PostgREST uses (jwt-secret).",
        ),
    }
}

#[pg_schema]
mod flux_internal {
    use super::*;

    /// Signs `claims` exactly as given.
    #[pg_extern(stable, parallel_safe)]
    pub fn jwt_sign(claims: JsonB) -> String {
        let serde_json::Value::Object(claims) = claims.0 else {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "claims must be a JSON object",
            )
        };
        flux_jwt::sign(&claims, &jwt_secret()).unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("cannot sign JWT: {e}"),
            )
        })
    }
}
