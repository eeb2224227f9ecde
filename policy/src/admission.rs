//! The admission decision (docs/admission.md, docs/rules.md "Exemptions") as a plain function: the webhook decodes a
//! review, calls [`decide`], and encodes the answer. Modes, ratcheting on UPDATE,
//! built-in controllers, verifyfull's own service accounts, ephemeral containers and
//! exemption authorship are all decided here, so they are unit-tested without a server.

use std::collections::BTreeSet;

use crate::context::Context;
use crate::engine::judge;
use crate::exemptions::{EXEMPT, EXEMPT_REASON, EXEMPT_UNTIL};
use crate::verdict::{Code, ContainerList, Finding, Report, Severity};
use crate::workload::{Meta, Workload, WorkloadKind};

/// The enforcement mode, chosen by the API server through the webhook path (docs/admission.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Findings that deny are refused.
    Enforce,
    /// Findings are admission warnings; nothing is refused.
    Warn,
    /// Findings are recorded in the audit annotation only.
    Audit,
}

/// The operations the webhook judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `CREATE`.
    Create,
    /// `UPDATE`.
    Update,
}

impl Operation {
    /// The name admission requests use.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

/// Who asks (the review's `userInfo`).
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    /// `userInfo.username`.
    pub username: &'a str,
    /// `userInfo.groups`.
    pub groups: &'a [String],
}

/// Users and groups allowed to do something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    /// User names, exactly.
    pub users: Vec<String>,
    /// Group names, exactly.
    pub groups: Vec<String>,
}

impl Subjects {
    /// The user is listed, or is in a listed group.
    pub fn allows(&self, user: &User<'_>) -> bool {
        self.users.iter().any(|u| u == user.username)
            || user.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// Objects that a built-in controller makes from its owner's template. The owner was judged
/// when it was written, so these are never denied for what the template carries: otherwise
/// a rollout, a scheduled run, a scale-up or a node drain of a workload that already
/// violated would stall (docs/admission.md, "What `enforce` does").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerMade {
    /// The kind made.
    pub kind: WorkloadKind,
    /// The API group and resource, as admission requests name them.
    pub group: &'static str,
    /// The resource, plural.
    pub resource: &'static str,
    /// The operations the controller does.
    pub operations: &'static [Operation],
    /// The controllers' service account names in `kube-system`.
    pub controllers: &'static [&'static str],
}

/// Every kind of object the built-in controllers make from a template.
pub const CONTROLLER_MADE: &[ControllerMade] = &[
    ControllerMade {
        kind: WorkloadKind::Pod,
        group: "",
        resource: "pods",
        operations: &[Operation::Create],
        controllers: &[
            "replicaset-controller",
            "replication-controller",
            "statefulset-controller",
            "daemon-set-controller",
            "job-controller",
        ],
    },
    ControllerMade {
        kind: WorkloadKind::ReplicaSet,
        group: "apps",
        resource: "replicasets",
        operations: &[Operation::Create, Operation::Update],
        controllers: &["deployment-controller"],
    },
    ControllerMade {
        kind: WorkloadKind::Job,
        group: "batch",
        resource: "jobs",
        operations: &[Operation::Create],
        controllers: &["cronjob-controller"],
    },
];

/// A built-in controller's userInfo when the controller manager gives each controller its
/// own credentials (`--use-service-account-credentials`, what kubeadm and most managed
/// clusters do).
pub const CONTROLLER_ACCOUNT_PREFIX: &str = "system:serviceaccount:kube-system:";

/// The controller manager's single identity, when it runs without per-controller
/// credentials: every built-in controller writes as this user.
pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

impl ControllerMade {
    /// The usernames this entry trusts: each controller's service account, and the
    /// controller manager's own identity.
    pub fn usernames(&self) -> impl Iterator<Item = String> + '_ {
        self.controllers
            .iter()
            .map(|c| format!("{CONTROLLER_ACCOUNT_PREFIX}{c}"))
            .chain(std::iter::once(CONTROLLER_MANAGER.to_string()))
    }

    fn made_by(&self, username: &str) -> bool {
        username == CONTROLLER_MANAGER
            || username
                .strip_prefix(CONTROLLER_ACCOUNT_PREFIX)
                .is_some_and(|sa| self.controllers.contains(&sa))
    }
}

