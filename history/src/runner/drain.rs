//! The drain: after the faults, on a cleanly restarted broker, every queue
//! is consumed (both members of the group at once) and everything acked,
//! until nothing has come for a quiet period. Whatever a queue still owes
//! must arrive here; the checker relies on it.

use std::time::Duration;

use blipmq::Client;
use blipmq_history::{Detach, Event};

use crate::delivery;
use crate::session;
use crate::workload::{QueuePlan, QUEUES};
use crate::Shared;

/// Drain every queue, each drainer within `limit`; each failure (could not
/// attach, lost the broker, never went quiet) is an anomaly. Returns the
/// deliveries taken.
pub async fn drain_all(shared: &Shared, quiet: Duration, limit: Duration) -> u64 {
    let mut drainers = tokio::task::JoinSet::new();
    for plan in QUEUES {
        for &name in plan.drainers {
            let shared = shared.clone();
            drainers.spawn(async move {
                let outcome = tokio::time::timeout(limit, drain(name, plan, &shared, quiet)).await;
                let problem = match outcome {
                    Ok(Ok(taken)) => return taken,
                    Ok(Err(problem)) => problem,
                    Err(_) => format!("not done after {limit:?}"),
                };
                shared
                    .recorder
                    .anomaly(format!("drain of {} by {name}: {problem}", plan.name));
                0
            });
        }
    }
    let mut taken = 0;
    while let Some(result) = drainers.join_next().await {
        taken += result.unwrap_or(0);
    }
    taken
}

async fn drain(
    name: &'static str,
    plan: &'static QueuePlan,
    shared: &Shared,
    quiet: Duration,
) -> Result<u64, String> {
    let mut addresses = shared.addresses.clone();
    let client = session::connect(name, &mut addresses, &shared.stop)
        .await
        .ok_or("could not connect")?;
    let taken = take_until_quiet(&client, name, plan, shared, quiet).await;
    // Acks are only queued by `ack`; this makes sure the broker has them.
    let flushed = client.flush().await;
    shared.recorder.record(Event::ConsumerDetached {
        consumer: name,
        queue: plan.name,
        why: Detach::Closed,
    });
    client.close().await;
    let taken = taken?;
    flushed.map_err(|e| format!("flushing its acks: {e}"))?;
    Ok(taken)
}

async fn take_until_quiet(
    client: &Client,
    name: &'static str,
    plan: &'static QueuePlan,
    shared: &Shared,
    quiet: Duration,
) -> Result<u64, String> {
    let recorder = &shared.recorder;
    let mut subscription = session::attach(client, name, plan, recorder, &shared.stop)
        .await
        .ok_or("could not attach")?;
    let mut taken = 0;
    loop {
        match tokio::time::timeout(quiet, subscription.next_message()).await {
            Ok(Some(message)) => {
                taken += 1;
                let key = delivery::record(recorder, name, plan.name, &message);
                delivery::ack(recorder, name, plan.name, key, &message).await;
            }
            Ok(None) => return Err("the connection was lost".into()),
            Err(_) => return Ok(taken),
        }
    }
}
