//! Daily backups of a policy's tenant buckets in one region, with AWS Backup: a vault encrypted
//! with an operator key in that region, a plan with one daily rule (the policy's retention, and
//! a copy into the same policy's vault in `copyToRegion`), a selection of the tenant buckets by
//! the operator's tags, and the one role AWS Backup runs as; and what must change for AWS to
//! match. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::access::{DesiredRole, ObservedRole, RoleChange};
use super::arn::{Arn, partition_of};
use super::identity::{operator_tags, same_operator_resource, tags};
use super::naming;
use super::policy_document::{PolicyDocument, Principal, Statement};
use crate::api::ResidencyPolicySpec;

/// Every day at 03:00 UTC.
pub const SCHEDULE: &str = "cron(0 3 * * ? *)";
pub const RULE_NAME: &str = "daily";
pub const SELECTION_NAME: &str = "tenant-buckets";
/// `tenancy.dev/role` of the vaults, plans and vault keys.
pub const VAULT_ROLE: &str = "backup-vault";
/// `tenancy.dev/role` of the role AWS Backup runs as.
pub const SERVICE_ROLE: &str = "backup-service";
pub const BACKUP_SERVICE: &str = "backup.amazonaws.com";
/// The AWS managed policy AWS Backup documents for a role that backs up S3 (it follows the
/// service's needs as AWS changes them). Restores are started by a human, under a role they
/// choose: the operator never restores.
pub const S3_BACKUP_POLICY: &str = "AWSBackupServiceRolePolicyForS3Backup";
/// The operator of the selection's tag conditions.
pub const STRING_EQUALS: &str = "StringEquals";

/// Where the backups of a policy are kept, and by whom.
pub struct Site<'a> {
    pub bucket_prefix: &'a str,
    pub cluster_id: &'a str,
    pub account_id: &'a str,
    pub policy_name: &'a str,
    pub policy: &'a ResidencyPolicySpec,
}

/// The vault of a policy in a region and the key that encrypts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVault {
    pub name: String,
    pub region: String,
    pub arn: String,
    pub key_alias: String,
    pub key_tags: BTreeMap<String, String>,
    /// Tags of the vault and the plan.
    pub tags: BTreeMap<String, String>,
}

impl DesiredVault {
    pub fn new(site: &Site<'_>, region: &str) -> Self {
        let name = naming::backup_vault_name(
            site.bucket_prefix,
            site.cluster_id,
            site.policy_name,
            region,
        );
        let mut tags = operator_tags(site.cluster_id, VAULT_ROLE);
        tags.insert(tags::POLICY.to_owned(), site.policy_name.to_owned());
        tags.insert(
            tags::JURISDICTION.to_owned(),
            site.policy.jurisdiction.clone(),
        );
        DesiredVault {
            arn: vault_arn(region, site.account_id, &name),
            key_alias: naming::backup_key_alias(site.cluster_id, site.policy_name),
            key_tags: tags.clone(),
            tags,
            region: region.to_owned(),
            name,
        }
    }

    /// Human description stored on the vault's key.
    pub fn key_description(&self) -> String {
        format!(
            "tenant-storage-operator: encrypts backup vault {}",
            self.name
        )
    }
}

fn vault_arn(region: &str, account_id: &str, name: &str) -> String {
    let resource = format!("backup-vault:{name}");
    Arn::backup(partition_of(region), region, account_id, &resource).to_string()
}

/// A plan's rule, as the operator writes it and as it reads one back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRule {
    pub name: String,
    pub vault: String,
    pub schedule: String,
    pub delete_after_days: Option<i64>,
    pub copies: Vec<CopyAction>,
}

/// A copy of each recovery point into another vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyAction {
    pub vault_arn: String,
    pub delete_after_days: Option<i64>,
}

/// A selection of resources: those under `resources`, not under `not_resources`, whose tags
/// pass every condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSelection {
    pub name: String,
    pub role_arn: String,
    pub resources: BTreeSet<String>,
    pub not_resources: BTreeSet<String>,
    /// `(operator, condition key, value)`, e.g. `(StringEquals, aws:ResourceTag/k, v)`; tags of
    /// a `ListOfTags` read back are kept under their own operator, so they never pass for ours.
    pub conditions: BTreeSet<(String, String, String)>,
}

/// Everything one policy's backups in one region must look like.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredBackup {
    pub vault: DesiredVault,
    /// The same policy's vault in `copyToRegion`, which the rule copies into.
    pub copy_vault: Option<DesiredVault>,
    pub plan_name: String,
    pub rule: BackupRule,
    pub selection: BackupSelection,
    pub role: DesiredBackupRole,
}

