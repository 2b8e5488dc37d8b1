//! The broker's introspection API on its HTTP port: JSON about the server,
//! its connections, subscriptions, stored queues and topics, and deleting a
//! stored queue by name (`DELETE /v1/queues/NAME`).
//!
//! Once the broker has users, every path here needs an admin's key
//! (`Authorization: Bearer <key>`); without users it is open, as
//! `/metrics` is. Every list is paged (`?limit=&offset=`, at most
//! [`page::MAX_LIMIT`] items), so no request builds a response that grows
//! with the number of clients.

mod access;
mod page;
mod time;
mod views;

use serde::Serialize;

use crate::durable::Deletion;
use crate::server::Shared;

use access::Refusal;
use page::Page;

/// A request for a `/v1/` path, as the HTTP layer parsed it.
pub(crate) struct AdminRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// After the `?`, undecoded ("" when none).
    pub query: &'a str,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a str>,
}

/// A JSON answer. Errors are `{"error": "..."}`.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
    /// For 405: the methods the path takes.
    pub allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_string_pretty(value) {
            Ok(mut body) => {
                body.push('\n');
                Reply {
                    status,
                    body,
                    allow: None,
                }
            }
            Err(error) => Reply::error(500, &format!("cannot encode the answer: {error}")),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        #[derive(Serialize)]
        struct Error<'a> {
            error: &'a str,
        }
        let mut body = serde_json::to_string(&Error { error: message })
            .unwrap_or_else(|_| "{\"error\":\"unprintable error\"}".to_string());
        body.push('\n');
        Reply {
            status,
            body,
            allow: None,
        }
    }
}

/// Whether `path` is one this module answers (everything under `/v1/`).
pub(crate) fn owns(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// What a path names.
enum Resource {
    Server,
    Connections,
    Subscriptions,
    Queues,
    Queue(String),
    Topics,
}

impl Resource {
    fn parse(path: &str) -> Result<Resource, Reply> {
        let not_found = || {
            Reply::error(
                404,
                &format!(
                    "no such path {path:?}; try /v1/server, /v1/connections, /v1/subscriptions, /v1/queues, /v1/queues/NAME or /v1/topics"
                ),
            )
        };
        Ok(match path {
            "/v1/server" => Resource::Server,
            "/v1/connections" => Resource::Connections,
            "/v1/subscriptions" => Resource::Subscriptions,
            "/v1/queues" => Resource::Queues,
            "/v1/topics" => Resource::Topics,
            _ => {
                let encoded = path.strip_prefix("/v1/queues/").ok_or_else(not_found)?;
                if encoded.is_empty() || encoded.contains('/') {
                    return Err(not_found());
                }
                let name = page::percent_decode(encoded).ok_or_else(|| {
                    Reply::error(400, "the queue name is not valid percent-encoded UTF-8")
                })?;
                Resource::Queue(name)
            }
        })
    }

    /// The methods it takes (HEAD with every GET).
    fn allowed(&self) -> &'static str {
        match self {
            Resource::Queue(_) => "GET, HEAD, DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// Answer a `/v1/` request: 404 for an unknown path, 405 for a method the
/// path does not take, 401/403 without an admin's key, 400 for bad
/// paging, then the answer.
pub(crate) async fn answer(request: &AdminRequest<'_>, shared: &Shared) -> Reply {
    let resource = match Resource::parse(request.path) {
        Ok(resource) => resource,
        Err(reply) => return reply,
    };
    let method = request.method;
    let reading = matches!(method, "GET" | "HEAD");
    let deleting = method == "DELETE" && matches!(resource, Resource::Queue(_));
    if !reading && !deleting {
        let allow = resource.allowed();
        return Reply {
            allow: Some(allow),
            ..Reply::error(
                405,
                &format!("method {method} not allowed here; use {allow}"),
            )
        };
    }
    if let Err(refusal) = access::check(&shared.auth.users(), request.authorization) {
        return match refusal {
            Refusal::NoKey => Reply::error(
                401,
                "this broker has users: send an admin's key as `Authorization: Bearer <key>`",
            ),
            Refusal::UnknownKey => Reply::error(401, "the key is not any user's"),
            Refusal::NotAdmin(user) => Reply::error(
                403,
                &format!("user {user:?} is not an admin (admin = true in [[auth.users]])"),
            ),
        };
    }
    let page = match Page::parse(request.query) {
        Ok(page) => page,
        Err(problem) => return Reply::error(400, &problem),
    };
    match resource {
        Resource::Server => Reply::json(200, &views::server(shared)),
        Resource::Connections => Reply::json(200, &views::connections(shared, page)),
        Resource::Subscriptions => Reply::json(200, &views::subscriptions(shared, page)),
        Resource::Queues => Reply::json(200, &views::queues(shared, page)),
        Resource::Topics => Reply::json(200, &views::topics(shared, page)),
        Resource::Queue(name) if deleting => delete_queue(shared, &name).await,
        Resource::Queue(name) => match views::queue(shared, &name) {
            Some(view) => Reply::json(200, &view),
            None => Reply::error(
                404,
                &format!("no durable subscription or queue group {name:?}"),
            ),
        },
    }
}

/// `DELETE /v1/queues/NAME`.
async fn delete_queue(shared: &Shared, name: &str) -> Reply {
    #[derive(Serialize)]
    struct Deleted<'a> {
        deleted: &'a str,
    }
    match shared.durable.delete_by_name(name).await {
        Ok(Deletion::Deleted) => {
            tracing::info!(name, "durable queue deleted by an operator");
            Reply::json(200, &Deleted { deleted: name })
        }
        Ok(Deletion::NotFound) => Reply::error(
            404,
            &format!("no durable subscription or queue group {name:?}"),
        ),
        Ok(Deletion::Attached(consumers)) => Reply::error(
            409,
            &format!(
                "{name:?} has {consumers} consumer(s) attached (connections {:?}); close them first, then delete it",
                shared.connections.consumers_of(name)
            ),
        ),
        Err(error) => Reply::error(
            500,
            &format!("deleted in memory, but the queue manifest was not saved (it may come back after a restart): {error}"),
        ),
    }
}
