//! The operator's commands: `server info`, `conns ls`, `queues ls|info|rm`,
//! `topics ls`. Each asks the broker's HTTP port (`/v1/...`, see the
//! broker's `introspection` module) and prints a table, or the JSON itself
//! with `--json`.

mod http;
mod table;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::error::CliError;
use table::{human_bytes, human_ms, key_values, Table};

/// Where the broker's HTTP port is, the key, and the output form.
#[derive(Args, Debug, Clone)]
pub struct Admin {
    /// The broker's HTTP port (`[metrics] bind_addr`): host:port.
    #[arg(
        long,
        env = "BLIPMQ_HTTP",
        default_value = "127.0.0.1:9090",
        value_name = "HOST:PORT"
    )]
    pub http: String,
    /// An admin's API key, needed once the broker has users (default: --api-key).
    #[arg(long, env = "BLIPMQ_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print the broker's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

/// A list command's page.
#[derive(Args, Debug, Clone)]
pub struct Listing {
    #[command(flatten)]
    pub admin: Admin,
    /// At most this many items (the broker allows 1 to 4096; default 256).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip this many items first.
    #[arg(long)]
    pub offset: Option<usize>,
}

/// A command on one durable subscription or queue group.
#[derive(Args, Debug, Clone)]
pub struct Named {
    /// The durable subscription's or queue group's name.
    pub name: String,
    #[command(flatten)]
    pub admin: Admin,
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Version, uptime, listeners, limits, log and auth settings.
    Info(Admin),
}

#[derive(Subcommand, Debug)]
pub enum ConnsCommand {
    /// Connected clients with their traffic and backlog.
    Ls(Listing),
}

#[derive(Subcommand, Debug)]
pub enum QueuesCommand {
    /// Durable subscriptions and queue groups, and how far behind each is.
    Ls(Listing),
    /// One durable subscription or queue group in detail.
    Info(Named),
    /// Delete a durable subscription or queue group, with every message it
    /// keeps (refused while consumers are attached).
    Rm(Named),
}

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Subscribed topics and patterns with their subscription counts.
    Ls(Listing),
}

/// What the global options add to an admin command: the client's API key
/// (used when `--key` is not given) and its TLS settings (`--tls-*`, used
/// for an `https://` HTTP port, and implying HTTPS when given).
pub struct Access<'a> {
    pub api_key: Option<&'a str>,
    pub tls: Option<&'a blipmq::tls::TlsOptions>,
}

/// The API key to send: `--key`/`BLIPMQ_KEY`, else the global `--api-key`.
fn key<'a>(admin: &'a Admin, access: &Access<'a>) -> Option<&'a str> {
    admin.key.as_deref().or(access.api_key)
}

/// Ask `method target`; the JSON of a 200, or the broker's reason as an
/// error that says what to do about it.
async fn fetch(
    admin: &Admin,
    access: &Access<'_>,
    method: &str,
    target: &str,
) -> Result<Value, CliError> {
    let answer = http::call(&admin.http, method, target, key(admin, access), access.tls).await?;
    let json: Option<Value> = serde_json::from_str(&answer.body).ok();
    if answer.status == 200 {
        return json.ok_or_else(|| {
            CliError::runtime(format!(
                "{} answered {target} with something other than JSON (is it a BlipMQ broker's HTTP port?)",
                admin.http
            ))
        });
    }
    let reason = json
        .as_ref()
        .and_then(|j| j["error"].as_str())
        .map_or_else(|| answer.body.trim().to_string(), str::to_string);
    let hint = match answer.status {
        401 => "; pass an admin's key with --key or BLIPMQ_KEY",
        403 => "; the key must be an admin's (admin = true)",
        _ => "",
    };
    Err(CliError::runtime(format!(
        "{} ({}): {reason}{hint}",
        status_name(answer.status),
        answer.status
    )))
}

fn status_name(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorised",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        409 => "conflict",
        503 => "unavailable",
        _ => "failed",
    }
}

