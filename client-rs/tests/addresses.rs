//! Several broker addresses and jittered reconnects, against live brokers
//! (in-process, on 127.0.0.1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blipmq::transport::{
    BoxFuture, Connector, TcpConnector, TokioRuntime, TransportReader, TransportWriter,
};
use blipmq::{Client, ClientEvent, ConnectErrorKind, ConnectionStatus, ErrorCode, ReconnectPolicy};
use futures::StreamExt;

mod common;

use common::{Broker, PATIENCE};

/// An address nobody listens on: a port the OS handed out and took back.
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// The next `Connected` event, within `PATIENCE`.
async fn reconnected(events: &mut (impl futures::Stream<Item = ClientEvent> + Unpin)) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await {
                Some(ClientEvent::Connected { address, .. }) => return address,
                Some(_) => {}
                None => panic!("events ended before a reconnect"),
            }
        }
    })
    .await
    .expect("reconnected in time")
}

#[tokio::test]
async fn a_dead_first_address_is_skipped_for_the_next() {
    let broker = Broker::start().await;
    let dead = dead_address().await;
    let client = Client::connect([dead.as_str(), &broker.url()])
        .await
        .unwrap();
    assert_eq!(client.status(), ConnectionStatus::Connected);
    assert_eq!(client.address(), broker.url());
    // It really is a connection: a message makes the round trip.
    let mut sub = client.subscribe("via.second").await.unwrap();
    client.publish("via.second", "hi").await.unwrap();
    let message = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&message.payload()[..], b"hi");
    client.close().await;

    // The same as one comma-separated string, with the TCP scheme spelled out.
    let listed = format!("{dead}, tcp://{}", broker.url());
    let client = Client::connect(listed).await.unwrap();
    assert_eq!(client.address(), format!("tcp://{}", broker.url()));
    client.close().await;
    broker.stop().await;
}

#[tokio::test]
async fn when_every_address_fails_the_error_names_each_one() {
    let (first, second) = (dead_address().await, dead_address().await);
    let error = Client::connect(vec![first.clone(), second.clone()])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ConnectErrorKind::Io, "{error}");
    assert_eq!(error.code(), ErrorCode::ConnectFailed);
    let message = error.message();
    assert!(
        message.starts_with("none of 2 broker addresses worked"),
        "{message}"
    );
    let at_first = message
        .find(&format!("[{first}]"))
        .expect("the first address");
    let at_second = message
        .find(&format!("[{second}]"))
        .expect("the second address");
    assert!(at_first < at_second, "in the order tried: {message}");
}

#[tokio::test]
async fn a_refusal_outranks_an_unreachable_address_in_the_error() {
    let locked = Broker::start_with(|config| {
        config.auth.api_keys = vec!["right".into()];
    })
    .await;
    let dead = dead_address().await;
    let error = Client::builder()
        .api_key("wrong")
        .connect([locked.url(), dead.clone()])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ConnectErrorKind::AuthFailed, "{error}");
    assert_eq!(error.code(), ErrorCode::AuthFailed);
    assert!(
        error.message().contains(&format!("[{dead}] ConnectFailed")),
        "{error}"
    );
    locked.stop().await;
}

#[tokio::test]
async fn no_address_at_all_is_an_invalid_argument() {
    for addresses in [vec![], vec![" ".to_string(), ",".to_string()]] {
        let error = Client::connect(addresses).await.unwrap_err();
        assert_eq!(error.kind(), ConnectErrorKind::InvalidAddress);
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }
}

#[tokio::test]
async fn when_its_broker_dies_the_client_reconnects_to_the_next_address() {
    let (first, second) = (Broker::start().await, Broker::start().await);
    let client = Client::builder()
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            ..Default::default()
        })
        .connect([first.url(), second.url()])
        .await
        .unwrap();
    assert_eq!(client.address(), first.url());
    let mut sub = client.subscribe("moves.on").await.unwrap();
    let mut events = Box::pin(client.events());

    first.stop().await;
    assert_eq!(reconnected(&mut events).await, second.url());
    assert_eq!(client.address(), second.url());
    assert_eq!(client.status(), ConnectionStatus::Connected);
    // Subscribed again on the second broker: a message published there
    // reaches the subscription made on the first.
    client.flush().await.unwrap();
    let other = Client::connect(second.url()).await.unwrap();
    other.publish("moves.on", "there").await.unwrap();
    let message = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&message.payload()[..], b"there");
    client.close().await;
    other.close().await;
    second.stop().await;
}

/// TCP, noting every address it dials.
#[derive(Clone, Default)]
struct Recording {
    dialed: Arc<Mutex<Vec<String>>>,
}

impl Connector for Recording {
    fn connect(
        &self,
        addr: &str,
    ) -> BoxFuture<'static, std::io::Result<(Box<dyn TransportReader>, Box<dyn TransportWriter>)>>
    {
        self.dialed.lock().unwrap().push(addr.to_string());
        TcpConnector.connect(addr)
    }
}

