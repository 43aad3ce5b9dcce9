//! The API edge, run by PostgREST before every request (`db-pre-request`): api key check and
//! rate limit, decided natively by `flux-edge`, and the register of requests in progress that
//! lets the router cancel one whose client has gone. The plpgsql front door is `sql/edge.sql`.

use crate::error::raise;
use crate::guc;
use flux_edge::postgrest::{error, response_headers};
use flux_edge::ratelimit::{BucketKeyer, BucketTable, Decision, Tier};
use flux_edge::{api_key, bearer_problem, check_api_key, identity, request_id, KeyError};
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, register_xact_callback, PgSqlErrorCode, PgXactCallbackEvent};
use serde_json::Value;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Buckets for this many identities × tiers at once (32 bytes each, 512 KiB); those whose
/// bucket has refilled make room for newcomers. (pgrx builds the initial value on the stack of
/// the postmaster: a much larger table overflows it in debug builds.)
const BUCKETS_CAPACITY: usize = 16_384;

#[derive(Clone, Copy, Default)]
pub struct SharedBuckets {
    /// Zero until the first request draws the cluster's secret.
    keyer: BucketKeyer,
    table: BucketTable<BUCKETS_CAPACITY>,
}
// SAFETY: plain data (no pointers), valid in any process that maps it.
unsafe impl PGRXSharedMemory for SharedBuckets {}

/// Requests in progress can be filed by backends with ids below this (`MyBackendId` runs from
/// 1 to MaxBackends: max_connections plus the server's own processes).
const REQUEST_SLOTS: usize = 1024;

/// Which request each backend is serving, if the router named it.
#[derive(Clone, Copy)]
pub struct RequestRegister {
    slots: [RequestSlot; REQUEST_SLOTS],
}

#[derive(Clone, Copy, Default)]
struct RequestSlot {
    id: [u8; 16],
    pid: i32,
}

impl Default for RequestRegister {
    fn default() -> Self {
        RequestRegister {
            slots: [RequestSlot::default(); REQUEST_SLOTS],
        }
    }
}
// SAFETY: plain data (no pointers), valid in any process that maps it.
unsafe impl PGRXSharedMemory for RequestRegister {}

// SAFETY: the names are unique to this extension.
static BUCKETS: PgLwLock<SharedBuckets> = unsafe { PgLwLock::new(c"flux_rate_limits") };
static REQUESTS: PgLwLock<RequestRegister> = unsafe { PgLwLock::new(c"flux_requests") };
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

/// Reserves the shared memory of the rate limiter and the request register; only possible
/// while the library is being preloaded (`shared_preload_libraries`).
pub fn init() {
    // SAFETY: read during _PG_init, on the one thread PostgreSQL has.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(BUCKETS);
        pg_shmem_init!(REQUESTS);
        SHMEM_READY.store(true, Ordering::Relaxed);
    }
}

fn require_shared_memory() {
    if !SHMEM_READY.load(Ordering::Relaxed) {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "flux needs shared memory: add flux to shared_preload_libraries and restart",
        );
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

/// This backend's slot in the request register, if it has one.
fn my_request_slot() -> Option<usize> {
    // SAFETY: MyBackendId is set once the backend has started, before any SQL runs.
    let id = unsafe { pg_sys::MyBackendId };
    usize::try_from(id).ok().filter(|&i| i < REQUEST_SLOTS)
}

/// Files the transaction under the router's request id until it ends: before COMMIT (a cancel
/// that arrives first makes the transaction fail, as it should) or at ABORT.
fn file_request(id: [u8; 16]) {
    let Some(slot) = my_request_slot() else {
        return;
    };
    // SAFETY: MyProcPid is this process's pid, set at startup.
    let pid = unsafe { pg_sys::MyProcPid };
    REQUESTS.exclusive().slots[slot] = RequestSlot { id, pid };
    let forget = move || {
        REQUESTS.exclusive().slots[slot] = RequestSlot::default();
    };
    register_xact_callback(PgXactCallbackEvent::PreCommit, forget);
    register_xact_callback(PgXactCallbackEvent::Abort, forget);
}

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
}

/// The `X-RateLimit-*` headers of a decision.
fn rate_headers(decision: &Decision) -> Vec<(&'static str, String)> {
    vec![
        ("X-RateLimit-Limit", decision.limit.to_string()),
        ("X-RateLimit-Remaining", decision.remaining.to_string()),
        ("X-RateLimit-Reset", decision.reset.to_string()),
    ]
}