fn list_target(path: &str, listing: &Listing) -> String {
    let mut query = Vec::new();
    if let Some(limit) = listing.limit {
        query.push(format!("limit={limit}"));
    }
    if let Some(offset) = listing.offset {
        query.push(format!("offset={offset}"));
    }
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Print the JSON, or what `render` makes of it.
fn show(admin: &Admin, value: &Value, render: impl FnOnce(&Value) -> String) {
    if admin.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        print!("{}", render(value));
    }
}

/// A cell: a string as is, a number or bool printed, null as `-`.
fn cell(value: &Value) -> String {
    match value {
        Value::String(text) if text.is_empty() => "-".into(),
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ms_cell(value: &Value) -> String {
    value.as_u64().map_or_else(|| "-".into(), human_ms)
}

fn bytes_cell(value: &Value) -> String {
    value.as_u64().map_or_else(|| "-".into(), human_bytes)
}

/// The table of a page's items, and a line saying how to get the rest
/// when there is more.
fn paged(value: &Value, mut table: Table, row: impl Fn(&Value) -> Vec<String>) -> String {
    let items = value["items"].as_array().cloned().unwrap_or_default();
    for item in &items {
        table.row(row(item));
    }
    let mut out = table.render();
    if value["truncated"] == true {
        let offset = value["offset"].as_u64().unwrap_or(0);
        let shown = items.len() as u64;
        out.push_str(&format!(
            "(showing {}-{} of {}; --offset {} for more)\n",
            offset + 1,
            offset + shown,
            value["total"],
            offset + shown
        ));
    }
    out
}

pub async fn server_info(admin: &Admin, access: &Access<'_>) -> Result<(), CliError> {
    let value = fetch(admin, access, "GET", "/v1/server").await?;
    show(admin, &value, |v| {
        let config = &v["config"];
        let listener = |l: &Value| match l {
            Value::Null => "off".to_string(),
            l if l["tls"] == true => format!("{} (tls)", cell(&l["addr"])),
            l => cell(&l["addr"]),
        };
        let wal = &config["wal"];
        let auth = &config["auth"];
        key_values(&[
            ("version", cell(&v["version"])),
            ("started", cell(&v["started_at"])),
            ("uptime", ms_cell(&v["uptime_ms"])),
            ("draining", cell(&v["draining"])),
            ("connections", cell(&v["connections"])),
            ("subscriptions", cell(&v["subscriptions"])),
            ("topics", cell(&v["topics"])),
            ("durable queues", cell(&v["durable_queues"])),
            ("clients", listener(&config["listeners"]["clients"])),
            ("websocket", listener(&config["listeners"]["websocket"])),
            ("http", listener(&config["listeners"]["http"])),
            (
                "wal",
                format!(
                    "{} (fsync {}, max {})",
                    cell(&wal["dir"]),
                    cell(&wal["fsync_policy"]),
                    bytes_cell(&wal["max_bytes"])
                ),
            ),
            (
                "auth",
                if auth["enabled"] == true {
                    format!("on, {} users", auth["users"])
                } else {
                    "off".into()
                },
            ),
            (
                "tls",
                if config["tls"]["enabled"] == true {
                    format!("on (min {})", cell(&config["tls"]["min_version"]))
                } else {
                    "off".into()
                },
            ),
            (
                "max connections",
                cell(&config["limits"]["max_connections"]),
            ),
            (
                "max message size",
                bytes_cell(&config["limits"]["max_message_size_bytes"]),
            ),
        ])
    });
    Ok(())
}

pub async fn conns_ls(listing: &Listing, access: &Access<'_>) -> Result<(), CliError> {
    let target = list_target("/v1/connections", listing);
    let value = fetch(&listing.admin, access, "GET", &target).await?;
    show(&listing.admin, &value, |v| {
        let table = Table::new(&[
            ">ID",
            "REMOTE",
            "TRANSPORT",
            "NAME",
            "USER",
            ">SUBS",
            ">MSGS_IN",
            ">MSGS_OUT",
            ">BYTES_IN",
            ">BYTES_OUT",
            ">PENDING",
            "CONNECTED",
        ]);
        paged(v, table, |c| {
            vec![
                cell(&c["id"]),
                cell(&c["remote_addr"]),
                cell(&c["transport"]),
                cell(&c["client_name"]),
                cell(&c["user"]),
                cell(&c["subscriptions"]),
                cell(&c["messages_in"]),
                cell(&c["messages_out"]),
                bytes_cell(&c["bytes_in"]),
                bytes_cell(&c["bytes_out"]),
                cell(&c["pending_messages"]),
                cell(&c["connected_at"]),
            ]
        })
    });
    Ok(())
}

pub async fn queues_ls(listing: &Listing, access: &Access<'_>) -> Result<(), CliError> {
    let target = list_target("/v1/queues", listing);
    let value = fetch(&listing.admin, access, "GET", &target).await?;
    show(&listing.admin, &value, |v| {
        let table = Table::new(&[
            "NAME",
            "KIND",
            "PATTERN",
            ">CONSUMERS",
            ">PENDING",
            ">UNACKED",
            ">OLDEST",
            ">REDELIVERED",
            ">DEAD",
            ">BYTES",
        ]);
        paged(v, table, |q| {
            vec![
                cell(&q["name"]),
                cell(&q["kind"]),
                cell(&q["pattern"]),
                cell(&q["consumers"]),
                cell(&q["pending"]),
                cell(&q["unacked"]),
                ms_cell(&q["oldest_unacked_age_ms"]),
                cell(&q["redeliveries"]),
                cell(&q["dead_letters"]),
                bytes_cell(&q["bytes_pinned"]),
            ]
        })
    });
    Ok(())
}

pub async fn queues_info(named: &Named, access: &Access<'_>) -> Result<(), CliError> {
    let target = format!("/v1/queues/{}", http::encode_segment(&named.name));
    let value = fetch(&named.admin, access, "GET", &target).await?;
    show(&named.admin, &value, |q| {
        key_values(&[
            ("name", cell(&q["name"])),
            ("kind", cell(&q["kind"])),
            ("pattern", cell(&q["pattern"])),
            ("consumers", cell(&q["consumers"])),
            ("pending", cell(&q["pending"])),
            ("unacked", cell(&q["unacked"])),
            ("kept", cell(&q["kept"])),
            ("oldest unacked", ms_cell(&q["oldest_unacked_age_ms"])),
            ("redeliveries", cell(&q["redeliveries"])),
            ("dead letters", cell(&q["dead_letters"])),
            ("bytes pinned", bytes_cell(&q["bytes_pinned"])),
            ("detached for", ms_cell(&q["detached_for_ms"])),
        ])
    });
    Ok(())
}

pub async fn queues_rm(named: &Named, access: &Access<'_>) -> Result<(), CliError> {
    let target = format!("/v1/queues/{}", http::encode_segment(&named.name));
    let value = fetch(&named.admin, access, "DELETE", &target).await?;
    show(&named.admin, &value, |_| {
        format!("deleted {:?} and every message it kept\n", named.name)
    });
    Ok(())
}

pub async fn topics_ls(listing: &Listing, access: &Access<'_>) -> Result<(), CliError> {
    let target = list_target("/v1/topics", listing);
    let value = fetch(&listing.admin, access, "GET", &target).await?;
    show(&listing.admin, &value, |v| {
        let table = Table::new(&["PATTERN", ">SUBSCRIPTIONS", ">QUEUE_GROUPS"]);
        paged(v, table, |t| {
            vec![
                cell(&t["pattern"]),
                cell(&t["subscriptions"]),
                cell(&t["queue_groups"]),
            ]
        })
    });
    Ok(())
}
