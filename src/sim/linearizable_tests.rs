//! Hand-written histories (linearizable ones, and the violations the checker
//! exists to catch), a brute-force oracle for tiny histories, randomized
//! histories from the model with planted perturbations, and timings.

use super::*;
use crate::rng::Rng;

use Op::{Create, Delete, Exists, GetData, SetData};
use Outcome::{BadVersion, Data, NoNode, NodeExists, Stat};

const A: &str = "/app/a";
const B: &str = "/app/b";

fn done(client: ClientId, path: &str, op: Op, invoked: Time, returned: Time, outcome: Outcome) -> Entry {
    Entry { client, path: path.to_string(), op, invoked, completed: Some(Completion { time: returned, outcome }) }
}

fn lost(client: ClientId, path: &str, op: Op, invoked: Time) -> Entry {
    Entry { client, path: path.to_string(), op, invoked, completed: None }
}

fn set(data: Value) -> Op {
    SetData { data, version: VERSION_ANY }
}

fn assert_linearizable(history: &[Entry]) {
    let verdict = check(history);
    assert!(verdict.is_linearizable(), "expected linearizable, got: {verdict}");
    assert!(brute_force(history).unwrap_or(true), "brute force disagrees");
}

/// The violation, after checking the brute-force oracle agrees (when the
/// history is small enough for it).
fn assert_violation(history: &[Entry]) -> Violation {
    let verdict = check(history);
    assert!(!brute_force(history).unwrap_or(false), "brute force finds a linearization");
    match verdict {
        Verdict::Violation(violation) => {
            println!("{violation}");
            *violation
        }
        other => panic!("expected a violation, got: {other}"),
    }
}

// ---------------------------------------------------------------------------
// The model.

#[test]
fn model_follows_zookeeper() {
    let node = |data, version| Some(Node::new(data, version));
    assert_eq!(Create { data: 1 }.apply(None), (Outcome::Ok, node(1, 0)));
    assert_eq!(Create { data: 2 }.apply(node(1, 0)), (NodeExists, node(1, 0)));
    assert_eq!(set(2).apply(node(1, 0)), (Stat { version: 1 }, node(2, 1)));
    assert_eq!(SetData { data: 2, version: 0 }.apply(node(1, 0)), (Stat { version: 1 }, node(2, 1)));
    assert_eq!(SetData { data: 2, version: 5 }.apply(node(1, 0)), (BadVersion, node(1, 0)));
    assert_eq!(set(2).apply(None), (NoNode, None));
    assert_eq!(Delete { version: 3 }.apply(node(1, 0)), (BadVersion, node(1, 0)));
    assert_eq!(Delete { version: 0 }.apply(node(1, 0)), (Outcome::Ok, None));
    assert_eq!(Delete { version: VERSION_ANY }.apply(None), (NoNode, None));
    assert_eq!(GetData.apply(node(7, 3)), (Data { data: 7, version: 3 }, node(7, 3)));
    assert_eq!(Exists.apply(node(7, 3)), (Stat { version: 3 }, node(7, 3)));
    assert_eq!(Exists.apply(None), (NoNode, None));
    // The version skips -1 when it wraps (ZOOKEEPER-4743).
    assert_eq!(set(2).apply(node(1, i32::MAX)), (Stat { version: i32::MIN }, node(2, i32::MIN)));
    assert_eq!(set(2).apply(node(1, -2)), (Stat { version: 0 }, node(2, 0)));
}

// ---------------------------------------------------------------------------
// Linearizable histories.

