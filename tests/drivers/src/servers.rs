//! The four PostgreSQL servers, from the machine's `postgresql` package: `initdb` once into a
//! template, one copy per server, run as the `postgres` user (PostgreSQL refuses root), on
//! loopback ports picked here. Every session is logged with its user name, which is the
//! attempt's id, so the servers' own records say who reached them and how.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::pki::Ca;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Certificate from CA-A for `localhost` and 127.0.0.1.
    Trusted,
    /// Certificate from CA-A for another host name only.
    WrongName,
    /// Certificate from CA-B for `localhost` and 127.0.0.1.
    Impostor,
    /// No TLS at all.
    Plaintext,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Trusted,
        Kind::WrongName,
        Kind::Impostor,
        Kind::Plaintext,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Trusted => "trusted",
            Kind::WrongName => "wrong name",
            Kind::Impostor => "impostor",
            Kind::Plaintext => "plaintext",
        }
    }
}

/// How a session reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Tls,
    Plain,
}

/// Each line of a server's log that names a session starts with this and the user name.
const LOG_PREFIX: &str = "LAB|";

#[derive(Debug)]
struct Server {
    kind: Kind,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

/// The running servers; stopped and removed on drop.
#[derive(Debug)]
pub struct Servers {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    servers: Vec<Server>,
    /// CA-A's certificate (what a correctly configured client trusts).
    pub ca: PathBuf,
    /// CA-B's certificate.
    pub other_ca: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The newest server binaries under /usr/lib/postgresql (or `VERIFYFULL_LAB_PGBIN`).
fn server_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("VERIFYFULL_LAB_PGBIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| {
            format!(
                "{}: {e} (is Debian's postgresql installed? .ci/drivers installs it)",
                root.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no PostgreSQL server under {}", root.display()))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Servers {
    pub fn start() -> Result<Servers, String> {
        let bin = server_bin()?;
        // PostgreSQL refuses to run as root: as root, the servers run as `postgres`.
        let as_postgres = run(Command::new("id").arg("-u"), "id -u")? == "0";
        let dir = PathBuf::from(run(
            Command::new("mktemp").args(["-d", "-t", "verifyfull-lab.XXXXXX"]),
            "mktemp",
        )?);
        let mut servers = Servers {
            ca: dir.join("ca-a.crt"),
            other_ca: dir.join("ca-b.crt"),
            dir,
            bin,
            as_postgres,
            servers: Vec::new(),
        };
        servers.chown(&servers.dir.clone())?;
        let template = servers.dir.join("template");
        servers.as_server(
            Command::new(servers.bin.join("initdb"))
                .arg("-D")
                .arg(&template)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]),
            "initdb",
        )?;
        let ca_a = Ca::new("verifyfull lab CA-A").map_err(|e| e.to_string())?;
        let ca_b = Ca::new("verifyfull lab CA-B").map_err(|e| e.to_string())?;
        write(&servers.ca, ca_a.pem())?;
        write(&servers.other_ca, ca_b.pem())?;
        for kind in Kind::ALL {
            let pair = match kind {
                Kind::Trusted | Kind::Plaintext => ca_a.issue(&["localhost", "127.0.0.1"]),
                Kind::WrongName => ca_a.issue(&["db.elsewhere.example"]),
                Kind::Impostor => ca_b.issue(&["localhost", "127.0.0.1"]),
            }
            .map_err(|e| e.to_string())?;
            let slug = kind.name().replace(' ', "-");
            let data = servers.dir.join(&slug);
            run(
                Command::new("cp").arg("-a").arg(&template).arg(&data),
                "copy the template cluster",
            )?;
            let port = free_port()?;
            write(&data.join("server.crt"), &pair.cert)?;
            write(&data.join("server.key"), &pair.key)?;
            std::fs::set_permissions(
                data.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .map_err(|e| format!("server.key: {e}"))?;
            // TLS sessions pass `pg_hba.conf` and fail at the (unknown) role; plaintext
            // sessions are rejected by it with "no encryption": both are logged.
            write(
                &data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all all trust\nhostnossl all all all reject\n",
            )?;
            let ssl = if kind == Kind::Plaintext { "off" } else { "on" };
            let conf = format!(
                "port = {port}\nlisten_addresses = 'localhost'\nunix_socket_directories = '{}'\n\
                 ssl = {ssl}\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 log_connections = on\nlog_line_prefix = '{LOG_PREFIX}%u|'\nlogging_collector = off\n\
                 fsync = off\nmax_connections = 50\nshared_buffers = 16MB\n",
                data.display()
            );
            append(&data.join("postgresql.conf"), &conf)?;
            servers.chown(&data)?;
            let log = servers.dir.join(format!("{slug}.log"));
            servers.servers.push(Server {
                kind,
                port,
                data: data.clone(),
                log: log.clone(),
            });
            servers
                .as_server(
                    Command::new(servers.bin.join("pg_ctl"))
                        .arg("-D")
                        .arg(&data)
                        .arg("-l")
                        .arg(&log)
                        .args(["-w", "-t", "60", "start"]),
                    &format!("starting the {} server", kind.name()),
                )
                .map_err(|e| format!("{e}\nits log:\n{}", last_lines(&log, 20)))?;
        }
        Ok(servers)
    }

    pub fn port(&self, kind: Kind) -> u16 {
        self.servers
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.port)
            .unwrap_or(0)
    }

    pub fn version(&self) -> Result<String, String> {
        run(
            Command::new(self.bin.join("postgres")).arg("--version"),
            "postgres --version",
        )
    }

    /// Who reached each server, and how: user name → channels.
    pub fn sessions(&self) -> Result<BTreeMap<Kind, BTreeMap<String, BTreeSet<Channel>>>, String> {
        let mut all = BTreeMap::new();
        for s in &self.servers {
            let text =
                std::fs::read_to_string(&s.log).map_err(|e| format!("{}: {e}", s.log.display()))?;
            all.insert(s.kind, parse_log(&text));
        }
        Ok(all)
    }

    fn as_server(&self, cmd: &mut Command, what: &str) -> Result<String, String> {
        if self.as_postgres {
            let program = cmd.get_program().to_owned();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
            run(
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(program)
                    .args(args),
                what,
            )
        } else {
            run(cmd, what)
        }
    }

    fn chown(&self, path: &Path) -> Result<(), String> {
        if self.as_postgres {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(path),
                "chown",
            )?;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &self.servers {
            let _ = self.as_server(
                Command::new(self.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&s.data)
                    .args(["-m", "immediate", "-w", "stop"]),
                "stop",
            );
        }
        if std::env::var_os("VERIFYFULL_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sessions in a server log. A TLS session passes `pg_hba.conf` and is refused for its
/// unknown role; a plaintext one is refused by `pg_hba.conf` ("no encryption").
pub fn parse_log(text: &str) -> BTreeMap<String, BTreeSet<Channel>> {
    let mut sessions: BTreeMap<String, BTreeSet<Channel>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(LOG_PREFIX) else {
            continue;
        };
        let Some((user, message)) = rest.split_once('|') else {
            continue;
        };
        if user.is_empty() {
            continue;
        }
        let channel = if message.contains("no encryption") {
            Channel::Plain
        } else if message.contains("does not exist") {
            Channel::Tls
        } else {
            continue;
        };
        sessions
            .entry(user.to_string())
            .or_default()
            .insert(channel);
    }
    sessions
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}
