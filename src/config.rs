//! Server configuration: reads ZooKeeper's `zoo.cfg` format, lets command-line
//! flags override it, fills in the settings that depend on others, and checks
//! every value before the server starts.
//!
//! Most of this module is pure: [`parse_zoo_cfg`] turns text into a
//! [`ParsedConfig`] and [`ServerArgs::resolve`] merges defaults, file and flags
//! into a [`Config`]. The only file I/O is [`load_file`], which reads a file
//! and hands its text to the pure parser. Bad values are errors that name the
//! key (or flag), the line and the value; unknown keys are warnings, because
//! real `zoo.cfg` files carry many settings warden has no use for.
//!
//! The text format follows `java.util.Properties.load`, which ZooKeeper's
//! `QuorumPeerConfig` uses: `key=value`, `key:value` or `key value`; `#` and
//! `!` comment lines; a trailing backslash continues a line; `\t`, `\n`,
//! `\uXXXX` and friends are escapes. ZooKeeper then trims keys and values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Defaults (ZooKeeper's, except where warden says otherwise)
// ---------------------------------------------------------------------------

/// ZooKeeper's `DEFAULT_TICK_TIME`.
pub const DEFAULT_TICK_TIME_MS: u32 = 2000;
pub const DEFAULT_INIT_LIMIT_TICKS: u32 = 10;
pub const DEFAULT_SYNC_LIMIT_TICKS: u32 = 5;
/// ZooKeeper has no default data directory; warden's embedded default is `./data`.
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_CLIENT_PORT: u16 = 2181;
pub const DEFAULT_CLIENT_PORT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Per client IP address; 0 means unlimited.
pub const DEFAULT_MAX_CLIENT_CNXNS: u32 = 60;
/// Derived minimum session timeout is this many ticks.
pub const MIN_SESSION_TIMEOUT_TICKS: u32 = 2;
/// Derived maximum session timeout is this many ticks.
pub const MAX_SESSION_TIMEOUT_TICKS: u32 = 20;
pub const DEFAULT_GLOBAL_OUTSTANDING_LIMIT: u32 = 1000;
pub const DEFAULT_SNAP_COUNT: u32 = 100_000;
/// ZooKeeper's `SyncRequestProcessor` resets smaller snapCount values to 2.
pub const MIN_SNAP_COUNT: u32 = 2;
/// ZooKeeper's `zookeeper.preAllocSize`, in KiB (64 MiB).
pub const DEFAULT_PRE_ALLOC_SIZE_KIB: u64 = 65_536;
pub const DEFAULT_SNAP_RETAIN_COUNT: u32 = 3;
/// `PurgeTxnLog` refuses to keep fewer snapshots; `QuorumPeerConfig` resets
/// smaller values to this with a warning.
pub const MIN_SNAP_RETAIN_COUNT: u32 = 3;
/// `jute.maxbuffer` default: 0xfffff bytes (1 MiB - 1).
pub const DEFAULT_JUTE_MAXBUFFER: usize = 0xfffff;
/// The listen backlog ZooKeeper reports in `conf` when none is configured.
const CLIENT_PORT_LISTEN_BACKLOG_UNSET: i32 = -1;

/// Every four-letter word warden knows, in ZooKeeper's spelling.
pub const KNOWN_FOUR_LETTER_WORDS: [&str; 18] = [
    "ruok", "srvr", "stat", "mntr", "conf", "cons", "crst", "srst", "envi", "wchs", "wchc", "wchp",
    "dump", "isro", "dirs", "gtmk", "stmk", "hash",
];

/// ZooKeeper settings warden accepts in a file but does not act on. They get a
/// gentler warning than a misspelt key, since a real zoo.cfg often has them.
const IGNORED_ZOOKEEPER_KEYS: [&str; 24] = [
    "secureClientPort",
    "secureClientPortAddress",
    "clientPortListenBacklog",
    "observerMasterPort",
    "localSessionsEnabled",
    "localSessionsUpgradingEnabled",
    "connectToLearnerMasterLimit",
    "electionAlg",
    "quorumListenOnAllIPs",
    "syncEnabled",
    "standaloneEnabled",
    "reconfigEnabled",
    "dynamicConfigFile",
    "sslQuorum",
    "portUnification",
    "metricsProvider.className",
    "metricsProvider.httpPort",
    "metricsProvider.exportJvmInfo",
    "admin.enableServer",
    "admin.serverAddress",
    "admin.serverPort",
    "multiAddress.enabled",
    "serverCnxnFactory",
    "audit.enable",
];

// ---------------------------------------------------------------------------
// Errors and provenance
// ---------------------------------------------------------------------------

/// Where a setting's value came from; errors and warnings quote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A zoo.cfg line (1-based; the first line of a continued line).
    Line(usize),
    /// A command-line flag, spelt with its dashes (`--tick-time`).
    Flag(&'static str),
    /// Computed from other settings (session timeouts from tickTime).
    Derived,
}

#[derive(Debug)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A setting has a value warden cannot use.
    Invalid {
        /// The key as written in the file (or the canonical zoo.cfg key for a flag).
        key: String,
        value: String,
        origin: Origin,
        /// The file the line belongs to, when known.
        file: Option<PathBuf>,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, value: &str, origin: &Origin, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            origin: origin.clone(),
            file: None,
            reason: reason.into(),
        }
    }

    /// Attaches the file path to errors that point at one of its lines.
    fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Invalid {
                key,
                value,
                origin: origin @ Origin::Line(_),
                file: None,
                reason,
            } => ConfigError::Invalid {
                key,
                value,
                origin,
                file: Some(path.to_path_buf()),
                reason,
            },
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Invalid {
                key,
                value,
                origin,
                file,
                reason,
            } => match origin {
                Origin::Line(line) => {
                    if let Some(path) = file {
                        write!(f, "{}: ", path.display())?;
                    }
                    write!(
                        f,
                        "line {line}: invalid value '{value}' for {key}: {reason}"
                    )
                }
                Origin::Flag(flag) => {
                    write!(f, "invalid value '{value}' for {flag} ({key}): {reason}")
                }
                Origin::Derived => {
                    write!(f, "invalid derived value '{value}' for {key}: {reason}")
                }
            },
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            ConfigError::Invalid { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Small value types
// ---------------------------------------------------------------------------

/// Whether a server votes (participant) or only follows (observer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerType {
    #[default]
    Participant,
    Observer,
}

impl PeerType {
    fn parse(text: &str) -> Option<PeerType> {
        // ZooKeeper lower-cases before comparing.
        match text.to_ascii_lowercase().as_str() {
            "participant" => Some(PeerType::Participant),
            "observer" => Some(PeerType::Observer),
            _ => None,
        }
    }
}

impl fmt::Display for PeerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerType::Participant => "participant",
            PeerType::Observer => "observer",
        })
    }
}

/// The set of four-letter words a client may send (`4lw.commands.whitelist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourLetterWhitelist {
    /// Bit i set = `KNOWN_FOUR_LETTER_WORDS[i]` allowed.
    allowed_mask: u32,
}

impl FourLetterWhitelist {
    /// Every known word (`*`).
    pub fn all() -> Self {
        FourLetterWhitelist {
            allowed_mask: (1u32 << KNOWN_FOUR_LETTER_WORDS.len()) - 1,
        }
    }

    /// ZooKeeper's default when the key is absent: only `srvr`.
    pub fn srvr_only() -> Self {
        let mut whitelist = FourLetterWhitelist { allowed_mask: 0 };
        whitelist.insert("srvr");
        whitelist
    }

    /// Parses a comma-separated list; `*` anywhere means every word. Like
    /// ZooKeeper, `srvr` is always allowed because zkServer.sh status uses it.
    /// Returns the offending word on an unknown one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut whitelist = Self::srvr_only();
        for word in text
            .split(',')
            .map(str::trim)
            .filter(|word| !word.is_empty())
        {
            if word == "*" {
                return Ok(Self::all());
            }
            if !whitelist.insert(word) {
                return Err(word.to_string());
            }
        }
        Ok(whitelist)
    }

    fn insert(&mut self, word: &str) -> bool {
        match KNOWN_FOUR_LETTER_WORDS
            .iter()
            .position(|known| *known == word)
        {
            Some(index) => {
                self.allowed_mask |= 1 << index;
                true
            }
            None => false,
        }
    }

    pub fn allows(&self, word: &str) -> bool {
        KNOWN_FOUR_LETTER_WORDS
            .iter()
            .position(|known| *known == word)
            .is_some_and(|index| self.allowed_mask & (1 << index) != 0)
    }

    /// The allowed words, in `KNOWN_FOUR_LETTER_WORDS` order (for logging).
    pub fn words(&self) -> Vec<&'static str> {
        KNOWN_FOUR_LETTER_WORDS
            .iter()
            .copied()
            .filter(|word| self.allows(word))
            .collect()
    }
}

impl Default for FourLetterWhitelist {
    fn default() -> Self {
        Self::srvr_only()
    }
}

/// The client endpoint after `;` in a `server.N` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEndpoint {
    /// Host name or IP literal as written (not resolved); `0.0.0.0` when omitted.
    pub host: String,
    pub port: u16,
}

/// One `server.N=host:quorumPort:electionPort[:type][;[clientAddress:]clientPort]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// N: the server id, matching that server's `myid` file.
    pub id: u64,
    /// Host name or IP literal as written (IPv6 without brackets); not resolved here.
    pub host: String,
    /// Port followers use to connect to the leader.
    pub quorum_port: u16,
    /// Port used for leader election.
    pub election_port: u16,
    pub peer_type: PeerType,
    pub client: Option<ClientEndpoint>,
}

// ---------------------------------------------------------------------------
// The resolved configuration
// ---------------------------------------------------------------------------

