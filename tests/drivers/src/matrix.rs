//! Running the lab, classifying what each driver did, and judging it against the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cases::{Case, Endpoint, Form, Paths};
use crate::clients::{Attempt, Client, Driver};
use crate::servers::{Channel, Kind, Servers};

/// What a driver did with one case, from the four servers' records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Reached the trusted server only.
    Verified,
    /// Refused every server, the trusted one included (a broken setting, but a safe one).
    RefusesAll,
    /// Also reached the server whose certificate names another host.
    ChainOnly,
    /// Also reached the impostor, over TLS.
    Unverified,
    /// Spoke plaintext to some server.
    Plaintext,
}

impl Class {
    pub fn word(self) -> &'static str {
        match self {
            Class::Verified => "verified",
            Class::RefusesAll => "refuses all",
            Class::ChainOnly => "chain only",
            Class::Unverified => "unverified",
            Class::Plaintext => "plaintext",
        }
    }

    /// A pass is safe only where an impostor and a plaintext server got nothing.
    pub fn safe(self) -> bool {
        matches!(self, Class::Verified | Class::RefusesAll)
    }
}

pub fn classify(reached: &BTreeMap<Kind, BTreeSet<Channel>>) -> Class {
    let got = |k: Kind| reached.get(&k).is_some_and(|c| !c.is_empty());
    if reached.values().any(|c| c.contains(&Channel::Plain)) {
        Class::Plaintext
    } else if got(Kind::Impostor) {
        Class::Unverified
    } else if got(Kind::WrongName) {
        Class::ChainOnly
    } else if got(Kind::Trusted) {
        Class::Verified
    } else {
        Class::RefusesAll
    }
}

/// The engine's verdict on the case's Pod: pass, or the codes it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub codes: Vec<String>,
}

