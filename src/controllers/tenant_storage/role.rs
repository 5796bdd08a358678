//! The stage that owns the tenant's workload role, over the `Roles` port: the role `spec.access`
//! asks for (its name checked before any bucket policy names it), brought to shape with a
//! write-ahead mark, removed when no longer wanted. What happened is returned; the driver tells
//! the user.

use std::collections::BTreeMap;

use super::record::{Ledger, Mark, Record};
use super::refusal::Refusal;
use crate::api::{AccessSpec, AccessStatus};
use crate::cloud::CloudError;
use crate::cloud::port::Roles;
use crate::controllers::AccessSettings;
use crate::controllers::Error;
use crate::controllers::role_snapshot::{RoleSnapshot, Seen};
use crate::plan::access::{
    DesiredRole, IRSA_ANNOTATION, ObservedRole, RoleChange, RoleName, irsa_trust_policy,
    role_changes,
};
use crate::plan::principal::principal_patterns;
use crate::plan::{self, Ownership, PolicyDocument, TenantIdentity, naming};

/// IAM and what the operator knows of it.
pub(super) struct Iam<'a, R> {
    pub roles: &'a R,
    /// The last sweep of every tenant role.
    pub snapshot: &'a RoleSnapshot,
    pub settings: &'a AccessSettings,
}

/// The role a tenant asks for.
pub(super) struct Wanted<'a> {
    pub id: &'a TenantIdentity,
    pub partition: &'a str,
    pub tags: &'a BTreeMap<String, String>,
    pub access: &'a AccessSpec,
    pub inline_policy: Option<PolicyDocument>,
    pub permissions_boundary: Option<String>,
    /// Read IAM itself, not the sweep: a changed spec or a recheck.
    pub fresh: bool,
}

/// The role `wanted` describes and the role as it is now (read from IAM when `fresh`, else
/// possibly from the last sweep); a refusal when it cannot be built or its name is held by a
/// role that is not this tenant's.
pub(super) async fn wanted<R: Roles>(
    iam: &Iam<'_, R>,
    wanted: Wanted<'_>,
) -> Result<Result<(DesiredRole, Option<ObservedRole>), Refusal>, Error> {
    // The flag's parser accepts only provider ARNs, so an issuer is always there.
    let provider = iam.settings.oidc.as_ref();
    let Some((oidc, issuer)) = provider.and_then(|o| Some((o, o.issuer()?))) else {
        return Ok(Err(Refusal::OidcProviderNotConfigured));
    };
    let id = wanted.id;
    let name = RoleName::of(wanted.partition, &iam.settings.account_id, id);
    let accounts = &wanted.access.service_accounts;
    let role = DesiredRole {
        description: format!(
            "tenant-storage-operator: workloads of TenantStorage {}/{}",
            id.namespace, id.name
        ),
        trust_policy: irsa_trust_policy(oidc, issuer, &id.namespace, accounts),
        tags: wanted.tags.clone(),
        inline_policy: wanted.inline_policy,
        permissions_boundary: wanted.permissions_boundary,
        name: name.name,
        path: name.path,
        arn: name.arn,
    };
    let seen = observe(iam, id, &role, wanted.fresh).await?;
    Ok(seen.map(|seen| (role, seen)))
}

/// The role as it is now (or as the last sweep saw it, if in shape there and not `fresh`); a
/// refusal if its name is held by a role that is not this tenant's.
pub(super) async fn observe<R: Roles>(
    iam: &Iam<'_, R>,
    id: &TenantIdentity,
    role: &DesiredRole,
    fresh: bool,
) -> Result<Result<Option<ObservedRole>, Refusal>, Error> {
    let sweep = |path: String| async move { iam.roles.roles_under(&path).await };
    let swept = if fresh {
        Seen::Unknown
    } else {
        iam.snapshot.role(&role.name, sweep).await
    };
    let in_shape = role.in_shape();
    let observed = match swept {
        Seen::Swept(Some(digest)) if digest == in_shape.digest() => Some(in_shape),
        _ => iam.roles.role(&role.name).await?,
    };
    if let Some(seen) = &observed
        && let Ownership::Foreign(why) = plan::ownership(&seen.tags, id, false)
    {
        let role = role.arn.clone();
        return Ok(Err(Refusal::RoleConflict { role, why }));
    }
    Ok(Ok(observed))
}

/// Principal patterns that may reach the tenant's bucket: the operator's own and the admins',
/// plus the tenant role's.
pub(super) fn allowed_principals(
    settings: &AccessSettings,
    role: Option<&DesiredRole>,
) -> Vec<String> {
    let mut allowed = settings.allowed_principals.clone();
    if let Some(role) = role {
        allowed.extend(principal_patterns(&role.arn));
    }
    allowed
}

