//! The HTTP front: `/websocket` (also `/realtime/v1/websocket`, for direct connections) with
//! the api key checked before the upgrade, and `/health`.

use crate::auth;
use crate::hub::ConnHandle;
use crate::protocol::Vsn;
use crate::session;
use crate::state::State;
use crate::time;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Join payloads are small; nothing a client sends needs more.
const MAX_MESSAGE: usize = 1 << 20;

pub async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // Changes are small frames that must leave at once.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                let shutdown = shutdown.clone();
                async move { Ok::<_, Infallible>(route(req, state, peer, shutdown)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn json(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, serde_json::json!({ "error": message.into() }))
}

fn route(
    req: Request<Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Reply {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/websocket" | "/realtime/v1/websocket") => {
            upgrade(req, state, peer, shutdown)
        }
        (&Method::GET, "/health" | "/realtime/v1/health") => {
            let up = state.feed_up.load(Ordering::SeqCst);
            json(
                if up {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                serde_json::json!({
                    "status": if up { "ok" } else { "starting" },
                    "change_feed": if up { "streaming" } else { "down" },
                    "connections": state.hub.connections.load(Ordering::Relaxed),
                    "channels": state.hub.snapshot().len(),
                }),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "not found: connect to /websocket"),
    }
}

fn upgrade(
    mut req: Request<Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Reply {
    let query = req.uri().query().unwrap_or("");
    let apikey = query_param(query, "apikey").or_else(|| {
        req.headers()
            .get("apikey")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let now = time::now_micros() / 1_000_000;
    // The same rule as the REST edge: an anon or service_role key of this project.
    let key = flux_edge::check_api_key(apikey.as_deref(), &state.config.secret, now)
        .map_err(|e| match e.details() {
            Some(why) => format!("{}: {why}", e.message()),
            None => e.message().to_owned(),
        })
        .and_then(|key| auth::from_claims(key.claims));
    let auth = match key {
        Ok(a) => a,
        Err(e) => {
            log_throttled!(
                state.client_log,
                "refused connection",
                "refused a connection from {peer}: {}",
                flux_log::cap(&e, 200)
            );
            return error(StatusCode::UNAUTHORIZED, e);
        }
    };
    let Some(vsn) = Vsn::parse(query_param(query, "vsn").as_deref()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported vsn: use 1.0.0 or 2.0.0",
        );
    };
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let is_websocket = header(UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        && header(SEC_WEBSOCKET_VERSION) == Some("13");
    let Some(key) = header(SEC_WEBSOCKET_KEY).filter(|_| is_websocket) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                log!("upgrade from {peer} failed: {e}");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let id = state.next_conn_id();
        let (conn, rx) = ConnHandle::new(id, vsn, peer.to_string(), state.config.send_queue_bytes);
        session::run(ws, state, conn, rx, auth, shutdown).await;
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    res
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let q = "apikey=abc.def-ghi_jk&vsn=2.0.0&x=a%20b+c&empty";
        assert_eq!(query_param(q, "apikey").as_deref(), Some("abc.def-ghi_jk"));
        assert_eq!(query_param(q, "vsn").as_deref(), Some("2.0.0"));
        assert_eq!(query_param(q, "x").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
