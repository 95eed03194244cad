//! Linearizability of znode operations: a Wing–Gong–Lowe checker, partitioned
//! by path.
//!
//! The simulator records every client operation on **znodes without
//! children under a persistent parent**, each with its invocation time and,
//! if the client saw one, its reply. Such znodes are independent registers
//! (data, version, ACL and its version, ephemeral owner), so the whole
//! history is linearizable exactly when each path's sub-history is (Herlihy
//! and Wing's locality; Lowe's "P-compositionality"), and each path is
//! checked alone. What spans paths is projected onto each: a multi becomes
//! its ops on their own paths (one op per path; the atomicity across paths
//! is the txn's, checked by replay and digests), a committed closeSession
//! becomes an op on every path its session created an ephemeral on, and a
//! sequential create joins the history under the name it was given.
//!
//! Per path the search is over WGL's configurations: which operations are
//! placed in the linearization so far, and the model state. An operation may
//! be placed when it is minimal (no unplaced completed operation returned
//! before it was invoked) and the model gives its recorded outcome; an
//! operation without a reply may be placed any time after its invocation,
//! with any outcome, or never. Configurations already searched are memoised.
//! Two passes share that machinery: a budgeted depth-first pass in Lowe's
//! order ("Testing for linearizability", 2017), which walks a linearizable
//! history straight through, and, if it finds nothing within its budget, a
//! complete search level by level (all configurations with the same number
//! of completed operations placed together), which decides and explains.
//! Four reductions keep both small, each argued where it is made: an
//! operation that fits and changes nothing is placed greedily; data no read
//! returned is merged into one value; lost operations that are alike are
//! interchangeable and used oldest first; and a configuration that spent
//! fewer lost operations subsumes one that spent more. The search has hard
//! bounds (`SearchLimits`); past them the answer is `TooExpensive`, never a
//! guess.
//!
//! This module takes plain data and owns no simulator state: no I/O, no
//! clock, deterministic.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

/// Simulated time in any unit. Ties count as concurrent (an operation that
/// returns at `t` and one invoked at `t` may be ordered either way), so the
/// simulator should stamp each event with a unique, increasing number to get
/// the strongest check.
pub type Time = u64;
/// Who issued an operation (a session id, or a simulated client's number).
/// Only used to explain violations.
pub type ClientId = u64;
/// The data of a znode, as an id. The simulator writes a distinct id in every
/// create and setData (encoded in the znode's bytes) so that a read names the
/// write it saw.
pub type Value = u64;

/// Steps one path's complete search may take (an attempt to place an
/// operation, or a comparison of two configurations); past it the answer is
/// `TooExpensive`. About a second or two of work.
pub const SEARCH_STEPS_MAX: u64 = 40_000_000;
/// Configurations one path's search may hold at once (about 100 bytes each).
pub const SEARCH_STATES_MAX: usize = 1_000_000;
/// Operations on one path; indices are stored as u32.
pub const PATH_OPS_MAX: usize = 1 << 24;
/// The depth-first fast path's budget: this many steps per completed
/// operation, plus `DEPTH_FIRST_STEPS_MIN`. Past it, the complete search
/// decides. A linearizable history that is mostly sequential needs a few
/// steps per operation.
const DEPTH_FIRST_STEPS_PER_OP: u64 = 128;
const DEPTH_FIRST_STEPS_MIN: u64 = 10_000;
/// How many candidate states and concurrent operations a violation lists.
const EXPLANATION_STATES_MAX: usize = 4;
const EXPLANATION_CONCURRENT_MAX: usize = 8;

const _: () = assert!(PATH_OPS_MAX <= u32::MAX as usize, "operation indices are u32");
const _: () = assert!(SEARCH_STATES_MAX as u64 <= SEARCH_STEPS_MAX, "every configuration held costs at least one step");

/// ZooKeeper's version argument meaning "any version".
pub const VERSION_ANY: i32 = -1;

/// An operation on one znode without children, with ZooKeeper's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A persistent node with an open ACL.
    Create {
        data: Value,
    },
    /// An ephemeral node of session `owner`, with an open ACL.
    CreateEphemeral {
        data: Value,
        owner: ClientId,
    },
    /// `version` is the expected data version, or `VERSION_ANY`.
    Delete {
        version: i32,
    },
    SetData {
        data: Value,
        version: i32,
    },
    GetData,
    Exists,
    /// A multi's version check: it fails as setData would, changes nothing.
    Check {
        version: i32,
    },
    /// `version` is the expected ACL version (aversion), or `VERSION_ANY`.
    SetAcl {
        access: Access,
        version: i32,
    },
    GetAcl,
    /// A committed closeSession (asked for, or an expiry): it deletes the
    /// node if it is `session`'s ephemeral, and answers `Ok` either way.
    CloseSession {
        session: ClientId,
    },
    /// sync: answers `Ok` and changes nothing here; it matters to
    /// `relax_reads_for_any_server`, as a barrier for later reads.
    Sync,
}

/// The ACLs the simulator sets, as the permissions that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// world:anyone with every permission.
    Open,
    /// world:anyone without WRITE: setData answers NOAUTH.
    NoWrite,
}