/// The final, validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub tick_time_ms: u32,
    /// Ticks a follower may take to connect and sync to a leader.
    pub init_limit_ticks: u32,
    /// Ticks a follower may lag behind the leader.
    pub sync_limit_ticks: u32,
    /// Snapshots (and the transaction log unless `data_log_dir` differs).
    pub data_dir: PathBuf,
    /// Transaction log directory; equals `data_dir` unless set.
    pub data_log_dir: PathBuf,
    /// 0 asks the OS for an ephemeral port (useful in tests), as in ZooKeeper.
    pub client_port: u16,
    pub client_port_address: IpAddr,
    /// Concurrent connections per client IP; 0 = unlimited.
    pub max_client_cnxns: u32,
    /// Bounds on the negotiated session timeout; both fit in an i32 because
    /// the wire protocol carries the timeout as one.
    pub session_timeout_ms_min: u32,
    pub session_timeout_ms_max: u32,
    /// Requests queued across all connections before reads are throttled.
    pub global_outstanding_limit: u32,
    /// Transactions between snapshots.
    pub snap_count: u32,
    /// Transaction log files grow in steps of this many KiB.
    pub pre_alloc_size_kib: u64,
    /// Snapshots kept by autopurge; at least 3.
    pub autopurge_snap_retain_count: u32,
    /// How often autopurge runs; None = disabled.
    pub autopurge_purge_interval: Option<Duration>,
    pub four_letter_words: FourLetterWhitelist,
    /// Largest request or response payload, in bytes.
    pub jute_maxbuffer: usize,
    /// Enables CreateTTL / container extensions (and the ephemeral-owner TTL encoding).
    pub extended_types_enabled: bool,
    /// `user:base64(sha1(user:password))` that authenticates as super user.
    pub super_digest: Option<String>,
    /// fsync the transaction log before acknowledging writes.
    pub force_sync: bool,
    /// Shard cores to run on; 0 = one per CPU the process may use (its
    /// affinity mask, fewer under a CPU quota).
    pub cores: usize,
    pub peer_type: PeerType,
    /// Ensemble members; empty = standalone.
    pub servers: Vec<ServerSpec>,
    /// This server's id. Not a zoo.cfg key: ZooKeeper reads it from
    /// `dataDir/myid`; 0 = standalone. The caller sets it if it needs to.
    pub server_id: u64,
}

impl Default for Config {
    /// The embedded default: standalone, clients on 0.0.0.0:2181, data in ./data.
    fn default() -> Self {
        Config {
            tick_time_ms: DEFAULT_TICK_TIME_MS,
            init_limit_ticks: DEFAULT_INIT_LIMIT_TICKS,
            sync_limit_ticks: DEFAULT_SYNC_LIMIT_TICKS,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            data_log_dir: PathBuf::from(DEFAULT_DATA_DIR),
            client_port: DEFAULT_CLIENT_PORT,
            client_port_address: DEFAULT_CLIENT_PORT_ADDRESS,
            max_client_cnxns: DEFAULT_MAX_CLIENT_CNXNS,
            session_timeout_ms_min: DEFAULT_TICK_TIME_MS * MIN_SESSION_TIMEOUT_TICKS,
            session_timeout_ms_max: DEFAULT_TICK_TIME_MS * MAX_SESSION_TIMEOUT_TICKS,
            global_outstanding_limit: DEFAULT_GLOBAL_OUTSTANDING_LIMIT,
            snap_count: DEFAULT_SNAP_COUNT,
            pre_alloc_size_kib: DEFAULT_PRE_ALLOC_SIZE_KIB,
            autopurge_snap_retain_count: DEFAULT_SNAP_RETAIN_COUNT,
            autopurge_purge_interval: None,
            four_letter_words: FourLetterWhitelist::default(),
            jute_maxbuffer: DEFAULT_JUTE_MAXBUFFER,
            extended_types_enabled: false,
            super_digest: None,
            force_sync: true,
            cores: 0,
            peer_type: PeerType::Participant,
            servers: Vec::new(),
            server_id: 0,
        }
    }
}

impl Config {
    /// Key/value pairs in the order ZooKeeper's `conf` four-letter word prints
    /// them (`ZooKeeperServer.dumpConf`). Differences from ZooKeeper: no
    /// `secureClientPort`, `dataDirSize` or `dataLogSize` (warden has no TLS
    /// port and this module does no I/O), `clientPortAddress` is added, and the
    /// directories are printed as configured rather than made absolute.
    pub fn to_zoo_cfg_lines(&self) -> Vec<(String, String)> {
        let pairs: [(&str, String); 10] = [
            ("clientPort", self.client_port.to_string()),
            ("clientPortAddress", self.client_port_address.to_string()),
            ("dataDir", self.data_dir.display().to_string()),
            ("dataLogDir", self.data_log_dir.display().to_string()),
            ("tickTime", self.tick_time_ms.to_string()),
            ("maxClientCnxns", self.max_client_cnxns.to_string()),
            ("minSessionTimeout", self.session_timeout_ms_min.to_string()),
            ("maxSessionTimeout", self.session_timeout_ms_max.to_string()),
            (
                "clientPortListenBacklog",
                CLIENT_PORT_LISTEN_BACKLOG_UNSET.to_string(),
            ),
            ("serverId", self.server_id.to_string()),
        ];
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Partial settings: what a file or the flags set
// ---------------------------------------------------------------------------

/// A value plus where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
    /// The key as written (aliases differ from the canonical name).
    pub key: String,
    /// The raw text, for error messages about cross-setting checks.
    pub raw: String,
}

macro_rules! config_overrides {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// The settings one source (a file, or the flags) gave explicitly; each
        /// field is None when that source does not mention the key.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct ConfigOverrides {
            $($(#[$doc])* pub $field: Option<Sourced<$ty>>,)*
        }

        impl ConfigOverrides {
            /// Lays `later` over `self`: whatever `later` sets wins.
            pub fn overlay(&mut self, later: ConfigOverrides) {
                $(if later.$field.is_some() {
                    self.$field = later.$field;
                })*
            }
        }
    };
}

config_overrides! {
    tick_time_ms: u32,
    init_limit_ticks: u32,
    sync_limit_ticks: u32,
    data_dir: PathBuf,
    data_log_dir: PathBuf,
    client_port: u16,
    client_port_address: IpAddr,
    max_client_cnxns: u32,
    /// None inside = `-1`: derive from tickTime.
    session_timeout_ms_min: Option<u32>,
    /// None inside = `-1`: derive from tickTime.
    session_timeout_ms_max: Option<u32>,
    global_outstanding_limit: u32,
    snap_count: u32,
    pre_alloc_size_kib: u64,
    autopurge_snap_retain_count: u32,
    /// Duration::ZERO = disabled.
    autopurge_purge_interval: Duration,
    four_letter_words: FourLetterWhitelist,
    jute_maxbuffer: usize,
    extended_types_enabled: bool,
    super_digest: String,
    force_sync: bool,
    cores: usize,
    peer_type: PeerType,
}

/// The outcome of parsing one zoo.cfg text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedConfig {
    pub settings: ConfigOverrides,
    /// `server.N` lines in file order.
    pub servers: Vec<ServerSpec>,
    /// Unknown or repeated keys, each naming key and line; log with tracing::warn.
    pub warnings: Vec<String>,
}

impl ParsedConfig {
    /// Defaults + this file, with dependent settings derived and checked
    /// (no flags). Warnings stay in `self.warnings`.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        build_config(&self.settings, self.servers.clone())
    }
}

// ---------------------------------------------------------------------------
// Known keys
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    TickTime,
    InitLimit,
    SyncLimit,
    DataDir,
    DataLogDir,
    ClientPort,
    ClientPortAddress,
    MaxClientCnxns,
    MinSessionTimeout,
    MaxSessionTimeout,
    GlobalOutstandingLimit,
    SnapCount,
    PreAllocSize,
    SnapRetainCount,
    PurgeInterval,
    FourLetterWhitelist,
    JuteMaxbuffer,
    ExtendedTypesEnabled,
    SuperDigest,
    ForceSync,
    Cores,
    PeerType,
}

