//! The API edge, run by PostgREST before every request (`db-pre-request`): api key check and
//! rate limit, decided natively by `flux-edge`. The plpgsql front door is `sql/edge.sql`.

use crate::error::raise;
use crate::guc;
use flux_edge::postgrest::{error, response_headers};
use flux_edge::ratelimit::{bucket_key, BucketTable, Tier};
use flux_edge::{api_key, check_api_key, identity, KeyError};
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, PgSqlErrorCode};
use serde_json::Value;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Buckets for this many identities × tiers at once (24 bytes each); idle ones make room.
const BUCKETS_CAPACITY: usize = 16_384;

#[derive(Clone, Copy, Default)]
pub struct SharedBuckets(BucketTable<BUCKETS_CAPACITY>);
// SAFETY: plain data (no pointers), valid in any process that maps it.
unsafe impl PGRXSharedMemory for SharedBuckets {}

// SAFETY: the name is unique to this extension.
static BUCKETS: PgLwLock<SharedBuckets> = unsafe { PgLwLock::new(c"flux_rate_limits") };
static BUCKETS_READY: AtomicBool = AtomicBool::new(false);

/// Reserves the shared memory of the rate limiter; only possible while the library is being
/// preloaded (`shared_preload_libraries`).
pub fn init() {
    // SAFETY: read during _PG_init, on the one thread PostgreSQL has.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(BUCKETS);
        BUCKETS_READY.store(true, Ordering::Relaxed);
    }
}

fn tier(role: &str) -> Tier {
    let (per_minute, burst) = match role {
        "anon" => (&guc::RATE_ANON_PER_MINUTE, &guc::RATE_ANON_BURST),
        "service_role" => (&guc::RATE_SERVICE_PER_MINUTE, &guc::RATE_SERVICE_BURST),
        _ => (
            &guc::RATE_AUTHENTICATED_PER_MINUTE,
            &guc::RATE_AUTHENTICATED_BURST,
        ),
    };
    Tier {
        per_minute: per_minute.get() as u32,
        burst: burst.get() as u32,
    }
}

fn parse(json: Option<&str>, what: &str) -> Value {
    serde_json::from_str(json.unwrap_or("{}")).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} is not JSON: {e}"),
        )
    })
}

/// A setting's value as text (`current_setting(name, true)`), read natively.
fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption returns NULL or a string valid until the setting changes; it is
    // copied at once.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

/// `set_config(name, value, true)`: for the rest of the transaction.
fn set_local(name: &CStr, value: &str) {
    let value = CString::new(value).expect("JSON has no NUL bytes");
    // SAFETY: plain strings; errors are raised by PostgreSQL as for set_config.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}

fn current_role() -> String {
    // SAFETY: the current user exists for the whole call; the name is copied.
    unsafe {
        CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
            .to_string_lossy()
            .into_owned()
    }
}

#[pg_schema]
mod flux_internal {
    use super::*;

    /// Decides the current PostgREST request (from `request.headers`, `request.jwt.claims` and
    /// the role it runs as). Allowed: sets the `X-RateLimit-*` response headers and returns
    /// NULL. Refused: returns the `MESSAGE` and `DETAIL` of the `RAISE SQLSTATE 'PGRST'` that
    /// `pre_request()` turns it into (401 or 429).
    #[pg_extern(volatile, parallel_unsafe)]
    fn check_request() -> Option<Vec<String>> {
        if !BUCKETS_READY.load(Ordering::Relaxed) {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "flux rate limits need shared memory: add flux to shared_preload_libraries and restart",
            );
        }
        let headers = parse(setting(c"request.headers").as_deref(), "request.headers");
        let claims = parse(
            setting(c"request.jwt.claims").as_deref(),
            "request.jwt.claims",
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        let key = check_api_key(
            api_key(&headers),
            &crate::keys::jwt_secret(),
            now.as_secs() as i64,
        );
        // Requests without a valid key count against the anon tier of their sender, so that a
        // flood of them is throttled like any other.
        let role = if key.is_ok() {
            current_role()
        } else {
            "anon".to_owned()
        };
        let tier = tier(&role);
        let decision = BUCKETS.exclusive().0.take(
            bucket_key(&role, &identity(&claims, &headers)),
            tier,
            now.as_micros() as i64,
        );
        let mut rate_headers = vec![
            ("X-RateLimit-Limit", decision.limit.to_string()),
            ("X-RateLimit-Remaining", decision.remaining.to_string()),
            ("X-RateLimit-Reset", decision.reset.to_string()),
        ];
        let refusal = if !decision.allowed {
            rate_headers.push(("Retry-After", decision.retry_after.to_string()));
            error(
                429,
                "PT429",
                "Rate limit exceeded",
                Some(&format!(
                    "The {role} tier allows {} requests per minute with bursts of {}.",
                    tier.per_minute, tier.burst
                )),
                Some(&format!("Retry after {} s.", decision.retry_after)),
                &rate_headers,
            )
        } else if let Err(e) = key {
            let hint = match e {
                KeyError::Missing => "Send the project's anon or service_role key in the apikey header (or the apikey query parameter).",
                KeyError::Invalid(_) => "Use the anon or service_role key printed by ./flux up (or minted with flux.sign_jwt).",
            };
            error(
                401,
                "PT401",
                e.message(),
                e.details(),
                Some(hint),
                &rate_headers,
            )
        } else {
            set_local(c"response.headers", &response_headers(&rate_headers));
            return None;
        };
        Some(vec![refusal.0, refusal.1])
    }
}
