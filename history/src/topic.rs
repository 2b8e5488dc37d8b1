//! Which topics a pattern matches (TOPIC-3, TOPIC-5, TOPIC-6), written again
//! from the spec rather than borrowed from the broker, so that the checker
//! does not inherit a routing bug it is meant to catch.

/// Whether subscription `pattern` matches publish `topic`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut topic_tokens = topic.split('.');
    let mut first = true;
    for wanted in pattern.split('.') {
        let Some(token) = topic_tokens.next() else {
            return false;
        };
        // A leading wildcard never matches a system topic.
        if first && token.starts_with('$') && (wanted == "*" || wanted == ">") {
            return false;
        }
        first = false;
        match wanted {
            ">" => return true,
            "*" => {}
            exact if exact == token => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn the_spec_examples() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("*.b.*", "x.b.y"));
        assert!(!matches(">", "$dlq.q"));
        assert!(!matches("*.q", "$dlq.q"));
        assert!(matches("$dlq.>", "$dlq.q"));
    }
}
