//! The query string of a list request (`?limit=&offset=`), and the
//! percent-decoding of names in paths.

/// Items in a page when the request does not say.
pub(super) const DEFAULT_LIMIT: usize = 256;
/// The most items one page may hold: a few megabytes of JSON at most.
pub(super) const MAX_LIMIT: usize = 4096;

/// Which slice of a list to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// Parse `limit` and `offset` from a query string; other parameters
    /// are ignored. A value that is not a number, a limit of 0 or above
    /// [`MAX_LIMIT`], or a parameter given twice is refused with the reason.
    pub fn parse(query: &str) -> Result<Page, String> {
        let (mut limit, mut offset) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "limit" => &mut limit,
                "offset" => &mut offset,
                _ => continue,
            };
            if slot.is_some() {
                return Err(format!("{name} is given twice"));
            }
            let number = value
                .parse::<usize>()
                .map_err(|_| format!("{name}={value:?} is not a whole number"))?;
            *slot = Some(number);
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {limit}"
            ));
        }
        Ok(Page {
            offset: offset.unwrap_or(0),
            limit,
        })
    }
}

/// `%XX`-decode a path segment; `None` when an escape is malformed or the
/// result is not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_and_parse() {
        let default = Page {
            offset: 0,
            limit: DEFAULT_LIMIT,
        };
        assert_eq!(Page::parse(""), Ok(default));
        assert_eq!(Page::parse("pretty&x=1"), Ok(default));
        assert_eq!(
            Page::parse("limit=10&offset=20"),
            Ok(Page {
                offset: 20,
                limit: 10
            })
        );
    }

    #[test]
    fn bad_pages_are_refused_with_a_reason() {
        for (query, needle) in [
            ("limit=0", "between 1 and"),
            ("limit=4097", "between 1 and"),
            ("limit=ten", "not a whole number"),
            ("offset=-1", "not a whole number"),
            ("offset", "not a whole number"),
            ("limit=1&limit=2", "twice"),
        ] {
            let error = Page::parse(query).unwrap_err();
            assert!(error.contains(needle), "{query}: {error}");
        }
    }

    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(percent_decode("orders").as_deref(), Some("orders"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
