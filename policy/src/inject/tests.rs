use super::*;
use crate::crd::{Containers, InjectMode, Injection};
use crate::{Context, NoSources, Settings, judge};
use serde_json::json;

fn spec(v: Value) -> PodSpec {
    serde_json::from_value(v).unwrap()
}

fn container(name: &str, env: Value) -> Value {
    json!({"name": name, "image": "x", "env": env})
}

fn planned(spec: &PodSpec, inj: &Injection) -> Plan {
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    let meta = crate::Meta::default();
    let view = crate::PodView {
        kind: crate::WorkloadKind::Deployment,
        object: &meta,
        pod: &meta,
        spec,
    };
    let report = judge(view, &ctx);
    plan(spec, &report, &want(inj))
}

fn want(inj: &Injection) -> Want<'_> {
    Want {
        injection: inj,
        config_map: "verifyfull-ca-corp",
        restart_hash: None,
    }
}

fn fix() -> Injection {
    Injection {
        mode: InjectMode::Fix,
        ..Injection::default()
    }
}

const PATH: &str = "/etc/verifyfull/ca/ca.crt";

#[test]
fn clients_get_mount_and_variable_others_nothing() {
    let s = spec(json!({
        "initContainers": [container("migrate", json!([{"name": "DATABASE_URL", "value": "postgresql://db.example.net/app?sslmode=verify-full"}]))],
        "containers": [container("app", json!([{"name": "PGHOST", "value": "db.example.net"}])),
                       container("sidecar", json!([{"name": "LOG", "value": "1"}]))]}));
    let p = planned(&s, &Injection::default());
    assert_eq!(
        p.containers,
        vec![
            ContainerPlan {
                name: "app".into(),
                init: false,
                env: vec![("PGSSLROOTCERT".into(), PATH.into())]
            },
            ContainerPlan {
                name: "migrate".into(),
                init: true,
                env: vec![("PGSSLROOTCERT".into(), PATH.into())]
            },
        ]
    );
    let all = planned(
        &s,
        &Injection {
            containers: Containers::All,
            ..Injection::default()
        },
    );
    assert_eq!(all.containers.len(), 3);
}

#[test]
fn fix_mode_sets_sslmode_only_where_it_decides_every_libpq_target() {
    let s = spec(json!({"containers": [
        container("env-only", json!([{"name": "PGHOST", "value": "db.example.net"}])),
        container("own-mode", json!([{"name": "DATABASE_URL", "value": "postgresql://db.example.net/app?sslmode=require"}])),
        container("loopback", json!([{"name": "PGHOST", "value": "127.0.0.1"}, {"name": "PGPORT", "value": "6432"}])),
        container("remote-and-socket", json!([{"name": "A_URL", "value": "postgresql://db.example.net/a"},
                                               {"name": "B_URL", "value": "postgresql:///b?host=/var/run/postgresql"}])),
        container("jdbc", json!([{"name": "JDBC_URL", "value": "jdbc:postgresql://db.example.net/app"}])),
    ]}));
    let mut inj = fix();
    inj.containers = Containers::All;
    let p = planned(&s, &inj);
    let with_mode: Vec<&str> = p
        .containers
        .iter()
        .filter(|c| c.env.iter().any(|(n, _)| n == SSLMODE))
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(with_mode, ["env-only"]);
}

#[test]
fn user_settings_are_conflicts_not_overwritten() {
    let s = spec(json!({"containers": [
        container("own-root", json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLROOTCERT", "value": "/mine/ca.pem"}])),
        container("own-mode", json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "require"}])),
        container("same", json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLROOTCERT", "value": PATH}])),
    ]}));
    let p = planned(&s, &fix());
    assert_eq!(
        p.conflicts,
        vec![
            Conflict::Variable {
                container: "own-root".into(),
                variable: "PGSSLROOTCERT".into()
            },
            Conflict::Variable {
                container: "own-mode".into(),
                variable: "PGSSLMODE".into()
            },
        ]
    );
    // The mount still goes in; the user's values stay; an equal value is not a conflict.
    assert_eq!(
        p.containers[0].env,
        vec![("PGSSLMODE".into(), "verify-full".into())]
    );
    assert_eq!(
        p.containers[1].env,
        vec![("PGSSLROOTCERT".into(), PATH.into())]
    );
    assert_eq!(p.containers[2].env.len(), 2);
}

