//! Four-letter words: renders ZooKeeper's "4lw" admin replies (`ruok`, `srvr`,
//! `stat`, `mntr`, `conf`, `cons`, `envi`, `wchs`, `wchc`, `wchp`, `dump`,
//! `isro`, `dirs`) byte-for-byte in the layout Apache ZooKeeper 3.8 prints in
//! standalone mode, plus the "not in the whitelist" reply.
//!
//! This module owns only the *text*: it is pure (no I/O, no clock, no
//! globals). The runtime fills a [`ServerSnapshot`] with plain values and calls
//! [`render`] with the current wall-clock time; deciding whether a word is
//! whitelisted, reading the socket and closing it afterwards are the runtime's
//! job. Where ZooKeeper prints JVM facts (`envi`'s `java.*` and `os.memory.*`,
//! `mntr`'s `jvm_pause_time_ms` summary) warden prints its own equivalents or
//! nothing.
//!
//! Formats were checked against Apache ZooKeeper 3.8.0 (`ZooKeeperServerMain`,
//! NIO connection factory); the unit tests hold replies captured from it.

use std::collections::BTreeSet;
use std::fmt::Write;

/// The four-letter words warden answers, in no particular order.
pub const WORDS: [&str; 13] = [
    "ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "wchc", "wchp", "dump", "isro",
    "dirs",
];

/// Everything the replies show, as one consistent snapshot of the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerSnapshot {
    /// Full version string, e.g. `"3.8.0-warden-0.1.0, built on 2025-01-01 00:00 UTC"`;
    /// shown as `Zookeeper version: ...`, `zk_version` and `zookeeper.version=`.
    pub version: String,
    /// `"standalone"` (or `"read-only"`); `Mode:` and `zk_server_state`.
    pub server_state: String,
    /// True when serving read-only: `isro` says `ro`, `stat`/`srvr` add a banner.
    pub read_only: bool,
    /// Server-wide request latency in ms (0 when nothing was measured yet).
    pub latency_ms_min: u64,
    /// Raw mean latency in ms (`total / count`, 0.0 when none); rendered like
    /// ZooKeeper: rounded half-up to 4 decimals, printed as a Java double.
    pub latency_ms_avg: f64,
    /// Maximum request latency in ms.
    pub latency_ms_max: u64,
    /// Packets received / sent since start (or the last `srst`).
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Requests received but not yet answered.
    pub outstanding_requests: u64,
    /// Last processed zxid (`Zxid: 0x...`).
    pub zxid: i64,
    /// Number of znodes, including `/` and the `/zookeeper` subtree (5 when empty).
    pub node_count: usize,
    /// Every open client connection, the one asking for the word included
    /// (ZooKeeper counts and lists it). Order is the listing order.
    pub connections: Vec<ConnectionSnapshot>,
    /// ZooKeeper's *data* watch table by session (getData/exists watches,
    /// not getChildren ones): drives `wchs`, `wchc` and `wchp`.
    pub watches: Vec<(i64, Vec<String>)>,
    /// All watches, data plus child (`zk_watch_count`).
    pub watch_count: u64,
    /// Open sessions: (session id, wall-clock ms of its expiry bucket). `dump`
    /// groups sessions with the same expiry time; `zk_global_sessions` counts them.
    pub sessions: Vec<(i64, i64)>,
    /// Ephemeral znode paths by owning session (`dump`, `zk_ephemerals_count`).
    pub ephemerals: Vec<(i64, Vec<String>)>,
    /// Sum of path lengths plus data lengths of all znodes (`zk_approximate_data_size`).
    pub approximate_data_size: u64,
    /// Open / maximum file descriptors; `None` leaves the `mntr` line out.
    pub open_file_descriptors: Option<u64>,
    pub max_file_descriptors: Option<u64>,
    /// Elapsed-clock ms when the server started (`zk_uptime` = now - this,
    /// both on the elapsed clock: an NTP step does not change the uptime).
    pub started_ms: i64,
    /// Values for `conf`.
    pub config: ConfigSnapshot,
    /// Bytes in the snapshot and transaction-log directories (`conf`, `dirs`).
    pub data_dir_size: u64,
    pub data_log_dir_size: u64,
    /// Host facts for `envi`.
    pub env: EnvSnapshot,
    /// CPU cores warden uses (`envi`'s `warden.cores`).
    pub cores: usize,
    /// Extra `mntr` values by key without the `zk_` prefix, e.g.
    /// `("bytes_received_count", "1046")`. A key in ZooKeeper's standalone list
    /// replaces its default (0, 0.0 or -1) in place; any other key is appended
    /// at the end, in this order.
    pub metrics: Vec<(String, String)>,
}

