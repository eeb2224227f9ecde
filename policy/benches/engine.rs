//! Engine time per Pod spec (already deserialized) on a realistic mix, next to the minimal
//! rule a ValidatingAdmissionPolicy would express in CEL, evaluated with the `cel` crate.
//! Run: `cargo bench -p verifyfull-policy --bench engine` (single thread; pin it with
//! `taskset -c 1` for a quiet core). Instructions instead of time:
//! `VERIFYFULL_COUNT=mix` (or `applications`) `valgrind --tool=callgrind
//! --toggle-collect='*policy*judge*' <bench binary>` evaluates 400 Pods 4x each, only.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use policy::{Context, Object, Settings, Workload};
use policy::{Lookup, SourceData, SourceKind, ValueSource};

#[allow(dead_code)] // the CLI benchmark uses the YAML emitter
#[path = "support/mix.rs"]
mod mix;

const PODS: usize = 2_000;
const ROUNDS: usize = 7;

struct Sources(BTreeMap<String, SourceData>);

impl ValueSource for Sources {
    fn lookup(&self, kind: SourceKind, _: Option<&str>, name: &str) -> Lookup<'_> {
        match (kind, self.0.get(name)) {
            (SourceKind::ConfigMap, Some(d)) => Lookup::Found(d),
            _ => Lookup::Unknown,
        }
    }
}

/// The rule as a VAP author writes it: every container sets PGSSLMODE=verify-full and
/// PGSSLROOTCERT.
const CEL_RULE: &str = "containers.all(c, c.env.exists(e, e.name == 'PGSSLMODE' && e.value == 'verify-full') && c.env.exists(e, e.name == 'PGSSLROOTCERT'))";

/// The CEL activation: what the API server hands a VAP, reduced to what the rule reads.
fn activation(w: &Workload) -> cel::Value {
    let spec = &w.spec;
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let containers: Vec<cel::Value> = all
        .map(|c| {
            let env: Vec<cel::Value> = c
                .env
                .iter()
                .flatten()
                .map(|e| {
                    let mut m: HashMap<&str, cel::Value> = HashMap::new();
                    m.insert("name", e.name.as_str().into());
                    m.insert("value", e.value.as_deref().unwrap_or("").into());
                    m.into()
                })
                .collect();
            let mut m: HashMap<&str, cel::Value> = HashMap::new();
            m.insert("name", c.name.as_str().into());
            m.insert("env", env.into());
            m.into()
        })
        .collect();
    containers.into()
}

/// The second mix (drivers beyond libpq and pgjdbc, connection strings in command/args).
fn drivers_mix(ctx: &Context<'_>) {
    let mut rng = mix::Rng::new(11);
    let workloads: Vec<Workload> = (0..PODS)
        .filter_map(
            |n| match serde_json::from_value::<Object>(mix::driver_workload(&mut rng, n)) {
                Ok(Object::Workload(w)) => Some(*w),
                _ => None,
            },
        )
        .collect();
    assert_eq!(workloads.len(), PODS, "the driver mix deserializes");
    engine_table(
        ctx,
        "second mix: driver- and args-shaped Pod specs (Npgsql, R2DBC, Prisma, asyncpg, Quarkus, pg_dump -h, --database-url=, sh -c)",
        &workloads,
    );
}

/// The third mix: the applications' chart-shaped manifests (`cli/tests/applications/`,
/// compliant, weak and unresolved for every bundled profile), repeated to the mix's size.
fn applications_mix(ctx: &Context<'_>) {
    let shapes = application_shapes();
    let workloads: Vec<Workload> = shapes.iter().cycle().take(PODS).cloned().collect();
    engine_table(
        ctx,
        &format!(
            "third mix: {} application-shaped Pod specs (every bundled profile's compliant, weak and unresolved chart shape)",
            shapes.len()
        ),
        &workloads,
    );
}

/// The applications' chart-shaped workloads, in file order.
fn application_shapes() -> Vec<Workload> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/tests/applications");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the applications' manifests")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut shapes = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for doc in serde_saphyr::from_multiple::<serde_json::Value>(&text).expect("YAML") {
            if let Ok(Object::Workload(w)) = serde_json::from_value::<Object>(doc) {
                shapes.push(*w);
            }
        }
    }
    assert_eq!(shapes.len(), 3 * policy::profiles::bundled().len());
    shapes
}

