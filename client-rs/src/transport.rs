//! What the client core needs from the platform: a byte transport to the
//! broker and a way to spawn tasks and sleep. The core (handshake,
//! subscriptions, acks, reconnect) only talks to these traits, so the same
//! code runs over TCP on tokio and, on wasm32, over a WebSocket in a browser.
//!
//! A transport carries the protocol's byte stream: length-prefixed frames.
//! A message-oriented transport (WebSocket messages of whole frames, WS-1)
//! appends each received message to the read buffer and sends a batch of
//! frames as few messages as the size limit allows.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;

/// `Send` on native targets, nothing on wasm32 (where futures from the
/// browser's APIs are not `Send` and there is only one thread).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSend for T {}

/// `Sync` on native targets, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync> MaybeSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSync for T {}

/// A boxed future that is `Send` where the platform has threads.
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The receiving half of a connection.
pub trait TransportReader: MaybeSend + 'static {
    /// Append received bytes to `buf`; `Ok(0)` means the peer closed.
    fn read<'a>(&'a mut self, buf: &'a mut BytesMut) -> BoxFuture<'a, io::Result<usize>>;
}

/// The sending half of a connection.
pub trait TransportWriter: MaybeSend + 'static {
    /// Send `frames`: one or more whole, length-prefixed frames.
    fn write_frames<'a>(&'a mut self, frames: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;
    /// Close the sending side (a FIN, or a WebSocket close).
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

/// Opens connections to a broker address.
pub trait Connector: MaybeSend + MaybeSync + 'static {
    #[allow(clippy::type_complexity)]
    fn connect(
        &self,
        addr: &str,
    ) -> BoxFuture<'static, io::Result<(Box<dyn TransportReader>, Box<dyn TransportWriter>)>>;
}

/// Spawns the client's background task and provides timers.
pub trait Runtime: MaybeSend + MaybeSync + 'static {
    fn spawn(&self, task: BoxFuture<'static, ()>);
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// A seed for the client's reconnect jitter, different for each client
    /// (clients that lost the same broker must not draw the same waits).
    /// The default mixes std's random hash keys with a per-process
    /// counter; a platform whose std has no randomness (wasm32 in a
    /// browser) overrides it.
    fn random_seed(&self) -> u64 {
        crate::jitter::default_seed()
    }
}

#[cfg(feature = "tokio")]
pub use self::tokio_tcp::{TcpConnector, TokioRuntime};
#[cfg(feature = "tls")]
pub use self::tokio_tls::TlsConnector;

#[cfg(all(feature = "web", target_arch = "wasm32"))]
mod web;
#[cfg(all(feature = "web", target_arch = "wasm32"))]
pub use self::web::{WebRuntime, WebSocketConnector};

#[cfg(feature = "tokio")]
mod tokio_tcp {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::TcpStream;

    /// TCP with `TCP_NODELAY` (the client batches writes itself).
    #[derive(Debug, Default, Clone, Copy)]
    pub struct TcpConnector;

    impl Connector for TcpConnector {
        fn connect(
            &self,
            addr: &str,
        ) -> BoxFuture<'static, io::Result<(Box<dyn TransportReader>, Box<dyn TransportWriter>)>>
        {
            let addr = addr.to_string();
            Box::pin(async move {
                let stream = TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let (read, write) = stream.into_split();
                Ok((
                    Box::new(read) as Box<dyn TransportReader>,
                    Box::new(write) as Box<dyn TransportWriter>,
                ))
            })
        }
    }

    impl TransportReader for OwnedReadHalf {
        fn read<'a>(&'a mut self, buf: &'a mut BytesMut) -> BoxFuture<'a, io::Result<usize>> {
            Box::pin(self.read_buf(buf))
        }
    }

    impl TransportWriter for OwnedWriteHalf {
        fn write_frames<'a>(&'a mut self, frames: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
            Box::pin(self.write_all(frames))
        }

