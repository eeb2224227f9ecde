//! `verifyfull check` end to end over a generated directory of 10,000 manifests, next to
//! the YAML (and JSON) parser's own raw parse rate on the same files in the same run.
//! Run: `cargo bench -p verifyfull-cli --bench check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::de::IgnoredAny;
use verifyfull_cli::check;
use verifyfull_cli::input::split_yaml;

#[allow(dead_code)] // the engine benchmark uses the rest of the mix
#[path = "../../policy/benches/support/mix.rs"]
mod mix;

// The same allocator as the binary, so that the raw parse rows are not handicapped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FILES: usize = 10_000;
const RUNS: usize = 3;

struct Corpus {
    dir: PathBuf,
    files: Vec<PathBuf>,
    bytes: u64,
    documents: usize,
}

fn generate(root: &Path, json: bool) -> Corpus {
    let dir = root.join(if json { "json" } else { "yaml" });
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut rng = mix::Rng::new(11);
    let mut files = Vec::with_capacity(FILES);
    let (mut bytes, mut documents) = (0u64, 0usize);
    for n in 0..FILES {
        let workload = mix::workload(&mut rng, n);
        // Every 25th YAML file also carries the ConfigMap that envFrom references.
        let text = if json {
            workload.to_string()
        } else if n % 25 == 0 {
            documents += 1;
            format!(
                "{}---\n{}",
                mix::to_yaml(&mix::config_map()),
                mix::to_yaml(&workload)
            )
        } else {
            mix::to_yaml(&workload)
        };
        documents += 1;
        bytes += text.len() as u64;
        let path = dir.join(format!("m{n:05}.{}", if json { "json" } else { "yaml" }));
        std::fs::write(&path, text).expect("write manifest");
        files.push(path);
    }
    Corpus {
        dir,
        files,
        bytes,
        documents,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Reads and parses every document, building nothing: the parser's own rate.
fn raw(files: &[PathBuf], jobs: usize, json: bool) -> f64 {
    time(|| {
        let ok = check::parallel(files, jobs, |p| {
            let text = std::fs::read_to_string(p).expect("read");
            if json {
                usize::from(serde_json::from_str::<IgnoredAny>(&text).is_ok())
            } else {
                split_yaml(&text)
                    .iter()
                    .filter(|d| serde_saphyr::from_str::<IgnoredAny>(d.text).is_ok())
                    .count()
            }
        });
        assert!(ok.iter().sum::<usize>() >= files.len());
    })
}

/// The same, into a generic tree (`serde_json::Value`).
fn raw_tree(files: &[PathBuf], jobs: usize, json: bool) -> f64 {
    time(|| {
        let ok = check::parallel(files, jobs, |p| {
            let text = std::fs::read_to_string(p).expect("read");
            if json {
                usize::from(serde_json::from_str::<serde_json::Value>(&text).is_ok())
            } else {
                split_yaml(&text)
                    .iter()
                    .filter(|d| serde_saphyr::from_str::<serde_json::Value>(d.text).is_ok())
                    .count()
            }
        });
        assert!(ok.iter().sum::<usize>() >= files.len());
    })
}

fn binary(dir: &Path, jobs: usize) -> f64 {
    time(|| {
        let status = Command::new(env!("CARGO_BIN_EXE_verifyfull"))
            .args(["check", "--output", "json", "--jobs", &jobs.to_string()])
            .arg(dir)
            .stdout(Stdio::null())
            .status()
            .expect("run verifyfull");
        assert_eq!(
            status.code(),
            Some(1),
            "the mix has violations, and no input errors"
        );
    })
}

fn in_process(dir: &Path, jobs: usize) -> f64 {
    let opts = check::Options {
        settings: policy::Settings::default(),
        now: jiff::Timestamp::UNIX_EPOCH,
        jobs,
        locate: false,
    };
    time(|| {
        let outcome = check::check(&[dir.to_path_buf()], &opts);
        assert!(outcome.errors.is_empty());
        std::hint::black_box(serde_json::to_string(&outcome).expect("json"));
    })
}

fn main() {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    // VERIFYFULL_BENCH_DIR keeps the generated manifests there (for profiling).
    let keep = std::env::var_os("VERIFYFULL_BENCH_DIR").map(PathBuf::from);
    let root = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("verifyfull-bench-{}", std::process::id()))
    });
    let yaml = generate(&root, false);
    let json = generate(&root, true);

    println!(
        "check benchmark: {FILES} files per format, {jobs} threads, median of {RUNS} runs; YAML {:.1} MB ({:.0} B/file avg), JSON {:.1} MB",
        yaml.bytes as f64 / 1e6,
        yaml.bytes as f64 / FILES as f64,
        json.bytes as f64 / 1e6
    );
    println!();
    println!("| measure | documents | seconds | documents/s | MB/s | share of raw parse rate |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (corpus, is_json, name) in [(&yaml, false, "YAML"), (&json, true, "JSON")] {
        let mb = corpus.bytes as f64 / 1e6;
        let docs = corpus.documents as f64;
        let base = raw(&corpus.files, jobs, is_json);
        let rows = [
            (
                format!("{name}: raw parse (read + parse, IgnoredAny)"),
                base,
            ),
            (
                format!("{name}: raw parse into serde_json::Value"),
                raw_tree(&corpus.files, jobs, is_json),
            ),
            (
                format!("{name}: verifyfull check, in process (library)"),
                in_process(&corpus.dir, jobs),
            ),
            (
                format!("{name}: verifyfull check, binary end to end"),
                binary(&corpus.dir, jobs),
            ),
        ];
        for (label, secs) in rows {
            println!(
                "| {label} | {} | {secs:.3} | {:.0} | {:.1} | {:.0} % |",
                corpus.documents,
                docs / secs,
                mb / secs,
                100.0 * base / secs
            );
        }
    }
    // The largest resident set of any child: the binary runs above.
    let rss = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0);
    println!();
    println!(
        "peak RSS of `verifyfull check` over {FILES} files: {:.1} MiB",
        rss as f64 / 1024.0
    );
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}
