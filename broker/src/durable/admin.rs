//! What an operator sees of the stored queues and may do to them: a
//! snapshot per durable subscription or queue group ([`QueueStats`], for
//! `GET /v1/queues` and per-queue metrics), and deleting one by name.
//!
//! Snapshots are taken under the store's lock and copied out, each queue's
//! in constant time, so a reader never holds the lock across an await.

use std::time::{Duration, Instant};

use super::{unix_ms, Durable, QueueKind, State};
use crate::wal::WalError;

/// One durable subscription or queue group, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    pub pattern: String,
    /// [`QueueKind::Durable`] or [`QueueKind::Group`] (ephemeral QoS 1
    /// queues belong to their subscription and are not listed).
    pub kind: QueueKind,
    /// Consumers attached now (a durable subscription has at most one).
    pub consumers: usize,
    /// Messages waiting to be sent: never sent yet, or taken back after an
    /// ack timeout or a consumer leaving.
    pub pending: u64,
    /// Messages sent to a consumer whose ack has not come yet.
    pub unacked: u64,
    /// Every message the queue keeps: pending, unacked, and those on their
    /// way to the dead-letter topic.
    pub kept: u64,
    /// How long ago the oldest message the queue keeps was stored: how far
    /// behind its consumers are. `None` when it keeps nothing.
    pub oldest_unacked_age: Option<Duration>,
    /// Deliveries sent again since the broker started.
    pub redeliveries: u64,
    /// Messages moved to the dead-letter topic since the broker started.
    pub dead_letters: u64,
    /// Encoded bytes of the messages it keeps: the log cannot release the
    /// segments that hold them.
    pub bytes_pinned: u64,
    /// How long nobody has been attached (`None` while someone is).
    pub detached_for: Option<Duration>,
}

impl QueueKind {
    /// The name operators see: "durable", "group" or "ephemeral".
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Durable => "durable",
            QueueKind::Group => "group",
            QueueKind::Ephemeral => "ephemeral",
        }
    }
}

/// What [`Durable::delete_by_name`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// No durable subscription or queue group has that name.
    NotFound,
    /// Consumers are attached: nothing was deleted. A consumer cannot be
    /// told its subscription was ended under it (the protocol has no frame
    /// for that), so it would wait for messages that never come; the
    /// operator closes those clients first, as Kafka refuses to delete a
    /// consumer group with active members.
    Attached(usize),
}

impl Durable {
    /// Every durable subscription and queue group, by name.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let (now_ms, now) = (unix_ms(), Instant::now());
        let state = self.state.lock();
        let mut stats: Vec<QueueStats> = state
            .queues
            .iter()
            .filter(|q| q.persistent())
            .map(|q| q.stats(&state.store, now_ms, now))
            .collect();
        drop(state);
        stats.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// The durable subscription or queue group called `name`.
    pub fn queue_stat(&self, name: &str) -> Option<QueueStats> {
        let state = self.state.lock();
        let queue = state.queues.get(name).filter(|q| q.persistent())?;
        Some(queue.stats(&state.store, unix_ms(), Instant::now()))
    }

    /// Delete the durable subscription or queue group `name` with every
    /// message it keeps, unless a consumer is attached (see
    /// [`Deletion::Attached`]). The check and the removal are one step
    /// under the store's lock, so no consumer attaches in between.
    pub async fn delete_by_name(&self, name: &str) -> Result<Deletion, WalError> {
        {
            let mut state = self.state.lock();
            let State { queues, store } = &mut *state;
            let Some(queue) = queues.get(name).filter(|q| q.persistent()) else {
                return Ok(Deletion::NotFound);
            };
            let attached = queue
                .consumers
                .iter()
                .filter(|c| !c.live.is_closed())
                .count();
            if attached > 0 {
                return Ok(Deletion::Attached(attached));
            }
            let mut queue = queues.remove(name).expect("found above");
            queue.clear(store);
        }
        self.save_manifest().await?;
        self.release();
        Ok(Deletion::Deleted)
    }
}
