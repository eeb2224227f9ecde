//! The admission decision, case by case against docs/admission.md.

use serde_json::{Value, json};

use super::*;
use crate::context::Settings;
use crate::env::NoSources;
use crate::workload::Object;

fn workload(v: Value) -> Workload {
    match serde_json::from_value::<Object>(v).expect("object") {
        Object::Workload(w) => *w,
        other => panic!("not a workload: {other:?}"),
    }
}

const BAD: &str = "postgres://db/app?sslmode=require";
const GOOD: &str = "postgres://db/app?sslmode=verify-full&sslrootcert=/ca.crt";

fn pod(annotations: Value, containers: Value, ephemeral: Value) -> Workload {
    workload(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": containers, "ephemeralContainers": ephemeral}
    }))
}

fn app(url: &str) -> Value {
    json!([{"name": "app", "env": [{"name": "DATABASE_URL", "value": url}]}])
}

fn user(name: &str) -> User<'_> {
    User {
        username: name,
        groups: &[],
    }
}

fn run(
    op: Operation,
    sub: Option<&str>,
    who: User<'_>,
    new: &Workload,
    old: Option<&Workload>,
    mode: Mode,
) -> Answer {
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    let policy = Policy {
        own_service_accounts: vec!["system:serviceaccount:verifyfull:verifyfull-operator".into()],
        ..Policy::default()
    };
    let req = Request {
        operation: op,
        subresource: sub,
        user: who,
        object: new,
        old_object: old,
    };
    decide(&req, mode, &policy, &ctx)
}

fn create(who: User<'_>, new: &Workload, mode: Mode) -> Answer {
    run(Operation::Create, None, who, new, None, mode)
}

#[test]
fn modes() {
    let bad = pod(json!({}), app(BAD), json!(null));
    let a = create(user("alice"), &bad, Mode::Enforce);
    assert!(!a.allowed);
    assert_eq!(a.denied, 1);
    let message = a.message.expect("a denial message");
    assert!(
        message.contains("container app: DATABASE_URL (literal value): SslModeTooWeak"),
        "{message}"
    );
    assert!(a.warnings.iter().all(|w| w.chars().count() <= 120));

    let a = create(user("alice"), &bad, Mode::Warn);
    assert!(a.allowed);
    assert_eq!(a.relieved, vec![Relief::Mode]);
    assert!(a.warnings[0].starts_with("app/DATABASE_URL: SslModeTooWeak"));

    let a = create(user("alice"), &bad, Mode::Audit);
    assert!(a.allowed);
    assert_eq!(a.audit.len(), 1);
    assert!(a.warnings.is_empty(), "audit does not warn the requester");

    let good = pod(json!({}), app(GOOD), json!(null));
    let a = create(user("alice"), &good, Mode::Enforce);
    assert!(a.allowed && a.warnings.is_empty() && a.audit.is_empty());
}

#[test]
fn updates_ratchet() {
    let bad = pod(json!({}), app(BAD), json!(null));
    // An image bump or a rollout restart of a Pod template that already violated.
    let a = run(
        Operation::Update,
        None,
        user("alice"),
        &bad,
        Some(&bad),
        Mode::Enforce,
    );
    assert!(a.allowed);
    assert_eq!(a.relieved, vec![Relief::Ratcheted]);
    assert_eq!(a.warnings.len(), 1);
    // A new finding is denied.
    let worse = pod(
        json!({}),
        json!([{"name": "app", "env": [{"name": "DATABASE_URL", "value": BAD}, {"name": "PGHOST", "value": "db"}]}]),
        json!(null),
    );
    let a = run(
        Operation::Update,
        None,
        user("alice"),
        &worse,
        Some(&bad),
        Mode::Enforce,
    );
    assert!(!a.allowed);
    assert_eq!((a.denied, a.relieved.clone()), (1, vec![Relief::Ratcheted]));
}

#[test]
fn controllers_and_own_service_accounts() {
    let bad = pod(json!({}), app(BAD), json!(null));
    let rs = "system:serviceaccount:kube-system:replicaset-controller";
    let a = create(user(rs), &bad, Mode::Enforce);
    assert!(a.allowed);
    assert_eq!(a.relieved, vec![Relief::Controller]);
    // Only Pods: a controller's other writes are judged as anyone's.
    let deployment = workload(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": app(BAD)}}}
    }));
    assert!(!create(user(rs), &deployment, Mode::Enforce).allowed);
    // Anyone else creating the same Pod is denied.
    assert!(
        !create(
            user("system:serviceaccount:shop:deployer"),
            &bad,
            Mode::Enforce
        )
        .allowed
    );
    let own = "system:serviceaccount:verifyfull:verifyfull-operator";
    let a = create(user(own), &deployment, Mode::Enforce);
    assert!(a.allowed);
    assert_eq!(a.relieved, vec![Relief::OwnServiceAccount]);
}

