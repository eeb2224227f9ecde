//! Load on the stand-in: 10,000 Deployments created, listed and watched over HTTPS, with the
//! request counts by verb and an added per-write latency — so that the operator benchmark
//! measures the operator. Baseline in the same run: decoding the same list in the client.
//!
//! `cargo bench -p verifyfull-e2e --bench standin`
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, ListParams, ObjectList, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use std::time::{Duration, Instant};

const N: usize = 10_000;
const CONCURRENCY: usize = 32;

fn deployment(i: usize) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": format!("app-{i:05}"), "labels": {"app": format!("app-{i:05}"), "team": format!("t{}", i % 20)}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("app-{i:05}")}},
                 "template": {"metadata": {"labels": {"app": format!("app-{i:05}")}},
                              "spec": {"containers": [{"name": "app", "image": "example.com/app:1.2.3",
                                  "env": [{"name": "DATABASE_URL", "value": "postgresql://app@db.example.net/app?sslmode=require"},
                                          {"name": "LOG_LEVEL", "value": "info"}],
                                  "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}}))
    .unwrap()
}

/// Runs `op(i)` for every `i` in `range`, `CONCURRENCY` at a time; panics on the first error.
async fn run_all<F, Fut>(range: std::ops::Range<usize>, op: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    stream::iter(range)
        .map(op)
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

/// Annotates the first `n` Deployments, one merge patch each.
async fn annotate_all(api: &Api<Deployment>, n: usize, value: &'static str) {
    run_all(0..n, |i| {
        let api = api.clone();
        async move {
            let p = Patch::Merge(json!({"metadata": {"annotations": {"bench": value}}}));
            api.patch(&format!("app-{i:05}"), &PatchParams::default(), &p)
                .await
                .map(|_| ())
        }
    })
    .await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let s = StandIn::start(Options {
        controllers: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let client = s.client(&User::admin()).await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    println!(
        "stand-in load, {N} Deployments, {CONCURRENCY} concurrent requests, one process (client and server share 2 cores)\n"
    );
    println!("| operation | result |");
    println!("|---|---|");

    let t = Instant::now();
    run_all(0..N, |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &deployment(i))
                .await
                .map(|_| ())
        }
    })
    .await;
    let took = t.elapsed();
    println!(
        "| create {N} | {:.2} s, {:.0} creates/s |",
        took.as_secs_f64(),
        N as f64 / took.as_secs_f64()
    );
    println!("| process RSS holding {N} | {:.0} MiB |", rss_mib());

    // A full list: over HTTPS and decoded (what a client's initial list costs), against
    // decoding the same bytes alone (the client's share).
    let mut full = Vec::new();
    let mut decode = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await.unwrap();
        full.push(t.elapsed());
        assert_eq!(list.items.len(), N);
        let raw = serde_json::to_vec(&list).unwrap();
        bytes = raw.len();
        let t = Instant::now();
        let again: ObjectList<Deployment> = serde_json::from_slice(&raw).unwrap();
        decode.push(t.elapsed());
        assert_eq!(again.items.len(), N);
    }
    let (f, d) = (median(full), median(decode));
    println!(
        "| list all {N} ({:.1} MB) | {:.0} ms; client decode alone {:.0} ms; server+transport {:.0} ms |",
        bytes as f64 / 1e6,
        f.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3,
        (f - d.min(f)).as_secs_f64() * 1e3
    );
    let mut paged = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0;
        let mut lp = ListParams::default().limit(500);
        loop {
            let page = api.list(&lp).await.unwrap();
            n += page.items.len();
            match page.metadata.continue_ {
                Some(c) => lp = ListParams::default().limit(500).continue_token(&c),
                None => break,
            }
        }
        assert_eq!(n, N);
        paged.push(t.elapsed());
    }
    println!(
        "| list all in pages of 500 | {:.0} ms |",
        median(paged).as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let sel = api
        .list(&ListParams::default().labels("team=t7"))
        .await
        .unwrap();
    println!(
        "| label-selected list ({} of {N}) | {:.0} ms |",
        sel.items.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    // Watch fan-out: every patch reaches a watcher.
    let rv = api
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let t = Instant::now();
    let patcher = {
        let api = api.clone();
        tokio::spawn(async move { annotate_all(&api, N, "1").await })
    };
    let mut seen = 0;
    while seen < N {
        if let Some(WatchEvent::Modified(_)) = watch.try_next().await.unwrap() {
            seen += 1;
        }
    }
    let all_seen = t.elapsed();
    patcher.await.unwrap();
    println!(
        "| {N} patches, all seen by a watcher | {:.2} s, {:.0} events/s |",
        all_seen.as_secs_f64(),
        N as f64 / all_seen.as_secs_f64()
    );

    // An added write latency holds: 1,000 patches at 1 ms each, 32 in flight.
    s.set_write_latency(Duration::from_millis(1));
    let before = s.server.counters.writes();
    let t = Instant::now();
    annotate_all(&api, 1000, "2").await;
    let took = t.elapsed();
    println!(
        "| 1,000 patches with 1 ms write latency | {:.2} s ({:.0} writes/s; {} writes counted) |",
        took.as_secs_f64(),
        1000.0 / took.as_secs_f64(),
        s.server.counters.writes() - before
    );
    let counts: Vec<String> = s
        .server
        .counters
        .snapshot()
        .iter()
        .map(|(v, n)| format!("{v} {n}"))
        .collect();
    println!("\nrequests by verb: {}", counts.join(", "));
}
