//! Private channels: what a role may do on a topic, by the row-level security policies on
//! `realtime.messages` (sql/realtime.sql), as Supabase decides it.

use crate::auth::Auth;
use crate::db::DbError;
use crate::state::State;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Longest wait for a connection of the check pool: past it the check fails (closed).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// A role's rights on one private topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    pub broadcast_read: bool,
    pub broadcast_write: bool,
    pub presence_read: bool,
    pub presence_write: bool,
}

impl Rights {
    /// Public channels, and the service role on private ones.
    pub const ALL: Rights = Rights {
        broadcast_read: true,
        broadcast_write: true,
        presence_read: true,
        presence_write: true,
    };
}

const EXTENSIONS: [&str; 2] = ["broadcast", "presence"];

/// The rights of `auth` on a private channel (`realtime:<topic>`) it joins or stays on; `Err`
/// is the `Unauthorized: …` refusal when it may hear neither extension or the check failed.
pub async fn channel_rights(state: &State, auth: &Auth, channel: &str) -> Result<Rights, String> {
    let topic = channel.strip_prefix("realtime:").unwrap_or(channel);
    match rights(state, auth, topic).await {
        Ok(r) if r.broadcast_read || r.presence_read => Ok(r),
        Ok(_) => Err(format!(
            "Unauthorized: You do not have permissions to read from this Channel topic: {topic}"
        )),
        Err(e) => Err(format!(
            "Unauthorized: the channel's policies could not be checked: {e}"
        )),
    }
}

/// Evaluates the policies for `auth` on `topic` (the channel name without `realtime:`), in a
/// transaction that is rolled back: a row of each extension is inserted as this server's
/// role, and read back as `auth`'s (read rights); then each is inserted as `auth`'s role
/// (write rights: a policy refusal is 42501). `Err` says why the check could not be made.
pub async fn rights(state: &State, auth: &Auth, topic: &str) -> Result<Rights, String> {
    if auth.role == "service_role" {
        return Ok(Rights::ALL);
    }
    match tokio::time::timeout(POOL_WAIT, check(state, auth, topic)).await {
        Ok(checked) => checked.map_err(|e| e.to_string()),
        Err(_) => Err("the database is busy".into()),
    }
}

async fn check(state: &State, auth: &Auth, topic: &str) -> Result<Rights, DbError> {
    let mut conn = state.check_pool.get().await?;
    let mut tx = conn.client.transaction().await?;
    let ids: Vec<String> = tx
        .query(
            "INSERT INTO realtime.messages (topic, extension, event)
             SELECT $1, e, 'phx_join' FROM unnest($2::text[]) AS e RETURNING id::text",
            &[&topic, &EXTENSIONS.as_slice()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute(
        "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true),
                set_config('realtime.topic', $3, true)",
        &[&auth.role, &auth.claims, &topic],
    )
    .await?;
    let readable: Vec<String> = tx
        .query(
            "SELECT extension FROM realtime.messages WHERE id::text = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut writable = [false; 2];
    for (extension, allowed) in EXTENSIONS.iter().zip(writable.iter_mut()) {
        let attempt = tx.savepoint("write_check").await?;
        let inserted = attempt
            .execute(
                "INSERT INTO realtime.messages (topic, extension, event) VALUES ($1, $2, 'phx_join')",
                &[&topic, extension],
            )
            .await;
        match inserted {
            Ok(_) => *allowed = true,
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            Err(e) => return Err(e),
        }
        attempt.rollback().await?;
    }
    tx.rollback().await?;
    let can_read = |e: &str| readable.iter().any(|r| r == e);
    Ok(Rights {
        broadcast_read: can_read("broadcast"),
        broadcast_write: writable[0],
        presence_read: can_read("presence"),
        presence_write: writable[1],
    })
}