/// What the server answered. Create, delete, check, closeSession and sync
/// answer `Ok`; setData and exists answer a `Stat` (only its data version
/// matters here: after setData it is the new version); getData answers the
/// data and its version; setACL a Stat whose ACL version matters; getACL
/// the ACL and its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Stat { version: i32 },
    Data { data: Value, version: i32 },
    AclStat { aversion: i32 },
    Acl { access: Access, aversion: i32 },
    NoNode,
    NodeExists,
    BadVersion,
    NoAuth,
}

/// A present znode: what the model keeps of it, generic over how its data
/// is represented (the search merges data no read returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Znode<D> {
    pub data: D,
    pub version: i32,
    pub aversion: i32,
    pub access: Access,
    /// The owning session of an ephemeral; 0 for a persistent node.
    pub owner: ClientId,
}

pub type Node = Znode<Value>;

impl<D> Znode<D> {
    /// A persistent node with an open ACL that was never given a new one.
    pub fn new(data: D, version: i32) -> Znode<D> {
        Znode { data, version, aversion: 0, access: Access::Open, owner: 0 }
    }
}

/// One path's state: absent, or present.
pub type NodeState = Option<Node>;

/// The reply a client received, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub time: Time,
    pub outcome: Outcome,
}

/// One operation as a client saw it. `completed` is `None` when the client
/// got no answer (connection loss, session expiry, timeout, or an error
/// outside `Outcome` such as SYSTEMERROR): the operation may have taken
/// effect at any moment after `invoked`, or never.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub client: ClientId,
    pub path: String,
    pub op: Op,
    pub invoked: Time,
    pub completed: Option<Completion>,
}

/// Bounds on one path's search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLimits {
    pub steps_max: u64,
    pub states_max: usize,
}

impl Default for SearchLimits {
    fn default() -> SearchLimits {
        SearchLimits { steps_max: SEARCH_STEPS_MAX, states_max: SEARCH_STATES_MAX }
    }
}

/// The checker's answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The first path (in path order) with no linearization.
    Violation(Box<Violation>),
    /// No violation found, but this path's search hit its bound: unknown.
    TooExpensive {
        path: String,
        ops: usize,
        steps: u64,
        states: usize,
    },
    /// The history itself is not well formed (for example a reply before
    /// its request); `index` is the entry's position in the history.
    Malformed {
        index: usize,
        reason: String,
    },
}

/// A path whose operations have no linearization, with the operations that
/// show it. Indices point into the history given to `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    /// The completed operation that could not be placed: every search got
    /// past all operations invoked before it, and none could place it.
    pub stuck: usize,
    /// States the node could be in once the operations that must precede
    /// `stuck` were placed, each with the operation that wrote it (`None`:
    /// the initial absent node).
    pub states_before: Vec<(NodeState, Option<usize>)>,
    /// Operations whose intervals overlap `stuck`'s (they could have been
    /// ordered either side of it), and operations without a reply invoked
    /// before it returned.
    pub concurrent: Vec<usize>,
    /// The above in words, with times and outcomes.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::Violation(violation) => write!(f, "{violation}"),
            Verdict::TooExpensive { path, ops, steps, states } => write!(
                f,
                "path {path}: linearizability unknown: {ops} ops, search stopped at {steps} steps, {states} states"
            ),
            Verdict::Malformed { index, reason } => write!(f, "history entry #{index} is malformed: {reason}"),
        }
    }
}

impl Op {
    /// ZooKeeper's answer to this operation on a node in `state`, and the
    /// state after it.
    pub fn apply(self, state: NodeState) -> (Outcome, NodeState) {
        let (outcome, after) = model_step(ModelOp::from_op(self, |value| value), state);
        let outcome = match outcome {
            ModelOutcome::Ok => Outcome::Ok,
            ModelOutcome::Stat { version } => Outcome::Stat { version },
            ModelOutcome::Data { data, version } => Outcome::Data { data, version },
            ModelOutcome::AclStat { aversion } => Outcome::AclStat { aversion },
            ModelOutcome::Acl { access, aversion } => Outcome::Acl { access, aversion },
            ModelOutcome::NoNode => Outcome::NoNode,
            ModelOutcome::NodeExists => Outcome::NodeExists,
            ModelOutcome::BadVersion => Outcome::BadVersion,
            ModelOutcome::NoAuth => Outcome::NoAuth,
        };
        (outcome, after)
    }
}

