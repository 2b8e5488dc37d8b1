//! The broker these tests run against: in this process, on 127.0.0.1:0,
//! with a write-ahead log of its own (shared by live.rs and tls.rs).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use blipmq_broker::{run, Config, Listeners};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Broker {
    pub addr: SocketAddr,
    /// The broker's write-ahead log lives here.
    pub data: std::sync::Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Broker {
    pub async fn start() -> Broker {
        Self::start_at("127.0.0.1:0".parse().unwrap(), |_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Broker {
        Self::start_at("127.0.0.1:0".parse().unwrap(), configure).await
    }

    pub async fn start_at(addr: SocketAddr, configure: impl FnOnce(&mut Config)) -> Broker {
        Self::start_in(
            addr,
            std::sync::Arc::new(tempfile::tempdir().unwrap()),
            configure,
        )
        .await
    }

    /// Stop and start again on the same port with the same write-ahead log.
    pub async fn restart(self) -> Broker {
        let (addr, data) = (self.addr, self.data.clone());
        self.stop().await;
        Self::start_in(addr, data, |_| {}).await
    }

    pub async fn start_in(
        addr: SocketAddr,
        data: std::sync::Arc<tempfile::TempDir>,
        configure: impl FnOnce(&mut Config),
    ) -> Broker {
        let mut config = Config::default();
        config.server.bind_addr = addr;
        config.metrics.enabled = false;
        config.wal.dir = data.path().join("wal");
        configure(&mut config);
        // After a restart the old port may linger briefly; retry the bind.
        let mut tries = 0;
        let listeners = loop {
            match Listeners::bind(&config).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let addr = listeners.clients.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listeners, config, async move {
            let _ = stopped.await;
        }));
        Broker {
            addr,
            data,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        self.addr.to_string()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.task.take().unwrap())
            .await
            .expect("broker stops")
            .unwrap()
            .unwrap();
    }
}
