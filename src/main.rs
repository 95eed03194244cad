//! The warden command line: `warden server` runs a standalone server; every
//! zoo.cfg key is also a flag, and flags override the file.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warden::config::ServerArgs;
use warden::runtime::{self, ServerOptions};

#[derive(Parser)]
#[command(name = "warden", version, about = "A ZooKeeper-compatible coordination service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server. With no arguments: standalone on port 2181, data in ./data.
    Server {
        #[command(flatten)]
        server: ServerArgs,
        /// How often empty containers and expired TTL nodes are removed
        /// (ZooKeeper's znode.container.checkIntervalMs).
        #[arg(long, value_name = "MS", default_value_t = 60_000)]
        container_check_interval_ms: i64,
    },
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|error| format!("invalid --log-level '{level}': {error}"))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server { server, container_check_interval_ms } => {
            if let Err(error) = init_logging(&server.log_level) {
                eprintln!("warden: {error}");
                return ExitCode::from(2);
            }
            let config = match server.resolve() {
                Ok(config) => config,
                Err(error) => {
                    tracing::error!("{error}");
                    eprintln!("warden: {error}");
                    return ExitCode::from(2);
                }
            };
            if container_check_interval_ms <= 0 {
                eprintln!("warden: --container-check-interval-ms must be positive");
                return ExitCode::from(2);
            }
            match runtime::run(ServerOptions { config, container_check_interval_ms }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("server failed: {error}");
                    eprintln!("warden: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
