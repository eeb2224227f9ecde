//! What scenarios use: `kubectl` with a given kubeconfig, the real `verifyfull-webhook`
//! binary as a process, in-process test webhooks, and plain-HTTP probes.

use crate::pki::Pair;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The result of running a command.
#[derive(Debug, Clone)]
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `kubectl` bound to one kubeconfig; an ambient `KUBECONFIG` is never used.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Kubectl {
        let cache = kubeconfig.with_extension("kubectl-cache");
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache,
        }
    }

    /// Runs `kubectl ARGS`, with `stdin` piped in when given.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> std::io::Result<Out> {
        let mut cmd = tokio::process::Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("kubectl: {e} (put it on PATH, run .ci/tools, or set KUBECTL)"),
            )
        })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| std::io::Error::other("kubectl took over 60 s"))??;
        Ok(Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Kubectl {
    /// `kubectl apply --server-side` of one manifest (no OpenAPI validation: see
    /// STANDIN.md), into `ns`.
    pub async fn apply(&self, ns: &str, manifest: &Value) -> std::io::Result<Out> {
        let args = [
            "apply",
            "--server-side",
            "--validate=false",
            "-n",
            ns,
            "-f",
            "-",
        ];
        self.run(&args, Some(&manifest.to_string())).await
    }

    /// `kubectl create` of one manifest into `ns`.
    pub async fn create(&self, ns: &str, manifest: &Value) -> std::io::Result<Out> {
        let args = ["create", "--validate=false", "-n", ns, "-f", "-"];
        self.run(&args, Some(&manifest.to_string())).await
    }
}

/// `KUBECTL`, else the one `.ci/tools` fetched when the machine has none, else `kubectl`
/// on `PATH`.
fn kubectl_binary() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return PathBuf::from(k);
    }
    let fetched = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/bin/kubectl");
    if fetched.exists() {
        fetched
    } else {
        PathBuf::from("kubectl")
    }
}

/// Polls `check` every 100 ms until it holds; fails naming `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; used at once).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain-HTTP GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Where a workspace binary was built: `VERIFYFULL_<NAME>_BIN`, or the target directory —
/// `debug` for tests, `release` for benchmarks (built with optimizations, they measure
/// optimized binaries).
pub fn binary(name: &str) -> Result<PathBuf, String> {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&var) {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let (profile, flag) = if cfg!(debug_assertions) {
        ("debug", "")
    } else {
        ("release", " --release")
    };
    let path = target.join(profile).join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built: run `cargo build{flag} -p {name}` first, or set {var}",
            path.display()
        ))
    }
}

/// A verifyfull binary running as a process, with its admin port.
#[derive(Debug)]
pub struct Process {
    child: tokio::process::Child,
    /// The HTTPS address (the webhook's); the admin address for the operator.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
    name: &'static str,
}

/// The webhook process.
pub type WebhookProcess = Process;

