//! The decision: which containers are PostgreSQL clients, and what TLS their targets get
//! (SPEC sections 2–5).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::env::{Env, Get, Origin, PodInfo, ValueSource, Var, Visibility};
use crate::exemptions;
use crate::hosts::{self, Loopback, Slot, has_hidden};
use crate::jdbc::{self, JdbcUrl};
use crate::libpq::{self, Conninfo, KeyValueRecognition, Place};
use crate::verdict::*;
use crate::workload::WorkloadKind;

/// What the engine needs besides the Pod: policy, value sources and the clock.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub settings: &'a Settings,
    pub sources: &'a dyn ValueSource,
    /// Exemption expiry is judged against this instant; the engine never reads a clock.
    pub now: jiff::Timestamp,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", self.settings)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A Pod spec and the metadata around it, as found in any Pod-carrying kind.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    pub kind: WorkloadKind,
    /// The object's own metadata.
    pub object: &'a ObjectMeta,
    /// The Pod's metadata: the object's for a Pod, the template's otherwise.
    pub pod: &'a ObjectMeta,
    pub spec: &'a PodSpec,
}

/// One container of any of the three lists.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'a> {
    pub name: &'a str,
    pub list: ContainerList,
    pub env: &'a [EnvVar],
    pub env_from: &'a [EnvFromSource],
}

/// Every container of a Pod spec: init containers (native sidecars included), containers,
/// ephemeral containers.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef<'_>> {
    let init = spec.init_containers.iter().flatten().map(|c| ContainerRef {
        name: &c.name,
        list: ContainerList::Init,
        env: c.env.as_deref().unwrap_or_default(),
        env_from: c.env_from.as_deref().unwrap_or_default(),
    });
    let main = spec.containers.iter().map(|c| ContainerRef {
        name: &c.name,
        list: ContainerList::Main,
        env: c.env.as_deref().unwrap_or_default(),
        env_from: c.env_from.as_deref().unwrap_or_default(),
    });
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| ContainerRef {
            name: &c.name,
            list: ContainerList::Ephemeral,
            env: c.env.as_deref().unwrap_or_default(),
            env_from: c.env_from.as_deref().unwrap_or_default(),
        });
    init.chain(main).chain(ephemeral)
}

/// Judges a Pod spec.
pub fn evaluate<'a>(view: PodView<'a>, ctx: &Context<'a>) -> Report<'a> {
    let spec = view.spec;
    let pod = PodInfo {
        namespace: view.object.namespace.as_deref(),
        name: match view.kind {
            WorkloadKind::Pod => view.pod.name.as_deref(),
            _ => None,
        },
        labels: view.pod.labels.as_ref(),
        annotations: view.pod.annotations.as_ref(),
        service_account: spec
            .service_account_name
            .as_deref()
            .or(spec.service_account.as_deref()),
        service_links: spec.enable_service_links != Some(false),
    };
    let host_network = spec.host_network == Some(true);
    let mut report = Report::default();
    exemptions::apply(view, ctx, &mut report);
    for c in containers(spec) {
        let mut r = evaluate_container(c, &pod, host_network, ctx);
        r.exempt = report.exemption.as_ref().is_some_and(|e| e.covers(c.name));
        report.containers.push(r);
    }
    report
}

/// Judges one container.
pub fn evaluate_container<'a>(
    c: ContainerRef<'a>,
    pod: &PodInfo<'a>,
    host_network: bool,
    ctx: &Context<'a>,
) -> ContainerReport<'a> {
    let env = Env::build(c.env_from, c.env, pod, ctx.sources);
    let mut judge = Judge {
        env: &env,
        settings: ctx.settings,
        loopback_allowed: ctx.settings.loopback == LoopbackPolicy::Allow && !host_network,
        client: false,
        system_root: false,
        findings: Vec::new(),
        notes: Vec::new(),
    };
    for var in &env.vars {
        judge.variable(var);
    }
    judge.environment();
    if judge.client {
        for var in env.vars.iter().filter(|v| v.redefined) {
            if is_libpq_var(&var.name) || looks_like_connection_string(&var.value) {
                judge.notes.push(Note::Redefined {
                    variable: var.name.clone(),
                });
            }
        }
    }
    if judge.system_root {
        for name in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
            if !matches!(env.get(name), Get::Unset) {
                judge.notes.push(Note::SslCertEnv { variable: name });
            }
        }
    }
    ContainerReport {
        name: c.name,
        list: c.list,
        client: judge.client,
        exempt: false,
        findings: judge.findings,
        notes: judge.notes,
    }
}

