//! Minting api keys and access tokens (`flux.sign_jwt`; grants in `sql/keys.sql`).
//!
//! The checks and the signing are one native function, so there is no lower-level signer for
//! a caller to reach around them.

use crate::error::{raise, raise_with_hint};
use crate::guc;
use pgrx::datum::{Interval, TimestampWithTimeZone};
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

/// Unix seconds of a timestamp.
fn epoch_seconds(t: TimestampWithTimeZone) -> i64 {
    // PostgreSQL counts µs from 2000-01-01.
    const UNIX_TO_POSTGRES_S: i64 = 946_684_800;
    pg_sys::TimestampTz::from(t).div_euclid(1_000_000) + UNIX_TO_POSTGRES_S
}

fn invalid(message: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

/// Signs `claims` (role anon, authenticated or service_role; optional sub, sites, ...) as an
/// HS256 JWT, issued now and valid for `valid_for`.
#[pg_extern(stable, parallel_safe)]
fn sign_jwt(claims: Option<JsonB>, valid_for: default!(Option<Interval>, "'1 hour'")) -> String {
    let claims = claims.unwrap_or_else(|| invalid("claims must be a JSON object, got NULL"));
    let valid_for =
        valid_for.unwrap_or_else(|| invalid("valid_for must be a positive interval, got NULL"));
    let now = pgrx::datum::now();
    // PostgreSQL's own arithmetic (months and days by the calendar); out of range is 22008.
    let expires = now + valid_for;
    let signed = flux_edge::mint_claims(&claims.0, epoch_seconds(now), epoch_seconds(expires))
        .unwrap_or_else(|e| invalid(&e));
    flux_jwt::sign(&signed, &jwt_secret()).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("cannot sign JWT: {e}"),
        )
    })
}

#[pg_schema]
mod flux_internal {
    use super::*;

    /// 0.1.0's unchecked signer. Its symbol stays so that the 0.1.0 install script still
    /// loads (the upgrade path starts from it), but it signs nothing: until `ALTER EXTENSION
    /// flux UPDATE` replaces it, it refuses.
    #[pg_extern(sql = false)]
    fn jwt_sign(_claims: JsonB) -> String {
        raise_with_hint(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "flux_internal.jwt_sign was removed in flux 0.2.0",
            "Run ALTER EXTENSION flux UPDATE, then use flux.sign_jwt.",
        )
    }
}
