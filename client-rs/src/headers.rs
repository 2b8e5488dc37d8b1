//! Message headers: ordered key -> value pairs (keys may repeat).

use bytes::Bytes;

/// The headers of a message, in the order the publisher gave them. Keys are
/// text (no whitespace or control characters); values are any bytes. A key
/// may appear more than once.
///
/// ```
/// let mut headers = blipmq::Headers::new();
/// headers.append("content-type", "application/json");
/// headers.append("x-tenant", "acme");
/// assert_eq!(headers.get("content-type").map(|v| &v[..]), Some(&b"application/json"[..]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Bytes)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Add a header after the existing ones (an existing key is kept).
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<Bytes>) -> &mut Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The first value of `key` as UTF-8 text, if it is.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// All headers, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<String>, V: Into<Bytes>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl<K: Into<String>, V: Into<Bytes>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_duplicates_are_kept() {
        let headers = Headers::from([("a", "1"), ("b", "2"), ("a", "3")]);
        let keys: Vec<&str> = headers.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["a", "b", "a"]);
        assert_eq!(headers.get_str("a"), Some("1"));
        let all: Vec<&[u8]> = headers.get_all("a").map(|v| &v[..]).collect();
        assert_eq!(all, vec![&b"1"[..], &b"3"[..]]);
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.len(), 3);
    }
}