#[tokio::test]
async fn reconnects_try_the_last_address_that_worked_first_then_the_next() {
    let (a, b) = (Broker::start().await, Broker::start().await);
    let (a_url, b_url) = (a.url(), b.url());
    let recording = Recording::default();
    let client = Client::builder()
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            ..Default::default()
        })
        .connect_with(
            [a_url.as_str(), &b_url],
            Arc::new(recording.clone()),
            Arc::new(TokioRuntime),
        )
        .await
        .unwrap();
    let mut events = Box::pin(client.events());
    let a_addr = a.addr;
    a.stop().await;
    assert_eq!(reconnected(&mut events).await, b_url);
    // B is stopped while A is back at its address: the client tries B,
    // the one that worked last, and then moves on to A.
    let a = Broker::start_at(a_addr, |_| {}).await;
    b.stop().await;
    assert_eq!(reconnected(&mut events).await, a_url);
    let dialed = recording.dialed.lock().unwrap().clone();
    // The first connect, then each attempt from the last address that
    // worked: A (down) then B; later B (down) then A. A failed attempt
    // would repeat its pair, so only the pattern's order is asserted.
    assert_eq!(dialed.first(), Some(&a_url), "{dialed:?}");
    let switch = dialed.iter().position(|d| *d == b_url).expect("B dialed");
    assert!(dialed[1..switch].iter().all(|d| *d == a_url), "{dialed:?}");
    let back = switch
        + dialed[switch..]
            .iter()
            .position(|d| *d == a_url)
            .expect("A again");
    assert!(
        dialed[switch..back].iter().all(|d| *d == b_url),
        "{dialed:?}"
    );
    assert!(
        back - switch >= 2,
        "B, the last that worked, is tried first: {dialed:?}"
    );
    assert_eq!(back, dialed.len() - 1, "{dialed:?}");
    client.close().await;
    a.stop().await;
}

/// How many clients lose the broker at once in the spread tests.
const CLIENTS: usize = 200;

/// The backoff ceiling of every attempt in the spread tests: the window
/// jitter spreads reconnects over.
const WINDOW: Duration = Duration::from_millis(1500);

/// Restart a broker under `CLIENTS` connected clients and return when each
/// of them reconnected, relative to the first, in order.
async fn reconnect_instants_after_a_restart(jitter: bool) -> Vec<Duration> {
    let broker = Broker::start().await;
    let policy = ReconnectPolicy {
        initial_delay: WINDOW,
        max_delay: WINDOW,
        jitter,
        ..Default::default()
    };
    let mut clients = Vec::with_capacity(CLIENTS);
    let mut waiters = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = Client::builder()
            .reconnect(policy.clone())
            .connect(broker.url())
            .await
            .unwrap();
        let mut events = Box::pin(client.events());
        waiters.push(tokio::spawn(async move {
            reconnected(&mut events).await;
            Instant::now()
        }));
        clients.push(client);
    }
    let broker = broker.restart().await;
    let mut instants = Vec::with_capacity(CLIENTS);
    for waiter in waiters {
        instants.push(waiter.await.unwrap());
    }
    instants.sort();
    for client in &clients {
        client.close().await;
    }
    broker.stop().await;
    instants.iter().map(|at| *at - instants[0]).collect()
}

/// Two statistics of sorted reconnect instants that do not depend on how
/// long the restart took: the span of the middle half (interquartile
/// range), and the largest share of clients that reconnected within any
/// tenth of the window.
fn spread(instants: &[Duration]) -> (Duration, f64) {
    let n = instants.len();
    let middle_half = instants[3 * n / 4] - instants[n / 4];
    let tenth = WINDOW / 10;
    let mut most = 0;
    let mut start = 0;
    for end in 0..n {
        while instants[end] - instants[start] > tenth {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    let bunched = most as f64 / n as f64;
    // Shown when a test fails (and with --nocapture).
    eprintln!(
        "reconnects over {:?}: middle half {middle_half:?}, at most {:.0}% in a tenth of the window",
        instants[n - 1],
        bunched * 100.0
    );
    (middle_half, bunched)
}

// Full jitter spreads the reconnects uniformly over the window: the middle
// half spans about half of it, and a tenth of the window holds about a
// tenth of the clients (a little more where they happen to cluster). The
// bounds leave room for a loaded machine delaying some clients; the test
// below shows the same statistics without jitter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_200_clients_spreads_their_reconnects() {
    let instants = reconnect_instants_after_a_restart(true).await;
    let (middle_half, bunched) = spread(&instants);
    assert!(
        middle_half >= WINDOW / 5,
        "the middle half of reconnects spans only {middle_half:?} of a {WINDOW:?} window"
    );
    assert!(
        bunched <= 0.35,
        "{:.0}% of clients reconnected within a tenth of the window",
        bunched * 100.0
    );
}

// The control: without jitter every client waits the same backoff, and the
// statistics above see the herd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jitter_the_same_restart_brings_every_client_back_at_once() {
    let instants = reconnect_instants_after_a_restart(false).await;
    let (middle_half, bunched) = spread(&instants);
    assert!(middle_half < WINDOW / 5, "middle half {middle_half:?}");
    assert!(bunched > 0.35, "only {:.0}% bunched", bunched * 100.0);
}
