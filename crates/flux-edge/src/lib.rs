//! The API edge of Flux, decided inside the database for every PostgREST request (through its
//! `db-pre-request` hook), so it holds behind any proxy:
//!
//! * [`check_api_key`]: the request must carry a key of this project (an HS256 JWT for `anon`
//!   or `service_role`), in the `apikey` header;
//! * [`identity`]: who a rate limit applies to — the JWT `sub`, else the client address the
//!   proxy saw, else the key;
//! * [`ratelimit`]: token buckets in a fixed-size table that lives in shared memory;
//! * [`postgrest`]: the exact shapes PostgREST 12 expects for response headers and errors;
//! * [`mint_claims`]: what `flux.sign_jwt` may sign.

mod mint;
pub mod postgrest;
pub mod ratelimit;
mod request;

pub use mint::{mint_claims, MINTABLE_ROLES};
pub use request::{
    api_key, bearer_problem, check_api_key, identity, parse_request_id, request_id, ApiKey,
    KeyError,
};
