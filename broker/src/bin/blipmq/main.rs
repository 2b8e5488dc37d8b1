//! `blipmq`: the broker binary. Parses the command line, sets up logging
//! before anything can fail, loads the config, binds, and runs until SIGINT
//! or SIGTERM.

use std::process::ExitCode;

use args::{Invocation, LogFormat};
use blipmq_broker::{run, Config, Listeners};

mod args;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let options = match args::parse(std::env::args_os().skip(1), |name| std::env::var_os(name)) {
        Ok(Invocation::Start(options)) => options,
        Ok(Invocation::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("blipmq {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\nUsage: blipmq [start] [OPTIONS]\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
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

/// Log to stderr at the levels RUST_LOG sets (`info` when unset), as
/// `target=level` directives (`warn`, `info,blipmq_broker=debug`); a value
/// that does not parse is reported and `info` applies.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = || Targets::new().with_default(tracing::Level::INFO);
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match value.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(error) => (
                default(),
                Some(format!("RUST_LOG={value:?} ignored: {error}")),
            ),
        },
        _ => (default(), None),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
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
