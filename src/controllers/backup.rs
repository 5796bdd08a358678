//! The daily backups of a policy's tenant buckets in a region (AWS Backup): the role AWS Backup
//! runs as, the vaults (the region's and `copyToRegion`'s) with their keys, the plan and the
//! selection, ensured at most once per resync period per policy and region, and at once when
//! the policy's backup settings change. Never deleted by the operator: a vault holds recovery
//! points until their retention ends.

use std::collections::HashMap;
use std::time::Instant;

use kube::ResourceExt;
use tracing::info;

use super::{Context, Error};
use crate::api::{BackupStatus, ResidencyPolicy};
use crate::cloud::port::{BackupRoles, Backups, Keys};
use crate::plan::backup::{
    self, BackupConflict, DesiredBackup, DesiredBackupRole, DesiredVault, PlanStep,
    SelectionChange, Site,
};
use crate::plan::same_operator_resource;

/// Backups ensured recently, by vault ARN: when, as what, and what status they gave.
pub(crate) type Verified =
    tokio::sync::Mutex<HashMap<String, (Instant, DesiredBackup, BackupStatus)>>;

/// The backups of `policy`'s tenants in `region`, created or corrected unless that was done
/// for the same settings within the resync period; `None` if the policy asks for none.
pub(crate) async fn ensure(
    ctx: &Context,
    policy: &ResidencyPolicy,
    region: &str,
) -> Result<Option<BackupStatus>, Error> {
    let spec = &policy.spec.backup;
    if !spec.enabled {
        return Ok(None);
    }
    let policy_name = policy.name_any();
    let site = Site {
        bucket_prefix: &ctx.settings.bucket_prefix,
        cluster_id: &ctx.settings.cluster_id,
        account_id: &ctx.settings.access.account_id,
        policy_name: &policy_name,
        policy: &policy.spec,
    };
    let desired = DesiredBackup::new(&site, region);
    // Held until done: two tenants of one policy never create two plans.
    let mut verified = ctx.backups.lock().await;
    if let Some((at, seen, status)) = verified.get(&desired.vault.arn)
        && *seen == desired
        && at.elapsed() < ctx.settings.resync_period
    {
        return Ok(Some(status.clone()));
    }
    let home = ctx.cloud.region(region);
    let copy = desired
        .copy_vault
        .as_ref()
        .map(|v| ctx.cloud.region(&v.region));
    let plan_id = converge(&home, copy.as_ref(), ctx.cloud.iam(), &desired).await?;
    let status = BackupStatus {
        region: region.to_owned(),
        vault_arn: desired.vault.arn.clone(),
        plan_id,
        retention_days: spec.retention_days,
        copy_region: desired.copy_vault.as_ref().map(|v| v.region.clone()),
    };
    let at = Instant::now();
    verified.insert(desired.vault.arn.clone(), (at, desired, status.clone()));
    Ok(Some(status))
}

/// Brings the role, the copy region's vault, the region's vault, the plan and its selection to
/// shape, in that order (each names the one before); returns the plan's id.
pub(super) async fn converge<R: Keys + Backups, I: BackupRoles>(
    home: &R,
    copy: Option<&R>,
    roles: &I,
    desired: &DesiredBackup,
) -> Result<String, Error> {
    ensure_role(roles, &desired.role).await?;
    if let (Some(region), Some(vault)) = (copy, &desired.copy_vault) {
        ensure_vault(region, vault).await?;
    }
    ensure_vault(home, &desired.vault).await?;
    let plan_id = ensure_plan(home, desired).await?;
    for change in backup::selection_changes(&desired.selection, &home.selections(&plan_id).await?) {
        match &change {
            SelectionChange::Create => home.create_selection(&plan_id, &desired.selection).await?,
            SelectionChange::Delete(id) => home.delete_selection(&plan_id, id).await?,
        }
        info!(plan = %plan_id, ?change, "backup selection");
    }
    Ok(plan_id)
}

async fn ensure_role<I: BackupRoles>(roles: &I, role: &DesiredBackupRole) -> Result<(), Error> {
    let observed = roles.backup_role(&role.role.name).await?;
    for change in backup::backup_role_changes(role, observed.as_ref())? {
        roles.change_backup_role(role, &change).await?;
        info!(role = %role.role.arn, ?change, "backup role");
    }
    Ok(())
}

async fn ensure_vault<R: Keys + Backups>(region: &R, vault: &DesiredVault) -> Result<(), Error> {
    let key_arn = vault_key(region, vault).await?;
    let observed = region.vault(&vault.name).await?;
    if backup::vault_needed(vault, observed.as_ref(), &key_arn)? {
        region.create_vault(vault, &key_arn).await?;
        info!(vault = %vault.arn, key = %key_arn, "backup vault");
    }
    Ok(())
}

/// The key of a vault, found by its alias, created (with rotation on) on first use. A key
/// created just before a crash, before its alias, is found by its tags, not duplicated.
async fn vault_key<K: Keys>(keys: &K, vault: &DesiredVault) -> Result<String, Error> {
    let conflict = |why: String| BackupConflict {
        what: format!("KMS alias {}", vault.key_alias),
        why,
    };
    if let Some(key) = keys.key(&vault.key_alias, true).await? {
        let seen = keys.key_tags(&key.key_id).await?;
        if !same_operator_resource(&seen, &vault.key_tags) {
            let why = format!("it points at key {}, which is not this operator's", key.arn);
            return Err(conflict(why).into());
        }
        if key.state != "Enabled" {
            return Err(conflict(format!("its key {} is {}", key.arn, key.state)).into());
        }
        if !key.rotation_enabled {
            keys.enable_rotation(&key.key_id).await?;
        }
        return Ok(key.arn);
    }
    let (key_id, arn) = match keys.find_tagged_key(&vault.key_tags).await? {
        Some(found) => found,
        None => {
            keys.create_key(&vault.key_description(), &vault.key_tags)
                .await?
        }
    };
    keys.create_alias(&vault.key_alias, &key_id).await?;
    keys.enable_rotation(&key_id).await?;
    info!(key = %arn, alias = %vault.key_alias, "backup vault key");
    Ok(arn)
}

/// The plan with exactly the desired rule; returns its id.
async fn ensure_plan<B: Backups>(backups: &B, desired: &DesiredBackup) -> Result<String, Error> {
    let observed = backups.plan(&desired.plan_name).await?;
    let (name, rule) = (&desired.plan_name, &desired.rule);
    let id = match backup::plan_step(desired, observed.as_ref())? {
        PlanStep::InShape(id) => return Ok(id),
        PlanStep::Create => backups.create_plan(name, rule, &desired.vault.tags).await?,
        PlanStep::Update(id) => {
            backups.update_plan(&id, name, rule).await?;
            id
        }
    };
    info!(plan = %id, retention_days = ?rule.delete_after_days, "backup plan");
    Ok(id)
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
