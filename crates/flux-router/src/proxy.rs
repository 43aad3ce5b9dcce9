//! Routing and forwarding: `/rest/v1/…` to PostgREST, `/realtime/v1/…` to the realtime server,
//! anything else that is a GET or HEAD to the static files (the dashboard), when configured.

use crate::cancel::{Canceller, InFlight};
use crate::config::Config;
use crate::limits::{Limits, Refusal};
use crate::query;
use bytes::Bytes;
use flux_edge::postgrest::error_body;
use flux_edge::KeyError;
use flux_log::{log_throttled, Throttle};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;
pub type Reply = Response<ProxyBody>;

/// Set by the router, never taken from the client: PostgREST passes it to the database in
/// `request.headers`, where `flux_internal.pre_request` files the request under it.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-flux-request-id");
const APIKEY: HeaderName = HeaderName::from_static("apikey");
const PREFER: HeaderName = HeaderName::from_static("prefer");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

pub struct Router {
    pub config: Config,
    pub limits: Arc<Limits>,
    client: Client<HttpConnector, ProxyBody>,
    canceller: Option<Canceller>,
    static_files: Option<hyper_staticfile::Static>,
    throttle: Throttle,
    /// WebSocket upgrades now waiting for the realtime server.
    waiting_upgrades: AtomicUsize,
}

/// WebSocket upgrades that may wait for the realtime server at once; more are answered 503 at
/// once, so that a restart (or a flood while it is down) holds few connection slots.
const MAX_WAITING_UPGRADES: usize = 256;

impl Router {
    pub fn new(config: Config) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Router {
            limits: Arc::new(Limits::new(
                config.client_connections,
                config.max_connections,
                config.client_rate,
                config.client_burst,
            )),
            canceller: config.db_url.clone().map(Canceller::start),
            static_files: config.static_dir.clone().map(|dir| {
                let mut files = hyper_staticfile::Static::new(dir);
                // The dashboard is rebuilt in place by `./flux up`: browsers revalidate.
                files.cache_headers(Some(0));
                files
            }),
            client,
            throttle: Throttle::default(),
            waiting_upgrades: Default::default(),
            config,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let rate = self.limits.request(peer.ip(), now_us());
        if !rate.allowed {
            let reply = error(
                StatusCode::TOO_MANY_REQUESTS,
                "PT429",
                "Too many requests from this address",
                Some(&format!(
                    "The router allows {} requests per second per client address.",
                    self.limits.rate_per_second()
                )),
                Some(&format!("Retry after {} s.", rate.retry_after)),
            )
            .with_header(header::RETRY_AFTER, rate.retry_after.to_string());
            return refuse(req.into_body(), reply);
        }
        let path = req.uri().path().to_owned();
        if path == "/rest/v1" {
            let location = match req.uri().query() {
                Some(q) => format!("/rest/v1/?{q}"),
                None => "/rest/v1/".to_owned(),
            };
            return empty(StatusCode::MOVED_PERMANENTLY).with_header(header::LOCATION, location);
        }
        if let Some(rest) = path.strip_prefix("/rest/v1/") {
            return self.rest(req, peer, format!("/{rest}")).await;
        }
        if let Some(rest) = path.strip_prefix("/realtime/v1/") {
            return self.realtime(req, peer, format!("/{rest}")).await;
        }
        if let Some(files) = &self.static_files {
            if matches!(*req.method(), Method::GET | Method::HEAD) {
                // The resolver confines paths to the directory (`..` and absolute parts are
                // dropped); anything it cannot serve falls through to the API's 404.
                match files.clone().serve(req).await {
                    Ok(res) if res.status() != StatusCode::NOT_FOUND => {
                        return res.map(|body| body.map_err(BoxError::from).boxed());
                    }
                    _ => {}
                }
            }
        }
        error(
            StatusCode::NOT_FOUND,
            "PT404",
            "Not found",
            Some("The API is under /rest/v1/ and /realtime/v1/."),
            None,
        )
    }

