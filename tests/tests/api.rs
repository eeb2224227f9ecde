//! The stand-in behaves like the API server for what verifyfull uses: checked with `kube`
//! and `kubectl` over HTTPS.
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::harness::Kubectl;
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use std::time::Duration;

async fn standin() -> StandIn {
    StandIn::start(Options::default())
        .await
        .expect("stand-in starts")
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_selectors_paging_and_errors() {
    let s = standin().await;
    let client = s.client(&User::admin()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        let labels = if i % 2 == 0 {
            json!({"even": "yes"})
        } else {
            json!({})
        };
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), labels))
            .await
            .unwrap();
    }
    let got = cms.get("c1").await.unwrap();
    assert!(got.metadata.uid.is_some() && got.metadata.resource_version.is_some());
    assert_eq!(got.metadata.generation, Some(1));
    let even = cms
        .list(&ListParams::default().labels("even=yes"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 3);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    // Paging: 2 + 2 + 1, continue tokens in between.
    let p1 = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let c = p1.metadata.continue_.clone().expect("continue");
    let p2 = cms
        .list(&ListParams::default().limit(2).continue_token(&c))
        .await
        .unwrap();
    let p3 = cms
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(p2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.metadata.continue_.is_none());
    // Errors as the API server words them.
    let e = status_of(cms.get("nope").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );
    let e = status_of(
        cms.create(&PostParams::default(), &cm("c0", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    let mut stale = got.clone();
    stale.data = Some([("k".to_string(), "new".to_string())].into());
    cms.replace("c1", &PostParams::default(), &stale)
        .await
        .unwrap();
    let e = status_of(
        cms.replace("c1", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
    let other: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    let e = status_of(
        other
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn patches_dry_run_finalizers_and_generation() {
    let s = standin().await;
    let client = s.client(&User::admin()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("p", json!({})))
        .await
        .unwrap();
    let merged = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.unwrap()["m"], "1");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}])).unwrap();
    let patched = cms
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["j"], "2");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/j", "value": "9"}])).unwrap();
    assert_eq!(
        status_of(
            cms.patch("p", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    // Dry run: the answer shows the change, the store does not.
    let dry = cms
        .patch(
            "p",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"data": {"d": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["d"], "x");
    assert!(!cms.get("p").await.unwrap().data.unwrap().contains_key("d"));
    // Finalizers hold deletion; removing the last one completes it.
    cms.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["verifyfull.dev/test"]}})),
    )
    .await
    .unwrap();
    cms.delete("p", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("p").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    cms.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status_of(cms.get("p").await.unwrap_err()).code, 404);
    // generation counts spec changes only; the status subresource leaves it alone.
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(deployment("g", 0)).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let d = deploys
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let d = deploys
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0, "paused": true}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    let d = deploys
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (d.metadata.generation, d.status.unwrap().replicas),
        (Some(2), Some(7))
    );
    let d = deploys
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.status.unwrap().replicas,
        Some(7),
        "status is not written through the main resource"
    );
}

fn deployment(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "app", "image": "app:1",
                                                          "env": [{"name": "A", "value": "1"}]}]}}}})
}

#[tokio::test]
async fn server_side_apply_owns_fields_per_manager() {
    // No controllers: their status writes would move the resource version.
    let s = StandIn::start(Options {
        controllers: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let client = s.client(&User::admin()).await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let user = PatchParams::apply("user");
    deploys
        .patch("d", &user, &Patch::Apply(deployment("d", 1)))
        .await
        .unwrap();
    // A second manager adds a variable and a volume to the same container: merged by name.
    let injector = PatchParams::apply("injector");
    let inject = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "app", "env": [{"name": "PGSSLROOTCERT", "value": "/ca/ca.crt"}],
                            "volumeMounts": [{"name": "ca", "mountPath": "/ca", "readOnly": true}]}],
            "volumes": [{"name": "ca", "configMap": {"name": "ca"}}]}}}});
    let d = deploys
        .patch("d", &injector, &Patch::Apply(inject.clone()))
        .await
        .unwrap();
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let env: Vec<&str> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["A", "PGSSLROOTCERT"]);
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter(|m| m.subresource.is_none())
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["user", "injector"]);
    // Re-applying the same configuration is not a write.
    let again = deploys
        .patch("d", &injector, &Patch::Apply(inject))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);
    // A conflicting value: 409 with causes naming the field and its owner.
    let mut bump = deployment("d", 3);
    bump["spec"]["template"] = json!(null);
    bump["spec"].as_object_mut().unwrap().remove("template");
    let e = status_of(
        deploys
            .patch("d", &injector, &Patch::Apply(bump.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"user\" using apps/v1: .spec.replicas"
    );
    let cause = &e.details.unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("FieldManagerConflict", ".spec.replicas")
    );
    // The injector withdraws: exactly its fields go.
    let empty = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    let d = deploys
        .patch("d", &injector, &Patch::Apply(empty))
        .await
        .unwrap();
    let spec = d.spec.unwrap().template.spec.unwrap();
    assert!(spec.volumes.is_none());
    let c = &spec.containers[0];
    assert_eq!(c.env.as_ref().unwrap().len(), 1);
    assert!(c.volume_mounts.is_none());
    assert_eq!(c.image.as_deref(), Some("app:1"));
}

