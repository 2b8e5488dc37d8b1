//! Errors: one type per operation, each with a kind to match on and the wire
//! code from the schema's code table (`blipmq_protocol::ErrorCode`), so that
//! every SDK layered on this crate reports the same numbers.

use std::fmt;

pub use blipmq_protocol::ErrorCode;

/// An error of one operation, with a kind `K` specific to that operation.
#[derive(Debug, Clone)]
pub struct Error<K> {
    kind: K,
    code: ErrorCode,
    message: String,
}

impl<K: Copy> Error<K> {
    pub(crate) fn new(kind: K, code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
        }
    }

    /// What went wrong, to match on.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The code from the schema's table: the broker's code for a refusal, a
    /// 6xx client-side code otherwise.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The stable name of [`Error::code`], e.g. `"AuthFailed"`.
    pub fn code_name(&self) -> &'static str {
        blipmq_protocol::error_code_name(self.code)
    }

    /// The human-readable detail (from the broker when it refused).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error as another operation's kind.
    pub(crate) fn map_kind<L: Copy>(self, kind: L) -> Error<L> {
        Error {
            kind,
            code: self.code,
            message: self.message,
        }
    }
}

impl<K: fmt::Debug> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {}): {}",
            kind_text(&self.kind),
            self.code.0,
            blipmq_protocol::error_code_name(self.code),
            self.message
        )
    }
}

fn kind_text<K: fmt::Debug>(kind: &K) -> String {
    format!("{kind:?}")
}

impl<K: fmt::Debug> std::error::Error for Error<K> {}

/// Why [`crate::Client::connect`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The broker could not be reached (code 600 ConnectFailed).
    Io,
    /// TLS failed (code 600 ConnectFailed): the broker's certificate is not
    /// trusted, expired or for another name, the broker refused the client
    /// certificate, one side speaks TLS and the other does not, or the TLS
    /// options cannot be used (an unreadable CA file). The message says which.
    Tls,
    /// No Welcome within the connect timeout (601 Timeout).
    TimedOut,
    /// The broker refused the API key (200 AuthFailed).
    AuthFailed,
    /// The broker refused the connection for another reason, such as its
    /// connection limit or an unsupported protocol version (see the code).
    Rejected,
    /// No broker address was given (301 InvalidArgument).
    InvalidAddress,
}

/// Why a publish failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishErrorKind {
    /// The topic breaks the topic rules (300 InvalidTopic); nothing was sent.
    InvalidTopic,
    /// The payload is over the broker's limit (400 MessageTooLarge); nothing was sent.
    MessageTooLarge,
    /// An option is out of range (301 InvalidArgument).
    InvalidArgument,
    /// A header key breaks the header rules (304 InvalidHeader); nothing was sent.
    InvalidHeader,
    /// Too many headers, a key too long or too many header bytes (404
    /// HeadersTooLarge); nothing was sent.
    HeadersTooLarge,
    /// `try_publish_with` found the outgoing queue full (402 QueueFull);
    /// nothing was sent.
    QueueFull,
    /// The broker refused the message (see the code).
    Rejected,
    /// No confirm within the request timeout (601 Timeout).
    TimedOut,
    /// The connection dropped before the confirm (602 ConnectionClosed);
    /// the message may or may not have been accepted.
    Disconnected,
    /// The client is closed (603 ClientClosed).
    Closed,
}

/// Why a subscribe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeErrorKind {
    /// The pattern breaks the topic rules (300 InvalidTopic).
    InvalidTopic,
    /// The broker refused the subscription (see the code).
    Rejected,
    TimedOut,
    Disconnected,
    Closed,
}

/// Why an unsubscribe, an ack or a flush failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorKind {
    Rejected,
    TimedOut,
    Disconnected,
    Closed,
}

pub type ConnectError = Error<ConnectErrorKind>;
pub type PublishError = Error<PublishErrorKind>;
pub type SubscribeError = Error<SubscribeErrorKind>;
pub type RequestError = Error<RequestErrorKind>;

/// The failures every request shares, before they are given an operation's
/// kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Rejected,
    TimedOut,
    Disconnected,
    Closed,
}

impl Failure {
    pub(crate) fn error(self, message: impl Into<String>) -> Error<Failure> {
        let code = match self {
            Failure::Rejected => ErrorCode::Unknown,
            Failure::TimedOut => ErrorCode::Timeout,
            Failure::Disconnected => ErrorCode::ConnectionClosed,
            Failure::Closed => ErrorCode::ClientClosed,
        };
        Error::new(self, code, message)
    }
}

impl From<Error<Failure>> for PublishError {
    fn from(e: Error<Failure>) -> Self {
        let kind = match e.kind {
            Failure::Rejected => match e.code {
                ErrorCode::InvalidTopic => PublishErrorKind::InvalidTopic,
                ErrorCode::MessageTooLarge => PublishErrorKind::MessageTooLarge,
                ErrorCode::InvalidArgument => PublishErrorKind::InvalidArgument,
                ErrorCode::InvalidHeader => PublishErrorKind::InvalidHeader,
                ErrorCode::HeadersTooLarge => PublishErrorKind::HeadersTooLarge,
                _ => PublishErrorKind::Rejected,
            },
            Failure::TimedOut => PublishErrorKind::TimedOut,
            Failure::Disconnected => PublishErrorKind::Disconnected,
            Failure::Closed => PublishErrorKind::Closed,
        };
        e.map_kind(kind)
    }
}

impl From<Error<Failure>> for SubscribeError {
    fn from(e: Error<Failure>) -> Self {
        let kind = match e.kind {
            Failure::Rejected if e.code == ErrorCode::InvalidTopic => {
                SubscribeErrorKind::InvalidTopic
            }
            Failure::Rejected => SubscribeErrorKind::Rejected,
            Failure::TimedOut => SubscribeErrorKind::TimedOut,
            Failure::Disconnected => SubscribeErrorKind::Disconnected,
            Failure::Closed => SubscribeErrorKind::Closed,
        };
        e.map_kind(kind)
    }
}

impl From<Error<Failure>> for RequestError {
    fn from(e: Error<Failure>) -> Self {
        let kind = match e.kind {
            Failure::Rejected => RequestErrorKind::Rejected,
            Failure::TimedOut => RequestErrorKind::TimedOut,
            Failure::Disconnected => RequestErrorKind::Disconnected,
            Failure::Closed => RequestErrorKind::Closed,
        };
        e.map_kind(kind)
    }
}