/// One client connection as `stat`, `cons` and `dump` show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionSnapshot {
    /// Remote address as Java prints it: `"/127.0.0.1:54321"`.
    pub remote: String,
    /// NIO interest ops, printed in hex: 1 = reading (idle client), 0 = the
    /// connection running this word, 5 = read and write pending.
    pub interest_ops: u32,
    /// Requests of this connection not answered yet.
    pub queued: u64,
    /// Packets received / sent on this connection (the word itself counts as 1 received).
    pub received: u64,
    pub sent: u64,
    /// Session id; 0 before the session is established (then `cons` prints
    /// only the brief part, as for the connection running the word).
    pub session_id: i64,
    /// Last operation as ZooKeeper abbreviates it (`"GETD"`, `"EXIS"`, `"SESS"`,
    /// `"PING"`, ...; `"NA"` when none).
    pub last_operation: String,
    /// Wall-clock ms when the connection was accepted (`est=`).
    pub established_ms: i64,
    /// Negotiated session timeout in ms (`to=`).
    pub timeout_ms: i32,
    /// Last cxid answered; negative values are left out (`lcxid=`).
    pub last_cxid: i64,
    /// Last zxid answered (`lzxid=0x...`; -1 prints as `0xffffffffffffffff`).
    pub last_zxid: i64,
    /// Monotonic ms of the last response (ZooKeeper prints `System.nanoTime()/1e6`).
    pub last_response_ms: i64,
    /// Latency of the last request, and min / integer mean / max, in ms.
    pub last_latency_ms: u64,
    pub latency_ms_min: u64,
    pub latency_ms_avg: u64,
    pub latency_ms_max: u64,
    /// Wall-clock ms of this connection's expiry bucket (`dump`'s connections part).
    pub expires_at_ms: i64,
}

/// The values `conf` prints, in its order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigSnapshot {
    pub client_port: i32,
    /// -1 when there is none.
    pub secure_client_port: i32,
    /// Snapshot directory as ZooKeeper prints it: `<dataDir>/version-2`.
    pub data_dir: String,
    /// Transaction-log directory, likewise `<dataLogDir>/version-2`.
    pub data_log_dir: String,
    pub tick_time: i32,
    pub max_client_cnxns: i32,
    pub min_session_timeout: i32,
    pub max_session_timeout: i32,
    /// -1 for the system default.
    pub client_port_listen_backlog: i32,
    /// 0 in standalone.
    pub server_id: i64,
}

/// Host facts for `envi` (ZooKeeper prints `<NA>` for unknown values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvSnapshot {
    pub host_name: String,
    /// e.g. `"Linux"`, `"amd64"`, kernel release.
    pub os_name: String,
    pub os_arch: String,
    pub os_version: String,
    pub user_name: String,
    pub user_home: String,
    pub user_dir: String,
}

/// Recognises a four-letter word in the first four bytes of a connection
/// (where a request's length would be). Only the words of [`WORDS`] match.
pub fn is_four_letter_word(first_four_bytes: &[u8; 4]) -> Option<&'static str> {
    WORDS
        .iter()
        .copied()
        .find(|word| word.as_bytes() == first_four_bytes)
}

/// The reply to a word that is not in `4lw.commands.whitelist`.
pub fn not_whitelisted(word: &str) -> String {
    format!("{word} is not executed because it is not in the whitelist.\n")
}

/// Renders the reply to `word` (one of [`WORDS`]); `now_ms` is the elapsed
/// clock in ms, the one `ServerSnapshot::started_ms` was read on (used for
/// `zk_uptime`). An unknown word gives an empty string, as
/// ZooKeeper closes such connections without a reply.
pub fn render(word: &str, s: &ServerSnapshot, now_ms: i64) -> String {
    match word {
        "ruok" => "imok".to_owned(),
        "isro" => if s.read_only { "ro" } else { "rw" }.to_owned(),
        "srvr" => stat(s, false),
        "stat" => stat(s, true),
        "cons" => cons(s),
        "mntr" => mntr(s, now_ms),
        "conf" => conf(s),
        "envi" => envi(s),
        "wchs" => wchs(s),
        "wchc" => wchc(s),
        "wchp" => wchp(s),
        "dump" => dump(s),
        "dirs" => format!(
            "datadir_size: {}\nlogdir_size: {}\n",
            s.data_dir_size, s.data_log_dir_size
        ),
        _ => String::new(),
    }
}

/// Java's `Long.toHexString`: two's complement, lower case, no padding.
fn hex(v: i64) -> String {
    format!("{:x}", v as u64)
}

fn stat(s: &ServerSnapshot, with_clients: bool) -> String {
    let mut out = format!("Zookeeper version: {}\n", s.version);
    if s.read_only {
        out.push_str("READ-ONLY mode; serving only read-only clients\n");
    }
    if with_clients {
        out.push_str("Clients:\n");
        for c in &s.connections {
            connection_info(&mut out, c, true);
            out.push('\n');
        }
        out.push('\n');
    }
    let _ = write!(
        out,
        "Latency min/avg/max: {}/{}/{}\nReceived: {}\nSent: {}\nConnections: {}\n\
         Outstanding: {}\nZxid: 0x{}\nMode: {}\nNode count: {}\n",
        s.latency_ms_min,
        java_avg(s.latency_ms_avg),
        s.latency_ms_max,
        s.packets_received,
        s.packets_sent,
        s.connections.len(),
        s.outstanding_requests,
        hex(s.zxid),
        s.server_state,
        s.node_count,
    );
    out
}

