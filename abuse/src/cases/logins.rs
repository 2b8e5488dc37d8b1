//! Failed logins (issue 23, finding 9): a flood of Hellos with a wrong key
//! and a 16 KiB client name must not flood the broker's log, must not slow
//! anyone else down, and must not keep a client with the right key out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::{ErrorCode, Frame, Hello, PROTOCOL_VERSION};

use super::{ensure, Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::{Conn, Reply};

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "failed-login-flood",
        what: "Hellos with a wrong key and a 16 KiB client name from 20 peers at once: log volume bounded, a client with the right key logs in promptly",
        run: |ctx| Box::pin(failed_login_flood(ctx)),
    }]
}

/// The most the broker may log during the whole flood. At one line a
/// second for each kind of warning, a flood of a few seconds writes a few
/// hundred bytes a line; one 16 KiB name logged per failure is far beyond.
const LOG_BOUND: usize = 32 * 1024;

async fn failed_login_flood(ctx: &Ctx) -> CaseResult {
    let key = "right-key";
    let broker = Broker::start(&ctx.bin, "", &format!("[auth]\napi_keys = [{key:?}]"))?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let log_before = broker.log().len();
    let watched = Watched::start(broker, Some(key)).await?;
    let attempts = ctx.count(200, 2000);
    let attackers = 20;
    // The largest name a Hello may carry before the handshake (16 KiB frame).
    let name = "n".repeat(16 * 1024 - 200);
    let left = Arc::new(AtomicUsize::new(attempts));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..attackers {
        let (name, left, refused) = (name.clone(), left.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let start = Instant::now();
                let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
                conn.send(&Frame::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client_name: Some(&name),
                    api_key: Some("wrong-key"),
                    drop_notices: false,
                }))
                .await
                .map_err(|e| e.to_string())?;
                let (replies, closed) = conn.drain_until_closed(Duration::from_secs(10)).await;
                let auth_failed = replies.iter().any(
                    |r| matches!(r, Reply::Error { code, .. } if *code == ErrorCode::AuthFailed),
                );
                if auth_failed && closed {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                slowest = slowest.max(start.elapsed());
            }
            Ok::<_, String>(slowest)
        }));
    }
    // Meanwhile, a client with the right key logs in now and then.
    let mut slowest_login = Duration::ZERO;
    let mut logins = 0;
    while left.load(Ordering::Relaxed) > 0 || logins < 3 {
        let start = Instant::now();
        let mut client = Conn::ready(addr, Some(key))
            .await
            .map_err(|e| format!("the client with the right key was refused: {e}"))?;
        client.ping(1, Duration::from_secs(5)).await?;
        slowest_login = slowest_login.max(start.elapsed());
        logins += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut slowest_refusal = Duration::ZERO;
    for task in tasks {
        slowest_refusal = slowest_refusal.max(task.await.map_err(|e| e.to_string())??);
    }
    let bounds = Bounds {
        rss_growth: 32 << 20,
        fds: fds_before + attackers + 16,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    let logged = broker.log().len() - log_before;
    let refused = refused.load(Ordering::Relaxed);
    ensure(refused == attempts, || {
        format!("{refused} of {attempts} wrong keys got AuthFailed and a close; {summary}")
    })?;
    ensure(logged <= LOG_BOUND, || {
        format!("the broker logged {logged} bytes for {attempts} failed logins (bound {LOG_BOUND}); {summary}")
    })?;
    ensure(slowest_login < Duration::from_millis(500), || {
        format!("a client with the right key took {slowest_login:?} to log in; {summary}")
    })?;
    Ok(format!(
        "{attempts} failed logins, slowest refusal {:.1} s, {logged} bytes logged, {logins} logins with the right key (slowest {:.1} ms); {summary}",
        slowest_refusal.as_secs_f64(),
        slowest_login.as_secs_f64() * 1e3
    ))
}