/// Makes a history whose reads any server may have answered checkable.
///
/// ZooKeeper's writes are linearizable (each takes effect at its proposal,
/// in zxid order, between request and reply), but its reads are not: a
/// follower or observer answers from its replica, which may lag. What a read
/// does promise: the state after some zxid no older than what its session
/// has seen, so at least the session's own completed writes. This moves each
/// completed read's invocation back to the invocation of the latest write by
/// the same client (any path, any outcome) that completed before the read
/// was sent, or to 0 if none. Sound: the read's state lies in the zxid order
/// after that write's proposal, which is after the write's invocation. A
/// completed sync counts as such a write: the server answering it had first
/// applied every txn the leader committed before it saw the sync, which it
/// saw after the sync was sent. What
/// it gives up: a read may now be ordered just before its client's own last
/// write, so read-your-writes on data is left to the zxid checks of
/// `session_order`. `client` must be the session id (a new session promises
/// nothing about an old one's writes). Entries without a reply, and writes,
/// are unchanged.
pub fn relax_reads_for_any_server(history: &mut [Entry]) {
    // Per client, its completed writes as (completed, invoked), by completion.
    let mut writes: HashMap<ClientId, Vec<(Time, Time)>> = HashMap::new();
    for entry in history.iter() {
        if let (Some(completion), false) = (entry.completed, is_read(entry.op)) {
            writes.entry(entry.client).or_default().push((completion.time, entry.invoked));
        }
    }
    // The latest invocation among writes completed by each time.
    for list in writes.values_mut() {
        list.sort_unstable();
        let mut latest = 0;
        for (_, invoked) in list.iter_mut() {
            latest = latest.max(*invoked);
            *invoked = latest;
        }
    }
    for entry in history.iter_mut() {
        if entry.completed.is_none() || !is_read(entry.op) {
            continue;
        }
        let list = writes.get(&entry.client).map_or(&[][..], Vec::as_slice);
        // Writes that completed strictly before the read was sent.
        let before = list.partition_point(|&(completed, _)| completed < entry.invoked);
        entry.invoked = before.checked_sub(1).map_or(0, |last| list[last].1);
    }
}

/// An operation a follower answers from its own replica.
fn is_read(op: Op) -> bool {
    matches!(op, Op::GetData | Op::Exists | Op::GetAcl)
}

/// Checks every path of `history` with the default bounds; every path starts
/// absent (record the setup's creates in the history).
pub fn check(history: &[Entry]) -> Verdict {
    check_with_limits(history, SearchLimits::default())
}

/// `check` with explicit bounds on each path's search.
pub fn check_with_limits(history: &[Entry], limits: SearchLimits) -> Verdict {
    for (index, entry) in history.iter().enumerate() {
        if let Some(completion) = entry.completed {
            if completion.time < entry.invoked {
                return Verdict::Malformed {
                    index,
                    reason: format!("reply at {} before its invocation at {}", completion.time, entry.invoked),
                };
            }
        }
    }
    let mut by_path: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, entry) in history.iter().enumerate() {
        by_path.entry(entry.path.as_str()).or_default().push(index);
    }
    let mut too_expensive = None;
    for (path, indices) in by_path {
        if indices.len() > PATH_OPS_MAX {
            too_expensive.get_or_insert(Verdict::TooExpensive {
                path: path.to_string(),
                ops: indices.len(),
                steps: 0,
                states: 0,
            });
            continue;
        }
        match PathSearch::new(history, &indices, limits).run() {
            SearchResult::Linearizable => {}
            SearchResult::Violation(violation) => return Verdict::Violation(violation),
            SearchResult::TooExpensive { steps, states } => {
                too_expensive.get_or_insert(Verdict::TooExpensive {
                    path: path.to_string(),
                    ops: indices.len(),
                    steps,
                    states,
                });
            }
        }
    }
    too_expensive.unwrap_or(Verdict::Linearizable)
}

// ---------------------------------------------------------------------------
// The model, generic over how data is represented.
//
// The search runs it with `Option<Value>` data: `Some(v)` for a value some
// completed getData returned, `None` for every value no read ever returned.
// Two states that differ only in never-read data answer every recorded
// operation alike (writes do not look at data, and no recorded read can
// return a never-read value), so merging them loses nothing and makes many
// more configurations equal in the memo.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ModelOp<D> {
    Create { data: D, owner: ClientId },
    Delete { version: i32 },
    SetData { data: D, version: i32 },
    GetData,
    Exists,
    Check { version: i32 },
    SetAcl { access: Access, version: i32 },
    GetAcl,
    CloseSession { session: ClientId },
    Sync,
}

impl<D> ModelOp<D> {
    fn from_op(op: Op, data: impl Fn(Value) -> D) -> ModelOp<D> {
        match op {
            Op::Create { data: value } => ModelOp::Create { data: data(value), owner: 0 },
            Op::CreateEphemeral { data: value, owner } => ModelOp::Create { data: data(value), owner },
            Op::Delete { version } => ModelOp::Delete { version },
            Op::SetData { data: value, version } => ModelOp::SetData { data: data(value), version },
            Op::GetData => ModelOp::GetData,
            Op::Exists => ModelOp::Exists,
            Op::Check { version } => ModelOp::Check { version },
            Op::SetAcl { access, version } => ModelOp::SetAcl { access, version },
            Op::GetAcl => ModelOp::GetAcl,
            Op::CloseSession { session } => ModelOp::CloseSession { session },
            Op::Sync => ModelOp::Sync,
        }
    }

