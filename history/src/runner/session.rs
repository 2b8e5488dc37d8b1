//! One connection of one actor. The client's own reconnect is off: a
//! restarted broker listens on a new port, and a connection that ends ends
//! its session, so every delivery and every ack in the history belongs to
//! exactly one connection. The actor opens a new session instead.

use std::net::SocketAddr;
use std::time::Duration;

use blipmq::{Client, ErrorCode, ReconnectPolicy, SubscribeErrorKind, Subscription};
use blipmq_history::Event;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;
use crate::workload::QueuePlan;

/// Long enough for a healthy debug broker under load, short enough that a
/// frozen one is given up on quickly and tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A publish or subscribe unanswered this long is indeterminate; a SIGSTOP
/// longer than this makes some.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Connect to wherever the broker is now, retrying until it is up; `None`
/// once `stop` is cancelled.
pub async fn connect(
    name: &str,
    addresses: &mut watch::Receiver<Option<SocketAddr>>,
    stop: &CancellationToken,
) -> Option<Client> {
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let address = *addresses.borrow_and_update();
        if let Some(address) = address {
            let attempt = Client::builder()
                .name(name)
                .reconnect(ReconnectPolicy::disabled())
                .connect_timeout(CONNECT_TIMEOUT)
                .request_timeout(REQUEST_TIMEOUT)
                .connect(address.to_string());
            tokio::select! {
                connected = attempt => if let Ok(client) = connected {
                    return Some(client);
                },
                () = stop.cancelled() => return None,
            }
        }
        tokio::select! {
            _ = addresses.changed() => {}
            () = tokio::time::sleep(RETRY_EVERY) => {}
            () = stop.cancelled() => return None,
        }
    }
}

/// Attach `consumer` to its queue on `client`, waiting while the broker
/// still counts an earlier connection of ours as attached (DurableInUse).
/// `None` when the session is over: the connection was lost, stop was
/// cancelled, or the subscribe went unanswered (it may still take effect,
/// so the caller must close the connection rather than try again on it).
pub async fn attach(
    client: &Client,
    consumer: &'static str,
    plan: &QueuePlan,
    recorder: &Recorder,
    stop: &CancellationToken,
) -> Option<Subscription> {
    loop {
        let attempt = tokio::select! {
            attempt = client.subscribe_with(plan.pattern, plan.options()) => attempt,
            () = stop.cancelled() => return None,
        };
        match attempt {
            Ok(subscription) => {
                recorder.record(Event::ConsumerAttached {
                    consumer,
                    queue: plan.name,
                });
                return Some(subscription);
            }
            Err(e) if e.code() == ErrorCode::DurableInUse => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.kind() == SubscribeErrorKind::Rejected => {
                recorder.anomaly(format!("{consumer} could not attach to {}: {e}", plan.name));
                tokio::time::sleep(Duration::from_secs(1)).await;
                return None;
            }
            Err(_) => return None,
        }
    }
}
