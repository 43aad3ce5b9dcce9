//! flux-realtime: the realtime server of Flux.
//!
//! supabase-js connects to `/realtime/v1/websocket` and subscribes to `postgres_changes`,
//! Broadcast and Presence; this server speaks that protocol (vsn 1.0.0 and 2.0.0), streams
//! committed changes from a logical replication slot, and delivers each to the subscribers
//! whose filters match and whose role and JWT claims may see the row. Configuration comes from the environment (see [`state::Config`]):
//! `FLUX_REALTIME_LISTEN`, `FLUX_DB_URL` (a superuser), `FLUX_JWT_SECRET`.

// log! and log_throttled!: one line per event; what clients cause is capped and throttled.
#[macro_use]
extern crate flux_log;

mod auth;
mod authz;
mod catalog;
mod change;
mod db;
mod dispatch;
mod feed;
mod filter;
mod frames;
mod hub;
mod join;
mod limits;
mod pgoutput;
mod protocol;
mod rooms;
mod server;
mod session;
mod state;
mod time;
mod wal;

use state::{Config, State};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

fn main() {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flux-realtime: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(serve(config)) {
        log!("{e}");
        std::process::exit(1);
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    log!(
        "flux-realtime listening on {} (publication {}, rls check {:?})",
        config.listen,
        config.publication,
        config.rls_check
    );
    let state = Arc::new(State::new(config));
    let (shutdown_tx, shutdown) = watch::channel(false);
    // Two batches in flight at most: the feed reads the next while the last is dispatched.
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let feed = tokio::spawn(feed::run(state.clone(), batch_tx, shutdown.clone()));
    let dispatcher = tokio::spawn(dispatch::run(state.clone(), batch_rx));
    let server = tokio::spawn(server::serve(listener, state.clone(), shutdown.clone()));

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    log!("{signal_name}: shutting down");
    let _ = shutdown_tx.send(true);
    // Sessions send close frames; the feed's replication connection ends (its slot stays).
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let _ = feed.await;
        let _ = dispatcher.await;
        let _ = server.await;
        while state
            .hub
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    log!("stopped");
    Ok(())
}
