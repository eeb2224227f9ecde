//! Hostile input costs bounded work: whatever the `$(VAR)` structure of a Pod spec within
//! the caps on what an object may hold, reading and judging it stays within a fixed time
//! and a fixed amount of memory.
//!
//! The bounds are for an unoptimised test build on a small shared machine, with a wide
//! margin; an optimised build is about ten times faster (BENCHMARKS.md). Memory is the
//! peak of live heap allocations while one Pod is read and judged (this test binary's
//! global allocator counts it).

use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use policy::{Context, NoSources, Object, Settings, judge};
use policy::{MAX_CONTAINERS, MAX_ENV_PER_POD};
use proptest::prelude::*;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

/// Time to read and judge one Pod spec, at most.
const TIME_BOUND: Duration = Duration::from_secs(5);
/// Heap in use while reading and judging one Pod spec, at most (the JSON text aside).
const MEMORY_BOUND_MIB: f32 = 32.0;

/// One part of a value: literal text, a reference to variable `n`, or `$$`.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Ref(usize),
    Dollar,
}

fn value(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.clone(),
            Part::Ref(n) => format!("$(V{n})"),
            Part::Dollar => "$$".to_string(),
        })
        .collect()
}

fn pod(containers: &[Vec<Vec<Part>>]) -> String {
    let list: Vec<serde_json::Value> = containers
        .iter()
        .enumerate()
        .map(|(i, vars)| {
            let env: Vec<serde_json::Value> = vars
                .iter()
                .enumerate()
                .map(|(j, parts)| serde_json::json!({"name": format!("V{j}"), "value": value(parts)}))
                .collect();
            serde_json::json!({"name": format!("c{i}"), "env": env})
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": {"containers": list}})
    .to_string()
}

/// One measurement at a time: the allocator's counts are process-wide.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reads and judges one Pod; returns the time and the peak heap in MiB.
fn cost(json: &str) -> (Duration, f32) {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    PEAK.reset_peak_usage();
    let before = PEAK.current_usage_as_mb();
    let start = Instant::now();
    let object: Object = serde_json::from_str(json).expect("within the caps");
    let Object::Workload(w) = object else {
        panic!("not a workload")
    };
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    let report = judge(w.view(), &ctx);
    std::hint::black_box(&report);
    let elapsed = start.elapsed();
    drop(report);
    (elapsed, PEAK.peak_usage_as_mb() - before)
}

fn check(json: &str, what: &str) {
    let (time, mib) = cost(json);
    eprintln!("{what}: {time:?}, {mib:.1} MiB");
    assert!(time <= TIME_BOUND, "{what}: {time:?}");
    assert!(mib <= MEMORY_BOUND_MIB, "{what}: {mib:.1} MiB");
}

fn part(vars: usize) -> impl Strategy<Value = Part> {
    prop_oneof![
        1 => "[a-z:/?=&.]{0,12}".prop_map(Part::Text),
        4 => (0..vars).prop_map(Part::Ref),
        1 => Just(Part::Dollar),
    ]
}

fn container(max_vars: usize) -> impl Strategy<Value = Vec<Vec<Part>>> {
    (1..=max_vars).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(part(n), 0..6), n))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random reference graphs (forward, backward, self, repeated) up to the caps.
    #[test]
    fn any_reference_structure_costs_bounded_work(
        containers in prop::collection::vec(container(MAX_ENV_PER_POD / 4), 1..=4)
    ) {
        check(&pod(&containers), "random references");
    }
}

/// The worst shapes known: doubling chains, a 64 KiB value referenced everywhere, and the
/// caps filled to the brim with both.
#[test]
fn worst_known_shapes_cost_bounded_work() {
    let doubling = |n: usize| -> Vec<Vec<Part>> {
        let mut vars = vec![vec![Part::Text("x".repeat(16))]];
        vars.extend((1..n).map(|i| vec![Part::Ref(i - 1), Part::Ref(i - 1)]));
        vars
    };
    check(&pod(&[doubling(MAX_ENV_PER_POD)]), "one doubling chain");
    let fan_out = |n: usize| -> Vec<Vec<Part>> {
        let mut vars = vec![vec![Part::Text("y".repeat(64 * 1024))]];
        vars.extend((1..n).map(|_| vec![Part::Ref(0); 8]));
        vars
    };
    check(&pod(&[fan_out(MAX_ENV_PER_POD)]), "fan-out of 64 KiB");
    let per = MAX_ENV_PER_POD / MAX_CONTAINERS;
    let many: Vec<Vec<Vec<Part>>> = (0..MAX_CONTAINERS)
        .map(|i| {
            if i % 2 == 0 {
                doubling(per)
            } else {
                fan_out(per)
            }
        })
        .collect();
    check(&pod(&many), "every container at the caps");
}
