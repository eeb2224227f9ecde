//! Connection strings in `command` and `args` (docs/drivers.md, "Commands"). After the
//! kubelet's `$(VAR)` expansion, each argument — and the value of `--flag=value` — is
//! recognised by value like a variable's; the libpq command-line tools also take a host
//! with `-h`/`--host`, judged with the libpq environment; a script after `sh -c` is not
//! parsed, but URLs in it are found (they end at whitespace or a quote).

use std::borrow::Cow;

use crate::env::{Budget, Env, Origin, PodInfo, Var, Visibility};

/// The programs that read `-h`, `-p` and `-d` as libpq does.
const TOOLS: &[&str] = &[
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_basebackup",
    "pgbench",
    "pg_isready",
    "vacuumdb",
    "reindexdb",
    "createdb",
    "dropdb",
];

const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh"];

/// What of a command line is read: this many words, each up to [`MAX_WORD`] bytes, and
/// this many URLs from one script; the rest is noted (docs/limits.md).
const MAX_WORDS: usize = 1_000;
const MAX_WORD: usize = crate::env::MAX_EXPANDED_VALUE;
const MAX_SCRIPT_URLS: usize = 100;

/// URL schemes found inside shell scripts.
const URL_STARTS: &[&str] = &[
    "postgresql://",
    "postgres://",
    "jdbc:postgresql:",
    "r2dbc:",
    "r2dbcs:",
];

/// What to judge in a container's command line.
#[derive(Debug)]
pub(crate) struct Arguments<'a> {
    /// Values to recognise like variables' (named `args[3]`, `command[0]`).
    pub values: Vec<Var<'a>>,
    /// Hosts a libpq tool was given, as `host=… port=…` strings judged with the libpq
    /// environment.
    pub tool_hosts: Vec<Var<'a>>,
    /// Words beyond what is read: judged as not seen (a note says so).
    pub truncated: bool,
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

fn var<'a>(name: String, value: String) -> Var<'a> {
    Var {
        name: Cow::Owned(name),
        value: Cow::Owned(value),
        origin: Origin::Literal,
        visibility: Visibility::Visible,
        env_from: None,
        redefined: false,
    }
}

/// A value in libpq's keyword/value quoting.
fn quoted(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(crate) fn arguments<'a>(
    command: &[String],
    args: &[String],
    env: &Env<'a>,
    pod: &PodInfo<'_>,
    budget: &mut Budget,
) -> Arguments<'a> {
    let mut out = Arguments {
        values: Vec::new(),
        tool_hosts: Vec::new(),
        truncated: false,
    };
    if command.is_empty() && args.is_empty() {
        return out;
    }
    out.truncated = command.len() + args.len() > MAX_WORDS
        || command.iter().chain(args).any(|w| w.len() > MAX_WORD);
    // The kubelet expands `$(VAR)` in both, from the container's environment.
    let words: Vec<(String, String)> = command
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("command[{i}]"), w))
        .chain(
            args.iter()
                .enumerate()
                .map(|(i, w)| (format!("args[{i}]"), w)),
        )
        .filter(|(_, w)| w.len() <= MAX_WORD)
        .take(MAX_WORDS)
        .map(|(label, w)| {
            (
                label,
                env.expand(&Cow::Borrowed(w.as_str()), pod, budget)
                    .0
                    .into_owned(),
            )
        })
        .collect();
    for (label, word) in &words {
        // `--flag=value`, and Java's `-Dproperty=value`.
        let value = match word.split_once('=') {
            Some((flag, v)) if flag.starts_with("--") || flag.starts_with("-D") => v,
            _ => word.as_str(),
        };
        if !value.is_empty() {
            out.values.push(var(label.clone(), value.to_string()));
        }
    }
    let program = words.first().map(|(_, w)| basename(w)).unwrap_or("");
    if TOOLS.contains(&program) {
        tool(&words[1..], &mut out);
    }
    if SHELLS.contains(&program)
        // `-c`, or combined short options that include it (`-lc`, `-ec`).
        && let Some(i) = words
            .iter()
            .position(|(_, w)| w.starts_with('-') && !w.starts_with("--") && w.contains('c'))
        && let Some((label, script)) = words.get(i + 1)
    {
        shell(label, script, &mut out);
    }
    out
}

