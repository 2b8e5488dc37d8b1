//! Broker addresses: what [`crate::Client::connect`] accepts (one address,
//! a comma-separated list, or a list), the endpoints the connection task
//! dials in turn, and the one error that reports every address's failure.

use std::fmt::Write;
use std::sync::Arc;

use blipmq_protocol::ErrorCode;

use crate::error::{ConnectError, ConnectErrorKind, Error};
use crate::transport::Connector;

/// Anything that names one or more broker addresses, in the order to try
/// them: `"host:port"`, a comma-separated `"a:7878,b:7878"`, or a slice,
/// array or `Vec` of such strings. Each address is what a single address
/// may be (`host:port`, `tcp://…`, `tls://…`, or a `ws://` URL where the
/// transport is a WebSocket); surrounding spaces and empty entries are
/// ignored.
pub trait ToBrokerAddresses {
    fn to_broker_addresses(&self) -> Vec<String>;
}

/// Split one string on commas into trimmed, non-empty addresses.
fn split_into(text: &str, out: &mut Vec<String>) {
    out.extend(
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::to_string),
    );
}

fn all<T: AsRef<str>>(items: &[T]) -> Vec<String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        split_into(item.as_ref(), &mut out);
    }
    out
}

impl ToBrokerAddresses for str {
    fn to_broker_addresses(&self) -> Vec<String> {
        all(&[self])
    }
}

impl ToBrokerAddresses for String {
    fn to_broker_addresses(&self) -> Vec<String> {
        all(&[self])
    }
}

impl<T: AsRef<str>> ToBrokerAddresses for [T] {
    fn to_broker_addresses(&self) -> Vec<String> {
        all(self)
    }
}

impl<T: AsRef<str>, const N: usize> ToBrokerAddresses for [T; N] {
    fn to_broker_addresses(&self) -> Vec<String> {
        all(self)
    }
}

impl<T: AsRef<str>> ToBrokerAddresses for Vec<T> {
    fn to_broker_addresses(&self) -> Vec<String> {
        all(self)
    }
}

impl<T: ToBrokerAddresses + ?Sized> ToBrokerAddresses for &T {
    fn to_broker_addresses(&self) -> Vec<String> {
        (**self).to_broker_addresses()
    }
}

/// The addresses, or the error that there are none.
pub(crate) fn parse(
    addresses: &(impl ToBrokerAddresses + ?Sized),
) -> Result<Vec<String>, ConnectError> {
    let list = addresses.to_broker_addresses();
    if list.is_empty() {
        return Err(Error::new(
            ConnectErrorKind::InvalidAddress,
            ErrorCode::InvalidArgument,
            "no broker address given",
        ));
    }
    Ok(list)
}

/// One broker address and how to reach it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// As the user gave it: events and errors name it so.
    pub address: String,
    /// What the connector dials (`host:port` once a `tls://` is stripped).
    pub dial: String,
    pub connector: Arc<dyn Connector>,
}

/// A failure of every address tried: for one address its own error, for
/// several one error whose message lists each address's failure in the
/// order tried, with the kind and code of the most telling of them (a
/// broker that answered and refused says more than one that timed out,
/// which says more than a refused TCP connection).
pub(crate) fn every_address_failed(mut failures: Vec<(String, ConnectError)>) -> ConnectError {
    if failures.len() == 1 {
        return failures.pop().expect("one failure").1;
    }
    // `max_by_key` keeps the last of equals: reversed, the first tried.
    let telling = failures
        .iter()
        .rev()
        .map(|(_, error)| error)
        .max_by_key(|error| weight(error.kind()))
        .expect("an address was tried");
    let (kind, code) = (telling.kind(), telling.code());
    let mut message = format!("none of {} broker addresses worked:", failures.len());
    for (address, error) in &failures {
        let _ = write!(
            message,
            " [{address}] {}: {};",
            error.code_name(),
            error.message()
        );
    }
    message.pop();
    Error::new(kind, code, message)
}

/// How much a failure of this kind says about the brokers.
fn weight(kind: ConnectErrorKind) -> u8 {
    match kind {
        ConnectErrorKind::InvalidAddress | ConnectErrorKind::Io => 0,
        ConnectErrorKind::TimedOut => 1,
        ConnectErrorKind::Tls => 2,
        ConnectErrorKind::Rejected => 3,
        ConnectErrorKind::AuthFailed => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_a_comma_separated_string_or_a_list() {
        assert_eq!("127.0.0.1:7878".to_broker_addresses(), ["127.0.0.1:7878"]);
        assert_eq!(
            " a:1 , tls://b:2,,ws://c:3/ ".to_broker_addresses(),
            ["a:1", "tls://b:2", "ws://c:3/"]
        );
        assert_eq!(["a:1", "b:2"].to_broker_addresses(), ["a:1", "b:2"]);
        let owned = vec!["a:1".to_string(), "b:2,c:3".to_string()];
        assert_eq!(owned.to_broker_addresses(), ["a:1", "b:2", "c:3"]);
        // Borrowed too, as `connect` takes them by value.
        fn listed(addresses: impl ToBrokerAddresses) -> Vec<String> {
            addresses.to_broker_addresses()
        }
        assert_eq!(listed(&owned[..1]), ["a:1"]);
        assert_eq!(listed(&owned), ["a:1", "b:2", "c:3"]);
        let one = String::from("a:1");
        assert_eq!(listed(&one), ["a:1"]);
        assert_eq!(listed(one), ["a:1"]);
    }

    #[test]
    fn no_address_is_an_invalid_argument() {
        for empty in [" , ", ""] {
            let error = parse(empty).unwrap_err();
            assert_eq!(error.kind(), ConnectErrorKind::InvalidAddress);
            assert_eq!(error.code(), ErrorCode::InvalidArgument);
        }
        let error = parse(&Vec::<String>::new()).unwrap_err();
        assert_eq!(error.kind(), ConnectErrorKind::InvalidAddress);
    }

    #[test]
    fn one_failure_is_kept_as_it_is() {
        let refused = Error::new(
            ConnectErrorKind::Io,
            ErrorCode::ConnectFailed,
            "a:1: refused",
        );
        let error = every_address_failed(vec![("a:1".into(), refused)]);
        assert_eq!(error.message(), "a:1: refused");
    }

    #[test]
    fn several_failures_name_each_address_and_keep_the_most_telling_kind() {
        let error = every_address_failed(vec![
            (
                "a:1".into(),
                Error::new(ConnectErrorKind::Io, ErrorCode::ConnectFailed, "refused"),
            ),
            (
                "b:2".into(),
                Error::new(
                    ConnectErrorKind::AuthFailed,
                    ErrorCode::AuthFailed,
                    "bad key",
                ),
            ),
            (
                "c:3".into(),
                Error::new(
                    ConnectErrorKind::TimedOut,
                    ErrorCode::Timeout,
                    "no handshake",
                ),
            ),
        ]);
        assert_eq!(error.kind(), ConnectErrorKind::AuthFailed);
        assert_eq!(error.code(), ErrorCode::AuthFailed);
        assert_eq!(
            error.message(),
            "none of 3 broker addresses worked: [a:1] ConnectFailed: refused; \
             [b:2] AuthFailed: bad key; [c:3] Timeout: no handshake"
        );
    }
}
