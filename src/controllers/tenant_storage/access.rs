//! The tenant role stage ([`super::role`]) as the reconcile runs it: on the operator's IAM and
//! role sweep, with its marks in status and its outcome told to the user.

use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::info;

use super::record::Record;
use super::refusal::Refusal;
use super::report::{Report, StatusLedger, drift_corrected};
use super::role::{self, Iam, RoleOutcome, Wanted};
use super::storage::Principals;
use crate::api::{AccessSpec, TenantStorage};
use crate::cloud::port::Roles;
use crate::controllers::toolkit::publish;
use crate::controllers::{Context, Error};
use crate::plan::access::{DesiredRole, IRSA_ANNOTATION, ObservedRole, managed_access_policy};
use crate::plan::backup::DesiredBackupRole;
use crate::plan::principal::principal_patterns;
use crate::plan::replication::replication_role_name;
use crate::plan::{DefaultEncryption, Desired, TenantIdentity};

/// The operator's IAM, as the role stage sees it.
pub(super) fn iam(ctx: &Context) -> Iam<'_, crate::cloud::Iam> {
    Iam {
        roles: ctx.cloud.iam(),
        snapshot: &ctx.roles,
        settings: &ctx.settings.access,
    }
}

/// Brings the role to `role` (or removes a role no longer wanted), records it in status and
/// tells the user; a refusal the user must fix.
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
    let mut record = Record::of(&report.status);
    let mut ledger = StatusLedger { report, api };
    let outcome = role::converge(
        &iam(ctx),
        &mut ledger,
        &mut record,
        id,
        role,
        observed,
        access,
    )
    .await;
    record.write_into(&mut report.status);
    match (outcome?, role, access) {
        (RoleOutcome::Refused(refusal), ..) => Ok(Some(refusal)),
        (outcome, role, access) => {
            announce(ctx, ts, outcome, role, access).await;
            Ok(None)
        }
    }
}

async fn announce(
    ctx: &Context,
    ts: &TenantStorage,
    outcome: RoleOutcome,
    role: Option<&DesiredRole>,
    access: Option<&AccessSpec>,
) {
    let (Some(role), Some(access)) = (role, access) else {
        if let RoleOutcome::Removed { arn, deleted: true } = outcome {
            let note = format!(
                "spec.access removed: deleted role {arn}; no workload can reach the data through it any more"
            );
            publish(ctx, ts, EventType::Normal, "RoleDeleted", "Delete", note).await;
        }
        return;
    };
    let accounts = access.service_accounts.join(", ");
    match outcome {
        RoleOutcome::Created => {
            info!(role = %role.arn, "tenant role created");
            let note = format!(
                "created role {} for service accounts {accounts} ({:?}); annotate them with {IRSA_ANNOTATION}: {}",
                role.arn, access.level, role.arn
            );
            publish(ctx, ts, EventType::Normal, "RoleCreated", "Create", note).await;
        }
        RoleOutcome::AccessChanged { previous } => {
            let note = format!(
                "role {}: service accounts {accounts} ({:?}), were {} ({:?})",
                role.arn,
                access.level,
                previous.service_accounts.join(", "),
                previous.level
            );
            publish(ctx, ts, EventType::Normal, "AccessChanged", "Update", note).await;
        }
        RoleOutcome::Restored(restored) => {
            drift_corrected(ctx, ts, &restored, &format!("role {}", role.arn)).await;
        }
        _ => {}
    }
}

/// Deletes the tenant's role if it exists and is ours; true if it was deleted.
pub(super) async fn remove_role(
    ctx: &Context,
    id: &TenantIdentity,
    name: &str,
) -> Result<bool, Error> {
    role::remove(&iam(ctx), id, name).await
}

/// Which AWS services' roles reach the tenant's buckets.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ServiceRoles {
    /// The tenant has (or is to have) a replica: S3 reads and writes as the replication role.
    pub replication: bool,
    /// The policy backs tenant buckets up: AWS Backup reads them as the backup role.
    pub backup: bool,
}

/// The managed tenant's role, decided once its key is known: the role (if `spec.access` asks
/// for one) may reach the bucket, and is kept for [`reconcile_role`] after the bucket.
pub(super) struct ManagedRole<'a, R> {
    pub iam: Iam<'a, R>,
    pub id: &'a TenantIdentity,
    pub access: Option<&'a AccessSpec>,
    pub permissions_boundary: Option<String>,
    pub fresh: bool,
    /// The roles AWS services reach the tenant's buckets as (S3 replication, AWS Backup), by
    /// name: what the tenant's policy turns on.
    pub services: ServiceRoles,
    /// The role wanted and as observed, once decided.
    pub decided: Option<(DesiredRole, Option<ObservedRole>)>,
}

impl<R: Roles> Principals for ManagedRole<'_, R> {
    async fn allowed(
        &mut self,
        desired: &Desired,
        encryption: &DefaultEncryption,
    ) -> Result<Result<Vec<String>, Refusal>, Error> {
        if let Some(access) = self.access {
            let bucket = desired.bucket_arn();
            let permissions =
                managed_access_policy(access.level, &bucket, encryption.key(), &desired.region);
            let wanted = Wanted {
                id: self.id,
                partition: desired.partition,
                tags: &desired.tags,
                access,
                inline_policy: Some(permissions),
                permissions_boundary: self.permissions_boundary.clone(),
                fresh: self.fresh,
            };
            match role::wanted(&self.iam, wanted).await? {
                Ok(decided) => self.decided = Some(decided),
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        let role = self.decided.as_ref().map(|(role, _)| role);
        let mut allowed = role::allowed_principals(self.iam.settings, role);
        let account = &self.iam.settings.account_id;
        if self.services.replication {
            let (_, _, arn) = replication_role_name(desired.partition, account, self.id);
            allowed.extend(principal_patterns(&arn));
        }
        if self.services.backup {
            let backup = DesiredBackupRole::new(desired.partition, account, &self.id.cluster_id);
            allowed.extend(principal_patterns(&backup.role.arn));
        }
        Ok(Ok(allowed))
    }
}
