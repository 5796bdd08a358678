//! What a tenant's reconcile reads from Kubernetes before deciding anything: its policy, its
//! namespace's labels, a running whole-tenant deletion.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::decide;
use super::refusal::Refusal;
use crate::api::{DataDeletionRequest, DeletionPhase, ResidencyPolicy, TenantStorage};
use crate::controllers::{Context, Error};
use crate::plan::TenantIdentity;

/// The policy a tenant names, if it exists and selects the tenant's namespace.
pub(super) async fn policy(
    ctx: &Context,
    ts: &TenantStorage,
    namespace: &str,
) -> Result<Result<ResidencyPolicy, Refusal>, Error> {
    let policies: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
    let found = policies.get_opt(&ts.spec.policy_ref).await?;
    let policy = match decide::policy(&ts.spec.policy_ref, found) {
        Ok(policy) => policy,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if policy.spec.namespace_selector.is_some() {
        let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
        let labels = namespaces
            .get(namespace)
            .await?
            .metadata
            .labels
            .unwrap_or_default();
        if let Err(refusal) =
            decide::namespace(&policy.name_any(), &policy.spec, namespace, &labels)
        {
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(policy))
}

/// The name of a whole-tenant purge request that is accepted and not finished, if any.
pub(super) async fn whole_tenant_purge(
    ctx: &Context,
    id: &TenantIdentity,
) -> Result<Option<String>, Error> {
    let requests: Api<DataDeletionRequest> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let running = requests
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|r| purges_whole_tenant(r, id));
    Ok(running.map(|r| r.name_any()))
}

fn purges_whole_tenant(r: &DataDeletionRequest, id: &TenantIdentity) -> bool {
    r.spec.tenant_storage_ref.name == id.name
        && r.spec
            .tenant_storage_ref
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == id.namespace)
        && r.spec.scope.is_whole_tenant()
        && r.spec.method.purges()
        && !r.spec.dry_run
        && r.metadata.deletion_timestamp.is_none()
        && matches!(
            r.status.as_ref().and_then(|s| s.phase),
            None | Some(DeletionPhase::Pending | DeletionPhase::Running)
        )
}