    async fn rest(&self, req: Request<Incoming>, peer: SocketAddr, path: String) -> Reply {
        let routed = query::route(req.uri().query().unwrap_or(""));
        let key = match self.admit_rest(&req, &routed) {
            Ok(key) => key,
            Err(refusal) => return refuse(req.into_body(), *refusal),
        };
        let (parts, body) = req.into_parts();
        let mut headers = forwarded_headers(&parts.headers, peer.ip());
        if let Some(key) = key {
            headers.insert(APIKEY, key);
        }
        if counts_truncation(&parts.method, &path, &routed.query, &headers) {
            add_count_preference(&mut headers);
        }
        let in_flight = InFlight::new(self.canceller.as_ref());
        headers.insert(REQUEST_ID, in_flight.header());
        let uri = upstream_uri(self.config.postgrest, &path, &routed.query);
        let body_state = Arc::new(AtomicU8::new(BODY_OK));
        let body = GuardedBody {
            inner: body,
            limit: self.config.max_body_bytes,
            read: 0,
            pause: self.config.body_timeout,
            deadline: None,
            state: body_state.clone(),
        };
        let mut upstream = Request::new(body.boxed());
        *upstream.method_mut() = parts.method;
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers;
        let answer =
            tokio::time::timeout(self.config.upstream_timeout, self.client.request(upstream)).await;
        match answer {
            Ok(Ok(response)) if response.status() == StatusCode::BAD_REQUEST => {
                in_flight.finished();
                mid_request_disconnect(response).await
            }
            Ok(Ok(response)) => {
                in_flight.finished();
                from_upstream(response)
            }
            Ok(Err(e)) => match body_state.load(Ordering::Relaxed) {
                BODY_TOO_LARGE => self.body_too_large(),
                BODY_TIMEOUT => error(
                    StatusCode::REQUEST_TIMEOUT,
                    "PT408",
                    "The request body stalled",
                    Some(&format!(
                        "No part of the body arrived for {} s.",
                        self.config.body_timeout.as_secs()
                    )),
                    None,
                ),
                _ => self.upstream_failed("PostgREST", &e),
            },
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                "PT504",
                "The REST API did not answer in time",
                Some(&format!(
                    "No answer within {} s; the statement was cancelled.",
                    self.config.upstream_timeout.as_secs()
                )),
                None,
            ),
        }
    }

    /// The api key a REST request may go on with (none for a CORS preflight, which never
    /// carries credentials and which PostgREST answers without SQL), or why it may not.
    fn admit_rest(
        &self,
        req: &Request<Incoming>,
        routed: &query::RoutedQuery,
    ) -> Result<Option<HeaderValue>, Box<Reply>> {
        let preflight = req.method() == Method::OPTIONS;
        let key = match api_key(req.headers(), &routed.api_keys) {
            Ok(key) => key,
            Err(_) if preflight => None,
            Err(refusal) => return Err(refusal),
        };
        if key.is_none() && !preflight {
            let missing = KeyError::Missing;
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "PT401",
                missing.message(),
                missing.details(),
                Some(missing.hint()),
            )));
        }
        match self.too_large(req.headers()) {
            Some(refusal) => Err(Box::new(refusal)),
            None => Ok(key),
        }
    }

    async fn realtime(&self, req: Request<Incoming>, peer: SocketAddr, path: String) -> Reply {
        let query = req.uri().query().unwrap_or("").to_owned();
        if req.headers().contains_key(header::UPGRADE) {
            return self.upgrade(req, peer, &path, &query).await;
        }
        if let Some(refusal) = self.too_large(req.headers()) {
            return refuse(req.into_body(), refusal);
        }
        let (parts, body) = req.into_parts();
        let mut upstream = Request::new(body.map_err(BoxError::from).boxed());
        *upstream.method_mut() = parts.method;
        *upstream.uri_mut() = upstream_uri(self.config.realtime, &path, &query);
        *upstream.headers_mut() = forwarded_headers(&parts.headers, peer.ip());
        match tokio::time::timeout(self.config.upstream_timeout, self.client.request(upstream))
            .await
        {
            Ok(Ok(response)) => from_upstream(response),
            Ok(Err(e)) => self.upstream_failed("the realtime server", &e),
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                "PT504",
                "The realtime server did not answer in time",
                None,
                None,
            ),
        }
    }

    /// A WebSocket: the upgrade request goes to the realtime server on a connection of its
    /// own; once both sides have switched protocols, bytes are copied both ways.
    async fn upgrade(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        path: &str,
        query: &str,
    ) -> Reply {
        let stream = match self.connect_realtime().await {
            Ok(s) => s,
            Err(e) => return self.upstream_failed("the realtime server", &e),
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(e) => return self.upstream_failed("the realtime server", &e),
            };
        tokio::spawn(connection.with_upgrades());
        let client_side = hyper::upgrade::on(&mut req);
        let mut upstream = Request::new(Empty::<Bytes>::new());
        *upstream.uri_mut() = path_and_query(path, query);
        let mut headers = req.headers().clone();
        headers.insert(X_FORWARDED_FOR, ip_header(peer.ip()));
        headers.remove(X_REAL_IP);
        *upstream.headers_mut() = headers;
        let mut response = match sender.send_request(upstream).await {
            Ok(r) => r,
            Err(e) => return self.upstream_failed("the realtime server", &e),
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return from_upstream(response);
        }
        let server_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(server)) = (client_side.await, server_side.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(server),
                )
                .await;
            }
        });
        let mut reply = empty(StatusCode::SWITCHING_PROTOCOLS);
        *reply.headers_mut() = response.headers().clone();
        reply
    }

    /// Connects to the realtime server, retrying while it is not listening (a restart), for
    /// at most `upgrade_wait`.
    async fn connect_realtime(&self) -> std::io::Result<TcpStream> {
        const RETRY: Duration = Duration::from_millis(250);
        let first = TcpStream::connect(self.config.realtime).await;
        if first.is_ok() {
            return first;
        }
        // Counted while waiting, also when the client leaves and this future is dropped.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&self.waiting_upgrades);
        if self.waiting_upgrades.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_UPGRADES {
            return first;
        }
        let deadline = tokio::time::Instant::now() + self.config.upgrade_wait;
        loop {
            match TcpStream::connect(self.config.realtime).await {
                Ok(stream) => return Ok(stream),
                Err(e) if tokio::time::Instant::now() + RETRY > deadline => return Err(e),
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        }
    }

    fn too_large(&self, headers: &HeaderMap) -> Option<Reply> {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())?;
        (length > self.config.max_body_bytes).then(|| self.body_too_large())
    }

    fn body_too_large(&self) -> Reply {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PT413",
            "Request body too large",
            Some(&format!(
                "The limit is {} bytes.",
                self.config.max_body_bytes
            )),
            Some("Send large batches in parts (a batch of 10,000 readings is about 2.5 MB)."),
        )
    }

    fn upstream_failed(&self, what: &str, e: &dyn std::error::Error) -> Reply {
        let mut cause = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        log_throttled!(self.throttle, "upstream", "cannot reach {what}: {cause}");
        let connect = cause.contains("onnect");
        error(
            if connect {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            },
            if connect { "PT503" } else { "PT502" },
            &format!("The service behind the router is unavailable ({what})"),
            Some(&flux_log::cap(&cause, 200)),
            Some("Retry in a few seconds; ./flux status shows what runs."),
        )
    }
}