#[test]
fn empty_and_sequential_histories_are_linearizable() {
    assert_linearizable(&[]);
    assert_linearizable(&[
        done(1, A, GetData, 0, 1, NoNode),
        done(1, A, Create { data: 1 }, 2, 3, Outcome::Ok),
        done(2, A, Create { data: 2 }, 4, 5, NodeExists),
        done(1, A, set(3), 6, 7, Stat { version: 1 }),
        done(2, A, SetData { data: 4, version: 0 }, 8, 9, BadVersion),
        done(2, A, SetData { data: 4, version: 1 }, 10, 11, Stat { version: 2 }),
        done(1, A, GetData, 12, 13, Data { data: 4, version: 2 }),
        done(1, A, Exists, 14, 15, Stat { version: 2 }),
        done(2, A, Delete { version: 1 }, 16, 17, BadVersion),
        done(2, A, Delete { version: 2 }, 18, 19, Outcome::Ok),
        done(1, A, Exists, 20, 21, NoNode),
        done(1, A, set(5), 22, 23, NoNode),
        done(1, A, Delete { version: VERSION_ANY }, 24, 25, NoNode),
        done(2, A, Create { data: 6 }, 26, 27, Outcome::Ok),
        done(2, A, GetData, 28, 29, Data { data: 6, version: 0 }),
    ]);
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order() {
    // Two overlapping setData(-1): the one that answered version 1 went
    // first, although it was invoked second.
    assert_linearizable(&[
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 10, Stat { version: 2 }),
        done(2, A, set(3), 3, 9, Stat { version: 1 }),
        done(3, A, GetData, 11, 12, Data { data: 2, version: 2 }),
    ]);
    // Two overlapping creates: one wins, either one.
    assert_linearizable(&[
        done(1, A, Create { data: 1 }, 0, 10, NodeExists),
        done(2, A, Create { data: 2 }, 1, 5, Outcome::Ok),
        done(3, A, GetData, 11, 12, Data { data: 2, version: 0 }),
    ]);
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    let base = [done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok), done(1, A, set(2), 2, 10, Stat { version: 1 })];
    let mut old = base.to_vec();
    old.push(done(2, A, GetData, 3, 9, Data { data: 1, version: 0 }));
    assert_linearizable(&old);
    let mut new = base.to_vec();
    new.push(done(2, A, GetData, 3, 9, Data { data: 2, version: 1 }));
    assert_linearizable(&new);
    // Both, if the reads are ordered old then new.
    let mut both = base.to_vec();
    both.push(done(2, A, GetData, 3, 5, Data { data: 1, version: 0 }));
    both.push(done(3, A, GetData, 6, 8, Data { data: 2, version: 1 }));
    assert_linearizable(&both);
    // A reply and an invocation at the same time count as concurrent.
    assert_linearizable(&[done(1, A, Create { data: 1 }, 0, 5, Outcome::Ok), done(2, A, GetData, 5, 6, NoNode)]);
}

#[test]
fn a_lost_write_that_took_effect() {
    // The client of the setData lost its connection; a later read shows
    // the write happened.
    assert_linearizable(&[
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        lost(1, A, set(2), 2),
        done(2, A, GetData, 20, 21, Data { data: 2, version: 1 }),
        done(2, A, set(3), 22, 23, Stat { version: 2 }),
    ]);
    // A lost create, seen by another client.
    assert_linearizable(&[lost(1, A, Create { data: 1 }, 0), done(2, A, Exists, 5, 6, Stat { version: 0 })]);
    // A lost write may take effect long after reads that did not see it.
    assert_linearizable(&[
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        lost(1, A, set(2), 2),
        done(2, A, GetData, 10, 11, Data { data: 1, version: 0 }),
        done(2, A, GetData, 20, 21, Data { data: 1, version: 0 }),
        done(3, A, GetData, 30, 31, Data { data: 2, version: 1 }),
    ]);
}

#[test]
fn a_lost_write_that_never_took_effect() {
    assert_linearizable(&[
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        lost(1, A, set(2), 2),
        lost(1, A, Delete { version: VERSION_ANY }, 3),
        lost(4, A, GetData, 3),
        done(2, A, GetData, 10, 11, Data { data: 1, version: 0 }),
        done(2, A, set(3), 12, 13, Stat { version: 1 }),
        done(2, A, GetData, 14, 15, Data { data: 3, version: 1 }),
    ]);
}