fn template_of(kind: &str, api_version: &str) -> Workload {
    let template = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": app(BAD)}});
    let spec = if kind == "CronJob" {
        json!({"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}})
    } else {
        json!({"template": template})
    };
    workload(json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": "w", "namespace": "shop"}, "spec": spec
    }))
}

/// Every object a built-in controller makes from a violating template, by every controller
/// that makes it, under both identity styles, every operation and every mode: relieved
/// exactly where the controller makes that kind with that operation.
#[test]
fn controller_made_objects_are_never_denied() {
    let pod_ = pod(json!({}), app(BAD), json!(null));
    let rs = template_of("ReplicaSet", "apps/v1");
    let job = template_of("Job", "batch/v1");
    let objects: [(WorkloadKind, &Workload); 3] = [
        (WorkloadKind::Pod, &pod_),
        (WorkloadKind::ReplicaSet, &rs),
        (WorkloadKind::Job, &job),
    ];
    let every_controller = [
        "replicaset-controller",
        "replication-controller",
        "statefulset-controller",
        "daemon-set-controller",
        "job-controller",
        "deployment-controller",
        "cronjob-controller",
    ];
    let mut relieved_cases = 0;
    for (kind, object) in objects {
        for controller in every_controller {
            let names = [
                (format!("{CONTROLLER_ACCOUNT_PREFIX}{controller}"), false),
                (CONTROLLER_MANAGER.to_string(), true),
            ];
            for (name, manager) in &names {
                for op in [Operation::Create, Operation::Update] {
                    // An UPDATE that adds a finding (the old object was compliant).
                    let old = pod(json!({}), app(GOOD), json!(null));
                    let old = (op == Operation::Update).then_some(&old);
                    let expected = match (kind, op) {
                        (WorkloadKind::Pod, Operation::Create) => {
                            *manager
                                || [
                                    "replicaset-controller",
                                    "replication-controller",
                                    "statefulset-controller",
                                    "daemon-set-controller",
                                    "job-controller",
                                ]
                                .contains(&controller)
                        }
                        (WorkloadKind::ReplicaSet, _) => {
                            *manager || controller == "deployment-controller"
                        }
                        (WorkloadKind::Job, Operation::Create) => {
                            *manager || controller == "cronjob-controller"
                        }
                        _ => false,
                    };
                    for mode in [Mode::Enforce, Mode::Warn, Mode::Audit] {
                        let a = run(op, None, user(name), object, old, mode);
                        let case = format!("{kind:?} {op:?} by {name} in {mode:?}");
                        assert!(a.allowed || !expected, "{case}: {a:?}");
                        assert_eq!(
                            a.allowed,
                            expected || mode != Mode::Enforce,
                            "{case}: {a:?}"
                        );
                        let want = if expected {
                            vec![Relief::Controller]
                        } else if mode == Mode::Enforce {
                            vec![]
                        } else {
                            vec![Relief::Mode]
                        };
                        assert_eq!(a.relieved, want, "{case}");
                        // Relieved, not hidden: warn mode still tells, audit still records.
                        assert_eq!(a.audit.len(), 1, "{case}");
                        relieved_cases += usize::from(expected && mode == Mode::Enforce);
                    }
                }
            }
        }
    }
    // Pods: 5 controllers + the manager for each of 7 names; ReplicaSets: both operations;
    // Jobs: CREATE only.
    assert_eq!(relieved_cases, (5 + 7) + 2 * (1 + 7) + (1 + 7));
}

