//! The decision: which containers are PostgreSQL clients, and what TLS their targets get
//! (SPEC sections 2–5).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar};

use smallvec::{SmallVec, smallvec};

use crate::command;
use crate::drivers;
use crate::env::{Budget, Env, Get, OpenSource, Origin, PodInfo, ValueSource, Var, Visibility};
use crate::exemptions;
use crate::fixes;
use crate::hosts::{self, HIDDEN_STR, Loopback, Slot, has_hidden};
use crate::jdbc::{self, JdbcUrl};
use crate::libpq::{self, Conninfo, KeyValueRecognition, Place};
use crate::verdict::*;
use crate::workload::{Container, Meta, PodSpec, WorkloadKind};

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
    pub object: &'a Meta,
    /// The Pod's metadata: the object's for a Pod, the template's otherwise.
    pub pod: &'a Meta,
    pub spec: &'a PodSpec,
}

/// One container of any of the three lists.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'a> {
    pub name: &'a str,
    pub list: ContainerList,
    pub env: &'a [EnvVar],
    pub env_from: &'a [EnvFromSource],
    pub command: &'a [String],
    pub args: &'a [String],
}

/// Every container of a Pod spec: init containers (native sidecars included), containers,
/// ephemeral containers.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef<'_>> {
    fn list(
        containers: Option<&Vec<Container>>,
        list: ContainerList,
    ) -> impl Iterator<Item = ContainerRef<'_>> {
        containers.into_iter().flatten().map(move |c| ContainerRef {
            name: &c.name,
            list,
            env: c.env.as_deref().unwrap_or_default(),
            env_from: c.env_from.as_deref().unwrap_or_default(),
            command: c.command.as_deref().unwrap_or_default(),
            args: c.args.as_deref().unwrap_or_default(),
        })
    }
    list(spec.init_containers.as_ref(), ContainerList::Init)
        .chain(list(Some(&spec.containers), ContainerList::Main))
        .chain(list(
            spec.ephemeral_containers.as_ref(),
            ContainerList::Ephemeral,
        ))
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
    let mut report = Report {
        containers: Vec::with_capacity(containers(spec).count()),
        ..Report::default()
    };
    exemptions::apply(view, ctx, &mut report);
    let mut budget = Budget::default();
    for c in containers(spec) {
        let mut r = evaluate_container(c, &pod, host_network, ctx, &mut budget);
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
    budget: &mut Budget,
) -> ContainerReport<'a> {
    let env = Env::build(c.env_from, c.env, pod, ctx.sources, budget);
    let arguments = command::arguments(c.command, c.args, &env, pod, budget);
    let mut judge = Judge {
        env: &env,
        settings: ctx.settings,
        loopback_allowed: ctx.settings.loopback == LoopbackPolicy::Allow && !host_network,
        client: false,
        system_root: false,
        libpq: LibpqTargets::default(),
        node_tls_off: match env.get("NODE_TLS_REJECT_UNAUTHORIZED") {
            Get::Set(v) if v.visibility == Visibility::Visible && v.value == "0" => Some(v.origin),
            _ => None,
        },
        findings: Vec::new(),
        notes: Vec::new(),
    };
    for var in env.vars.iter().chain(&arguments.values) {
        judge.variable(var);
    }
    for var in &arguments.tool_hosts {
        judge.tool_host(var);
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
    for variable in &env.over_limit {
        judge.notes.push(Note::ExpansionLimit {
            variable: variable.clone(),
        });
    }
    if judge.system_root {
        for name in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
            if !matches!(env.get(name), Get::Unset) {
                judge.notes.push(Note::SslCertEnv { variable: name });
            }
        }
    }
    let t = judge.libpq;
    ContainerReport {
        name: c.name,
        list: c.list,
        client: judge.client,
        fixable: t.count > 0 && !t.not_remote && !t.sets_mode,
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
    if let Some(scheme) = libpq::uri_scheme(value) {
        return Some(Recognised::Libpq {
            info: libpq::parse_uri_after_prefix(value, scheme.start),
            uri: true,
            driver: scheme.driver.filter(|d| !LIBPQ_DRIVERS.contains(d)),
        });
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

/// What the libpq targets of a container look like, for the operator's "fix" mode.
#[derive(Debug, Default, Clone, Copy)]
struct LibpqTargets {
    count: u32,
    /// Some target is not (known to be) non-loopback TCP.
    not_remote: bool,
    /// Some connection string sets its own sslmode.
    sets_mode: bool,
}

struct Judge<'e, 'a> {
    env: &'e Env<'a>,
    settings: &'e Settings,
    loopback_allowed: bool,
    client: bool,
    system_root: bool,
    libpq: LibpqTargets,
    /// `NODE_TLS_REJECT_UNAUTHORIZED=0`: where it was set.
    node_tls_off: Option<Origin<'a>>,
    findings: Vec<Finding<'a>>,
    notes: Vec<Note<'a>>,
}

/// Text that names what a variable holds, for findings about it.
#[derive(Clone)]
struct Subject<'a> {
    variable: Cow<'a, str>,
    origin: Origin<'a>,
    target: Target<'a>,
    /// What a fix may change.
    scope: fixes::Scope,
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
        for driver in drivers::DRIVERS {
            if let Some(target) = driver.recognise(&var.name, &var.value) {
                self.driver(*driver, var, &target);
                return;
            }
        }
        let Some(found) = recognise(&var.value) else {
            return;
        };
        match found {
            Recognised::Libpq { info, uri, driver } => {
                let target = match (driver, uri) {
                    (Some(driver), _) => Target::Driver {
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

    /// A target of a driver beyond libpq and pgjdbc, judged by that driver's rules.
    fn driver(&mut self, driver: &dyn drivers::Driver, var: &Var<'a>, target: &drivers::Parsed) {
        let name = driver.name();
        let s = self.subject(
            var,
            Target::Driver {
                driver: Cow::Borrowed(name),
            },
        );
        let mut net = Net::Socket;
        for h in &target.hosts {
            net = weaker_net(
                net,
                match hosts::loopback(h) {
                    Loopback::Yes => Net::Loopback,
                    Loopback::No => Net::Remote,
                    Loopback::Unknown => Net::Unknown(Ok(hidden_var(var))),
                },
            );
        }
        if matches!(net, Net::Socket) {
            return;
        }
        self.client = true;
        if has_hidden(&var.value) {
            let cause = Cause::Hidden {
                setting: Setting::Target,
                hidden: hidden_var(var),
            };
            self.push_fixed(&s, Code::Unresolved, cause, None, Vec::new());
            return;
        }
        let judged = driver.judge(&var.name, target, self);
        for text in judged.notes {
            self.notes.push(Note::Driver {
                variable: var.name.clone(),
                driver: name,
                text,
            });
        }
        let Err(found) = judged.outcome else {
            return;
        };
        if matches!(net, Net::Loopback) && self.loopback_allowed {
            self.notes.push(Note::LoopbackAllowed {
                variable: var.name.clone(),
                behind: found.code,
            });
            return;
        }
        let cause = Cause::Driver {
            driver: name,
            what: found.what,
        };
        self.push_fixed(&s, found.code, cause, None, found.fixes);
    }

    /// A libpq tool's `-h`/`-p` (as a `host=… port=…` string): what the tool connects to
    /// with the libpq environment, whose variables are what a fix can set.
    fn tool_host(&mut self, var: &Var<'a>) {
        if let KeyValueRecognition::Yes(info) = libpq::recognise_keyword_value(&var.value) {
            let subject = self.subject(var, Target::Environment);
            self.libpq(&subject, Some(&info), false, None, var);
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
            scope: fixes::Scope {
                form: if target == Target::Environment {
                    fixes::Form::Environment
                } else {
                    fixes::Form::Libpq
                },
                ..Default::default()
            },
            target,
        }
    }

    fn push(&mut self, s: &Subject<'a>, code: Code, cause: Cause<'a>, behind: Option<Code>) {
        let fixes = match &cause {
            Cause::NodeTlsOff { .. } => vec![Fix {
                driver: None,
                changes: vec![NODE_TLS_UNSET],
            }],
            Cause::NonValidatingFactory => vec![Fix {
                driver: None,
                changes: vec![
                    Change::Param {
                        key: "sslmode",
                        value: FixValue::Literal("verify-full"),
                        drop: &["sslfactory"],
                    },
                    Change::Param {
                        key: "sslrootcert",
                        value: FixValue::CaFile,
                        drop: &[],
                    },
                ],
            }],
            _ if behind.is_some() => Vec::new(),
            _ => fixes::libpq(code, &s.scope),
        };
        self.push_fixed(s, code, cause, behind, fixes);
    }

    /// Records a finding. While `NODE_TLS_REJECT_UNAUTHORIZED=0` is set, no fix of a
    /// target that node-postgres may read passes without removing it.
    fn push_fixed(
        &mut self,
        s: &Subject<'a>,
        code: Code,
        cause: Cause<'a>,
        behind: Option<Code>,
        mut fixes: Vec<Fix>,
    ) {
        if self.node_tls_off.is_some() && s.scope.form != fixes::Form::Jdbc {
            for fix in &mut fixes {
                if !fix.changes.contains(&NODE_TLS_UNSET) {
                    fix.changes.push(NODE_TLS_UNSET);
                }
            }
        }
        self.findings.push(Finding {
            code,
            severity: self.settings.severity(code),
            variable: Some(s.variable.clone()),
            origin: Some(s.origin),
            target: Some(s.target.clone()),
            cause,
            behind,
            fixes,
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
        let scan = info
            .map(|i| Scan::of(i, uri, driver.is_some()))
            .unwrap_or_default();
        if let (Some(driver), Some(key)) = (driver, scan.driver_tls) {
            self.client = true;
            let cause = Unverifiable::DriverParameter {
                driver: Cow::Owned(driver.to_owned()),
                key: Cow::Owned(key.to_owned()),
            };
            self.push(s, Code::Unverifiable, Cause::Unverifiable(cause), None);
            return;
        }
        if scan.unknown > 0 && driver.is_none() && uri {
            self.notes.push(Note::UnknownKeywords {
                variable: s.variable.clone(),
                count: scan.unknown,
            });
        }
        for (key, conflicting) in [
            ("sslmode", scan.modes.len() > 1),
            ("sslrootcert", scan.roots.len() > 1),
            ("host", scan.hosts.len() > 1),
            ("hostaddr", scan.addrs.len() > 1),
        ] {
            if conflicting {
                self.notes.push(Note::Conflicting {
                    variable: s.variable.clone(),
                    key,
                });
            }
        }

        // The service in force: the string's, else PGSERVICE.
        let service: Result<Option<By<'a>>, Hidden<'a>> = match scan.service {
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
        // What a setting the string leaves open is while a service applies: hidden (`Ok`)
        // or up to the service file (`Err`).
        let service_applies = !matches!(service, Ok(None));
        let from_service: Option<Result<Hidden<'a>, Unverifiable<'a>>> = match service {
            Ok(Some(by)) => Some(Err(Unverifiable::ServiceFile { by })),
            Err(h) => Some(Ok(h)),
            Ok(None) => None,
        };

        // GSSAPI encryption instead of TLS.
        let gss = match scan.gss {
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

        let modes: Candidates<Mode<'a>> = if !scan.modes.is_empty() {
            scan.modes
                .iter()
                .map(|&(v, key)| libpq_mode(v, By::Param { key }, var))
                .collect()
        } else {
            smallvec![match &from_service {
                Some(Ok(h)) => Mode::Hidden(h.clone()),
                Some(Err(u)) => Mode::Unverifiable(u.clone()),
                None => self.env_mode(),
            }]
        };
        let roots: Candidates<Root<'a>> = if !scan.roots.is_empty() {
            scan.roots
                .iter()
                .map(|v| root_of(v, By::Param { key: "sslrootcert" }, var))
                .collect()
        } else {
            smallvec![match &from_service {
                Some(Ok(h)) => Root::Hidden(h.clone()),
                Some(Err(u)) => Root::Unverifiable(u.clone()),
                None => self.env_root(),
            }]
        };
        let nets = match from_service {
            // Where the service file points is unknown.
            Some(why) if scan.hosts.is_empty() && scan.addrs.is_empty() => {
                smallvec![Net::Unknown(why)]
            }
            _ => self.libpq_nets(&scan, var),
        };

        let s = &Subject {
            scope: fixes::Scope {
                string_sets_mode: !scan.modes.is_empty(),
                mode_alias: scan.mode_alias,
                string_sets_root: !scan.roots.is_empty(),
                mode_verify_full: modes_verify_full(&modes),
                root_configured: roots_configured(&roots),
                service: service_applies,
                ..s.scope
            },
            ..s.clone()
        };
        if driver.is_none() {
            self.libpq.count += 1;
            self.libpq.not_remote |= !nets.iter().all(|n| matches!(n, Net::Remote));
            self.libpq.sets_mode |= !scan.modes.is_empty();
        }
        if let Some(by) = gss {
            if !nets.iter().all(|n| matches!(n, Net::Socket)) {
                self.client = true;
                let cause = Cause::Unverifiable(Unverifiable::Gss { by });
                self.push(s, Code::Unverifiable, cause, None);
            }
            return;
        }
        self.decide(s, &modes, &roots, &nets, false);
    }

    /// Network candidates of a libpq target: the string's host/hostaddr, else
    /// `PGHOST`/`PGHOSTADDR`.
    fn libpq_nets<'t>(&self, scan: &Scan<'t>, var: &'t Var<'a>) -> Candidates<Net<'a>>
    where
        'e: 't,
    {
        let in_string = |v: &&'t str| HostText {
            text: Some(*v),
            who: Who::Var(var),
        };
        let host_texts: Candidates<HostText<'t, 'a>> = if scan.hosts.is_empty() {
            smallvec![self.env_host("PGHOST")]
        } else {
            scan.hosts.iter().map(in_string).collect()
        };
        let addr_texts: Candidates<HostText<'t, 'a>> = if scan.addrs.is_empty() {
            // With a visible host, an unresolved envFrom source that might hold PGHOSTADDR
            // does not decide (SPEC section 3: the visible setting is reported).
            let host_visible = host_texts
                .iter()
                .any(|h| h.text.is_some_and(|t| !has_hidden(t)));
            match self.env_host("PGHOSTADDR") {
                HostText {
                    who: Who::Open(..), ..
                } if host_visible => smallvec![HostText::NONE],
                addr => smallvec![addr],
            }
        } else {
            scan.addrs.iter().map(in_string).collect()
        };
        let mut nets = Candidates::new();
        for h in &host_texts {
            for a in &addr_texts {
                nets.push(match hosts::slots(h.text, a.text) {
                    Err(e) => Net::Invalid(e),
                    Ok(slots) => reduce_slots(slots, || {
                        // The hidden span is in hostaddr if it has one, else in host.
                        if a.text.is_some_and(has_hidden) {
                            a.hidden()
                        } else {
                            h.hidden()
                        }
                    }),
                });
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
        // pgjdbc's own verifier, named explicitly, is no override.
        let verifier = url.last("sslhostnameverifier");
        let unverifiable =
            if verifier.is_some_and(|v| v != "org.postgresql.ssl.PGjdbcHostnameVerifier") {
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
        let mut mode_stores: Candidates<&str> = url.values("sslmode").collect();
        keep_last_distinct(&mut mode_stores, |v| *v);
        if mode_stores.len() > 1 {
            self.notes.push(Note::Conflicting {
                variable: s.variable.clone(),
                key: "sslmode",
            });
        }
        let modes: Candidates<Mode<'a>> = if !mode_stores.is_empty() {
            mode_stores
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
                None => smallvec![Mode::Default],
                Some(v) if has_hidden(v) => smallvec![Mode::Hidden(hidden_var(var))],
                Some(v) if v.is_empty() || v.eq_ignore_ascii_case("true") => {
                    smallvec![Mode::Known(SslMode::VerifyFull, By::Param { key: "ssl" })]
                }
                Some(_) => smallvec![Mode::Known(SslMode::Prefer, By::Param { key: "ssl" })],
            }
        };
        let roots: Candidates<Root<'a>> =
            if factory == Some("org.postgresql.ssl.DefaultJavaSSLFactory") {
                self.notes.push(Note::JvmTrustStore {
                    variable: s.variable.clone(),
                });
                smallvec![Root::System(By::Param { key: "sslfactory" })]
            } else {
                match url.last("sslrootcert") {
                    None => smallvec![Root::None],
                    Some(v) => smallvec![root_of(v, By::Param { key: "sslrootcert" }, var)],
                }
            };
        let s = &Subject {
            scope: fixes::Scope {
                form: fixes::Form::Jdbc,
                string_sets_mode: true,
                string_sets_root: true,
                mode_verify_full: modes_verify_full(&modes),
                root_configured: roots_configured(&roots),
                ..s.scope
            },
            ..s.clone()
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
                loopback_behind: None,
                ..
            }) if !jdbc && self.node_tls_off.is_some() => {
                self.client = true;
                if let Some(origin) = self.node_tls_off {
                    self.push(
                        s,
                        Code::VerificationDisabled,
                        Cause::NodeTlsOff { origin },
                        None,
                    );
                }
            }
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
            Get::MaybeSet(o) => EnvValue::Hidden(open_hidden(name, o)),
            Get::Set(v) if v.visibility != Visibility::Visible || has_hidden(&v.value) => {
                EnvValue::Hidden(hidden_var(v))
            }
            Get::Set(v) => EnvValue::Set(v),
        }
    }

    /// `PGHOST`/`PGHOSTADDR` as text for slot classification (hidden spans kept).
    fn env_host(&self, name: &'static str) -> HostText<'e, 'a> {
        match self.env.get(name) {
            Get::Unset => HostText::NONE,
            Get::MaybeSet(o) => HostText {
                text: Some(HIDDEN_STR),
                who: Who::Open(name, o),
            },
            Get::Set(v) => HostText {
                text: Some(if v.visibility == Visibility::Visible {
                    &v.value
                } else {
                    HIDDEN_STR
                }),
                who: Who::Var(v),
            },
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

/// A driver reads the container's other variables through the judge.
impl drivers::Environment for Judge<'_, '_> {
    fn get(&self, name: &str) -> Option<Option<&str>> {
        match self.env.get(name) {
            Get::Unset => None,
            Get::Set(v) if v.visibility == Visibility::Visible && !has_hidden(&v.value) => {
                Some(Some(&v.value))
            }
            Get::Set(_) | Get::MaybeSet(_) => Some(None),
        }
    }
}

/// The TLS-relevant stores of a libpq string, read in one pass.
#[derive(Debug, Default)]
struct Scan<'s> {
    /// Distinct sslmode values (from `sslmode`, `requiressl`, URI `ssl=true`) with the key.
    modes: Candidates<(&'s str, &'static str)>,
    roots: Candidates<&'s str>,
    /// Distinct hosts: repeated parameters, or else the URI authority's.
    hosts: Candidates<&'s str>,
    addrs: Candidates<&'s str>,
    service: Option<&'s str>,
    gss: Option<&'s str>,
    /// `requiressl` or `ssl` is present (a fix that sets sslmode removes them).
    mode_alias: bool,
    /// Keywords libpq does not know.
    unknown: usize,
    /// A non-libpq driver's own TLS parameter.
    driver_tls: Option<&'s str>,
}

impl<'s> Scan<'s> {
    fn of(info: &'s Conninfo<'_>, uri: bool, driver: bool) -> Scan<'s> {
        let mut scan = Scan::default();
        let mut authority_host = None;
        for p in &info.params {
            let (key, value) = (p.key.as_ref(), p.value.as_ref());
            scan.mode_alias |= key == "requiressl" || (uri && key == "ssl");
            match key {
                "sslmode" => scan.modes.push((value, "sslmode")),
                "requiressl" if value.starts_with('1') => {
                    scan.modes.push(("require", "requiressl"))
                }
                "requiressl" => scan.modes.push(("prefer", "requiressl")),
                "ssl" if uri && value == "true" && !driver => scan.modes.push(("require", "ssl")),
                "sslrootcert" => scan.roots.push(value),
                // A query `host=` replaces the authority's host: only repeats conflict.
                "host" if p.place == Place::Authority => authority_host = Some(value),
                "host" => scan.hosts.push(value),
                "hostaddr" => scan.addrs.push(value),
                "service" => scan.service = Some(value),
                "gssencmode" => scan.gss = Some(value),
                _ if driver && is_driver_tls_param(key) => scan.driver_tls = Some(key),
                _ if libpq::is_unknown_keyword(key) => scan.unknown += 1,
                _ => {}
            }
        }
        if scan.hosts.is_empty() {
            scan.hosts.extend(authority_host);
        }
        keep_last_distinct(&mut scan.modes, |(v, _)| *v);
        keep_last_distinct(&mut scan.roots, |v| *v);
        keep_last_distinct(&mut scan.hosts, |v| *v);
        keep_last_distinct(&mut scan.addrs, |v| *v);
        scan
    }
}

/// Keeps one of each value, in the order of their last occurrence (the last store last).
fn keep_last_distinct<T, K: PartialEq>(items: &mut Candidates<T>, key: impl Fn(&T) -> K) {
    let mut i = 0;
    while i < items.len() {
        let k = key(&items[i]);
        if items[i + 1..].iter().any(|later| key(later) == k) {
            items.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Candidate values of one setting: almost always one.
type Candidates<T> = SmallVec<[T; 2]>;

/// Whose text a host candidate is, to name it if hidden spans decide.
#[derive(Clone, Copy)]
enum Who<'t, 'a> {
    None,
    Var(&'t Var<'a>),
    Open(&'static str, &'t OpenSource<'a>),
}

/// A `host` or `hostaddr` candidate.
#[derive(Clone, Copy)]
struct HostText<'t, 'a> {
    text: Option<&'t str>,
    who: Who<'t, 'a>,
}

impl<'a> HostText<'_, 'a> {
    const NONE: Self = HostText {
        text: None,
        who: Who::None,
    };

    fn hidden(&self) -> Hidden<'a> {
        match self.who {
            Who::Var(v) => hidden_var(v),
            Who::Open(var, o) => open_hidden(var, o),
            Who::None => Hidden::Runtime {
                var: Cow::Borrowed("host"),
            },
        }
    }
}

fn open_hidden<'a>(var: &'static str, o: &OpenSource<'a>) -> Hidden<'a> {
    Hidden::Open {
        var,
        kind: o.kind,
        name: o.name,
        not_found: o.not_found,
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

const NODE_TLS_UNSET: Change = Change::Unset {
    name: Cow::Borrowed("NODE_TLS_REJECT_UNAUTHORIZED"),
};

/// Every candidate sslmode is verify-full: a fix need not set it.
fn modes_verify_full(modes: &[Mode<'_>]) -> bool {
    modes
        .iter()
        .all(|m| matches!(m, Mode::Known(SslMode::VerifyFull, _)))
}

/// Every candidate has a root certificate: a fix need not add one.
fn roots_configured(roots: &[Root<'_>]) -> bool {
    roots
        .iter()
        .all(|r| matches!(r, Root::Path | Root::System(_)))
}

/// Folds connection slots into one network state: any remote slot makes it remote.
fn reduce_slots<'a>(slots: impl Iterator<Item = Slot>, hidden: impl Fn() -> Hidden<'a>) -> Net<'a> {
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
