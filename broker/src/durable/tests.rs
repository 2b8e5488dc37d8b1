//! The durable layer against a real log in a temporary directory.

use super::sweep::record_detach_after;
use super::*;

fn settings() -> DeliverySettings {
    DeliverySettings {
        ack_timeout: Duration::from_secs(30),
        max_deliveries: 0,
        max_in_flight: 16,
        max_queues: 100,
        limits: QueueLimits::default(),
    }
}

fn small_log(dir: &std::path::Path) -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        max_bytes: 0,
        ..WalConfig::new(dir.join("wal"))
    }
}

fn message(topic: &str, id: u64, payload: &[u8]) -> MessageRef {
    let mut encoder = blipmq_protocol::Encoder::new();
    Arc::new(QueuedMessage {
        delivery: encoder.shared_delivery(topic, payload, &[], id, 0),
        published_at: std::time::Instant::now(),
        expires_at: None,
        message_id: id,
        trace_id: None,
        charge: Default::default(),
    })
}

/// A consumer (subscription `id`) attached to `name`.
fn attach(durable: &Durable, name: &str, id: u64) -> Arc<Subscription> {
    let subscription = Arc::new(Subscription::new(
        id,
        "p".into(),
        64,
        crate::config::OverflowPolicy::DropNew,
        crate::outbox::Outbox::new(),
        Some(name.into()),
        None,
    ));
    durable.attach(name, subscription.clone());
    subscription
}

/// Store a message the way a connection's confirm pipeline does.
async fn publish(durable: &Durable, topic: &str, message: MessageRef) -> Lsn {
    let (pending, hold) = durable.submit(&message).await.unwrap();
    let lsn = pending.await.unwrap();
    durable.stored(lsn, topic, message, hold);
    lsn
}

#[tokio::test]
async fn a_record_is_kept_from_retention_until_its_queues_own_it() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
        .await
        .unwrap();
    durable
        .prepare("keeper", "jobs.>", QueueKind::Durable)
        .await
        .unwrap();
    // A job is in the log, its confirm pipeline not yet past the wait.
    let job = message("jobs.1", 1, b"the job");
    let (pending, hold) = durable.submit(&job).await.unwrap();
    let lsn = pending.await.unwrap();
    // Meanwhile other connections publish what no queue keeps: their
    // records seal segment after segment, and each one releases.
    for id in 2..40 {
        publish(&durable, "other", message("other", id, &[7; 512])).await;
    }
    assert!(durable.wal_stats().unwrap().segments > 2);
    durable.stored(lsn, "jobs.1", job, hold);
    drop(durable);

    let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
        .await
        .unwrap();
    assert_eq!(durable.gauges().unacked, 1, "the job's segment was deleted");
    // Once owned and acked, retention takes it (and everything before).
    let consumer = attach(&durable, "keeper", 1);
    assert_eq!(consumer.pop().unwrap().delivery_id, lsn);
    assert_eq!(durable.ack("keeper", 1, lsn), AckOutcome::Acked);
    for id in 40..60 {
        publish(&durable, "other", message("other", id, &[7; 512])).await;
    }
    let wal = durable.wal.get().unwrap();
    wal.wait_for_releases();
    assert!(wal.first_lsn().unwrap() > lsn);
}

#[tokio::test]
async fn concurrent_creates_share_manifest_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
        .await
        .unwrap();
    let durable = Arc::new(durable);
    let creates: Vec<_> = (0..50)
        .map(|i| {
            let durable = durable.clone();
            tokio::spawn(async move {
                durable
                    .prepare(&format!("d{i}"), "jobs.>", QueueKind::Durable)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for create in creates {
        create.await.unwrap();
    }
    let writes = durable.gauges().manifest_writes;
    assert!(writes < 10, "{writes} manifest rewrites for 50 creates");
    // Each create returned only once it was on disk.
    let on_disk = queue_manifest::load(&OsStorage, &dir.path().join("wal")).unwrap();
    assert_eq!(on_disk.len(), 50);
}

#[tokio::test]
async fn a_message_is_held_once_however_many_queues_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, _dead) = Durable::open(small_log(dir.path()), settings())
        .await
        .unwrap();
    for i in 0..20 {
        durable
            .prepare(&format!("d{i}"), "jobs.>", QueueKind::Durable)
            .await
            .unwrap();
    }
    let mut lsns = Vec::new();
    for id in 1..=5 {
        lsns.push(publish(&durable, "jobs.x", message("jobs.x", id, b"x")).await);
    }
    assert_eq!(durable.gauges().unacked, 100);
    assert_eq!(durable.state.lock().store.len(), 5);
    // A message leaves the store when the last queue lets it go.
    for i in 0..19 {
        durable.delete(&format!("d{i}")).await.unwrap();
    }
    assert_eq!(durable.state.lock().store.len(), 5);
    let _consumer = attach(&durable, "d19", 1);
    for &lsn in &lsns[..4] {
        assert_eq!(durable.ack("d19", 1, lsn), AckOutcome::Acked);
    }
    assert_eq!(durable.state.lock().store.len(), 1);
    assert_eq!(durable.state.lock().store.oldest(), Some(lsns[4]));
}

fn expiring_after(expiry: Duration) -> DeliverySettings {
    DeliverySettings {
        limits: QueueLimits {
            detached_expiry: Some(expiry),
            // As by default: the sweep must not scan every queue for it
            // while no message is that old.
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            ..QueueLimits::default()
        },
        ..settings()
    }
}

#[tokio::test]
async fn a_detach_time_in_the_manifest_counts_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_log(dir.path());
    std::fs::create_dir_all(&config.dir).unwrap();
    let hour_ago = unix_ms() - 3_600_000;
    let queue = |name: &str, detached_ms| QueueDefinition {
        name: name.into(),
        pattern: "p".into(),
        group: false,
        since: 1,
        detached_ms,
    };
    let definitions = [queue("old", Some(hour_ago)), queue("unrecorded", None)];
    queue_manifest::store(&OsStorage, &config.dir, &definitions, true).unwrap();
    let expiry = Duration::from_secs(600);
    let (durable, _dead) = Durable::open(config, expiring_after(expiry)).await.unwrap();
    durable.expire_detached(Instant::now());
    // Detached an hour ago by the manifest: past ten minutes. The other
    // one's clock started with this run.
    let gauges = durable.gauges();
    assert_eq!((gauges.queues, gauges.expired_queues), (1, 1));
    assert!(durable.state.lock().queues.contains("unrecorded"));
}

