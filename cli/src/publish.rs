//! `pub` and `pubfile`.

use std::ffi::OsString;
use std::pin::Pin;

use blipmq::{Client, ClientEvent, PublishError, PublishOptions};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::error::{describe, CliError};
use crate::{connect, Global, PubArgs, PubfileArgs};

type Events = Pin<Box<dyn Stream<Item = ClientEvent> + Send>>;

pub async fn run_pub(global: &Global, args: PubArgs) -> Result<(), CliError> {
    let from_stdin = args.message == "-";
    if args.lines && !from_stdin {
        return Err(CliError::usage(
            "--lines publishes the lines of STDIN: give `-` as the message",
        ));
    }
    let options = PublishOptions {
        ttl_ms: args.ttl.unwrap_or(0),
        qos: args.qos,
        headers: args.headers.into_iter().collect(),
    };
    if args.lines {
        let client = connect(global, "blipmq-cli pub").await?;
        let events: Events = Box::pin(client.events());
        let result = publish_lines(&client, events, &args.topic, options).await;
        client.close().await;
        return result;
    }
    let payload = if from_stdin {
        let mut payload = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut payload)
            .await
            .map_err(|e| CliError::runtime(format!("cannot read STDIN: {e}")))?;
        payload
    } else {
        os_string_bytes(args.message)
    };
    publish_one(global, &args.topic, payload, options).await
}

pub async fn run_pubfile(global: &Global, args: PubfileArgs) -> Result<(), CliError> {
    let payload = tokio::fs::read(&args.path)
        .await
        .map_err(|e| CliError::runtime(format!("cannot read {}: {e}", args.path.display())))?;
    let options = PublishOptions {
        ttl_ms: args.ttl.unwrap_or(0),
        qos: args.qos,
        headers: args.headers.into_iter().collect(),
    };
    publish_one(global, &args.topic, payload, options).await
}

async fn publish_one(
    global: &Global,
    topic: &str,
    payload: Vec<u8>,
    options: PublishOptions,
) -> Result<(), CliError> {
    let client = connect(global, "blipmq-cli pub").await?;
    let events: Events = Box::pin(client.events());
    let result = async {
        check_size(&client, topic, payload.len(), None)?;
        client
            .publish_with(topic, payload, options)
            .await
            .map_err(|e| publish_error(topic, None, &e))?;
        finish(&client, events).await
    }
    .await;
    client.close().await;
    result
}

/// One message per line of STDIN, in order. At QoS 1 each is confirmed
/// before the next is sent.
async fn publish_lines(
    client: &Client,
    events: Events,
    topic: &str,
    options: PublishOptions,
) -> Result<(), CliError> {
    let mut stdin = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = stdin
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| CliError::runtime(format!("cannot read STDIN: {e}")))?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        number += 1;
        check_size(client, topic, line.len(), Some(number))?;
        client
            .publish_with(topic, Bytes::copy_from_slice(&line), options.clone())
            .await
            .map_err(|e| publish_error(topic, Some(number), &e))?;
    }
    finish(client, events).await
}

/// Wait until the broker has handled everything sent, then fail if it
/// refused any of it (at QoS 0 a refusal answers no request, so it arrives as
/// an event).
async fn finish(client: &Client, mut events: Events) -> Result<(), CliError> {
    client.flush().await.map_err(|e| {
        CliError::runtime(format!(
            "the broker did not confirm receipt: {}",
            describe(&e)
        ))
    })?;
    while let Some(Some(event)) = events.next().now_or_never() {
        if let ClientEvent::ServerError { code, message } = event {
            return Err(CliError::runtime(format!(
                "the broker refused a message: {} ({}): {message}",
                blipmq::error::ErrorCode::variant_name(code).unwrap_or("Unknown"),
                code.0
            )));
        }
    }
    Ok(())
}

fn check_size(client: &Client, topic: &str, len: usize, line: Option<u64>) -> Result<(), CliError> {
    let max = client.max_message_size();
    if len > max {
        return Err(CliError::runtime(format!(
            "cannot publish to {topic:?}{}: MessageTooLarge: the message is {len} bytes, \
             the broker's limit is {max} bytes",
            line_suffix(line)
        )));
    }
    Ok(())
}

fn publish_error(topic: &str, line: Option<u64>, error: &PublishError) -> CliError {
    let mut text = format!(
        "cannot publish to {topic:?}{}: {}",
        line_suffix(line),
        describe(error)
    );
    if error.code() == blipmq::ErrorCode::UnsupportedQos {
        text.push_str(" (publish with --qos 0)");
    }
    CliError::runtime(text)
}

fn line_suffix(line: Option<u64>) -> String {
    line.map(|n| format!(" (line {n})")).unwrap_or_default()
}

#[cfg(unix)]
fn os_string_bytes(text: OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    text.into_vec()
}

#[cfg(not(unix))]
fn os_string_bytes(text: OsString) -> Vec<u8> {
    text.to_string_lossy().into_owned().into_bytes()
}