impl Verdict {
    pub fn pass(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn text(&self) -> String {
        if self.pass() {
            "pass".into()
        } else {
            self.codes.join(", ")
        }
    }
}

pub fn engine_verdict(case: &Case) -> Result<Verdict, String> {
    verdict_of(case.pod()).map_err(|e| format!("case {}: {e}", case.id))
}

/// The engine's verdict on a Pod, with the default settings.
pub fn verdict_of(pod: serde_json::Value) -> Result<Verdict, String> {
    let object: policy::Object =
        serde_json::from_value(pod).map_err(|e| format!("the Pod does not decode: {e}"))?;
    let policy::Object::Workload(w) = object else {
        return Err("not a workload".into());
    };
    let settings = policy::Settings::default();
    let ctx = policy::Context {
        settings: &settings,
        sources: &policy::NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    let report = policy::judge(w.view(), &ctx);
    let mut codes: Vec<String> = report
        .container_findings()
        .map(|(_, f)| f.code.as_str().to_string())
        .collect();
    codes.sort();
    codes.dedup();
    Ok(Verdict { codes })
}

/// One driver's record for one case.
#[derive(Debug, Clone)]
pub struct Observation {
    pub reached: BTreeMap<Kind, BTreeSet<Channel>>,
    pub class: Class,
    /// What the driver said when connecting to the trusted server (not used to judge).
    pub trusted_error: String,
}

#[derive(Debug)]
pub struct Run {
    pub server_version: String,
    /// Name, version and forms of each driver, in order.
    pub drivers: Vec<(&'static str, String, &'static [Form])>,
    /// What each driver is, as pinned.
    pub pinned: Vec<&'static str>,
    pub cases: Vec<Case>,
    pub verdicts: Vec<Verdict>,
    /// (driver index, case index) → observation; only for the forms the driver reads.
    pub observed: BTreeMap<(usize, usize), Observation>,
    pub elapsed: Duration,
}

fn attempt_id(driver: usize, case: usize, server: Kind) -> String {
    let s = Kind::ALL.iter().position(|k| *k == server).unwrap_or(0);
    format!("l{driver}c{case:03}s{s}")
}

/// The longest a whole run may take before the watchdog kills the clients.
const RUN_LIMIT: Duration = Duration::from_secs(300);
const ATTEMPT_TIMEOUT_MS: u64 = 5000;

/// Starts the servers and the clients, tries every case of every driver on every server.
pub fn run(drivers: &[Driver], cases: Vec<Case>, work: &Path) -> Result<Run, String> {
    let started = Instant::now();
    let verdicts = cases
        .iter()
        .map(engine_verdict)
        .collect::<Result<Vec<_>, _>>()?;
    let servers = Servers::start()?;
    let paths = Paths {
        ca: servers.ca.display().to_string(),
        missing: work.join("missing/ca.crt").display().to_string(),
    };
    let mut clients = Vec::new();
    for (i, d) in drivers.iter().enumerate() {
        let home = work.join(format!("home-{i}"));
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        clients.push(Client::start(d, &home)?);
    }
    let pids: Vec<u32> = clients.iter().map(Client::pid).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let trusted_errors = std::thread::scope(|scope| {
        // The clients bound each attempt themselves; this bounds the whole run if one hangs.
        scope.spawn(|| {
            while started.elapsed() < RUN_LIMIT {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            for pid in &pids {
                let _ = std::process::Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string())
                    .status();
            }
        });
        let workers: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(d, client)| {
                let (cases, servers, paths) = (&cases, &servers, &paths);
                let forms = drivers[d].forms;
                scope.spawn(move || {
                    let mut errors = BTreeMap::new();
                    for (c, case) in cases.iter().enumerate() {
                        if !forms.contains(&case.form) {
                            continue;
                        }
                        for kind in Kind::ALL {
                            let id = attempt_id(d, c, kind);
                            let to = Endpoint {
                                host: "localhost",
                                port: servers.port(kind),
                                user: &id,
                                database: "postgres",
                            };
                            let outcome = client.attempt(&Attempt {
                                id: &id,
                                target: &case.target(to, paths),
                                env: &case.env(to, paths),
                                user: &id,
                                timeout_ms: ATTEMPT_TIMEOUT_MS,
                            })?;
                            if kind == Kind::Trusted {
                                errors.insert(c, outcome.error);
                            }
                        }
                    }
                    Ok::<_, String>(errors)
                })
            })
            .collect();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a driver thread panicked".into()))
            })
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        results
    });
    let mut failures = Vec::new();
    let mut errors_by_driver = Vec::new();
    for r in trusted_errors {
        match r {
            Ok(e) => errors_by_driver.push(e),
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("\n\n"));
    }
    let sessions = servers.sessions()?;
    let mut observed = BTreeMap::new();
    for (d, driver) in drivers.iter().enumerate() {
        for (c, case) in cases.iter().enumerate() {
            if !driver.forms.contains(&case.form) {
                continue;
            }
            let reached: BTreeMap<Kind, BTreeSet<Channel>> = Kind::ALL
                .iter()
                .map(|k| {
                    let got = sessions
                        .get(k)
                        .and_then(|s| s.get(&attempt_id(d, c, *k)))
                        .cloned()
                        .unwrap_or_default();
                    (*k, got)
                })
                .collect();
            observed.insert(
                (d, c),
                Observation {
                    class: classify(&reached),
                    reached,
                    trusted_error: errors_by_driver[d].get(&c).cloned().unwrap_or_default(),
                },
            );
        }
    }
    Ok(Run {
        server_version: servers.version()?,
        drivers: clients
            .iter()
            .zip(drivers)
            .map(|(c, d)| (d.name, c.version.clone(), d.forms))
            .collect(),
        pinned: drivers.iter().map(|d| d.pinned).collect(),
        cases,
        verdicts,
        observed,
        elapsed: started.elapsed(),
    })
}

/// A deny where the driver did verify, accepted with its reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    pub drivers: Vec<String>,
    pub cases: Vec<String>,
    pub reason: String,
}