#[test]
fn many_lost_writes_are_cheap() {
    // 200 lost setData(-1) whose data nobody read: interchangeable, so the
    // search counts them instead of choosing subsets. Some took effect
    // (the version jumps by 3 at the end), most did not.
    let mut history = vec![done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok)];
    for i in 0..200u64 {
        history.push(lost(2, A, set(1000 + i), 2 + i));
        history.push(done(3, A, Exists, 2 + i, 3 + i, Stat { version: 0 }));
    }
    history.push(done(3, A, Exists, 300, 301, Stat { version: 3 }));
    assert!(check(&history).is_linearizable());
    // And the same ending in a violation must be found, not given up on:
    // the version cannot go back.
    history.push(done(3, A, Exists, 302, 303, Stat { version: 2 }));
    let Verdict::Violation(violation) = check(&history) else { panic!("expected a violation") };
    assert_eq!(violation.stuck, history.len() - 1);
}

#[test]
fn many_concurrent_reads_are_cheap() {
    // 64 reads all overlapping one write: 2^64 subsets, but a read that fits
    // is placed greedily.
    let mut history =
        vec![done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok), done(1, A, set(2), 2, 1000, Stat { version: 1 })];
    for i in 0..64 {
        let seen = if i % 2 == 0 { Data { data: 1, version: 0 } } else { Data { data: 2, version: 1 } };
        // Old values first, then new ones: reads 0..32 end before 32.. start.
        let (invoked, returned) = if i < 32 { (3 + i, 40 + i) } else { (100 + i, 200 + i) };
        let seen = if i < 32 { Data { data: 1, version: 0 } } else { seen };
        history.push(done(2 + i, A, GetData, invoked, returned, seen));
    }
    let verdict = check(&history);
    assert!(verdict.is_linearizable(), "{verdict}");
}

#[test]
fn paths_are_independent() {
    assert_linearizable(&[
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, B, Create { data: 2 }, 2, 3, Outcome::Ok),
        done(2, A, GetData, 4, 5, Data { data: 1, version: 0 }),
        done(2, B, Delete { version: 0 }, 6, 7, Outcome::Ok),
        done(2, A, Exists, 8, 9, Stat { version: 0 }),
    ]);
}

// ---------------------------------------------------------------------------
// Violations it must catch.

#[test]
fn catches_a_stale_read_after_a_completed_write() {
    // Client 2 saw the new value; client 3, reading afterwards, the old one.
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 1 }),
        done(2, A, GetData, 4, 5, Data { data: 2, version: 1 }),
        done(3, A, GetData, 6, 7, Data { data: 1, version: 0 }),
    ];
    let violation = assert_violation(&history);
    assert_eq!(violation.path, A);
    assert_eq!(violation.stuck, 3);
    assert_eq!(violation.states_before, vec![(Some(Node::new(2, 1)), Some(1))]);
    assert!(violation.concurrent.is_empty());
    assert!(violation.explanation.contains("#3 client 3 GetData @6..@7 -> Data { data: 1, version: 0 }"));
    assert!(violation.explanation.contains("data 2 version 1, left by #1 client 1 SetData"));
}

#[test]
fn catches_a_lost_write() {
    // A setData was acknowledged, and then the node carries on as if it
    // never happened: the next read and the next write build on version 0.
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 1 }),
        done(2, A, GetData, 4, 5, Data { data: 1, version: 0 }),
        done(2, A, SetData { data: 3, version: 0 }, 6, 7, Stat { version: 1 }),
    ];
    let violation = assert_violation(&history);
    assert_eq!(violation.stuck, 2);
}

#[test]
fn catches_two_successful_creates() {
    let history =
        [done(1, A, Create { data: 1 }, 0, 10, Outcome::Ok), done(2, A, Create { data: 2 }, 1, 11, Outcome::Ok)];
    let violation = assert_violation(&history);
    assert_eq!(violation.stuck, 1);
    assert_eq!(violation.concurrent, vec![0]);
    // Also when a delete could have separated them, but did not succeed.
    assert_violation(&[
        done(1, A, Create { data: 1 }, 0, 10, Outcome::Ok),
        done(3, A, Delete { version: 5 }, 1, 12, BadVersion),
        done(2, A, Create { data: 2 }, 1, 11, Outcome::Ok),
    ]);
}

#[test]
fn catches_a_version_going_backwards() {
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 1 }),
        done(1, A, set(3), 4, 5, Stat { version: 2 }),
        done(2, A, Exists, 6, 7, Stat { version: 1 }),
    ];
    assert_eq!(assert_violation(&history).stuck, 3);
}

