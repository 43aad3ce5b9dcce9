//! The HTTP front: `/websocket` (also `/realtime/v1/websocket`, for direct connections) with
//! the api key checked before the upgrade, and `/health`.

use crate::auth;
use crate::authz;
use crate::hub::ConnHandle;
use crate::limits::Refusal;
use crate::protocol::Vsn;
use crate::session;
use crate::state::State;
use crate::time;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Join payloads are small; nothing a client sends needs more.
const MAX_MESSAGE: usize = 1 << 20;
/// The most of a REST body read before it is refused (the router's own limit).
const READ_BODY_BYTES: usize = 8 << 20;

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
                async move { Ok::<_, Infallible>(route(req, state, peer, shutdown).await) }
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

async fn route(
    req: Request<Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Reply {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/api/broadcast" | "/realtime/v1/api/broadcast") => {
            rest_broadcast(req, &state).await
        }
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
                    "channels": state.hub.snapshot().subs.len(),
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
    let client = client_address(&req, peer);
    let admitted = match state.connections.admit(client) {
        Ok(a) => a,
        Err(refusal) => {
            let (status, message) = match refusal {
                Refusal::ClientConnections(n) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("TooManyConnections: at most {n} connections per client address"),
                ),
                Refusal::Connections(n) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("TooManyConnections: the server has its {n} connections open"),
                ),
            };
            log_throttled!(
                state.client_log,
                "refused connection",
                "refused a connection from {client}: {message}"
            );
            return error(status, message);
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
        let (conn, rx) =
            ConnHandle::new(id, vsn, client.to_string(), state.config.send_queue_bytes);
        session::run(ws, state, conn, rx, auth, shutdown).await;
        drop(admitted);
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

/// `POST /api/broadcast` `{"messages": [{topic, event, payload, private?, id?}]}`: each
/// message goes to the members of `realtime:<topic>`, as Supabase's endpoint does. 202 with
/// an empty body; 401 without a valid token; 422 for a malformed batch.
async fn rest_broadcast(req: Request<Incoming>, state: &State) -> Reply {
    let message = |status, text: &str| json(status, serde_json::json!({ "message": text }));
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("apikey").and_then(|v| v.to_str().ok()));
    let now = time::now_micros() / 1_000_000;
    let Some(auth) = token.and_then(|t| auth::verify(t, &state.config.secret, now).ok()) else {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let limits = &state.config.limits;
    // The body is read whole (the router lets through at most 8 MiB) before a 413: answering
    // while the router still sends would break its connection, and the client would see a 503.
    let body = match Limited::new(req.into_body(), READ_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
    };
    if body.len() > MAX_MESSAGE {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    }
    let batch: BroadcastBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Invalid batch: {e}"),
            )
        }
    };
    if batch.messages.len() > 2 * limits.messages_per_second {
        return message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many messages to broadcast, please reduce the batch size",
        );
    }
    for m in &batch.messages {
        if m.payload.get().len() > limits.payload_bytes {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Payload size exceeds tenant limit",
            );
        }
        if !m.payload.get().trim_start().starts_with('{') {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid batch: payload must be an object",
            );
        }
    }
    // A private message goes out only if the caller's policies let it send on the topic; as
    // in Supabase, refused ones are skipped and the batch is still accepted.
    let mut may_send: HashMap<String, bool> = HashMap::new();
    for m in batch.messages {
        if m.private {
            let allowed = match may_send.get(&m.topic) {
                Some(&allowed) => allowed,
                None => {
                    let allowed = match authz::rights(state, &auth, &m.topic).await {
                        Ok(rights) => rights.broadcast_write,
                        Err(e) => {
                            log!("broadcast: the policies of a private topic could not be checked: {e}");
                            false
                        }
                    };
                    may_send.insert(m.topic.clone(), allowed);
                    allowed
                }
            };
            if !allowed {
                continue;
            }
        }
        state.broadcast_from_server(
            &m.topic,
            &m.event,
            m.payload.get(),
            m.id.as_deref(),
            m.private,
        );
    }
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::ACCEPTED;
    res
}

#[derive(serde::Deserialize)]
struct BroadcastBatch {
    messages: Vec<BatchMessage>,
}

#[derive(serde::Deserialize)]
struct BatchMessage {
    topic: String,
    event: String,
    payload: Box<serde_json::value::RawValue>,
    #[serde(default)]
    private: bool,
    id: Option<String>,
}

/// The client's address: the router's `X-Forwarded-For` (set from its socket, never taken
/// from the client) when the connection comes from this machine, else the peer itself.
fn client_address(req: &Request<Incoming>, peer: SocketAddr) -> IpAddr {
    if !peer.ip().is_loopback() {
        return peer.ip();
    }
    req.headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok())
        .unwrap_or(peer.ip())
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