    /// Whether it never changes the node: without a reply it may as well
    /// never have happened.
    fn changes_nothing(&self) -> bool {
        matches!(self, ModelOp::GetData | ModelOp::Exists | ModelOp::Check { .. } | ModelOp::GetAcl | ModelOp::Sync)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ModelOutcome<D> {
    Ok,
    Stat { version: i32 },
    Data { data: D, version: i32 },
    AclStat { aversion: i32 },
    Acl { access: Access, aversion: i32 },
    NoNode,
    NodeExists,
    BadVersion,
    NoAuth,
}

type ModelState<D> = Option<Znode<D>>;

/// The version after `current`: +1, skipping -1 when it wraps
/// (ZOOKEEPER-4743, as `pipeline::prep` does).
fn next_version(current: i32) -> i32 {
    let next = current.wrapping_add(1);
    if next == VERSION_ANY {
        0
    } else {
        next
    }
}

/// ZooKeeper's semantics for a znode without children (PrepRequestProcessor
/// and DataTree): NoNode is checked first, then the ACL (setData needs
/// WRITE; setACL needs ADMIN, and delete DELETE on the parent, which every
/// ACL here grants), then the version; -1 matches any version. A
/// closeSession deletes its own ephemerals.
fn model_step<D: Copy>(op: ModelOp<D>, state: ModelState<D>) -> (ModelOutcome<D>, ModelState<D>) {
    let version_matches = |expected: i32, current: i32| expected == VERSION_ANY || expected == current;
    match (op, state) {
        (ModelOp::Create { data, owner }, None) => {
            (ModelOutcome::Ok, Some(Znode { data, version: 0, aversion: 0, access: Access::Open, owner }))
        }
        (ModelOp::Create { .. }, Some(_)) => (ModelOutcome::NodeExists, state),
        (ModelOp::CloseSession { session }, Some(node)) if node.owner == session => (ModelOutcome::Ok, None),
        (ModelOp::CloseSession { .. } | ModelOp::Sync, _) => (ModelOutcome::Ok, state),
        (_, None) => (ModelOutcome::NoNode, None),
        (ModelOp::Delete { version }, Some(node)) => {
            if version_matches(version, node.version) {
                (ModelOutcome::Ok, None)
            } else {
                (ModelOutcome::BadVersion, state)
            }
        }
        (ModelOp::SetData { .. }, Some(node)) if node.access == Access::NoWrite => (ModelOutcome::NoAuth, state),
        (ModelOp::SetData { data, version }, Some(node)) => {
            if version_matches(version, node.version) {
                let version = next_version(node.version);
                (ModelOutcome::Stat { version }, Some(Znode { data, version, ..node }))
            } else {
                (ModelOutcome::BadVersion, state)
            }
        }
        (ModelOp::Check { version }, Some(node)) => {
            let outcome = if version_matches(version, node.version) { ModelOutcome::Ok } else { ModelOutcome::BadVersion };
            (outcome, state)
        }
        (ModelOp::SetAcl { access, version }, Some(node)) => {
            if version_matches(version, node.aversion) {
                let aversion = next_version(node.aversion);
                (ModelOutcome::AclStat { aversion }, Some(Znode { access, aversion, ..node }))
            } else {
                (ModelOutcome::BadVersion, state)
            }
        }
        (ModelOp::GetData, Some(node)) => (ModelOutcome::Data { data: node.data, version: node.version }, state),
        (ModelOp::Exists, Some(node)) => (ModelOutcome::Stat { version: node.version }, state),
        (ModelOp::GetAcl, Some(node)) => (ModelOutcome::Acl { access: node.access, aversion: node.aversion }, state),
    }
}

type Data = Option<Value>;
type State = ModelState<Data>;

// ---------------------------------------------------------------------------
// One path's search.
//
// `depth_first` is Lowe's order: completed operations before lost ones,
// backtracking on failure. It finds a linearization of a mostly sequential
// history in a few steps per operation, but with lost operations available
// forever it is a poor way to prove there is none: it reaches a placed set
// and state first along paths that spent more lost operations than needed,
// and proving a late violation then revisits the same positions with every
// cheaper combination (measured: states growing much faster than the
// history). So it only ever answers "linearizable", within a budget.
//
// `by_levels` is complete. A level is the configurations with the same
// number of completed operations placed. Each level is first closed under
// placing lost operations (which keep a configuration in its level), and
// every configuration places one more completed operation to make the next
// level. A level keeps, per placed set and state, only configurations no
// other subsumes, so all the ways to reach a level meet before any is
// extended, and a violation is the first empty level: nothing before it is
// searched again.

/// A completed operation, in the order of invocation.
struct CompletedOp {
    input: usize,
    op: ModelOp<Data>,
    outcome: ModelOutcome<Data>,
    invoked: Time,
    returned: Time,
}

/// Operations without a reply that are interchangeable: the same operation
/// with the same (merged) data. If a linearization uses some of them, it can
/// use the oldest ones instead (an older one was invoked earlier, so it may
/// take a younger one's place), so the search only ever places a class's
/// members oldest first. This turns the 2^n subsets of n lost
/// `setData(-1)`s into n + 1 counts.
struct PendingClass {
    op: ModelOp<Data>,
    /// Classes whose members may stand in for each other (`subsumes`): all
    /// deletes; the setDatas of one value; each create alone.
    family: u32,
    /// A delete or setData with `VERSION_ANY`, which covers its family's
    /// versioned members.
    any_version: bool,
    /// (invocation time, index in the history), oldest first.
    members: Vec<(Time, usize)>,
}

/// Which completed operations are placed, exactly: every one before
/// `first_open` (the first unplaced one) and those in `window` (sorted, all
/// after `first_open`); and the model state. Listing only what lies past the
/// first unplaced operation keeps a key a few words long instead of a bitset
/// of the whole path: anything placed past it was invoked before it returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    first_open: u32,
    window: SmallVec<[u32; 4]>,
    state: State,
}

/// (class, members placed) for each class with members placed, by class.
type Counts = SmallVec<[(u32, u32); 2]>;

/// One configuration, and the operation that last changed its state (for
/// explanations only).
#[derive(Clone, Debug)]
struct Config {
    key: Key,
    counts: Counts,
    writer: Option<usize>,
}

/// Whether configuration `a` (pending counts `a`) can do everything `b` can,
/// everything else being equal; then `b` need not be searched.
///
/// `a` can mimic `b`'s every continuation if each lost operation `b` still
/// has can be matched to a distinct one `a` still has with the same effect
/// wherever it changes anything. Within a class, `a` placing fewer leaves it
/// the same members plus older ones. Across a family (the deletes; the
/// setDatas of one value), an any-version member covers a versioned one:
/// where `setData(d, v)` changes the node, `setData(d, -1)` changes it the
/// same way. The members `a` lacks and must stand in for are ones `a` placed,
/// so they are invoked and the stand-ins, also placed in `b`, are invoked:
/// no timing condition remains. Per family that is: `a` placed no more
/// any-version members than `b` (`slack` = how many fewer), and the
/// versioned members `a` placed beyond `b` (`deficit`) fit in that slack.
fn subsumes(classes: &[PendingClass], a: &Counts, b: &Counts) -> bool {
    // (family, slack, deficit) for each family touched.
    let mut families: SmallVec<[(u32, i64, i64); 8]> = SmallVec::new();
    // Both are sorted by class: walk them together, each class once.
    let (mut i, mut j) = (0, 0);
    loop {
        let (class, in_a, in_b) = match (a.get(i), b.get(j)) {
            (None, None) => break,
            (Some(&(ka, na)), Some(&(kb, nb))) if ka == kb => {
                (i, j) = (i + 1, j + 1);
                (ka, na, nb)
            }
            (Some(&(ka, na)), Some(&(kb, _))) if ka < kb => {
                i += 1;
                (ka, na, 0)
            }
            (Some(&(ka, na)), None) => {
                i += 1;
                (ka, na, 0)
            }
            (_, Some(&(kb, nb))) => {
                j += 1;
                (kb, 0, nb)
            }
        };
        let Some(class) = classes.get(class as usize) else { return false };
        let index = match families.iter().position(|(family, _, _)| *family == class.family) {
            Some(index) => index,
            None => {
                families.push((class.family, 0, 0));
                families.len() - 1
            }
        };
        let (in_a, in_b) = (i64::from(in_a), i64::from(in_b));
        let (_, slack, deficit) = &mut families[index];
        if class.any_version {
            *slack = in_b - in_a;
        } else if in_a > in_b {
            *deficit += in_a - in_b;
        }
    }
    families.iter().all(|&(_, slack, deficit)| slack >= 0 && deficit <= slack)
}

/// The configurations with a given number of completed operations placed.
/// `configs` in insertion order (so the search is deterministic whatever the
/// hash), `None` once a later one subsumed it; `by_key` indexes them.
#[derive(Default)]
struct Level {
    configs: Vec<Option<Config>>,
    by_key: HashMap<Key, SmallVec<[u32; 2]>>,
    live: usize,
}

impl Level {
    /// Adds `config` unless one already here subsumes it, dropping those it
    /// subsumes. Returns how many configurations it compared with (work the
    /// step budget must count: a wide level makes each insert dearer).
    fn insert(&mut self, classes: &[PendingClass], config: Config) -> u64 {
        let indices = self.by_key.entry(config.key.clone()).or_default();
        let compared = 2 * indices.len() as u64;
        for &index in indices.iter() {
            if let Some(existing) = &self.configs[index as usize] {
                if subsumes(classes, &existing.counts, &config.counts) {
                    return compared;
                }
            }
        }
        let configs = &mut self.configs;
        let live = &mut self.live;
        indices.retain(|index| {
            let slot = &mut configs[*index as usize];
            match slot {
                Some(existing) if !subsumes(classes, &config.counts, &existing.counts) => true,
                Some(_) => {
                    *slot = None;
                    *live -= 1;
                    false
                }
                None => false,
            }
        });
        indices.push(configs.len() as u32);
        configs.push(Some(config));
        *live += 1;
        compared
    }
}

enum SearchResult {
    Linearizable,
    Violation(Box<Violation>),
    TooExpensive { steps: u64, states: usize },
}

/// The step budget of the phase running ran out.
struct OutOfSteps;

struct PathSearch<'h> {
    history: &'h [Entry],
    path: &'h str,
    completed: Vec<CompletedOp>,
    classes: Vec<PendingClass>,
    limits: SearchLimits,
    /// Model steps taken, and the most the current phase may take.
    steps: u64,
    steps_budget: u64,
}