#[tokio::test]
async fn watch_replays_bookmarks_and_expires() {
    let s = StandIn::start(Options {
        log_cap: 5,
        bookmark_every: Duration::from_millis(100),
        ..Options::default()
    })
    .await
    .unwrap();
    let client = s.client(&User::admin()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &cm("w0", json!({})))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("w1", json!({"pick": "me"})))
        .await
        .unwrap();
    let stream = cms
        .watch(&WatchParams::default().labels("pick=me"), &rv0)
        .await
        .unwrap();
    let mut stream = stream.boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected w1 ADDED, got {other:?}"),
    }
    // Leaving the selector is a DELETED for this watch.
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"pick": "no"}}})),
    )
    .await
    .unwrap();
    let mut saw_delete = false;
    let mut saw_bookmark = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), stream.try_next())
        .await
        .unwrap()
    {
        match ev {
            WatchEvent::Deleted(_) => saw_delete = true,
            WatchEvent::Bookmark(_) => saw_bookmark = true,
            _ => {}
        }
        if saw_delete && saw_bookmark {
            break;
        }
    }
    assert!(saw_delete && saw_bookmark);
    // Past the retained log: 410 Gone.
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("x{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut old = cms
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_get_create_apply_delete() {
    let s = standin().await;
    let kubectl = Kubectl::new(&s.kubeconfig(&User::admin()).unwrap());
    // `kubectl create namespace` sends protobuf, which the stand-in does not read.
    let ns = kubectl
        .run(&["create", "namespace", "team"], None)
        .await
        .unwrap();
    assert!(
        !ns.ok && ns.stderr.contains("reads JSON and YAML only"),
        "{}",
        ns.stderr
    );
    let ns = kubectl
        .run(
            &["create", "--validate=false", "-f", "-"],
            Some(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}"#),
        )
        .await
        .unwrap();
    assert!(ns.ok, "{}", ns.stderr);
    let out = kubectl.apply("team", &deployment("web", 0)).await.unwrap();
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("deployment.apps/web serverside-applied"),
        "{}",
        out.stdout
    );
    let out = kubectl
        .run(&["get", "deployments", "-n", "team", "-o", "name"], None)
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "deployment.apps/web", "{}", out.stderr);
    let out = kubectl
        .run(
            &[
                "get",
                "deploy",
                "web",
                "-n",
                "team",
                "-o",
                "jsonpath={.metadata.managedFields[0].manager}",
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "kubectl", "{}", out.stderr);
    let out = kubectl
        .run(
            &["create", "--validate=false", "-n", "team", "-f", "-"],
            Some(
                &serde_json::to_string(
                    &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl
        .run(&["delete", "-n", "team", "configmap", "c"], None)
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl
        .run(&["get", "-n", "team", "configmap", "c"], None)
        .await
        .unwrap();
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);
    // Namespace deletion takes its contents along.
    let out = kubectl
        .run(&["delete", "namespace", "team"], None)
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
    let client = s.client(&User::admin()).await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    assert!(nss.get_opt("team").await.unwrap().is_none());
    let pods: Api<Pod> = Api::all(client);
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn kube_runtime_watchers_list_watch_and_stream() {
    use kube::runtime::watcher::{self, Event};
    let s = standin().await;
    let client = s.client(&User::admin()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .unwrap();
    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut w = watcher::watcher(cms.clone(), config).boxed();
        let mut initial = Vec::new();
        loop {
            match w.try_next().await.unwrap().unwrap() {
                Event::InitApply(c) => initial.push(c.metadata.name.unwrap()),
                Event::InitDone => break,
                _ => {}
            }
        }
        assert!(initial.contains(&"before".to_string()), "{initial:?}");
        let name = format!("after-{}", initial.len());
        cms.create(&PostParams::default(), &cm(&name, json!({})))
            .await
            .unwrap();
        loop {
            if let Event::Apply(c) = w.try_next().await.unwrap().unwrap() {
                assert_eq!(c.metadata.name.as_deref(), Some(name.as_str()));
                break;
            }
        }
    }
    // Leases, as leader election uses them: create, then a conditional update.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "default");
    let lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let mut l = leases.create(&PostParams::default(), &lease).await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &l)
        .await
        .unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("c".into());
    assert_eq!(
        status_of(
            leases
                .replace("leader", &PostParams::default(), &l)
                .await
                .unwrap_err()
        )
        .code,
        409
    );
}
