//! `verifyfull-operator`: flags (each also an environment variable), logging, the crypto
//! provider, the admin port, signals. The work is in the library.

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "verifyfull-operator",
    version,
    about = "verifyfull's operator: CA bundle distribution and injection"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// verifyfull's own namespace (holds the Lease; never injected).
    #[arg(long, env = "VERIFYFULL_NAMESPACE", default_value = "verifyfull")]
    namespace: String,
    /// More namespaces never touched (kube-system and the own namespace always are).
    #[arg(long, env = "VERIFYFULL_EXCLUDED_NAMESPACES", value_delimiter = ',')]
    excluded_namespaces: Vec<String>,
    /// Workload patches per second; 0 turns the limit off.
    #[arg(long, env = "VERIFYFULL_WRITES_PER_SECOND", default_value_t = 50.0)]
    writes_per_second: f64,
    #[arg(long, env = "VERIFYFULL_WRITE_BURST", default_value_t = 100)]
    write_burst: u32,
    /// Rollouts in progress at once; 0 turns the cap off.
    #[arg(long, env = "VERIFYFULL_MAX_CONCURRENT_ROLLOUTS", default_value_t = 10)]
    max_concurrent_rollouts: usize,
    /// A rollout that takes longer than this no longer holds its slot (seconds).
    #[arg(
        long,
        env = "VERIFYFULL_ROLLOUT_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    rollout_timeout_seconds: u64,
    /// Workloads reconciled in parallel.
    #[arg(long, env = "VERIFYFULL_CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// How often each policy's source is re-read and its status recomputed (seconds).
    #[arg(long, env = "VERIFYFULL_RESYNC_SECONDS", default_value_t = 60)]
    resync_seconds: u64,
    #[arg(
        long,
        env = "VERIFYFULL_LEASE_NAME",
        default_value = "verifyfull-operator"
    )]
    lease_name: String,
    #[arg(long, env = "VERIFYFULL_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the Lease (default: the host name, i.e. the Pod name).
    #[arg(long, env = "VERIFYFULL_IDENTITY")]
    identity: Option<String>,
    /// Plain-HTTP admin address (/livez, /readyz, /metrics).
    #[arg(long, env = "VERIFYFULL_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    #[command(flatten)]
    settings: policy::args::SettingsArgs,
    #[command(flatten)]
    profiles: runtime::profiles::ProfilesArgs,
    /// Manage the webhook's certificates and configurations: self-managed, cert-manager
    /// or secret (unset: the chart or the user does).
    #[arg(long, value_enum, env = "VERIFYFULL_CERTIFICATES")]
    certificates: Option<operator::webhooks::CertMode>,
    /// The ConfigMap (in the own namespace) with validating.json and mutating.json.
    #[arg(
        long,
        env = "VERIFYFULL_WEBHOOK_CONFIGURATIONS",
        default_value = "verifyfull-webhook-configurations"
    )]
    webhook_configurations: String,
    #[arg(
        long,
        env = "VERIFYFULL_TLS_SECRET",
        default_value = "verifyfull-webhook-tls"
    )]
    tls_secret: String,
    #[arg(
        long,
        env = "VERIFYFULL_CA_SECRET",
        default_value = "verifyfull-webhook-ca"
    )]
    ca_secret: String,
    /// The webhook Service's name (its certificate is for `<service>.<namespace>.svc`).
    #[arg(
        long,
        env = "VERIFYFULL_WEBHOOK_SERVICE",
        default_value = "verifyfull-webhook"
    )]
    webhook_service: String,
    /// The ClusterRole that owns the webhook configurations (garbage-collected with it).
    #[arg(
        long,
        env = "VERIFYFULL_WEBHOOK_OWNER",
        default_value = "verifyfull-webhook"
    )]
    webhook_owner: String,
    #[arg(long, env = "VERIFYFULL_SERVER_CERT_DAYS", default_value_t = 90)]
    server_cert_days: u64,
    #[arg(long, env = "VERIFYFULL_CA_DAYS", default_value_t = 1825)]
    ca_days: u64,
    /// How long a new CA is trusted before it signs, and an old one after.
    #[arg(long, env = "VERIFYFULL_CA_OVERLAP_DAYS", default_value_t = 7)]
    ca_overlap_days: u64,
    /// A PostgresTLSPolicy spec (JSON) the operator keeps in place under `--default-policy-name`.
    #[arg(long, env = "VERIFYFULL_DEFAULT_POLICY")]
    default_policy: Option<String>,
    #[arg(
        long,
        env = "VERIFYFULL_DEFAULT_POLICY_NAME",
        default_value = "default"
    )]
    default_policy_name: String,
    /// Watch Secret metadata to notice rotated Secret CA sources at once (needs list/watch
    /// on Secrets); `false` re-reads them every resync.
    #[arg(long, env = "VERIFYFULL_SECRET_SOURCES", default_value_t = true, action = clap::ArgAction::Set)]
    secret_sources: bool,
    /// Policy reports of every workload (docs/reports.md): the API to write, `auto` for the
    /// first one served, `off` for none.
    #[arg(long, env = "VERIFYFULL_REPORTS", value_enum, default_value_t = operator::reports::Choice::Off)]
    reports: operator::reports::Choice,
    /// Resolve references to Secrets in the reports (needs list/watch on Secrets);
    /// otherwise they are Unresolved.
    #[arg(long, env = "VERIFYFULL_REPORTS_READ_SECRETS")]
    reports_read_secrets: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Deletes verifyfull's webhook configurations (the chart's pre-delete hook).
    RemoveWebhooks {
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// The operator's Deployment (in --namespace), scaled to zero first.
        #[arg(long)]
        operator_deployment: Option<String>,
        /// The operator's Lease, taken over before cleaning up.
        #[arg(long)]
        lease: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let logging = runtime::logging::init(runtime::logging::Format::Json);
    let mut signals = match runtime::signals::Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch signals");
            return ExitCode::from(1);
        }
    };
    // One crypto provider, chosen explicitly: with two in the dependency tree rustls has no default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client (in-cluster config or KUBECONFIG)");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::RemoveWebhooks {
        names,
        operator_deployment,
        lease,
    }) = &args.command
    {
        return remove_webhooks(&client, &args.namespace, names, operator_deployment, lease).await;
    }
    let metrics = operator::metrics::Metrics::default();
    metrics.count_dropped_logs(logging.dropped());
    match operator::serve_admin(args.admin_listen, metrics.clone()).await {
        Ok(addr) => tracing::info!(admin = %addr, "admin port"),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the admin port");
            return ExitCode::from(1);
        }
    }
    let default_policy = match &args.default_policy {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(spec) => Some((args.default_policy_name.clone(), spec)),
            Err(e) => {
                tracing::error!(error = %e, "--default-policy is not JSON");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut engine = args.settings.settings();
    let profiles = args.profiles.start(&mut engine);
    if let Some(p) = &profiles {
        metrics.count_profiles(p.clone());
    }
    let config = config(args, engine, profiles, default_policy);
    let shutdown = async move {
        signals.shutdown().await;
        tracing::info!("shutting down: releasing the lease");
    };
    match operator::run(client, config, metrics, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stepping down");
            ExitCode::from(1)
        }
    }
}

