//! `verifyfull`: the offline CLI over the policy engine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use verifyfull_cli::check;

// Parsing thousands of manifests is allocation-bound; glibc's allocator spent a quarter of
// the time in its own bookkeeping (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "verifyfull",
    version,
    about = "PostgreSQL clients in Kubernetes: verify-full or nothing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Judge manifests: files, directories (recursively: .yaml, .yml, .json) or - for stdin.
    ///
    /// Exit code: 0 when nothing is denied, 1 when a finding is denied, 2 when some input
    /// was unusable (2 wins; the other inputs are still checked and reported).
    Check(CheckArgs),
    /// Judge the live cluster, read-only: every workload that runs on its own, with
    /// references resolved as the webhook resolves them. Uses the standard kube
    /// configuration (KUBECONFIG, ~/.kube/config, or in-cluster); only GETs and LISTs.
    ///
    /// Exit code: 0 when nothing is denied, 1 when a finding is denied, 2 when the cluster
    /// could not be read.
    Audit(AuditArgs),
}

/// How workloads are judged: the same flags for manifests and for the cluster.
#[derive(clap::Args, Debug)]
struct Judging {
    #[command(flatten)]
    settings: policy::args::SettingsArgs,
    /// The instant exemptions are judged at (RFC 3339, e.g. 2026-12-31T00:00:00Z); default: now.
    #[arg(long, value_parser = parse_now)]
    now: Option<jiff::Timestamp>,
    /// Worker threads (default: the number of CPUs).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// An application profile of your own (docs/applications.md); repeat for more. One
    /// with the `id` of a bundled profile replaces it; a malformed one is an error naming
    /// the file and the field.
    #[arg(long = "profile", value_name = "FILE")]
    profiles: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// One namespace (default: all).
    #[arg(long, short)]
    namespace: Option<String>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// The mode of namespaces without a verifyfull.dev/mode label: the chart's `mode`.
    #[arg(long, default_value = "enforce")]
    default_mode: String,
    /// A namespace the webhook never judges (repeat): the chart excludes kube-system, its
    /// own namespace and `excludedNamespaces`.
    #[arg(long = "exclude-namespace", value_name = "NAMESPACE", default_values = ["kube-system", "verifyfull"])]
    excluded: Vec<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = AuditOutput::Human)]
    output: AuditOutput,
    /// The report API of `--output report`.
    #[arg(long, value_enum, default_value_t = policy::reports::ReportApi::OpenReports)]
    report_api: policy::reports::ReportApi,
    #[command(flatten)]
    judging: Judging,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum AuditOutput {
    Human,
    Json,
    /// Policy reports, one per namespace, as a List (docs/reports.md).
    Report,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Files, directories or - (stdin).
    #[arg(required = true, value_name = "PATHS|-")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    judging: Judging,
}

/// Reads and checks the user's profiles; the first problem, naming its file.
fn load_profiles(paths: &[PathBuf]) -> Result<Vec<policy::profiles::Profile>, String> {
    let texts = paths
        .iter()
        .map(|p| {
            let file = p.display().to_string();
            let f = std::fs::File::open(p).map_err(|e| policy::profiles::Error {
                file: file.clone(),
                message: e.to_string(),
            })?;
            Ok((file.clone(), policy::profiles::read_text(&file, f)?))
        })
        .collect::<Result<Vec<_>, policy::profiles::Error>>()
        .map_err(|e| e.to_string())?;
    policy::profiles::parse_user(texts.iter().map(|(f, t)| (f.as_str(), t.as_str())))
        .map_err(|e| e.to_string())
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    Human,
    Json,
    /// SARIF 2.1.0, for code scanning (GitHub and others).
    Sarif,
}

fn parse_now(s: &str) -> Result<jiff::Timestamp, String> {
    s.parse().map_err(|_| {
        "expected an RFC 3339 date-time with offset, e.g. 2026-12-31T00:00:00Z".to_string()
    })
}

impl Judging {
    /// The options these flags give; `Err` names a profile that cannot be used.
    fn options(&self, locate: bool) -> Result<check::Options, String> {
        let mut settings = self.settings.settings();
        if !self.profiles.is_empty() {
            let user = load_profiles(&self.profiles).map_err(|e| format!("profile {e}"))?;
            let set = policy::profiles::ProfileSet::with_user(user);
            settings.profiles = policy::profiles::Profiles::new(set);
        }
        Ok(check::Options {
            settings,
            now: self.now.unwrap_or_else(jiff::Timestamp::now),
            jobs: (self.jobs)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            locate,
        })
    }
}

/// Prints `value` as indented JSON.
fn print_json(value: Result<serde_json::Value, serde_json::Error>) -> Result<(), String> {
    let text = value
        .and_then(|v| serde_json::to_string_pretty(&v))
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    println!("{text}");
    Ok(())
}

fn check(args: &CheckArgs) -> Result<u8, String> {
    let opts = args.judging.options(matches!(args.output, Output::Sarif))?;
    let outcome = check::check(&args.paths, &opts);
    match args.output {
        Output::Human => print!("{}", check::render_human(&outcome)),
        Output::Json => print_json(serde_json::to_value(&outcome))?,
        Output::Sarif => print_json(Ok(verifyfull_cli::sarif::render(&outcome)))?,
    }
    Ok(outcome.exit_code() as u8)
}

fn audit(args: &AuditArgs) -> Result<u8, String> {
    let opts = args.judging.options(false)?;
    // One crypto provider, chosen explicitly: with two in the dependency tree rustls has
    // no default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut cluster = runtime.block_on(async {
        let options = kube::config::KubeConfigOptions {
            context: args.context.clone(),
            ..Default::default()
        };
        let config = match &args.context {
            Some(_) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string()),
            None => kube::Config::infer().await.map_err(|e| e.to_string()),
        };
        let client = kube::Client::try_from(config.map_err(|e| format!("no cluster: {e}"))?)
            .map_err(|e| format!("no cluster: {e}"))?;
        verifyfull_cli::audit::read(&client, args.namespace.as_deref())
            .await
            .map_err(|e| e.to_string())
    })?;
    let outcome = verifyfull_cli::audit::judge(&mut cluster, &opts, &args.excluded);
    match args.output {
        AuditOutput::Human => print!(
            "{}",
            verifyfull_cli::audit::render_human(&outcome, &cluster, &args.default_mode)
        ),
        AuditOutput::Json => print_json(serde_json::to_value(verifyfull_cli::audit::Report {
            outcome: &outcome,
            modes: cluster.modes(&outcome, &args.default_mode),
            notes: &cluster.notes,
        }))?,
        AuditOutput::Report => {
            let api = args.report_api;
            let items = verifyfull_cli::audit::reports(&cluster, &opts, api, &args.default_mode);
            print_json(Ok(
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
            ))?
        }
    }
    Ok(outcome.exit_code() as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Check(args) => check(args),
        Command::Audit(args) => audit(args),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("verifyfull: {e}");
            ExitCode::from(2)
        }
    }
}