impl DesiredBackup {
    pub fn new(site: &Site<'_>, region: &str) -> Self {
        let vault = DesiredVault::new(site, region);
        let copy_vault = site
            .policy
            .backup
            .copy_to_region
            .as_deref()
            .filter(|copy| *copy != region)
            .map(|copy| DesiredVault::new(site, copy));
        let days = Some(i64::from(site.policy.backup.retention_days));
        let rule = BackupRule {
            name: RULE_NAME.to_owned(),
            vault: vault.name.clone(),
            schedule: SCHEDULE.to_owned(),
            delete_after_days: days,
            copies: copy_vault
                .iter()
                .map(|copy| CopyAction {
                    vault_arn: copy.arn.clone(),
                    delete_after_days: days,
                })
                .collect(),
        };
        let role = DesiredBackupRole::new(partition_of(region), site.account_id, site.cluster_id);
        DesiredBackup {
            plan_name: vault.name.clone(),
            selection: selection(site, region, &role.role.arn),
            role,
            rule,
            copy_vault,
            vault,
        }
    }
}

/// The policy's tenant buckets (`<prefix>-*` carrying the operator's, the cluster's and the
/// policy's tags), but not the operator's own buckets of this policy and region, which carry
/// those tags too.
fn selection(site: &Site<'_>, region: &str, role_arn: &str) -> BackupSelection {
    let partition = partition_of(region);
    let bucket = |name: String| Arn::bucket(partition, &name).to_string();
    let (prefix, cluster, policy) = (site.bucket_prefix, site.cluster_id, site.policy_name);
    let tag = |key: &str, value: &str| {
        let key = format!("aws:ResourceTag/{key}");
        (STRING_EQUALS.to_owned(), key, value.to_owned())
    };
    BackupSelection {
        name: SELECTION_NAME.to_owned(),
        role_arn: role_arn.to_owned(),
        resources: [bucket(format!("{prefix}-*"))].into(),
        not_resources: [
            naming::log_bucket_name(prefix, cluster, policy, region),
            naming::evidence_bucket_name(prefix, cluster, policy, region),
            naming::export_bucket_name(prefix, cluster, policy, region),
        ]
        .into_iter()
        .map(bucket)
        .collect(),
        conditions: [
            tag(tags::MANAGED_BY, tags::OPERATOR),
            tag(tags::CLUSTER, cluster),
            tag(tags::POLICY, policy),
        ]
        .into(),
    }
}

/// The role AWS Backup assumes to back up the tenant buckets: trusted by the service only,
/// holding the managed policy AWS documents for S3 backups and nothing else.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredBackupRole {
    pub role: DesiredRole,
    /// ARNs of the managed policies attached.
    pub attached: Vec<String>,
}

impl DesiredBackupRole {
    pub fn new(partition: &str, account_id: &str, cluster_id: &str) -> Self {
        let path = naming::role_path(cluster_id);
        let name = naming::backup_role_name(cluster_id);
        let trust = Statement::allow("AwsBackup")
            .principal(Principal::service(BACKUP_SERVICE))
            .action("sts:AssumeRole");
        DesiredBackupRole {
            role: DesiredRole {
                arn: Arn::role(partition, account_id, &path, &name).to_string(),
                description: "tenant-storage-operator: AWS Backup backs up tenant buckets".into(),
                tags: operator_tags(cluster_id, SERVICE_ROLE),
                trust_policy: PolicyDocument::new(vec![trust]),
                inline_policy: None,
                permissions_boundary: None,
                name,
                path,
            },
            attached: vec![Arn::aws_managed_policy(partition, S3_BACKUP_POLICY).to_string()],
        }
    }
}

/// A step that brings the backup role to shape.
#[derive(Clone, Debug, PartialEq)]
pub enum BackupRoleChange {
    Role(RoleChange),
    Attach(String),
}

/// A vault, plan or role of the operator's name that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{what} cannot be used: {why}")]
pub struct BackupConflict {
    pub what: String,
    pub why: String,
}

fn foreign(what: impl Into<String>) -> BackupConflict {
    BackupConflict {
        what: what.into(),
        why: "its tags do not say it is this operator's".into(),
    }
}

