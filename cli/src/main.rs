//! `blipmq-cli`: publish, subscribe and benchmark against a BlipMQ broker,
//! and look into it through its HTTP port (`server`, `conns`, `queues`,
//! `topics`: see `admin/`).
//!
//! Exit codes: 0 success, 1 runtime or broker error, 2 usage error. Every
//! error is one line on stderr, `blipmq-cli: <reason>`, naming the broker's
//! error code where there is one (e.g. `AuthFailed`).

mod admin;
mod bench;
mod error;
mod publish;
mod subscribe;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use blipmq::{Client, Qos, ReconnectPolicy};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{describe, CliError};

#[derive(Parser)]
#[command(
    name = "blipmq-cli",
    version,
    about = "Publish, subscribe and benchmark against a BlipMQ broker"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Where the broker is and how to authenticate; valid before or after the
/// command.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// Broker address: host:port, or tls://host:port for TLS.
    #[arg(
        long,
        global = true,
        env = "BLIPMQ_ADDR",
        default_value = "127.0.0.1:7878"
    )]
    pub addr: String,
    /// API key, when the broker requires one.
    #[arg(long, global = true, env = "BLIPMQ_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// TLS: trust the CAs in this PEM file instead of the system's roots
    /// (implies TLS, as do the other --tls options).
    #[arg(long, global = true, env = "BLIPMQ_TLS_CA", value_name = "PEM_FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// TLS: present this certificate chain (mutual TLS); needs --tls-key.
    #[arg(
        long,
        global = true,
        env = "BLIPMQ_TLS_CERT",
        value_name = "PEM_FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: the private key of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "BLIPMQ_TLS_KEY",
        value_name = "PEM_FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS: the name the broker's certificate must be for, when it is not
    /// the address's host.
    #[arg(
        long,
        global = true,
        env = "BLIPMQ_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl Global {
    /// The TLS options the flags set, if any.
    fn tls(&self) -> Option<blipmq::tls::TlsOptions> {
        use blipmq::tls::{Pem, TlsOptions};
        let any =
            self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some();
        any.then(|| TlsOptions {
            ca: self.tls_ca.clone().map(Pem::File),
            client_cert: self.tls_cert.clone().map(Pem::File),
            client_key: self.tls_key.clone().map(Pem::File),
            server_name: self.tls_server_name.clone(),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Publish one message (or, with --lines, one message per STDIN line).
    Pub(PubArgs),
    /// Publish a file's bytes as one message.
    Pubfile(PubfileArgs),
    /// Subscribe to a topic or pattern and print what arrives.
    Sub(SubArgs),
    /// Remove a durable subscription by name.
    Unsub(UnsubArgs),
    /// Measure throughput and end-to-end latency.
    Bench(BenchArgs),
    /// The broker itself, from its HTTP port.
    #[command(subcommand)]
    Server(admin::ServerCommand),
    /// Connected clients, from the broker's HTTP port.
    #[command(subcommand)]
    Conns(admin::ConnsCommand),
    /// Durable subscriptions and queue groups, from the broker's HTTP port.
    #[command(subcommand)]
    Queues(admin::QueuesCommand),
    /// Subscribed topics and patterns, from the broker's HTTP port.
    #[command(subcommand)]
    Topics(admin::TopicsCommand),
}

#[derive(Args, Debug)]
pub struct PubArgs {
    /// Topic to publish to (no wildcards).
    pub topic: String,
    /// The message text, or `-` to read it from STDIN (all of it, binary-safe).
    pub message: OsString,
    /// Publish each STDIN line (without its newline) as one message; the
    /// message argument must be `-`.
    #[arg(long)]
    pub lines: bool,
    /// Time to live in milliseconds (0 = the broker's default).
    #[arg(long, value_name = "MS")]
    pub ttl: Option<u32>,
    /// 0 = at most once; 1 = wait for the broker to confirm every message.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: Qos,
    /// A header `KEY=VALUE` to send with the message (repeatable, kept in order).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct PubfileArgs {
    /// Topic to publish to (no wildcards).
    pub topic: String,
    /// File whose bytes are the message.
    pub path: PathBuf,
    /// Time to live in milliseconds (0 = the broker's default).
    #[arg(long, value_name = "MS")]
    pub ttl: Option<u32>,
    /// 0 = at most once; 1 = wait for the broker to confirm.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: Qos,
    /// A header `KEY=VALUE` to send with the message (repeatable, kept in order).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct SubArgs {
    /// Topic or pattern (`*` = one token, `>` = the rest).
    pub pattern: String,
    /// Exit after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// 0 = at most once; 1 = acknowledge every message.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: Qos,
    /// Name of a durable subscription.
    #[arg(long, value_name = "NAME")]
    pub durable: Option<String>,
    /// Queue group: members of a group share the messages.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// text: the payload as text, one per line; json: one JSON object per
    /// line with a base64 payload; raw: the payload bytes only.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Raw,
}

#[derive(Args, Debug)]
pub struct UnsubArgs {
    /// Topic or pattern the durable subscription was made with.
    pub pattern: String,
    /// Name of the durable subscription to remove.
    #[arg(long, value_name = "NAME", conflicts_with = "group")]
    pub durable: Option<String>,
    /// Name of the QoS 1 queue group to remove (refused while other members
    /// are attached: then only this attachment ends).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Subscribing connections (0 = publish only).
    #[arg(long, default_value_t = 1)]
    pub subscribers: u32,
    /// Payload size in bytes (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Messages per publisher.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Stop publishing after this many seconds, even if --count is not reached.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// 0 = at most once; 1 = publishers await confirms (up to 256 in flight
    /// each) and subscribers acknowledge.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: Qos,
    /// Fixed publish rate, messages per second across all publishers.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Topic to use (default: `bench.` and a random suffix).
    #[arg(long)]
    pub topic: Option<String>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Headers on every message (`bench-0=value`, ...), to measure their cost.
    #[arg(long, default_value_t = 0)]
    pub headers: u16,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err("expected KEY=VALUE with a non-empty key".to_string()),
    }
}

fn parse_qos(text: &str) -> Result<Qos, String> {
    match text {
        "0" => Ok(Qos::AtMostOnce),
        "1" => Ok(Qos::AtLeastOnce),
        _ => Err("must be 0 or 1".to_string()),
    }
}

/// A client that does not reconnect: a command that lost its broker fails
/// rather than silently losing messages.
pub async fn connect(global: &Global, name: &str) -> Result<Client, CliError> {
    let mut builder = Client::builder()
        .name(name)
        .connect_timeout(Duration::from_secs(5))
        .reconnect(ReconnectPolicy::disabled());
    if let Some(key) = &global.api_key {
        builder = builder.api_key(key.clone());
    }
    if let Some(tls) = global.tls() {
        builder = builder.tls(tls);
    }
    builder.connect(global.addr.clone()).await.map_err(|e| {
        CliError::runtime(format!(
            "cannot connect to {}: {}",
            global.addr,
            describe(&e)
        ))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("blipmq-cli: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let tls = cli.global.tls();
        let access = admin::Access {
            api_key: cli.global.api_key.as_deref(),
            tls: tls.as_ref(),
        };
        match cli.command {
            Command::Pub(args) => publish::run_pub(&cli.global, args).await,
            Command::Pubfile(args) => publish::run_pubfile(&cli.global, args).await,
            Command::Sub(args) => subscribe::run_sub(&cli.global, args).await,
            Command::Unsub(args) => subscribe::run_unsub(&cli.global, args).await,
            Command::Bench(args) => bench::run(&cli.global, args).await,
            Command::Server(admin::ServerCommand::Info(args)) => {
                admin::server_info(&args, &access).await
            }
            Command::Conns(admin::ConnsCommand::Ls(args)) => admin::conns_ls(&args, &access).await,
            Command::Queues(admin::QueuesCommand::Ls(args)) => {
                admin::queues_ls(&args, &access).await
            }
            Command::Queues(admin::QueuesCommand::Info(args)) => {
                admin::queues_info(&args, &access).await
            }
            Command::Queues(admin::QueuesCommand::Rm(args)) => {
                admin::queues_rm(&args, &access).await
            }
            Command::Topics(admin::TopicsCommand::Ls(args)) => {
                admin::topics_ls(&args, &access).await
            }
        }
    });
    // Do not wait for tasks still parked on the network (e.g. after an error).
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("blipmq-cli: {}", error.message);
            ExitCode::from(error.exit)
        }
    }
}
