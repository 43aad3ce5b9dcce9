//! Flux: a telemetry backend for battery storage and metering fleets, as a PostgreSQL extension.
//!
//! This crate is thin glue. The schema, grants and policies are hand-written SQL in `sql/`;
//! the algorithms live in pure crates (`flux-energy`, `flux-jwt`); the functions here convert
//! PostgreSQL values and call them.

use pgrx::prelude::*;

mod edge;
mod energy;
mod error;
mod guc;
mod ids;
mod keys;
mod maintenance;
mod rollups;
mod row_stream;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/roles.sql", name = "roles", bootstrap);
extension_sql_file!(
    "../sql/tables.sql",
    name = "tables",
    requires = ["roles", ids::flux_internal::random_uuid]
);
extension_sql_file!(
    "../sql/registry.sql",
    name = "registry",
    requires = [
        "tables",
        energy::flux_internal::energy_metadata_error_of_text
    ]
);
extension_sql_file!(
    "../sql/references.sql",
    name = "references",
    requires = ["tables", "registry"]
);
extension_sql_file!(
    "../sql/partitions.sql",
    name = "partitions",
    requires = [
        "tables",
        "references",
        "security",
        "rollups",
        rollups::flux_internal::rollups_current_before
    ]
);
extension_sql_file!(
    "../sql/rollups.sql",
    name = "rollups",
    requires = [
        "tables",
        "security",
        rollups::refresh_energy_rollups,
        rollups::flux_internal::rollups_current_before
    ]
);
extension_sql_file!(
    "../sql/security.sql",
    name = "security",
    requires = ["tables", "registry"]
);
extension_sql_file!(
    "../sql/realtime.sql",
    name = "realtime",
    requires = ["tables", "roles"]
);
extension_sql_file!(
    "../sql/energy.sql",
    name = "energy",
    requires = [
        energy::get_meter_readings_5m,
        energy::get_meter_readings_30m,
        energy::meter_energy_buckets_set_aside,
        energy::meter_energy_set_aside,
        energy::settlement_period
    ]
);
extension_sql_file!(
    "../sql/edge.sql",
    name = "edge",
    requires = [
        "roles",
        edge::flux_internal::check_request,
        edge::flux_internal::cancel_request
    ]
);
extension_sql_file!(
    "../sql/keys.sql",
    name = "keys",
    requires = ["roles", "edge", keys::sign_jwt]
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    edge::init();
    maintenance::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'flux'",
            "flux.jwt_secret = 'pg-test-secret-that-is-at-least-32-characters'",
            // The tests run maintenance by hand; the worker is tested on a running stack.
            "flux.maintenance_interval = 0",
        ]
    }
}
