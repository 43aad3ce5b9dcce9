//! Cancelling the database statement of a request nobody waits for any more.
//!
//! PostgREST 12 keeps running a statement after its client has gone (PostgREST issue #3517),
//! so a few slow requests that are abandoned and repeated can occupy its whole pool. The
//! router gives every request an id (the `x-flux-request-id` header); the database's
//! pre-request hook files the backend serving it under that id until the transaction ends.
//! When the client disconnects, or PostgREST's answer is overdue, the router calls
//! `flux_internal.cancel_request(id)`, which cancels that backend's statement if, and only if,
//! it still serves that request.

use flux_log::{log_throttled, Throttle};
use hyper::header::HeaderValue;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Requests waiting to be cancelled; beyond this, cancels are dropped (statement timeouts
/// still end those statements).
const QUEUE: usize = 1024;

#[derive(Clone)]
pub struct Canceller {
    queue: mpsc::Sender<String>,
}

impl Canceller {
    /// Starts the task that cancels over one database connection, reconnecting as needed.
    pub fn start(db_url: String) -> Canceller {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(run(db_url, requests));
        Canceller { queue }
    }
}

async fn run(db_url: String, mut requests: mpsc::Receiver<String>) {
    let throttle = Arc::new(Throttle::default());
    let mut client: Option<tokio_postgres::Client> = None;
    while let Some(id) = requests.recv().await {
        for _attempt in 0..2 {
            if client
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
            {
                client = match tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await {
                    Ok((c, connection)) => {
                        tokio::spawn(connection);
                        Some(c)
                    }
                    Err(e) => {
                        log_throttled!(
                            throttle,
                            "cancel",
                            "cannot connect to cancel request {id}: {e}"
                        );
                        None
                    }
                };
            }
            let Some(c) = &client else { break };
            match c
                .execute("SELECT flux_internal.cancel_request($1)", &[&id])
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    log_throttled!(throttle, "cancel", "cannot cancel request {id}: {e}");
                    client = None;
                }
            }
        }
    }
}

/// A request on its way to PostgREST: its id, and a cancel on drop unless [`finished`]
/// (dropped means the client went away or the router gave up).
///
/// [`finished`]: InFlight::finished
pub struct InFlight<'a> {
    id: String,
    canceller: Option<&'a Canceller>,
}

impl<'a> InFlight<'a> {
    pub fn new(canceller: Option<&'a Canceller>) -> InFlight<'a> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        InFlight {
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            canceller,
        }
    }

    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.id).expect("hex is a valid header value")
    }

    /// PostgREST answered: its transaction is over, there is nothing to cancel.
    pub fn finished(mut self) {
        self.canceller = None;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(canceller) = self.canceller {
            let _ = canceller.queue.try_send(std::mem::take(&mut self.id));
        }
    }
}