fn is_libpq_var(name: &str) -> bool {
    name.starts_with("PG")
}

fn looks_like_connection_string(value: &str) -> bool {
    libpq::uri_prefix_length(value) > 0
        || value.starts_with("postgresql+")
        || value.starts_with("jdbc:")
}

/// A connection string recognised in a variable's value.
enum Recognised<'v> {
    Libpq {
        info: Result<Conninfo<'v>, libpq::ParseError>,
        uri: bool,
        /// A driver-qualified scheme whose driver is not libpq.
        driver: Option<&'v str>,
    },
    Jdbc(Result<JdbcUrl<'v>, jdbc::JdbcError>),
}

/// SQLAlchemy dialect drivers that hand the URL to libpq.
const LIBPQ_DRIVERS: &[&str] = &["psycopg2", "psycopg", "psycopg2cffi", "pygresql"];

fn recognise(value: &str) -> Option<Recognised<'_>> {
    let prefix = libpq::uri_prefix_length(value);
    if prefix > 0 {
        return Some(Recognised::Libpq {
            info: libpq::parse_uri_after_prefix(value, prefix),
            uri: true,
            driver: None,
        });
    }
    for scheme in ["postgresql+", "postgres+"] {
        if let Some(rest) = value.strip_prefix(scheme) {
            let end = rest.find("://")?;
            let driver = &rest[..end];
            if driver.is_empty()
                || !driver
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                return None;
            }
            return Some(Recognised::Libpq {
                info: libpq::parse_uri_after_prefix(value, scheme.len() + end + 3),
                uri: true,
                driver: (!LIBPQ_DRIVERS.contains(&driver)).then_some(driver),
            });
        }
    }
    if jdbc::recognise(value).is_some() {
        return Some(Recognised::Jdbc(jdbc::parse(value)));
    }
    match libpq::recognise_keyword_value(value) {
        KeyValueRecognition::Yes(info) => Some(Recognised::Libpq {
            info: Ok(info),
            uri: false,
            driver: None,
        }),
        KeyValueRecognition::Invalid(e) => Some(Recognised::Libpq {
            info: Err(e),
            uri: false,
            driver: None,
        }),
        KeyValueRecognition::No => None,
    }
}

