//! flux-router: the one origin of a Flux stack, as a Supabase project has.
//!
//! `/rest/v1/…` goes to PostgREST, `/realtime/v1/…` (WebSocket included) to the realtime
//! server. On the way it protects both from hostile clients, before they cost anything:
//!
//! * per client address: open connections (counted from accept, so idle and half-open ones
//!   count), and a request rate;
//! * timeouts for a request's headers, for pauses in its body, and for PostgREST's answer;
//! * a REST request without an api key is refused here, with the body the database gives,
//!   before its body is read; a body over the limit is refused before it is read;
//! * every `apikey` query parameter is moved into the `apikey` header (two keys: refused);
//! * the reference's nested `or=(…)` becomes PostgREST's `or(…)` ([`query`]);
//! * when a client leaves, or PostgREST's answer takes too long, the database statement of
//!   that request is cancelled ([`cancel`]);
//! * a missing PostgREST or realtime server is a JSON 503, not a hung connection;
//! * other GET requests are served from a directory of static files (the dashboard), with
//!   `hyper-staticfile`, which resolves paths inside that directory only.
//!
//! Configuration comes from the environment ([`config::Config`]). The per-identity API rate
//! limits and the api-key check itself stay in the database, which remains the authority.

mod cancel;
mod config;
mod limits;
mod proxy;
mod query;

use config::Config;
use flux_log::log;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

/// The largest request head (request line and headers): long filter lists fit.
const MAX_HEAD_BYTES: usize = 128 << 10;

fn main() {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flux-router: {e}");
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
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    log!(
        "flux-router listening on {} (PostgREST {}, realtime {})",
        config.listen,
        config.postgrest,
        config.realtime
    );
    let router = Arc::new(proxy::Router::new(config));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept(stream, peer, &router),
                Err(e) => {
                    // Out of file descriptors, typically: wait for connections to close.
                    log!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    log!("stopping");
    Ok(())
}

fn accept(mut stream: TcpStream, peer: std::net::SocketAddr, router: &Arc<proxy::Router>) {
    let admitted = match router.limits.admit(peer.ip()) {
        Ok(a) => a,
        Err(refusal) => {
            // Tell the client why, if its socket takes it at once; never wait for it.
            let response = proxy::refused_connection(refusal);
            let _ = stream.try_write(&response);
            tokio::spawn(async move {
                let _ = stream.shutdown().await;
            });
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let router = router.clone();
    let header_timeout = router.config.header_timeout;
    tokio::spawn(async move {
        let _admitted = admitted;
        let service = service_fn(move |req| {
            let router = router.clone();
            async move { Ok::<_, std::convert::Infallible>(router.handle(req, peer).await) }
        });
        let _ = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    });
}
