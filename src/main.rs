//! The warden command line: `warden server` runs a standalone server; every
//! zoo.cfg key is also a flag, and flags override the file.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use warden::config::ServerArgs;
use warden::runtime::durability::DataDirs;
use warden::runtime::{self, ServerOptions};

#[derive(Parser)]
#[command(name = "warden", version, about = "A ZooKeeper-compatible coordination service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The server's flags make its variant large; the enum is parsed once.
#[allow(clippy::large_enum_variant)]
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
        /// Tests only: make the transaction log fail (ENOSPC) after this many bytes.
        #[arg(long, value_name = "BYTES", hide = true)]
        test_fail_log_after_bytes: Option<u64>,
    },
    /// Print a transaction log segment (log.<zxid>) as text, as ZooKeeper's LogFormatter does.
    LogDump { file: PathBuf },
    /// Print a snapshot (snapshot.<zxid>) as text, as ZooKeeper's SnapshotFormatter does.
    SnapshotDump { file: PathBuf },
    /// Check that a data directory recovers: the snapshot validates and the log replays.
    Verify {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Defaults to --data-dir.
        #[arg(long)]
        data_log_dir: Option<PathBuf>,
    },
    /// Run the deterministic simulator: whole ensembles of the real core with
    /// faults, checked after every step. Replays a seed exactly.
    Sim {
        /// First seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many consecutive seeds to run.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Stop a run after this many events.
        #[arg(long)]
        steps: Option<u64>,
        /// Simulated milliseconds of load and faults before the final heal.
        #[arg(long, default_value_t = 20_000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 3)]
        voters: u64,
        #[arg(long, default_value_t = 1)]
        observers: u64,
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// "all", "none", or a comma list of
        /// crash,partition,clog,link,disk,clock,torn,corrupt.
        #[arg(long, default_value = "all")]
        faults: String,
        /// Plant a known bug: commit-on-minority, ack-before-fsync, skip-trunc,
        /// newleader-before-persist, watch-event-after-reply,
        /// set-watches-from-server-zxid, ignore-corruption, reply-before-commit,
        /// sessions-on-wall-clock (caught only by tests/sim.rs's wall-clock schedule).
        #[arg(long, default_value = "none")]
        plant: String,
        /// Print every event of the run (one seed).
        #[arg(long)]
        trace: bool,
        /// Start each epoch's zxid counter here (near 4294967294 to make
        /// leaders run out of zxids, ZOOKEEPER-1277).
        #[arg(long, default_value_t = 0)]
        epoch_counter_start: u32,
    },
    /// Remove all but the newest COUNT snapshots and the logs they do not need.
    Purge {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Defaults to --data-dir.
        #[arg(long)]
        data_log_dir: Option<PathBuf>,
        /// Snapshots to keep (at least 3, as ZooKeeper's PurgeTxnLog requires).
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
}

fn read_file(file: &PathBuf) -> Result<bytes::Bytes, String> {
    std::fs::read(file).map(bytes::Bytes::from).map_err(|error| format!("{}: {error}", file.display()))
}

fn run_tool(command: Command) -> Result<(), String> {
    match command {
        Command::LogDump { file } => {
            let text = warden::storage::log::describe_segment(&read_file(&file)?).map_err(|error| format!("{}: {error}", file.display()))?;
            print!("{text}");
        }
        Command::SnapshotDump { file } => {
            let text = warden::storage::snapshot::describe_snapshot(read_file(&file)?).map_err(|error| format!("{}: {error}", file.display()))?;
            print!("{text}");
        }
        Command::Verify { data_dir, data_log_dir } => {
            let dirs = DataDirs::new(&data_dir, data_log_dir.as_ref().unwrap_or(&data_dir));
            let recovered = dirs.recover()?;
            for warning in &recovered.warnings {
                println!("warning: {warning}");
            }
            if let Some(torn) = &recovered.torn_tail {
                println!("torn tail (cut at next start): {} at offset {}: {}", torn.file, torn.offset, torn.reason);
            }
            println!(
                "ok: snapshot zxid {:#x}, {} txns replayed, last zxid {:#x}, {} znodes, {} sessions",
                recovered.snapshot_zxid,
                recovered.replayed,
                recovered.tree.last_processed_zxid(),
                recovered.tree.node_count(),
                recovered.tree.sessions().len()
            );
        }
        Command::Purge { data_dir, data_log_dir, count } => {
            if count < 3 {
                return Err("--count must be at least 3".into());
            }
            let dirs = DataDirs::new(&data_dir, data_log_dir.as_ref().unwrap_or(&data_dir));
            for path in dirs.purge(count).map_err(|error| error.to_string())? {
                println!("removed {}", path.display());
            }
        }
        Command::Sim { seed, seeds, steps, duration_ms, voters, observers, clients, faults, plant, trace, epoch_counter_start } => {
            let mut config = warden::sim::SimConfig::new(seed);
            config.duration_ms = duration_ms;
            config.voters = voters;
            config.observers = observers;
            config.clients = clients;
            config.faults = warden::sim::Faults::parse(&faults)?;
            config.planted = warden::sim::Planted::parse(&plant)?;
            config.trace = trace;
            config.epoch_counter_start = epoch_counter_start;
            if epoch_counter_start >= warden::zab::broadcast::LAST_COUNTER {
                return Err(format!("--epoch-counter-start must be below {}", warden::zab::broadcast::LAST_COUNTER));
            }
            if let Some(steps) = steps {
                config.steps_max = steps;
            }
            if voters == 0 || voters + observers > 9 {
                return Err("--voters must be 1..=9 with at most 9 servers in all".into());
            }
            let mut failed = 0;
            for seed in seed..seed.saturating_add(seeds.max(1)) {
                config.seed = seed;
                let report = warden::sim::run(config.clone());
                for line in &report.trace {
                    println!("{line}");
                }
                println!("{}", report.summary());
                if !report.ok() {
                    failed += 1;
                    for violation in &report.violations {
                        println!("  violation: {violation}");
                    }
                    println!("  replay: {}", report.replay_command(&config));
                }
            }
            if failed > 0 {
                return Err(format!("{failed} of {} seeds failed", seeds.max(1)));
            }
        }
        Command::Server { .. } => unreachable!("handled by main"),
    }
    Ok(())
}

fn init_logging(level: &str) -> Result<(), String> {
    // glommio reports, at ERROR, devices whose io_uring poll ring it cannot use
    // (virtual disks): harmless, and not ours to report. Name glommio in
    // --log-level to see its messages.
    let directives = if level.contains("glommio") { level.to_owned() } else { format!("{level},glommio=off") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).map_err(|error| format!("invalid --log-level '{level}': {error}"))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server { server, container_check_interval_ms, test_fail_log_after_bytes } => {
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
            match runtime::run(ServerOptions { config, container_check_interval_ms, test_fail_log_after_bytes }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("server failed: {error}");
                    eprintln!("warden: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        tool => match run_tool(tool) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("warden: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
