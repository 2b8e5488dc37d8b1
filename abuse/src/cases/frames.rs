//! Malformed and oversized frames at every state of a connection: before the
//! handshake each is refused with a coded error and the connection closed;
//! after it each gets a coded error and the connection goes on serving.

use std::time::Duration;

use blipmq_protocol::{ErrorCode, Frame, Hello, Welcome, PROTOCOL_VERSION};

use super::{ensure, Case, CaseResult, Ctx, Watched};
use crate::broker::Broker;
use crate::measure::Bounds;
use crate::wire::{Conn, Reply};

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "malformed-frames",
        what: "garbage, lying length prefixes, wrong frames and bad fields before and after the handshake: coded errors, no growth",
        run: |ctx| Box::pin(malformed_frames(ctx)),
    }]
}

const WAIT: Duration = Duration::from_secs(10);

/// A frame body that is not a FlatBuffers frame, with a correct prefix.
fn garbage_frame() -> Vec<u8> {
    let body = [0xAB_u8; 40];
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

async fn expect_error_then_close(
    conn: &mut Conn,
    code: ErrorCode,
    what: &str,
) -> Result<(), String> {
    let (replies, closed) = conn.drain_until_closed(WAIT).await;
    let coded = replies
        .iter()
        .any(|r| matches!(r, Reply::Error { code: c, .. } if *c == code));
    ensure(coded && closed, || {
        format!("{what}: expected error {code:?} and a close, got {replies:?} (closed: {closed})")
    })
}

async fn expect_error_and_alive(
    conn: &mut Conn,
    code: ErrorCode,
    what: &str,
) -> Result<(), String> {
    match conn.recv_within(WAIT).await? {
        Reply::Error { code: c, .. } if c == code => {}
        other => return Err(format!("{what}: expected error {code:?}, got {other:?}")),
    }
    conn.ping(7, WAIT)
        .await
        .map(|_| ())
        .map_err(|e| format!("{what}: the connection did not survive: {e}"))
}

async fn malformed_frames(ctx: &Ctx) -> CaseResult {
    let broker = Broker::start(&ctx.bin, "handshake_timeout_ms = 5000", "")?;
    let addr = broker.clients;
    let fds_before = broker.fds();
    let watched = Watched::start(broker, None).await?;
    let rounds = ctx.count(50, 500);
    for _ in 0..rounds {
        // Before the handshake.
        let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
        conn.send_raw(&u32::MAX.to_le_bytes())
            .await
            .map_err(|e| e.to_string())?;
        expect_error_then_close(
            &mut conn,
            ErrorCode::MessageTooLarge,
            "a 4 GiB prefix before Hello",
        )
        .await?;

        let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
        conn.send_raw(&garbage_frame())
            .await
            .map_err(|e| e.to_string())?;
        expect_error_then_close(&mut conn, ErrorCode::MalformedFrame, "garbage before Hello")
            .await?;

        let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
        conn.push_publish(1, "a", b"x", 0);
        conn.flush().await.map_err(|e| e.to_string())?;
        expect_error_then_close(
            &mut conn,
            ErrorCode::HandshakeRequired,
            "Publish before Hello",
        )
        .await?;

        let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
        conn.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            client_name: None,
            api_key: None,
            drop_notices: false,
        }))
        .await
        .map_err(|e| e.to_string())?;
        expect_error_then_close(
            &mut conn,
            ErrorCode::UnsupportedVersion,
            "a future protocol version",
        )
        .await?;

        // After the handshake.
        let mut conn = Conn::ready(addr, None).await?;
        conn.send_raw(&garbage_frame())
            .await
            .map_err(|e| e.to_string())?;
        expect_error_and_alive(&mut conn, ErrorCode::MalformedFrame, "garbage after Hello").await?;
        // A frame over the limit, body and all: refused, skipped, and the
        // next frame is read as usual.
        let oversize = 2 * 1024 * 1024 + 1024;
        conn.send_raw(&(oversize as u32).to_le_bytes())
            .await
            .map_err(|e| e.to_string())?;
        conn.send_raw(&vec![0u8; oversize])
            .await
            .map_err(|e| e.to_string())?;
        expect_error_and_alive(&mut conn, ErrorCode::MessageTooLarge, "an oversized frame").await?;
        conn.send(&Frame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: None,
            api_key: None,
            drop_notices: false,
        }))
        .await
        .map_err(|e| e.to_string())?;
        expect_error_and_alive(&mut conn, ErrorCode::DuplicateHandshake, "a second Hello").await?;
        conn.send(&Frame::Welcome(Welcome::default()))
            .await
            .map_err(|e| e.to_string())?;
        expect_error_and_alive(
            &mut conn,
            ErrorCode::UnsupportedFrame,
            "a broker-to-client frame",
        )
        .await?;
        conn.push_publish(2, "a..b", b"x", 0);
        conn.flush().await.map_err(|e| e.to_string())?;
        expect_error_and_alive(&mut conn, ErrorCode::InvalidTopic, "an invalid topic").await?;
        conn.push_publish(3, "a", b"x", 7);
        conn.flush().await.map_err(|e| e.to_string())?;
        expect_error_and_alive(&mut conn, ErrorCode::InvalidArgument, "QoS 7").await?;
        conn.push_subscribe(4, "a.>.b", 0);
        conn.flush().await.map_err(|e| e.to_string())?;
        expect_error_and_alive(&mut conn, ErrorCode::InvalidTopic, "an invalid pattern").await?;
        // Half a frame, then gone.
        let mut frame = garbage_frame();
        frame.truncate(10);
        conn.send_raw(&frame).await.map_err(|e| e.to_string())?;
    }
    let bounds = Bounds {
        rss_growth: 64 << 20,
        fds: fds_before + 64,
        bystander_rtt: Duration::from_millis(500),
    };
    let (outcome, broker) = watched.finish().await?;
    let summary = outcome.check(&bounds)?;
    settle_fds(&broker, fds_before + 2).await?;
    Ok(summary)
}

/// Wait (up to 5 s) for the broker's fds to fall back to `at_most`: every
/// connection an attack opened is closed by then.
pub async fn settle_fds(broker: &Broker, at_most: usize) -> Result<(), String> {
    for _ in 0..100 {
        if broker.fds() <= at_most {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{} fds still open after the attack (at most {at_most} expected)",
        broker.fds()
    ))
}