/// Whether this request is a built-in controller making an object from its owner's
/// template (identified by userInfo, never by ownerReferences: anyone can set those).
pub fn controller_made(
    kind: WorkloadKind,
    operation: Operation,
    subresource: Option<&str>,
    username: &str,
) -> bool {
    subresource.is_none()
        && CONTROLLER_MADE
            .iter()
            .any(|m| m.kind == kind && m.operations.contains(&operation) && m.made_by(username))
}

/// Webhook settings that shape the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Who may add or change exemption annotations (default: the `system:masters` group).
    pub exemption_subjects: Subjects,
    /// verifyfull's own service accounts: judged and recorded, never denied.
    pub own_service_accounts: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            exemption_subjects: Subjects {
                users: Vec::new(),
                groups: vec!["system:masters".to_string()],
            },
            own_service_accounts: Vec::new(),
        }
    }
}

/// One admission request, decoded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `CREATE` or `UPDATE`.
    pub operation: Operation,
    /// `ephemeralcontainers` for `kubectl debug`; `None` for the main resource.
    pub subresource: Option<&'a str>,
    /// Who asks.
    pub user: User<'a>,
    /// The object as it will be stored.
    pub object: &'a Workload,
    /// For `UPDATE`: the object as it was.
    pub old_object: Option<&'a Workload>,
}

/// Why a finding does not deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relief {
    /// It was already there before this UPDATE.
    Ratcheted,
    /// A built-in controller makes the object from its owner's admitted template.
    Controller,
    /// verifyfull's own service account asks.
    OwnServiceAccount,
    /// An exemption covers the container.
    Exempt,
    /// The mode is `warn` or `audit`.
    Mode,
}

/// The answer: what the webhook returns, and what it records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// The request is admitted.
    pub allowed: bool,
    /// The denial message: every denied finding in full.
    pub message: Option<String>,
    /// Admission warnings, one per finding, each at most 120 characters.
    pub warnings: Vec<String>,
    /// Full text of every finding, for the audit annotation (audit mode).
    pub audit: Vec<String>,
    /// Counts for metrics: findings that denied, and that were relieved.
    pub denied: usize,
    /// Why each finding that did not deny did not.
    pub relieved: Vec<Relief>,
    /// The request used an exemption (counted in a metric).
    pub exempted: bool,
}

/// The exemption annotations of a Pod (template), for authorship checks.
fn exemption_annotations(meta: &Meta) -> Vec<(&str, &str)> {
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| matches!(k.as_str(), EXEMPT | EXEMPT_REASON | EXEMPT_UNTIL))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Identity of a finding across object versions: container, variable, code.
type Key = (String, String, Code);

fn key(container: Option<&str>, f: &Finding<'_>) -> Key {
    (
        container.unwrap_or("").to_string(),
        f.variable.as_deref().unwrap_or("").to_string(),
        f.code,
    )
}

fn keys(report: &Report<'_>) -> BTreeSet<Key> {
    let object = report.findings.iter().map(|f| key(None, f));
    let containers = report
        .container_findings()
        .map(|(c, f)| key(Some(c.name), f));
    object.chain(containers).collect()
}

/// Decides one request.
pub fn decide(req: &Request<'_>, mode: Mode, policy: &Policy, ctx: &Context<'_>) -> Answer {
    let report = judge(req.object.view(), ctx);
    let old_report = req.old_object.map(|o| judge(o.view(), ctx));
    let old_keys = old_report.as_ref().map(keys).unwrap_or_default();

    let controller = controller_made(
        req.object.kind,
        req.operation,
        req.subresource,
        req.user.username,
    );
    let own = policy
        .own_service_accounts
        .iter()
        .any(|sa| sa == req.user.username);

    let mut answer = Answer {
        allowed: true,
        ..Answer::default()
    };
    let mut denials: Vec<String> = Vec::new();

    // Findings about the object itself (exemption annotations), then each judged container's.
    let object = report.findings.iter().map(|f| (None, f));
    let containers = report
        .container_findings()
        .filter(|(c, _)| judged(req, c.list, c.name))
        .map(|(c, f)| (Some(c), f));
    for (c, f) in object.chain(containers) {
        let name = c.map(|c| c.name);
        let relief = if c.is_some_and(|c| c.exempt) {
            Some(Relief::Exempt)
        } else if own {
            Some(Relief::OwnServiceAccount)
        } else if controller {
            Some(Relief::Controller)
        } else if req.operation == Operation::Update && old_keys.contains(&key(name, f)) {
            Some(Relief::Ratcheted)
        } else {
            (mode != Mode::Enforce).then_some(Relief::Mode)
        };
        consider(&mut answer, &mut denials, f, relief, name);
    }
    if let Some(e) = &report.exemption
        && report
            .containers
            .iter()
            .any(|c| c.exempt && !c.findings.is_empty())
    {
        answer.exempted = true;
        answer.warnings.push(crate::message::truncate(
            format!("exempted by {EXEMPT}: {}", e.reason),
            crate::message::WARNING_LIMIT,
        ));
    }

    if let Some(text) = unauthorised_exemption(req, policy, controller) {
        if mode == Mode::Enforce && !own {
            answer.denied += 1;
            denials.push(text.clone());
        }
        answer.warnings.push(crate::message::truncate(
            text.clone(),
            crate::message::WARNING_LIMIT,
        ));
        answer.audit.push(text);
    }

    // Audit records silently (log, metric, audit annotation); only warn talks back.
    if mode == Mode::Audit {
        answer.warnings.clear();
    }

    if !denials.is_empty() {
        answer.allowed = false;
        answer.message = Some(denial_message(req, &denials));
    }
    answer
}

