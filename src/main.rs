//! `relais serve --config FILE [--listen ADDR]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    },
    /// Validate a config file and print the resulting catalog.
    Check {
        #[arg(long, env = "RELAIS_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // Log lines are written by a background thread, so a request never waits on stderr.
    // Not lossy: under overload, logging slows requests rather than dropping audit lines.
    let (writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RELAIS_LOG").unwrap_or_else(|_| EnvFilter::new("relais=info")),
        )
        .with_target(false)
        .with_writer(writer)
        .init();
    let cli = Cli::parse();
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
        Command::Serve { config, listen } => {
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
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(cfg: relais::config::Config) -> Result<(), Box<dyn std::error::Error>> {
    let listen = cfg.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let models: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
    let handle = relais::server::start(cfg, listener)?;
    tracing::info!(addr = %handle.addr, metrics = ?handle.metrics_addr, models = ?models, "relais listening");
    shutdown_signal().await;
    tracing::info!("shutting down: letting in-flight requests finish");
    handle.shutdown().await;
    Ok(())
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