#[test]
fn catches_a_read_of_data_never_written() {
    let history =
        [done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok), done(2, A, GetData, 2, 3, Data { data: 99, version: 0 })];
    assert_eq!(assert_violation(&history).stuck, 1);
    // A read before anything was created.
    assert_eq!(assert_violation(&[done(2, A, GetData, 0, 1, Data { data: 1, version: 0 })]).stuck, 0);
}

#[test]
fn catches_a_write_that_took_effect_twice() {
    // One setData, and the version moved by two.
    let history = [done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok), done(1, A, set(2), 2, 3, Stat { version: 2 })];
    assert_eq!(assert_violation(&history).stuck, 1);
    // The same with a lost write: it may take effect once, not twice.
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        lost(1, A, set(2), 2),
        done(2, A, GetData, 4, 5, Data { data: 2, version: 1 }),
        done(2, A, GetData, 6, 7, Data { data: 2, version: 2 }),
    ];
    assert_eq!(assert_violation(&history).stuck, 3);
}

#[test]
fn catches_a_lost_write_taking_effect_before_it_was_sent() {
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(2, A, GetData, 2, 3, Data { data: 2, version: 1 }),
        lost(1, A, set(2), 5),
    ];
    let violation = assert_violation(&history);
    assert_eq!(violation.stuck, 1);
}

#[test]
fn catches_writes_out_of_real_time_order() {
    // The second write began after the first was acknowledged, yet claims
    // the earlier version. Overlapping, this would be fine.
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 2 }),
        done(2, A, set(3), 4, 5, Stat { version: 1 }),
    ];
    assert_violation(&history);
    let overlapping = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 5, Stat { version: 2 }),
        done(2, A, set(3), 4, 5, Stat { version: 1 }),
    ];
    assert_linearizable(&overlapping);
}

#[test]
fn catches_an_answer_impossible_for_the_operation() {
    // NodeExists is no answer to setData; a create does not answer a Stat.
    assert_violation(&[done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok), done(1, A, set(2), 2, 3, NodeExists)]);
    assert_violation(&[done(1, A, Create { data: 1 }, 0, 1, Stat { version: 0 })]);
}

#[test]
fn reports_the_violating_path() {
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, B, Create { data: 2 }, 0, 1, Outcome::Ok),
        done(2, A, GetData, 2, 3, Data { data: 1, version: 0 }),
        done(2, B, GetData, 2, 3, Data { data: 2, version: 1 }),
    ];
    let violation = assert_violation(&history);
    assert_eq!((violation.path.as_str(), violation.stuck), (B, 3));
}

#[test]
fn malformed_and_too_expensive_are_their_own_answers() {
    let history = [done(1, A, Create { data: 1 }, 5, 4, Outcome::Ok)];
    assert!(matches!(check(&history), Verdict::Malformed { index: 0, .. }));

    let history: Vec<Entry> = (0..10).map(|i| done(1, A, Exists, i, i, NoNode)).collect();
    let verdict = check_with_limits(&history, SearchLimits { steps_max: 3, states_max: 3 });
    assert!(matches!(verdict, Verdict::TooExpensive { ref path, ops: 10, .. } if path == A), "{verdict}");
    // A violation on another path still wins over "unknown".
    let mut history = history;
    history.push(done(1, B, Exists, 0, 1, Stat { version: 0 }));
    let verdict = check_with_limits(&history, SearchLimits { steps_max: 3, states_max: 3 });
    assert!(matches!(verdict, Verdict::Violation(_)), "{verdict}");
}

// ---------------------------------------------------------------------------
// Reads from any server.

#[test]
fn relaxed_reads_allow_a_lagging_follower() {
    // Client 2 reads from a follower that has not applied client 1's write
    // yet: not linearizable, but what ZooKeeper promises.
    let mut history = vec![
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 1 }),
        done(2, A, GetData, 4, 5, Data { data: 1, version: 0 }),
        done(2, A, GetData, 6, 7, Data { data: 2, version: 1 }),
    ];
    assert!(!check(&history).is_linearizable());
    relax_reads_for_any_server(&mut history);
    assert_eq!(history[2].invoked, 0);
    assert_linearizable(&history);
}

