//! The tenant's workload role: built from `spec.access`, kept in shape, removed when no longer
//! wanted.

use kube::runtime::events::EventType;
use serde_json::Value;
use tracing::info;

use super::{Report, publish};
use crate::api::{AccessSpec, AccessStatus, TenantStorage};
use crate::controllers::{Context, Error};
use crate::plan::access::{
    DesiredRole, IRSA_ANNOTATION, RoleChange, RoleName, irsa_trust_policy, principal_patterns,
    role_changes,
};
use crate::plan::{self, Ownership, TenantIdentity, naming};

/// Why the tenant's role cannot be built; each names the setting to fix.
#[derive(Debug)]
pub(super) struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The tenant role for `access`, with the given permissions.
pub(super) fn desired_role(
    ctx: &Context,
    id: &TenantIdentity,
    partition: &str,
    tags: &std::collections::BTreeMap<String, String>,
    access: &AccessSpec,
    inline_policy: Option<Value>,
    permissions_boundary: Option<String>,
) -> Result<DesiredRole, Refusal> {
    let Some(oidc) = &ctx.settings.access.oidc else {
        return Err(Refusal {
            reason: "OidcProviderNotConfigured",
            message: "spec.access needs the cluster's IAM OIDC provider, which the operator was not given: set --oidc-provider-arn (Helm value access.oidcProviderArn), or remove spec.access".into(),
        });
    };
    let issuer = oidc.issuer().ok_or_else(|| Refusal {
        reason: "OidcProviderNotConfigured",
        message: format!(
            "--oidc-provider-arn {:?} is not an IAM OIDC provider ARN",
            oidc.arn
        ),
    })?;
    let name = RoleName::new(
        partition,
        &ctx.settings.access.account_id,
        &naming::role_path(&id.cluster_id),
        naming::role_name(&id.cluster_id, &id.namespace, &id.name),
    );
    Ok(DesiredRole {
        description: format!(
            "tenant-storage-operator: workloads of {}/{} (service accounts {})",
            id.namespace,
            id.name,
            access.service_accounts.join(", ")
        ),
        trust_policy: irsa_trust_policy(oidc, issuer, &id.namespace, &access.service_accounts),
        tags: tags.clone(),
        inline_policy,
        permissions_boundary,
        name: name.name,
        path: name.path,
        arn: name.arn,
    })
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

/// Brings the tenant role to `role` (or removes a role no longer wanted) and records it in
/// status. Returns a refusal when the role's name is taken by something that is not ours.
pub(super) async fn reconcile_role(
    ctx: &Context,
    ts: &TenantStorage,
    report: &mut Report<'_>,
    id: &TenantIdentity,
    role: Option<&DesiredRole>,
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
    let observed = iam.observe_role(&role.name).await?;
    if let Some(seen) = &observed
        && let Ownership::Foreign(why) = plan::ownership(&seen.tags, id, false)
    {
        return Ok(Some(Refusal {
            reason: "RoleConflict",
            message: format!(
                "IAM role {} already exists and is not this tenant's: {why}. The operator does not modify it; delete it or rename this TenantStorage",
                role.arn
            ),
        }));
    }
    let changes = role_changes(role, observed.as_ref());
    for change in &changes {
        iam.apply_role_change(role, change).await?;
    }
    let previous = report.status.access.clone();
    report.status.access = Some(AccessStatus {
        role_arn: role.arn.clone(),
        service_account_annotation: format!("{IRSA_ANNOTATION}: {}", role.arn),
        service_accounts: access.service_accounts.clone(),
        level: access.level,
    });
    if changes.contains(&RoleChange::Create) {
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
        .filter(|p| p.service_accounts != access.service_accounts || p.level != access.level)
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
        let note = format!("restored {} of role {}", restored.join(", "), role.arn);
        publish(
            ctx,
            ts,
            EventType::Warning,
            "DriftCorrected",
            "Restore",
            note,
        )
        .await;
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
    match iam.role_tags(name).await? {
        Some(tags) if plan::ownership(&tags, id, false) == Ownership::Ours => {
            Ok(iam.delete_role(name).await?)
        }
        _ => Ok(false),
    }
}