/// The effective sslmode of one candidate.
#[derive(Debug, Clone)]
enum Mode<'a> {
    Known(SslMode, By<'a>),
    Invalid {
        by: By<'a>,
        empty: bool,
        close: Option<SslMode>,
    },
    Default,
    Hidden(Hidden<'a>),
    Unverifiable(Unverifiable<'a>),
}

/// The effective root certificate of one candidate.
#[derive(Debug, Clone)]
enum Root<'a> {
    Path,
    System(By<'a>),
    None,
    Hidden(Hidden<'a>),
    Unverifiable(Unverifiable<'a>),
}

/// Where one candidate connects.
#[derive(Debug, Clone)]
enum Net<'a> {
    Socket,
    Loopback,
    Remote,
    /// Hidden (`Ok`) or unverifiable (`Err`): even whether it is a network target.
    Unknown(Result<Hidden<'a>, Unverifiable<'a>>),
    Invalid(hosts::SlotMismatch),
}

/// One candidate's outcome.
#[derive(Debug, Clone)]
enum Outcome<'a> {
    NotNetwork,
    Pass {
        loopback_behind: Option<Code>,
        system: bool,
    },
    Finding {
        code: Code,
        cause: Cause<'a>,
        behind: Option<Code>,
    },
}

struct Judge<'e, 'a> {
    env: &'e Env<'a>,
    settings: &'e Settings,
    loopback_allowed: bool,
    client: bool,
    system_root: bool,
    findings: Vec<Finding<'a>>,
    notes: Vec<Note<'a>>,
}

/// Text that names what a variable holds, for findings about it.
struct Subject<'a> {
    variable: Cow<'a, str>,
    origin: Origin<'a>,
    target: Target<'a>,
}

impl<'e, 'a> Judge<'e, 'a> {
    fn variable(&mut self, var: &'e Var<'a>) {
        if var.is_hidden() {
            if matches!(var.visibility, Visibility::Unresolved { .. })
                && self.settings.is_connection_variable(&var.name)
            {
                self.client = true;
                let subject = self.subject(var, Target::HiddenVariable);
                let hidden = hidden_var(var);
                self.push(
                    &subject,
                    Code::Unresolved,
                    Cause::Hidden {
                        setting: Setting::Target,
                        hidden,
                    },
                    None,
                );
            }
            return;
        }
        let Some(found) = recognise(&var.value) else {
            return;
        };
        match found {
            Recognised::Libpq { info, uri, driver } => {
                let target = match (driver, uri) {
                    (Some(driver), _) => Target::DriverUri {
                        driver: Cow::Owned(driver.to_owned()),
                    },
                    (None, true) => Target::Uri,
                    (None, false) => Target::KeyValue,
                };
                let subject = self.subject(var, target);
                match info {
                    Ok(info) => self.libpq(&subject, Some(&info), uri, driver, var),
                    Err(e) => self.invalid(&subject, Syntax::Libpq(e)),
                }
            }
            Recognised::Jdbc(url) => {
                let subject = self.subject(var, Target::Jdbc);
                match url {
                    Ok(url) => self.jdbc(&subject, &url, var),
                    Err(e) => self.invalid(&subject, Syntax::Jdbc(e)),
                }
            }
        }
    }

    /// The libpq environment alone is a target when `PGHOST`, `PGHOSTADDR` or `PGSERVICE` is set.
    fn environment(&mut self) {
        let set = ["PGHOST", "PGHOSTADDR", "PGSERVICE"]
            .into_iter()
            .find_map(|name| match self.env.get(name) {
                Get::Set(v) => Some(v),
                _ => None,
            });
        if let Some(var) = set {
            let subject = self.subject(var, Target::Environment);
            self.libpq(&subject, None, false, None, var);
        }
    }

    fn subject(&self, var: &Var<'a>, target: Target<'a>) -> Subject<'a> {
        Subject {
            variable: var.name.clone(),
            origin: var.origin,
            target,
        }
    }

    fn push(&mut self, s: &Subject<'a>, code: Code, cause: Cause<'a>, behind: Option<Code>) {
        self.findings.push(Finding {
            code,
            severity: self.settings.severity(code),
            variable: Some(s.variable.clone()),
            origin: Some(s.origin),
            target: Some(s.target.clone()),
            cause,
            behind,
        });
    }

    fn invalid(&mut self, s: &Subject<'a>, syntax: Syntax) {
        self.client = true;
        self.push(
            s,
            Code::ConnectionStringInvalid,
            Cause::Syntax(syntax),
            None,
        );
    }

    /// A libpq string (`info`), or the libpq environment alone (`None`).
    fn libpq(
        &mut self,
        s: &Subject<'a>,
        info: Option<&Conninfo<'_>>,
        uri: bool,
        driver: Option<&str>,
        var: &Var<'a>,
    ) {
        let empty = Conninfo::default();
        let info = info.unwrap_or(&empty);

        if let Some(driver) = driver
            && let Some(p) = info.params.iter().find(|p| is_driver_tls_param(&p.key))
        {
            self.client = true;
            let cause = Unverifiable::DriverParameter {
                driver: Cow::Owned(driver.to_owned()),
                key: Cow::Owned(p.key.clone().into_owned()),
            };
            self.push(s, Code::Unverifiable, Cause::Unverifiable(cause), None);
            return;
        }
        let unknown = info.unknown_keywords().count();
        if unknown > 0 && driver.is_none() && uri {
            self.notes.push(Note::UnknownKeywords {
                variable: s.variable.clone(),
                count: unknown,
            });
        }

        // The service in force: the string's, else PGSERVICE.
        let service: Result<Option<By<'a>>, Hidden<'a>> = match info.last("service") {
            Some(v) if has_hidden(v) => Err(hidden_var(var)),
            Some("") => Ok(None),
            Some(_) => Ok(Some(By::Param { key: "service" })),
            None => match self.env_lookup("PGSERVICE") {
                EnvValue::Set(v) if v.value.is_empty() => {
                    self.notes.push(Note::EmptyService {
                        variable: Cow::Borrowed("PGSERVICE"),
                    });
                    Ok(None)
                }
                EnvValue::Set(v) => Ok(Some(By::Env {
                    var: "PGSERVICE",
                    origin: v.origin,
                })),
                // An unresolved envFrom source could define PGSERVICE too, but SPEC section 3
                // has a visible PGSSLMODE decide over what such a source may hold.
                EnvValue::Hidden(Hidden::Open { .. }) | EnvValue::Unset => Ok(None),
                EnvValue::Hidden(h) => Err(h),
            },
        };
        let from_service = |setting_by: &Result<Option<By<'a>>, Hidden<'a>>| match setting_by {
            Ok(Some(by)) => Some(Err(Unverifiable::ServiceFile { by: by.clone() })),
            Err(h) => Some(Ok(h.clone())),
            Ok(None) => None,
        };

        // GSSAPI encryption instead of TLS.
        let gss = match info.last("gssencmode") {
            Some("require") => Some(By::Param { key: "gssencmode" }),
            Some(_) => None,
            None => match self.env_lookup("PGGSSENCMODE") {
                EnvValue::Set(v) if v.value == "require" => Some(By::Env {
                    var: "PGGSSENCMODE",
                    origin: v.origin,
                }),
                _ => None,
            },
        };

        // sslmode candidates: the last store of sslmode/requiressl/ssl=true, or each
        // distinct one when they disagree.
        let mut mode_stores: Vec<(&str, &'static str)> = Vec::new();
        for p in &info.params {
            let store = match p.key.as_ref() {
                "sslmode" => (p.value.as_ref(), "sslmode"),
                "requiressl" if p.value.starts_with('1') => ("require", "requiressl"),
                "requiressl" => ("prefer", "requiressl"),
                "ssl" if uri && p.value == "true" => ("require", "ssl"),
                _ => continue,
            };
            mode_stores.push(store);
        }
        let modes: Vec<Mode<'a>> = if !mode_stores.is_empty() {
            let distinct = distinct_last(&mode_stores, |(v, _)| *v);
            if distinct.len() > 1 {
                self.conflict(s, "sslmode");
            }
            distinct
                .into_iter()
                .map(|(v, key)| libpq_mode(v, By::Param { key }, var))
                .collect()
        } else if let Some(u) = from_service(&service) {
            vec![match u {
                Ok(h) => Mode::Hidden(h),
                Err(u) => Mode::Unverifiable(u),
            }]
        } else {
            vec![self.env_mode()]
        };

        let root_stores: Vec<&str> = info.values("sslrootcert").collect();
        let roots: Vec<Root<'a>> = if !root_stores.is_empty() {
            let distinct = distinct_last(&root_stores, |v| *v);
            if distinct.len() > 1 {
                self.conflict(s, "sslrootcert");
            }
            distinct
                .into_iter()
                .map(|v| root_of(v, By::Param { key: "sslrootcert" }, var))
                .collect()
        } else if let Some(u) = from_service(&service) {
            vec![match u {
                Ok(h) => Root::Hidden(h),
                Err(u) => Root::Unverifiable(u),
            }]
        } else {
            vec![self.env_root()]
        };

        let nets = self.libpq_nets(s, info, &service, var);

        if let Some(by) = gss {
            let all_sockets = nets.iter().all(|n| matches!(n, Net::Socket));
            if !all_sockets {
                self.client = true;
                self.push(
                    s,
                    Code::Unverifiable,
                    Cause::Unverifiable(Unverifiable::Gss { by }),
                    None,
                );
            }
            return;
        }
        self.decide(s, &modes, &roots, &nets, false);
    }

    /// Network candidates of a libpq target: the string's host/hostaddr, else the
    /// service file's (unknown), else `PGHOST`/`PGHOSTADDR`.
    fn libpq_nets(
        &mut self,
        s: &Subject<'a>,
        info: &Conninfo<'_>,
        service: &Result<Option<By<'a>>, Hidden<'a>>,
        var: &Var<'a>,
    ) -> Vec<Net<'a>> {
        let string_values = |key: &str| -> Vec<&str> {
            let explicit: Vec<&str> = info
                .params
                .iter()
                .filter(|p| p.key == key && p.place != Place::Authority)
                .map(|p| p.value.as_ref())
                .collect();
            if explicit.is_empty() {
                info.params
                    .iter()
                    .filter(|p| p.key == key)
                    .map(|p| p.value.as_ref())
                    .collect()
            } else {
                explicit
            }
        };
        let hosts_in_string = string_values("host");
        let addrs_in_string = string_values("hostaddr");
        if hosts_in_string.is_empty() && addrs_in_string.is_empty() {
            match service {
                Ok(Some(by)) => {
                    return vec![Net::Unknown(Err(Unverifiable::ServiceFile {
                        by: by.clone(),
                    }))];
                }
                Err(h) => return vec![Net::Unknown(Ok(h.clone()))],
                Ok(None) => {}
            }
        }
        let mut host_values: Vec<(Option<Cow<'a, str>>, Option<Hidden<'a>>)> = Vec::new();
        if hosts_in_string.is_empty() {
            host_values.push(self.env_text("PGHOST"));
        } else {
            let distinct = distinct_last(&hosts_in_string, |v| *v);
            if distinct.len() > 1 {
                self.conflict(s, "host");
            }
            for v in distinct {
                host_values.push((Some(Cow::Owned(v.to_owned())), Some(hidden_var(var))));
            }
        }
        let mut addr_values: Vec<(Option<Cow<'a, str>>, Option<Hidden<'a>>)> = Vec::new();
        if addrs_in_string.is_empty() {
            // With a visible host, an unresolved envFrom source that might hold PGHOSTADDR
            // does not decide (SPEC section 3: the visible setting is reported).
            let host_visible = host_values
                .iter()
                .any(|(h, _)| h.as_deref().is_some_and(|h| !has_hidden(h)));
            let addr = self.env_text("PGHOSTADDR");
            let open_addr = matches!(self.env.get("PGHOSTADDR"), Get::MaybeSet(_));
            addr_values.push(if host_visible && open_addr {
                (None, None)
            } else {
                addr
            });
        } else {
            let distinct = distinct_last(&addrs_in_string, |v| *v);
            if distinct.len() > 1 {
                self.conflict(s, "hostaddr");
            }
            for v in distinct {
                addr_values.push((Some(Cow::Owned(v.to_owned())), Some(hidden_var(var))));
            }
        }
        let mut nets = Vec::with_capacity(host_values.len() * addr_values.len());
        for (h, h_hidden) in &host_values {
            for (a, a_hidden) in &addr_values {
                let net = match hosts::slots(h.as_deref(), a.as_deref()) {
                    Err(e) => Net::Invalid(e),
                    Ok(slots) => reduce_slots(&slots, || {
                        let from_addr = a.as_deref().is_some_and(has_hidden);
                        let hidden = if from_addr { a_hidden } else { h_hidden };
                        hidden
                            .clone()
                            .or_else(|| a_hidden.clone())
                            .unwrap_or_else(|| hidden_var(var))
                    }),
                };
                nets.push(net);
            }
        }
        nets
    }

    fn jdbc(&mut self, s: &Subject<'a>, url: &JdbcUrl<'_>, var: &Var<'a>) {
        self.client = true;
        let factory = url.last("sslfactory");
        let non_validating = matches!(
            factory,
            Some(
                "org.postgresql.ssl.NonValidatingFactory"
                    | "org.postgresql.ssl.jdbc4.NonValidatingFactory"
            )
        );
        if non_validating {
            self.push(
                s,
                Code::VerificationDisabled,
                Cause::NonValidatingFactory,
                None,
            );
            return;
        }
        let unverifiable = if url.last("sslhostnameverifier").is_some() {
            Some(Unverifiable::JdbcHostnameVerifier)
        } else {
            match factory {
                None
                | Some("org.postgresql.ssl.LibPQFactory")
                | Some("org.postgresql.ssl.jdbc4.LibPQFactory")
                | Some("org.postgresql.ssl.DefaultJavaSSLFactory") => None,
                Some(_) => Some(Unverifiable::JdbcFactory),
            }
        };
        let mode_stores: Vec<&str> = url.values("sslmode").collect();
        let modes: Vec<Mode<'a>> = if !mode_stores.is_empty() {
            let distinct = distinct_last(&mode_stores, |v| *v);
            if distinct.len() > 1 {
                self.conflict(s, "sslmode");
            }
            distinct
                .into_iter()
                .map(|v| {
                    if has_hidden(v) {
                        return Mode::Hidden(hidden_var(var));
                    }
                    let by = By::Param { key: "sslmode" };
                    match SslMode::parse_ignore_case(v) {
                        Some(m) => Mode::Known(m, by),
                        None => Mode::Invalid {
                            by,
                            empty: v.is_empty(),
                            close: None,
                        },
                    }
                })
                .collect()
        } else {
            match url.last("ssl") {
                None => vec![Mode::Default],
                Some(v) if has_hidden(v) => vec![Mode::Hidden(hidden_var(var))],
                Some(v) if v.is_empty() || v.eq_ignore_ascii_case("true") => {
                    vec![Mode::Known(SslMode::VerifyFull, By::Param { key: "ssl" })]
                }
                Some(_) => vec![Mode::Known(SslMode::Prefer, By::Param { key: "ssl" })],
            }
        };
        let roots: Vec<Root<'a>> = if factory == Some("org.postgresql.ssl.DefaultJavaSSLFactory") {
            self.notes.push(Note::JvmTrustStore {
                variable: s.variable.clone(),
            });
            vec![Root::System(By::Param { key: "sslfactory" })]
        } else {
            match url.last("sslrootcert") {
                None => vec![Root::None],
                Some(v) => vec![root_of(v, By::Param { key: "sslrootcert" }, var)],
            }
        };
        let mut net = Net::Socket;
        for h in &url.hosts {
            let n = match hosts::loopback(h) {
                Loopback::Yes => Net::Loopback,
                Loopback::No => Net::Remote,
                Loopback::Unknown => Net::Unknown(Ok(hidden_var(var))),
            };
            net = weaker_net(net, n);
        }
        if let Some(u) = unverifiable
            && !(matches!(net, Net::Loopback) && self.loopback_allowed)
        {
            self.push(s, Code::Unverifiable, Cause::Unverifiable(u), None);
            return;
        }
        self.decide(s, &modes, &roots, &[net], true);
    }

    fn conflict(&mut self, s: &Subject<'a>, key: &'static str) {
        self.notes.push(Note::Conflicting {
            variable: s.variable.clone(),
            key,
        });
    }

    /// Evaluates every candidate combination and reports the weakest.
    fn decide(
        &mut self,
        s: &Subject<'a>,
        modes: &[Mode<'a>],
        roots: &[Root<'a>],
        nets: &[Net<'a>],
        jdbc: bool,
    ) {
        let mut worst: Option<Outcome<'a>> = None;
        for net in nets {
            for mode in modes {
                for root in roots {
                    let o = judge(mode, root, net, self.loopback_allowed, jdbc);
                    if worst.as_ref().is_none_or(|w| self.rank(&o) > self.rank(w)) {
                        worst = Some(o);
                    }
                }
            }
        }
        match worst {
            None | Some(Outcome::NotNetwork) => {}
            Some(Outcome::Pass {
                loopback_behind,
                system,
            }) => {
                self.client = true;
                if let Some(behind) = loopback_behind {
                    self.notes.push(Note::LoopbackAllowed {
                        variable: s.variable.clone(),
                        behind,
                    });
                }
                if system {
                    self.system_root = true;
                    if !jdbc {
                        self.notes.push(Note::SystemTrustStore {
                            variable: s.variable.clone(),
                        });
                    }
                }
            }
            Some(Outcome::Finding {
                code,
                cause,
                behind,
            }) => {
                self.client = true;
                self.push(s, code, cause, behind);
            }
        }
    }

    fn rank(&self, o: &Outcome<'_>) -> u8 {
        match o {
            Outcome::NotNetwork => 0,
            Outcome::Pass { .. } => 1,
            Outcome::Finding { code, .. } => 2 + self.settings.severity(*code) as u8,
        }
    }

    fn env_lookup(&self, name: &'static str) -> EnvValue<'e, 'a> {
        match self.env.get(name) {
            Get::Unset => EnvValue::Unset,
            Get::MaybeSet(o) => EnvValue::Hidden(Hidden::Open {
                var: name,
                kind: o.kind,
                name: o.name,
                not_found: o.not_found,
            }),
            Get::Set(v) if v.visibility != Visibility::Visible || has_hidden(&v.value) => {
                EnvValue::Hidden(hidden_var(v))
            }
            Get::Set(v) => EnvValue::Set(v),
        }
    }

    /// `PGHOST`/`PGHOSTADDR` as text for slot classification (hidden spans kept).
    fn env_text(&self, name: &'static str) -> (Option<Cow<'a, str>>, Option<Hidden<'a>>) {
        match self.env.get(name) {
            Get::Unset => (None, None),
            Get::MaybeSet(o) => (
                Some(Cow::Borrowed("\u{E000}")),
                Some(Hidden::Open {
                    var: name,
                    kind: o.kind,
                    name: o.name,
                    not_found: o.not_found,
                }),
            ),
            Get::Set(v) => {
                let hidden = hidden_var(v);
                let text = if v.visibility == Visibility::Visible {
                    v.value.clone()
                } else {
                    Cow::Borrowed("\u{E000}")
                };
                (Some(text), Some(hidden))
            }
        }
    }

    /// sslmode from the environment: `PGSSLMODE`, else `PGREQUIRESSL`, else the default.
    fn env_mode(&self) -> Mode<'a> {
        match self.env_lookup("PGSSLMODE") {
            EnvValue::Set(v) => libpq_mode(
                &v.value,
                By::Env {
                    var: "PGSSLMODE",
                    origin: v.origin,
                },
                v,
            ),
            EnvValue::Hidden(h) => Mode::Hidden(h),
            EnvValue::Unset => match self.env_lookup("PGREQUIRESSL") {
                EnvValue::Set(v) if v.value.starts_with('1') => Mode::Known(
                    SslMode::Require,
                    By::Env {
                        var: "PGREQUIRESSL",
                        origin: v.origin,
                    },
                ),
                // A hidden PGREQUIRESSL yields prefer or require: both weak, as is the default.
                _ => Mode::Default,
            },
        }
    }

    fn env_root(&self) -> Root<'a> {
        match self.env_lookup("PGSSLROOTCERT") {
            EnvValue::Set(v) => root_of(
                &v.value,
                By::Env {
                    var: "PGSSLROOTCERT",
                    origin: v.origin,
                },
                v,
            ),
            EnvValue::Hidden(h) => Root::Hidden(h),
            EnvValue::Unset => Root::None,
        }
    }
}