#[test]
fn relaxed_reads_still_see_the_session_writes_that_came_before() {
    // Client 2's own write of 3 completed before it read: the read cannot
    // show the state before client 1's write, which preceded that write.
    let mut history = vec![
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 1 }),
        done(2, A, set(3), 4, 5, Stat { version: 2 }),
        done(2, A, GetData, 6, 7, Data { data: 1, version: 0 }),
    ];
    relax_reads_for_any_server(&mut history);
    assert_eq!(history[3].invoked, 4);
    assert_eq!(assert_violation(&history).stuck, 3);
    // And data never written is never explained.
    let mut history = vec![
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(2, A, GetData, 4, 5, Data { data: 9, version: 0 }),
    ];
    relax_reads_for_any_server(&mut history);
    assert_violation(&history);
    // Writes keep their real-time order.
    let mut history = vec![
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, set(2), 2, 3, Stat { version: 2 }),
        done(2, A, set(3), 4, 5, Stat { version: 1 }),
    ];
    relax_reads_for_any_server(&mut history);
    assert_violation(&history);
}

// ---------------------------------------------------------------------------
// Brute force: every order consistent with real time, every subset of the
// lost operations, directly on the public model. Independent of the
// search's list, memo and reductions. `None` when too large to try.

fn brute_force(history: &[Entry]) -> Option<bool> {
    let mut by_path: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in history {
        by_path.entry(entry.path.as_str()).or_default().push(entry);
    }
    if by_path.values().any(|ops| ops.len() > 9) {
        return None;
    }
    Some(by_path.values().all(|ops| brute_force_path(ops, 0, None)))
}

fn brute_force_path(ops: &[&Entry], used: u32, state: NodeState) -> bool {
    let is_used = |i: usize| used & (1 << i) != 0;
    if (0..ops.len()).all(|i| is_used(i) || ops[i].completed.is_none()) {
        return true;
    }
    (0..ops.len()).any(|i| {
        let must_wait = (0..ops.len()).any(|j| {
            j != i && !is_used(j) && ops[j].completed.is_some_and(|completion| completion.time < ops[i].invoked)
        });
        if is_used(i) || must_wait {
            return false;
        }
        let (outcome, after) = ops[i].op.apply(state);
        ops[i].completed.is_none_or(|completion| completion.outcome == outcome)
            && brute_force_path(ops, used | (1 << i), after)
    })
}

// ---------------------------------------------------------------------------
// Random histories from the model.

struct Shape {
    ops: usize,
    paths: usize,
    clients: u64,
    /// How far an interval reaches either side of its linearization point;
    /// points are 10 apart, so below 5 the history is sequential.
    overlap: u64,
    lost_percent: u64,
}

/// A history that is linearizable by construction: operations run on the
/// model in order at points 10 apart, each interval around its point. A lost
/// operation took effect at its point, or (half of them) never.
fn random_history(rng: &mut Rng, shape: &Shape) -> Vec<Entry> {
    let paths: Vec<String> = (0..shape.paths).map(|i| format!("/app/n{i}")).collect();
    let mut states: Vec<NodeState> = vec![None; shape.paths];
    let mut history = Vec::with_capacity(shape.ops);
    for k in 0..shape.ops as u64 {
        // A distinct value for every write.
        let next_value = 2 + k;
        let path = rng.index(shape.paths);
        let state = states[path];
        let current = state.map_or(0, |node| node.version);
        let version = match rng.below(10) {
            0..=4 => VERSION_ANY,
            5..=7 => current,
            _ => current + rng.below(3) as i32 - 1,
        };
        let op = match rng.below(10) {
            0 | 1 => Create { data: next_value },
            2 => Delete { version },
            3..=5 => SetData { data: next_value, version },
            6..=8 => GetData,
            _ => Exists,
        };
        let point = 10 + 10 * k;
        let invoked = point.saturating_sub(rng.below(shape.overlap + 1));
        let returned = point + rng.below(shape.overlap + 1);
        let client = rng.below(shape.clients);
        if rng.chance(10 * shape.lost_percent) {
            if rng.chance(500) {
                states[path] = op.apply(state).1;
            }
            history.push(lost(client, &paths[path], op, invoked));
        } else {
            let (outcome, after) = op.apply(state);
            states[path] = after;
            history.push(done(client, &paths[path], op, invoked, returned, outcome));
        }
    }
    history
}

