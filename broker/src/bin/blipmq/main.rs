//! `blipmq`: the broker binary. Parses the command line, sets up logging
//! before anything can fail, loads the config, binds, and runs until SIGINT
//! or SIGTERM; SIGHUP reads the TLS files again. Tells systemd each step
//! when `NOTIFY_SOCKET` is set (`notify.rs`).

use std::process::ExitCode;

use args::{Invocation, LogFormat};
use blipmq_broker::{run_and_notify, Config, Listeners};

mod args;
mod healthcheck;
mod notify;

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
        Ok(Invocation::Keygen(name)) => {
            print!("{}", keygen(name.as_deref().unwrap_or("NAME")));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("blipmq {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Healthcheck(options)) => return healthcheck::run(&options),
        Err(message) => {
            eprintln!("error: {message}\n\nUsage: blipmq [start] [OPTIONS]\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
    init_logging(options.log_format);
    let notifier = notify::Notifier::from_env().map(std::sync::Arc::new);

    let config = match Config::load(options.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            report_startup_error(&error);
            return ExitCode::from(2);
        }
    };
    // Every socket the limits allow: clients, sockets in handshake, and
    // connections to the metrics port.
    raise_open_file_limit(
        config.server.max_connections
            + config.server.max_handshakes
            + config.metrics.max_connections,
    );
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
        let stopping = notifier.clone();
        let shutdown = async move {
            shutdown.await;
            if let Some(notifier) = stopping {
                notifier.stopping();
            }
        };
        let reload = Reload {
            tls: listeners.tls.clone(),
            auth: listeners.auth.clone(),
            config: options.config.clone(),
            notifier: notifier.clone(),
        };
        if let Err(error) = reload_on_hangup(reload) {
            report_startup_error(&format!("cannot listen for SIGHUP: {error}"));
            return ExitCode::FAILURE;
        }
        // Printed once the log is recovered: a client that reads it finds
        // QoS 1 working.
        let ready_line = readiness_line(&listeners);
        let announce = move || {
            announce_ready(&ready_line);
            if let Some(notifier) = &notifier {
                notifier.ready(&ready_line);
            }
        };
        match run_and_notify(listeners, config, shutdown, announce).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "broker failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Raises the soft limit on open files to the hard limit. Every connection
/// and every log segment is a file descriptor, and the usual soft limit
/// (1,024) is far below the sockets the limits allow: running out of descriptors makes
/// accepts and the log's segment rotation fail.
// rlim_t is u64 here but not on every Unix.
#[allow(clippy::unnecessary_cast)]
fn raise_open_file_limit(sockets: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
                limit.rlim_cur = before;
            }
        }
        // Sockets, log segments, listeners and some to spare.
        let wanted = sockets as u64 + 256;
        if (limit.rlim_cur as u64) < wanted {
            tracing::warn!(
                open_files = limit.rlim_cur as u64,
                sockets,
                "the open-file limit is below what server.max_connections, server.max_handshakes and metrics.max_connections allow; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower them"
            );
        } else if before != limit.rlim_cur {
            tracing::debug!(
                from = before as u64,
                to = limit.rlim_cur as u64,
                "raised the open-file limit"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = sockets;
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

/// The line [`announce_ready`] prints: the bound addresses, for scripts and
/// test harnesses that start the broker on port 0.
fn readiness_line(listeners: &Listeners) -> String {
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
    format!("blipmq ready clients={clients} metrics={metrics}{websocket}")
}

/// One line on stdout once the broker serves.
fn announce_ready(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
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

/// `blipmq keygen`: a new key, and the `[[auth.users]]` entry for it. The
/// key is shown once; the broker stores only its digest.
fn keygen(name: &str) -> String {
    let key = blipmq_broker::auth::generate_key();
    let digest = blipmq_broker::auth::key_digest_hex(&key);
    format!(
        "# The key, for the client (shown once; the broker keeps only its SHA-256):\n\
         # {key}\n\
         # The user, for blipmq.toml (add publish, subscribe and queues rules):\n\
         [[auth.users]]\n\
         name = {name:?}\n\
         key_sha256 = \"{digest}\"\n"
    )
}

/// What SIGHUP reads again.
struct Reload {
    tls: Option<std::sync::Arc<blipmq_broker::Tls>>,
    auth: Option<std::sync::Arc<blipmq_broker::auth::AuthState>>,
    config: Option<std::path::PathBuf>,
    /// Told when a reload begins and ends.
    notifier: Option<std::sync::Arc<notify::Notifier>>,
}

/// On SIGHUP: the TLS certificate, key and client CA files (a renewed
/// certificate: new connections get it, open ones keep theirs), and the
/// users of `[auth]` from the config file and the environment (connections
/// of users removed or changed are closed). What does not load is logged
/// and what is in use stays. SIGHUP no longer stops the broker.
fn reload_on_hangup(reload: Reload) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if let Some(notifier) = &reload.notifier {
                notifier.reloading();
            }
            reload_once(&reload);
            if let Some(notifier) = &reload.notifier {
                notifier.ready("reloaded");
            }
        }
    });
    Ok(())
}

/// One SIGHUP's work: what does not load is logged, and what is in use stays.
fn reload_once(reload: &Reload) {
    match &reload.tls {
        Some(tls) => match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate, key and client CA reloaded"),
            Err(error) => {
                tracing::error!(%error, "SIGHUP: TLS files not reloaded; the ones in use stay")
            }
        },
        None => tracing::info!("SIGHUP: no TLS files to reload ([tls] is not configured)"),
    }
    let Some(auth) = &reload.auth else { return };
    match Config::load(reload.config.as_deref(), std::env::vars()) {
        Ok(config) => {
            let users = blipmq_broker::auth::Users::from_config(&config.auth);
            tracing::info!(users = ?users, "SIGHUP: users reloaded");
            auth.replace(users);
        }
        Err(error) => {
            tracing::error!(%error, "SIGHUP: users not reloaded; the ones in use stay")
        }
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
