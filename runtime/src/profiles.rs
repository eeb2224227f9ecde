//! A user's application profiles from a mounted ConfigMap (docs/applications.md), re-read
//! while the server runs.
//!
//! - Every visible file in the directory is a profile; hidden entries (the kubelet's
//!   `..data` and its timestamped directories) are not.
//! - A ConfigMap volume is swapped whole by the kubelet (`..data` is re-pointed): the files
//!   are read from the directory `..data` names, and read again if it moved meanwhile, so a
//!   set is never a mix of two versions of the ConfigMap.
//! - Until a valid set is loaded the server is not ready ([`Reloading::loaded`]). A bad
//!   set later keeps the last valid one in use, logs the file and field, and counts
//!   ([`Reloading::failures`], [`Reloading::failing`]). A valid change is in use at the
//!   next read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use policy::profiles::{Error, Live, ProfileSet, Profiles};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Files a profile directory may hold: more is not a set of profiles.
pub const MAX_FILES: usize = 256;

/// The files of one read, by name, in name order.
type Files = Vec<(String, String)>;

#[derive(Debug)]
pub struct Reloading {
    dir: PathBuf,
    live: &'static Live,
    /// A valid set is in use.
    pub loaded: AtomicBool,
    /// Reads that found a set that cannot be used.
    pub failures: AtomicU64,
    /// The last read found a set that cannot be used.
    pub failing: AtomicBool,
    /// Profiles of the user's in use.
    pub user_profiles: AtomicUsize,
    /// What the last read found and whether it was used, to parse only what changed.
    last: Mutex<Option<(Files, Result<(), Error>)>>,
    /// The last refusal, to count each distinct one once.
    last_error: Mutex<Option<Error>>,
    /// Every set built, by its files: a set lives for the life of the process, so going
    /// back to an earlier ConfigMap reuses its set instead of building another.
    sets: Mutex<HashMap<Files, &'static ProfileSet>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Reloading {
    /// Nothing is read yet: call [`Reloading::reload`] or [`Reloading::watch`].
    pub fn new(dir: PathBuf) -> Arc<Reloading> {
        Arc::new(Reloading {
            dir,
            live: Live::new(),
            loaded: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            user_profiles: AtomicUsize::new(0),
            last: Mutex::new(None),
            last_error: Mutex::new(None),
            sets: Mutex::new(HashMap::new()),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// The engine's view: always the set in use.
    pub fn profiles(&self) -> Profiles {
        Profiles::live(self.live)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Resolves once a valid set is in use.
    pub async fn loaded(&self) {
        let mut changes = self.changed.subscribe();
        let _ = changes.wait_for(|_| self.is_loaded()).await;
    }

    /// Counts up at every change of the set in use.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reads the directory; `Ok(true)` when another set is now in use. Blocking. A set
    /// refused stays refused (and `failing`) until the files change; each distinct
    /// refusal is counted once.
    pub fn reload(&self) -> Result<bool, Error> {
        let result = self.try_reload();
        self.failing.store(result.is_err(), Ordering::SeqCst);
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Err(e) if last_error.as_ref() != Some(e) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                *last_error = Some(e.clone());
            }
            Err(_) => {}
            Ok(_) => *last_error = None,
        }
        result
    }

    fn try_reload(&self) -> Result<bool, Error> {
        let files = read_consistent(&self.dir)?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, outcome)) = last.as_ref()
            && *seen == files
        {
            return outcome.clone().map(|()| false);
        }
        let outcome = self.build(&files);
        *last = Some((files, outcome.clone().map(|_| ())));
        outcome.map(|()| true)
    }