/// A different outcome for a completed operation: flipped success, a
/// version off by one, another value read.
fn perturb(rng: &mut Rng, outcome: Outcome) -> Outcome {
    let version = match outcome {
        Stat { version } | Data { version, .. } => version,
        _ => 0,
    };
    let data = match outcome {
        Data { data, .. } => data,
        _ => 2 + rng.below(20),
    };
    let choices = [
        Outcome::Ok,
        NoNode,
        NodeExists,
        BadVersion,
        Stat { version: version + 1 },
        Stat { version: version - 1 },
        Stat { version },
        Data { data, version: version + 1 },
        Data { data, version: version.saturating_sub(1).max(0) },
        Data { data: data + 1 + rng.below(3), version },
    ];
    loop {
        let choice = *rng.pick(&choices);
        if choice != outcome {
            return choice;
        }
    }
}

fn seed_base() -> u64 {
    let base = std::env::var("WARDEN_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    println!("linearizable random base seed {base} (set WARDEN_SIM_SEED to change)");
    base
}

#[test]
fn random_tiny_histories_agree_with_brute_force() {
    let base = seed_base();
    let (mut caught, mut still_linearizable) = (0, 0);
    for i in 0..4000 {
        let seed = base.wrapping_add(i);
        let mut rng = Rng::new(seed);
        let shape =
            Shape { ops: 2 + rng.below(7) as usize, paths: 1, clients: 3, overlap: rng.below(25), lost_percent: 25 };
        let mut history = random_history(&mut rng, &shape);
        let verdict = check(&history);
        assert!(verdict.is_linearizable(), "seed {seed}: generated history rejected: {verdict}\n{history:#?}");
        assert_eq!(brute_force(&history), Some(true), "seed {seed}");

        let completed: Vec<usize> = (0..history.len()).filter(|&i| history[i].completed.is_some()).collect();
        if completed.is_empty() {
            continue;
        }
        let victim = *rng.pick(&completed);
        if let Some(completion) = history[victim].completed.as_mut() {
            completion.outcome = perturb(&mut rng, completion.outcome);
        }
        let verdict = check(&history);
        let oracle = brute_force(&history);
        assert_eq!(Some(verdict.is_linearizable()), oracle, "seed {seed}: checker says {verdict}\n{history:#?}");
        if verdict.is_linearizable() {
            still_linearizable += 1;
        } else {
            caught += 1;
        }
    }
    println!(
        "perturbed tiny histories: {caught} violations caught, {still_linearizable} still linearizable (oracle agrees)"
    );
    assert!(caught > still_linearizable, "most perturbations should be violations");
}

#[test]
fn random_sequential_histories_catch_every_perturbation() {
    // Sequential and with no lost operations, the only order is the real
    // one, and the model is deterministic: any changed outcome is a
    // violation, found exactly at the changed operation.
    let base = seed_base();
    for i in 0..40 {
        let seed = base.wrapping_add(i);
        let mut rng = Rng::new(seed);
        let shape = Shape { ops: 2000, paths: 3, clients: 4, overlap: 4, lost_percent: 0 };
        let mut history = random_history(&mut rng, &shape);
        assert!(check(&history).is_linearizable(), "seed {seed}");
        let victim = rng.index(history.len());
        if let Some(completion) = history[victim].completed.as_mut() {
            completion.outcome = perturb(&mut rng, completion.outcome);
        }
        match check(&history) {
            Verdict::Violation(violation) => {
                assert_eq!(violation.stuck, victim, "seed {seed}: {violation}");
                assert_eq!(violation.path, history[victim].path, "seed {seed}");
            }
            other => panic!("seed {seed}: perturbed #{victim} not caught: {other}"),
        }
    }
}

#[test]
fn random_concurrent_histories_with_lost_operations_are_linearizable() {
    let base = seed_base();
    for i in 0..40 {
        let seed = base.wrapping_add(i);
        let mut rng = Rng::new(seed);
        let shape = Shape {
            ops: 3000,
            paths: 1 + rng.below(4) as usize,
            clients: 5,
            overlap: 5 + rng.below(20),
            lost_percent: 3,
        };
        let history = random_history(&mut rng, &shape);
        let verdict = check(&history);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
}

// ---------------------------------------------------------------------------
// Timings. Run with `cargo test --release --lib sim::linearizable -- --nocapture`
// for real numbers; the assertions only demand an answer within the bounds.

fn timed(label: &str, history: &[Entry]) -> Verdict {
    let start = std::time::Instant::now();
    let verdict = check(history);
    let elapsed = start.elapsed();
    println!(
        "{label}: {} ops in {:.1} ms ({:.0} ns/op): {}",
        history.len(),
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / history.len().max(1) as f64,
        if verdict.is_linearizable() { "linearizable" } else { "not linearizable" }
    );
    verdict
}

#[test]
fn timing_large_histories() {
    let mut rng = Rng::new(7);
    let one_path = random_history(&mut rng, &Shape { ops: 20_000, paths: 1, clients: 8, overlap: 4, lost_percent: 0 });
    assert!(timed("one path, sequential", &one_path).is_linearizable());
    let overlapping =
        random_history(&mut rng, &Shape { ops: 20_000, paths: 1, clients: 8, overlap: 15, lost_percent: 1 });
    assert!(timed("one path, overlapping, 1% lost", &overlapping).is_linearizable());
    let many_paths =
        random_history(&mut rng, &Shape { ops: 100_000, paths: 100, clients: 16, overlap: 15, lost_percent: 1 });
    assert!(timed("100 paths, overlapping, 1% lost", &many_paths).is_linearizable());

    // A violation at the very end of a long overlapping history with lost
    // operations: the fast path gives up and the complete search must go
    // through every level. (Smaller unoptimised: it is the slow case.)
    for (ops, lost_percent) in [(if cfg!(debug_assertions) { 2_000 } else { 20_000 }, 1), (2_000, 10)] {
        let mut late = random_history(&mut rng, &Shape { ops, paths: 1, clients: 8, overlap: 15, lost_percent });
        let victim = (0..late.len())
            .rev()
            .find(|&i| matches!(late[i].completed, Some(Completion { outcome: Data { .. }, .. })))
            .expect("a read");
        if let Some(completion) = late[victim].completed.as_mut() {
            completion.outcome = Data { data: Value::MAX, version: 0 };
        }
        let label = format!("one path, overlapping, {lost_percent}% lost, a read of unwritten data at the end");
        match timed(&label, &late) {
            Verdict::Violation(violation) => assert_eq!(violation.stuck, victim),
            other => panic!("{other}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Ephemerals, ACLs, multi checks and sync.

#[test]
fn model_follows_zookeeper_for_ephemerals_acls_checks_and_sync() {
    let (outcome, ephemeral) = Op::CreateEphemeral { data: 1, owner: 7 }.apply(None);
    assert_eq!(outcome, Outcome::Ok);
    assert_eq!(ephemeral, Some(Znode { owner: 7, ..Node::new(1, 0) }));
    assert_eq!(Op::CloseSession { session: 8 }.apply(ephemeral), (Outcome::Ok, ephemeral), "not its owner");
    assert_eq!(Op::CloseSession { session: 7 }.apply(ephemeral), (Outcome::Ok, None));
    assert_eq!(Op::CloseSession { session: 7 }.apply(None), (Outcome::Ok, None));

    let open = Some(Node::new(1, 0));
    let no_write = Some(Znode { access: Access::NoWrite, aversion: 1, ..Node::new(1, 0) });
    assert_eq!(Op::SetAcl { access: Access::NoWrite, version: 0 }.apply(open), (Outcome::AclStat { aversion: 1 }, no_write));
    assert_eq!(Op::SetAcl { access: Access::Open, version: 0 }.apply(no_write), (BadVersion, no_write));
    assert_eq!(Op::SetAcl { access: Access::Open, version: 0 }.apply(None), (NoNode, None));
    assert_eq!(Op::GetAcl.apply(no_write), (Outcome::Acl { access: Access::NoWrite, aversion: 1 }, no_write));
    // NoNode, then the ACL, then the version (PrepRequestProcessor's order).
    assert_eq!(set(2).apply(no_write), (Outcome::NoAuth, no_write));
    assert_eq!(SetData { data: 2, version: 5 }.apply(no_write), (Outcome::NoAuth, no_write));
    assert_eq!(set(2).apply(None), (NoNode, None));
    // Delete needs DELETE on the parent only.
    assert_eq!(Delete { version: 0 }.apply(no_write), (Outcome::Ok, None));

    assert_eq!(Op::Check { version: 0 }.apply(open), (Outcome::Ok, open));
    assert_eq!(Op::Check { version: VERSION_ANY }.apply(open), (Outcome::Ok, open));
    assert_eq!(Op::Check { version: 3 }.apply(open), (BadVersion, open));
    assert_eq!(Op::Check { version: 0 }.apply(None), (NoNode, None));
    assert_eq!(Op::Sync.apply(open), (Outcome::Ok, open));
}

#[test]
fn an_ephemeral_must_go_with_its_session() {
    // The close overlaps the create in real time, but deletes only what
    // exists when it takes effect: placed first, it would delete nothing,
    // and the node would live on (its Ok outcome does not tell).
    let create = done(1, A, Op::CreateEphemeral { data: 1, owner: 1 }, 0, 2, Outcome::Ok);
    let close = done(1, A, Op::CloseSession { session: 1 }, 1, 4, Outcome::Ok);
    assert_linearizable(&[create.clone(), close, done(2, A, Exists, 5, 6, NoNode)]);
    // Once the close returned after the create did, the node is gone.
    let close = done(1, A, Op::CloseSession { session: 1 }, 3, 4, Outcome::Ok);
    let violation = assert_violation(&[create.clone(), close, done(2, A, Exists, 5, 6, Stat { version: 0 })]);
    assert_eq!(violation.stuck, 2);
    // Another session's close leaves it alone.
    let other = done(1, A, Op::CloseSession { session: 9 }, 1, 4, Outcome::Ok);
    assert_linearizable(&[create.clone(), other, done(2, A, Exists, 5, 6, Stat { version: 0 })]);
    // A close no one saw commit may have happened, or not.
    let unknown = lost(1, A, Op::CloseSession { session: 1 }, 1);
    assert_linearizable(&[create.clone(), unknown.clone(), done(2, A, Exists, 5, 6, NoNode)]);
    assert_linearizable(&[create, unknown, done(2, A, Exists, 5, 6, Stat { version: 0 })]);
}

#[test]
fn a_read_after_a_sync_sees_every_write_completed_before_the_sync() {
    let writes = [done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok), done(1, A, set(2), 2, 3, Stat { version: 1 })];
    let stale_read = done(2, A, GetData, 6, 7, Data { data: 1, version: 0 });
    // Without a sync a follower may answer from before the setData.
    let mut history = writes.to_vec();
    history.push(stale_read.clone());
    relax_reads_for_any_server(&mut history);
    assert_linearizable(&history);
    // After one, it may not.
    let mut history = writes.to_vec();
    history.push(done(2, A, Op::Sync, 4, 5, Outcome::Ok));
    history.push(stale_read);
    relax_reads_for_any_server(&mut history);
    assert_eq!(history[3].invoked, 4, "the read is relaxed back to its session's sync only");
    assert_violation(&history);
}

#[test]
fn setacl_decides_what_setdata_answers() {
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, Op::SetAcl { access: Access::NoWrite, version: 0 }, 2, 3, Outcome::AclStat { aversion: 1 }),
        done(2, A, set(2), 4, 5, Stat { version: 1 }),
    ];
    assert_violation(&history);
    let history = [
        done(1, A, Create { data: 1 }, 0, 1, Outcome::Ok),
        done(1, A, Op::SetAcl { access: Access::NoWrite, version: 0 }, 2, 3, Outcome::AclStat { aversion: 1 }),
        done(2, A, set(2), 4, 5, Outcome::NoAuth),
        done(2, A, Op::GetAcl, 6, 7, Outcome::Acl { access: Access::NoWrite, aversion: 1 }),
    ];
    assert_linearizable(&history);
}