#[test]
fn controller_identities_are_exact() {
    let bad = pod(json!({}), app(BAD), json!(null));
    for impostor in [
        // Another namespace's account of the same name, a prefix, a suffix, a user.
        "system:serviceaccount:shop:replicaset-controller",
        "system:serviceaccount:kube-system:replicaset-controller-x",
        "system:serviceaccount:kube-system:",
        "system:kube-controller-manager:x",
        "replicaset-controller",
    ] {
        assert!(
            !create(user(impostor), &bad, Mode::Enforce).allowed,
            "{impostor}"
        );
    }
    // `kubectl debug` as a controller identity is judged as anyone's.
    let with_debug = pod(json!({}), json!([]), app(BAD));
    let without = pod(json!({}), json!([]), json!(null));
    let a = run(
        Operation::Update,
        Some("ephemeralcontainers"),
        user(CONTROLLER_MANAGER),
        &with_debug,
        Some(&without),
        Mode::Enforce,
    );
    assert!(!a.allowed);
    // The chart's table and the decision agree.
    for m in CONTROLLER_MADE {
        for name in m.usernames() {
            for op in m.operations {
                assert!(controller_made(m.kind, *op, None, &name), "{name}");
            }
        }
    }
}

#[test]
fn exemptions_and_their_authorship() {
    let exempt = json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "INC-42"});
    let bad = pod(exempt.clone(), app(BAD), json!(null));
    let masters = ["system:masters".to_string()];
    let admin = User {
        username: "root",
        groups: &masters,
    };
    let a = create(admin, &bad, Mode::Enforce);
    assert!(a.allowed);
    assert!(a.exempted);
    assert_eq!(a.relieved, vec![Relief::Exempt]);
    assert!(
        a.warnings.iter().any(|w| w.contains("INC-42")),
        "{:?}",
        a.warnings
    );

    // An application team cannot exempt itself.
    let a = create(user("alice"), &bad, Mode::Enforce);
    assert!(!a.allowed);
    assert!(
        a.message
            .is_some_and(|m| m.contains("alice may not add or change verifyfull.dev/exempt"))
    );
    // In warn mode it is a warning.
    assert!(create(user("alice"), &bad, Mode::Warn).allowed);
    // Keeping an exemption someone else added is fine; changing it is not.
    assert!(
        run(
            Operation::Update,
            None,
            user("alice"),
            &bad,
            Some(&bad),
            Mode::Enforce
        )
        .allowed
    );
    let changed = pod(
        json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "mine now"}),
        app(BAD),
        json!(null),
    );
    assert!(
        !run(
            Operation::Update,
            None,
            user("alice"),
            &changed,
            Some(&bad),
            Mode::Enforce
        )
        .allowed
    );
    // A controller creating Pods from an admitted template is not re-checked.
    let rs = "system:serviceaccount:kube-system:replicaset-controller";
    assert!(create(user(rs), &bad, Mode::Enforce).allowed);
}

#[test]
fn ephemeral_containers_judge_only_the_new_ones() {
    let debug =
        |url: &str| json!([{"name": "debug", "env": [{"name": "DATABASE_URL", "value": url}]}]);
    let kubectl_debug = |new: &Workload, old: &Workload| {
        let sub = Some("ephemeralcontainers");
        run(
            Operation::Update,
            sub,
            user("alice"),
            new,
            Some(old),
            Mode::Enforce,
        )
    };
    // The main container already violates; it does not count for `kubectl debug`.
    let old = pod(json!({}), app(BAD), json!(null));
    let a = kubectl_debug(&pod(json!({}), app(BAD), debug(GOOD)), &old);
    assert!(a.allowed && a.warnings.is_empty(), "{a:?}");
    let new = pod(json!({}), app(GOOD), debug(BAD));
    assert!(!kubectl_debug(&new, &old).allowed);
    // One that was there before is not judged again.
    assert!(kubectl_debug(&new, &new).allowed);
}

#[test]
fn namespace_mode_label() {
    let ns = |mode: Option<&str>| Meta {
        name: Some("shop".into()),
        labels: mode.map(|m| [("verifyfull.dev/mode".to_string(), m.to_string())].into()),
        ..Meta::default()
    };
    let admins = Subjects {
        users: vec!["root".into()],
        groups: vec!["platform".into()],
    };
    let enforce = ns(Some("enforce"));
    assert_eq!(
        namespace_mode_change(Some(&enforce), &enforce, &user("alice"), &admins),
        None
    );
    let off = ns(Some("off"));
    assert!(namespace_mode_change(Some(&enforce), &off, &user("alice"), &admins).is_some());
    assert!(namespace_mode_change(None, &off, &user("alice"), &admins).is_some());
    assert_eq!(
        namespace_mode_change(Some(&enforce), &off, &user("root"), &admins),
        None
    );
    let platform = ["platform".to_string()];
    let member = User {
        username: "bob",
        groups: &platform,
    };
    assert_eq!(
        namespace_mode_change(Some(&enforce), &ns(None), &member, &admins),
        None
    );
}
