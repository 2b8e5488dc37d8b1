//! Who a client is and what it may do: the users of `[auth]` (and the
//! deprecated `api_keys`, each a user with every right), found by the
//! SHA-256 of the key a Hello presents, and their permissions to publish,
//! subscribe and use stored queues (SPEC AUTH-1 to AUTH-7).

use std::fmt;
use std::sync::Arc;

use blipmq_protocol::topic;
use ring::digest::{digest, SHA256};

use crate::config::{AuthConfig, RulesConfig, UserConfig};

/// The users in effect, replaced whole by a reload (SIGHUP). Connections
/// watch `changed` and close when their user is gone or was changed.
pub struct AuthState {
    users: parking_lot::RwLock<Arc<Users>>,
    changed: tokio::sync::watch::Sender<u64>,
    anonymous: Arc<User>,
}

impl AuthState {
    pub fn new(users: Users) -> AuthState {
        AuthState {
            users: parking_lot::RwLock::new(Arc::new(users)),
            changed: tokio::sync::watch::Sender::new(0),
            anonymous: Arc::new(User::anonymous()),
        }
    }

    pub fn users(&self) -> Arc<Users> {
        self.users.read().clone()
    }

    /// The user of a Hello presenting `key` on a broker that needs none.
    pub fn anonymous(&self) -> Arc<User> {
        self.anonymous.clone()
    }

    /// Put `users` in effect; connections whose user is not among them,
    /// with the same key and rights, are closed (SPEC AUTH-7).
    pub fn replace(&self, users: Users) {
        *self.users.write() = Arc::new(users);
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Told of every [`AuthState::replace`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The users a broker knows, built from `[auth]`.
pub struct Users {
    users: Vec<(Digest, Arc<User>)>,
}

type Digest = [u8; 32];

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.users.iter().map(|(_, u)| &u.name))
            .finish()
    }
}

impl Users {
    /// The users of a validated `[auth]` section.
    pub fn from_config(auth: &AuthConfig) -> Users {
        let legacy = auth.api_keys.iter().enumerate().map(|(i, key)| {
            let digest = sha256(key.as_bytes());
            let user = User {
                name: format!("api_keys[{i}]"),
                key: digest,
                publish: Rules::everything(),
                subscribe: Rules::everything(),
                queues: None,
                admin: true,
            };
            (digest, Arc::new(user))
        });
        let users = auth.users.iter().map(|config| {
            let digest = parse_digest(&config.key_sha256);
            (digest, Arc::new(User::new(config, digest)))
        });
        Users {
            users: legacy.chain(users).collect(),
        }
    }

    /// Whether a Hello must present a key.
    pub fn require_key(&self) -> bool {
        !self.users.is_empty()
    }

    /// How many users (legacy `api_keys` included) there are.
    pub fn count(&self) -> usize {
        self.users.len()
    }

    /// The user whose key `presented` is: every user's digest is compared,
    /// each in full, so the time taken says nothing about which (if any)
    /// matched or how much of a guess was right.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<User>> {
        let presented = sha256(presented.as_bytes());
        let mut found = None;
        for (digest, user) in &self.users {
            let difference = digest
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(difference) == 0 {
                found = Some(user.clone());
            }
        }
        found
    }

    /// Whether `user` is still here with the same key and rights (a reload
    /// keeps the connections of users it did not change); the anonymous
    /// user stays only while no key is required.
    pub fn still_has(&self, user: &User) -> bool {
        if self.require_key() {
            self.users.iter().any(|(_, u)| **u == *user)
        } else {
            *user == User::anonymous()
        }
    }
}

fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// A validated `key_sha256` (64 hex digits).
fn parse_digest(hex: &str) -> Digest {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("validated hex");
    }
    out
}

/// `sha256(key)` as 64 lowercase hex digits: what `key_sha256` holds.
pub fn key_digest_hex(key: &str) -> String {
    sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key (256 bits, `bmq_` and 64 hex digits) for `blipmq keygen`.
pub fn generate_key() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bmq_{hex}")
}

/// One user and what they may do.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    /// The key's digest: a user whose key changed is another user.
    key: Digest,
    publish: Rules,
    subscribe: Rules,
    queues: Option<Vec<String>>,
    admin: bool,
}

impl User {
    fn new(config: &UserConfig, key: Digest) -> User {
        User {
            name: config.name.clone(),
            key,
            publish: Rules::new(&config.publish),
            subscribe: Rules::new(&config.subscribe),
            queues: config.queues.clone(),
            admin: config.admin,
        }
    }

    /// The client of a broker without keys: every right but the broker's
    /// own (`$` topics).
    pub fn anonymous() -> User {
        User {
            name: "anonymous".into(),
            key: [0; 32],
            publish: Rules::everything(),
            subscribe: Rules::everything(),
            queues: None,
            admin: false,
        }
    }

    /// Whether the user has every right (`admin = true`, or a legacy
    /// `api_keys` entry): the broker's introspection endpoints need it.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether publishing is restricted beyond the `$` rule: when not, a
    /// publish is checked by its first byte alone.
    pub fn publish_is_open(&self) -> bool {
        self.publish.is_open()
    }

    /// May this user publish to `topic` (a valid topic)? `Err` says why.
    pub fn may_publish(&self, topic: &str) -> Result<(), String> {
        if self.admin {
            return Ok(());
        }
        if topic.starts_with('$') {
            return Err(format!(
                "{}: topics starting with '$' are the broker's ({topic:?})",
                self.name
            ));
        }
        if self.publish.allows(topic, topic::matches) {
            Ok(())
        } else {
            Err(format!("{} may not publish to {topic:?}", self.name))
        }
    }

