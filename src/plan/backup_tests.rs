use serde_json::json;

use super::fixtures::{ACCOUNT, desired, policy};
use super::*;

#[test]
fn one_daily_rule_with_the_retention_and_a_copy_only_to_the_copy_region() {
    let backup = desired(&policy(Some("eu-west-1"), 35), "eu-central-1");
    let rule = &backup.rule;
    assert_eq!(rule.schedule, "cron(0 3 * * ? *)");
    assert_eq!(rule.delete_after_days, Some(35));
    assert_eq!(rule.vault, backup.vault.name);
    let copy = backup.copy_vault.as_ref().expect("a copy vault");
    assert_eq!(copy.region, "eu-west-1");
    assert_eq!(
        rule.copies,
        [CopyAction {
            vault_arn: copy.arn.clone(),
            delete_after_days: Some(35)
        }]
    );
    assert!(
        copy.arn
            .starts_with("arn:aws:backup:eu-west-1:111122223333:backup-vault:tso-eu-west-1-")
    );
    assert_eq!(
        backup.vault.key_alias,
        "alias/tenant-storage/c1/backup/eu/vault"
    );
    assert_eq!(backup.vault.key_tags[tags::ROLE], VAULT_ROLE);
    assert_eq!(backup.vault.tags[tags::POLICY], "eu");
}

#[test]
fn no_copy_without_copy_region_or_into_the_own_region() {
    for backup in [
        desired(&policy(None, 7), "eu-central-1"),
        desired(&policy(Some("eu-central-1"), 7), "eu-central-1"),
    ] {
        assert!(backup.copy_vault.is_none());
        assert!(backup.rule.copies.is_empty());
    }
}

#[test]
fn selection_takes_tenant_buckets_of_the_policy_not_the_operators_own() {
    let backup = desired(&policy(None, 7), "eu-central-1");
    let selection = &backup.selection;
    assert_eq!(selection.role_arn, backup.role.role.arn);
    assert_eq!(
        selection.resources,
        ["arn:aws:s3:::tso-*".to_owned()].into()
    );
    let log = naming::log_bucket_name("tso", "c1", "eu", "eu-central-1");
    assert!(
        selection
            .not_resources
            .contains(&format!("arn:aws:s3:::{log}"))
    );
    assert_eq!(selection.not_resources.len(), 3);
    let tag = |k: &str, v: &str| {
        (
            "StringEquals".to_owned(),
            format!("aws:ResourceTag/{k}"),
            v.to_owned(),
        )
    };
    assert_eq!(
        selection.conditions,
        [
            tag(tags::MANAGED_BY, tags::OPERATOR),
            tag(tags::CLUSTER, "c1"),
            tag(tags::POLICY, "eu")
        ]
        .into()
    );
}

#[test]
fn role_is_trusted_by_aws_backup_only_with_the_s3_backup_policy() {
    let role = desired(&policy(None, 7), "eu-central-1").role;
    assert_eq!(
        role.role.arn,
        format!(
            "arn:aws:iam::{ACCOUNT}:role/tenant-storage-operator/c1/{}",
            naming::backup_role_name("c1")
        )
    );
    let trust = role.role.trust_policy.to_json();
    assert_eq!(
        trust["Statement"][0]["Principal"],
        json!({"Service": "backup.amazonaws.com"})
    );
    assert_eq!(
        role.attached,
        ["arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Backup"]
    );
}

fn in_shape(role: &DesiredBackupRole) -> ObservedRole {
    ObservedRole {
        attached_policies: role.attached.clone(),
        ..role.role.in_shape()
    }
}