/// `ServerCnxn.dumpConnectionInfo`: brief for `stat`, full for `cons`.
fn connection_info(out: &mut String, c: &ConnectionSnapshot, brief: bool) {
    let _ = write!(
        out,
        " {}[{:x}](queued={},recved={},sent={}",
        c.remote, c.interest_ops, c.queued, c.received, c.sent
    );
    if !brief && c.session_id != 0 {
        let _ = write!(
            out,
            ",sid=0x{},lop={},est={},to={}",
            hex(c.session_id),
            c.last_operation,
            c.established_ms,
            c.timeout_ms
        );
        if c.last_cxid >= 0 {
            let _ = write!(out, ",lcxid=0x{}", hex(c.last_cxid));
        }
        let _ = write!(
            out,
            ",lzxid=0x{},lresp={},llat={},minlat={},avglat={},maxlat={}",
            hex(c.last_zxid),
            c.last_response_ms,
            c.last_latency_ms,
            c.latency_ms_min,
            c.latency_ms_avg,
            c.latency_ms_max
        );
    }
    out.push(')');
}

fn cons(s: &ServerSnapshot) -> String {
    let mut out = String::new();
    for c in &s.connections {
        connection_info(&mut out, c, false);
        out.push('\n');
    }
    out.push('\n');
    out
}

fn conf(s: &ServerSnapshot) -> String {
    let c = &s.config;
    format!(
        "clientPort={}\nsecureClientPort={}\ndataDir={}\ndataDirSize={}\ndataLogDir={}\n\
         dataLogSize={}\ntickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\n\
         maxSessionTimeout={}\nclientPortListenBacklog={}\nserverId={}\n",
        c.client_port,
        c.secure_client_port,
        c.data_dir,
        s.data_dir_size,
        c.data_log_dir,
        s.data_log_dir_size,
        c.tick_time,
        c.max_client_cnxns,
        c.min_session_timeout,
        c.max_session_timeout,
        c.client_port_listen_backlog,
        c.server_id
    )
}

