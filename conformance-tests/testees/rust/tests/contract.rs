//! The testee binary against an in-process broker, spoken to exactly as the
//! conformance runner does: NDJSON requests on stdin, one reply per line on
//! stdout.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use blipmq_broker::{run, Config, Listeners};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long any one reply may take.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_broker() -> SocketAddr {
    let mut config = Config::default();
    config.server.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.enabled = false;
    let listeners = Listeners::bind(&config).await.expect("bind");
    let addr = listeners.clients.local_addr().unwrap();
    tokio::spawn(run(listeners, config, std::future::pending()));
    addr
}

struct Testee {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Testee {
    fn spawn() -> Testee {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blipmq-testee-rust"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the testee");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Testee {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    /// Write one raw line and read one reply line.
    async fn exchange(&mut self, line: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
        let reply = tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no reply to {line} within {PATIENCE:?}"))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("testee exited instead of answering {line}"));
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("non-JSON reply {reply:?}: {e}"))
    }

    /// Send one request and return its reply (checking that it is well formed).
    async fn call(&mut self, actor: Option<&str>, op: &str, args: Value) -> Value {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let mut request = json!({ "id": id, "op": op, "args": args });
        if let Some(actor) = actor {
            request["actor"] = json!(actor);
        }
        let reply = self.exchange(&request.to_string()).await;
        assert_eq!(reply["id"], json!(id), "{reply}");
        let shapes = ["ok", "err", "skipped"]
            .iter()
            .filter(|k| reply.get(**k).is_some())
            .count();
        assert_eq!(shapes, 1, "exactly one of ok/err/skipped: {reply}");
        reply
    }

    async fn ok(&mut self, actor: &str, op: &str, args: Value) -> Value {
        let reply = self.call(Some(actor), op, args).await;
        reply
            .get("ok")
            .unwrap_or_else(|| panic!("{op} failed: {reply}"))
            .clone()
    }

    async fn err_code(&mut self, actor: &str, op: &str, args: Value) -> u64 {
        let reply = self.call(Some(actor), op, args).await;
        let err = reply
            .get("err")
            .unwrap_or_else(|| panic!("{op} should fail: {reply}"));
        assert!(err["message"].is_string(), "{reply}");
        err["code"].as_u64().expect("numeric code")
    }

    async fn receive(&mut self, actor: &str, sub: &str, count: u64, timeout_ms: u64) -> Vec<Value> {
        let ok = self
            .ok(
                actor,
                "receive",
                json!({ "sub": sub, "count": count, "timeout_ms": timeout_ms }),
            )
            .await;
        ok["messages"].as_array().expect("messages").clone()
    }