impl Key {
    /// The canonical zoo.cfg spelling.
    fn name(self) -> &'static str {
        match self {
            Key::TickTime => "tickTime",
            Key::InitLimit => "initLimit",
            Key::SyncLimit => "syncLimit",
            Key::DataDir => "dataDir",
            Key::DataLogDir => "dataLogDir",
            Key::ClientPort => "clientPort",
            Key::ClientPortAddress => "clientPortAddress",
            Key::MaxClientCnxns => "maxClientCnxns",
            Key::MinSessionTimeout => "minSessionTimeout",
            Key::MaxSessionTimeout => "maxSessionTimeout",
            Key::GlobalOutstandingLimit => "globalOutstandingLimit",
            Key::SnapCount => "snapCount",
            Key::PreAllocSize => "preAllocSize",
            Key::SnapRetainCount => "autopurge.snapRetainCount",
            Key::PurgeInterval => "autopurge.purgeInterval",
            Key::FourLetterWhitelist => "4lw.commands.whitelist",
            Key::JuteMaxbuffer => "jute.maxbuffer",
            Key::ExtendedTypesEnabled => "zookeeper.extendedTypesEnabled",
            Key::SuperDigest => "superDigest",
            Key::ForceSync => "forceSync",
            Key::Cores => "cores",
            Key::PeerType => "peerType",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Key::TickTime => "--tick-time",
            Key::InitLimit => "--init-limit",
            Key::SyncLimit => "--sync-limit",
            Key::DataDir => "--data-dir",
            Key::DataLogDir => "--data-log-dir",
            Key::ClientPort => "--client-port",
            Key::ClientPortAddress => "--client-port-address",
            Key::MaxClientCnxns => "--max-client-cnxns",
            Key::MinSessionTimeout => "--min-session-timeout",
            Key::MaxSessionTimeout => "--max-session-timeout",
            Key::GlobalOutstandingLimit => "--global-outstanding-limit",
            Key::SnapCount => "--snap-count",
            Key::PreAllocSize => "--pre-alloc-size",
            Key::SnapRetainCount => "--autopurge-snap-retain-count",
            Key::PurgeInterval => "--autopurge-purge-interval",
            Key::FourLetterWhitelist => "--4lw-commands-whitelist",
            Key::JuteMaxbuffer => "--jute-maxbuffer",
            Key::ExtendedTypesEnabled => "--extended-types-enabled",
            Key::SuperDigest => "--super-digest",
            Key::ForceSync => "--force-sync",
            Key::Cores => "--cores",
            Key::PeerType => "--peer-type",
        }
    }

    /// Looks up a key as written in a file, aliases included. ZooKeeper turns
    /// keys it does not know into `zookeeper.`-prefixed system properties, so
    /// a file may spell the system-property settings either way.
    fn from_file_key(name: &str) -> Option<Key> {
        let key = match name {
            "tickTime" => Key::TickTime,
            "initLimit" => Key::InitLimit,
            "syncLimit" => Key::SyncLimit,
            "dataDir" => Key::DataDir,
            "dataLogDir" => Key::DataLogDir,
            "clientPort" => Key::ClientPort,
            "clientPortAddress" => Key::ClientPortAddress,
            "maxClientCnxns" => Key::MaxClientCnxns,
            "minSessionTimeout" => Key::MinSessionTimeout,
            "maxSessionTimeout" => Key::MaxSessionTimeout,
            "globalOutstandingLimit" | "zookeeper.globalOutstandingLimit" => {
                Key::GlobalOutstandingLimit
            }
            "snapCount" | "zookeeper.snapCount" => Key::SnapCount,
            "preAllocSize" | "zookeeper.preAllocSize" => Key::PreAllocSize,
            "autopurge.snapRetainCount" => Key::SnapRetainCount,
            "autopurge.purgeInterval" => Key::PurgeInterval,
            "4lw.commands.whitelist" | "zookeeper.4lw.commands.whitelist" => {
                Key::FourLetterWhitelist
            }
            "jute.maxbuffer" => Key::JuteMaxbuffer,
            "zookeeper.extendedTypesEnabled" | "extendedTypesEnabled" => Key::ExtendedTypesEnabled,
            "superDigest"
            | "DigestAuthenticationProvider.superDigest"
            | "zookeeper.DigestAuthenticationProvider.superDigest" => Key::SuperDigest,
            "forceSync" | "zookeeper.forceSync" => Key::ForceSync,
            "cores" => Key::Cores,
            "peerType" => Key::PeerType,
            _ => return None,
        };
        Some(key)
    }
}

// ---------------------------------------------------------------------------
// Value parsing, shared by file and flags
// ---------------------------------------------------------------------------

const JAVA_INT_MAX: i64 = i32::MAX as i64;

/// A decimal integer (optional sign, as Java's `Integer.parseInt`) within bounds.
fn parse_integer(text: &str, min: i64, max: i64) -> Result<i64, String> {
    let number: i64 = text
        .parse()
        .map_err(|_| "expected an integer".to_string())?;
    if number < min || number > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(number)
}

fn parse_bool_true_false(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("expected yes or no".to_string()),
    }
}

/// `jute.maxbuffer` is read by Java's `Integer.getInteger`, which also
/// accepts hex; the documented default is written `0xfffff`.
fn parse_jute_maxbuffer(text: &str) -> Result<usize, String> {
    let number = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).map_err(|_| "expected an integer".to_string())?,
        None => text
            .parse()
            .map_err(|_| "expected an integer".to_string())?,
    };
    if !(1..=JAVA_INT_MAX).contains(&number) {
        return Err(format!("must be between 1 and {JAVA_INT_MAX}"));
    }
    usize::try_from(number).map_err(|_| "too large for this platform".to_string())
}

/// `autopurge.purgeInterval`: a bare number is hours (ZooKeeper's historical
/// unit); `ms`, `s`, `m`, `h`, `d` suffixes as in ZooKeeper's
/// `Time.parseTimeInterval`. Zero or negative disables purging.
fn parse_purge_interval(text: &str) -> Result<Duration, String> {
    const SECOND_MS: i64 = 1000;
    const HOUR_MS: i64 = 3600 * SECOND_MS;
    let bad =
        || "expected an integer number of hours or a number with ms/s/m/h/d suffix".to_string();
    let (number_text, unit_ms) = if text.ends_with(|c: char| c.is_ascii_digit()) {
        (text, HOUR_MS)
    } else if let Some(number) = text.strip_suffix("ms").or_else(|| text.strip_suffix("MS")) {
        (number, 1)
    } else {
        let suffix = text.chars().last().ok_or_else(bad)?;
        let number = &text[..text.len() - suffix.len_utf8()];
        let unit_ms = match suffix.to_ascii_uppercase() {
            'S' => SECOND_MS,
            'M' => 60 * SECOND_MS,
            'H' => HOUR_MS,
            'D' => 24 * HOUR_MS,
            _ => return Err(bad()),
        };
        (number, unit_ms)
    };
    let count: i64 = number_text.parse().map_err(|_| bad())?;
    if count <= 0 {
        return Ok(Duration::ZERO);
    }
    let millis = count
        .checked_mul(unit_ms)
        .ok_or_else(|| "interval too large".to_string())?;
    Ok(Duration::from_millis(millis.unsigned_abs()))
}

/// An IP literal; IPv6 may be bracketed. Host names other than `localhost`
/// are refused because this pure parser does no DNS lookups.
fn parse_ip_address(text: &str) -> Result<IpAddr, String> {
    if text.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    unbracketed
        .parse()
        .map_err(|_| "expected an IP address literal (host names are not resolved)".to_string())
}

fn parse_super_digest(text: &str) -> Result<String, String> {
    match text.split_once(':') {
        Some((user, digest)) if !user.is_empty() && !digest.is_empty() => Ok(text.to_string()),
        _ => Err("expected user:base64digest".to_string()),
    }
}

fn parse_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(PathBuf::from(text))
}

/// Stores `value` in `slot`; a second value for the same setting from the
/// same file wins, as in `Properties`, but earns a warning.
fn store<T>(
    slot: &mut Option<Sourced<T>>,
    value: T,
    key_as_written: &str,
    raw: &str,
    origin: &Origin,
    warnings: &mut Vec<String>,
) {
    if let (Some(previous), Origin::Line(line)) = (slot.as_ref(), origin) {
        if let Origin::Line(previous_line) = previous.origin {
            warnings.push(format!(
                "line {line}: {key_as_written} repeats {} from line {previous_line}; the later value wins",
                previous.key
            ));
        }
    }
    *slot = Some(Sourced {
        value,
        origin: origin.clone(),
        key: key_as_written.to_string(),
        raw: raw.to_string(),
    });
}