/// A script: the URLs in it, and the host of a libpq tool that starts it.
fn shell(label: &str, script: &str, out: &mut Arguments<'_>) {
    let mut urls: Vec<(usize, usize)> = Vec::new();
    for start in URL_STARTS {
        let mut from = 0;
        while let Some(at) = script[from..].find(start) {
            let begin = from + at;
            let end = script[begin..]
                .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`'))
                .map_or(script.len(), |e| begin + e);
            urls.push((begin, end));
            from = end;
        }
    }
    // `postgresql://` inside `jdbc:postgresql://…` is that JDBC URL, not another one.
    urls.sort();
    let (mut last_end, mut taken) = (0, 0);
    for (begin, end) in urls {
        if begin < last_end {
            continue;
        }
        last_end = end;
        if taken == MAX_SCRIPT_URLS {
            out.truncated = true;
            break;
        }
        taken += 1;
        out.values
            .push(var(label.to_string(), script[begin..end].to_string()));
    }
    let tokens: Vec<(String, String)> = script
        .split_whitespace()
        .map(|t| (label.to_string(), t.trim_matches(['\'', '"']).to_string()))
        .collect();
    let first = tokens
        .iter()
        .position(|(_, t)| t != "exec")
        .unwrap_or(tokens.len());
    if tokens
        .get(first)
        .is_some_and(|(_, t)| TOOLS.contains(&basename(t)))
    {
        tool(&tokens[first + 1..], out);
    }
}

/// A libpq tool's `-h`/`--host` and `-p`/`--port`, with its `-d`/`--dbname` when that is
/// a keyword/value string: libpq merges them, the string's keys last (they win).
fn tool(words: &[(String, String)], out: &mut Arguments<'_>) {
    let mut host: Option<(&str, &str)> = None;
    let mut port: Option<&str> = None;
    let mut dbname: Option<&str> = None;
    let mut i = 0;
    while i < words.len() {
        let (label, w) = (&words[i].0, words[i].1.as_str());
        let next = words.get(i + 1).map(|(_, n)| n.as_str());
        let (flag, value, used) = if let Some(v) = w.strip_prefix("--host=") {
            ("h", Some(v), 1)
        } else if let Some(v) = w.strip_prefix("--port=") {
            ("p", Some(v), 1)
        } else if let Some(v) = w.strip_prefix("--dbname=") {
            ("d", Some(v), 1)
        } else if w == "--dbname" || w == "-d" {
            ("d", next, 2)
        } else if w == "--host" || w == "-h" {
            ("h", next, 2)
        } else if w == "--port" || w == "-p" {
            ("p", next, 2)
        } else if let Some(v) = w.strip_prefix("-h") {
            ("h", Some(v), 1)
        } else if let Some(v) = w.strip_prefix("-p").filter(|v| !v.is_empty()) {
            ("p", Some(v), 1)
        } else {
            ("", None, 1)
        };
        match (flag, value) {
            ("h", Some(v)) => host = Some((label, v)),
            ("p", Some(v)) => port = Some(v),
            ("d", Some(v)) => dbname = Some(v),
            _ => {}
        }
        i += used;
    }
    if let Some((label, h)) = host {
        let mut value = format!("host={}", quoted(h));
        if let Some(p) = port {
            value.push_str(&format!(" port={}", quoted(p)));
        }
        let conninfo = |d: &&str| {
            matches!(
                crate::libpq::recognise_keyword_value(d),
                crate::libpq::KeyValueRecognition::Yes(_)
            )
        };
        if let Some(d) = dbname.filter(conninfo) {
            value.push(' ');
            value.push_str(d);
        }
        out.tool_hosts.push(var(label.to_string(), value));
    }
}
