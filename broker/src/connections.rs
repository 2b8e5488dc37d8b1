//! The connections the broker serves, for introspection (`GET
//! /v1/connections`, `/v1/subscriptions`): who each client is, how it is
//! connected, and what has crossed its socket.
//!
//! A connection is listed from its accepted Hello until it closes. The
//! table is a map under one short lock, touched twice per connection (in
//! and out) and by readers that copy out one page; the per-message counters
//! live in the connection's [`Outbox`] (see [`Traffic`]), so the hot path
//! never takes this lock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::outbox::Outbox;

/// What has crossed one connection's socket. Written by its own reader
/// (once per socket read) and writer (once per batch), never per message
/// by anyone else, so the counters cost no contention.
#[derive(Debug, Default)]
pub struct Traffic {
    bytes_in: AtomicU64,
    messages_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_out: AtomicU64,
}

impl Traffic {
    /// The reader handled `bytes` read from the socket, `publishes` of them
    /// publishes.
    pub fn received(&self, bytes: u64, publishes: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        if publishes > 0 {
            self.messages_in.fetch_add(publishes, Ordering::Relaxed);
        }
    }

    /// The writer wrote `bytes`, `deliveries` of them deliveries.
    pub fn sent(&self, bytes: u64, deliveries: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        if deliveries > 0 {
            self.messages_out.fetch_add(deliveries, Ordering::Relaxed);
        }
    }

    /// (bytes in, messages in, bytes out, messages out).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.messages_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.messages_out.load(Ordering::Relaxed),
        )
    }
}

/// How a client reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Tcp,
    Tls,
    WebSocket,
    SecureWebSocket,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Tcp => "tcp",
            Link::Tls => "tls",
            Link::WebSocket => "ws",
            Link::SecureWebSocket => "wss",
        }
    }
}

/// One connection whose Hello was accepted.
pub struct ConnectionInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub link: Link,
    /// The Hello's client name, clipped as in log lines ("" when none).
    pub client_name: String,
    /// The user its key names ("anonymous" on a broker without keys).
    pub user: String,
    pub connected_at: SystemTime,
    /// Its subscriptions, control backlog and traffic counters.
    pub outbox: Arc<Outbox>,
}

/// Every connection whose Hello was accepted and that has not closed.
#[derive(Default)]
pub struct Connections {
    /// By id, which grows with accept order: pages stay stable while
    /// connections come and go (an `offset` past a closed one shifts by
    /// one, never repeats the page).
    open: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
}

impl Connections {
    /// List `info` until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, info: ConnectionInfo) -> Listed {
        let id = info.id;
        self.open.lock().insert(id, Arc::new(info));
        Listed {
            table: self.clone(),
            id,
        }
    }

    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// Up to `limit` connections from the `offset`-th on, in id order, and
    /// how many there are in all. Copies out references only: the lock is
    /// held for the walk to `offset` and `limit` clones.
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<Arc<ConnectionInfo>>) {
        let open = self.open.lock();
        let page = open.values().skip(offset).take(limit).cloned().collect();
        (open.len(), page)
    }

    /// Every connection, in id order, for walks that page over something
    /// finer (subscriptions). References only.
    pub fn all(&self) -> Vec<Arc<ConnectionInfo>> {
        self.open.lock().values().cloned().collect()
    }

    /// The connections with a subscription on stored queue `name`, by id.
    pub fn consumers_of(&self, name: &str) -> Vec<u64> {
        self.all()
            .iter()
            .filter(|c| {
                c.outbox
                    .subscriptions_snapshot()
                    .iter()
                    .any(|s| s.durable.as_deref() == Some(name))
            })
            .map(|c| c.id)
            .collect()
    }
}

/// A connection's place in [`Connections`]; it leaves the list on drop.
pub struct Listed {
    table: Arc<Connections>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.table.open.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> ConnectionInfo {
        ConnectionInfo {
            id,
            peer: "127.0.0.1:1".parse().unwrap(),
            link: Link::Tcp,
            client_name: String::new(),
            user: "anonymous".into(),
            connected_at: SystemTime::now(),
            outbox: Outbox::new(),
        }
    }

    #[test]
    fn connections_are_listed_while_their_guard_lives_and_paged_in_id_order() {
        let table = Arc::new(Connections::default());
        let guards: Vec<Listed> = [3, 1, 2, 5]
            .into_iter()
            .map(|id| table.register(info(id)))
            .collect();
        let (total, page) = table.page(1, 2);
        assert_eq!(total, 4);
        assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), [2, 3]);
        let (_, past_the_end) = table.page(10, 5);
        assert!(past_the_end.is_empty());
        drop(guards);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn traffic_adds_up() {
        let traffic = Traffic::default();
        traffic.received(100, 2);
        traffic.received(50, 0);
        traffic.sent(70, 3);
        assert_eq!(traffic.totals(), (150, 2, 70, 3));
    }
}