/// Validates `raw` for `key` and records it in `settings`. The one code path
/// for both file lines and flags, so both obey the same rules.
fn apply_setting(
    settings: &mut ConfigOverrides,
    key: Key,
    key_as_written: &str,
    raw: &str,
    origin: &Origin,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::invalid(key_as_written, raw, origin, reason);
    let location = match origin {
        Origin::Line(line) => format!("line {line}"),
        Origin::Flag(flag) => flag.to_string(),
        Origin::Derived => "derived".to_string(),
    };
    macro_rules! set {
        ($field:ident, $value:expr) => {
            store(
                &mut settings.$field,
                $value,
                key_as_written,
                raw,
                origin,
                warnings,
            )
        };
    }
    match key {
        Key::TickTime => {
            let ms = parse_integer(raw, 1, JAVA_INT_MAX).map_err(invalid)?;
            set!(tick_time_ms, ms as u32);
        }
        Key::InitLimit => {
            let ticks = parse_integer(raw, 1, JAVA_INT_MAX).map_err(invalid)?;
            set!(init_limit_ticks, ticks as u32);
        }
        Key::SyncLimit => {
            let ticks = parse_integer(raw, 1, JAVA_INT_MAX).map_err(invalid)?;
            set!(sync_limit_ticks, ticks as u32);
        }
        Key::DataDir => {
            let path = parse_path(raw).map_err(invalid)?;
            set!(data_dir, path);
        }
        Key::DataLogDir => {
            let path = parse_path(raw).map_err(invalid)?;
            set!(data_log_dir, path);
        }
        Key::ClientPort => {
            let port = parse_integer(raw, 0, u16::MAX.into()).map_err(invalid)?;
            set!(client_port, port as u16);
        }
        Key::ClientPortAddress => {
            let address = parse_ip_address(raw).map_err(invalid)?;
            set!(client_port_address, address);
        }
        Key::MaxClientCnxns => {
            let count = parse_integer(raw, 0, JAVA_INT_MAX).map_err(invalid)?;
            set!(max_client_cnxns, count as u32);
        }
        Key::MinSessionTimeout | Key::MaxSessionTimeout => {
            let ms = parse_integer(raw, -1, JAVA_INT_MAX).map_err(invalid)?;
            let explicit_ms = match ms {
                -1 => None,
                0 => {
                    return Err(invalid(
                        "must be positive, or -1 for the default".to_string(),
                    ))
                }
                ms => Some(ms as u32),
            };
            if key == Key::MinSessionTimeout {
                set!(session_timeout_ms_min, explicit_ms);
            } else {
                set!(session_timeout_ms_max, explicit_ms);
            }
        }
        Key::GlobalOutstandingLimit => {
            let limit = parse_integer(raw, 1, JAVA_INT_MAX).map_err(invalid)?;
            set!(global_outstanding_limit, limit as u32);
        }
        Key::SnapCount => {
            let mut count = parse_integer(raw, i64::MIN, JAVA_INT_MAX).map_err(invalid)?;
            if count < i64::from(MIN_SNAP_COUNT) {
                // ZooKeeper's SyncRequestProcessor resets it rather than failing.
                warnings.push(format!(
                    "{location}: {key_as_written}={raw} is below {MIN_SNAP_COUNT}; using {MIN_SNAP_COUNT}"
                ));
                count = MIN_SNAP_COUNT.into();
            }
            set!(snap_count, count as u32);
        }
        Key::PreAllocSize => {
            let kib = parse_integer(raw, 1, i64::MAX / 1024).map_err(invalid)?;
            set!(pre_alloc_size_kib, kib as u64);
        }
        Key::SnapRetainCount => {
            let mut count = parse_integer(raw, i64::MIN, JAVA_INT_MAX).map_err(invalid)?;
            if count < i64::from(MIN_SNAP_RETAIN_COUNT) {
                // QuorumPeerConfig resets it with a warning rather than failing.
                warnings.push(format!(
                    "{location}: {key_as_written}={raw} is below {MIN_SNAP_RETAIN_COUNT}; using {MIN_SNAP_RETAIN_COUNT}"
                ));
                count = MIN_SNAP_RETAIN_COUNT.into();
            }
            set!(autopurge_snap_retain_count, count as u32);
        }
        Key::PurgeInterval => {
            let interval = parse_purge_interval(raw).map_err(invalid)?;
            set!(autopurge_purge_interval, interval);
        }
        Key::FourLetterWhitelist => {
            let whitelist = FourLetterWhitelist::parse(raw).map_err(|word| {
                invalid(format!(
                    "unknown four-letter word '{word}' (known: {}, or *)",
                    KNOWN_FOUR_LETTER_WORDS.join(",")
                ))
            })?;
            set!(four_letter_words, whitelist);
        }
        Key::JuteMaxbuffer => {
            let bytes = parse_jute_maxbuffer(raw).map_err(invalid)?;
            set!(jute_maxbuffer, bytes);
        }
        Key::ExtendedTypesEnabled => {
            let enabled = parse_bool_true_false(raw).map_err(invalid)?;
            set!(extended_types_enabled, enabled);
        }
        Key::SuperDigest => {
            let digest = parse_super_digest(raw).map_err(invalid)?;
            set!(super_digest, digest);
        }
        Key::ForceSync => {
            let enabled = parse_yes_no(raw).map_err(invalid)?;
            set!(force_sync, enabled);
        }
        Key::Cores => {
            let cores = parse_integer(raw, 0, i64::from(u16::MAX)).map_err(invalid)?;
            set!(cores, cores as usize);
        }
        Key::PeerType => {
            let peer_type = PeerType::parse(raw)
                .ok_or_else(|| invalid("expected participant or observer".to_string()))?;
            set!(peer_type, peer_type);
        }
    }
    Ok(())
}

/// Splits `host:rest` the way ZooKeeper's `ConfigUtils.getHostAndPort` does:
/// a bracketed IPv6 host keeps its colons.
fn split_host_and_ports(text: &str) -> Result<Vec<&str>, String> {
    if let Some(after_bracket) = text.strip_prefix('[') {
        let close = after_bracket
            .find(']')
            .ok_or_else(|| format!("'{text}' starts with '[' but has no matching ']'"))?;
        let host = &after_bracket[..close];
        let rest = &after_bracket[close + 1..];
        if rest.is_empty() {
            return Ok(vec![host]);
        }
        let ports = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("expected ':' after ']' in '{text}'"))?;
        let mut parts = vec![host];
        parts.extend(ports.split(':'));
        Ok(parts)
    } else {
        Ok(text.split(':').collect())
    }
}

fn parse_port(text: &str, what: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port as u16),
        _ => Err(format!(
            "{what} '{text}' is not a port number between 1 and 65535"
        )),
    }
}

/// Parses the value of a `server.N` line.
fn parse_server_spec(id: u64, text: &str) -> Result<ServerSpec, String> {
    const FORMAT: &str =
        "expected host:quorumPort:electionPort[:participant|observer][;[clientAddress:]clientPort]";
    let mut sections = text.split(';');
    let server_section = sections.next().unwrap_or_default().trim();
    let client_section = sections.next().map(str::trim);
    if sections.next().is_some() {
        return Err("a secure client port section is not supported by warden".to_string());
    }
    if server_section.contains('|') {
        return Err("multiple addresses per server are not supported by warden".to_string());
    }
    let parts = split_host_and_ports(server_section)?;
    if !(3..=4).contains(&parts.len()) {
        return Err(FORMAT.to_string());
    }
    let host = parts[0].trim();
    if host.is_empty() {
        return Err(format!("missing host; {FORMAT}"));
    }
    let quorum_port = parse_port(parts[1].trim(), "quorum port")?;
    let election_port = parse_port(parts[2].trim(), "election port")?;
    if quorum_port == election_port {
        return Err("quorum and election ports must differ".to_string());
    }
    let peer_type = match parts.get(3) {
        Some(type_text) => PeerType::parse(type_text.trim()).ok_or_else(|| {
            format!(
                "unknown server type '{}'; expected participant or observer",
                type_text.trim()
            )
        })?,
        None => PeerType::Participant,
    };
    let client = match client_section {
        None | Some("") => None,
        Some(client_text) => {
            let client_parts = split_host_and_ports(client_text)?;
            let (client_host, client_port_text) = match client_parts.as_slice() {
                [port] => ("0.0.0.0", *port),
                [host, port] if !host.trim().is_empty() => (host.trim(), *port),
                _ => return Err(format!("client section '{client_text}': {FORMAT}")),
            };
            Some(ClientEndpoint {
                host: client_host.to_string(),
                port: parse_port(client_port_text.trim(), "client port")?,
            })
        }
    };
    Ok(ServerSpec {
        id,
        host: host.to_string(),
        quorum_port,
        election_port,
        peer_type,
        client,
    })
}

// ---------------------------------------------------------------------------
// The Properties text format
// ---------------------------------------------------------------------------

/// One logical line: physical lines joined at trailing backslashes.
struct LogicalLine {
    /// 1-based number of its first physical line.
    number: usize,
    text: String,
}

/// Whitespace as `Properties` sees it.
fn is_properties_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

/// An odd number of trailing backslashes continues the line.
fn ends_with_continuation(text: &str) -> bool {
    text.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut physical = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    let mut lines = Vec::new();
    while let Some((number, raw)) = physical.next() {
        let start = raw.trim_start_matches(is_properties_space);
        // Only the first physical line can make a comment; a continuation
        // line starting with '#' is data.
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        let mut joined = String::from(start);
        while ends_with_continuation(&joined) {
            joined.pop();
            match physical.next() {
                Some((_, next)) => joined.push_str(next.trim_start_matches(is_properties_space)),
                None => break,
            }
        }
        lines.push(LogicalLine {
            number,
            text: joined,
        });
    }
    lines
}

/// Splits a logical line into raw (still escaped) key and value, following
/// `Properties.load0`: the key ends at the first unescaped `=`, `:` or
/// whitespace; whitespace and at most one `=`/`:` separate it from the value.
fn split_key_value(line: &str) -> (&str, &str) {
    let mut key_end = line.len();
    let mut value_start = line.len();
    let mut has_separator = false;
    let mut preceding_backslash = false;
    for (index, c) in line.char_indices() {
        if !preceding_backslash && (c == '=' || c == ':') {
            key_end = index;
            value_start = index + 1;
            has_separator = true;
            break;
        }
        if !preceding_backslash && is_properties_space(c) {
            key_end = index;
            value_start = index + 1;
            break;
        }
        preceding_backslash = c == '\\' && !preceding_backslash;
    }
    let mut rest = &line[value_start..];
    loop {
        match rest.chars().next() {
            Some(c) if is_properties_space(c) => rest = &rest[1..],
            Some(c) if !has_separator && (c == '=' || c == ':') => {
                has_separator = true;
                rest = &rest[1..];
            }
            _ => break,
        }
    }
    (&line[..key_end], rest)
}

/// Resolves `Properties` escapes. Works in UTF-16 units because `\uXXXX`
/// escapes may encode surrogate pairs.
fn unescape(text: &str) -> Result<String, String> {
    let mut units: Vec<u16> = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buffer = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buffer));
            continue;
        }
        let escaped = match chars.next() {
            Some(escaped) => escaped,
            None => break, // a lone trailing backslash is dropped, as in Java
        };
        let replacement = match escaped {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\u{c}',
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = if hex.len() == 4 {
                    u16::from_str_radix(&hex, 16).ok()
                } else {
                    None
                };
                match unit {
                    Some(unit) => {
                        units.push(unit);
                        continue;
                    }
                    None => return Err("malformed \\uXXXX escape".to_string()),
                }
            }
            other => other,
        };
        let mut buffer = [0u16; 2];
        units.extend_from_slice(replacement.encode_utf16(&mut buffer));
    }
    String::from_utf16(&units).map_err(|_| "\\u escape leaves an unpaired surrogate".to_string())
}

