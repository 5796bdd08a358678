//! The tenant's workload role: built from `spec.access`, kept in shape, removed when no longer
//! wanted.

use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::info;

use super::refusal::Refusal;
use super::report::{Report, drift_corrected};
use super::storage::Principals;
use crate::api::{AccessSpec, AccessStatus, TenantStorage};
use crate::cloud::CloudError;
use crate::controllers::role_snapshot::Seen;
use crate::controllers::toolkit::publish;
use crate::controllers::{Context, Error};
use crate::plan::access::{
    DesiredRole, IRSA_ANNOTATION, ObservedRole, RoleChange, RoleName, irsa_trust_policy,
    managed_access_policy, role_changes,
};
use crate::plan::principal::principal_patterns;
use crate::plan::{self, Desired, Ownership, PolicyDocument, TenantIdentity, naming};

/// The tenant role `access` asks for, with the given permissions, and the role as it is now
/// (read from IAM when `fresh`: a changed spec or a recheck; else possibly from the last sweep). A refusal
/// when it cannot be built, or when its name is held by a role that is not this tenant's
/// (checked before the role is named in any bucket policy).
#[allow(clippy::too_many_arguments)]
pub(super) async fn wanted_role(
    ctx: &Context,
    id: &TenantIdentity,
    partition: &str,
    tags: &std::collections::BTreeMap<String, String>,
    access: &AccessSpec,
    inline_policy: Option<PolicyDocument>,
    permissions_boundary: Option<String>,
    fresh: bool,
) -> Result<Result<(DesiredRole, Option<ObservedRole>), Refusal>, Error> {
    // The flag's parser accepts only provider ARNs, so an issuer is always there.
    let provider = ctx.settings.access.oidc.as_ref();
    let Some((oidc, issuer)) = provider.and_then(|o| Some((o, o.issuer()?))) else {
        return Ok(Err(Refusal::OidcProviderNotConfigured));
    };
    let name = RoleName::of(partition, &ctx.settings.access.account_id, id);
    let role = DesiredRole {
        description: format!(
            "tenant-storage-operator: workloads of TenantStorage {}/{}",
            id.namespace, id.name
        ),
        trust_policy: irsa_trust_policy(oidc, issuer, &id.namespace, &access.service_accounts),
        tags: tags.clone(),
        inline_policy,
        permissions_boundary,
        name: name.name,
        path: name.path,
        arn: name.arn,
    };
    Ok(observe(ctx, id, &role, fresh)
        .await?
        .map(|seen| (role, seen)))
}

/// The role as it is now (or as the last sweep saw it, if in shape there and not `fresh`); a
/// refusal if its name is held by a role that is not this tenant's.
async fn observe(
    ctx: &Context,
    id: &TenantIdentity,
    role: &DesiredRole,
    fresh: bool,
) -> Result<Result<Option<ObservedRole>, Refusal>, Error> {
    let iam = ctx.cloud.iam();
    let sweep = |path: String| async move { iam.roles_under(&path).await };
    let swept = if fresh {
        Seen::Unknown
    } else {
        ctx.roles.role(&role.name, sweep).await
    };
    let in_shape = role.in_shape();
    let observed = match swept {
        Seen::Swept(Some(digest)) if digest == in_shape.digest() => Some(in_shape),
        _ => iam.observe_role(&role.name).await?,
    };
    if let Some(seen) = &observed
        && let Ownership::Foreign(why) = plan::ownership(&seen.tags, id, false)
    {
        return Ok(Err(Refusal::RoleConflict {
            role: role.arn.clone(),
            why,
        }));
    }
    Ok(Ok(observed))
}

/// Principal patterns that may reach the tenant's bucket: the operator's own and the admins',
/// plus the tenant role's.
pub(super) fn allowed_principals(ctx: &Context, role: Option<&DesiredRole>) -> Vec<String> {
    let mut allowed = ctx.settings.access.allowed_principals.clone();
    if let Some(role) = role {
        allowed.extend(principal_patterns(&role.arn));
    }
    allowed
}

/// A failed role change that the user must fix, or an error to retry.
fn refusal_for(role: &DesiredRole, change: &RoleChange, e: &CloudError) -> Option<Refusal> {
    let boundary_change = matches!(change, RoleChange::Create | RoleChange::SetBoundary(_));
    match &role.permissions_boundary {
        Some(boundary) if boundary_change && e.code() == "NoSuchEntity" => {
            Some(Refusal::PermissionsBoundaryNotFound {
                boundary: boundary.clone(),
                error: e.to_string(),
            })
        }
        _ => None,
    }
}