/// The uninstall hook's command: the webhook configurations go, then the operator.
async fn remove_webhooks(
    client: &kube::Client,
    namespace: &str,
    names: &[String],
    operator: &Option<String>,
    lease: &Option<String>,
) -> ExitCode {
    let u = operator::webhooks::Uninstall {
        namespace: namespace.to_string(),
        operator: operator.clone(),
        lease: lease.clone(),
    };
    match operator::webhooks::remove(client, names, &u).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "removing the webhook configurations");
            ExitCode::from(1)
        }
    }
}

/// The operator's configuration from its flags.
fn config(
    args: Args,
    engine: policy::Settings,
    profiles: Option<std::sync::Arc<runtime::profiles::Reloading>>,
    default_policy: Option<(String, serde_json::Value)>,
) -> operator::Config {
    let day = Duration::from_secs(86_400);
    let webhooks = args.certificates.map(|mode| operator::webhooks::Settings {
        mode,
        namespace: args.namespace.clone(),
        configurations: args.webhook_configurations.clone(),
        tls_secret: args.tls_secret.clone(),
        ca_secret: args.ca_secret.clone(),
        service_host: format!("{}.{}.svc", args.webhook_service, args.namespace),
        owner: args.webhook_owner.clone(),
        server_validity: day * args.server_cert_days.max(1) as u32,
        ca_validity: day * args.ca_days.max(1) as u32,
        ca_overlap: day * args.ca_overlap_days as u32,
    });
    let identity = args.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("verifyfull-operator-{}", std::process::id()))
    });
    operator::Config {
        namespace: args.namespace,
        excluded_namespaces: args.excluded_namespaces,
        writes_per_second: args.writes_per_second,
        burst: args.write_burst,
        max_rollouts: args.max_concurrent_rollouts,
        rollout_timeout: Duration::from_secs(args.rollout_timeout_seconds),
        concurrency: args.concurrency.max(1),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        lease_name: args.lease_name,
        identity,
        lease_duration: Duration::from_secs(args.lease_seconds.max(3)),
        engine,
        profiles,
        webhooks,
        default_policy,
        secret_sources: args.secret_sources,
        reports: args.reports,
        reports_read_secrets: args.reports_read_secrets,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flags_are_well_formed() {
        <super::Args as clap::CommandFactory>::command().debug_assert();
    }
}
