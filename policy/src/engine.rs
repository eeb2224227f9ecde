//! The decision: which containers are PostgreSQL clients, and what TLS their targets get
//! (docs/rules.md).

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::command;
use crate::context::{Context, Settings};
use crate::drivers;

mod libpq_rules;
mod pgjdbc_rules;

use crate::env::{Budget, Env, Get, OpenSource, Origin, PodInfo, Var, Visibility};
use crate::exemptions;
use crate::fixes::NODE_TLS_UNSET;
use crate::hosts::{self, Loopback, has_hidden};
use crate::jdbc::{self, JdbcUrl};
use crate::libpq::{self, Conninfo, KeyValueRecognition};
use crate::profiles;
use crate::verdict::*;
use crate::workload::{ContainerRef, PodView, WorkloadKind, containers};
use libpq_rules::LibpqTargets;

/// Judges a Pod spec.
pub fn judge<'a>(view: PodView<'a>, ctx: &Context<'a>) -> Report<'a> {
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
    // One set of application profiles for the whole Pod, even while it is replaced.
    let profiles = ctx.settings.profiles.set();
    for c in containers(spec) {
        let mut r = judge_container(c, &pod, host_network, ctx, profiles, &mut budget);
        r.exempt = report.exemption.as_ref().is_some_and(|e| e.covers(c.name));
        report.containers.push(r);
    }
    report
}