/// Brings the tenant role to `role` (or removes a role no longer wanted) and records it in
/// status. `observed` comes from [`observe`].
#[allow(clippy::too_many_arguments)]
pub(super) async fn reconcile_role(
    ctx: &Context,
    ts: &TenantStorage,
    report: &mut Report<'_>,
    api: &Api<TenantStorage>,
    id: &TenantIdentity,
    role: Option<&DesiredRole>,
    observed: Option<ObservedRole>,
    access: Option<&AccessSpec>,
) -> Result<Option<Refusal>, Error> {
    let iam = ctx.cloud.iam();
    let (Some(role), Some(access)) = (role, access) else {
        if let Some(previous) = report.status.access.take() {
            let name = naming::role_name(&id.cluster_id, &id.namespace, &id.name);
            if remove_role(ctx, id, &name).await? {
                let note = format!(
                    "spec.access removed: deleted role {}; no workload can reach the data through it any more",
                    previous.role_arn
                );
                publish(ctx, ts, EventType::Normal, "RoleDeleted", "Delete", note).await;
            }
        }
        return Ok(None);
    };
    let previous = report.status.access.clone();
    let applied = AccessStatus {
        role_arn: role.arn.clone(),
        service_account_annotation: format!("{IRSA_ANNOTATION}: {}", role.arn),
        service_accounts: access.service_accounts.clone(),
        level: access.level,
    };
    let mut changes = role_changes(role, observed.as_ref());
    let mut created = false;
    if changes.contains(&RoleChange::Create) && previous.is_none() {
        // Write-ahead: recorded before the role exists, so a crash after CreateRole still
        // leaves the role known to the cleanup.
        report.status.access = Some(applied.clone());
        report.save(api).await?;
    }
    if !changes.is_empty() {
        ctx.roles.changing(&role.name);
    }
    let mut i = 0;
    while i < changes.len() {
        match iam.apply_role_change(role, &changes[i]).await {
            Ok(()) => created |= changes[i] == RoleChange::Create,
            // Created meanwhile (or IAM not yet showing our own creation): look again, and
            // use it only if it is ours.
            Err(e) if changes[i] == RoleChange::Create && e.code() == "EntityAlreadyExists" => {
                let seen = match observe(ctx, id, role, true).await? {
                    Ok(seen) => seen,
                    Err(refusal) => return Ok(Some(refusal)),
                };
                changes = role_changes(role, seen.as_ref())
                    .into_iter()
                    .filter(|c| *c != RoleChange::Create)
                    .collect();
                i = 0;
                continue;
            }
            Err(e) => {
                return match refusal_for(role, &changes[i], &e) {
                    Some(refusal) => Ok(Some(refusal)),
                    None => Err(e.into()),
                };
            }
        }
        i += 1;
    }
    if !changes.is_empty() {
        ctx.roles.changing(&role.name);
    }
    report.status.access = Some(applied);
    let same = |a: &[String], b: &[String]| {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        b.sort();
        a == b
    };
    if created {
        info!(role = %role.arn, "tenant role created");
        let note = format!(
            "created role {} for service accounts {} ({:?}); annotate them with {IRSA_ANNOTATION}: {}",
            role.arn,
            access.service_accounts.join(", "),
            access.level,
            role.arn
        );
        publish(ctx, ts, EventType::Normal, "RoleCreated", "Create", note).await;
    } else if let Some(previous) = previous
        .filter(|p| !same(&p.service_accounts, &access.service_accounts) || p.level != access.level)
    {
        let note = format!(
            "role {}: service accounts {} ({:?}), were {} ({:?})",
            role.arn,
            access.service_accounts.join(", "),
            access.level,
            previous.service_accounts.join(", "),
            previous.level
        );
        publish(ctx, ts, EventType::Normal, "AccessChanged", "Update", note).await;
    } else if !changes.is_empty() {
        let restored: Vec<&str> = changes.iter().map(RoleChange::setting).collect();
        drift_corrected(ctx, ts, &restored, &format!("role {}", role.arn)).await;
    }
    Ok(None)
}

/// Deletes the tenant's role if it exists and is ours; true if it was deleted.
pub(super) async fn remove_role(
    ctx: &Context,
    id: &TenantIdentity,
    name: &str,
) -> Result<bool, Error> {
    let iam = ctx.cloud.iam();
    match iam.observe_role(name).await? {
        Some(seen) if plan::ownership(&seen.tags, id, false) == Ownership::Ours => {
            ctx.roles.changing(name);
            Ok(iam.delete_role(name, &seen).await?)
        }
        _ => Ok(false),
    }
}

/// The managed tenant's role, decided once its key is known: the role (if `spec.access` asks
/// for one) may reach the bucket, and is kept for [`reconcile_role`] after the bucket.
pub(super) struct ManagedRole<'a> {
    pub ctx: &'a Context,
    pub id: &'a TenantIdentity,
    pub access: Option<&'a AccessSpec>,
    pub permissions_boundary: Option<String>,
    pub fresh: bool,
    /// The role wanted and as observed, once decided.
    pub decided: Option<(DesiredRole, Option<ObservedRole>)>,
}

impl Principals for ManagedRole<'_> {
    async fn allowed(
        &mut self,
        desired: &Desired,
        key_arn: &str,
    ) -> Result<Result<Vec<String>, Refusal>, Error> {
        if let Some(spec) = self.access {
            let permissions =
                managed_access_policy(spec.level, &desired.bucket_arn(), key_arn, &desired.region);
            let wanted = wanted_role(
                self.ctx,
                self.id,
                desired.partition,
                &desired.tags,
                spec,
                Some(permissions),
                self.permissions_boundary.clone(),
                self.fresh,
            )
            .await?;
            match wanted {
                Ok(decided) => self.decided = Some(decided),
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        let role = self.decided.as_ref().map(|(role, _)| role);
        Ok(Ok(allowed_principals(self.ctx, role)))
    }
}
