//! `relais serve --config FILE [--listen ADDR]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory back to the system after a burst. mimalloc (v3) returns freed arena memory only
/// `purge_delay` (1 s) after the free, and only when some thread next calls into it: an
/// idle server calls into it seldom, and kept a burst's peak (a 31 MB body, gigabytes
/// before the bounds) resident. A thread that asks it to purge what has expired, once a
/// second, returns it within about 2 s (scripts/probes/client_bounds.py, docs/limits.md).
/// Arena purging is process-wide, so one thread serves all; with nothing expired the call
/// returns at once.
fn spawn_purger() {
    extern "C" {
        /// mimalloc's `mi_collect`, linked in by libmimalloc-sys (exposed there only with
        /// its `extended` feature, whose extra dependency is not needed for one call).
        fn mi_collect(force: bool);
    }
    let spawned = std::thread::Builder::new()
        .name("mi-purge".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: `mi_collect` takes no pointer and is safe to call from any thread.
            unsafe { mi_collect(false) };
        });
    if let Err(e) = spawned {
        eprintln!("warning: cannot start the allocator purge thread: {e}");
    }
}

#[derive(Parser)]
#[command(name = "relais", version, about = "An Anthropic-compatible LLM router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Serve {
        /// The TOML config file.
        #[arg(long, env = "RELAIS_CONFIG")]
        config: PathBuf,
        /// Overrides server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// `text` or `json` (one JSON object per line).
        #[arg(long, env = "RELAIS_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a config file and print the resulting catalog.
    Check {
        #[arg(long, env = "RELAIS_CONFIG")]
        config: PathBuf,
    },
    /// Manage client keys stored in the database ([ledger]).
    Keys {
        #[arg(long, env = "RELAIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Signed compliance receipts in the database ([ledger]); see docs/receipts.md.
    Receipts {
        #[arg(long, env = "RELAIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ReceiptsCommand,
    },
    /// Usage and cost from the ledger, grouped by key, model, provider or day.
    Usage {
        #[arg(long, env = "RELAIS_CONFIG")]
        config: PathBuf,
        /// key | model | provider | day
        #[arg(long, default_value = "key")]
        by: String,
        /// A UTC date (2025-01-31) or a span back from now (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only this key's requests.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReceiptsCommand {
    /// Add a new signing key; older keys stay published so their receipts still verify.
    RotateKey,
    /// Write receipts as signed JSON lines (for auditors).
    Export {
        /// A UTC date (2025-01-31) or a span back from now (30m, 24h, 30d).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check an exported file's signatures offline.
    Verify {
        file: PathBuf,
        /// The public keys: a saved `GET /relais/receipts/keys` (else the config's database).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key (shown once) with an optional policy: the JSON form of a [[keys]]
    /// entry without name and key, e.g. '{"eu_native": true}'.
    Create {
        name: String,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List stored keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every server refuses it within [ledger] keys_refresh_s.
    Revoke { name: String },
    /// Replace a key's policy (or, with --merge, change only the fields given).
    SetPolicy {
        name: String,
        policy: String,
        #[arg(long)]
        merge: bool,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    /// One JSON object per line (the per-request line carries the ledger's fields).
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve { log_format, .. } => *log_format,
        Command::Check { .. }
        | Command::Keys { .. }
        | Command::Usage { .. }
        | Command::Receipts { .. } => LogFormat::Text,
    };
    // Log lines are written by a background thread, so a request never waits on stderr.
    // Not lossy: under overload, logging slows requests rather than dropping audit lines.
    let (writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let filter =
        EnvFilter::try_from_env("RELAIS_LOG").unwrap_or_else(|_| EnvFilter::new("relais=info"));
    // Colour only for a person at a terminal (and not with NO_COLOR): escape codes cost
    // formatting work on every line and are noise in a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        // The same lines as the default field formatter, with less formatting work per
        // field (src/logfmt.rs; the access line is one per request).
        LogFormat::Text => fmt.fmt_fields(relais::logfmt::PlainFields).init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
    match cli.command {
        Command::Check { config } => match relais::config::Config::load(&config) {
            Ok(cfg) => {
                for m in &cfg.models {
                    let eps: Vec<&str> = m.endpoints.iter().map(|e| e.id.as_str()).collect();
                    println!("{}: {}", m.id, eps.join(", "));
                }
                for (m, why) in &cfg.unavailable_models {
                    println!("{m}: unavailable ({why})");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Keys { config, command } => {
            let Some(config) = config else {
                eprintln!("error: --config (or RELAIS_CONFIG) is required");
                return ExitCode::from(2);
            };
            run_cli(async move {
                use relais::cli;
                match command {
                    KeysCommand::Create { name, policy, json } => {
                        cli::keys_create(&config, &name, policy.as_deref(), json).await
                    }
                    KeysCommand::List { json } => cli::keys_list(&config, json).await,
                    KeysCommand::Revoke { name } => cli::keys_revoke(&config, &name).await,
                    KeysCommand::SetPolicy {
                        name,
                        policy,
                        merge,
                    } => cli::keys_set_policy(&config, &name, &policy, merge).await,
                }
            })
        }
        Command::Receipts { config, command } => {
            let need = |c: Option<PathBuf>| {
                c.ok_or_else(|| {
                    eprintln!("error: --config (or RELAIS_CONFIG) is required");
                    ExitCode::FAILURE
                })
            };
            match command {
                ReceiptsCommand::RotateKey => match need(config) {
                    Ok(c) => run_cli(async move { relais::cli::receipts::rotate_key(&c).await }),
                    Err(code) => code,
                },
                ReceiptsCommand::Export { since, output } => match need(config) {
                    // The lines go to standard output: the summary to standard error.
                    Ok(c) => run_cli_to_stderr(async move {
                        relais::cli::receipts::export(&c, &since, output.as_deref()).await
                    }),
                    Err(code) => code,
                },
                ReceiptsCommand::Verify { file, keys } => run_cli(async move {
                    relais::cli::receipts::verify(config.as_deref(), &file, keys.as_deref()).await
                }),
            }
        }
        Command::Usage {
            config,
            by,
            since,
            key,
            json,
        } => run_cli(async move {
            relais::cli::usage(&config, Some(&by), since.as_deref(), key, json).await
        }),
        Command::Serve { config, listen, .. } => {
            let mut cfg = match relais::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
                if let Err(e) = cfg.check_exposure() {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            spawn_purger();
            let rt = match runtime(tokio::runtime::Builder::new_multi_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(run(cfg, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime(mut b: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    b.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Runs one CLI command on a small runtime and prints what it returns.
fn run_cli(
    fut: impl std::future::Future<Output = Result<String, relais::cli::CliError>>,
) -> ExitCode {
    run_cli_into(fut, false)
}

/// [`run_cli`] for a command whose standard output is data: its summary goes to stderr.
fn run_cli_to_stderr(
    fut: impl std::future::Future<Output = Result<String, relais::cli::CliError>>,
) -> ExitCode {
    run_cli_into(fut, true)
}

fn run_cli_into(
    fut: impl std::future::Future<Output = Result<String, relais::cli::CliError>>,
    to_stderr: bool,
) -> ExitCode {
    let rt = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(fut) {
        Ok(out) if to_stderr => {
            eprintln!("{out}");
            ExitCode::SUCCESS
        }
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: relais::config::Config, path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let listen = cfg.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let models: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
    let handle = relais::server::launch(cfg, listener).await?;
    tracing::info!(addr = %handle.addr, metrics = ?handle.metrics_addr, models = ?models, "relais listening");
    reload_on_sighup(handle.reloader().clone(), path);
    shutdown_signal().await;
    tracing::info!("shutting down: letting in-flight requests finish");
    handle.shutdown().await;
    Ok(())
}

/// SIGHUP reloads the config file; an invalid one is logged (field named) and ignored.
fn reload_on_sighup(reloader: std::sync::Arc<relais::server::Reloader>, path: PathBuf) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: config reload by signal is off");
            return;
        };
        while hup.recv().await.is_some() {
            match reloader.reload(&path) {
                Ok(()) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "config reload rejected; the previous config keeps serving"
                ),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (reloader, path);
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