fn envi(s: &ServerSnapshot) -> String {
    let e = &s.env;
    let cores = s.cores.to_string();
    let entries = [
        ("zookeeper.version", s.version.as_str()),
        ("host.name", &e.host_name),
        ("os.name", &e.os_name),
        ("os.arch", &e.os_arch),
        ("os.version", &e.os_version),
        ("user.name", &e.user_name),
        ("user.home", &e.user_home),
        ("user.dir", &e.user_dir),
        ("warden.cores", &cores),
    ];
    let mut out = String::from("Environment:\n");
    for (key, value) in entries {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

/// `WatchManager.toString` for the data watches, then a newline.
fn wchs(s: &ServerSnapshot) -> String {
    let paths: BTreeSet<&str> = s
        .watches
        .iter()
        .flat_map(|(_, p)| p.iter().map(String::as_str))
        .collect();
    let total: usize = s.watches.iter().map(|(_, p)| p.len()).sum();
    format!(
        "{} connections watching {} paths\nTotal watches:{}\n",
        s.watches.len(),
        paths.len(),
        total
    )
}

fn wchc(s: &ServerSnapshot) -> String {
    let mut out = String::new();
    for (session, paths) in &s.watches {
        let _ = writeln!(out, "0x{}", hex(*session));
        for path in paths {
            let _ = writeln!(out, "\t{path}");
        }
    }
    out.push('\n');
    out
}

/// Paths in sorted order (ZooKeeper's is hash order), sessions in `watches` order.
fn wchp(s: &ServerSnapshot) -> String {
    let paths: BTreeSet<&str> = s
        .watches
        .iter()
        .flat_map(|(_, p)| p.iter().map(String::as_str))
        .collect();
    let mut out = String::new();
    for path in paths {
        let _ = writeln!(out, "{path}");
        for (session, _) in s
            .watches
            .iter()
            .filter(|(_, p)| p.iter().any(|q| q == path))
        {
            let _ = writeln!(out, "\t0x{}", hex(*session));
        }
    }
    out.push('\n');
    out
}

fn dump(s: &ServerSnapshot) -> String {
    let mut out = String::from("SessionTracker dump:\nSession ");
    let sessions: Vec<(i64, String)> = s
        .sessions
        .iter()
        .map(|&(id, at)| (at, format!("0x{}", hex(id))))
        .collect();
    expiry_queue(&mut out, &sessions);
    let _ = writeln!(
        out,
        "ephemeral nodes dump:\nSessions with Ephemerals ({}):",
        s.ephemerals.len()
    );
    for (session, paths) in &s.ephemerals {
        let _ = writeln!(out, "0x{}:", hex(*session));
        for path in paths {
            let _ = writeln!(out, "\t{path}");
        }
    }
    out.push_str("Connections dump:\nConnections ");
    let cnxns: Vec<(i64, String)> = s
        .connections
        .iter()
        .map(|c| {
            (
                c.expires_at_ms,
                format!("ip: {} sessionId: 0x{}", c.remote, hex(c.session_id)),
            )
        })
        .collect();
    expiry_queue(&mut out, &cnxns);
    out
}

/// `ExpiryQueue.dump`: buckets by expiry time, ascending; members in input order.
fn expiry_queue(out: &mut String, items: &[(i64, String)]) {
    let times: BTreeSet<i64> = items.iter().map(|(at, _)| *at).collect();
    let _ = writeln!(out, "Sets ({})/({}):", times.len(), items.len());
    for time in times {
        let members: Vec<&String> = items
            .iter()
            .filter(|(at, _)| *at == time)
            .map(|(_, m)| m)
            .collect();
        let _ = writeln!(out, "{} expire at {}:", members.len(), java_date_utc(time));
        for member in members {
            let _ = writeln!(out, "\t{member}");
        }
    }
}

/// How a `mntr` entry prints by default.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer gauge or counter: `0`.
    Int,
    /// A floating-point gauge: `0.0`.
    Double,
    /// A response-size gauge that is `-1` until something was sent.
    Unset,
    /// `avg_`, `min_`, `max_`, `cnt_`, `sum_` lines.
    Summary,
    /// A summary plus `p50_`, `p95_`, `p99_`, `p999_` lines.
    Percentiles,
}

/// ZooKeeper 3.8 standalone's `mntr` keys after `version` and `server_state`,
/// in its (hash-map) order, without the JVM-only `jvm_pause_time_ms`.
const MNTR_KEYS: &[(&str, Kind)] = &[
    ("ephemerals_count", Kind::Int),
    ("num_alive_connections", Kind::Int),
    ("avg_latency", Kind::Double),
    ("outstanding_requests", Kind::Int),
    ("znode_count", Kind::Int),
    ("global_sessions", Kind::Int),
    ("non_mtls_remote_conn_count", Kind::Int),
    ("last_client_response_size", Kind::Unset),
    ("packets_sent", Kind::Int),
    ("packets_received", Kind::Int),
    ("max_client_response_size", Kind::Unset),
    ("connection_drop_probability", Kind::Double),
    ("watch_count", Kind::Int),
    ("auth_failed_count", Kind::Int),
    ("min_latency", Kind::Int),
    ("max_file_descriptor_count", Kind::Int),
    ("approximate_data_size", Kind::Int),
    ("open_file_descriptor_count", Kind::Int),
    ("local_sessions", Kind::Int),
    ("uptime", Kind::Int),
    ("max_latency", Kind::Int),
    ("outstanding_tls_handshake", Kind::Int),
    ("min_client_response_size", Kind::Unset),
    ("non_mtls_local_conn_count", Kind::Int),
    ("proposal_count", Kind::Int),
    ("watch_bytes", Kind::Int),
    ("outstanding_changes_removed", Kind::Int),
    ("throttled_ops", Kind::Int),
    ("stale_requests_dropped", Kind::Int),
    ("large_requests_rejected", Kind::Int),
    ("insecure_admin_count", Kind::Int),
    ("connection_rejected", Kind::Int),
    ("cnxn_closed_without_zk_server_running", Kind::Int),
    ("sessionless_connections_expired", Kind::Int),
    ("looking_count", Kind::Int),
    ("dead_watchers_queued", Kind::Int),
    ("stale_requests", Kind::Int),
    ("connection_drop_count", Kind::Int),
    ("learner_proposal_received_count", Kind::Int),
    ("digest_mismatches_count", Kind::Int),
    ("dead_watchers_cleared", Kind::Int),
    ("response_packet_cache_hits", Kind::Int),
    ("bytes_received_count", Kind::Int),
    ("add_dead_watcher_stall_time", Kind::Int),
    ("request_throttle_wait_count", Kind::Int),
    ("requests_not_forwarded_to_commit_processor", Kind::Int),
    ("response_packet_cache_misses", Kind::Int),
    ("ensemble_auth_success", Kind::Int),
    ("prep_processor_request_queued", Kind::Int),
    ("learner_commit_received_count", Kind::Int),
    ("stale_replies", Kind::Int),
    ("connection_request_count", Kind::Int),
    ("response_bytes", Kind::Int),
    ("ensemble_auth_fail", Kind::Int),
    ("diff_count", Kind::Int),
    ("response_packet_get_children_cache_misses", Kind::Int),
    ("connection_revalidate_count", Kind::Int),
    ("quit_leading_due_to_disloyal_voter", Kind::Int),
    ("snap_count", Kind::Int),
    ("unrecoverable_error_count", Kind::Int),
    ("unsuccessful_handshake", Kind::Int),
    ("commit_count", Kind::Int),
    ("stale_sessions_expired", Kind::Int),
    ("response_packet_get_children_cache_hits", Kind::Int),
    ("sync_processor_request_queued", Kind::Int),
    ("outstanding_changes_queued", Kind::Int),
    ("request_commit_queued", Kind::Int),
    ("ensemble_auth_skip", Kind::Int),
    ("skip_learner_request_to_next_processor_count", Kind::Int),
    ("tls_handshake_exceeded", Kind::Int),
    ("revalidate_count", Kind::Int),
    ("socket_closing_time", Kind::Summary),
    ("proposal_process_time", Kind::Summary),
    ("leader_unavailable_time", Kind::Summary),
    ("node_created_watch_count", Kind::Summary),
    ("session_queues_drained", Kind::Summary),
    ("write_commit_proc_req_queued", Kind::Summary),
    ("connection_token_deficit", Kind::Summary),
    ("read_commit_proc_req_queued", Kind::Summary),
    ("node_deleted_watch_count", Kind::Summary),
    ("startup_txns_load_time", Kind::Summary),
    ("sync_processor_queue_size", Kind::Summary),
    ("follower_sync_time", Kind::Summary),
    ("prep_processor_queue_size", Kind::Summary),
    ("fsynctime", Kind::Summary),
    ("inflight_snap_count", Kind::Summary),
    ("reads_issued_from_session_queue", Kind::Summary),
    ("learner_request_processor_queue_size", Kind::Summary),
    ("snapshottime", Kind::Summary),
    ("unavailable_time", Kind::Summary),
    ("startup_txns_loaded", Kind::Summary),
    ("reads_after_write_in_session_queue", Kind::Summary),
    ("requests_in_session_queue", Kind::Summary),
    ("write_commit_proc_issued", Kind::Summary),
    ("prep_process_time", Kind::Summary),
    ("pending_session_queue_size", Kind::Summary),
    (
        "time_waiting_empty_pool_in_commit_processor_read_ms",
        Kind::Summary,
    ),
    ("commit_process_time", Kind::Summary),
    ("dbinittime", Kind::Summary),
    ("inflight_diff_count", Kind::Summary),
    ("netty_queued_buffer_capacity", Kind::Summary),
    ("election_time", Kind::Summary),
    ("commit_commit_proc_req_queued", Kind::Summary),
    ("sync_processor_batch_size", Kind::Summary),
    ("node_children_watch_count", Kind::Summary),
    ("write_batch_time_in_commit_processor", Kind::Summary),
    ("read_commit_proc_issued", Kind::Summary),
    (
        "concurrent_request_processing_in_commit_processor",
        Kind::Summary,
    ),
    ("observer_sync_time", Kind::Summary),
    ("node_changed_watch_count", Kind::Summary),
    ("sync_process_time", Kind::Summary),
    ("startup_snap_load_time", Kind::Summary),
    ("prep_processor_queue_time_ms", Kind::Percentiles),
    ("close_session_prep_time", Kind::Percentiles),
    ("read_commitproc_time_ms", Kind::Percentiles),
    ("updatelatency", Kind::Percentiles),
    ("local_write_committed_time_ms", Kind::Percentiles),
    ("request_throttle_queue_time_ms", Kind::Percentiles),
    ("readlatency", Kind::Percentiles),
    ("quorum_ack_latency", Kind::Percentiles),
    ("om_commit_process_time_ms", Kind::Percentiles),
    ("read_final_proc_time_ms", Kind::Percentiles),
    ("commit_propagation_latency", Kind::Percentiles),
    ("dead_watchers_cleaner_latency", Kind::Percentiles),
    ("write_final_proc_time_ms", Kind::Percentiles),
    ("proposal_ack_creation_latency", Kind::Percentiles),
    ("proposal_latency", Kind::Percentiles),
    ("om_proposal_process_time_ms", Kind::Percentiles),
    ("sync_processor_queue_and_flush_time_ms", Kind::Percentiles),
    ("propagation_latency", Kind::Percentiles),
    ("server_write_committed_time_ms", Kind::Percentiles),
    ("sync_processor_queue_time_ms", Kind::Percentiles),
    ("sync_processor_queue_flush_time_ms", Kind::Percentiles),
    ("write_commitproc_time_ms", Kind::Percentiles),
];

/// Every `mntr` line ZooKeeper prints by default: (key, default value).
fn mntr_defaults() -> Vec<(String, &'static str)> {
    const PARTS: [&str; 9] = [
        "avg", "min", "max", "cnt", "sum", "p50", "p95", "p99", "p999",
    ];
    let mut lines = Vec::new();
    for &(key, kind) in MNTR_KEYS {
        let parts = match kind {
            Kind::Int => {
                lines.push((key.to_owned(), "0"));
                continue;
            }
            Kind::Double => {
                lines.push((key.to_owned(), "0.0"));
                continue;
            }
            Kind::Unset => {
                lines.push((key.to_owned(), "-1"));
                continue;
            }
            Kind::Summary => &PARTS[..5],
            Kind::Percentiles => &PARTS[..],
        };
        for part in parts {
            let default = if *part == "avg" { "0.0" } else { "0" };
            lines.push((format!("{part}_{key}"), default));
        }
    }
    lines
}

fn mntr(s: &ServerSnapshot, now_ms: i64) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "zk_{key}\t{value}");
    };
    line("version", &s.version);
    line("server_state", &s.server_state);
    let defaults = mntr_defaults();
    for (key, default) in &defaults {
        let given = s
            .metrics
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        let computed = match key.as_str() {
            "ephemerals_count" => Some(
                s.ephemerals
                    .iter()
                    .map(|(_, p)| p.len())
                    .sum::<usize>()
                    .to_string(),
            ),
            "num_alive_connections" => Some(s.connections.len().to_string()),
            "avg_latency" => Some(java_avg(s.latency_ms_avg)),
            "outstanding_requests" => Some(s.outstanding_requests.to_string()),
            "znode_count" => Some(s.node_count.to_string()),
            "global_sessions" => Some(s.sessions.len().to_string()),
            "packets_sent" => Some(s.packets_sent.to_string()),
            "packets_received" => Some(s.packets_received.to_string()),
            "watch_count" => Some(s.watch_count.to_string()),
            "min_latency" => Some(s.latency_ms_min.to_string()),
            "max_latency" => Some(s.latency_ms_max.to_string()),
            "approximate_data_size" => Some(s.approximate_data_size.to_string()),
            "uptime" => Some((now_ms - s.started_ms).to_string()),
            // ZooKeeper leaves a gauge out when it has no value.
            "max_file_descriptor_count" => match (&given, s.max_file_descriptors) {
                (None, None) => continue,
                (_, v) => v.map(|v| v.to_string()),
            },
            "open_file_descriptor_count" => match (&given, s.open_file_descriptors) {
                (None, None) => continue,
                (_, v) => v.map(|v| v.to_string()),
            },
            _ => None,
        };
        line(
            key,
            &given.or(computed).unwrap_or_else(|| (*default).to_owned()),
        );
    }
    for (key, value) in &s.metrics {
        if !defaults.iter().any(|(k, _)| k == key) {
            line(key, value);
        }
    }
    out
}