/// Parses zoo.cfg text. Pure: no I/O, no DNS. Invalid values are errors;
/// unknown keys and repeated keys are warnings in the result.
pub fn parse_zoo_cfg(text: &str) -> Result<ParsedConfig, ConfigError> {
    let mut parsed = ParsedConfig::default();
    let mut server_lines: Vec<(u64, usize)> = Vec::new();
    for line in logical_lines(text) {
        let origin = Origin::Line(line.number);
        let (raw_key, raw_value) = split_key_value(&line.text);
        let key = unescape(raw_key)
            .map_err(|reason| ConfigError::invalid(raw_key, raw_value, &origin, reason))?;
        let key = key.trim();
        let value = unescape(raw_value)
            .map_err(|reason| ConfigError::invalid(key, raw_value, &origin, reason))?;
        let value = value.trim();

        if let Some(id_text) = key.strip_prefix("server.") {
            let id = match id_text.parse::<u64>() {
                Ok(id) if id > 0 => id,
                _ => {
                    let reason = format!("server id '{id_text}' must be a positive integer");
                    return Err(ConfigError::invalid(key, value, &origin, reason));
                }
            };
            if let Some((_, first_line)) = server_lines.iter().find(|(seen, _)| *seen == id) {
                let reason =
                    format!("duplicate server id {id} (first defined at line {first_line})");
                return Err(ConfigError::invalid(key, value, &origin, reason));
            }
            let spec = parse_server_spec(id, value)
                .map_err(|reason| ConfigError::invalid(key, value, &origin, reason))?;
            server_lines.push((id, line.number));
            parsed.servers.push(spec);
        } else if let Some(known) = Key::from_file_key(key) {
            apply_setting(
                &mut parsed.settings,
                known,
                key,
                value,
                &origin,
                &mut parsed.warnings,
            )?;
        } else if IGNORED_ZOOKEEPER_KEYS.contains(&key)
            || key.starts_with("metricsProvider.")
            || key.starts_with("group.")
            || key.starts_with("weight.")
            || key.starts_with("ssl.")
            || key.starts_with("quorum.")
        {
            parsed.warnings.push(format!(
                "line {}: ZooKeeper key '{key}' is not supported by warden; ignored",
                line.number
            ));
        } else {
            parsed
                .warnings
                .push(format!("line {}: unknown key '{key}' ignored", line.number));
        }
    }
    Ok(parsed)
}