/// A refused request's body is read only to be thrown away, and not for long: a client still
/// uploading then gets the answer instead of a reset connection (nginx's lingering close).
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Answers a request without forwarding it; the rest of its body is discarded (see
/// [`DRAIN_BYTES`]).
fn refuse(body: Incoming, reply: Reply) -> Reply {
    tokio::spawn(async move {
        let mut body = body;
        let mut drained = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                if drained > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
    reply
}

/// The api key of a request: from the `apikey` header or the `apikey` query parameter, of
/// which there may be one (the same key in both places counts once). `Ok(None)`: no key.
fn api_key(headers: &HeaderMap, from_query: &[String]) -> Result<Option<HeaderValue>, Box<Reply>> {
    let from_headers: Vec<&HeaderValue> = headers.get_all(APIKEY).iter().collect();
    let mut keys: Vec<&[u8]> = from_headers.iter().map(|v| v.as_bytes()).collect();
    keys.extend(from_query.iter().map(String::as_bytes));
    keys.retain(|k| !k.iter().all(u8::is_ascii_whitespace));
    keys.dedup();
    match keys.as_slice() {
        [] => Ok(None),
        [key] => HeaderValue::from_bytes(key).map(Some).map_err(|_| {
            Box::new(error(
                StatusCode::UNAUTHORIZED,
                "PT401",
                "Invalid API key",
                Some("The api key holds characters no key has."),
                None,
            ))
        }),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "PT400",
            "More than one api key in the request",
            Some("apikey was given more than once, as header or query parameter; no request carries two keys."),
            Some("Send one key, in the apikey header or the apikey query parameter."),
        ))),
    }
}

/// The client's headers as PostgREST gets them: without hop-by-hop headers and without
/// anything the router alone may set; `X-Forwarded-For` is the client's address.
fn forwarded_headers(client: &HeaderMap, peer: IpAddr) -> HeaderMap {
    let mut headers = client.clone();
    let listed: Vec<HeaderName> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    for name in [APIKEY, REQUEST_ID, X_REAL_IP] {
        headers.remove(name);
    }
    headers.insert(X_FORWARDED_FOR, ip_header(peer));
    headers
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an address is a valid header value")
}

