//! Topic and pattern rules (SPEC.md, TOPIC-1 to TOPIC-5).
//!
//! A topic is a non-empty sequence of dot-separated tokens. A pattern is a
//! topic in which a whole token may be `*` (exactly one token) and the last
//! token may be `>` (one or more remaining tokens).

/// Longest topic or pattern, in bytes (TOPIC-1).
pub const MAX_TOPIC_LEN: usize = 255;

/// Why a topic or pattern was refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is {0} bytes long; the limit is {MAX_TOPIC_LEN}")]
    TooLong(usize),
    #[error("topic has an empty token (leading, trailing or double '.')")]
    EmptyToken,
    #[error("topic contains a space or control character")]
    BadCharacter,
    #[error("wildcards '*' and '>' are only allowed in subscription patterns")]
    WildcardInTopic,
    #[error("'*' and '>' must stand alone as a whole token")]
    PartialWildcard,
    #[error("'>' is only allowed as the last token")]
    TailNotLast,
}

fn tokens(s: &str) -> Result<std::str::Split<'_, char>, TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TopicError::BadCharacter);
    }
    Ok(s.split('.'))
}

/// Check a topic that a message is published to: no wildcards.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    // Every publish is checked: a plain ASCII topic is accepted in one pass
    // over its bytes; anything else takes the token-by-token path below,
    // which also names the first problem.
    if is_plain_ascii_topic(topic) {
        return Ok(());
    }
    check_topic_tokens(topic)
}

fn check_topic_tokens(topic: &str) -> Result<(), TopicError> {
    for token in tokens(topic)? {
        if token.is_empty() {
            return Err(TopicError::EmptyToken);
        }
        if token.contains(['*', '>']) {
            return Err(TopicError::WildcardInTopic);
        }
    }
    Ok(())
}

/// A non-empty ASCII topic within the length limit, with no space, control
/// character, wildcard or empty token.
fn is_plain_ascii_topic(topic: &str) -> bool {
    let bytes = topic.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TOPIC_LEN {
        return false;
    }
    let mut previous = b'.';
    for &b in bytes {
        let bad =
            b <= b' ' || b >= 0x7f || b == b'*' || b == b'>' || (b == b'.' && previous == b'.');
        if bad {
            return false;
        }
        previous = b;
    }
    previous != b'.'
}