#[tokio::test]
async fn a_detach_time_is_written_down_and_cleared_by_the_next_attach() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_log(dir.path());
    let wal_dir = config.dir.clone();
    let expiry = Duration::from_millis(400);
    let (durable, _dead) = Durable::open(config, expiring_after(expiry)).await.unwrap();
    durable.prepare("q", "p", QueueKind::Durable).await.unwrap();
    let recorded = || queue_manifest::load(&OsStorage, &wal_dir).unwrap()[0].detached_ms;
    assert_eq!(recorded(), None);
    tokio::time::sleep(record_detach_after(expiry) + Duration::from_millis(20)).await;
    durable.expire_detached(Instant::now());
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded().is_none() {
        assert!(Instant::now() < deadline, "never written down");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(recorded().unwrap() <= unix_ms());
    // A consumer on its way: the time goes before it is attached.
    durable.prepare("q", "p", QueueKind::Durable).await.unwrap();
    assert_eq!(recorded(), None);
    assert_eq!(durable.gauges().queues, 1);
}

#[tokio::test]
async fn a_subscription_that_began_past_the_end_of_the_log_keeps_from_its_end() {
    // The log lost its newest records (an OS crash under `interval`), so a
    // durable subscription created at LSN 1000 is past its end: it used to
    // keep nothing until the log caught up.
    let dir = tempfile::tempdir().unwrap();
    let config = small_log(dir.path());
    std::fs::create_dir_all(&config.dir).unwrap();
    let ahead = QueueDefinition {
        name: "ahead".into(),
        pattern: "jobs.>".into(),
        group: false,
        since: 1000,
        detached_ms: None,
    };
    queue_manifest::store(&OsStorage, &config.dir, &[ahead], true).unwrap();
    let (durable, _dead) = Durable::open(config.clone(), settings()).await.unwrap();
    let lsn = publish(&durable, "jobs.1", message("jobs.1", 1, b"job")).await;
    assert!(lsn < 1000);
    assert_eq!(durable.gauges().unacked, 1, "the job was not kept");
    drop(durable);
    // The manifest was rewritten, so the next start keeps it too.
    let (durable, _dead) = Durable::open(config, settings()).await.unwrap();
    assert_eq!(durable.gauges().unacked, 1);
}

/// The real filesystem, counting the unlinks and directory fsyncs made on
/// one thread (the test's runtime thread, with `#[tokio::test]`'s
/// single-threaded runtime: whatever blocks there blocks every task).
struct WatchedStorage {
    runtime_thread: std::thread::ThreadId,
    on_runtime: std::sync::atomic::AtomicU64,
    elsewhere: std::sync::atomic::AtomicU64,
}

