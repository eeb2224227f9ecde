//! The driver clients: one long-running process per driver, in the driver's own language,
//! speaking JSON lines (an attempt in, its outcome out). Installed and built by `.ci/drivers`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cases::Form;

/// How to start one driver's client.
#[derive(Debug, Clone)]
pub struct Driver {
    pub name: &'static str,
    /// What runs, as pinned by `.ci/drivers` (the run prints the exact versions).
    pub pinned: &'static str,
    /// The forms this driver reads.
    pub forms: &'static [Form],
    program: PathBuf,
    /// `{home}` stands for the client's home directory.
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
}

const LIBPQ_FORMS: &[Form] = &[Form::Url, Form::Kv, Form::Env];
const URL_AND_ENV: &[Form] = &[Form::Url, Form::Env];

/// The eight drivers. `root` is the repository, `sqlx` the lab's own sqlx client.
pub fn drivers(root: &Path, sqlx: &Path) -> Vec<Driver> {
    let built = root.join(".ci/drivers.d");
    let python = built.join("venv/bin/python");
    let py_client = root.join("tests/drivers/clients/python/client.py");
    let py = |name, pinned, arg: &str, env| Driver {
        name,
        pinned,
        forms: if arg == "asyncpg" {
            URL_AND_ENV
        } else {
            LIBPQ_FORMS
        },
        program: python.clone(),
        args: vec![py_client.display().to_string(), arg.to_string()],
        env,
    };
    vec![
        py(
            "libpq 15 (Debian)",
            "Debian 12's libpq5 15, through psycopg 3.3.9's pure-Python layer",
            "psycopg",
            vec![("PSYCOPG_IMPL", "python")],
        ),
        py(
            "libpq (psycopg wheel)",
            "the libpq 18 bundled in psycopg-binary 3.3.9",
            "psycopg",
            vec![("PSYCOPG_IMPL", "binary")],
        ),
        py("asyncpg", "asyncpg 0.32.0", "asyncpg", vec![]),
        Driver {
            name: "node-postgres",
            pinned: "pg 8.23.1 (pg-connection-string 2.x), Node.js 20",
            forms: URL_AND_ENV,
            program: "node".into(),
            args: vec![
                root.join("tests/drivers/clients/node/client.js")
                    .display()
                    .to_string(),
            ],
            env: vec![],
        },
        Driver {
            name: "pgjdbc",
            pinned: "pgjdbc 42.5 (Debian 12's libpostgresql-jdbc-java), Java 17",
            forms: &[Form::Jdbc],
            program: "java".into(),
            // pgjdbc looks for ~/.postgresql/root.crt under user.home, not HOME.
            args: vec![
                "-Duser.home={home}".into(),
                "-cp".into(),
                format!(
                    "{}:/usr/share/java/postgresql.jar",
                    built.join("java").display()
                ),
                "Client".into(),
            ],
            env: vec![],
        },
        Driver {
            name: "lib/pq",
            pinned: "lib/pq 1.10.7 (Debian 12), Go 1.19",
            forms: LIBPQ_FORMS,
            program: built.join("bin/go-client"),
            args: vec!["pq".into()],
            env: vec![],
        },
        Driver {
            name: "pgx",
            pinned: "pgx 4.15 / pgconn (Debian 12), Go 1.19",
            forms: LIBPQ_FORMS,
            program: built.join("bin/go-client"),
            args: vec!["pgx".into()],
            env: vec![],
        },
        Driver {
            name: "sqlx",
            pinned: "sqlx 0.8.6 (rustls with ring, webpki roots)",
            forms: URL_AND_ENV,
            program: sqlx.to_path_buf(),
            args: vec![],
            env: vec![],
        },
    ]
}

#[derive(Debug, Serialize)]
pub struct Attempt<'a> {
    pub id: &'a str,
    pub target: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub user: &'a str,
    pub timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub ok: bool,
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Deserialize)]
struct Ready {
    ready: bool,
    version: String,
}

/// A running client.
#[derive(Debug)]
pub struct Client {
    pub name: &'static str,
    pub version: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: PathBuf,
}

impl Client {
    /// Starts the client with `home` as its HOME (empty: no `~/.postgresql/root.crt`) and
    /// waits for its ready line.
    pub fn start(driver: &Driver, home: &Path) -> Result<Client, String> {
        let stderr = home.join("stderr.log");
        let log =
            std::fs::File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        let mut command = Command::new(&driver.program);
        // Nothing of this machine's own TLS or libpq settings reaches a driver: each attempt
        // sets exactly its case's variables.
        for (name, _) in std::env::vars_os() {
            let inherited = name.to_str().is_some_and(|n| {
                n.starts_with("PG")
                    || matches!(n, "NODE_EXTRA_CA_CERTS" | "SSL_CERT_FILE" | "SSL_CERT_DIR")
            });
            if inherited {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(
                driver
                    .args
                    .iter()
                    .map(|a| a.replace("{home}", &home.display().to_string())),
            )
            .envs(driver.env.iter().copied())
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "{}: cannot start {}: {e} (run .ci/drivers to install the driver clients)",
                    driver.name,
                    driver.program.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("{}: no pipes", driver.name));
        };
        let mut client = Client {
            name: driver.name,
            version: String::new(),
            child,
            stdin,
            stdout: BufReader::new(stdout),
            stderr,
        };
        let line = client.read_line()?;
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|e| client.failure(&format!("bad ready line {line:?}: {e}")))?;
        if !ready.ready {
            return Err(client.failure("not ready"));
        }
        client.version = ready.version;
        Ok(client)
    }

    pub fn attempt(&mut self, attempt: &Attempt<'_>) -> Result<Outcome, String> {
        let line = serde_json::to_string(attempt).map_err(|e| e.to_string())?;
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| self.failure(&format!("cannot send attempt {}: {e}", attempt.id)))?;
        let answer = self.read_line()?;
        let outcome: Outcome = serde_json::from_str(&answer)
            .map_err(|e| self.failure(&format!("bad answer {answer:?}: {e}")))?;
        if outcome.id != attempt.id {
            return Err(self.failure(&format!(
                "answered {} to attempt {}",
                outcome.id, attempt.id
            )));
        }
        Ok(outcome)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(self.failure("exited")),
            Ok(_) => Ok(line),
            Err(e) => Err(self.failure(&format!("read: {e}"))),
        }
    }

    /// A failure message with the client's exit status and the last lines it wrote.
    fn failure(&mut self, what: &str) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!(" ({s})"),
            _ => String::new(),
        };
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!(
            "driver {}: {what}{status}; its last lines:\n{tail}",
            self.name
        )
    }

    /// The process id (the lab's watchdog kills a client that stops answering).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