pub fn load_allowed(path: &Path) -> Result<Vec<Allowed>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Everything wrong with a run: false passes, unlisted and stale discrepancies, a lab that
/// cannot verify even the canonical settings.
pub fn problems(run: &Run, allowed: &[Allowed]) -> Vec<String> {
    let mut problems = Vec::new();
    let listed = |driver: &str, case: &str| {
        allowed
            .iter()
            .any(|a| a.drivers.iter().any(|d| d == driver) && a.cases.iter().any(|c| c == case))
    };
    let mut used: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (&(d, c), o) in &run.observed {
        let (driver, case, verdict) = (run.drivers[d].0, &run.cases[c], &run.verdicts[c]);
        if verdict.pass() && !o.class.safe() {
            problems.push(format!(
                "FALSE PASS: {driver} on {} ({}): the engine passes it, the driver is {}",
                case.id,
                case.params,
                o.class.word()
            ));
        }
        if !verdict.pass() && o.class == Class::Verified {
            if listed(driver, &case.id) {
                used.insert((driver, case.id.as_str()));
            } else {
                problems.push(format!(
                    "unlisted discrepancy: {driver} verifies {} but the engine says {}; \
                     list it in tests/drivers/allowed.yaml with its reason",
                    case.id,
                    verdict.text()
                ));
            }
        }
    }
    // Every listed driver and every listed case must still be needed by the entry.
    for a in allowed {
        let needed = |d: &str, c: &str| used.contains(&(d, c));
        for c in &a.cases {
            if !a.drivers.iter().any(|d| needed(d, c)) {
                problems.push(format!(
                    "stale allowance: no listed driver needs {c} ({})",
                    a.reason
                ));
            }
        }
        for d in &a.drivers {
            if !a.cases.iter().any(|c| needed(d, c)) {
                problems.push(format!(
                    "stale allowance: {d} needs none of the cases of \"{}\"",
                    a.reason
                ));
            }
        }
    }
    for (d, (driver, _, forms)) in run.drivers.iter().enumerate() {
        let canonical = if forms.contains(&Form::Jdbc) {
            "jdbc-verify-full-root-ca"
        } else {
            "url-verify-full-root-ca"
        };
        let class = run
            .cases
            .iter()
            .position(|c| c.id == canonical)
            .and_then(|c| run.observed.get(&(d, c)))
            .map(|o| o.class);
        if class != Some(Class::Verified) {
            problems.push(format!(
                "the lab is broken: {driver} does not verify {canonical} (observed {class:?})"
            ));
        }
    }
    problems
}

fn cell(o: &Observation) -> String {
    let mark = |k: Kind| match o.reached.get(&k) {
        Some(c) if c.contains(&Channel::Plain) => 'p',
        Some(c) if c.contains(&Channel::Tls) => '+',
        _ => '.',
    };
    let letter = match o.class {
        Class::Verified => 'V',
        Class::RefusesAll => 'R',
        Class::ChainOnly => 'C',
        Class::Unverified => 'U',
        Class::Plaintext => 'P',
    };
    format!(
        "{letter} {}",
        Kind::ALL.map(mark).iter().collect::<String>()
    )
}

/// The console matrix: one row per case, one cell per driver (class, then the trusted,
/// wrong-name, impostor and plaintext servers: `+` TLS session, `p` plaintext, `.` none).
pub fn render_matrix(run: &Run) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "driver lab: {} cases x {} drivers x 4 servers ({}), {:.1} s\n",
        run.cases.len(),
        run.drivers.len(),
        run.server_version,
        run.elapsed.as_secs_f64()
    ));
    for (i, (name, version, _)) in run.drivers.iter().enumerate() {
        out.push_str(&format!("  d{i} {name}: {version}\n"));
    }
    out.push_str(
        "cell: class (V verified, R refuses all, C chain only, U unverified, P plaintext), then\n\
         \x20     the trusted, wrong-name, impostor, plaintext servers (+ TLS, p plaintext, . none)\n",
    );
    let width = run.cases.iter().map(|c| c.id.len()).max().unwrap_or(0);
    out.push_str(&format!("{:width$}  {:<16}", "case", "engine"));
    for i in 0..run.drivers.len() {
        out.push_str(&format!(" {:<7}", format!("d{i}")));
    }
    out.push('\n');
    for (c, case) in run.cases.iter().enumerate() {
        let verdict = run.verdicts[c].text();
        let verdict: String = verdict.chars().take(16).collect();
        out.push_str(&format!("{:width$}  {verdict:<16}", case.id));
        for d in 0..run.drivers.len() {
            let text = run
                .observed
                .get(&(d, c))
                .map(cell)
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(" {text:<7}"));
        }
        out.push('\n');
    }
    out.push_str("totals per driver (cases: verified / refuses all / chain only / unverified / plaintext; engine passes; false passes):\n");
    for (d, (name, _, _)) in run.drivers.iter().enumerate() {
        let mut counts = [0usize; 5];
        let (mut passes, mut false_passes) = (0, 0);
        for ((_, c), o) in run.observed.range((d, 0)..(d + 1, 0)) {
            counts[o.class as usize] += 1;
            if run.verdicts[*c].pass() {
                passes += 1;
                if !o.class.safe() {
                    false_passes += 1;
                }
            }
        }
        out.push_str(&format!(
            "  {name:<22} {:>3} / {:>3} / {:>3} / {:>3} / {:>3}; {passes:>3}; {false_passes}\n",
            counts[Class::Verified as usize],
            counts[Class::RefusesAll as usize],
            counts[Class::ChainOnly as usize],
            counts[Class::Unverified as usize],
            counts[Class::Plaintext as usize],
        ));
    }
    out
}

/// Where the lab keeps its files for one run.
pub fn work_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("verifyfull-lab-clients-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