#[pg_schema]
mod flux_internal {
    use super::*;

    /// Decides the current PostgREST request (from `request.headers`, `request.jwt.claims` and
    /// the role it runs as). Allowed: sets the `X-RateLimit-*` response headers and returns
    /// NULL. Refused: returns the `MESSAGE` and `DETAIL` of the `RAISE SQLSTATE 'PGRST'` that
    /// `pre_request()` turns it into (401 or 429).
    ///
    /// Only a request with a valid key and token takes a token from its bucket; a refused one
    /// changes no bucket (its headers show the state of the one it would have used).
    #[pg_extern(volatile, parallel_unsafe)]
    fn check_request() -> Option<Vec<String>> {
        require_shared_memory();
        let headers = parse(setting(c"request.headers").as_deref(), "request.headers");
        let claims = parse(
            setting(c"request.jwt.claims").as_deref(),
            "request.jwt.claims",
        );
        if let Some(id) = request_id(&headers) {
            file_request(id);
        }
        let now = now();
        let now_us = now.as_micros() as i64;
        let key = check_api_key(
            api_key(&headers),
            &crate::keys::jwt_secret(),
            now.as_secs() as i64,
        );
        let refusal = key
            .as_ref()
            .err()
            .cloned()
            .map(Refusal::Key)
            .or_else(|| bearer_problem(&claims, &headers).map(Refusal::Bearer));
        let role = if refusal.is_none() {
            current_role()
        } else {
            "anon".to_owned()
        };
        let tier = tier(&role);
        let identity = identity(&claims, &headers);
        let decision = {
            let mut buckets = BUCKETS.exclusive();
            if buckets.keyer.is_unset() {
                buckets.keyer = BucketKeyer::random();
            }
            let bucket = buckets.keyer.key(&role, &identity);
            if refusal.is_none() {
                buckets.table.take(bucket, tier, now_us)
            } else {
                buckets.table.peek(bucket, tier, now_us)
            }
        };
        let mut headers = rate_headers(&decision);
        let (message, detail) = match refusal {
            Some(Refusal::Key(e)) => error(
                401,
                "PT401",
                e.message(),
                e.details(),
                Some(e.hint()),
                &headers,
            ),
            Some(Refusal::Bearer(why)) => {
                headers.push((
                    "WWW-Authenticate",
                    format!(r#"Bearer error="invalid_token", error_description="{why}""#),
                ));
                error(
                    401,
                    "PGRST301",
                    why,
                    None,
                    Some("Use a token with an expiry, e.g. one minted with flux.sign_jwt."),
                    &headers,
                )
            }
            None if !decision.allowed => {
                headers.push(("Retry-After", decision.retry_after.to_string()));
                error(
                    429,
                    "PT429",
                    "Rate limit exceeded",
                    Some(&format!(
                        "The {role} tier allows {} requests per minute with bursts of {}.",
                        tier.per_minute, tier.burst
                    )),
                    Some(&format!("Retry after {} s.", decision.retry_after)),
                    &headers,
                )
            }
            None => {
                set_local(c"response.headers", &response_headers(&headers));
                return None;
            }
        };
        Some(vec![message, detail])
    }

    /// Cancels the statement of the request the router named `request_id`, if a backend is
    /// still serving it; returns whether one was. Called by the router when the client left or
    /// PostgREST's answer was overdue.
    #[pg_extern(volatile, parallel_unsafe)]
    fn cancel_request(request_id: &str) -> bool {
        require_shared_memory();
        let Some(id) = flux_edge::parse_request_id(request_id) else {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "a request id is 32 hexadecimal digits",
            );
        };
        // Held while signalling: the backend cannot finish the request and start another
        // (which would clear its slot first) before the cancel has been sent.
        let register = REQUESTS.share();
        let Some(slot) = register.slots.iter().find(|s| s.pid != 0 && s.id == id) else {
            return false;
        };
        // pg_cancel_backend checks that the caller may signal that backend.
        // SAFETY: a SQL-callable function of PostgreSQL's, called with its one int4 argument.
        unsafe {
            pgrx::direct_function_call::<bool>(pg_sys::pg_cancel_backend, &[slot.pid.into_datum()])
        }
        .unwrap_or(false)
    }
}

enum Refusal {
    Key(KeyError),
    Bearer(&'static str),
}
