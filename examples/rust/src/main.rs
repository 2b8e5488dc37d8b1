//! BlipMQ from Rust: publish and subscribe, then a QoS 1 publish that the
//! broker confirms once it is on disk, received and acked.
//!
//!     cargo run --bin blipmq &                                  # a broker on 127.0.0.1:7878
//!     cargo run -p blipmq-examples --bin quickstart -- 127.0.0.1:7878

use blipmq::{Client, PublishOptions, Qos, SubscribeOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let client = Client::connect(addr).await?;

    // QoS 0: subscribe (resolves once the broker has it), publish, receive.
    let mut orders = client.subscribe("orders.*").await?;
    client.publish("orders.created", "order #1").await?;
    let order = orders.next().await.ok_or("subscription ended")?;
    println!(
        "received {}: {}",
        order.topic(),
        String::from_utf8_lossy(order.payload())
    );

    // QoS 1: the publish returns once the broker has stored the message; the
    // subscriber acks it, or it is delivered again.
    let at_least_once = SubscribeOptions {
        qos: Qos::AtLeastOnce,
        ..Default::default()
    };
    let mut jobs = client.subscribe_with("jobs.>", at_least_once).await?;
    let stored = PublishOptions {
        qos: Qos::AtLeastOnce,
        ..Default::default()
    };
    client.publish_with("jobs.resize", "img-1", stored).await?;
    println!("confirmed jobs.resize");
    let job = jobs.next().await.ok_or("subscription ended")?;
    job.ack().await?;
    println!(
        "acked {}: {}",
        job.topic(),
        String::from_utf8_lossy(job.payload())
    );

    client.close().await;
    Ok(())
}