        fn close(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                let _ = self.shutdown().await;
            })
        }
    }

    /// Runs the client's task on the ambient tokio runtime.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct TokioRuntime;

    impl Runtime for TokioRuntime {
        fn spawn(&self, task: BoxFuture<'static, ()>) {
            tokio::spawn(task);
        }

        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            Box::pin(tokio::time::sleep(duration))
        }
    }
}

#[cfg(feature = "tls")]
mod tokio_tls {
    use std::sync::Arc;

    use super::*;
    use crate::tls::{self, TlsOptions};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;

    /// TCP with TLS on top (`tls://host:port`): the broker's certificate is
    /// checked against the CA (or the system's roots) and the host's name.
    #[derive(Clone)]
    pub struct TlsConnector {
        config: Arc<rustls::ClientConfig>,
        server_name: Option<String>,
    }

    impl std::fmt::Debug for TlsConnector {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsConnector")
                .field("server_name", &self.server_name)
                .finish_non_exhaustive()
        }
    }

    impl TlsConnector {
        /// Read the CA and client certificate `options` name, once: every
        /// reconnect uses what was read.
        pub fn new(options: &TlsOptions) -> io::Result<TlsConnector> {
            Ok(TlsConnector {
                config: tls::client_config(options)?,
                server_name: options.server_name.clone(),
            })
        }

        /// TLS over `stream`, already connected to `addr` (`host:port`),
        /// with the trust and the name check of a `tls://` address: for
        /// tools that speak another protocol to the broker over the same
        /// settings (`blipmq-cli`'s admin commands reach its HTTPS port so).
        /// A failure is a [`TlsFailure`](crate::tls::TlsFailure) that says
        /// why (unknown issuer, wrong name, a port without TLS).
        pub async fn secure(
            &self,
            stream: TcpStream,
            addr: &str,
        ) -> io::Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> {
            let name = tls::server_name(addr, self.server_name.as_deref())?;
            self.handshake(stream, name).await
        }

        /// The TLS handshake over `stream`, checking the broker's name.
        async fn handshake(
            &self,
            stream: TcpStream,
            name: rustls::pki_types::ServerName<'static>,
        ) -> io::Result<TlsStream<TcpStream>> {
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(name, stream)
                .await
                .map_err(|e| tls::failure(format!("TLS handshake failed: {}", explain(&e))))
        }
    }

    impl Connector for TlsConnector {
        fn connect(
            &self,
            addr: &str,
        ) -> BoxFuture<'static, io::Result<(Box<dyn TransportReader>, Box<dyn TransportWriter>)>>
        {
            let addr = addr.to_string();
            let this = self.clone();
            Box::pin(async move {
                // The name first: a bad one fails before dialing.
                let name = tls::server_name(&addr, this.server_name.as_deref())?;
                let stream = TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let stream = this.handshake(stream, name).await?;
                let (read, write) = tokio::io::split(stream);
                Ok((
                    Box::new(read) as Box<dyn TransportReader>,
                    Box::new(write) as Box<dyn TransportWriter>,
                ))
            })
        }
    }

    /// A plaintext broker answers a ClientHello with an Error frame, which
    /// rustls reports as a corrupt record (or the broker just closes).
    fn explain(error: &io::Error) -> String {
        let garbled = error.kind() == io::ErrorKind::UnexpectedEof
            || error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)));
        if garbled {
            format!("{error} (the port does not speak TLS?)")
        } else {
            error.to_string()
        }
    }

    impl TransportReader for ReadHalf<TlsStream<TcpStream>> {
        fn read<'a>(&'a mut self, buf: &'a mut BytesMut) -> BoxFuture<'a, io::Result<usize>> {
            Box::pin(self.read_buf(buf))
        }
    }

    impl TransportWriter for WriteHalf<TlsStream<TcpStream>> {
        fn write_frames<'a>(&'a mut self, frames: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
            // rustls may keep records until flushed.
            Box::pin(async move {
                self.write_all(frames).await?;
                self.flush().await
            })
        }

        fn close(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                let _ = self.shutdown().await;
            })
        }
    }
}