#[test]
fn volume_clash_and_duplicate_env_skip_the_workload() {
    let app = container(
        "app",
        json!([{"name": "PGHOST", "value": "db.example.net"}]),
    );
    let clash =
        spec(json!({"containers": [app], "volumes": [{"name": "verifyfull-ca", "emptyDir": {}}]}));
    let p = planned(&clash, &Injection::default());
    assert_eq!(p.skip, Some(Skip::Conflict(Conflict::Volume)));
    assert!(p.is_empty());
    assert_eq!(p.apply_spec(&want(&Injection::default())), json!({}));
    let dup = spec(
        json!({"containers": [container("app", json!([{"name": "PGHOST", "value": "a.example.net"}, {"name": "PGHOST", "value": "b.example.net"}]))]}),
    );
    let p = planned(&dup, &Injection::default());
    assert_eq!(
        p.skip,
        Some(Skip::DuplicateEnv {
            container: "app".into(),
            variable: "PGHOST".into()
        })
    );
    let mut mounted = container(
        "app",
        json!([{"name": "PGHOST", "value": "db.example.net"}]),
    );
    mounted["volumeMounts"] = json!([{"name": "certs", "mountPath": "/etc/verifyfull/ca/"}]);
    let p = planned(
        &spec(json!({"containers": [mounted]})),
        &Injection::default(),
    );
    assert_eq!(
        p.conflicts,
        vec![Conflict::MountPath {
            container: "app".into()
        }]
    );
    assert!(p.containers.is_empty());
}

#[test]
fn apply_configuration_and_json_patch_agree_and_repeat_to_nothing() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "initContainers": [{"name": "migrate", "image": "x", "env": [{"name": "PGHOST", "value": "db.example.net"}]}],
        "containers": [{"name": "app", "image": "x", "env": [{"name": "PGHOST", "value": "db.example.net"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}]}});
    let s = spec(pod["spec"].clone());
    let inj = fix();
    let p = planned(&s, &inj);
    assert_eq!(
        p.apply_spec(&want(&inj)),
        json!({
            "volumes": [{"name": "verifyfull-ca", "configMap": {"name": "verifyfull-ca-corp"}}],
            "containers": [{"name": "app", "volumeMounts": [{"name": "verifyfull-ca", "mountPath": "/etc/verifyfull/ca", "readOnly": true}],
                            "env": [{"name": "PGSSLROOTCERT", "value": PATH}, {"name": "PGSSLMODE", "value": "verify-full"}]}],
            "initContainers": [{"name": "migrate", "volumeMounts": [{"name": "verifyfull-ca", "mountPath": "/etc/verifyfull/ca", "readOnly": true}],
                                "env": [{"name": "PGSSLROOTCERT", "value": PATH}, {"name": "PGSSLMODE", "value": "verify-full"}]}],
        })
    );
    let ops = p.json_patch(&pod, &want(&inj));
    let mut patched = pod.clone();
    let ops_typed: json_patch_ops::Ops = serde_json::from_value(Value::Array(ops)).unwrap();
    json_patch_ops::apply(&mut patched, &ops_typed);
    let c = &patched["spec"]["containers"][0];
    assert_eq!(c["volumeMounts"][1]["name"], VOLUME);
    assert_eq!(c["env"][1], json!({"name": "PGSSLROOTCERT", "value": PATH}));
    assert_eq!(
        patched["spec"]["initContainers"][0]["env"][2]["name"],
        "PGSSLMODE"
    );
    assert_eq!(
        patched["spec"]["volumes"][1]["configMap"]["name"],
        "verifyfull-ca-corp"
    );
    // Re-invoked on its own result: nothing more to add.
    let again = planned(&spec(patched["spec"].clone()), &inj);
    assert!(again.json_patch(&patched, &want(&inj)).is_empty());
}

#[test]
fn judged_as_it_will_run() {
    let s = spec(json!({"containers": [container("app", json!([
        {"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"}]))]}));
    let settings = Settings::default();
    let ctx = Context {
        settings: &settings,
        sources: &NoSources,
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    let meta = crate::Meta::default();
    let judge = |s: &PodSpec| {
        let view = crate::PodView {
            kind: crate::WorkloadKind::Deployment,
            object: &meta,
            pod: &meta,
            spec: s,
        };
        judge(view, &ctx).denied()
    };
    assert!(judge(&s), "no root certificate yet");
    let inj = Injection::default();
    let p = planned(&s, &inj);
    let mut after = s.clone();
    p.apply_to(&mut after, &want(&inj));
    assert!(!judge(&after));
}

/// A minimal JSON-patch applier for the `add` operations the plan emits (the policy crate
/// has no JSON-patch dependency; the stand-in applies real patches end to end).
mod json_patch_ops {
    use serde_json::Value;
    pub(super) type Ops = Vec<Value>;
    pub(super) fn apply(doc: &mut Value, ops: &Ops) {
        for op in ops {
            assert_eq!(op["op"], "add");
            let path = op["path"].as_str().unwrap();
            let (parent, last) = path.rsplit_once('/').unwrap();
            let target = doc.pointer_mut(parent).unwrap();
            if last == "-" {
                target.as_array_mut().unwrap().push(op["value"].clone());
            } else {
                target[last.replace("~1", "/").replace("~0", "~")] = op["value"].clone();
            }
        }
    }
}
