//! `sub` and `unsub`.

use std::io::Write;

use base64::Engine;
use blipmq::{Message, Qos, SubscribeOptions, SubscriptionEvent};
use serde::Serialize;

use crate::error::{describe, CliError};
use crate::{connect, Format, Global, SubArgs, UnsubArgs};

pub async fn run_sub(global: &Global, args: SubArgs) -> Result<(), CliError> {
    let mut shutdown = Shutdown::install();
    let client = connect(global, "blipmq-cli sub").await?;
    let result = async {
        // A durable subscription is QoS 1: `--durable` implies `--qos 1`.
        let qos = if args.durable.is_some() {
            Qos::AtLeastOnce
        } else {
            args.qos
        };
        let options = SubscribeOptions {
            qos,
            durable: args.durable.clone(),
            group: args.group.clone(),
            ..Default::default()
        };
        let mut subscription = client
            .subscribe_with(&args.pattern, options)
            .await
            .map_err(|e| {
                CliError::runtime(format!(
                    "cannot subscribe to {:?}: {}",
                    args.pattern,
                    describe(&e)
                ))
            })?;
        eprintln!("subscribed to {}", args.pattern);
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        let mut received = 0u64;
        while args.count.is_none_or(|count| received < count) {
            let event = tokio::select! {
                event = subscription.next_event() => event,
                _ = shutdown.wait() => return Ok(()),
            };
            let message = match event {
                Some(SubscriptionEvent::Message(message)) => message,
                Some(SubscriptionEvent::Dropped(count)) => {
                    report_dropped(count);
                    continue;
                }
                None => {
                    return Err(CliError::runtime(format!(
                        "the connection to {} was lost",
                        global.addr
                    )))
                }
            };
            // Every message written so far is flushed: the notice stands
            // between the messages it came between.
            report_dropped(message.dropped_before());
            match write_message(&mut out, &message, args.format) {
                Ok(()) => {}
                // A closed pipe (`sub ... | head -1`) is a normal way to stop.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(CliError::runtime(format!("cannot write to stdout: {e}"))),
            }
            // Printed means handled: ack it (a no-op for QoS 0 messages).
            message
                .ack()
                .await
                .map_err(|e| CliError::runtime(format!("cannot acknowledge: {}", describe(&e))))?;
            received += 1;
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}

/// No discard is silent: the broker discarded `count` messages for this
/// subscription here (its queue was full, they expired, or its memory
/// budget was full). On stderr, so that stdout stays the messages alone.
fn report_dropped(count: u64) {
    if count > 0 {
        eprintln!("dropped {count}");
    }
}

/// The JSON form of a message: one object per line.
#[derive(Serialize)]
struct JsonMessage<'a> {
    topic: &'a str,
    /// Standard base64 with padding.
    payload: String,
    id: u64,
    timestamp_ms: u64,
    delivery_count: u32,
    /// In order; `value` when the value is UTF-8, else `value_base64`.
    headers: Vec<JsonHeader<'a>>,
}

#[derive(Serialize)]
struct JsonHeader<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

fn write_message(out: &mut impl Write, message: &Message, format: Format) -> std::io::Result<()> {
    let payload = message.payload();
    match format {
        Format::Text => {
            out.write_all(String::from_utf8_lossy(payload).as_bytes())?;
            out.write_all(b"\n")?;
        }
        Format::Raw => out.write_all(payload)?,
        Format::Json => {
            let json = JsonMessage {
                topic: message.topic(),
                payload: base64::engine::general_purpose::STANDARD.encode(payload),
                id: message.id(),
                timestamp_ms: message.timestamp_ms(),
                delivery_count: message.delivery_count(),
                headers: message
                    .headers()
                    .iter()
                    .map(|(key, value)| match std::str::from_utf8(value) {
                        Ok(text) => JsonHeader {
                            key,
                            value: Some(text),
                            value_base64: None,
                        },
                        Err(_) => JsonHeader {
                            key,
                            value: None,
                            value_base64: Some(
                                base64::engine::general_purpose::STANDARD.encode(value),
                            ),
                        },
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut *out, &json).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

/// Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is
/// created, so a signal sent right after `subscribed to` is seen.
struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    fn install() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = signal(SignalKind::interrupt())
                .and_then(|interrupt| Ok((interrupt, signal(SignalKind::terminate())?)))
                .ok();
            Shutdown { signals }
        }
        #[cfg(not(unix))]
        {
            Shutdown {}
        }
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.signals {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Remove a durable subscription or QoS 1 queue group: attach to it by
/// name, then unsubscribe. Non-durable subscriptions need no removal: they
/// end with their connection.
pub async fn run_unsub(global: &Global, args: UnsubArgs) -> Result<(), CliError> {
    let (name, group) = match (args.durable, args.group) {
        (Some(name), _) => (name, false),
        (None, Some(name)) => (name, true),
        (None, None) => {
            return Err(CliError::usage(format!(
                "unsub removes durable subscriptions and queue groups only (give --durable NAME \
                 or --group NAME); a non-durable subscription to {:?} ends when its connection \
                 closes",
                args.pattern
            )))
        }
    };
    let what = if group {
        "queue group"
    } else {
        "durable subscription"
    };
    let client = connect(global, "blipmq-cli unsub").await?;
    let result = async {
        let options = SubscribeOptions {
            qos: Qos::AtLeastOnce,
            durable: (!group).then(|| name.clone()),
            group: group.then(|| name.clone()),
            ..Default::default()
        };
        let fail = |e: &dyn std::fmt::Display| {
            CliError::runtime(format!("cannot remove {what} {name:?}: {e}"))
        };
        let subscription = client
            .subscribe_with(&args.pattern, options)
            .await
            .map_err(|e| fail(&describe(&e)))?;
        subscription
            .unsubscribe()
            .await
            .map_err(|e| fail(&describe(&e)))?;
        eprintln!("removed {what} {name}");
        Ok(())
    }
    .await;
    client.close().await;
    result
}