/// What the stage did to the role.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum RoleOutcome {
    /// No role wanted and none recorded.
    NotWanted,
    /// No longer wanted: deleted (`true`) or already gone; `arn` as recorded.
    Removed {
        arn: String,
        deleted: bool,
    },
    Created,
    /// The service accounts or level changed; `previous` as recorded.
    AccessChanged {
        previous: AccessStatus,
    },
    /// Put back in shape after someone changed these settings.
    Restored(Vec<&'static str>),
    InShape,
    Refused(Refusal),
}

/// Brings the role to `role` (or removes a role no longer wanted) and records it.
/// `observed` comes from [`wanted`].
pub(super) async fn converge<R: Roles>(
    iam: &Iam<'_, R>,
    ledger: &mut impl Ledger,
    record: &mut Record,
    id: &TenantIdentity,
    role: Option<&DesiredRole>,
    observed: Option<ObservedRole>,
    access: Option<&AccessSpec>,
) -> Result<RoleOutcome, Error> {
    let (Some(role), Some(access)) = (role, access) else {
        let Some(previous) = record.access.take() else {
            return Ok(RoleOutcome::NotWanted);
        };
        let name = naming::role_name(&id.cluster_id, &id.namespace, &id.name);
        let deleted = remove(iam, id, &name).await?;
        let arn = previous.role_arn;
        return Ok(RoleOutcome::Removed { arn, deleted });
    };
    let previous = record.access.clone();
    let mut changes = role_changes(role, observed.as_ref());
    if changes.contains(&RoleChange::Create) && previous.is_none() {
        // Write-ahead: recorded before the role exists, so a crash after CreateRole still
        // leaves the role known to the cleanup.
        record.access = Some(applied(role, access));
        ledger.write(record, Mark::RoleCreationStarted).await?;
    }
    if !changes.is_empty() {
        iam.snapshot.changing(&role.name);
    }
    let created = match apply(iam, id, role, &mut changes).await? {
        Ok(created) => created,
        Err(refusal) => return Ok(RoleOutcome::Refused(refusal)),
    };
    if !changes.is_empty() {
        iam.snapshot.changing(&role.name);
    }
    record.access = Some(applied(role, access));
    Ok(outcome(created, previous, access, &changes))
}

fn applied(role: &DesiredRole, access: &AccessSpec) -> AccessStatus {
    AccessStatus {
        role_arn: role.arn.clone(),
        service_account_annotation: format!("{IRSA_ANNOTATION}: {}", role.arn),
        service_accounts: access.service_accounts.clone(),
        level: access.level,
    }
}

/// Applies `changes` in order; `Ok(true)` if the role was created. A role that appears while
/// it is created is looked at again and used only if it is ours (`changes` are then the ones
/// that were left).
pub(super) async fn apply<R: Roles>(
    iam: &Iam<'_, R>,
    id: &TenantIdentity,
    role: &DesiredRole,
    changes: &mut Vec<RoleChange>,
) -> Result<Result<bool, Refusal>, Error> {
    let mut created = false;
    let mut i = 0;
    while i < changes.len() {
        match iam.roles.change(role, &changes[i]).await {
            Ok(()) => created |= changes[i] == RoleChange::Create,
            // Created meanwhile (or IAM not yet showing our own creation).
            Err(e) if changes[i] == RoleChange::Create && e.code() == "EntityAlreadyExists" => {
                let seen = match observe(iam, id, role, true).await? {
                    Ok(seen) => seen,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                *changes = role_changes(role, seen.as_ref())
                    .into_iter()
                    .filter(|c| *c != RoleChange::Create)
                    .collect();
                i = 0;
                continue;
            }
            Err(e) => {
                return match refusal_for(role, &changes[i], &e) {
                    Some(refusal) => Ok(Err(refusal)),
                    None => Err(e.into()),
                };
            }
        }
        i += 1;
    }
    Ok(Ok(created))
}

/// A failed role change that the user must fix, or `None`: an error to retry.
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

fn outcome(
    created: bool,
    previous: Option<AccessStatus>,
    access: &AccessSpec,
    changes: &[RoleChange],
) -> RoleOutcome {
    let same = |a: &[String], b: &[String]| {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        b.sort();
        a == b
    };
    if created {
        return RoleOutcome::Created;
    }
    match previous {
        Some(previous)
            if !same(&previous.service_accounts, &access.service_accounts)
                || previous.level != access.level =>
        {
            RoleOutcome::AccessChanged { previous }
        }
        _ if !changes.is_empty() => {
            RoleOutcome::Restored(changes.iter().map(RoleChange::setting).collect())
        }
        _ => RoleOutcome::InShape,
    }
}

/// Deletes the tenant's role if it exists and is ours; `true` if it was deleted.
pub(super) async fn remove<R: Roles>(
    iam: &Iam<'_, R>,
    id: &TenantIdentity,
    name: &str,
) -> Result<bool, Error> {
    match iam.roles.role(name).await? {
        Some(seen) if plan::ownership(&seen.tags, id, false) == Ownership::Ours => {
            iam.snapshot.changing(name);
            Ok(iam.roles.delete(name, &seen).await?)
        }
        _ => Ok(false),
    }
}