    /// May this user subscribe to `pattern` (a valid pattern)? It needs an
    /// allow pattern covering everything it can match and no deny pattern
    /// it could meet.
    pub fn may_subscribe(&self, pattern: &str) -> Result<(), String> {
        if self.admin || self.subscribe.allows(pattern, topic::covers) {
            return Ok(());
        }
        let why = match self.subscribe.denying(pattern) {
            Some(denied) => format!(" (it could match topics of the denied {denied:?})"),
            None => String::new(),
        };
        Err(format!(
            "{} may not subscribe to {pattern:?}{why}",
            self.name
        ))
    }

    /// May this user create, attach to or delete the stored queue `name`
    /// (a durable subscription or a queue group)?
    pub fn may_use_queue(&self, name: &str) -> Result<(), String> {
        let allowed = self.admin
            || self.queues.as_ref().is_none_or(|queues| {
                queues.iter().any(|q| match q.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => q == name,
                })
            });
        if allowed {
            Ok(())
        } else {
            Err(format!("{} may not use the queue {name:?}", self.name))
        }
    }
}

/// Allow and deny lists of patterns.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    /// `None` = everything not denied.
    allow: Option<Vec<String>>,
    deny: Vec<String>,
}

impl Rules {
    fn new(config: &RulesConfig) -> Rules {
        Rules {
            allow: config.allow.clone(),
            deny: config.deny.clone(),
        }
    }

    fn everything() -> Rules {
        Rules {
            allow: None,
            deny: Vec::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// Whether `subject` (a topic, or a pattern for subscribe) is allowed:
    /// some allow rule admits it by `admits`, and no deny rule overlaps it.
    fn allows(&self, subject: &str, admits: impl Fn(&str, &str) -> bool) -> bool {
        if self.denying(subject).is_some() {
            return false;
        }
        match &self.allow {
            None => true,
            Some(allow) => allow.iter().any(|rule| admits(rule, subject)),
        }
    }

    /// The first deny pattern `subject` could meet.
    fn denying(&self, subject: &str) -> Option<&str> {
        self.deny
            .iter()
            .find(|rule| topic::overlaps(rule, subject))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(toml: &str) -> User {
        let config: UserConfig = toml::from_str(toml).unwrap();
        User::new(&config, [0; 32])
    }

    #[test]
    fn publish_rules_allow_deny_and_the_dollar_topics() {
        let u = user(
            "name = \"orders\"\nkey_sha256 = \"\"\npublish = { allow = [\"orders.>\"], deny = [\"orders.audit.*\"] }",
        );
        assert!(u.may_publish("orders.created").is_ok());
        assert!(u.may_publish("orders.audit.x").is_err());
        assert!(u.may_publish("billing.x").is_err());
        assert!(User::anonymous().may_publish("$dlq.jobs").is_err());
        assert!(User::anonymous().may_publish("anything").is_ok());
        let admin = user("name = \"ops\"\nkey_sha256 = \"\"\nadmin = true");
        assert!(admin.may_publish("$dlq.jobs").is_ok());
    }

    #[test]
    fn a_subscription_needs_cover_and_must_not_reach_a_denied_topic() {
        let u = user(
            "name = \"reader\"\nkey_sha256 = \"\"\nsubscribe = { allow = [\"orders.>\", \"$dlq.orders\"], deny = [\"orders.secret\"] }",
        );
        assert!(u.may_subscribe("orders.created").is_ok());
        assert!(u.may_subscribe("orders.*.eu").is_ok());
        assert!(u.may_subscribe("$dlq.orders").is_ok());
        let wide = u.may_subscribe("orders.*").unwrap_err();
        assert!(wide.contains("orders.secret"), "{wide}");
        assert!(u.may_subscribe("orders.>").is_err());
        assert!(u.may_subscribe(">").is_err(), "not covered by orders.>");
        assert!(u.may_subscribe("$dlq.other").is_err());
        // `>` admits every pattern but never a `$` topic.
        let open = user("name = \"all\"\nkey_sha256 = \"\"\nsubscribe = { allow = [\">\"] }");
        assert!(open.may_subscribe("a.b.c").is_ok());
        assert!(open.may_subscribe("$dlq.x").is_err());
    }

    #[test]
    fn queues_are_names_or_prefixes() {
        let u = user("name = \"q\"\nkey_sha256 = \"\"\nqueues = [\"billing-*\", \"audit\"]");
        assert!(u.may_use_queue("billing-eu").is_ok());
        assert!(u.may_use_queue("audit").is_ok());
        assert!(u.may_use_queue("auditor").is_err());
        assert!(u.may_use_queue("orders").is_err());
        assert!(User::anonymous().may_use_queue("orders").is_ok());
    }

    #[test]
    fn keys_are_found_by_digest_and_legacy_keys_are_admins() {
        let key = generate_key();
        assert!(key.starts_with("bmq_") && key.len() == 68, "{key}");
        let auth = AuthConfig {
            api_keys: vec!["legacy".into()],
            users: vec![UserConfig {
                name: "svc".into(),
                key_sha256: key_digest_hex(&key),
                ..UserConfig::default()
            }],
            ..AuthConfig::default()
        };
        let users = Users::from_config(&auth);
        assert!(users.require_key());
        assert_eq!(users.authenticate(&key).unwrap().name, "svc");
        let legacy = users.authenticate("legacy").unwrap();
        assert!(legacy.may_publish("$dlq.x").is_ok());
        assert!(users.authenticate("wrong").is_none());
        assert!(!Users::from_config(&AuthConfig::default()).require_key());
    }
}