/// A libpq variable: visible text, or hidden.
enum EnvValue<'e, 'a> {
    Unset,
    Set(&'e Var<'a>),
    Hidden(Hidden<'a>),
}

fn hidden_var<'a>(v: &Var<'a>) -> Hidden<'a> {
    match v.visibility {
        Visibility::Unresolved { not_found } => Hidden::Var {
            var: v.name.clone(),
            origin: v.origin,
            not_found,
        },
        Visibility::Opaque => Hidden::Runtime {
            var: v.name.clone(),
        },
        // Visible text with a hidden span: a `$(VAR)` reference to an unreadable value.
        Visibility::Visible => Hidden::Var {
            var: v.name.clone(),
            origin: v.origin,
            not_found: false,
        },
    }
}

fn is_driver_tls_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    (k.starts_with("ssl") && k != "sslmode" && k != "sslrootcert") || k == "tls"
}

/// Distinct values in order of their last occurrence (the last store is last).
fn distinct_last<T: Copy, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(1);
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        if !items[i + 1..].iter().any(|later| key(later) == k) {
            out.push(*item);
        }
    }
    out
}

/// `v` is read from `var` (a parameter of its string, or its whole value).
fn libpq_mode<'a>(v: &str, by: By<'a>, var: &Var<'a>) -> Mode<'a> {
    if has_hidden(v) {
        return Mode::Hidden(hidden_var(var));
    }
    match SslMode::parse(v) {
        Some(m) => Mode::Known(m, by),
        None => Mode::Invalid {
            by,
            empty: v.is_empty(),
            close: SslMode::parse_ignore_case(v),
        },
    }
}

