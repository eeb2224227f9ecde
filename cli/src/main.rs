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
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Files, directories or - (stdin).
    #[arg(required = true, value_name = "PATHS|-")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    settings: policy::args::SettingsArgs,
    /// The instant exemptions are judged at (RFC 3339, e.g. 2026-12-31T00:00:00Z); default: now.
    #[arg(long, value_parser = parse_now)]
    now: Option<jiff::Timestamp>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// Worker threads (default: the number of CPUs).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// An application profile of your own (docs/applications.md); repeat for more. One
    /// with the `id` of a bundled profile replaces it; a malformed one is an error naming
    /// the file and the field.
    #[arg(long = "profile", value_name = "FILE")]
    profiles: Vec<PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Check(args) = cli.command;
    let mut settings = args.settings.settings();
    if !args.profiles.is_empty() {
        match load_profiles(&args.profiles) {
            Ok(user) => {
                let set = policy::profiles::ProfileSet::with_user(user);
                settings.profiles = policy::profiles::Profiles::new(set);
            }
            Err(e) => {
                eprintln!("verifyfull: profile {e}");
                return ExitCode::from(2);
            }
        }
    }
    let opts = check::Options {
        settings,
        now: args.now.unwrap_or_else(jiff::Timestamp::now),
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        locate: matches!(args.output, Output::Sarif),
    };
    let outcome = check::check(&args.paths, &opts);
    let json = match args.output {
        Output::Human => None,
        Output::Json => Some(serde_json::to_value(&outcome)),
        Output::Sarif => Some(Ok(verifyfull_cli::sarif::render(&outcome))),
    };
    let text = match json {
        None => check::render_human(&outcome),
        Some(value) => match value.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            Err(e) => {
                eprintln!("verifyfull: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        },
    };
    print!("{text}");
    ExitCode::from(outcome.exit_code() as u8)
}