/// Whether a read may be cut by PostgREST's row cap without the client knowing: a GET of a
/// table with no limit, range or count of its own. Such a request also gets
/// `Prefer: count=estimated`, which costs at most the cap's rows more and makes a cut answer
/// a 206 whose `Content-Range` gives the total.
fn counts_truncation(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> bool {
    *method == Method::GET
        && path != "/"
        && !path.starts_with("/rpc/")
        && !headers.contains_key(header::RANGE)
        && !query
            .split('&')
            .any(|p| p.split('=').next().is_some_and(|n| n == "limit"))
        && !headers
            .get_all(PREFER)
            .iter()
            .any(|v| v.as_bytes().windows(6).any(|w| w == b"count="))
}

fn add_count_preference(headers: &mut HeaderMap) {
    let value = match headers.get(PREFER).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, count=estimated"),
        _ => "count=estimated".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(PREFER, v);
    }
}

fn path_and_query(path: &str, query: &str) -> Uri {
    let text = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    text.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn upstream_uri(to: SocketAddr, path: &str, query: &str) -> Uri {
    let pq = path_and_query(path, query);
    format!("http://{to}{pq}")
        .parse()
        .expect("an address and a parsed path make a URI")
}

fn from_upstream(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    passed_on(parts, body.map_err(BoxError::from).boxed())
}

/// An upstream answer passed on with `body`, without its hop-by-hop headers (kept for a
/// protocol switch, which they describe).
fn passed_on(mut parts: hyper::http::response::Parts, body: BoxBody<Bytes, BoxError>) -> Reply {
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
    }
    Response::from_parts(parts, body)
}

/// PostgREST 12 answers 400 with an empty code and message when its database connection
/// breaks mid-statement (PostgreSQL killed, restarted): libpq reports no SQLSTATE, and
/// PostgREST's table sends every unknown code to 400. A client must not take that for bad
/// input and drop its data: it becomes the 503 it is. Other 400s pass unchanged.
async fn mid_request_disconnect(response: Response<Incoming>) -> Reply {
    // That answer is a few dozen bytes. PostgREST may send it chunked, without a length, so
    // the body is read up to this bound; a longer one is some other 400, passed on as read.
    const ERROR_BODY_MAX: usize = 64 * 1024;
    let (parts, mut body) = response.into_parts();
    let mut read = Vec::new();
    let complete = loop {
        if read.len() > ERROR_BODY_MAX {
            break false;
        }
        match body.frame().await {
            None => break true,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return empty(StatusCode::BAD_GATEWAY),
        }
    };
    if complete && is_lost_connection(&read) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "PT503",
            "The database connection broke during the request",
            Some("The statement was stored whole or not at all; the answer was lost."),
            Some("Retry. With on_conflict and Prefer: resolution=ignore-duplicates a retry stores nothing twice."),
        )
        .with_header(header::RETRY_AFTER, "1".into());
    }
    let read = Bytes::from(read);
    let rest = if complete { None } else { Some(body) };
    passed_on(
        parts,
        ReadAhead {
            read: Some(read),
            rest,
        }
        .boxed(),
    )
}

/// A body of which the first bytes have been read already.
struct ReadAhead {
    read: Option<Bytes>,
    rest: Option<Incoming>,
}

impl Body for ReadAhead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(read) = self.read.take() {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(BoxError::from),
            None => Poll::Ready(None),
        }
    }
}

/// PostgREST's error body for a statement whose connection broke: no code, no message.
fn is_lost_connection(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return false;
    };
    let empty = |name: &str| fields.get(name).and_then(|v| v.as_str()) == Some("");
    empty("code") && empty("message")
}

trait WithHeader {
    fn with_header(self, name: HeaderName, value: String) -> Self;
}

impl WithHeader for Reply {
    fn with_header(mut self, name: HeaderName, value: String) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value) {
            self.headers_mut().insert(name, v);
        }
        self
    }
}

fn empty(status: StatusCode) -> Reply {
    let mut res = Response::new(Empty::new().map_err(BoxError::from).boxed());
    *res.status_mut() = status;
    res
}

