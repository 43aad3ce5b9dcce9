//! The API edge of Flux, decided inside the database for every PostgREST request (through its
//! `db-pre-request` hook), so it holds behind any proxy:
//!
//! * [`check_api_key`]: the request must carry a key of this project (an HS256 JWT for `anon`
//!   or `service_role`), in the `apikey` header;
//! * [`identity`]: who a rate limit applies to — the JWT `sub`, else the client address the
//!   proxy saw, else the key;
//! * [`ratelimit`]: token buckets in a fixed-size table that lives in shared memory;
//! * [`postgrest`]: the exact shapes PostgREST 12 expects for response headers and errors.

pub mod postgrest;
pub mod ratelimit;
mod request;

pub use request::{api_key, check_api_key, identity, ApiKey, KeyError};