fn root_of<'a>(v: &str, by: By<'a>, var: &Var<'a>) -> Root<'a> {
    if has_hidden(v) {
        Root::Hidden(hidden_var(var))
    } else if v.is_empty() {
        Root::None
    } else if v == "system" {
        Root::System(by)
    } else {
        Root::Path
    }
}

/// Folds connection slots into one network state: any remote slot makes it remote.
fn reduce_slots<'a>(slots: &[Slot], hidden: impl Fn() -> Hidden<'a>) -> Net<'a> {
    let mut net = Net::Socket;
    for slot in slots {
        let n = match slot {
            Slot::Socket => Net::Socket,
            Slot::Tcp {
                loopback: Loopback::Yes,
            } => Net::Loopback,
            Slot::Tcp {
                loopback: Loopback::No,
            } => Net::Remote,
            Slot::Tcp {
                loopback: Loopback::Unknown,
            }
            | Slot::Unknown => Net::Unknown(Ok(hidden())),
        };
        net = weaker_net(net, n);
    }
    net
}

fn weaker_net<'a>(a: Net<'a>, b: Net<'a>) -> Net<'a> {
    let rank = |n: &Net<'_>| match n {
        Net::Socket => 0,
        Net::Loopback => 1,
        Net::Unknown(_) => 2,
        Net::Remote => 3,
        Net::Invalid(_) => 4,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// The outcome of one candidate combination.
fn judge<'a>(
    mode: &Mode<'a>,
    root: &Root<'a>,
    net: &Net<'a>,
    loopback_allowed: bool,
    jdbc: bool,
) -> Outcome<'a> {
    let finding = |code, cause| Outcome::Finding {
        code,
        cause,
        behind: None,
    };
    let raw = match (mode, root) {
        (Mode::Invalid { by, empty, close }, _) => finding(
            Code::SslModeInvalid,
            Cause::BadMode {
                by: by.clone(),
                empty: *empty,
                close: *close,
            },
        ),
        (Mode::Known(m, _), Root::System(by)) if *m != SslMode::VerifyFull => finding(
            Code::RootCertSystemNeedsVerifyFull,
            Cause::SystemRoot {
                by: by.clone(),
                mode: Some(*m),
            },
        ),
        (Mode::Known(m, by), root) if *m != SslMode::VerifyFull => finding(
            Code::SslModeTooWeak,
            Cause::WeakMode {
                mode: *m,
                by: by.clone(),
                root_configured: matches!(root, Root::Path | Root::System(_)),
                jdbc,
            },
        ),
        (Mode::Default, Root::System(by)) => finding(
            Code::RootCertSystemNeedsVerifyFull,
            Cause::SystemRoot {
                by: by.clone(),
                mode: None,
            },
        ),
        (Mode::Default, _) => finding(Code::SslModeUnset, Cause::NoMode),
        (Mode::Hidden(h), _) => finding(
            Code::Unresolved,
            Cause::Hidden {
                setting: Setting::SslMode,
                hidden: h.clone(),
            },
        ),
        (Mode::Unverifiable(u), _) => finding(Code::Unverifiable, Cause::Unverifiable(u.clone())),
        (Mode::Known(_, by), root) => match root {
            Root::Path => Outcome::Pass {
                loopback_behind: None,
                system: false,
            },
            Root::System(_) => Outcome::Pass {
                loopback_behind: None,
                system: true,
            },
            Root::None => finding(Code::RootCertMissing, Cause::NoRoot { by: by.clone() }),
            Root::Hidden(h) => finding(
                Code::Unresolved,
                Cause::Hidden {
                    setting: Setting::RootCert,
                    hidden: h.clone(),
                },
            ),
            Root::Unverifiable(u) => finding(Code::Unverifiable, Cause::Unverifiable(u.clone())),
        },
    };
    match (net, raw) {
        (Net::Socket, _) => Outcome::NotNetwork,
        (Net::Invalid(e), _) => finding(
            Code::ConnectionStringInvalid,
            Cause::Syntax(Syntax::Slots(*e)),
        ),
        (Net::Loopback, Outcome::Finding { code, .. }) if loopback_allowed => Outcome::Pass {
            loopback_behind: Some(code),
            system: false,
        },
        (Net::Unknown(why), Outcome::Finding { code, cause, .. }) => {
            if matches!(code, Code::Unresolved | Code::Unverifiable) {
                finding(code, cause)
            } else {
                match why {
                    Ok(h) => Outcome::Finding {
                        code: Code::Unresolved,
                        cause: Cause::Hidden {
                            setting: Setting::Host,
                            hidden: h.clone(),
                        },
                        behind: Some(code),
                    },
                    Err(u) => Outcome::Finding {
                        code: Code::Unverifiable,
                        cause: Cause::Unverifiable(u.clone()),
                        behind: Some(code),
                    },
                }
            }
        }
        (_, raw) => raw,
    }
}

#[cfg(test)]
mod tests;