#[test]
fn role_changes_create_attach_and_strip_extras() {
    let role = desired(&policy(None, 7), "eu-central-1").role;
    let arn = role.attached[0].clone();
    assert_eq!(
        backup_role_changes(&role, None),
        Ok(vec![
            BackupRoleChange::Role(RoleChange::Create),
            BackupRoleChange::Attach(arn.clone())
        ])
    );
    assert_eq!(
        backup_role_changes(&role, Some(&in_shape(&role))),
        Ok(vec![])
    );
    let mut widened = in_shape(&role);
    widened.attached_policies = vec!["arn:aws:iam::aws:policy/AdministratorAccess".into()];
    widened
        .inline_policies
        .insert("extra".into(), json!({"Statement": []}));
    widened.trust_policy = json!({});
    assert_eq!(
        backup_role_changes(&role, Some(&widened)),
        Ok(vec![
            BackupRoleChange::Role(RoleChange::UpdateTrust),
            BackupRoleChange::Role(RoleChange::DeleteInlinePolicy("extra".into())),
            BackupRoleChange::Role(RoleChange::DetachPolicy(
                "arn:aws:iam::aws:policy/AdministratorAccess".into()
            )),
            BackupRoleChange::Attach(arn),
        ])
    );
    let mut theirs = in_shape(&role);
    theirs.tags.clear();
    assert!(backup_role_changes(&role, Some(&theirs)).is_err());
}

fn observed_vault(vault: &DesiredVault, key: &str) -> ObservedVault {
    ObservedVault {
        arn: vault.arn.clone(),
        key_arn: Some(key.to_owned()),
        tags: vault.tags.clone(),
    }
}

#[test]
fn a_vault_is_created_once_and_never_taken_with_another_key_or_owner() {
    let vault = desired(&policy(None, 7), "eu-central-1").vault;
    assert_eq!(vault_needed(&vault, None, "k1"), Ok(true));
    let ours = observed_vault(&vault, "k1");
    assert_eq!(vault_needed(&vault, Some(&ours), "k1"), Ok(false));
    let other_key = vault_needed(&vault, Some(&ours), "k2").expect_err("another key");
    assert!(other_key.why.contains("k1"), "{other_key}");
    let mut theirs = ours;
    theirs.tags.insert(tags::CLUSTER.into(), "c2".into());
    assert!(vault_needed(&vault, Some(&theirs), "k1").is_err());
}

fn observed_plan(backup: &DesiredBackup) -> ObservedPlan {
    ObservedPlan {
        id: "p1".into(),
        arn: "arn:aws:backup:eu-central-1:111122223333:backup-plan:p1".into(),
        tags: backup.vault.tags.clone(),
        rules: vec![backup.rule.clone()],
    }
}

#[test]
fn a_plan_is_rewritten_when_its_rule_differs() {
    let backup = desired(&policy(Some("eu-west-1"), 35), "eu-central-1");
    assert_eq!(plan_step(&backup, None), Ok(PlanStep::Create));
    let seen = observed_plan(&backup);
    assert_eq!(
        plan_step(&backup, Some(&seen)),
        Ok(PlanStep::InShape("p1".into()))
    );
    let longer = desired(&policy(Some("eu-west-1"), 90), "eu-central-1");
    assert_eq!(
        plan_step(&longer, Some(&seen)),
        Ok(PlanStep::Update("p1".into()))
    );
    let mut extra = seen.clone();
    extra.rules.push(backup.rule.clone());
    assert!(matches!(
        plan_step(&backup, Some(&extra)),
        Ok(PlanStep::Update(_))
    ));
    let mut theirs = seen;
    theirs.tags.clear();
    assert!(plan_step(&backup, Some(&theirs)).is_err());
}

#[test]
fn selections_are_replaced_and_duplicates_removed() {
    let wanted = desired(&policy(None, 7), "eu-central-1").selection;
    let seen = |id: &str, selection: &BackupSelection| ObservedSelection {
        id: id.into(),
        selection: selection.clone(),
    };
    assert_eq!(selection_changes(&wanted, &[]), [SelectionChange::Create]);
    assert!(selection_changes(&wanted, &[seen("s1", &wanted)]).is_empty());
    let mut widened = wanted.clone();
    widened.conditions.clear();
    assert_eq!(
        selection_changes(
            &wanted,
            &[
                seen("s1", &widened),
                seen("s2", &wanted),
                seen("s3", &wanted)
            ]
        ),
        [
            SelectionChange::Delete("s1".into()),
            SelectionChange::Delete("s3".into())
        ]
    );
    assert_eq!(
        selection_changes(&wanted, &[seen("s1", &widened)]),
        [
            SelectionChange::Delete("s1".into()),
            SelectionChange::Create
        ]
    );
}