/// A mean as ZooKeeper's `AvgMinMaxCounter.getAvg` prints it: the exact value
/// of the double rounded half-up to 4 decimals, then `Double.toString`.
fn java_avg(avg: f64) -> String {
    if !avg.is_finite() || avg <= 0.0 {
        return "0.0".to_owned();
    }
    // 1100 decimals hold every binary fraction of an f64 exactly.
    let exact = format!("{avg:.1100}");
    let (int, frac) = exact.split_once('.').unwrap_or((&exact, ""));
    let digits = frac.as_bytes();
    let mut scaled: u128 = int.parse::<u128>().unwrap_or(0) * 10_000;
    scaled += frac
        .get(..4)
        .and_then(|d| d.parse::<u128>().ok())
        .unwrap_or(0);
    if digits.get(4).is_some_and(|d| *d >= b'5') {
        scaled += 1;
    }
    let rounded: f64 = format!("{}.{:04}", scaled / 10_000, scaled % 10_000)
        .parse()
        .unwrap_or(0.0);
    java_double(rounded)
}

/// Java's `Double.toString`: shortest digits, at least one decimal, and
/// `1.0E-4` style outside [1e-3, 1e7).
fn java_double(v: f64) -> String {
    if v == 0.0 {
        return "0.0".to_owned();
    }
    if (1e-3..1e7).contains(&v.abs()) {
        let plain = v.to_string();
        return if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        };
    }
    let sci = format!("{v:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    if mantissa.contains('.') {
        format!("{mantissa}E{exponent}")
    } else {
        format!("{mantissa}.0E{exponent}")
    }
}

