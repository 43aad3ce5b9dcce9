//! Every setting Flux reads, in one place. Documented in the README.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// HS256 secret shared with PostgREST (`jwt-secret`). Superuser-only: API roles cannot read it.
pub static JWT_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register() {
    GucRegistry::define_string_guc(
        c"flux.jwt_secret",
        c"HS256 secret that signs and verifies Flux API keys and access tokens.",
        c"Must equal PostgREST's jwt-secret; at least 32 characters. Readable by superusers only.",
        &JWT_SECRET,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
}