/// The engine only, sweep and cache-hot, over `workloads`.
fn engine_table(ctx: &Context<'_>, title: &str, workloads: &[Workload]) {
    const HOT: usize = 16;
    let (mut sweep, mut hot) = (Vec::new(), Vec::new());
    let mut allowed = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        allowed = 0;
        for w in workloads {
            allowed += usize::from(!policy::judge(black_box(w.view()), ctx).denied());
        }
        sweep.push(start.elapsed().as_nanos() as f64 / workloads.len() as f64);
        let start = Instant::now();
        for w in workloads {
            for _ in 0..HOT {
                black_box(policy::judge(black_box(w.view()), ctx));
            }
        }
        hot.push(start.elapsed().as_nanos() as f64 / (workloads.len() * HOT) as f64);
    }
    println!("{title}; {} Pods", workloads.len());
    println!();
    println!("| evaluator | ns/Pod | Pods/s (one core) | Pods allowed |");
    println!("|---|---:|---:|---:|");
    for (name, ns) in [
        ("verifyfull engine, sweep", median(sweep)),
        ("verifyfull engine, cache-hot", median(hot)),
    ] {
        println!("| {name} | {ns:.0} | {:.0} | {allowed} |", 1e9 / ns);
    }
    println!();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut rng = mix::Rng::new(7);
    let workloads: Vec<Workload> = (0..PODS)
        .filter_map(
            |n| match serde_json::from_value::<Object>(mix::workload(&mut rng, n)) {
                Ok(Object::Workload(w)) => Some(*w),
                _ => None,
            },
        )
        .collect();
    assert_eq!(workloads.len(), PODS, "the mix deserializes");
    let containers: usize = workloads.iter().map(|w| w.spec.containers.len()).sum();
    let Ok(Object::ConfigMap { data, .. }) = serde_json::from_value::<Object>(mix::config_map())
    else {
        panic!("config map")
    };
    let sources = Sources([("db-env".to_string(), data)].into());
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &sources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };

    // For an instruction count (`valgrind --tool=callgrind`, which a noisy machine does not
    // sway): 400 Pods of a mix, each 4x, and nothing else.
    if let Some(mix) = std::env::var_os("VERIFYFULL_COUNT") {
        // The bundled profiles are parsed once per process, before any Pod.
        black_box(ctx.settings.profiles.set());
        let pods: Vec<Workload> = if mix == "applications" {
            application_shapes().into_iter().cycle().take(400).collect()
        } else {
            workloads.iter().take(400).cloned().collect()
        };
        for w in &pods {
            for _ in 0..4 {
                black_box(policy::judge(black_box(w.view()), &ctx));
            }
        }
        return;
    }

    // Our engine: typed findings, no message rendering.
    let mut engine = Vec::new();
    let mut passes = 0;
    for round in 0..ROUNDS {
        let start = Instant::now();
        let mut denied = 0usize;
        for w in &workloads {
            let report = policy::judge(black_box(w.view()), &ctx);
            denied += usize::from(report.denied());
            black_box(&report);
        }
        engine.push(start.elapsed().as_nanos() as f64 / PODS as f64);
        if round == 0 {
            passes = PODS - denied;
        }
    }

    // The same engine, rendering every message (what the webhook does on a denial).
    let mut rendered = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for w in &workloads {
            let report = policy::judge(black_box(w.view()), &ctx);
            for c in &report.containers {
                for f in &c.findings {
                    black_box(f.message(Some(c.name)));
                }
            }
        }
        rendered.push(start.elapsed().as_nanos() as f64 / PODS as f64);
    }

    // CEL: build the activation from the Pod, then evaluate.
    let env = Arc::new(cel::Env::stdlib());
    let program = env.compile(CEL_RULE).expect("the rule compiles");
    let mut cel_times = Vec::new();
    let mut cel_passes = 0;
    for round in 0..ROUNDS {
        let start = Instant::now();
        let mut ok = 0usize;
        for w in &workloads {
            let mut context = cel::Context::with_env(env.clone());
            context.add_variable_from_value("containers", activation(black_box(w)));
            if program.execute(&context) == Ok(cel::Value::Bool(true)) {
                ok += 1;
            }
        }
        cel_times.push(start.elapsed().as_nanos() as f64 / PODS as f64);
        if round == 0 {
            cel_passes = ok;
        }
    }

    // Cache-hot, as in the webhook where the object was just deserialized: each Pod
    // evaluated HOT times in a row.
    const HOT: usize = 16;
    let mut engine_hot = Vec::new();
    let mut cel_hot = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for w in &workloads {
            for _ in 0..HOT {
                black_box(policy::judge(black_box(w.view()), &ctx));
            }
        }
        engine_hot.push(start.elapsed().as_nanos() as f64 / (PODS * HOT) as f64);
        let start = Instant::now();
        for w in &workloads {
            for _ in 0..HOT {
                let mut context = cel::Context::with_env(env.clone());
                context.add_variable_from_value("containers", activation(black_box(w)));
                black_box(program.execute(&context)).ok();
            }
        }
        cel_hot.push(start.elapsed().as_nanos() as f64 / (PODS * HOT) as f64);
    }

    let e = median(engine);
    let r = median(rendered);
    let c = median(cel_times);
    let eh = median(engine_hot);
    let ch = median(cel_hot);
    println!(
        "engine benchmark: {PODS} Pod specs, {containers} containers (avg {:.1}/Pod), median of {ROUNDS} rounds, one thread",
        containers as f64 / PODS as f64
    );
    println!();
    println!("| evaluator | ns/Pod | Pods/s (one core) | Pods allowed |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, ns: f64, allowed: usize| {
        println!("| {name} | {ns:.0} | {:.0} | {allowed} |", 1e9 / ns);
    };
    row("verifyfull engine (typed findings), sweep", e, passes);
    row("verifyfull engine + message rendering, sweep", r, passes);
    row(
        "CEL minimal rule (activation + evaluation), sweep",
        c,
        cel_passes,
    );
    row(
        "verifyfull engine, cache-hot (each Pod 16x in a row)",
        eh,
        passes,
    );
    row("CEL minimal rule, cache-hot", ch, cel_passes);
    println!();
    drivers_mix(&ctx);
    applications_mix(&ctx);
    println!(
        "engine / CEL time: {:.2} sweep, {:.2} cache-hot (below 1.00: the engine is faster)",
        e / c,
        eh / ch
    );
}