/// Reads a zoo.cfg file and parses it. ZooKeeper reads these files as
/// ISO-8859-1; warden reads UTF-8 and falls back to ISO-8859-1 for files that
/// are not valid UTF-8 (the two agree on ASCII). Errors and warnings name the file.
pub fn load_file(path: impl AsRef<Path>) -> Result<ParsedConfig, ConfigError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(not_utf8) => not_utf8
            .into_bytes()
            .iter()
            .map(|byte| char::from(*byte))
            .collect(),
    };
    let mut parsed = parse_zoo_cfg(&text).map_err(|error| error.in_file(path))?;
    for warning in &mut parsed.warnings {
        *warning = format!("{}: {warning}", path.display());
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// Merging and deriving
// ---------------------------------------------------------------------------

fn value_or<T: Clone>(slot: &Option<Sourced<T>>, default: T) -> T {
    slot.as_ref()
        .map_or(default, |sourced| sourced.value.clone())
}

/// A derived session timeout (`ticks` × tickTime) or an error blaming tickTime.
fn derive_session_timeout(
    settings: &ConfigOverrides,
    tick_time_ms: u32,
    ticks: u32,
    derived_key: &str,
) -> Result<u32, ConfigError> {
    let millis = u64::from(tick_time_ms) * u64::from(ticks);
    if millis > JAVA_INT_MAX as u64 {
        let reason = format!(
            "{derived_key} would be {ticks} x tickTime = {millis} ms, beyond {JAVA_INT_MAX}; set {derived_key} explicitly"
        );
        return Err(match &settings.tick_time_ms {
            Some(tick) => ConfigError::invalid(&tick.key, &tick.raw, &tick.origin, reason),
            None => ConfigError::invalid(
                Key::TickTime.name(),
                &tick_time_ms.to_string(),
                &Origin::Derived,
                reason,
            ),
        });
    }
    Ok(millis as u32)
}

/// Defaults + `settings`, dependent settings derived, cross-setting rules checked.
fn build_config(
    settings: &ConfigOverrides,
    servers: Vec<ServerSpec>,
) -> Result<Config, ConfigError> {
    let defaults = Config::default();
    let tick_time_ms = value_or(&settings.tick_time_ms, defaults.tick_time_ms);
    let data_dir = value_or(&settings.data_dir, defaults.data_dir);
    // As in QuorumPeerConfig: the log lives with the snapshots unless told otherwise.
    let data_log_dir = value_or(&settings.data_log_dir, data_dir.clone());

    let explicit_min = settings
        .session_timeout_ms_min
        .as_ref()
        .and_then(|s| s.value);
    let explicit_max = settings
        .session_timeout_ms_max
        .as_ref()
        .and_then(|s| s.value);
    let session_timeout_ms_min = match explicit_min {
        Some(ms) => ms,
        None => derive_session_timeout(
            settings,
            tick_time_ms,
            MIN_SESSION_TIMEOUT_TICKS,
            "minSessionTimeout",
        )?,
    };
    let session_timeout_ms_max = match explicit_max {
        Some(ms) => ms,
        None => derive_session_timeout(
            settings,
            tick_time_ms,
            MAX_SESSION_TIMEOUT_TICKS,
            "maxSessionTimeout",
        )?,
    };
    if session_timeout_ms_min > session_timeout_ms_max {
        // Blame the value somebody wrote; if both were written, the minimum.
        // Both derived cannot happen (2 x tick <= 20 x tick).
        let written_min = settings
            .session_timeout_ms_min
            .as_ref()
            .filter(|_| explicit_min.is_some());
        let written_max = settings
            .session_timeout_ms_max
            .as_ref()
            .filter(|_| explicit_max.is_some());
        let error = match (written_min, written_max) {
            (Some(min), _) => ConfigError::invalid(
                &min.key,
                &min.raw,
                &min.origin,
                format!("minSessionTimeout must not be larger than maxSessionTimeout ({session_timeout_ms_max} ms)"),
            ),
            (None, Some(max)) => ConfigError::invalid(
                &max.key,
                &max.raw,
                &max.origin,
                format!(
                    "maxSessionTimeout must not be smaller than minSessionTimeout \
                     ({session_timeout_ms_min} ms = {MIN_SESSION_TIMEOUT_TICKS} x tickTime)"
                ),
            ),
            (None, None) => ConfigError::invalid(
                "minSessionTimeout",
                &session_timeout_ms_min.to_string(),
                &Origin::Derived,
                "derived session timeouts are out of order",
            ),
        };
        return Err(error);
    }

    let peer_type = value_or(&settings.peer_type, PeerType::Participant);
    if let (PeerType::Observer, Some(sourced), true) =
        (peer_type, &settings.peer_type, servers.is_empty())
    {
        return Err(ConfigError::invalid(
            &sourced.key,
            &sourced.raw,
            &sourced.origin,
            "an observer needs server.N lines naming the ensemble",
        ));
    }

    let purge_interval = value_or(&settings.autopurge_purge_interval, Duration::ZERO);
    Ok(Config {
        tick_time_ms,
        init_limit_ticks: value_or(&settings.init_limit_ticks, defaults.init_limit_ticks),
        sync_limit_ticks: value_or(&settings.sync_limit_ticks, defaults.sync_limit_ticks),
        data_dir,
        data_log_dir,
        client_port: value_or(&settings.client_port, defaults.client_port),
        client_port_address: value_or(&settings.client_port_address, defaults.client_port_address),
        max_client_cnxns: value_or(&settings.max_client_cnxns, defaults.max_client_cnxns),
        session_timeout_ms_min,
        session_timeout_ms_max,
        global_outstanding_limit: value_or(
            &settings.global_outstanding_limit,
            defaults.global_outstanding_limit,
        ),
        snap_count: value_or(&settings.snap_count, defaults.snap_count),
        pre_alloc_size_kib: value_or(&settings.pre_alloc_size_kib, defaults.pre_alloc_size_kib),
        autopurge_snap_retain_count: value_or(
            &settings.autopurge_snap_retain_count,
            defaults.autopurge_snap_retain_count,
        ),
        autopurge_purge_interval: (!purge_interval.is_zero()).then_some(purge_interval),
        four_letter_words: value_or(&settings.four_letter_words, defaults.four_letter_words),
        jute_maxbuffer: value_or(&settings.jute_maxbuffer, defaults.jute_maxbuffer),
        extended_types_enabled: value_or(
            &settings.extended_types_enabled,
            defaults.extended_types_enabled,
        ),
        super_digest: settings
            .super_digest
            .as_ref()
            .map(|sourced| sourced.value.clone()),
        force_sync: value_or(&settings.force_sync, defaults.force_sync),
        cores: value_or(&settings.cores, defaults.cores),
        peer_type,
        servers,
        server_id: defaults.server_id,
    })
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Server flags. Every zoo.cfg setting has a flag named after its key in
/// kebab-case; flags override the file given with `--config`. Values are taken
/// as text so they pass through exactly the validation file values do.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerArgs {
    /// zoo.cfg-format file to read before applying the other flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter for tracing (error, warn, info, debug, trace, or a directive list).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// tickTime: the basic time unit in milliseconds [default: 2000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub tick_time: Option<String>,

    /// initLimit: ticks a follower may take to sync with the leader [default: 10].
    #[arg(long, value_name = "TICKS", allow_negative_numbers = true)]
    pub init_limit: Option<String>,

    /// syncLimit: ticks a follower may lag the leader [default: 5].
    #[arg(long, value_name = "TICKS", allow_negative_numbers = true)]
    pub sync_limit: Option<String>,

    /// dataDir: snapshot directory [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,

    /// dataLogDir: transaction log directory [default: dataDir].
    #[arg(long, value_name = "DIR")]
    pub data_log_dir: Option<String>,

    /// clientPort: port clients connect to [default: 2181].
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub client_port: Option<String>,

    /// clientPortAddress: IP address to listen on [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub client_port_address: Option<String>,

    /// maxClientCnxns: connections per client IP, 0 = unlimited [default: 60].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_client_cnxns: Option<String>,

    /// minSessionTimeout in ms; -1 = 2 x tickTime [default: -1].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub min_session_timeout: Option<String>,

    /// maxSessionTimeout in ms; -1 = 20 x tickTime [default: -1].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub max_session_timeout: Option<String>,

    /// globalOutstandingLimit: queued requests before throttling [default: 1000].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub global_outstanding_limit: Option<String>,

    /// snapCount: transactions between snapshots [default: 100000].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub snap_count: Option<String>,

    /// preAllocSize: transaction log preallocation step in KiB [default: 65536].
    #[arg(long, value_name = "KIB", allow_negative_numbers = true)]
    pub pre_alloc_size: Option<String>,

    /// autopurge.snapRetainCount: snapshots to keep, at least 3 [default: 3].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub autopurge_snap_retain_count: Option<String>,

    /// autopurge.purgeInterval: hours (or 30m, 1d, ...) between purges, 0 = off [default: 0].
    #[arg(long, value_name = "INTERVAL", allow_negative_numbers = true)]
    pub autopurge_purge_interval: Option<String>,

    /// 4lw.commands.whitelist: comma-separated four-letter words, or * [default: srvr].
    #[arg(long = "4lw-commands-whitelist", value_name = "WORDS")]
    pub four_lw_commands_whitelist: Option<String>,

    /// jute.maxbuffer: largest packet in bytes [default: 1048575].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub jute_maxbuffer: Option<String>,

    /// zookeeper.extendedTypesEnabled: allow TTL nodes [default: false].
    #[arg(long, value_name = "true|false")]
    pub extended_types_enabled: Option<String>,

    /// superDigest: user:base64(sha1(user:password)) that is super user.
    #[arg(long, value_name = "USER:DIGEST")]
    pub super_digest: Option<String>,

    /// forceSync: fsync the log before acknowledging writes [default: yes].
    #[arg(long, value_name = "yes|no")]
    pub force_sync: Option<String>,

    /// cores: shard cores to run on, 0 = all [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cores: Option<String>,

    /// peerType: participant or observer [default: participant].
    #[arg(long, value_name = "participant|observer")]
    pub peer_type: Option<String>,
}

impl Default for ServerArgs {
    /// No file, no overrides, log level info: resolves to `Config::default()`.
    fn default() -> Self {
        ServerArgs {
            config: None,
            log_level: "info".to_string(),
            tick_time: None,
            init_limit: None,
            sync_limit: None,
            data_dir: None,
            data_log_dir: None,
            client_port: None,
            client_port_address: None,
            max_client_cnxns: None,
            min_session_timeout: None,
            max_session_timeout: None,
            global_outstanding_limit: None,
            snap_count: None,
            pre_alloc_size: None,
            autopurge_snap_retain_count: None,
            autopurge_purge_interval: None,
            four_lw_commands_whitelist: None,
            jute_maxbuffer: None,
            extended_types_enabled: None,
            super_digest: None,
            force_sync: None,
            cores: None,
            peer_type: None,
        }
    }
}

impl ServerArgs {
    fn flag_values(&self) -> [(Key, Option<&String>); 22] {
        [
            (Key::TickTime, self.tick_time.as_ref()),
            (Key::InitLimit, self.init_limit.as_ref()),
            (Key::SyncLimit, self.sync_limit.as_ref()),
            (Key::DataDir, self.data_dir.as_ref()),
            (Key::DataLogDir, self.data_log_dir.as_ref()),
            (Key::ClientPort, self.client_port.as_ref()),
            (Key::ClientPortAddress, self.client_port_address.as_ref()),
            (Key::MaxClientCnxns, self.max_client_cnxns.as_ref()),
            (Key::MinSessionTimeout, self.min_session_timeout.as_ref()),
            (Key::MaxSessionTimeout, self.max_session_timeout.as_ref()),
            (
                Key::GlobalOutstandingLimit,
                self.global_outstanding_limit.as_ref(),
            ),
            (Key::SnapCount, self.snap_count.as_ref()),
            (Key::PreAllocSize, self.pre_alloc_size.as_ref()),
            (
                Key::SnapRetainCount,
                self.autopurge_snap_retain_count.as_ref(),
            ),
            (Key::PurgeInterval, self.autopurge_purge_interval.as_ref()),
            (
                Key::FourLetterWhitelist,
                self.four_lw_commands_whitelist.as_ref(),
            ),
            (Key::JuteMaxbuffer, self.jute_maxbuffer.as_ref()),
            (
                Key::ExtendedTypesEnabled,
                self.extended_types_enabled.as_ref(),
            ),
            (Key::SuperDigest, self.super_digest.as_ref()),
            (Key::ForceSync, self.force_sync.as_ref()),
            (Key::Cores, self.cores.as_ref()),
            (Key::PeerType, self.peer_type.as_ref()),
        ]
    }

    /// The settings the flags give, validated like file values.
    pub fn flag_overrides(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<ConfigOverrides, ConfigError> {
        let mut settings = ConfigOverrides::default();
        for (key, value) in self.flag_values() {
            if let Some(value) = value {
                let origin = Origin::Flag(key.flag());
                apply_setting(
                    &mut settings,
                    key,
                    key.name(),
                    value.trim(),
                    &origin,
                    warnings,
                )?;
            }
        }
        Ok(settings)
    }

    /// Defaults, then the `--config` file, then flags; then derived settings
    /// and cross-checks. Returns the warnings instead of logging them.
    pub fn resolve_with_warnings(&self) -> Result<(Config, Vec<String>), ConfigError> {
        let (mut settings, servers, mut warnings) = match &self.config {
            Some(path) => {
                let parsed = load_file(path)?;
                (parsed.settings, parsed.servers, parsed.warnings)
            }
            None => (ConfigOverrides::default(), Vec::new(), Vec::new()),
        };
        settings.overlay(self.flag_overrides(&mut warnings)?);
        let config = build_config(&settings, servers).map_err(|error| match &self.config {
            Some(path) => error.in_file(path),
            None => error,
        })?;
        Ok((config, warnings))
    }

    /// Like [`ServerArgs::resolve_with_warnings`], logging each warning with
    /// `tracing::warn!` (install the subscriber first to see them).
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let (config, warnings) = self.resolve_with_warnings()?;
        for warning in &warnings {
            tracing::warn!("config: {warning}");
        }
        Ok(config)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn args(flags: &[&str]) -> ServerArgs {
        let argv = std::iter::once("warden").chain(flags.iter().copied());
        match TestCli::try_parse_from(argv) {
            Ok(cli) => cli.server,
            Err(error) => panic!("flags {flags:?} rejected by clap: {error}"),
        }
    }

    fn config_from(text: &str) -> Config {
        let parsed = parse_zoo_cfg(text).expect("parse");
        parsed.to_config().expect("config")
    }

    /// The error message for `text`, which must fail either parsing or building.
    fn error_from(text: &str) -> String {
        match parse_zoo_cfg(text).and_then(|parsed| parsed.to_config()) {
            Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn assert_names(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(
                message.contains(part),
                "{message:?} should mention {part:?}"
            );
        }
    }

    /// A scratch file that removes itself.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("warden-config-test-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).expect("write temp file");
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn defaults_match_zookeeper_and_warden_choices() {
        let config = Config::default();
        assert_eq!(config.tick_time_ms, 2000);
        assert_eq!(config.init_limit_ticks, 10);
        assert_eq!(config.sync_limit_ticks, 5);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.data_log_dir, PathBuf::from("./data"));
        assert_eq!(config.client_port, 2181);
        assert_eq!(
            config.client_port_address,
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(config.max_client_cnxns, 60);
        assert_eq!(config.session_timeout_ms_min, 4000);
        assert_eq!(config.session_timeout_ms_max, 40000);
        assert_eq!(config.global_outstanding_limit, 1000);
        assert_eq!(config.snap_count, 100_000);
        assert_eq!(config.pre_alloc_size_kib, 65536);
        assert_eq!(config.autopurge_snap_retain_count, 3);
        assert_eq!(config.autopurge_purge_interval, None);
        assert_eq!(config.four_letter_words.words(), vec!["srvr"]);
        assert_eq!(config.jute_maxbuffer, 1_048_575);
        assert!(!config.extended_types_enabled);
        assert_eq!(config.super_digest, None);
        assert!(config.force_sync);
        assert_eq!(config.cores, 0);
        assert_eq!(config.peer_type, PeerType::Participant);
        assert!(config.servers.is_empty());
        assert_eq!(config.server_id, 0);
        // The empty file and no flags agree with Default.
        assert_eq!(config_from(""), config);
        assert_eq!(ServerArgs::default().resolve().unwrap(), config);
        assert_eq!(args(&[]).resolve().unwrap(), config);
        assert_eq!(args(&[]).log_level, "info");
    }

    #[test]
    fn full_file_sets_every_key() {
        let text = "\
tickTime=1000
initLimit=20
syncLimit=8
dataDir=/var/lib/warden
dataLogDir=/var/log/warden
clientPort=2281
clientPortAddress=127.0.0.1
maxClientCnxns=0
minSessionTimeout=3000
maxSessionTimeout=90000
globalOutstandingLimit=500
snapCount=5000
preAllocSize=1024
autopurge.snapRetainCount=5
autopurge.purgeInterval=12
4lw.commands.whitelist=ruok, stat,mntr
jute.maxbuffer=4194304
zookeeper.extendedTypesEnabled=true
superDigest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=
forceSync=no
cores=4
peerType=observer
server.1=127.0.0.1:2888:3888
server.2=127.0.0.1:2889:3889:observer;2182
";
        let parsed = parse_zoo_cfg(text).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let config = parsed.to_config().unwrap();
        assert_eq!(config.tick_time_ms, 1000);
        assert_eq!(config.init_limit_ticks, 20);
        assert_eq!(config.sync_limit_ticks, 8);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/warden"));
        assert_eq!(config.data_log_dir, PathBuf::from("/var/log/warden"));
        assert_eq!(config.client_port, 2281);
        assert_eq!(
            config.client_port_address,
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(config.max_client_cnxns, 0);
        assert_eq!(config.session_timeout_ms_min, 3000);
        assert_eq!(config.session_timeout_ms_max, 90000);
        assert_eq!(config.global_outstanding_limit, 500);
        assert_eq!(config.snap_count, 5000);
        assert_eq!(config.pre_alloc_size_kib, 1024);
        assert_eq!(config.autopurge_snap_retain_count, 5);
        assert_eq!(
            config.autopurge_purge_interval,
            Some(Duration::from_secs(12 * 3600))
        );
        assert_eq!(
            config.four_letter_words.words(),
            vec!["ruok", "srvr", "stat", "mntr"]
        );
        assert_eq!(config.jute_maxbuffer, 4_194_304);
        assert!(config.extended_types_enabled);
        assert_eq!(
            config.super_digest.as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert!(!config.force_sync);
        assert_eq!(config.cores, 4);
        assert_eq!(config.peer_type, PeerType::Observer);
        assert_eq!(config.servers.len(), 2);
        assert_eq!(
            config.servers[1].client,
            Some(ClientEndpoint {
                host: "0.0.0.0".into(),
                port: 2182
            })
        );
    }

    #[test]
    fn comments_blank_lines_and_whitespace_are_skipped() {
        let text = "# a comment\n\n   ! bang comment\n\t\n  tickTime = 3000   \r\n#clientPort=1\n";
        let parsed = parse_zoo_cfg(text).unwrap();
        assert!(parsed.warnings.is_empty());
        let config = parsed.to_config().unwrap();
        assert_eq!(config.tick_time_ms, 3000);
        assert_eq!(config.client_port, 2181);
    }

    #[test]
    fn all_properties_separators_work() {
        for text in [
            "clientPort=2300",
            "clientPort:2300",
            "clientPort 2300",
            "clientPort \t = 2300",
            "clientPort   :2300",
        ] {
            assert_eq!(config_from(text).client_port, 2300, "{text:?}");
        }
        // Only the first separator splits; later ones belong to the value.
        assert_eq!(
            config_from("dataDir=/a=b:c").data_dir,
            PathBuf::from("/a=b:c")
        );
        // `key = = v` keeps the second '=' in the value, as Properties does.
        let error = error_from("tickTime = = 5");
        assert_names(&error, &["tickTime", "line 1", "= 5"]);
    }

    #[test]
    fn properties_escapes_and_continuations() {
        let config = config_from("dataDir=/very/long/\\\n    path\\u0021\n");
        assert_eq!(config.data_dir, PathBuf::from("/very/long/path!"));
        // An escaped separator is part of the key.
        let parsed = parse_zoo_cfg("odd\\=key=1").unwrap();
        assert_eq!(
            parsed.warnings,
            vec!["line 1: unknown key 'odd=key' ignored".to_string()]
        );
        // Lines after a continued line keep their own numbers.
        let parsed = parse_zoo_cfg("dataDir=/a\\\n/b\nbogus=1\n").unwrap();
        assert_eq!(
            parsed.warnings,
            vec!["line 3: unknown key 'bogus' ignored".to_string()]
        );
        let error = error_from("dataDir=/x\\u12");
        assert_names(&error, &["dataDir", "line 1", "\\u"]);
    }

    #[test]
    fn unknown_keys_warn_with_line() {
        let parsed =
            parse_zoo_cfg("tickTime=2000\n\nfrobnicate=yes\nstandaloneEnabled=false\n").unwrap();
        assert_eq!(parsed.warnings.len(), 2);
        assert_names(&parsed.warnings[0], &["line 3", "frobnicate"]);
        assert_names(
            &parsed.warnings[1],
            &["line 4", "standaloneEnabled", "not supported"],
        );
    }

    #[test]
    fn repeated_key_warns_and_later_wins() {
        let parsed = parse_zoo_cfg("tickTime=2000\ntickTime=3000\n").unwrap();
        assert_eq!(parsed.to_config().unwrap().tick_time_ms, 3000);
        assert_eq!(parsed.warnings.len(), 1);
        assert_names(&parsed.warnings[0], &["line 2", "line 1", "tickTime"]);
    }

    #[test]
    fn key_aliases_are_accepted() {
        let config = config_from(
            "extendedTypesEnabled=true\nzookeeper.DigestAuthenticationProvider.superDigest=super:abc=\nzookeeper.4lw.commands.whitelist=*\n",
        );
        assert!(config.extended_types_enabled);
        assert_eq!(config.super_digest.as_deref(), Some("super:abc="));
        assert!(config.four_letter_words.allows("dump"));
    }

    #[test]
    fn invalid_values_name_key_line_and_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("tickTime=abc", "tickTime", "abc"),
            ("tickTime=0", "tickTime", "0"),
            ("tickTime=-5", "tickTime", "-5"),
            ("initLimit=0", "initLimit", "0"),
            ("syncLimit=x", "syncLimit", "x"),
            ("dataDir=", "dataDir", "''"),
            ("clientPort=70000", "clientPort", "70000"),
            ("clientPort=-1", "clientPort", "-1"),
            (
                "clientPortAddress=not-an-ip",
                "clientPortAddress",
                "not-an-ip",
            ),
            ("maxClientCnxns=-1", "maxClientCnxns", "-1"),
            ("minSessionTimeout=-2", "minSessionTimeout", "-2"),
            ("maxSessionTimeout=0", "maxSessionTimeout", "0"),
            (
                "globalOutstandingLimit=lots",
                "globalOutstandingLimit",
                "lots",
            ),
            ("snapCount=1e5", "snapCount", "1e5"),
            ("preAllocSize=0", "preAllocSize", "0"),
            (
                "autopurge.snapRetainCount=many",
                "autopurge.snapRetainCount",
                "many",
            ),
            (
                "autopurge.purgeInterval=3w",
                "autopurge.purgeInterval",
                "3w",
            ),
            (
                "4lw.commands.whitelist=ruok,nope",
                "4lw.commands.whitelist",
                "nope",
            ),
            ("jute.maxbuffer=0", "jute.maxbuffer", "0"),
            (
                "zookeeper.extendedTypesEnabled=yes",
                "zookeeper.extendedTypesEnabled",
                "yes",
            ),
            ("superDigest=nocolon", "superDigest", "nocolon"),
            ("forceSync=maybe", "forceSync", "maybe"),
            ("cores=-1", "cores", "-1"),
            ("peerType=leader", "peerType", "leader"),
        ];
        for (line, key, value) in cases {
            let text = format!("# header\n\n{line}\n");
            let message = error_from(&text);
            assert_names(&message, &[key, "line 3", value]);
        }
    }

    #[test]
    fn cross_setting_errors_name_the_written_key() {
        let message = error_from("minSessionTimeout=50000\nmaxSessionTimeout=40000\n");
        assert_names(
            &message,
            &["minSessionTimeout", "line 1", "50000", "maxSessionTimeout"],
        );
        // Only max written, below the derived min (2 x 2000).
        let message = error_from("\nmaxSessionTimeout=1000\n");
        assert_names(&message, &["maxSessionTimeout", "line 2", "1000"]);
        // A huge tick overflows the derived maximum; tickTime is blamed.
        let message = error_from("tickTime=2000000000\n");
        assert_names(&message, &["tickTime", "line 1", "2000000000"]);
        let message = error_from("peerType=observer\n");
        assert_names(&message, &["peerType", "line 1", "observer"]);
    }

    #[test]
    fn session_timeouts_derive_from_final_tick_time() {
        let config = config_from("tickTime=500\n");
        assert_eq!(
            (config.session_timeout_ms_min, config.session_timeout_ms_max),
            (1000, 10000)
        );
        let config = config_from("tickTime=500\nminSessionTimeout=-1\nmaxSessionTimeout=-1\n");
        assert_eq!(
            (config.session_timeout_ms_min, config.session_timeout_ms_max),
            (1000, 10000)
        );
        let config = config_from("tickTime=500\nminSessionTimeout=200\n");
        assert_eq!(
            (config.session_timeout_ms_min, config.session_timeout_ms_max),
            (200, 10000)
        );
        // The flag's tickTime, not the file's, drives the derivation.
        let file = TempFile::new("derive.cfg", "tickTime=500\n");
        let path = file.0.display().to_string();
        let config = args(&["--config", &path, "--tick-time", "3000"])
            .resolve()
            .unwrap();
        assert_eq!(
            (config.session_timeout_ms_min, config.session_timeout_ms_max),
            (6000, 60000)
        );
        // A -1 flag undoes an explicit file value.
        let file = TempFile::new("derive2.cfg", "maxSessionTimeout=99000\n");
        let path = file.0.display().to_string();
        let config = args(&["--config", &path, "--max-session-timeout", "-1"])
            .resolve()
            .unwrap();
        assert_eq!(config.session_timeout_ms_max, 40000);
    }

    #[test]
    fn data_log_dir_defaults_to_data_dir() {
        let config = config_from("dataDir=/srv/zk\n");
        assert_eq!(config.data_log_dir, PathBuf::from("/srv/zk"));
        let config = args(&["--data-dir", "/tmp/d"]).resolve().unwrap();
        assert_eq!(config.data_log_dir, PathBuf::from("/tmp/d"));
    }

    #[test]
    fn flags_override_file() {
        let file = TempFile::new(
            "override.cfg",
            "tickTime=1000\nclientPort=3000\ndataDir=/from/file\nforceSync=yes\nunknownThing=1\n",
        );
        let path = file.0.display().to_string();
        let server_args = args(&[
            "--config",
            &path,
            "--client-port",
            "4000",
            "--force-sync",
            "no",
            "--4lw-commands-whitelist",
            "ruok,conf",
            "--extended-types-enabled",
            "true",
            "--super-digest",
            "super:xyz",
            "--cores",
            "2",
            "--client-port-address",
            "::1",
            "--jute-maxbuffer",
            "0x100000",
            "--autopurge-snap-retain-count",
            "7",
            "--log-level",
            "debug",
        ]);
        assert_eq!(server_args.log_level, "debug");
        let (config, warnings) = server_args.resolve_with_warnings().unwrap();
        assert_eq!(config.tick_time_ms, 1000, "file value kept when no flag");
        assert_eq!(config.client_port, 4000);
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert!(!config.force_sync);
        assert!(config.four_letter_words.allows("conf"));
        assert!(config.extended_types_enabled);
        assert_eq!(config.super_digest.as_deref(), Some("super:xyz"));
        assert_eq!(config.cores, 2);
        assert_eq!(config.client_port_address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(config.jute_maxbuffer, 0x100000);
        assert_eq!(config.autopurge_snap_retain_count, 7);
        assert_eq!(warnings.len(), 1);
        assert_names(&warnings[0], &[&path, "line 5", "unknownThing"]);
    }

    #[test]
    fn invalid_flags_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--tick-time", "0"], "--tick-time"),
            (&["--tick-time", "-5"], "--tick-time"),
            (&["--client-port", "99999"], "--client-port"),
            (&["--force-sync", "maybe"], "--force-sync"),
            (
                &["--4lw-commands-whitelist", "ruok,zzzz"],
                "--4lw-commands-whitelist",
            ),
            (
                &["--extended-types-enabled", "1"],
                "--extended-types-enabled",
            ),
            (&["--peer-type", "boss"], "--peer-type"),
        ];
        for (flags, flag) in cases {
            match args(flags).resolve() {
                Ok(config) => panic!("{flags:?} accepted: {config:?}"),
                Err(error) => assert_names(&error.to_string(), &[flag, flags[1]]),
            }
        }
        // Cross-check between flags blames the flag.
        let error = args(&[
            "--min-session-timeout",
            "9000",
            "--max-session-timeout",
            "8000",
        ])
        .resolve()
        .unwrap_err()
        .to_string();
        assert_names(&error, &["--min-session-timeout", "9000"]);
    }

    #[test]
    fn file_errors_name_the_file() {
        let file = TempFile::new("bad.cfg", "\ntickTime=zero\n");
        let error = load_file(&file.0).unwrap_err().to_string();
        assert_names(
            &error,
            &[&file.0.display().to_string(), "line 2", "tickTime", "zero"],
        );
        let missing = std::env::temp_dir().join("warden-config-test-does-not-exist.cfg");
        let error = args(&["--config", &missing.display().to_string()])
            .resolve()
            .unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error}");
    }

    #[test]
    fn latin1_file_is_read() {
        let path = std::env::temp_dir().join(format!(
            "warden-config-test-{}-latin1.cfg",
            std::process::id()
        ));
        std::fs::write(&path, b"dataDir=/data/caf\xe9\n").unwrap();
        let parsed = load_file(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            parsed.unwrap().to_config().unwrap().data_dir,
            PathBuf::from("/data/caf\u{e9}")
        );
    }

    #[test]
    fn whitelist_parsing() {
        let all = FourLetterWhitelist::parse("*").unwrap();
        assert!(KNOWN_FOUR_LETTER_WORDS.iter().all(|word| all.allows(word)));
        assert_eq!(FourLetterWhitelist::parse("ruok, *").unwrap(), all);
        let listed = FourLetterWhitelist::parse(" ruok , stat,,").unwrap();
        assert!(listed.allows("ruok") && listed.allows("stat"));
        assert!(
            listed.allows("srvr"),
            "srvr is always allowed, as in ZooKeeper"
        );
        assert!(!listed.allows("dump"));
        assert!(!listed.allows("nope"));
        let default = FourLetterWhitelist::default();
        assert!(default.allows("srvr") && !default.allows("ruok"));
        assert_eq!(FourLetterWhitelist::parse("").unwrap(), default);
        assert_eq!(
            FourLetterWhitelist::parse("ruok,bogus"),
            Err("bogus".to_string())
        );
        assert_eq!(config_from("").four_letter_words, default);
    }

    #[test]
    fn purge_interval_units() {
        let interval = |text: &str| {
            config_from(&format!("autopurge.purgeInterval={text}")).autopurge_purge_interval
        };
        assert_eq!(interval("0"), None);
        assert_eq!(interval("-1"), None);
        assert_eq!(interval("2"), Some(Duration::from_secs(7200)));
        assert_eq!(interval("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(interval("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(interval("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(interval("45s"), Some(Duration::from_secs(45)));
    }

    #[test]
    fn snap_retain_count_below_three_is_raised_with_warning() {
        let parsed = parse_zoo_cfg("autopurge.snapRetainCount=1\n").unwrap();
        assert_eq!(parsed.to_config().unwrap().autopurge_snap_retain_count, 3);
        assert_names(
            &parsed.warnings[0],
            &["line 1", "autopurge.snapRetainCount"],
        );
    }

    #[test]
    fn valid_server_lines() {
        let parsed = parse_zoo_cfg(
            "server.1=zk1.example.com:2888:3888\n\
             server.2=10.0.0.2:2888:3888:participant;2181\n\
             server.3=[::1]:2890:3890:observer;[::1]:2183\n\
             server.4=10.0.0.4:2888:3888;10.0.0.4:2184\n",
        )
        .unwrap();
        assert_eq!(
            parsed.servers,
            vec![
                ServerSpec {
                    id: 1,
                    host: "zk1.example.com".into(),
                    quorum_port: 2888,
                    election_port: 3888,
                    peer_type: PeerType::Participant,
                    client: None,
                },
                ServerSpec {
                    id: 2,
                    host: "10.0.0.2".into(),
                    quorum_port: 2888,
                    election_port: 3888,
                    peer_type: PeerType::Participant,
                    client: Some(ClientEndpoint {
                        host: "0.0.0.0".into(),
                        port: 2181
                    }),
                },
                ServerSpec {
                    id: 3,
                    host: "::1".into(),
                    quorum_port: 2890,
                    election_port: 3890,
                    peer_type: PeerType::Observer,
                    client: Some(ClientEndpoint {
                        host: "::1".into(),
                        port: 2183
                    }),
                },
                ServerSpec {
                    id: 4,
                    host: "10.0.0.4".into(),
                    quorum_port: 2888,
                    election_port: 3888,
                    peer_type: PeerType::Participant,
                    client: Some(ClientEndpoint {
                        host: "10.0.0.4".into(),
                        port: 2184
                    }),
                },
            ]
        );
    }

    #[test]
    fn invalid_server_lines() {
        let cases: &[(&str, &str)] = &[
            ("server.0=h:2888:3888", "server.0"),
            ("server.x=h:2888:3888", "server.x"),
            ("server.-1=h:2888:3888", "server.-1"),
            ("server.1=h:2888", "h:2888"),
            ("server.1=h:2888:3888:observer:extra", "extra"),
            ("server.1=:2888:3888", ":2888:3888"),
            ("server.1=h:0:3888", "h:0:3888"),
            ("server.1=h:2888:65536", "65536"),
            ("server.1=h:2888:2888", "h:2888:2888"),
            ("server.1=h:2888:3888:voter", "voter"),
            ("server.1=h:2888:3888;notaport", "notaport"),
            ("server.1=h:2888:3888;a:b:2181", "a:b:2181"),
            ("server.1=h:2888:3888;2181;2281", "2281"),
            ("server.1=a:1:2|b:1:2", "a:1:2|b:1:2"),
            ("server.1=[::1:2888:3888", "[::1:2888:3888"),
        ];
        for (line, value) in cases {
            let message = error_from(&format!("tickTime=2000\n{line}\n"));
            assert_names(&message, &["server.", "line 2", value]);
        }
        let message =
            error_from("server.1=a:2888:3888\nserver.2=b:2888:3888\nserver.1=c:2888:3888\n");
        assert_names(
            &message,
            &["server.1", "line 3", "c:2888:3888", "duplicate", "line 1"],
        );
    }

    #[test]
    fn conf_lines_follow_zookeeper_order() {
        let lines = Config::default().to_zoo_cfg_lines();
        let expected = [
            ("clientPort", "2181"),
            ("clientPortAddress", "0.0.0.0"),
            ("dataDir", "./data"),
            ("dataLogDir", "./data"),
            ("tickTime", "2000"),
            ("maxClientCnxns", "60"),
            ("minSessionTimeout", "4000"),
            ("maxSessionTimeout", "40000"),
            ("clientPortListenBacklog", "-1"),
            ("serverId", "0"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn shipped_example_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let names = [
            "standalone.cfg",
            "observer.cfg",
            "ensemble-3/node1.cfg",
            "ensemble-3/node2.cfg",
            "ensemble-3/node3.cfg",
        ];
        for name in names {
            let path = root.join(name);
            if !path.exists() {
                continue; // scratch builds may not carry the examples
            }
            let parsed = load_file(&path).unwrap_or_else(|error| panic!("{error}"));
            assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
            parsed
                .to_config()
                .unwrap_or_else(|error| panic!("{name}: {error}"));
        }
    }
}
