//! `blipmq`: the broker binary. Parses the command line, sets up logging
//! before anything can fail, loads the config, binds, and runs until SIGINT
//! or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use blipmq_broker::{run, Config, Listeners};
use clap::{Parser, Subcommand, ValueEnum};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "blipmq", version, about = "BlipMQ message broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: StartOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the default when no command is given).
    Start(StartOptions),
}

#[derive(clap::Args, Clone, Default)]
struct StartOptions {
    /// Config file; without one the built-in defaults apply.
    #[arg(long, short, env = "BLIPMQ_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format. The level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, env = "BLIPMQ_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum, Default)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match cli.command {
        Some(Command::Start(options)) => options,
        None => cli.options,
    };
    init_logging(options.log_format);

    let config = match Config::load(options.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            report_startup_error(&error);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("blipmq: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listeners = match Listeners::bind(&config).await {
            Ok(listeners) => listeners,
            Err(error) => {
                report_startup_error(&error);
                return ExitCode::FAILURE;
            }
        };
        // Handlers go in before the readiness line: a script may signal the
        // broker as soon as it has read it.
        let shutdown = match shutdown_signal() {
            Ok(shutdown) => shutdown,
            Err(error) => {
                report_startup_error(&format!("cannot listen for signals: {error}"));
                return ExitCode::FAILURE;
            }
        };
        announce_ready(&listeners);
        match run(listeners, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "broker failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Exactly one line on stderr: the log line when errors are logged, else a
/// plain one (RUST_LOG=off must not hide why the broker did not start).
fn report_startup_error(error: &dyn std::fmt::Display) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(%error, "cannot start");
    } else {
        eprintln!("blipmq: {error}");
    }
}

/// One line on stdout once the sockets are bound, for scripts and test
/// harnesses that start the broker on port 0.
fn announce_ready(listeners: &Listeners) {
    use std::io::Write;
    let clients = listeners
        .clients
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    let metrics = match &listeners.metrics {
        Some(l) => l
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string()),
        None => "off".to_string(),
    };
    // `websocket=` only when that listener is on, so the line stays as it
    // was for scripts of brokers without one.
    let websocket = listeners.websocket.as_ref().map(|l| {
        l.local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    });
    tracing::info!(%clients, %metrics, websocket = websocket.as_deref().unwrap_or("off"), "listening");
    let websocket = websocket.map_or_else(String::new, |a| format!(" websocket={a}"));
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "blipmq ready clients={clients} metrics={metrics}{websocket}"
    );
    let _ = stdout.flush();
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Install the SIGINT and SIGTERM handlers now; the future completes on the
/// first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