    /// Close stdin and wait for the exit status, checking nothing more was
    /// written.
    async fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let rest = tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .expect("stdout closes after EOF")
            .unwrap();
        assert_eq!(rest, None, "nothing after the last reply");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits after EOF")
            .unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_the_testee_contract() {
    let addr = start_broker().await.to_string();
    let mut t = Testee::spawn();

    // hello: no actor.
    let hello = t.call(None, "hello", json!({})).await;
    assert_eq!(hello["ok"]["sdk"], "rust", "{hello}");
    assert_eq!(hello["ok"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        hello["ok"]["capabilities"],
        json!([
            "pubsub",
            "headers",
            "qos1",
            "events",
            "tls",
            "addresses",
            "job_queue"
        ])
    );

    assert_eq!(
        t.ok("pub", "connect", json!({ "addr": addr })).await,
        json!({})
    );
    assert_eq!(
        t.ok(
            "sub",
            "connect",
            json!({ "addr": addr, "name": "consumer" })
        )
        .await,
        json!({})
    );
    assert_eq!(
        t.ok(
            "sub",
            "subscribe",
            json!({ "sub": "s", "pattern": "orders.*" })
        )
        .await,
        json!({})
    );
    // No event yet: the first connection is not one.
    assert_eq!(
        t.ok(
            "sub",
            "events",
            json!({ "until": "reconnected", "timeout_ms": 20 })
        )
        .await,
        json!({ "events": [] })
    );

    // Publish arbitrary bytes; they come back byte for byte.
    let payload: Vec<u8> = vec![0, 1, 2, 0xff, 0xfe, b'h', b'i'];
    let published = t
        .ok(
            "pub",
            "publish",
            json!({ "topic": "orders.created", "payload": b64(&payload) }),
        )
        .await;
    assert_eq!(published, json!({}), "QoS 0 publish answers {{}}");
    assert_eq!(t.ok("pub", "flush", json!({})).await, json!({}));
    let messages = t.receive("sub", "s", 1, 5000).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m["topic"], "orders.created");
    assert_eq!(m["payload"], b64(&payload));
    assert_eq!(m["delivery_count"], 1);
    let first_id: u64 = m["id"].as_str().expect("id string").parse().unwrap();
    let timestamp: u64 = m["timestamp_ms"]
        .as_str()
        .expect("timestamp string")
        .parse()
        .unwrap();
    assert!(timestamp > 1_600_000_000_000, "{timestamp}");

    // Nothing more: an empty list once the timeout passes.
    let started = Instant::now();
    assert!(t.receive("sub", "s", 1, 200).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(t.receive("sub", "s", 0, 5000).await.is_empty());

    // Messages arriving after a receive timed out wait for the next one, in
    // order; `count` caps what one receive returns.
    for i in 0..3u8 {
        t.ok(
            "pub",
            "publish",
            json!({ "topic": "orders.updated", "payload": b64(&[i]), "ttl_ms": 60000 }),
        )
        .await;
    }
    t.ok("pub", "flush", json!({})).await;
    let two = t.receive("sub", "s", 2, 5000).await;
    let one = t.receive("sub", "s", 5, 300).await;
    let payloads: Vec<&str> = two
        .iter()
        .chain(&one)
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(
        payloads,
        [b64(&[0]), b64(&[1]), b64(&[2])],
        "{two:?} {one:?}"
    );
    let ids: Vec<u64> = two
        .iter()
        .chain(&one)
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        first_id < ids[0] && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );

    // Errors carry the SDK's wire code.
    let invalid = json!({ "topic": "orders..bad", "payload": "" });
    assert_eq!(t.err_code("pub", "publish", invalid).await, 300);
    let wildcard = json!({ "topic": "orders.*", "payload": "" });
    assert_eq!(t.err_code("pub", "publish", wildcard).await, 300);
    let bad_pattern = json!({ "sub": "x", "pattern": "a.>.b" });
    assert_eq!(t.err_code("sub", "subscribe", bad_pattern).await, 300);
    // Arguments the testee cannot read: 301.
    let bad_b64 = json!({ "topic": "orders.x", "payload": "%%%" });
    assert_eq!(t.err_code("pub", "publish", bad_b64).await, 301);
    let bad_qos = json!({ "topic": "orders.x", "payload": "", "qos": 7 });
    assert_eq!(t.err_code("pub", "publish", bad_qos).await, 301);
    let no_topic = json!({ "payload": "" });
    assert_eq!(t.err_code("pub", "publish", no_topic).await, 301);
    let no_sub = json!({ "sub": "nope", "count": 1, "timeout_ms": 10 });
    assert_eq!(t.err_code("sub", "receive", no_sub).await, 301);

    // Malformed lines get a 301 reply (with the id when it can be read) and
    // the testee carries on.
    let garbage = t.exchange("{this is not json").await;
    assert_eq!(garbage["id"], Value::Null, "{garbage}");
    assert_eq!(garbage["err"]["code"], 301, "{garbage}");
    let no_op = t.exchange(r#"{"id": "no-op", "args": {}}"#).await;
    assert_eq!(no_op["id"], "no-op", "{no_op}");
    assert_eq!(no_op["err"]["code"], 301, "{no_op}");

    // Unknown operations and the raw ones are skipped.
    let unknown = t.call(Some("pub"), "frobnicate", json!({})).await;
    assert!(unknown["skipped"].is_string(), "{unknown}");
    let raw = t
        .call(Some("pub"), "send_raw", json!({ "bytes": "" }))
        .await;
    assert!(raw["skipped"].is_string(), "{raw}");
    let read = t
        .call(Some("pub"), "read_frame", json!({ "timeout_ms": 1 }))
        .await;
    assert!(read["skipped"].is_string(), "{read}");

    // An actor without a client: 603.
    let publish = json!({ "topic": "orders.x", "payload": "" });
    assert_eq!(t.err_code("nobody", "publish", publish.clone()).await, 603);
    assert_eq!(t.err_code("nobody", "flush", json!({})).await, 603);
    assert_eq!(t.ok("pub", "close", json!({})).await, json!({}));
    assert_eq!(t.err_code("pub", "publish", publish).await, 603);
    assert_eq!(t.err_code("pub", "close", json!({})).await, 603);

    // Unsubscribe, then the name is gone.
    assert_eq!(
        t.ok("sub", "unsubscribe", json!({ "sub": "s" })).await,
        json!({})
    );
    assert_eq!(
        t.err_code("sub", "unsubscribe", json!({ "sub": "s" }))
            .await,
        301
    );

    // A broker that is not there: 600 ConnectFailed, and no client.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let refused = json!({ "addr": dead_addr });
    assert_eq!(t.err_code("ghost", "connect", refused).await, 600);
    assert_eq!(t.err_code("ghost", "flush", json!({})).await, 603);

    // connect again replaces the client (and its subscriptions).
    t.ok(
        "sub",
        "subscribe",
        json!({ "sub": "again", "pattern": "a.b" }),
    )
    .await;
    t.ok("sub", "connect", json!({ "addr": addr })).await;
    let gone = json!({ "sub": "again", "count": 1, "timeout_ms": 10 });
    assert_eq!(t.err_code("sub", "receive", gone).await, 301);
    assert_eq!(t.ok("sub", "flush", json!({})).await, json!({}));

    // EOF: the testee closes its clients and exits 0.
    let status = t.finish().await;
    assert!(status.success(), "{status:?}");
}
