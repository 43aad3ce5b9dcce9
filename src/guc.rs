//! Every setting Flux reads, in one place. Documented in the README.

use flux_energy::Params;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// HS256 secret shared with PostgREST (`jwt-secret`). Superuser-only: API roles cannot read it.
pub static JWT_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

// Defaults of the energy reconstruction for devices whose registry metadata does not say.
// 0 means unknown for the two optional ones.
pub static ENERGY_MAX_POWER_KW: GucSetting<f64> = GucSetting::<f64>::new(0.0);
pub static ENERGY_REGISTER_MAX_KWH: GucSetting<f64> = GucSetting::<f64>::new(0.0);
pub static ENERGY_JITTER_KWH: GucSetting<f64> = GucSetting::<f64>::new(Params::DEFAULT.jitter_kwh);
pub static ENERGY_JITTER_REL: GucSetting<f64> = GucSetting::<f64>::new(Params::DEFAULT.jitter_rel);
pub static ENERGY_RESET_FRACTION: GucSetting<f64> =
    GucSetting::<f64>::new(Params::DEFAULT.reset_fraction);

// Rate-limit tiers (requests per minute, burst), per role of the request; any role other than
// anon and service_role gets the authenticated tier.
pub static RATE_ANON_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static RATE_ANON_BURST: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static RATE_AUTHENTICATED_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static RATE_AUTHENTICATED_BURST: GucSetting<i32> = GucSetting::<i32>::new(500);
pub static RATE_SERVICE_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static RATE_SERVICE_BURST: GucSetting<i32> = GucSetting::<i32>::new(2000);

// Partition maintenance (src/maintenance.rs, sql/partitions.sql).
pub static ENERGY_ROLLUPS: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static MAINTENANCE_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static MAINTENANCE_DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static MAINTENANCE_LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(200);

pub fn register() {
    GucRegistry::define_string_guc(
        c"flux.jwt_secret",
        c"HS256 secret that signs and verifies Flux API keys and access tokens.",
        c"Must equal PostgREST's jwt-secret; at least 32 characters. Readable by superusers only.",
        &JWT_SECRET,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    let energy = [
        (
            c"flux.energy_max_power_kw",
            c"Default maximum power (kW) of a meter, when its metadata has no max_power_kw.",
            c"Rises faster than this (with 10% headroom) are spikes or meter changes, not energy. 0 = unknown.",
            &ENERGY_MAX_POWER_KW,
            1e9,
        ),
        (
            c"flux.energy_register_max_kwh",
            c"Default register modulus (kWh) at which energy registers roll over.",
            c"Used when a meter's metadata has no energy_register_max_kwh. 0 = unknown.",
            &ENERGY_REGISTER_MAX_KWH,
            1e15,
        ),
        (
            c"flux.energy_jitter_kwh",
            c"Default absolute tolerance (kWh) for a register reading below the previous one.",
            c"Used when a meter's metadata has no energy_jitter_kwh. Smaller drops are jitter.",
            &ENERGY_JITTER_KWH,
            1e9,
        ),
        (
            c"flux.energy_jitter_rel",
            c"Tolerance for downward jitter relative to the register value.",
            c"A drop within max(energy_jitter_kwh, energy_jitter_rel * value) is jitter.",
            &ENERGY_JITTER_REL,
            1.0,
        ),
        (
            c"flux.energy_reset_fraction",
            c"Without a maximum power, a drop to at most this fraction of the register is a reset.",
            c"Also bounds a plausible rollover, as a fraction of the register modulus.",
            &ENERGY_RESET_FRACTION,
            1.0,
        ),
    ];
    let rates = [
        (
            c"flux.rate_limit_anon_per_minute",
            c"Requests per minute of the anon tier.",
            &RATE_ANON_PER_MINUTE,
        ),
        (
            c"flux.rate_limit_anon_burst",
            c"Burst (bucket size) of the anon tier.",
            &RATE_ANON_BURST,
        ),
        (
            c"flux.rate_limit_authenticated_per_minute",
            c"Requests per minute of the authenticated tier.",
            &RATE_AUTHENTICATED_PER_MINUTE,
        ),
        (
            c"flux.rate_limit_authenticated_burst",
            c"Burst (bucket size) of the authenticated tier.",
            &RATE_AUTHENTICATED_BURST,
        ),
        (
            c"flux.rate_limit_service_role_per_minute",
            c"Requests per minute of the service_role tier.",
            &RATE_SERVICE_PER_MINUTE,
        ),
        (
            c"flux.rate_limit_service_role_burst",
            c"Burst (bucket size) of the service_role tier.",
            &RATE_SERVICE_BURST,
        ),
    ];
    for (name, short, setting) in rates {
        GucRegistry::define_int_guc(
            name,
            short,
            c"Token bucket per identity (JWT sub, else client address, else api key). Changed by a configuration reload; buckets keep their state.",
            setting,
            1,
            i32::MAX,
            GucContext::Sighup,
            GucFlags::empty(),
        );
    }
    for (name, short, long, setting, max) in energy {
        GucRegistry::define_float_guc(
            name,
            short,
            long,
            setting,
            0.0,
            max,
            GucContext::Userset,
            GucFlags::empty(),
        );
    }
    GucRegistry::define_bool_guc(
        c"flux.energy_rollups",
        c"Whether the energy functions read the materialised 5-minute rollups; off computes every bucket from raw readings.",
        c"Results are the same either way (within 1e-9 relative); off is slower, and fails for ranges whose readings retention dropped.",
        &ENERGY_ROLLUPS,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"flux.maintenance_interval",
        c"How often the background worker runs partition maintenance; 0 turns it off.",
        c"Each round creates partitions ahead of time, moves rows out of the default partitions and applies retention.",
        &MAINTENANCE_INTERVAL_S,
        0,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"flux.maintenance_databases",
        c"Comma-separated databases the maintenance worker visits; empty = every database.",
        c"Databases without the flux extension are skipped either way.",
        &MAINTENANCE_DATABASES,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"flux.maintenance_lock_timeout",
        c"Longest wait of a maintenance step for a lock; the step is retried next round.",
        c"Bounds how long maintenance can hold up reads and writes queued behind it.",
        &MAINTENANCE_LOCK_TIMEOUT_MS,
        1,
        60_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    // Every flux.* setting is one of the above: a misspelt one is an error, not a placeholder
    // that is silently ignored.
    // SAFETY: called from _PG_init after the settings above are defined.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"flux".as_ptr()) };
}

/// The energy parameters for devices without metadata, from the settings above.
pub fn energy_defaults() -> Params {
    let known = |v: f64| (v > 0.0).then_some(v);
    Params {
        max_power_kw: known(ENERGY_MAX_POWER_KW.get()),
        register_max_kwh: known(ENERGY_REGISTER_MAX_KWH.get()),
        jitter_kwh: ENERGY_JITTER_KWH.get(),
        jitter_rel: ENERGY_JITTER_REL.get(),
        reset_fraction: ENERGY_RESET_FRACTION.get(),
    }
}