/// Check a subscription pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    let mut iter = tokens(pattern)?.peekable();
    while let Some(token) = iter.next() {
        match token {
            "" => return Err(TopicError::EmptyToken),
            "*" => {}
            ">" if iter.peek().is_none() => {}
            ">" => return Err(TopicError::TailNotLast),
            t if t.contains(['*', '>']) => return Err(TopicError::PartialWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a pattern contains a wildcard token.
pub fn is_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

/// Does a valid `pattern` match a valid `topic`?
pub fn matches(pattern: &str, topic: &str) -> bool {
    // System topics (`$dlq.…`) are reached only by patterns that name their
    // first token, so a catch-all subscriber never consumes dead letters.
    if topic.starts_with('$') && matches!(pattern.split('.').next(), Some("*" | ">")) {
        return false;
    }
    let mut topic_tokens = topic.split('.');
    for p in pattern.split('.') {
        match (p, topic_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

/// Whether every topic `inner` matches, `outer` matches too (both valid
/// patterns or topics): the rule that lets a permission's allow pattern
/// admit a subscription pattern. The `$` rule of [`matches()`] holds: a
/// wildcard first token covers no `$` topic.
pub fn covers(outer: &str, inner: &str) -> bool {
    let (mut outer_tokens, mut inner_tokens) = (outer.split('.'), inner.split('.'));
    let mut first = true;
    loop {
        match (outer_tokens.next(), inner_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(token)) => return !(first && token.starts_with('$')),
            (Some("*"), Some(token)) => {
                if token == ">" || (first && token.starts_with('$')) {
                    return false;
                }
            }
            (Some(o), Some(i)) if o == i => {}
            _ => return false,
        }
        first = false;
    }
}

/// Whether some topic matches both `a` and `b` (valid patterns or
/// topics): the rule that refuses a subscription reaching a denied topic.
pub fn overlaps(a: &str, b: &str) -> bool {
    let (mut a_tokens, mut b_tokens) = (a.split('.'), b.split('.'));
    let mut first = true;
    loop {
        match (a_tokens.next(), b_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(token)) | (Some(token), Some(">")) => {
                return !(first && token.starts_with('$'));
            }
            (Some("*"), Some(token)) | (Some(token), Some("*")) => {
                if first && token.starts_with('$') {
                    return false;
                }
            }
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_fast_path_agrees_with_the_token_checks() {
        let alphabet = ["a", "Z", ".", "*", ">", " ", "\n", "ü", "-", "\u{7f}"];
        let mut strings = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            for topic in &longer {
                assert_eq!(
                    validate_topic(topic),
                    check_topic_tokens(topic),
                    "{topic:?}"
                );
            }
            strings = longer;
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic(&long), check_topic_tokens(&long));
    }

    #[test]
    fn wildcards_skip_system_topics() {
        assert!(!matches(">", "$dlq.jobs"));
        assert!(!matches("*.jobs", "$dlq.jobs"));
        assert!(matches("$dlq.>", "$dlq.jobs"));
        assert!(matches("$dlq.*", "$dlq.jobs"));
        assert!(matches("$dlq.jobs", "$dlq.jobs"));
        assert!(matches(">", "dlq.jobs"));
    }

    #[test]
    fn topics() {
        for ok in ["a", "a.b", "orders.eu-west.created", "x_1.Y-2", "ü.ñ"] {
            assert_eq!(validate_topic(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_topic("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic(".a"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a."), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a b"), Err(TopicError::BadCharacter));
        assert_eq!(validate_topic("a\n"), Err(TopicError::BadCharacter));
        assert_eq!(validate_topic("a.*"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a.>"), Err(TopicError::WildcardInTopic));
        assert_eq!(
            validate_topic(&"a".repeat(256)),
            Err(TopicError::TooLong(256))
        );
        assert_eq!(validate_topic(&"a".repeat(255)), Ok(()));
    }

    #[test]
    fn patterns() {
        for ok in ["a", "*", ">", "a.*", "a.>", "*.b.>", "*.*"] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_pattern("a.>.b"), Err(TopicError::TailNotLast));
        assert_eq!(validate_pattern("a*"), Err(TopicError::PartialWildcard));
        assert_eq!(validate_pattern("a.b>"), Err(TopicError::PartialWildcard));
        assert_eq!(validate_pattern("a..*"), Err(TopicError::EmptyToken));
        assert!(is_wildcard("a.*") && is_wildcard(">") && !is_wildcard("a.b"));
    }

    #[test]
    fn matching() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.b", "a.b.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            (">", "x", true),
            ("*.b", "a.b", true),
            ("*.b", "a.c", false),
            ("*.*.>", "a.b", false),
            ("*.*.>", "a.b.c", true),
        ];
        for (pattern, topic, expected) in cases {
            assert_eq!(matches(pattern, topic), expected, "{pattern} vs {topic}");
        }
    }

    /// `covers` and `overlaps` against their definitions over every topic
    /// of up to four tokens from a small alphabet (with a `$` token), for
    /// every pattern of up to three tokens over it and the wildcards.
    #[test]
    fn covers_and_overlaps_agree_with_matches_over_a_small_universe() {
        fn sequences(alphabet: &[&str], max: usize) -> Vec<String> {
            let mut all: Vec<Vec<&str>> = vec![vec![]];
            let mut out = Vec::new();
            for _ in 0..max {
                all = all
                    .iter()
                    .flat_map(|s| {
                        alphabet.iter().map(move |t| {
                            let mut longer = s.clone();
                            longer.push(*t);
                            longer
                        })
                    })
                    .collect();
                out.extend(all.iter().map(|s| s.join(".")));
            }
            out
        }
        let topics = sequences(&["a", "b", "$x"], 4);
        let patterns: Vec<String> = sequences(&["a", "$x", "*", ">"], 3)
            .into_iter()
            .filter(|p| validate_pattern(p).is_ok())
            .collect();
        let matched: Vec<Vec<bool>> = patterns
            .iter()
            .map(|p| topics.iter().map(|t| matches(p, t)).collect())
            .collect();
        for (i, outer) in patterns.iter().enumerate() {
            for (j, inner) in patterns.iter().enumerate() {
                let by_definition = (0..topics.len()).all(|t| !matched[j][t] || matched[i][t]);
                assert_eq!(
                    covers(outer, inner),
                    by_definition,
                    "covers({outer}, {inner})"
                );
                let meet = (0..topics.len()).any(|t| matched[i][t] && matched[j][t]);
                assert_eq!(overlaps(outer, inner), meet, "overlaps({outer}, {inner})");
            }
        }
    }
}
