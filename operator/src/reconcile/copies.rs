//! A policy's CA copies in the selected namespaces, its clean-up on deletion, and its
//! finalizer.

use super::*;

/// A deleted policy: workloads drop the injection first (the policy no longer selects
/// them), then the copies go, so that a Pod never points at a CA copy that is gone; then
/// the finalizer.
///
/// The finalizer is kept by hand, not with kube-runtime's `finalizer()`: its cleanup
/// removes the finalizer as soon as the cleanup returns `Ok`, and this one must wait,
/// without an error, until every workload has dropped the injection (requeued until then).
pub(super) async fn clean_up(
    ctx: &Ctx,
    api: &Api<PostgresTLSPolicy>,
    p: &PostgresTLSPolicy,
) -> Result<Action, Error> {
    let name = p.name_any();
    let left = ctx.counts(&name).still_injected;
    if left > 0 {
        ctx.trigger_workloads();
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    delete_copies(ctx, &name, |_| true).await?;
    ctx.metrics.set_violations(&name, None);
    let rest: Vec<String> = p
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, api, p, rest).await?;
    Ok(Action::await_change())
}

/// Writes a policy's finalizers, at the resourceVersion they were computed from.
pub(super) async fn set_finalizers(
    ctx: &Ctx,
    api: &Api<PostgresTLSPolicy>,
    p: &PostgresTLSPolicy,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.resource_version()}});
    ctx.metrics.write("PostgresTLSPolicy");
    api.patch(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Finalizer {
        policy: p.name_any(),
        source,
    })?;
    Ok(())
}

/// Puts the CA copy into every selected namespace (only where missing or stale) and
/// removes copies from namespaces no longer selected. Returns the selected namespaces.
pub(super) async fn copy_ca(
    ctx: &Ctx,
    p: &PostgresTLSPolicy,
    bundle: &ca::Bundle,
) -> Result<Vec<String>, Error> {
    let copy = p.copy_name();
    let mut wanted: Vec<String> = ctx
        .namespaces
        .state()
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(|n| (n.name_any(), n.metadata.labels.clone()))
        .filter(|(n, labels)| {
            !ctx.excluded(n)
                && selector_matches(p.spec.namespace_selector.as_ref(), labels.as_ref())
        })
        .map(|(n, _)| n)
        .collect();
    wanted.sort();
    let owner = p
        .controller_owner_ref(&())
        .map(|o| vec![o])
        .unwrap_or_default();
    for ns in &wanted {
        if ctx.copy_hash(ns, &copy).as_deref() == Some(bundle.hash.as_str()) {
            continue;
        }
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": copy, "namespace": ns,
                         "labels": {MANAGED_BY.0: MANAGED_BY.1, POLICY_LABEL: p.name_any()},
                         "annotations": {HASH_ANNOTATION: bundle.hash},
                         "ownerReferences": owner},
            "data": {p.spec.injection.file_name.clone(): bundle.pem},
        });
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        ctx.metrics.write("ConfigMap");
        api.patch(
            &copy,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(|source| Error::CopyCa {
            policy: p.name_any(),
            namespace: ns.clone(),
            source,
        })?;
    }
    delete_copies(ctx, &p.name_any(), |ns| !wanted.iter().any(|w| w == ns)).await?;
    Ok(wanted)
}

pub(super) async fn delete_copies(
    ctx: &Ctx,
    policy: &str,
    doomed: impl Fn(&str) -> bool,
) -> Result<(), Error> {
    for c in ctx.copies.state() {
        let ns = c.namespace().unwrap_or_default();
        let ours = c.labels().get(POLICY_LABEL).map(String::as_str) == Some(policy);
        if ours && doomed(&ns) {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            ctx.metrics.write("ConfigMap");
            match api.delete(&c.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(Error::DeleteCopy {
                        namespace: ns,
                        copy: c.name_any(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}
