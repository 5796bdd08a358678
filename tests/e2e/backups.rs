use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tenant_storage_operator::api::ResidencyPolicy;
use tenant_storage_operator::plan::naming::backup_vault_name;

use crate::harness::{Aws, Scenario, bucket_tags, eu_spec, eventually, tenant};

const HOME: &str = "eu-central-1";
const COPY: &str = "eu-west-1";

/// A policy with daily backups: the vault in the tenant's region encrypted with a key there,
/// the plan's daily rule keeping the policy's retention and copying only into the same
/// policy's vault in `copyToRegion`, a selection by the tenant bucket's own tags; a retention
/// change and a dropped copy region rewrite the plan; a resync changes nothing. AWS is read with
/// the admin's credentials, only to assert; the operator runs under `iam-policy operator`.
/// (The emulator keeps no recovery points: what a backup holds is not shown here.)
#[tokio::test]
async fn daily_backups_in_the_tenants_region_copied_only_where_allowed() {
    let s = Scenario::new("backups").await;
    let mut spec = eu_spec();
    spec.backup.enabled = true;
    spec.backup.retention_days = 35;
    spec.backup.copy_to_region = Some(COPY.into());
    let policy = s.policy(spec).await;
    let op = s
        .operator(&["--resync-period", "1s", "--drift-events", "off"])
        .await;
    s.create(&tenant("a", &policy, json!({})))
        .await
        .expect("create");
    let ts = s.wait_ready("a").await;
    let bucket = ts
        .status
        .as_ref()
        .and_then(|st| st.bucket_name.clone())
        .expect("bucket");
    let recorded = eventually("status.backup", || async {
        s.get("a").await.status?.backup
    })
    .await;
    assert_eq!(recorded.region, HOME);
    assert_eq!(recorded.copy_region.as_deref(), Some(COPY));

    let aws = Aws::root().await;
    // The tenant bucket admits AWS Backup's role, which every other principal is denied.
    let role = tenant_storage_operator::plan::naming::backup_role_name(&s.cluster_id);
    let bucket_policy = aws
        .s3(HOME)
        .get_bucket_policy()
        .bucket(&bucket)
        .send()
        .await;
    let bucket_policy = bucket_policy.expect("bucket policy");
    let text = bucket_policy.policy().unwrap_or_default();
    assert!(
        text.contains(&role) && text.contains("DenyOtherPrincipals"),
        "{text}"
    );
    let vault_name = backup_vault_name(&s.prefix, &s.cluster_id, &policy, HOME);
    let copy_vault = backup_vault_name(&s.prefix, &s.cluster_id, &policy, COPY);
    for (region, name) in [(HOME, &vault_name), (COPY, &copy_vault)] {
        let vault = aws
            .backup(region)
            .describe_backup_vault()
            .backup_vault_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("vault {name} in {region}: {e:?}"));
        let key = vault.encryption_key_arn().expect("encrypted");
        assert!(key.starts_with(&format!("arn:aws:kms:{region}:")), "{key}");
        let described = aws.kms(region).describe_key().key_id(key).send().await;
        assert!(
            described.is_ok(),
            "the vault's key is in {region}: {described:?}"
        );
    }
    assert_eq!(
        recorded.vault_arn.rsplit(':').next(),
        Some(vault_name.as_str())
    );

    let backup = aws.backup(HOME);
    let plan = backup
        .get_backup_plan()
        .backup_plan_id(&recorded.plan_id)
        .send()
        .await
        .expect("plan");
    let rules = plan.backup_plan().expect("plan body").rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].schedule_expression(), Some("cron(0 3 * * ? *)"));
    assert_eq!(rules[0].target_backup_vault_name(), vault_name);
    assert_eq!(
        rules[0].lifecycle().and_then(|l| l.delete_after_days()),
        Some(35)
    );
    let copies = rules[0].copy_actions();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0]
            .destination_backup_vault_arn()
            .starts_with(&format!("arn:aws:backup:{COPY}:"))
            && copies[0]
                .destination_backup_vault_arn()
                .ends_with(&copy_vault),
        "{copies:?}"
    );
    assert_eq!(
        copies[0].lifecycle().and_then(|l| l.delete_after_days()),
        Some(35)
    );

    // The selection takes the bucket by the tags it carries.
    let listed = backup
        .list_backup_selections()
        .backup_plan_id(&recorded.plan_id)
        .send()
        .await
        .expect("selections");
    assert_eq!(listed.backup_selections_list().len(), 1);
    let selection_id = listed.backup_selections_list()[0]
        .selection_id()
        .expect("id");
    let selection = backup
        .get_backup_selection()
        .backup_plan_id(&recorded.plan_id)
        .selection_id(selection_id)
        .send()
        .await
        .expect("selection");
    let selection = selection.backup_selection().expect("selection body");
    let tags = bucket_tags(&aws.s3(HOME), &bucket).await;
    let conditions = selection.conditions().expect("conditions").string_equals();
    assert!(conditions.len() >= 2, "{conditions:?}");
    for condition in conditions {
        let key = condition
            .condition_key()
            .and_then(|k| k.strip_prefix("aws:ResourceTag/"));
        let key = key.unwrap_or_else(|| panic!("a tag condition: {condition:?}"));
        assert_eq!(
            tags.get(key).map(String::as_str),
            condition.condition_value(),
            "{key}"
        );
    }
    for key in ["tenancy.dev/cluster-id", "tenancy.dev/policy"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.condition_key() == Some(&format!("aws:ResourceTag/{key}"))),
            "{key}"
        );
    }

    // A resync of the up-to-date tenant changes nothing anywhere.
    let (writes, _) = op.calls_over_reconciles(3.0).await;
    assert_eq!(writes, 0.0, "mutating AWS calls in a no-op resync");

    // A longer retention rewrites the plan in place; dropping the copy region drops the copy.
    let policies: Api<ResidencyPolicy> = Api::all(s.client.clone());
    let patch = |backup: serde_json::Value| json!({"spec": {"backup": backup}});
    policies
        .patch(
            &policy,
            &PatchParams::default(),
            &Patch::Merge(&patch(json!({"retentionDays": 90}))),
        )
        .await
        .expect("retention");
    let plan_rule = || async {
        let plan = backup
            .get_backup_plan()
            .backup_plan_id(&recorded.plan_id)
            .send()
            .await
            .ok()?;
        plan.backup_plan()?.rules().first().cloned()
    };
    eventually("retention 90 in the plan", || async {
        let rule = plan_rule().await?;
        let copied = rule
            .copy_actions()
            .first()?
            .lifecycle()?
            .delete_after_days();
        (rule.lifecycle()?.delete_after_days() == Some(90) && copied == Some(90)).then_some(())
    })
    .await;
    policies
        .patch(
            &policy,
            &PatchParams::default(),
            &Patch::Merge(&patch(json!({"copyToRegion": null}))),
        )
        .await
        .expect("no copy region");
    eventually("no copy action", || async {
        plan_rule().await?.copy_actions().is_empty().then_some(())
    })
    .await;
    let status = eventually("status without a copy region", || async {
        let backup = s.get("a").await.status?.backup?;
        backup.copy_region.is_none().then_some(backup)
    })
    .await;
    assert_eq!(
        (status.retention_days, status.plan_id),
        (90, recorded.plan_id)
    );
}
