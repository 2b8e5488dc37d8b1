//! A reconnect storm: a thousand clients connect, handshake, subscribe and
//! leave at once, several times over, as a fleet does after a network blip.

use std::time::Duration;

use super::frames::settle_fds;
use super::{Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::{Conn, Reply};

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "reconnect-storm",
        what: "1,000 clients connect, subscribe and disconnect at once, three times: all served, fds back to the baseline",
        run: |ctx| Box::pin(reconnect_storm(ctx)),
    }]
}

async fn reconnect_storm(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "", "")?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let clients = ctx.count(1000, 1000);
    let rounds = ctx.count(3, 10);
    for round in 0..rounds {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                tokio::spawn(async move {
                    let mut conn = Conn::ready(addr, None).await?;
                    conn.push_subscribe(1, &format!("storm.{}.>", i % 50), 0);
                    conn.flush().await.map_err(|e| e.to_string())?;
                    match conn.recv_within(Duration::from_secs(30)).await? {
                        Reply::Subscribed { .. } => Ok::<(), String>(()),
                        other => Err(format!("expected Subscribed, got {other:?}")),
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("round {round}: {e}"))?;
        }
    }
    let bounds = Bounds {
        rss_growth: 64 << 20,
        fds: fds_before + clients + 32,
        bystander_rtt: Duration::from_millis(1000),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!("{rounds} rounds of {clients}; {summary}"))
}