impl Process {
    /// Starts `verifyfull-webhook` with this serving pair; `kubeconfig: None` runs
    /// `--standalone`.
    pub async fn start(
        dir: &Path,
        kubeconfig: Option<&Path>,
        pair: &Pair,
        extra: &[&str],
    ) -> Result<Process, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        write_pair(dir, pair).map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?).into();
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let mut args: Vec<String> = vec![
            format!("--listen={addr}"),
            format!("--tls-cert-file={}", crt.display()),
            format!("--tls-key-file={}", key.display()),
            "--cert-reload-seconds=1".into(),
        ];
        // No delay before draining, unless the test asks for one.
        if !extra
            .iter()
            .any(|a| a.starts_with("--shutdown-delay-seconds"))
        {
            args.push("--shutdown-delay-seconds=0".into());
        }
        if kubeconfig.is_none() {
            args.push("--standalone".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        Process::spawn("verifyfull-webhook", dir, kubeconfig, addr, &args, &[]).await
    }

    /// Starts `verifyfull-operator` (its readiness waits for the CRD).
    pub async fn operator(
        dir: &Path,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Process, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Process::spawn(
            "verifyfull-operator",
            dir,
            Some(kubeconfig),
            ([127, 0, 0, 1], 0).into(),
            &args,
            &[],
        )
        .await
    }

    /// Starts binary `name` with `args` and environment `env` (an ambient `KUBECONFIG` is
    /// removed; `kubeconfig` is set), its admin port on a free local port; waits for
    /// `/readyz`. `addr` is its serving address, if any (port 0: none).
    pub async fn spawn(
        name: &'static str,
        dir: &Path,
        kubeconfig: Option<&Path>,
        addr: SocketAddr,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Process, String> {
        let p = Process::launch(name, dir, kubeconfig, addr, args, env)?;
        p.wait_ready(Duration::from_secs(30)).await?;
        Ok(p)
    }

    /// As [`Process::spawn`], without waiting for readiness.
    pub fn launch(
        name: &'static str,
        dir: &Path,
        kubeconfig: Option<&Path>,
        addr: SocketAddr,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Process, String> {
        // Released ports can come back: never the serving port.
        let mut admin_port = free_port().map_err(|e| e.to_string())?;
        while admin_port == addr.port() {
            admin_port = free_port().map_err(|e| e.to_string())?;
        }
        let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
        let log =
            std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(binary(name)?);
        let out = log.try_clone().map_err(|e| e.to_string())?;
        cmd.arg(format!("--admin-listen={admin}"))
            .args(args)
            .env_remove("KUBECONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        let child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
        let addr = if addr.port() == 0 { admin } else { addr };
        Ok(Process {
            child,
            addr,
            admin,
            dir: dir.to_path_buf(),
            name,
        })
    }

    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok((200, _)) = http_get(self.admin, "/readyz").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{} was not ready within {within:?}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A metric's value from `/metrics` (the sum over its label sets matching `labels`).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let Ok((_, text)) = http_get(self.admin, "/metrics").await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| {
                l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Replaces the serving pair on disk, as the kubelet updates a mounted Secret.
    pub fn rotate(&self, pair: &Pair) -> std::io::Result<()> {
        write_pair(&self.dir, pair)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s): a graceful stop.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL without waiting for anything: a crash.
    pub fn kill_now(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn write_pair(dir: &Path, pair: &Pair) -> std::io::Result<()> {
    std::fs::write(dir.join("tls.key.new"), &pair.key)?;
    std::fs::write(dir.join("tls.crt.new"), &pair.cert)?;
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key"))?;
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt"))
}

/// A handler for an in-process webhook: the AdmissionRequest in, the response fields out
/// (`uid` is filled in).
pub type Handler = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// An in-process admission webhook over TLS, for testing the stand-in's admission chain.
#[derive(Debug)]
pub struct TestWebhook {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestWebhook {
    pub async fn start(
        pair: &Pair,
        delay: Duration,
        handler: Handler,
    ) -> Result<TestWebhook, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, handler) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let review: Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                tokio::time::sleep(delay).await;
                                let mut response = handler(&review["request"]);
                                response["uid"] = review["request"]["uid"].clone();
                                let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(out.to_string()),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(TestWebhook { addr, task })
    }
}

/// A JSON patch as a webhook response carries it.
pub fn patch_response(ops: &Value) -> Value {
    json!({"allowed": true, "patchType": "JSONPatch",
           "patch": base64::engine::general_purpose::STANDARD.encode(ops.to_string())})
}

/// A `caBundle` value for a PEM CA.
pub fn ca_bundle(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// Creates the object `v` (any kind, given by its `apiVersion` and `kind`) in `ns`, or
/// cluster-wide. The resource is the kind in lower case, plural as the API names the
/// kinds the tests create (`…y` → `…ies`, else `…s`).
pub async fn create_dyn(
    client: &kube::Client,
    ns: Option<&str>,
    v: Value,
) -> Result<kube::api::DynamicObject, kube::Error> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    let api_version = v["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = v["kind"].as_str().unwrap_or_default();
    let lower = kind.to_ascii_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let object: DynamicObject = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &object).await
}