/// Judges one container.
pub(crate) fn judge_container<'a>(
    c: ContainerRef<'a>,
    pod: &PodInfo<'a>,
    host_network: bool,
    ctx: &Context<'a>,
    profiles: &'static profiles::ProfileSet,
    budget: &mut Budget,
) -> ContainerReport<'a> {
    let env = Env::build(c.env_from, c.env, pod, ctx.sources, budget);
    let arguments = command::arguments(c.command, c.args, &env, pod, budget);
    let mut judge = Judge {
        env: &env,
        settings: ctx.settings,
        profiles,
        loopback_allowed: ctx.settings.loopback == LoopbackPolicy::Allow && !host_network,
        client: false,
        system_root: false,
        libpq: LibpqTargets::default(),
        node_tls_off: None,
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
    judge.applications();
    if judge.client {
        for var in env.vars.iter().filter(|v| v.redefined) {
            if is_libpq_var(&var.name) || looks_like_connection_string(&var.value) {
                judge.notes.push(Note::Redefined {
                    variable: var.name.clone(),
                });
            }
        }
    }
    if arguments.truncated {
        judge.notes.push(Note::CommandLineLimit);
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
        fixable: t.fixable(),
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
pub(crate) enum Mode<'a> {
    Known(SslMode, SetBy<'a>),
    Invalid {
        by: SetBy<'a>,
        empty: bool,
        close: Option<SslMode>,
    },
    Default,
    Hidden(Hidden<'a>),
    Unverifiable(Unverifiable<'a>),
}

/// The effective root certificate of one candidate.
#[derive(Debug, Clone)]
pub(crate) enum Root<'a> {
    Path,
    System(SetBy<'a>),
    None,
    Hidden(Hidden<'a>),
    Unverifiable(Unverifiable<'a>),
}

/// Where one candidate connects.
#[derive(Debug, Clone)]
pub(crate) enum Destination<'a> {
    Socket,
    Loopback,
    Remote,
    /// Hidden (`Ok`) or unverifiable (`Err`): even whether it is a network target.
    Unknown(Result<Hidden<'a>, Unverifiable<'a>>),
    Invalid(hosts::SlotMismatch),
}

/// One candidate's outcome.
#[derive(Debug, Clone)]
pub(crate) enum Outcome<'a> {
    NotNetwork,
    Pass {
        loopback_if_remote: Option<Code>,
        system: bool,
    },
    Finding {
        code: Code,
        cause: Cause<'a>,
        if_remote: Option<Code>,
    },
}

pub(crate) struct Judge<'e, 'a> {
    pub(crate) env: &'e Env<'a>,
    pub(crate) settings: &'e Settings,
    /// The application profiles this Pod is judged with.
    pub(crate) profiles: &'static profiles::ProfileSet,
    pub(crate) loopback_allowed: bool,
    pub(crate) client: bool,
    pub(crate) system_root: bool,
    pub(crate) libpq: LibpqTargets,
    /// `NODE_TLS_REJECT_UNAUTHORIZED=0`: where it was set; looked up when first needed.
    pub(crate) node_tls_off: Option<Option<Origin<'a>>>,
    pub(crate) findings: Vec<Finding<'a>>,
    pub(crate) notes: Vec<Note<'a>>,
}

/// Text that names what a variable holds, for findings about it.
#[derive(Clone)]
pub(crate) struct Subject<'a> {
    pub(crate) variable: Cow<'a, str>,
    pub(crate) origin: Origin<'a>,
    pub(crate) target: Target<'a>,
    /// What a fix may change.
    pub(crate) scope: Scope,
}

impl<'e, 'a> Judge<'e, 'a> {
    fn variable(&mut self, var: &'e Var<'a>) {
        if var.is_hidden() {
            // Unreadable, or made only of `$(VAR)` references to unreadable values.
            if !matches!(var.visibility, Visibility::Opaque)
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
        if drivers::may_claim(&var.name, &var.value) {
            for driver in drivers::DRIVERS {
                if let Some(target) = driver.recognise(&var.name, &var.value) {
                    self.driver(*driver, var, &target);
                    return;
                }
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
                    Ok(info) => {
                        self.libpq(&subject, Some(&info), uri, driver, var);
                        // libpq reads past a `#`; URL parsers (pgx, node-postgres,
                        // asyncpg, sqlx) drop the fragment: both readings are judged.
                        if let Some(hash) = var.value.find('#').filter(|_| uri)
                            && let Some(Recognised::Libpq { info: Ok(cut), .. }) =
                                recognise(&var.value[..hash])
                        {
                            self.libpq(&subject, Some(&cut), uri, driver, var);
                        }
                    }
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
        let mut dest = Destination::Socket;
        for h in &target.hosts {
            dest = weaker_destination(
                dest,
                match hosts::loopback(h) {
                    Loopback::Yes => Destination::Loopback,
                    Loopback::No => Destination::Remote,
                    Loopback::Unknown => Destination::Unknown(Ok(hidden_var(var))),
                },
            );
        }
        if matches!(dest, Destination::Socket) {
            return;
        }
        self.client = true;
        let judged = driver.judge(&var.name, target, self);
        // A value the engine cannot see decides unless it is only a password: then what
        // the driver would do is what the finding is behind.
        if has_hidden(&var.value) && !drivers::hidden_only_in_credentials(&var.value) {
            let cause = Cause::Hidden {
                setting: Setting::Target,
                hidden: hidden_var(var),
            };
            let if_remote = judged.outcome.err().map(|f| f.code);
            self.push_fixed(&s, Code::Unresolved, cause, if_remote, FixPlan::None);
            return;
        }
        for text in judged.notes {
            self.notes.push(Note::Driver {
                variable: var.name.clone(),
                driver: name,
                text,
            });
        }
        let found = match judged.outcome {
            Err(found) => found,
            Ok(()) if driver.runs_on_node() && !matches!(dest, Destination::Loopback) => {
                match self.node_tls_off() {
                    Some(origin) => {
                        let cause = Cause::NodeTlsOff { origin };
                        self.push(&s, Code::VerificationDisabled, cause, None);
                    }
                    None => self.node_tls_hidden(&s),
                }
                return;
            }
            Ok(()) => return,
        };
        if matches!(dest, Destination::Loopback) && self.loopback_allowed {
            self.notes.push(Note::LoopbackAllowed {
                variable: var.name.clone(),
                if_remote: found.code,
            });
            return;
        }
        let cause = Cause::Driver {
            driver: name,
            what: found.what,
        };
        let plan = if found.fixes.is_empty() {
            FixPlan::None
        } else {
            FixPlan::Listed(found.fixes)
        };
        self.push_fixed(&s, found.code, cause, None, plan);
    }

    /// Applications recognised by their own variables (docs/applications.md), each judged
    /// once, by the profile its first sign names.
    fn applications(&mut self) {
        let (env, set) = (self.env, self.profiles);
        let mut judged: SmallVec<[&'static str; 2]> = SmallVec::new();
        for var in &env.vars {
            for p in set.candidates(&var.name) {
                if !judged.contains(&p.id.as_str()) {
                    judged.push(&p.id);
                    self.application(p, var);
                }
            }
        }
    }

    fn application(&mut self, p: &'static profiles::Profile, sign: &'e Var<'a>) {
        let Some((code, variable, what, dest)) = self.application_outcome(p) else {
            return;
        };
        self.client = true;
        // An unset deciding variable has no origin of its own: the finding says none.
        let (origin, unset) = match self.env.get(variable) {
            Get::Set(v) => (v.origin, false),
            Get::MaybeSet(_) | Get::Unset => (sign.origin, true),
        };
        let s = Subject {
            variable: Cow::Borrowed(variable),
            origin,
            scope: Scope {
                form: Form::Environment,
                ..Default::default()
            },
            target: Target::Driver {
                driver: Cow::Borrowed(&p.application),
            },
        };
        if dest == Some(Loopback::Yes) && self.loopback_allowed {
            self.notes.push(Note::LoopbackAllowed {
                variable: Cow::Borrowed(variable),
                if_remote: code,
            });
            return;
        }
        let (plan, what) = match self.application_fix(p) {
            Some(fix) => (FixPlan::Listed(vec![fix]), what),
            None => (
                FixPlan::None,
                format!(
                    "{what}; no setting of {} verifies the server",
                    p.application
                ),
            ),
        };
        let decided = matches!(code, Code::Unresolved | Code::Unverifiable);
        let (code, if_remote, what) = match dest {
            Some(Loopback::No | Loopback::Yes) => (code, None, what),
            _ if decided => (code, None, what),
            Some(Loopback::Unknown) | None => (
                Code::Unresolved,
                Some(code),
                format!("{what}; where it connects is not visible"),
            ),
        };
        let cause = Cause::Driver {
            driver: &p.application,
            what: Cow::Owned(what),
        };
        self.push_fixed(&s, code, cause, if_remote, plan);
        if let Some(f) = self.findings.last_mut() {
            f.application = Some(&p.application);
            if unset {
                f.origin = None;
            }
        }
    }

    /// What a recognised application's settings decide: the code, the deciding variable,
    /// what it makes the driver do, and whether the server is on loopback. `None` when it
    /// is not this application, or when the case is judged elsewhere (a query-string
    /// switch, a whole URL, a pass).
    fn application_outcome(
        &mut self,
        p: &'static profiles::Profile,
    ) -> Option<(Code, &'static str, String, Option<Loopback>)> {
        use profiles::{Judged, Server};
        if p.tls.iter().any(|s| s.query.is_some())
            && matches!(
                profiles::judge(p, &*self),
                Some(Judged::Pass | Judged::Finding { .. })
            )
            && self.query_switch(p)
        {
            return None;
        }
        match profiles::judge(p, &*self)? {
            Judged::ByUrl => {
                if let Some(url) = &p.url {
                    self.by_url(p, url.variable.as_str());
                }
                None
            }
            Judged::Pass => {
                self.client = true;
                None
            }
            Judged::Finding {
                code,
                variable,
                what,
                server,
            } => {
                let dest = match server {
                    Server::Host(h) => Some(hosts::loopback(drivers::host_of(h))),
                    Server::Hidden(_) | Server::NotVisible => None,
                };
                Some((code, variable, what, dest))
            }
        }
    }

    /// The profile's fix, without what is already set as it says; `None` when no setting
    /// of the application verifies the server.
    fn application_fix(&self, p: &'static profiles::Profile) -> Option<Fix> {
        if !p.fix_verifies() {
            return None;
        }
        let env = self.env;
        let changes = p
            .fix
            .iter()
            .filter(|(name, value)| {
                !matches!(env.get(name), Get::Set(v) if v.is_readable() && v.value == value.as_str())
            })
            .map(|(name, value)| Change::Env {
                name: Cow::Borrowed(name),
                value: if value == "<CA file>" {
                    FixValue::CaFile
                } else {
                    FixValue::Literal(value)
                },
            })
            .collect();
        Some(Fix {
            driver: None,
            changes,
        })
    }

    /// A switch that is a query string the application appends to its driver's URL
    /// (Keycloak's `KC_DB_URL_PROPERTIES`), set and with the server visible: judged as the
    /// URL the application makes, by that driver's rules. `false`: not this case.
    fn query_switch(&mut self, p: &'static profiles::Profile) -> bool {
        let env = self.env;
        let Some(var) =
            p.tls
                .iter()
                .filter(|s| s.query.is_some())
                .find_map(|s| match env.get(&s.variable) {
                    Get::Set(v) if v.is_readable() => Some(v),
                    _ => None,
                })
        else {
            return false;
        };
        let host = match p.host.as_ref().map(|h| (env.get(&h.variable), h)) {
            Some((Get::Set(v), _)) if v.is_readable() => v.value.to_string(),
            Some((Get::Unset, h)) => match &h.default {
                Some(d) => d.clone(),
                None => return false,
            },
            _ => return false,
        };
        let text = format!("jdbc:postgresql://{host}/db{}", var.value);
        let Ok(url) = crate::jdbc::parse(&text) else {
            return false;
        };
        let before = self.findings.len();
        let s = self.subject(var, Target::Jdbc);
        self.jdbc(&s, &url, var);
        for f in &mut self.findings[before..] {
            f.application = Some(&p.application);
        }
        true
    }

    /// A recognised application whose whole URL variable is set: what the engine made of
    /// that variable names the application; hidden, it is `Unresolved` even when its name
    /// does not say it holds a connection string.
    fn by_url(&mut self, p: &'static profiles::Profile, url: &'static str) {
        self.client = true;
        let mut named = false;
        for f in &mut self.findings {
            if f.variable.as_deref() == Some(url) {
                f.application = Some(&p.application);
                named = true;
            }
        }
        if named {
            return;
        }
        let (s, hidden) = match self.env.get(url) {
            Get::Set(v) if v.is_hidden() => {
                (self.subject(v, Target::HiddenVariable), hidden_var(v))
            }
            Get::MaybeSet(o) => {
                let s = Subject {
                    variable: Cow::Borrowed(url),
                    origin: Origin::EnvFrom {
                        kind: o.kind,
                        name: o.name,
                        key: url,
                    },
                    scope: Scope::default(),
                    target: Target::HiddenVariable,
                };
                (s, open_hidden(url, o))
            }
            Get::Set(_) | Get::Unset => return,
        };
        let cause = Cause::Hidden {
            setting: Setting::Target,
            hidden,
        };
        self.push(&s, Code::Unresolved, cause, None);
        if let Some(f) = self.findings.last_mut() {
            f.application = Some(&p.application);
        }
    }

    pub(crate) fn subject(&self, var: &Var<'a>, target: Target<'a>) -> Subject<'a> {
        Subject {
            variable: var.name.clone(),
            origin: var.origin,
            scope: Scope {
                form: if target == Target::Environment {
                    Form::Environment
                } else {
                    Form::Libpq
                },
                ..Default::default()
            },
            target,
        }
    }

    pub(crate) fn push(
        &mut self,
        s: &Subject<'a>,
        code: Code,
        cause: Cause<'a>,
        if_remote: Option<Code>,
    ) {
        let plan = match &cause {
            Cause::NodeTlsOff { .. } => FixPlan::Listed(vec![Fix {
                driver: None,
                changes: vec![NODE_TLS_UNSET],
            }]),
            Cause::NonValidatingFactory => FixPlan::Listed(vec![Fix {
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
            }]),
            _ if if_remote.is_some() => FixPlan::None,
            _ => FixPlan::Libpq {
                scope: s.scope,
                unset_node_tls: false,
            },
        };
        self.push_fixed(s, code, cause, if_remote, plan);
    }

    /// Records a finding. While `NODE_TLS_REJECT_UNAUTHORIZED=0` is set, no fix of a
    /// target that node-postgres may read passes without removing it.
    pub(crate) fn push_fixed(
        &mut self,
        s: &Subject<'a>,
        code: Code,
        cause: Cause<'a>,
        if_remote: Option<Code>,
        mut plan: FixPlan,
    ) {
        if s.scope.form != Form::Jdbc && self.node_tls_off().is_some() {
            match &mut plan {
                FixPlan::Libpq { unset_node_tls, .. } => *unset_node_tls = true,
                FixPlan::Listed(fixes) => {
                    for fix in fixes {
                        if !fix.changes.contains(&NODE_TLS_UNSET) {
                            fix.changes.push(NODE_TLS_UNSET);
                        }
                    }
                }
                FixPlan::None => {}
            }
        }
        self.findings.push(Finding {
            code,
            severity: self.settings.severity(code),
            variable: Some(s.variable.clone()),
            origin: Some(s.origin),
            target: Some(s.target.clone()),
            cause,
            if_remote,
            application: None,
            fix_plan: plan,
        });
    }

    /// Where `NODE_TLS_REJECT_UNAUTHORIZED=0` is set, if it is.
    fn node_tls_off(&mut self) -> Option<Origin<'a>> {
        let env = self.env;
        *self
            .node_tls_off
            .get_or_insert_with(|| match env.get("NODE_TLS_REJECT_UNAUTHORIZED") {
                Get::Set(v) if v.visibility == Visibility::Visible && v.value == "0" => {
                    Some(v.origin)
                }
                _ => None,
            })
    }

    /// A pass while `NODE_TLS_REJECT_UNAUTHORIZED` comes from a value the engine cannot see
    /// (it would turn verification off if it is `0`): `Unresolved`.
    fn node_tls_hidden(&mut self, s: &Subject<'a>) {
        if let Get::Set(v) = self.env.get("NODE_TLS_REJECT_UNAUTHORIZED")
            && (v.visibility != Visibility::Visible || has_hidden(&v.value))
        {
            let cause = Cause::Hidden {
                setting: Setting::Verification,
                hidden: hidden_var(v),
            };
            self.push_fixed(s, Code::Unresolved, cause, None, FixPlan::None);
        }
    }

    pub(crate) fn invalid(&mut self, s: &Subject<'a>, syntax: Syntax) {
        self.client = true;
        self.push(
            s,
            Code::ConnectionStringInvalid,
            Cause::Syntax(syntax),
            None,
        );
    }

    /// Evaluates every candidate combination and reports the weakest.
    pub(crate) fn weakest(
        &mut self,
        s: &Subject<'a>,
        modes: &[Mode<'a>],
        roots: &[Root<'a>],
        destinations: &[Destination<'a>],
        jdbc: bool,
    ) {
        let mut worst: Option<Outcome<'a>> = None;
        for dest in destinations {
            for mode in modes {
                for root in roots {
                    let o = outcome(mode, root, dest, self.loopback_allowed, jdbc);
                    if worst.as_ref().is_none_or(|w| self.rank(&o) > self.rank(w)) {
                        worst = Some(o);
                    }
                }
            }
        }
        match worst {
            None | Some(Outcome::NotNetwork) => {}
            Some(Outcome::Pass {
                loopback_if_remote: None,
                ..
            }) if !jdbc && self.node_tls_off().is_some() => {
                self.client = true;
                if let Some(origin) = self.node_tls_off() {
                    self.push(
                        s,
                        Code::VerificationDisabled,
                        Cause::NodeTlsOff { origin },
                        None,
                    );
                }
            }
            Some(Outcome::Pass {
                loopback_if_remote,
                system,
            }) => {
                self.client = true;
                if loopback_if_remote.is_none() && !jdbc {
                    self.node_tls_hidden(s);
                }
                if let Some(if_remote) = loopback_if_remote {
                    self.notes.push(Note::LoopbackAllowed {
                        variable: s.variable.clone(),
                        if_remote,
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
                if_remote,
            }) => {
                self.client = true;
                self.push(s, code, cause, if_remote);
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
}

/// A driver reads the container's other variables through the judge.
impl drivers::Environment for Judge<'_, '_> {
    fn get(&self, name: &str) -> Option<Option<&str>> {
        match self.env.get(name) {
            Get::Unset => None,
            Get::Set(v) if v.is_readable() => Some(Some(&v.value)),
            Get::Set(_) | Get::MaybeSet(_) => Some(None),
        }
    }
}

/// Keeps one of each value, in the order of their last occurrence (the last store last).
pub(crate) fn keep_last_distinct<T, K: PartialEq>(
    items: &mut Candidates<T>,
    key: impl Fn(&T) -> K,
) {
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
pub(crate) type Candidates<T> = SmallVec<[T; 2]>;

pub(crate) fn open_hidden<'a>(var: &'static str, o: &OpenSource<'a>) -> Hidden<'a> {
    Hidden::Open {
        var,
        kind: o.kind,
        name: o.name,
        not_found: o.not_found,
    }
}

pub(crate) fn hidden_var<'a>(v: &Var<'a>) -> Hidden<'a> {
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

/// Every candidate sslmode is verify-full: a fix need not set it.
pub(crate) fn modes_verify_full(modes: &[Mode<'_>]) -> bool {
    modes
        .iter()
        .all(|m| matches!(m, Mode::Known(SslMode::VerifyFull, _)))
}

/// Every candidate has a root certificate: a fix need not add one.
pub(crate) fn roots_configured(roots: &[Root<'_>]) -> bool {
    roots
        .iter()
        .all(|r| matches!(r, Root::Path | Root::System(_)))
}

pub(crate) fn weaker_destination<'a>(a: Destination<'a>, b: Destination<'a>) -> Destination<'a> {
    let rank = |n: &Destination<'_>| match n {
        Destination::Socket => 0,
        Destination::Loopback => 1,
        Destination::Unknown(_) => 2,
        Destination::Remote => 3,
        Destination::Invalid(_) => 4,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// The outcome of one candidate combination: what its settings make the client do, then
/// what that means at its destination.
fn outcome<'a>(
    mode: &Mode<'a>,
    root: &Root<'a>,
    dest: &Destination<'a>,
    loopback_allowed: bool,
    jdbc: bool,
) -> Outcome<'a> {
    at_destination(dest, settings_outcome(mode, root, jdbc), loopback_allowed)
}

fn finding<'a>(code: Code, cause: Cause<'a>) -> Outcome<'a> {
    Outcome::Finding {
        code,
        cause,
        if_remote: None,
    }
}

/// What an sslmode and a root certificate make the client do, wherever it connects.
fn settings_outcome<'a>(mode: &Mode<'a>, root: &Root<'a>, jdbc: bool) -> Outcome<'a> {
    match (mode, root) {
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
                loopback_if_remote: None,
                system: false,
            },
            Root::System(_) => Outcome::Pass {
                loopback_if_remote: None,
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
    }
}

/// A settings outcome at its destination: no network, an invalid string, loopback (allowed
/// or not), or a host the engine cannot see (then the outcome is what it is behind).
fn at_destination<'a>(
    dest: &Destination<'a>,
    raw: Outcome<'a>,
    loopback_allowed: bool,
) -> Outcome<'a> {
    match (dest, raw) {
        (Destination::Socket, _) => Outcome::NotNetwork,
        (Destination::Invalid(e), _) => finding(
            Code::ConnectionStringInvalid,
            Cause::Syntax(Syntax::Slots(*e)),
        ),
        (Destination::Loopback, Outcome::Finding { code, .. }) if loopback_allowed => {
            Outcome::Pass {
                loopback_if_remote: Some(code),
                system: false,
            }
        }
        (Destination::Unknown(why), Outcome::Finding { code, cause, .. }) => {
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
                        if_remote: Some(code),
                    },
                    Err(u) => Outcome::Finding {
                        code: Code::Unverifiable,
                        cause: Cause::Unverifiable(u.clone()),
                        if_remote: Some(code),
                    },
                }
            }
        }
        (_, raw) => raw,
    }
}

#[cfg(test)]
mod tests;