/// `java.util.Date.toString()` in UTC: `Sat Nov 21 22:58:50 UTC 2026`.
fn java_date_utc(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::calendar::civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    //! Golden replies captured from Apache ZooKeeper 3.8.0 standalone with two
    //! kazoo sessions (ephemerals /e1, /a/e2 and /e3; data watches on /a, /a/b
    //! and /nonexist, one child watch on /a). Only the port of the connection
    //! running the word differs between the captures; it is unified here.
    use super::*;

    const VERSION: &str = "3.8.0-${mvngit.commit.id}, built on 2024-12-29 17:54 UTC";
    const S0: i64 = 0x100000ce9300000;
    const S1: i64 = 0x100000ce9300001;

    fn snapshot() -> ServerSnapshot {
        let session =
            |remote: &str, id, lop: &str, recv, est, lcxid, lresp, maxlat| ConnectionSnapshot {
                remote: remote.into(),
                interest_ops: 1,
                received: recv,
                sent: recv,
                session_id: id,
                last_operation: lop.into(),
                established_ms: est,
                timeout_ms: 10000,
                last_cxid: lcxid,
                last_zxid: 7,
                last_response_ms: lresp,
                last_latency_ms: 1,
                latency_ms_max: maxlat,
                expires_at_ms: 1795301930000,
                ..Default::default()
            };
        let asking = ConnectionSnapshot {
            remote: "/127.0.0.1:52186".into(),
            received: 1,
            last_operation: "NA".into(),
            last_cxid: -1,
            expires_at_ms: 1795301930000,
            ..Default::default()
        };
        ServerSnapshot {
            version: VERSION.into(),
            server_state: "standalone".into(),
            latency_ms_max: 6,
            latency_ms_avg: 26.0 / 35.0,
            packets_received: 49,
            packets_sent: 49,
            zxid: 7,
            node_count: 10,
            connections: vec![
                session(
                    "/127.0.0.1:52162",
                    S1,
                    "EXIS",
                    4,
                    1795301913322,
                    3,
                    853034,
                    1,
                ),
                asking,
                session(
                    "/127.0.0.1:52156",
                    S0,
                    "GETD",
                    31,
                    1795301913309,
                    0x1e,
                    853053,
                    6,
                ),
            ],
            watches: vec![
                (S1, vec!["/a".into(), "/nonexist".into()]),
                (S0, vec!["/a".into(), "/a/b".into()]),
            ],
            watch_count: 5,
            sessions: vec![(S1, 1795301924000), (S0, 1795301924000)],
            ephemerals: vec![
                (S0, vec!["/a/e2".into(), "/e1".into()]),
                (S1, vec!["/e3".into()]),
            ],
            approximate_data_size: 63,
            open_file_descriptors: Some(45),
            max_file_descriptors: Some(20000),
            started_ms: 1_000_000,
            config: ConfigSnapshot {
                client_port: 21811,
                secure_client_port: -1,
                data_dir: "/tmp/zk4/data/version-2".into(),
                data_log_dir: "/tmp/zk4/data/version-2".into(),
                tick_time: 2000,
                max_client_cnxns: 60,
                min_session_timeout: 4000,
                max_session_timeout: 40000,
                client_port_listen_backlog: -1,
                server_id: 0,
            },
            data_dir_size: 67109337,
            data_log_dir_size: 67109337,
            env: EnvSnapshot {
                host_name: "localhost".into(),
                os_name: "Linux".into(),
                os_arch: "amd64".into(),
                os_version: "6.18.44-fc-v669".into(),
                user_name: "root".into(),
                user_home: "/root".into(),
                user_dir: "/tmp/zk4".into(),
            },
            cores: 16,
            metrics: Vec::new(),
            ..Default::default()
        }
    }

    fn r(word: &str) -> String {
        render(word, &snapshot(), 1_006_970)
    }

    #[test]
    fn words() {
        assert_eq!(is_four_letter_word(b"mntr"), Some("mntr"));
        assert_eq!(is_four_letter_word(b"srst"), None);
        assert_eq!(is_four_letter_word(&[0, 0, 0, 44]), None);
        assert!(WORDS.iter().all(|w| !render(w, &snapshot(), 0).is_empty()));
        assert_eq!(render("xxxx", &snapshot(), 0), "");
        assert_eq!(
            not_whitelisted("mntr"),
            "mntr is not executed because it is not in the whitelist.\n"
        );
    }

    #[test]
    fn short_replies() {
        assert_eq!(r("ruok"), "imok");
        assert_eq!(r("isro"), "rw");
        assert_eq!(
            render(
                "isro",
                &ServerSnapshot {
                    read_only: true,
                    ..snapshot()
                },
                0
            ),
            "ro"
        );
        assert_eq!(r("dirs"), "datadir_size: 67109337\nlogdir_size: 67109337\n");
    }

    #[test]
    fn srvr_and_stat() {
        let tail = "Latency min/avg/max: 0/0.7429/6\nReceived: 49\nSent: 49\nConnections: 3\n\
                    Outstanding: 0\nZxid: 0x7\nMode: standalone\nNode count: 10\n";
        assert_eq!(r("srvr"), format!("Zookeeper version: {VERSION}\n{tail}"));
        let clients = "Clients:\n /127.0.0.1:52162[1](queued=0,recved=4,sent=4)\n \
                       /127.0.0.1:52186[0](queued=0,recved=1,sent=0)\n \
                       /127.0.0.1:52156[1](queued=0,recved=31,sent=31)\n\n";
        assert_eq!(
            r("stat"),
            format!("Zookeeper version: {VERSION}\n{clients}{tail}")
        );
        let idle = ServerSnapshot {
            latency_ms_avg: 0.0,
            latency_ms_max: 0,
            zxid: 0,
            ..snapshot()
        };
        assert!(render("srvr", &idle, 0).contains("\nLatency min/avg/max: 0/0.0/0\n"));
        assert!(render("srvr", &idle, 0).contains("\nZxid: 0x0\n"));
    }

    #[test]
    fn cons() {
        assert_eq!(
            r("cons"),
            " /127.0.0.1:52162[1](queued=0,recved=4,sent=4,sid=0x100000ce9300001,lop=EXIS,est=1795301913322,\
             to=10000,lcxid=0x3,lzxid=0x7,lresp=853034,llat=1,minlat=0,avglat=0,maxlat=1)\n \
             /127.0.0.1:52186[0](queued=0,recved=1,sent=0)\n \
             /127.0.0.1:52156[1](queued=0,recved=31,sent=31,sid=0x100000ce9300000,lop=GETD,est=1795301913309,\
             to=10000,lcxid=0x1e,lzxid=0x7,lresp=853053,llat=1,minlat=0,avglat=0,maxlat=6)\n\n"
        );
    }

    #[test]
    fn watches() {
        assert_eq!(
            r("wchs"),
            "2 connections watching 3 paths\nTotal watches:4\n"
        );
        assert_eq!(
            r("wchc"),
            "0x100000ce9300001\n\t/a\n\t/nonexist\n0x100000ce9300000\n\t/a\n\t/a/b\n\n"
        );
        assert_eq!(
            r("wchp"),
            "/a\n\t0x100000ce9300001\n\t0x100000ce9300000\n/a/b\n\t0x100000ce9300000\n/nonexist\n\t0x100000ce9300001\n\n"
        );
        let none = ServerSnapshot {
            watches: Vec::new(),
            ..snapshot()
        };
        assert_eq!(
            render("wchs", &none, 0),
            "0 connections watching 0 paths\nTotal watches:0\n"
        );
        assert_eq!(render("wchc", &none, 0), "\n");
        assert_eq!(render("wchp", &none, 0), "\n");
    }

    #[test]
    fn dump() {
        assert_eq!(
            r("dump"),
            "SessionTracker dump:\nSession Sets (1)/(2):\n2 expire at Sat Nov 21 22:58:44 UTC 2026:\n\
             \t0x100000ce9300001\n\t0x100000ce9300000\nephemeral nodes dump:\nSessions with Ephemerals (2):\n\
             0x100000ce9300000:\n\t/a/e2\n\t/e1\n0x100000ce9300001:\n\t/e3\nConnections dump:\n\
             Connections Sets (1)/(3):\n3 expire at Sat Nov 21 22:58:50 UTC 2026:\n\
             \tip: /127.0.0.1:52162 sessionId: 0x100000ce9300001\n\tip: /127.0.0.1:52186 sessionId: 0x0\n\
             \tip: /127.0.0.1:52156 sessionId: 0x100000ce9300000\n"
        );
        let idle = ServerSnapshot {
            sessions: Vec::new(),
            ephemerals: Vec::new(),
            ..snapshot()
        };
        assert!(render("dump", &idle, 0).starts_with(
            "SessionTracker dump:\nSession Sets (0)/(0):\nephemeral nodes dump:\nSessions with Ephemerals (0):\n"
        ));
    }

    #[test]
    fn conf_and_envi() {
        assert_eq!(
            r("conf"),
            "clientPort=21811\nsecureClientPort=-1\ndataDir=/tmp/zk4/data/version-2\ndataDirSize=67109337\n\
             dataLogDir=/tmp/zk4/data/version-2\ndataLogSize=67109337\ntickTime=2000\nmaxClientCnxns=60\n\
             minSessionTimeout=4000\nmaxSessionTimeout=40000\nclientPortListenBacklog=-1\nserverId=0\n"
        );
        assert_eq!(
            r("envi"),
            format!(
                "Environment:\nzookeeper.version={VERSION}\nhost.name=localhost\nos.name=Linux\nos.arch=amd64\n\
                 os.version=6.18.44-fc-v669\nuser.name=root\nuser.home=/root\nuser.dir=/tmp/zk4\nwarden.cores=16\n"
            )
        );
    }

    #[test]
    fn mntr() {
        let mut s = snapshot();
        s.packets_received = 58;
        s.packets_sent = 58;
        s.metrics = vec![
            ("last_client_response_size".into(), "88".into()),
            ("max_client_response_size".into(), "88".into()),
            ("avg_proposal_process_time".into(), "0.0571".into()),
            ("avg_a_read_per_namespace".into(), "71.875".into()),
        ];
        let out = render("mntr", &s, 1_006_970);
        let head = format!(
            "zk_version\t{VERSION}\nzk_server_state\tstandalone\nzk_ephemerals_count\t3\n\
             zk_num_alive_connections\t3\nzk_avg_latency\t0.7429\nzk_outstanding_requests\t0\nzk_znode_count\t10\n\
             zk_global_sessions\t2\nzk_non_mtls_remote_conn_count\t0\nzk_last_client_response_size\t88\n\
             zk_packets_sent\t58\nzk_packets_received\t58\nzk_max_client_response_size\t88\n\
             zk_connection_drop_probability\t0.0\nzk_watch_count\t5\nzk_auth_failed_count\t0\nzk_min_latency\t0\n\
             zk_max_file_descriptor_count\t20000\nzk_approximate_data_size\t63\nzk_open_file_descriptor_count\t45\n\
             zk_local_sessions\t0\nzk_uptime\t6970\nzk_max_latency\t6\nzk_outstanding_tls_handshake\t0\n\
             zk_min_client_response_size\t-1\n"
        );
        assert!(out.starts_with(&head), "{out}");
        assert!(out
            .contains("\nzk_avg_proposal_process_time\t0.0571\nzk_min_proposal_process_time\t0\n"));
        assert!(out.contains(
            "\nzk_sum_startup_snap_load_time\t0\nzk_avg_prep_processor_queue_time_ms\t0.0\n"
        ));
        assert!(out.contains(
            "\nzk_p999_prep_processor_queue_time_ms\t0\nzk_avg_close_session_prep_time\t0.0\n"
        ));
        assert!(out.ends_with(
            "\nzk_p999_write_commitproc_time_ms\t0\nzk_avg_a_read_per_namespace\t71.875\n"
        ));
        assert!(!out.contains("jvm"));
        // ZooKeeper's idle standalone reply has 485 lines; 9 are jvm_pause_time_ms.
        assert_eq!(render("mntr", &snapshot(), 0).lines().count(), 476);
        let no_fds = ServerSnapshot {
            open_file_descriptors: None,
            max_file_descriptors: None,
            ..snapshot()
        };
        assert!(!render("mntr", &no_fds, 0).contains("file_descriptor"));
    }

    #[test]
    fn java_numbers() {
        let avg = |v: f64| java_avg(v);
        assert_eq!(avg(0.0), "0.0");
        assert_eq!(avg(7.0), "7.0");
        assert_eq!(avg(71.875), "71.875");
        assert_eq!(avg(0.03125), "0.0313"); // exact tie rounds up
        assert_eq!(avg(0.00015), "1.0E-4"); // the double is just below the tie
        assert_eq!(avg(0.0005), "5.0E-4");
        assert_eq!(avg(2.00005), "2.0");
        assert_eq!(avg(9999999.99995), "9999999.9999");
        assert_eq!(avg(12345678.5), "1.23456785E7");
        assert_eq!(avg(1.0e7), "1.0E7");
        assert_eq!(java_date_utc(1795301913322), "Sat Nov 21 22:58:33 UTC 2026");
        assert_eq!(java_date_utc(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(
            java_date_utc(951_782_400_000),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
    }
}