impl WatchedStorage {
    fn note(&self) {
        let counter = if std::thread::current().id() == self.runtime_thread {
            &self.on_runtime
        } else {
            &self.elsewhere
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Storage for WatchedStorage {
    fn open(
        &self,
        path: &std::path::Path,
        mode: crate::wal::storage::OpenMode,
    ) -> std::io::Result<Box<dyn crate::wal::storage::StorageFile>> {
        OsStorage.open(path, mode)
    }
    fn create_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        OsStorage.create_dir_all(path)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<crate::wal::storage::DirEntry>> {
        OsStorage.list(dir)
    }
    fn exists(&self, path: &std::path::Path) -> bool {
        OsStorage.exists(path)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.note();
        OsStorage.remove_file(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.note();
        OsStorage.sync_dir(dir)
    }
    fn lock(
        &self,
        path: &std::path::Path,
        note: &str,
    ) -> std::io::Result<Box<dyn crate::wal::storage::DirLock>> {
        OsStorage.lock(path, note)
    }
}

#[tokio::test]
async fn acks_never_unlink_or_fsync_a_directory_on_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(WatchedStorage {
        runtime_thread: std::thread::current().id(),
        on_runtime: Default::default(),
        elsewhere: Default::default(),
    });
    let (durable, _dead) = Durable::open_with(small_log(dir.path()), settings(), storage.clone())
        .await
        .unwrap();
    durable
        .prepare("q", "jobs", QueueKind::Durable)
        .await
        .unwrap();
    let consumer = attach(&durable, "q", 1);
    // Acked as they come: each ack lets retention delete what is behind.
    for id in 1..200 {
        publish(&durable, "jobs", message("jobs", id, &[7; 200])).await;
        let sent = consumer.pop().unwrap();
        assert_eq!(durable.ack("q", 1, sent.delivery_id), AckOutcome::Acked);
    }
    let wal = durable.wal.get().unwrap();
    wal.wait_for_releases();
    let deleted = wal.stats().segments_deleted;
    assert!(deleted > 5, "{deleted} segments deleted");
    assert_eq!(
        storage.on_runtime.load(Ordering::Relaxed),
        0,
        "unlinks or directory fsyncs on the runtime thread ({} elsewhere)",
        storage.elsewhere.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn an_ack_storm_spawns_no_task_per_ack() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        fsync_policy: FsyncPolicy::Never,
        ..WalConfig::new(dir.path().join("wal"))
    };
    let settings = DeliverySettings {
        max_in_flight: 64,
        ..settings()
    };
    let (durable, _dead) = Durable::open(config, settings).await.unwrap();
    durable
        .prepare("q", "jobs", QueueKind::Durable)
        .await
        .unwrap();
    let consumer = attach(&durable, "q", 1);
    const ACKS: usize = 100_000;
    // Stored in a pipeline: submitted in order, waited for together.
    let mut submitted = Vec::new();
    for id in 0..ACKS as u64 {
        let message = message("jobs", id + 1, b"x");
        let (pending, hold) = durable.submit(&message).await.unwrap();
        submitted.push((pending, message, hold));
        if submitted.len() == 4096 || id + 1 == ACKS as u64 {
            for (pending, message, hold) in submitted.drain(..) {
                durable.stored(pending.await.unwrap(), "jobs", message, hold);
            }
        }
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    // Every ack on this thread, without yielding: tasks spawned per ack
    // would all still be alive at the end.
    let mut acked = 0;
    while let Some(sent) = consumer.pop() {
        assert_eq!(durable.ack("q", 1, sent.delivery_id), AckOutcome::Acked);
        acked += 1;
    }
    assert_eq!(acked, ACKS);
    let alive = metrics.num_alive_tasks();
    assert!(
        alive <= before + 2,
        "{alive} tasks alive after {ACKS} acks ({before} before)"
    );
}

#[tokio::test]
async fn the_sweep_looks_only_at_the_detached_queues_that_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let expiry = Duration::from_secs(600);
    let (durable, _dead) = Durable::open(small_log(dir.path()), expiring_after(expiry))
        .await
        .unwrap();
    let durable_queue = |name: &str| StoredQueue::new(name, "p".into(), QueueKind::Durable, 1);
    let first = Instant::now();
    durable.state.lock().queues.insert(durable_queue("first"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rest = Instant::now();
    for i in 0..10_000 {
        durable
            .state
            .lock()
            .queues
            .insert(durable_queue(&format!("q{i}")));
    }
    let swept = || durable.swept_queues.load(Ordering::Relaxed);
    // Nothing due: nothing looked at.
    durable.expire_detached(rest + Duration::from_secs(1));
    assert_eq!(swept(), 0);
    // Every detach time comes due for the manifest once, then not again.
    let record_at = rest + record_detach_after(expiry) + Duration::from_secs(1);
    durable.expire_detached(record_at);
    assert_eq!(swept(), 10_001);
    durable.expire_detached(record_at + Duration::from_secs(1));
    assert_eq!(swept(), 10_001);
    // The first one detached expires alone, and only it is looked at.
    durable.expire_detached(first + expiry + Duration::from_millis(2));
    assert_eq!(swept(), 10_002);
    assert!(!durable.state.lock().queues.contains("first"));
    let gauges = durable.gauges();
    assert_eq!((gauges.queues, gauges.expired_queues), (10_000, 1));
    // An attach takes a queue out of the index; its detach puts it back.
    let consumer = attach(&durable, "q7", 1);
    durable.expire_detached(rest + expiry + Duration::from_secs(1));
    let gauges = durable.gauges();
    assert_eq!((gauges.queues, gauges.expired_queues), (1, 10_000));
    assert!(durable.state.lock().queues.contains("q7"));
    durable.detach("q7", &consumer);
    durable.expire_detached(Instant::now() + expiry + Duration::from_secs(1));
    assert_eq!(durable.gauges().queues, 0);
}
