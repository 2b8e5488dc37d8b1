//! Who may read the introspection API: anyone while the broker has no
//! users (as for `/metrics`), otherwise only a client presenting an admin's
//! key as `Authorization: Bearer <key>`. The key is checked as a Hello's is
//! (against every user's digest, in constant time).

use crate::auth::Users;

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No `Authorization: Bearer` header (401).
    NoKey,
    /// A key that is no user's (401).
    UnknownKey,
    /// A user's key, but not an admin's (403); their name.
    NotAdmin(String),
}

/// Whether the bearer of `authorization` may use the API.
pub(super) fn check(users: &Users, authorization: Option<&str>) -> Result<(), Refusal> {
    if !users.require_key() {
        return Ok(());
    }
    let key = authorization.and_then(bearer_token).ok_or(Refusal::NoKey)?;
    let user = users.authenticate(key).ok_or(Refusal::UnknownKey)?;
    if user.is_admin() {
        Ok(())
    } else {
        Err(Refusal::NotAdmin(user.name.clone()))
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key_digest_hex;
    use crate::config::{AuthConfig, UserConfig};

    fn users(list: &[(&str, &str, bool)]) -> Users {
        let config = AuthConfig {
            users: list
                .iter()
                .map(|&(name, key, admin)| UserConfig {
                    name: name.into(),
                    key_sha256: key_digest_hex(key),
                    admin,
                    ..UserConfig::default()
                })
                .collect(),
            ..AuthConfig::default()
        };
        Users::from_config(&config)
    }

    #[test]
    fn without_users_anyone_may_read() {
        assert_eq!(check(&users(&[]), None), Ok(()));
    }

    #[test]
    fn with_users_only_an_admins_bearer_key_passes() {
        let users = users(&[("ops", "k-ops", true), ("app", "k-app", false)]);
        assert_eq!(check(&users, Some("Bearer k-ops")), Ok(()));
        assert_eq!(check(&users, Some("bearer  k-ops ")), Ok(()));
        assert_eq!(check(&users, None), Err(Refusal::NoKey));
        assert_eq!(check(&users, Some("Basic k-ops")), Err(Refusal::NoKey));
        assert_eq!(check(&users, Some("Bearer")), Err(Refusal::NoKey));
        assert_eq!(check(&users, Some("Bearer nope")), Err(Refusal::UnknownKey));
        assert_eq!(
            check(&users, Some("Bearer k-app")),
            Err(Refusal::NotAdmin("app".into()))
        );
    }
}
