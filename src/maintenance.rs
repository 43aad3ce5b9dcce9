//! The partition maintenance worker.
//!
//! A launcher, started with the server, wakes every `flux.maintenance_interval` and starts one
//! short-lived worker per database. That worker runs `flux_internal.maintenance_worker_step()`
//! (sql/partitions.sql) until it has nothing left to do, committing after every step, so that
//! no lock a step takes outlives the step. A table whose step fails (a lock not granted within
//! `flux.maintenance_lock_timeout`) is logged and skipped for the rest of the round. Databases
//! without the extension are left alone.
//!
//! Both run as the bootstrap superuser, so their sessions search `pg_catalog` only: a database's
//! own search_path could otherwise put someone's `public.concat_ws` ahead of the catalog's.

use crate::guc;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Where the launcher reads the list of databases (pg_database is shared by all of them).
const LAUNCHER_DATABASE: &str = "postgres";
/// A round that keeps finding work stops here; the next round goes on.
const MAX_STEPS_PER_ROUND: usize = 10_000;

/// Registers the launcher; only possible while the library is preloaded.
pub fn init() {
    // SAFETY: read-only flag set by the postmaster while it loads preloaded libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("flux maintenance launcher")
        .set_type("flux maintenance launcher")
        .set_library("flux")
        .set_function("flux_maintenance_launcher")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn flux_maintenance_launcher(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(LAUNCHER_DATABASE), None);
    BackgroundWorker::transaction(trusted_search_path);
    // Due at start-up, then `flux.maintenance_interval` after the last round, as it is set now.
    let mut last_round: Option<Instant> = None;
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let interval = Duration::from_secs(guc::MAINTENANCE_INTERVAL_S.get().max(0) as u64);
        let due = last_round.map_or(Duration::ZERO, |last| {
            interval.saturating_sub(last.elapsed())
        });
        if !interval.is_zero() && due.is_zero() {
            last_round = Some(Instant::now());
            for database in BackgroundWorker::transaction(databases) {
                if BackgroundWorker::sigterm_received() {
                    exit_to_be_restarted();
                }
                run_in(&database);
            }
            continue;
        }
        // Woken early by a reload (SIGHUP sets the latch), which may change the interval.
        let wait = if interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            due
        };
        if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(10)))) {
            exit_to_be_restarted();
        }
    }
}

/// Ends the launcher with an exit code that has the postmaster start it again (after the
/// restart time) unless the server is shutting down: a launcher terminated by hand would
/// otherwise end maintenance until the next server start.
fn exit_to_be_restarted() -> ! {
    // SAFETY: proc_exit runs the backend's exit callbacks and does not return.
    unsafe { pg_sys::proc_exit(1) }
}

/// Makes the session search the system catalog only (see the module comment).
fn trusted_search_path() {
    Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
        .unwrap_or_else(|e| pgrx::error!("flux maintenance: setting search_path: {e}"));
}

/// The databases to visit: those listed in `flux.maintenance_databases`, or every one that
/// accepts connections.
fn databases() -> Vec<String> {
    let listed = guc::MAINTENANCE_DATABASES
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Spi::connect(|client| {
        client
            .select(
                "SELECT datname::text FROM pg_database
                 WHERE datallowconn AND NOT datistemplate
                   AND ($1 = '' OR datname = ANY (SELECT btrim(d) FROM unnest(string_to_array($1, ',')) d))
                 ORDER BY datname",
                None,
                &[listed.into()],
            )
            .map(|rows| {
                rows.filter_map(|row| row.get::<String>(1).ok().flatten())
                    .collect()
            })
            .unwrap_or_else(|e| pgrx::error!("flux maintenance: listing databases: {e}"))
    })
}

/// Runs one round in `database` in a worker of its own and waits for it.
fn run_in(database: &str) {
    let worker = BackgroundWorkerBuilder::new("flux maintenance")
        .set_type("flux maintenance")
        .set_library("flux")
        .set_function("flux_maintenance_worker")
        .set_extra(database)
        .enable_spi_access()
        // SAFETY: this process's pid, set by the postmaster before the worker starts.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic();
    match worker {
        Ok(worker) => {
            // The worker logs its own errors; either way the round goes on with the next
            // database.
            let _ = worker.wait_for_shutdown();
        }
        Err(_) => pgrx::warning!(
            "flux maintenance: no background worker slot for database {database}; raise max_worker_processes"
        ),
    }
}

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler of a backend (tcop/postgres.c): sets ProcDiePending, which
    /// the next CHECK_FOR_INTERRUPTS acts on. The raw symbol, as a signal handler must be.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn flux_maintenance_worker(_arg: pg_sys::Datum) {
    // A backend's own SIGTERM handler: a step (a refresh of the energy rollups can take
    // seconds) is cancelled where it stands, so that a shutdown does not wait for it.
    // SAFETY: `die` is PostgreSQL's handler for regular backends, which this worker is.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die));
        // A background worker starts with its signals blocked.
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    BackgroundWorker::connect_worker_to_spi(Some(BackgroundWorker::get_extra()), None);
    BackgroundWorker::transaction(trusted_search_path);
    let installed = BackgroundWorker::transaction(|| {
        Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regprocedure('flux_internal.maintenance_worker_step(regclass[])') IS NOT NULL",
        )
    });
    if installed != Ok(Some(true)) {
        return;
    }
    // Tables whose step failed this round.
    let mut skip: Vec<String> = Vec::new();
    for _ in 0..MAX_STEPS_PER_ROUND {
        let actions = BackgroundWorker::transaction(|| step(&skip));
        if actions.is_empty() {
            return;
        }
        for Action {
            table,
            failed,
            line,
        } in actions
        {
            if failed {
                pgrx::warning!("flux maintenance: {line}");
                skip.push(table);
            } else {
                pgrx::log!("flux maintenance: {line}");
            }
        }
    }
}

/// One action of a step: its table, whether it is a failure, and its log line.
struct Action {
    table: String,
    failed: bool,
    line: String,
}

/// One step on the tables not in `skip`, in the caller's transaction.
fn step(skip: &[String]) -> Vec<Action> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT table_name::text, action = 'failed',
                        pg_catalog.concat_ws(' ', action, partition_name, '(' OPERATOR(pg_catalog.||) table_name::text OPERATOR(pg_catalog.||) ')', detail)
                 FROM flux_internal.maintenance_worker_step($1::pg_catalog.regclass[])",
                None,
                &[skip.to_vec().into()],
            )
            .map(|rows| {
                rows.filter_map(|row| {
                    Some(Action {
                        table: row.get::<String>(1).ok()??,
                        failed: row.get::<bool>(2).ok()??,
                        line: row.get::<String>(3).ok()??,
                    })
                })
                .collect()
            })
            .unwrap_or_else(|e| pgrx::error!("flux maintenance: {e}"))
    })
}