impl<'h> PathSearch<'h> {
    fn new(history: &'h [Entry], indices: &[usize], limits: SearchLimits) -> PathSearch<'h> {
        let path = indices.first().map_or("", |&index| history[index].path.as_str());
        // Values some completed getData returned: the only data worth telling apart.
        let read_values: HashSet<Value> = indices
            .iter()
            .filter_map(|&index| match history[index].completed {
                Some(Completion { outcome: Outcome::Data { data, .. }, .. }) => Some(data),
                _ => None,
            })
            .collect();
        let merge = |value: Value| read_values.contains(&value).then_some(value);

        let mut completed = Vec::new();
        let mut classes: Vec<PendingClass> = Vec::new();
        let mut class_of: HashMap<ModelOp<Data>, usize> = HashMap::new();
        let mut sorted = indices.to_vec();
        sorted.sort_by_key(|&index| (history[index].invoked, index));
        for index in sorted {
            let entry = &history[index];
            let op = ModelOp::from_op(entry.op, &merge);
            match entry.completed {
                Some(completion) => completed.push(CompletedOp {
                    input: index,
                    op,
                    outcome: outcome_in_model(completion.outcome),
                    invoked: entry.invoked,
                    returned: completion.time,
                }),
                // A read without a reply changes nothing: it may simply
                // never have happened.
                None if op.changes_nothing() => {}
                None => {
                    let class = *class_of.entry(op).or_insert_with(|| {
                        let any_version = matches!(
                            op,
                            ModelOp::Delete { version: VERSION_ANY } | ModelOp::SetData { version: VERSION_ANY, .. }
                        );
                        classes.push(PendingClass { op, family: 0, any_version, members: Vec::new() });
                        classes.len() - 1
                    });
                    classes[class].members.push((entry.invoked, index));
                }
            }
        }
        let mut families: HashMap<ModelOp<Data>, u32> = HashMap::new();
        for class in &mut classes {
            let family = match class.op {
                ModelOp::Delete { .. } => ModelOp::Delete { version: VERSION_ANY },
                ModelOp::SetData { data, .. } => ModelOp::SetData { data, version: VERSION_ANY },
                op => op,
            };
            let next = families.len() as u32;
            class.family = *families.entry(family).or_insert(next);
        }
        PathSearch { history, path, completed, classes, limits, steps: 0, steps_budget: 0 }
    }

    /// The minimal unplaced completed operations of `key` (none that is
    /// unplaced returned before they were invoked; a return and an
    /// invocation at the same time are concurrent), into `out`; returns the
    /// earliest unplaced return, before which lost operations must have been
    /// invoked to be placed now.
    fn minimal(&self, key: &Key, out: &mut SmallVec<[u32; 8]>) -> Time {
        let is_placed = |j: usize| key.window.binary_search(&(j as u32)).is_ok();
        let mut bound = Time::MAX;
        for (j, op) in self.completed.iter().enumerate().skip(key.first_open as usize) {
            // Sorted by invocation: everything further is invoked later still.
            if op.invoked > bound {
                break;
            }
            if !is_placed(j) {
                out.push(j as u32);
                bound = bound.min(op.returned);
            }
        }
        out.retain(|j| self.completed[*j as usize].invoked <= bound);
        bound
    }

    /// `key` with completed operation `j` placed and `state` after it.
    fn place(&self, key: &Key, j: u32, state: State) -> Key {
        let mut window = key.window.clone();
        let mut first_open = key.first_open;
        if j == first_open {
            first_open += 1;
            while window.first() == Some(&first_open) {
                window.remove(0);
                first_open += 1;
            }
        } else {
            let at = window.partition_point(|&k| k < j);
            window.insert(at, j);
        }
        Key { first_open, window, state }
    }

    fn step(&mut self) -> Result<(), OutOfSteps> {
        self.steps_add(1)
    }

    fn steps_add(&mut self, steps: u64) -> Result<(), OutOfSteps> {
        self.steps = self.steps.saturating_add(steps);
        if self.steps > self.steps_budget {
            return Err(OutOfSteps);
        }
        Ok(())
    }

    fn start(&self) -> Config {
        Config {
            key: Key { first_open: 0, window: SmallVec::new(), state: None },
            counts: SmallVec::new(),
            writer: None,
        }
    }

    fn placed_all(&self, config: &Config) -> bool {
        config.key.first_open as usize >= self.completed.len()
    }

    /// The configurations one placement away from `config`, into `out`:
    /// completed operations first (marked `true`), in invocation order, then
    /// lost ones (`false`).
    fn expand(&mut self, config: &Config, out: &mut Vec<(Config, bool)>) -> Result<(), OutOfSteps> {
        let first = out.len();
        let state = config.key.state;
        let mut minimal: SmallVec<[u32; 8]> = SmallVec::new();
        let bound = self.minimal(&config.key, &mut minimal);
        for &j in &minimal {
            self.step()?;
            let op = &self.completed[j as usize];
            let (outcome, after) = model_step(op.op, state);
            if outcome != op.outcome {
                continue;
            }
            let writer = if after != state { Some(op.input) } else { config.writer };
            let successor = Config { key: self.place(&config.key, j, after), counts: config.counts.clone(), writer };
            // One that fits and leaves the state alone (a read, or a write
            // that failed) can be placed now without loss: a linearization
            // that places it later can move it here, since nothing it must
            // follow is unplaced and moving it earlier changes no other
            // operation's state. So it is the only successor worth searching.
            // Not a closeSession: its outcome is Ok whether or not it
            // deletes, so later it may change what it leaves alone now.
            if after == state && !matches!(op.op, ModelOp::CloseSession { .. }) {
                out.truncate(first);
                out.push((successor, true));
                return Ok(());
            }
            out.push((successor, true));
        }
        // Lost operations: each class's oldest unplaced member, if invoked
        // in time. One that would change nothing is the same as never placing
        // it, which stays possible anyway.
        for class in 0..self.classes.len() {
            let placed = config.counts.iter().find(|(k, _)| *k as usize == class).map_or(0, |&(_, n)| n);
            let pending = &self.classes[class];
            let Some(&(invoked, input)) = pending.members.get(placed as usize) else { continue };
            if invoked > bound {
                continue;
            }
            let (_, after) = model_step(pending.op, state);
            self.step()?;
            if after == state {
                continue;
            }
            let mut counts = config.counts.clone();
            match counts.iter_mut().find(|(k, _)| *k as usize == class) {
                Some((_, n)) => *n += 1,
                None => {
                    let at = counts.partition_point(|(k, _)| (*k as usize) < class);
                    counts.insert(at, (class as u32, 1));
                }
            }
            let key = Key { state: after, ..config.key.clone() };
            out.push((Config { key, counts, writer: Some(input) }, false));
        }
        Ok(())
    }

    fn run(mut self) -> SearchResult {
        if self.depth_first() {
            return SearchResult::Linearizable;
        }
        self.by_levels()
    }

    /// The fast path, Lowe's order: depth first, completed operations before
    /// lost ones, so a linearizable history is usually walked straight
    /// through. It only ever answers "linearizable": when it finds no
    /// linearization within a budget proportional to the history,
    /// `by_levels` decides (and explains).
    fn depth_first(&mut self) -> bool {
        let ops = self.completed.len() as u64;
        self.steps_budget = self.limits.steps_max.min(DEPTH_FIRST_STEPS_MIN + DEPTH_FIRST_STEPS_PER_OP * ops);
        let start = self.start();
        if self.placed_all(&start) {
            return true;
        }
        // Per key, the pending counts reached (a subsumed configuration is
        // not searched again: see `subsumes`).
        let mut memo: HashMap<Key, SmallVec<[Counts; 1]>> = HashMap::new();
        let mut remembered = 0;
        let mut successors = Vec::new();
        if self.expand(&start, &mut successors).is_err() {
            return false;
        }
        // Each frame: a configuration's successors, and the next to try.
        let mut stack: Vec<(Vec<(Config, bool)>, usize)> = vec![(successors, 0)];
        while let Some((successors, next)) = stack.last_mut() {
            let Some((config, _)) = successors.get(*next).cloned() else {
                stack.pop();
                continue;
            };
            *next += 1;
            if self.placed_all(&config) {
                return true;
            }
            let seen = memo.entry(config.key.clone()).or_default();
            let compared = seen.len() as u64;
            let subsumed = seen.iter().any(|other| subsumes(&self.classes, other, &config.counts));
            if !subsumed {
                seen.push(config.counts.clone());
            }
            if self.steps_add(compared).is_err() {
                return false;
            }
            if subsumed {
                continue;
            }
            remembered += 1;
            if remembered > self.limits.states_max {
                return false;
            }
            let mut successors = Vec::new();
            if self.expand(&config, &mut successors).is_err() {
                return false;
            }
            stack.push((successors, 0));
        }
        false
    }

    /// The complete search, level by level (see the top of this section).
    fn by_levels(&mut self) -> SearchResult {
        self.steps_budget = self.steps.saturating_add(self.limits.steps_max);
        let too_expensive =
            |search: &PathSearch, states: usize| SearchResult::TooExpensive { steps: search.steps, states };
        let mut level = Level::default();
        let start = self.start();
        level.insert(&self.classes, start);
        let mut successors = Vec::new();
        for _ in 0..self.completed.len() {
            let mut next = Level::default();
            // The level grows while it is walked: placing lost operations
            // keeps a configuration in its level.
            let mut index = 0;
            while index < level.configs.len() {
                let Some(config) = level.configs[index].clone() else {
                    index += 1;
                    continue;
                };
                index += 1;
                successors.clear();
                if self.expand(&config, &mut successors).is_err() {
                    return too_expensive(self, level.configs.len() + next.configs.len());
                }
                let mut compared = 0;
                for (successor, completes) in successors.drain(..) {
                    compared += if completes {
                        next.insert(&self.classes, successor)
                    } else {
                        level.insert(&self.classes, successor)
                    };
                }
                if self.steps_add(compared).is_err() {
                    return too_expensive(self, level.configs.len() + next.configs.len());
                }
                // Dropped configurations still hold their slot: count them.
                if level.configs.len() + next.configs.len() > self.limits.states_max {
                    return too_expensive(self, level.configs.len() + next.configs.len());
                }
            }
            if next.live == 0 {
                return SearchResult::Violation(Box::new(self.explain(&level)));
            }
            level = next;
        }
        SearchResult::Linearizable
    }

    /// Explains why `level`, the last one reached, has no successor: the
    /// unplaced operation furthest along any of its configurations, the
    /// states those configurations hold, and what overlaps it.
    fn explain(&self, level: &Level) -> Violation {
        let history = self.history;
        let live = || level.configs.iter().flatten();
        let furthest = live().map(|config| config.key.first_open).max().unwrap_or(0);
        let Some(stuck) = self.completed.get(furthest as usize) else {
            return Violation {
                path: self.path.to_string(),
                stuck: 0,
                states_before: Vec::new(),
                concurrent: Vec::new(),
                explanation: format!("path {}: not linearizable", self.path),
            };
        };
        let mut states_before: Vec<(NodeState, Option<usize>)> = Vec::new();
        for config in live().filter(|config| config.key.first_open == furthest) {
            // Show the real data of the write, not the merged value.
            let writer = config.writer;
            let node = config.key.state.map(|node| Znode {
                data: node.data.or_else(|| writer.and_then(|w| written_value(history[w].op))).unwrap_or(0),
                version: node.version,
                aversion: node.aversion,
                access: node.access,
                owner: node.owner,
            });
            if states_before.len() < EXPLANATION_STATES_MAX && !states_before.iter().any(|(seen, _)| *seen == node) {
                states_before.push((node, writer));
            }
        }
        let mut concurrent: Vec<usize> = self
            .completed
            .iter()
            .filter(|op| op.input != stuck.input && op.invoked <= stuck.returned && op.returned >= stuck.invoked)
            .map(|op| op.input)
            .chain(self.classes.iter().flat_map(|class| {
                class.members.iter().filter(|(invoked, _)| *invoked <= stuck.returned).map(|&(_, index)| index)
            }))
            .collect();
        concurrent.sort_unstable_by_key(|&index| (history[index].invoked, index));
        concurrent.truncate(EXPLANATION_CONCURRENT_MAX);

        let mut text = String::new();
        let _ = writeln!(text, "path {}: not linearizable; no order of its operations explains:", self.path);
        let _ = writeln!(text, "  {}", describe(history, stuck.input));
        let _ = writeln!(text, "  once every operation that must precede it is placed, the node can only be:");
        for (node, writer) in &states_before {
            let what = match node {
                None => "absent".to_string(),
                Some(node) => {
                    let mut what = format!("data {} version {}", node.data, node.version);
                    if node.aversion != 0 || node.access != Access::Open {
                        let _ = write!(what, " ACL {:?} aversion {}", node.access, node.aversion);
                    }
                    if node.owner != 0 {
                        let _ = write!(what, " ephemeral of {:#x}", node.owner);
                    }
                    what
                }
            };
            match writer {
                Some(w) => {
                    let _ = writeln!(text, "    {what}, left by {}", describe(history, *w));
                }
                None => {
                    let _ = writeln!(text, "    {what} (initial)");
                }
            }
        }
        if concurrent.is_empty() {
            let _ = writeln!(text, "  and no operation overlaps it");
        } else {
            let _ = writeln!(text, "  and placing it among these overlapping operations does not help:");
            for &index in &concurrent {
                let _ = writeln!(text, "    {}", describe(history, index));
            }
        }
        Violation { path: self.path.to_string(), stuck: stuck.input, states_before, concurrent, explanation: text }
    }
}

fn outcome_in_model(outcome: Outcome) -> ModelOutcome<Data> {
    match outcome {
        Outcome::Ok => ModelOutcome::Ok,
        Outcome::Stat { version } => ModelOutcome::Stat { version },
        Outcome::Data { data, version } => ModelOutcome::Data { data: Some(data), version },
        Outcome::AclStat { aversion } => ModelOutcome::AclStat { aversion },
        Outcome::Acl { access, aversion } => ModelOutcome::Acl { access, aversion },
        Outcome::NoNode => ModelOutcome::NoNode,
        Outcome::NodeExists => ModelOutcome::NodeExists,
        Outcome::BadVersion => ModelOutcome::BadVersion,
        Outcome::NoAuth => ModelOutcome::NoAuth,
    }
}

fn written_value(op: Op) -> Option<Value> {
    match op {
        Op::Create { data } | Op::CreateEphemeral { data, .. } | Op::SetData { data, .. } => Some(data),
        _ => None,
    }
}

/// "#12 client 3 SetData { data: 7, version: -1 } @40..@45 -> Stat { version: 2 }"
fn describe(history: &[Entry], index: usize) -> String {
    let Some(entry) = history.get(index) else { return format!("#{index} (not in history)") };
    match entry.completed {
        Some(completion) => format!(
            "#{index} client {} {:?} @{}..@{} -> {:?}",
            entry.client, entry.op, entry.invoked, completion.time, completion.outcome
        ),
        None => format!("#{index} client {} {:?} @{}..(no reply)", entry.client, entry.op, entry.invoked),
    }
}

#[cfg(test)]
#[path = "linearizable_tests.rs"]
mod tests;