    /// Puts the set of `files` in use, or says why it cannot be.
    fn build(&self, files: &Files) -> Result<(), Error> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let set = match sets.get(files) {
            Some(set) => *set,
            None => {
                let user = policy::profiles::parse_user(
                    files.iter().map(|(f, t)| (f.as_str(), t.as_str())),
                )?;
                let set = ProfileSet::with_user(user);
                sets.insert(files.clone(), set);
                set
            }
        };
        drop(sets);
        self.live.replace(set);
        self.user_profiles.store(files.len(), Ordering::SeqCst);
        self.loaded.store(true, Ordering::SeqCst);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Re-reads every `every`, off the async workers; logs each change and each refusal
    /// (a refusal once per distinct problem, not at every read).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            // `reload` counts each distinct refusal once: that count says what is news.
            let before = self.failures.load(Ordering::SeqCst);
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Err(e) => tracing::error!(error = %e, "reading the application profiles stopped"),
                Ok(Ok(true)) => tracing::info!(
                    dir = %self.dir.display(),
                    profiles = self.user_profiles.load(Ordering::SeqCst),
                    "application profiles loaded"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) if self.failures.load(Ordering::SeqCst) != before => {
                    if self.is_loaded() {
                        tracing::error!(error = %e, "application profiles not reloaded; keeping the set in use");
                    } else {
                        tracing::error!(error = %e, "application profiles cannot be loaded; not ready");
                    }
                }
                // The same refusal as last time.
                Ok(Err(_)) => {}
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The flags of both servers.
#[derive(clap::Args, Debug, Clone)]
pub struct ProfilesArgs {
    /// A directory of application profiles of your own, one per file (a mounted ConfigMap;
    /// docs/applications.md). Re-read while running; not ready until a valid set is read.
    #[arg(long, env = "VERIFYFULL_PROFILES_DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// How often the profiles directory is re-read (seconds).
    #[arg(long, env = "VERIFYFULL_PROFILES_RELOAD_SECONDS", default_value_t = 5)]
    pub profiles_reload_seconds: u64,
}

impl ProfilesArgs {
    /// Starts re-reading the directory, when one is given, and points `settings` at it.
    pub fn start(&self, settings: &mut policy::Settings) -> Option<Arc<Reloading>> {
        let dir = self.profiles_dir.clone()?;
        let r = Reloading::new(dir);
        settings.profiles = r.profiles();
        let every = Duration::from_secs(self.profiles_reload_seconds.max(1));
        tokio::spawn(r.clone().watch(every));
        Some(r)
    }
}

/// The metrics of a [`Reloading`], brought up to date when scraped.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    failures: Counter,
    failing: Gauge,
    user: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "profiles_reload_failures",
            "Reads of the application profiles directory that found a set that cannot be used (the set in use stays)",
            m.failures.clone(),
        );
        registry.register(
            "profiles_reload_failing",
            "1 when the last read of the application profiles directory was refused",
            m.failing.clone(),
        );
        registry.register(
            "profiles_user",
            "Application profiles of the user's in use",
            m.user.clone(),
        );
        m
    }

    pub fn observe(&self, r: &Reloading) {
        crate::metrics::catch_up(&self.failures, r.failures.load(Ordering::SeqCst));
        self.failing
            .set(i64::from(r.failing.load(Ordering::SeqCst)));
        self.user.set(r.user_profiles.load(Ordering::SeqCst) as i64);
    }
}

/// The files of `dir`, all from one version of a ConfigMap volume.
fn read_consistent(dir: &Path) -> Result<Files, Error> {
    let data = dir.join("..data");
    for _ in 0..3 {
        let Ok(target) = std::fs::read_link(&data) else {
            // Not a ConfigMap volume (a plain directory): read it as it is.
            return read_dir(dir, dir);
        };
        // The kubelet removes the old version right after the switch: a read that fails
        // then is read again from the new one.
        let files = read_dir(dir, &dir.join(&target));
        if std::fs::read_link(&data).ok().as_ref() == Some(&target) {
            return files;
        }
    }
    Err(error(dir, "kept changing while it was read".to_string()))
}

