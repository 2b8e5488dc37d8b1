//! Which sockets the broker spends on: a socket holds a handshake slot
//! (`server.max_handshakes`) from its accept until its Hello is accepted,
//! and only then a connection slot (`server.max_connections`). So sockets
//! that never authenticate cannot take the room of clients that do
//! (LIMIT-20), and a socket beyond the handshake budget is closed at once,
//! before any upgrade or task (LIMIT-21).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::{Metrics, Transport};

/// Both budgets; the limits read off the semaphores.
pub(crate) struct Slots {
    /// One permit per socket whose Hello is not accepted yet.
    pub handshakes: Arc<Semaphore>,
    /// One permit per client whose Hello was accepted.
    pub connections: Arc<Semaphore>,
}

impl Slots {
    pub fn new(max_handshakes: usize, max_connections: usize) -> Slots {
        Slots {
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            connections: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

/// The WebSocket adapter's budget of bytes it may read before the Hello is
/// accepted (`usize::MAX` once it is): the transport's part of LIMIT-22.
pub(crate) type ReadBudget = Arc<AtomicUsize>;

/// A socket's slot: a handshake slot until [`Admission::admit`], a
/// connection slot after. Dropping it frees whichever it holds.
pub(crate) struct Admission {
    transport: Transport,
    metrics: Arc<Metrics>,
    connections: Arc<Semaphore>,
    handshake: Option<OwnedSemaphorePermit>,
    connection: Option<OwnedSemaphorePermit>,
    /// The upgrade (WebSocket) and the Hello must both be done by then.
    pub deadline: Instant,
    read_budget: Option<ReadBudget>,
}

impl Admission {
    /// A socket just accepted with `handshake`, a permit of [`Slots::handshakes`].
    pub fn new(
        transport: Transport,
        metrics: Arc<Metrics>,
        slots: &Slots,
        handshake: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Admission {
        metrics.handshake_started();
        Admission {
            transport,
            metrics,
            connections: slots.connections.clone(),
            handshake: Some(handshake),
            connection: None,
            deadline,
            read_budget: None,
        }
    }

    /// The listener the socket came in on.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Lift `budget` (set it to unlimited) when the Hello is accepted.
    pub fn lift_on_admit(&mut self, budget: ReadBudget) {
        self.read_budget = Some(budget);
    }

    /// The Hello is accepted: trade the handshake slot for a connection
    /// slot. `false` when every connection slot is taken (LIMIT-1); the
    /// socket keeps its handshake slot until it closes.
    pub fn admit(&mut self) -> bool {
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            return false;
        };
        self.connection = Some(permit);
        // Free the slot before the gauge says it is free.
        self.handshake = None;
        self.metrics.handshake_ended();
        self.metrics.connection_opened(self.transport);
        if let Some(budget) = self.read_budget.take() {
            budget.store(usize::MAX, Ordering::Relaxed);
        }
        true
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.handshake.take().is_some() {
            self.metrics.handshake_ended();
        }
        if self.connection.take().is_some() {
            self.metrics.connection_closed(self.transport);
        }
    }
}
