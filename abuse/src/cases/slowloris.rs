//! Slowloris: many peers that open a connection and then dribble a Hello a
//! byte at a time (or send nothing). The handshake timeout closes them; the
//! broker's fds come back to where they were and the bystander is unharmed.

use std::time::Duration;

use blipmq_protocol::{Encoder, Frame, Hello, PROTOCOL_VERSION};

use super::frames::settle_fds;
use super::{Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::Conn;

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "slowloris-clients",
        what: "peers dribbling a Hello one byte per 200 ms on the client port: closed at the handshake timeout",
        run: |ctx| Box::pin(slowloris_clients(ctx)),
    }]
}

async fn slowloris_clients(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "handshake_timeout_ms = 1500", "")?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let peers = ctx.count(200, 1000);
    let hello = Encoder::new().encode_to_bytes(&Frame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: Some("slow"),
        api_key: None,
        drop_notices: false,
    }));
    let mut tasks = Vec::new();
    for _ in 0..peers {
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
            for byte in hello.iter().take(hello.len() - 1) {
                if conn.send_raw(&[*byte]).await.is_err() {
                    // Closed by the broker: what should happen.
                    return Ok::<bool, String>(true);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tokio::time::timeout(Duration::ZERO, conn.recv())
                    .await
                    .is_ok()
                {
                    return Ok(true);
                }
            }
            // The whole Hello but one byte took longer than the timeout:
            // the broker must have closed (a read sees the close).
            Ok(conn.drain_until_closed(Duration::from_secs(5)).await.1)
        }));
    }
    let mut still_open = 0;
    for task in tasks {
        if !task.await.map_err(|e| e.to_string())?? {
            still_open += 1;
        }
    }
    let bounds = Bounds {
        rss_growth: 32 << 20,
        fds: fds_before + peers + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    if still_open > 0 {
        return Err(format!("{still_open} slow peers were never closed"));
    }
    let summary = outcome.check(&bounds)?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(format!("{peers} peers closed; {summary}"))
}
