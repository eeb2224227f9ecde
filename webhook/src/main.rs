//! `verifyfull-webhook`: flags (each also an environment variable), logging, the crypto
//! provider, signals. Everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use policy::admission::{Policy, Subjects};

#[derive(Parser, Debug)]
#[command(
    name = "verifyfull-webhook",
    version,
    about = "verifyfull's validating admission webhook"
)]
struct Args {
    /// HTTPS address for the API server.
    #[arg(long, env = "VERIFYFULL_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP admin address (/livez, /readyz, /metrics).
    #[arg(long, env = "VERIFYFULL_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    #[arg(long, env = "VERIFYFULL_TLS_CERT_FILE")]
    tls_cert_file: PathBuf,
    #[arg(long, env = "VERIFYFULL_TLS_KEY_FILE")]
    tls_key_file: PathBuf,
    /// How often the certificate files are re-read (seconds).
    #[arg(long, env = "VERIFYFULL_CERT_RELOAD_SECONDS", default_value_t = 10)]
    cert_reload_seconds: u64,
    /// Run without a cluster: references to ConfigMaps and Secrets stay unresolved.
    #[arg(long, env = "VERIFYFULL_STANDALONE")]
    standalone: bool,
    /// Also watch Secrets (needs RBAC to list and watch them cluster-wide); only what the
    /// engine needs of each value is kept, never the value.
    #[arg(long, env = "VERIFYFULL_READ_SECRETS")]
    read_secrets: bool,
    /// Watch PostgresTLSPolicies and Namespace labels (the operator is installed): judge
    /// workloads as they will run after injection, and serve `/mutate` for Pods.
    #[arg(long, env = "VERIFYFULL_WATCH_POLICIES")]
    watch_policies: bool,
    #[command(flatten)]
    settings: policy::args::SettingsArgs,
    #[command(flatten)]
    profiles: runtime::profiles::ProfilesArgs,
    /// Users allowed to add or change exemption annotations.
    #[arg(long, env = "VERIFYFULL_EXEMPTION_USERS", value_delimiter = ',')]
    exemption_users: Vec<String>,
    /// Groups allowed to add or change exemption annotations.
    #[arg(
        long,
        env = "VERIFYFULL_EXEMPTION_GROUPS",
        value_delimiter = ',',
        default_value = "system:masters"
    )]
    exemption_groups: Vec<String>,
    /// Users allowed to change a Namespace's verifyfull.dev/mode label.
    #[arg(long, env = "VERIFYFULL_MODE_LABEL_USERS", value_delimiter = ',')]
    mode_label_users: Vec<String>,
    /// Groups allowed to change a Namespace's verifyfull.dev/mode label.
    #[arg(
        long,
        env = "VERIFYFULL_MODE_LABEL_GROUPS",
        value_delimiter = ',',
        default_value = "system:masters"
    )]
    mode_label_groups: Vec<String>,
    /// verifyfull's own service accounts (never denied).
    #[arg(long, env = "VERIFYFULL_OWN_SERVICE_ACCOUNTS", value_delimiter = ',')]
    own_service_accounts: Vec<String>,
    /// Seconds to keep serving, not ready, after SIGTERM.
    #[arg(long, env = "VERIFYFULL_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    shutdown_delay_seconds: u64,
    /// Seconds in-flight requests may take to finish after the delay.
    #[arg(long, env = "VERIFYFULL_DRAIN_SECONDS", default_value_t = 20)]
    drain_seconds: u64,
    /// HTTPS connections open at once; more are closed at once.
    #[arg(long, env = "VERIFYFULL_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// Reviews waiting for or in a decision at once; more are answered 503 at once.
    #[arg(long, env = "VERIFYFULL_MAX_IN_FLIGHT", default_value_t = 64)]
    max_in_flight: usize,
    /// MiB of request bodies (beyond the first 64 KiB of each) buffered at once.
    #[arg(long, env = "VERIFYFULL_BODY_BUDGET_MIB", default_value_t = 16)]
    body_budget_mib: usize,
    /// Log format.
    #[arg(long, value_enum, env = "VERIFYFULL_LOG_FORMAT", default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let logging = runtime::logging::init(match args.log_format {
        LogFormat::Json => runtime::logging::Format::Json,
        LogFormat::Text => runtime::logging::Format::Text,
    });
    let mut signals = match runtime::signals::Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch signals");
            return ExitCode::from(1);
        }
    };
    // One crypto provider, chosen explicitly: with two in the dependency tree rustls has no default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = provider.as_ref().clone().install_default();
    let (caches, policies) = if args.standalone {
        (None, None)
    } else {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes client (in-cluster config or KUBECONFIG); use --standalone to run without one");
                return ExitCode::from(1);
            }
        };
        watch_cluster(client, args.read_secrets, args.watch_policies)
    };
    let log_dropped = Some(logging.dropped());
    let config = config(args, caches, policies, log_dropped);
    let running = match webhook::start(config, provider).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = %running.addr, admin = %running.admin_addr, "serving");
    signals.shutdown().await;
    tracing::info!("shutting down: not ready, draining");
    running.begin_shutdown();
    // A second signal exits at once.
    let code = tokio::select! {
        _ = running.wait() => ExitCode::SUCCESS,
        _ = signals.shutdown() => ExitCode::from(1),
    };
    drop(logging);
    code
}