/// An error in PostgREST's shape (`{code, details, hint, message}`), so that clients read the
/// router's refusals like the database's.
fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    details: Option<&str>,
    hint: Option<&str>,
) -> Reply {
    let body = error_body(code, message, details, hint);
    let mut res = Response::new(Full::new(Bytes::from(body)).map_err(BoxError::from).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// The whole answer to a connection refused at the door: written straight to the socket.
pub fn refused_connection(refusal: Refusal) -> Vec<u8> {
    let (status, message) = match refusal {
        Refusal::ClientConnections => (
            "429 Too Many Requests",
            "Too many connections from this address",
        ),
        Refusal::TotalConnections => (
            "503 Service Unavailable",
            "The router is at its connection limit",
        ),
    };
    let body = error_body(
        &format!("PT{}", &status[..3]),
        message,
        None,
        Some("Close idle connections, or retry later."),
    );
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_TIMEOUT: u8 = 2;

/// The client's request body on its way to PostgREST: at most `limit` bytes, with no pause
/// longer than `pause`. Which limit ended it is left in `state`.
struct GuardedBody {
    inner: Incoming,
    limit: u64,
    read: u64,
    pause: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    state: Arc<AtomicU8>,
}

#[derive(Debug)]
struct BodyRefused(&'static str);

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyRefused {}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline = None;
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.limit {
                        this.state.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(
                            Err(BodyRefused("request body too large").into()),
                        ));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let pause = this.pause;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                if deadline.as_mut().poll(cx).is_ready() {
                    this.state.store(BODY_TIMEOUT, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyRefused("request body stalled").into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn one_api_key_per_request() {
        let key = |h: &[(&str, &str)], q: &[&str]| {
            api_key(
                &headers(h),
                &q.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
            .map_err(|r| r.status())
        };
        assert_eq!(key(&[], &[]), Ok(None));
        assert_eq!(key(&[("apikey", "  ")], &[""]), Ok(None));
        assert_eq!(
            key(&[("apikey", "K")], &[]),
            Ok(Some(HeaderValue::from_static("K")))
        );
        assert_eq!(key(&[], &["K"]), Ok(Some(HeaderValue::from_static("K"))));
        assert_eq!(
            key(&[("apikey", "K")], &["K"]),
            Ok(Some(HeaderValue::from_static("K")))
        );
        assert_eq!(
            key(&[("apikey", "K")], &["L"]),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            key(&[("apikey", "K"), ("apikey", "L")], &[]),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(key(&[], &["K", "L"]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(key(&[], &["K\n"]), Err(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn forwarded_headers_are_the_routers() {
        let client = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-flux-request-id", "forged"),
            ("apikey", "K"),
            ("authorization", "Bearer T"),
            ("prefer", "return=minimal"),
        ]);
        let h = forwarded_headers(&client, "10.1.2.3".parse().unwrap());
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "prefer", "x-forwarded-for"]);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn count_preference_only_where_the_cap_could_cut_silently() {
        let none = HeaderMap::new();
        assert!(counts_truncation(
            &Method::GET,
            "/mg_bess_readings",
            "select=*",
            &none
        ));
        assert!(!counts_truncation(
            &Method::GET,
            "/mg_bess_readings",
            "select=*&limit=10",
            &none
        ));
        assert!(counts_truncation(
            &Method::GET,
            "/mg_bess_readings",
            "climit=3",
            &none
        ));
        assert!(!counts_truncation(
            &Method::POST,
            "/mg_bess_readings",
            "",
            &none
        ));
        assert!(!counts_truncation(
            &Method::GET,
            "/rpc/get_meter_readings_5m",
            "",
            &none
        ));
        assert!(!counts_truncation(&Method::GET, "/", "", &none));
        assert!(!counts_truncation(
            &Method::GET,
            "/t",
            "",
            &headers(&[("range", "0-9")])
        ));
        assert!(!counts_truncation(
            &Method::GET,
            "/t",
            "",
            &headers(&[("prefer", "count=exact")])
        ));
        let mut h = headers(&[("prefer", "return=representation")]);
        add_count_preference(&mut h);
        assert_eq!(h["prefer"], "return=representation, count=estimated");
        let mut h = HeaderMap::new();
        add_count_preference(&mut h);
        assert_eq!(h["prefer"], "count=estimated");
    }

    #[test]
    fn refused_connections_get_a_complete_json_answer() {
        let text = String::from_utf8(refused_connection(Refusal::ClientConnections)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "PT429");
    }

    #[test]
    fn only_postgrests_broken_connection_answer_is_a_lost_connection() {
        assert!(is_lost_connection(
            br#"{"code":"","details":null,"hint":null,"message":""}"#
        ));
        for body in [
            &br#"{"code":"22P02","details":null,"hint":null,"message":"invalid input syntax"}"#[..],
            br#"{"code":"PGRST100","details":"x","hint":null,"message":"parse error"}"#,
            br#"{"code":"","details":null,"hint":null,"message":"something"}"#,
            b"not json",
            b"",
        ] {
            assert!(
                !is_lost_connection(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