/// Every visible file of `from`, named as in `dir`.
fn read_dir(dir: &Path, from: &Path) -> Result<Files, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(from).map_err(|e| error(dir, e.to_string()))? {
        let entry = entry.map_err(|e| error(dir, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if files.len() == MAX_FILES {
            return Err(error(dir, format!("more than {MAX_FILES} files")));
        }
        let file = dir.join(&name).display().to_string();
        let f = std::fs::File::open(from.join(&name)).map_err(|e| Error {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let text = policy::profiles::read_text(&file, f)?;
        files.push((file, text));
    }
    files.sort();
    Ok(files)
}

fn error(dir: &Path, message: String) -> Error {
    Error {
        file: dir.display().to_string(),
        message,
    }
}

/// Lays `files` out at `dir` as the kubelet lays out a ConfigMap volume: each version in
/// its own directory, the keys as links through `..data`, the switch to a version made
/// whole by renaming `..data`, the old version removed after it. For tests of what reads
/// such a volume (here, and the chart's end-to-end test).
#[cfg(any(test, feature = "testing"))]
pub fn mount_config_map(dir: &Path, version: &str, files: &[(&str, &str)]) -> std::io::Result<()> {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v)?;
    for (name, text) in files {
        std::fs::write(v.join(name), text)?;
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), link)?;
        }
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp)?;
    std::fs::rename(tmp, dir.join("..data"))?;
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../docs/profile-example.yaml");

    fn has_billing(r: &Reloading) -> bool {
        r.profiles()
            .set()
            .profiles()
            .iter()
            .any(|p| p.id == "billing")
    }

    fn tempdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("verifyfull-profiles-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_bad_set_at_start_is_not_loaded_and_names_file_and_field() {
        let d = tempdir("start");
        mount_config_map(
            &d,
            "v1",
            &[(
                "billing.yaml",
                &GOOD.replace("driver: \"lib/pq (Go)\"\n", ""),
            )],
        )
        .unwrap();
        let r = Reloading::new(d.clone());
        let e = r.reload().unwrap_err();
        assert!(e.file.ends_with("billing.yaml"), "{e}");
        assert!(e.message.contains("driver"), "{e}");
        assert!(!r.is_loaded());
        assert!(r.failing.load(Ordering::SeqCst));
        assert!(!has_billing(&r), "the bundled set stays in use");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_valid_change_is_used_a_bad_one_keeps_the_last_valid_set() {
        let d = tempdir("change");
        mount_config_map(&d, "v1", &[("billing.yaml", GOOD)]).unwrap();
        let r = Reloading::new(d.clone());
        let mut changes = r.subscribe();
        assert_eq!(r.reload(), Ok(true));
        assert!(r.is_loaded() && has_billing(&r));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(r.reload(), Ok(false), "nothing changed");
        assert!(!changes.has_changed().unwrap());

        // One file good, one bad: nothing of it is used.
        let renamed = GOOD
            .replace("billing", "ledger")
            .replace("BILLING", "LEDGER");
        mount_config_map(
            &d,
            "v2",
            &[("billing.yaml", &renamed), ("broken.yaml", "id: [")],
        )
        .unwrap();
        let e = r.reload().unwrap_err();
        assert!(e.file.ends_with("broken.yaml"), "{e}");
        assert!(has_billing(&r), "the last valid set stays");
        assert!(r.is_loaded());
        assert_eq!(r.failures.load(Ordering::SeqCst), 1);
        // Read again unchanged: still refused, counted once.
        assert_eq!(r.reload(), Err(e));
        assert!(r.failing.load(Ordering::SeqCst));
        assert_eq!(r.failures.load(Ordering::SeqCst), 1);

        mount_config_map(
            &d,
            "v3",
            &[("billing.yaml", &renamed), ("broken.yaml", GOOD)],
        )
        .unwrap();
        assert_eq!(r.reload(), Ok(true));
        assert!(!r.failing.load(Ordering::SeqCst));
        let ids: Vec<&str> = r
            .profiles()
            .set()
            .profiles()
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert!(
            ids.contains(&"ledger") && ids.contains(&"billing"),
            "{ids:?}"
        );
        assert!(changes.has_changed().unwrap());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn two_files_with_one_id_and_too_many_files_are_refused() {
        let d = tempdir("ids");
        mount_config_map(&d, "v1", &[("a.yaml", GOOD), ("b.yaml", GOOD)]).unwrap();
        let r = Reloading::new(d.clone());
        let e = r.reload().unwrap_err();
        assert!(
            e.file.ends_with("b.yaml") && e.message.contains("a.yaml"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();

        std::fs::create_dir_all(&d).unwrap();
        for i in 0..=MAX_FILES {
            std::fs::write(d.join(format!("{i}.yaml")), "").unwrap();
        }
        let e = Reloading::new(d.clone()).reload().unwrap_err();
        assert!(e.message.contains("more than 256 files"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_empty_or_missing_directory() {
        let d = tempdir("empty");
        let r = Reloading::new(d.clone());
        assert_eq!(
            r.reload(),
            Ok(true),
            "no profiles of the user's: the bundled ones"
        );
        assert!(r.is_loaded());
        std::fs::remove_dir_all(&d).unwrap();
        let r = Reloading::new(d.clone());
        let e = r.reload().unwrap_err();
        assert!(e.file.contains("verifyfull-profiles-empty"), "{e}");
        assert!(!r.is_loaded());
    }
}