/// `kubectl debug`: only the ephemeral containers this request adds are judged.
fn judged(req: &Request<'_>, list: ContainerList, name: &str) -> bool {
    match (req.operation, req.subresource) {
        (Operation::Update, Some("ephemeralcontainers")) => {
            list == ContainerList::Ephemeral
                && !req.old_object.is_some_and(|o| {
                    o.spec
                        .ephemeral_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == name)
                })
        }
        _ => true,
    }
}

/// One finding into the answer: recorded for audit; a warning unless its severity is
/// allow; a denial unless something relieves it.
fn consider(
    answer: &mut Answer,
    denials: &mut Vec<String>,
    f: &Finding<'_>,
    relief: Option<Relief>,
    container: Option<&str>,
) {
    let full = f.message(container);
    if f.severity == Severity::Allow {
        answer.audit.push(full);
        return;
    }
    match (f.severity, relief) {
        (Severity::Deny, None) => {
            answer.denied += 1;
            denials.push(full.clone());
        }
        (Severity::Deny, Some(r)) => answer.relieved.push(r),
        _ => {}
    }
    answer.warnings.push(f.warning(container));
    answer.audit.push(full);
}

/// Exemption authorship: a Pod or template that gains or changes exemption annotations
/// needs an allowed subject (Pods a controller creates from its template do not). The
/// refusal, if it is one.
fn unauthorised_exemption(req: &Request<'_>, policy: &Policy, controller: bool) -> Option<String> {
    let new_exemption = exemption_annotations(req.object.view().pod);
    let old_exemption = req
        .old_object
        .map(|o| exemption_annotations(o.view().pod))
        .unwrap_or_default();
    let refused = !controller
        && !new_exemption.is_empty()
        && new_exemption != old_exemption
        && !policy.exemption_subjects.allows(&req.user);
    refused.then(|| {
        format!(
            "{} may not add or change {EXEMPT} annotations: ask a cluster administrator (exemptions.allowedSubjects)",
            req.user.username
        )
    })
}

/// The message of a denial: the object, the rule, and every reason.
fn denial_message(req: &Request<'_>, denials: &[String]) -> String {
    let kind = req.object.kind;
    let name = req
        .object
        .metadata
        .name
        .as_deref()
        .unwrap_or("(generated name)");
    format!(
        "verifyfull denied {kind} {name}: PostgreSQL clients must use sslmode=verify-full with a root certificate.\n{}",
        denials.join("\n")
    )
}

/// Who may change a Namespace's `verifyfull.dev/mode` label (docs/admission.md). `None`: allowed.
pub fn namespace_mode_change(
    old: Option<&Meta>,
    new: &Meta,
    user: &User<'_>,
    allowed: &Subjects,
) -> Option<String> {
    const LABEL: &str = "verifyfull.dev/mode";
    let label = |m: Option<&Meta>| {
        m.and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(LABEL))
            .cloned()
    };
    if label(old) == label(Some(new)) || allowed.allows(user) {
        None
    } else {
        Some(format!(
            "{} may not change the {LABEL} label: ask a cluster administrator (modeLabel.allowedSubjects)",
            user.username
        ))
    }
}

#[cfg(test)]
mod tests;
