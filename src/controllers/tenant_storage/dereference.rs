//! What a tenant's reconcile reads from Kubernetes before deciding anything: its policy, its
//! namespace's labels, a running whole-tenant deletion.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::decide;
use super::refusal::Refusal;
use super::storage::Purges;
use crate::api::{DataDeletionRequest, DeletionPhase, ResidencyPolicy, TenantStorage};
use crate::controllers::{Context, Error};
use crate::plan::TenantIdentity;

/// The policy a tenant names, if it exists.
pub(super) async fn policy(
    ctx: &Context,
    ts: &TenantStorage,
) -> Result<Result<ResidencyPolicy, Refusal>, Error> {
    let policies: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
    let found = policies.get_opt(&ts.spec.policy_ref).await?;
    Ok(decide::policy(&ts.spec.policy_ref, found))
}

/// Whether the policy selects the tenant's namespace (read only if it has a selector).
pub(super) async fn namespace(
    ctx: &Context,
    policy: &ResidencyPolicy,
    namespace: &str,
) -> Result<Result<(), Refusal>, Error> {
    if policy.spec.namespace_selector.is_none() {
        return Ok(Ok(()));
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let labels = namespaces
        .get(namespace)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    Ok(decide::namespace(
        &policy.name_any(),
        &policy.spec,
        namespace,
        &labels,
    ))
}

/// The storage stage asks, as it decides the bucket policy, whether a whole-tenant purge runs;
/// what was found is kept for the status.
pub(super) struct PurgeCheck<'a> {
    pub ctx: &'a Context,
    pub id: &'a TenantIdentity,
    /// The policy refuses new writes while a whole-tenant purge runs.
    pub deny_during_purge: bool,
    /// The running request's name, once asked.
    pub running: Option<Option<String>>,
}

impl Purges for PurgeCheck<'_> {
    async fn writes_denied(&mut self) -> Result<bool, Error> {
        let running = whole_tenant_purge(self.ctx, self.id).await?;
        let denied = running.is_some() && self.deny_during_purge;
        self.running = Some(running);
        Ok(denied)
    }
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