/// The changes that make the role `observed` the desired one: anything else attached or
/// inline is removed.
pub fn backup_role_changes(
    desired: &DesiredBackupRole,
    observed: Option<&ObservedRole>,
) -> Result<Vec<BackupRoleChange>, BackupConflict> {
    let attach = |arn: &String| BackupRoleChange::Attach(arn.clone());
    let Some(observed) = observed else {
        let create = BackupRoleChange::Role(RoleChange::Create);
        return Ok(std::iter::once(create)
            .chain(desired.attached.iter().map(attach))
            .collect());
    };
    if !same_operator_resource(&observed.tags, &desired.role.tags) {
        return Err(foreign(format!("role {}", desired.role.arn)));
    }
    let mut changes = Vec::new();
    let role = |change| BackupRoleChange::Role(change);
    if !desired.role.trust_policy.same_as(&observed.trust_policy) {
        changes.push(role(RoleChange::UpdateTrust));
    }
    if observed.permissions_boundary.is_some() {
        changes.push(role(RoleChange::RemoveBoundary));
    }
    for name in observed.inline_policies.keys() {
        changes.push(role(RoleChange::DeleteInlinePolicy(name.clone())));
    }
    for arn in observed.attached_policies.iter() {
        if !desired.attached.contains(arn) {
            changes.push(role(RoleChange::DetachPolicy(arn.clone())));
        }
    }
    for arn in &desired.attached {
        if !observed.attached_policies.contains(arn) {
            changes.push(attach(arn));
        }
    }
    Ok(changes)
}

/// A vault as AWS Backup describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedVault {
    pub arn: String,
    pub key_arn: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Whether the vault must be created; a conflict if one of its name is not ours or is
/// encrypted with another key (a vault's key never changes).
pub fn vault_needed(
    desired: &DesiredVault,
    observed: Option<&ObservedVault>,
    key_arn: &str,
) -> Result<bool, BackupConflict> {
    let Some(observed) = observed else {
        return Ok(true);
    };
    let what = format!("backup vault {}", observed.arn);
    if !same_operator_resource(&observed.tags, &desired.tags) {
        return Err(foreign(what));
    }
    if observed.key_arn.as_deref() != Some(key_arn) {
        let seen = observed.key_arn.as_deref().unwrap_or("no key");
        return Err(BackupConflict {
            what,
            why: format!("it is encrypted with {seen}, not the operator's backup key {key_arn}"),
        });
    }
    Ok(false)
}

/// A plan as AWS Backup describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPlan {
    pub id: String,
    pub arn: String,
    pub tags: BTreeMap<String, String>,
    pub rules: Vec<BackupRule>,
}

/// What the plan needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanStep {
    /// The plan of this id holds exactly the desired rule.
    InShape(String),
    Create,
    /// Rewrite the plan of this id with the one desired rule.
    Update(String),
}

/// What makes the plan hold exactly the desired rule.
pub fn plan_step(
    desired: &DesiredBackup,
    observed: Option<&ObservedPlan>,
) -> Result<PlanStep, BackupConflict> {
    let Some(observed) = observed else {
        return Ok(PlanStep::Create);
    };
    if !same_operator_resource(&observed.tags, &desired.vault.tags) {
        return Err(foreign(format!("backup plan {}", observed.arn)));
    }
    let id = observed.id.clone();
    if observed.rules == [desired.rule.clone()] {
        Ok(PlanStep::InShape(id))
    } else {
        Ok(PlanStep::Update(id))
    }
}

/// A selection of a plan as AWS Backup describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSelection {
    pub id: String,
    pub selection: BackupSelection,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectionChange {
    Create,
    Delete(String),
}

/// Selections cannot be changed, only replaced: every selection of the plan but one in shape is
/// deleted (a changed one, a duplicate left by a lost answer, someone else's), and one in shape
/// is created if there is none.
pub fn selection_changes(
    desired: &BackupSelection,
    observed: &[ObservedSelection],
) -> Vec<SelectionChange> {
    let kept = observed.iter().position(|seen| seen.selection == *desired);
    let mut changes: Vec<SelectionChange> = observed
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != kept)
        .map(|(_, seen)| SelectionChange::Delete(seen.id.clone()))
        .collect();
    if kept.is_none() {
        changes.push(SelectionChange::Create);
    }
    changes
}

/// A policy and its backups as the tests of several modules use them: prefix `tso`, cluster
/// `c1`, policy `eu` allowing eu-central-1 and eu-west-1.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{DesiredBackup, ResidencyPolicySpec, Site};

    pub const ACCOUNT: &str = "111122223333";

    pub fn policy(copy_to: Option<&str>, retention: i32) -> ResidencyPolicySpec {
        serde_json::from_value(serde_json::json!({
            "jurisdiction": "EU",
            "allowedRegions": ["eu-central-1", "eu-west-1"],
            "defaultRegion": "eu-central-1",
            "backup": {"enabled": true, "retentionDays": retention, "copyToRegion": copy_to},
        }))
        .unwrap_or_else(|e| panic!("a policy: {e}"))
    }

    pub fn desired(policy: &ResidencyPolicySpec, region: &str) -> DesiredBackup {
        let site = Site {
            bucket_prefix: "tso",
            cluster_id: "c1",
            account_id: ACCOUNT,
            policy_name: "eu",
            policy,
        };
        DesiredBackup::new(&site, region)
    }
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