/// The webhook's configuration from its flags and the cluster watches.
fn config(
    args: Args,
    caches: Option<Arc<webhook::cache::Caches>>,
    policies: Option<Arc<webhook::policies::Policies>>,
    log_dropped: Option<runtime::logging::Dropped>,
) -> webhook::Config {
    let mut settings = args.settings.settings();
    let profiles = args.profiles.start(&mut settings);
    webhook::Config {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        cert_reload_interval: Duration::from_secs(args.cert_reload_seconds.max(1)),
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
        drain_timeout: Duration::from_secs(args.drain_seconds),
        request_timeout: Duration::from_secs(10),
        settings,
        profiles,
        policy: Policy {
            exemption_subjects: Subjects {
                users: args.exemption_users,
                groups: args.exemption_groups,
            },
            own_service_accounts: args.own_service_accounts,
        },
        mode_label_subjects: Subjects {
            users: args.mode_label_users,
            groups: args.mode_label_groups,
        },
        caches,
        policies,
        limits: webhook::ServerLimits {
            max_connections: args.max_connections.max(1),
            max_in_flight: args.max_in_flight.max(1),
            body_budget: args.body_budget_mib.saturating_mul(1024 * 1024),
            ..webhook::ServerLimits::default()
        },
        log_dropped,
    }
}

/// Starts the watches the cluster feeds: ConfigMaps (and Secrets when allowed) for
/// resolving references, and policies with namespace labels when the operator is installed.
fn watch_cluster(
    client: kube::Client,
    read_secrets: bool,
    watch_policies: bool,
) -> (
    Option<Arc<webhook::cache::Caches>>,
    Option<Arc<webhook::policies::Policies>>,
) {
    let caches = Arc::new(webhook::cache::Caches::new(read_secrets));
    tokio::spawn(webhook::cache::watch(
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::all(client.clone()),
        caches.clone(),
        policy::SourceKind::ConfigMap,
    ));
    if read_secrets {
        tokio::spawn(webhook::cache::watch(
            kube::Api::<k8s_openapi::api::core::v1::Secret>::all(client.clone()),
            caches.clone(),
            policy::SourceKind::Secret,
        ));
    }
    let policies = watch_policies.then(|| {
        let store = Arc::new(webhook::policies::Policies::default());
        tokio::spawn(webhook::policies::watch(client, store.clone()));
        store
    });
    (Some(caches), policies)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flags_are_well_formed() {
        <super::Args as clap::CommandFactory>::command().debug_assert();
    }
}
