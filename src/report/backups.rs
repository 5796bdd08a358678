//! The report's "backups configured" check: read from AWS Backup and the bucket's own tags, not
//! from status: the plan recorded for the tenant keeps recovery points as long as its policy
//! says, copies them only into allowed regions, and one of its selections takes the bucket.
//! The emulator keeps no recovery points, so this checks the configuration, not a backup.

use std::collections::BTreeMap;

use super::Check;
use crate::api::{BackupStatus, ResidencyPolicySpec};
use crate::cloud::port::Backups;
use crate::cloud::{CloudError, ObservedTags, Regional};
use crate::plan::Arn;
use crate::plan::backup::{BackupRule, BackupSelection, ObservedPlan, STRING_EQUALS};

/// What AWS says about the backups of one tenant's bucket.
#[derive(Clone, Debug, Default)]
pub struct BackupEvidence {
    /// The plan recorded in status, if it exists.
    pub plan: Option<ObservedPlan>,
    pub selections: Vec<BackupSelection>,
    pub bucket_tags: BTreeMap<String, String>,
}

/// Reads the plan recorded in `status`, its selections and the bucket's tags.
pub async fn observe(
    s3: &Regional,
    bucket: &str,
    status: &BackupStatus,
) -> Result<BackupEvidence, CloudError> {
    let plan = s3.backup_plan(&status.plan_id).await?;
    let selections = match &plan {
        Some(plan) => s3.selections(&plan.id).await?,
        None => Vec::new(),
    };
    let bucket_tags = match s3.bucket_tags(bucket).await? {
        ObservedTags::Tags(tags) => tags,
        ObservedTags::Gone => BTreeMap::new(),
    };
    Ok(BackupEvidence {
        plan,
        selections: selections.into_iter().map(|s| s.selection).collect(),
        bucket_tags,
    })
}

/// Judges the backups of `bucket` (its ARN) against the policy.
pub fn judge(
    policy: Option<&ResidencyPolicySpec>,
    bucket_arn: &str,
    evidence: Option<&BackupEvidence>,
) -> Check {
    let Some(policy) = policy.filter(|p| p.backup.enabled) else {
        return Check::pass("off; not required by the policy");
    };
    let Some(evidence) = evidence else {
        return Check::fail("the policy asks for backups, but none is recorded for the tenant");
    };
    let Some(plan) = &evidence.plan else {
        return Check::fail("the recorded backup plan does not exist");
    };
    let days = i64::from(policy.backup.retention_days);
    let Some(rule) = plan
        .rules
        .iter()
        .find(|r| r.delete_after_days == Some(days))
    else {
        return Check::fail(format!(
            "no rule of plan {} keeps recovery points {days} days",
            plan.id
        ));
    };
    let home = plan
        .arn
        .parse::<Arn>()
        .map(|arn| arn.region)
        .unwrap_or_default();
    if let Err(why) = copies_allowed(rule, policy, &home) {
        return Check::fail(why);
    }
    let Some(selection) = evidence
        .selections
        .iter()
        .find(|s| selects(s, bucket_arn, &evidence.bucket_tags))
    else {
        return Check::fail(format!(
            "no selection of plan {} takes the bucket by its tags",
            plan.id
        ));
    };
    let copies: Vec<&str> = rule.copies.iter().map(|c| c.vault_arn.as_str()).collect();
    Check::pass(format!(
        "plan {} rule {} ({}) keeps recovery points {days} days in vault {}{}; selection {} takes the bucket by its tags",
        plan.id,
        rule.name,
        rule.schedule,
        rule.vault,
        if copies.is_empty() {
            String::new()
        } else {
            format!(", copied to {}", copies.join(", "))
        },
        selection.name,
    ))
}

/// Every copy goes to an allowed region and keeps its points as long; a copy region the policy
/// names (other than the plan's own, `home`) is among them.
fn copies_allowed(
    rule: &BackupRule,
    policy: &ResidencyPolicySpec,
    home: &str,
) -> Result<(), String> {
    let days = Some(i64::from(policy.backup.retention_days));
    for copy in &rule.copies {
        let region = copy.vault_arn.parse::<Arn>().map(|arn| arn.region);
        match region {
            Ok(region) if policy.allowed_regions.contains(&region) => {}
            _ => {
                return Err(format!(
                    "copies to {}, outside the policy's regions",
                    copy.vault_arn
                ));
            }
        }
        if copy.delete_after_days != days {
            return Err(format!("copies to {} are not kept as long", copy.vault_arn));
        }
    }
    let Some(wanted) = policy.backup.copy_to_region.as_ref().filter(|r| *r != home) else {
        return Ok(());
    };
    let copied = rule.copies.iter().any(|c| {
        c.vault_arn
            .parse::<Arn>()
            .is_ok_and(|arn| &arn.region == wanted)
    });
    copied
        .then_some(())
        .ok_or_else(|| format!("no copy to {wanted}, which the policy asks for"))
}

/// Whether the selection takes the bucket: one of its resources matches, none of its excluded
/// ones does, and the bucket carries every tag its `StringEquals` conditions ask for (any other
/// condition is not understood, so not counted on).
fn selects(selection: &BackupSelection, bucket_arn: &str, tags: &BTreeMap<String, String>) -> bool {
    let included = selection.resources.iter().any(|p| wildcard(p, bucket_arn));
    let excluded = selection
        .not_resources
        .iter()
        .any(|p| wildcard(p, bucket_arn));
    let tags_match = selection.conditions.iter().all(|(operator, key, value)| {
        let tag = key.strip_prefix("aws:ResourceTag/");
        operator == STRING_EQUALS && tag.is_some_and(|tag| tags.get(tag) == Some(value))
    });
    included && !excluded && tags_match && !selection.conditions.is_empty()
}

/// IAM-style `*` matching.
fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    text.is_char_boundary(head.len() + i) && wildcard(rest, &text[head.len() + i..])
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::backup::fixtures;
    use crate::plan::tenant_tags;

    const BUCKET: &str = "arn:aws:s3:::tso-acme-data-0123456789ab";

    fn policy(copy_to: Option<&str>) -> ResidencyPolicySpec {
        fixtures::policy(copy_to, 35)
    }

    fn evidence(policy: &ResidencyPolicySpec) -> BackupEvidence {
        let desired = fixtures::desired(policy, "eu-central-1");
        let id = crate::plan::TenantIdentity {
            cluster_id: "c1".into(),
            namespace: "acme".into(),
            name: "data".into(),
        };
        BackupEvidence {
            plan: Some(ObservedPlan {
                id: "p1".into(),
                arn: "arn:aws:backup:eu-central-1:111122223333:backup-plan:p1".into(),
                tags: desired.vault.tags.clone(),
                rules: vec![desired.rule.clone()],
            }),
            selections: vec![desired.selection],
            bucket_tags: tenant_tags(&id, "eu", "EU"),
        }
    }

    #[test]
    fn what_the_operator_configures_passes() {
        let p = policy(Some("eu-west-1"));
        let check = judge(Some(&p), BUCKET, Some(&evidence(&p)));
        assert!(check.pass, "{check:?}");
        assert!(check.evidence.contains("35 days") && check.evidence.contains("eu-west-1"));
        let off = policy(None);
        let mut off_spec = off.clone();
        off_spec.backup.enabled = false;
        assert!(judge(Some(&off_spec), BUCKET, None).pass);
    }

    fn rule(e: &mut BackupEvidence) -> &mut BackupRule {
        &mut e.plan.as_mut().expect("plan").rules[0]
    }

    #[test]
    fn each_gap_fails_with_its_evidence() {
        let p = policy(Some("eu-west-1"));
        type Break = Box<dyn Fn(&mut BackupEvidence)>;
        let cases: Vec<(&str, Break)> = vec![
            ("does not exist", Box::new(|e| e.plan = None)),
            (
                "keeps recovery points 35",
                Box::new(|e| rule(e).delete_after_days = Some(7)),
            ),
            (
                "outside the policy's regions",
                Box::new(|e| {
                    rule(e).copies[0].vault_arn =
                        "arn:aws:backup:us-east-1:111122223333:backup-vault:x".into()
                }),
            ),
            ("no copy to eu-west-1", Box::new(|e| rule(e).copies.clear())),
            ("takes the bucket", Box::new(|e| e.bucket_tags.clear())),
            (
                "takes the bucket",
                Box::new(|e| e.selections[0].conditions.clear()),
            ),
        ];
        for (why, break_it) in cases {
            let mut ev = evidence(&p);
            break_it(&mut ev);
            let check = judge(Some(&p), BUCKET, Some(&ev));
            assert!(
                !check.pass && check.evidence.contains(why),
                "{why}: {check:?}"
            );
        }
        assert!(!judge(Some(&p), BUCKET, None).pass);
        let log = format!(
            "arn:aws:s3:::{}",
            crate::plan::naming::log_bucket_name("tso", "c1", "eu", "eu-central-1")
        );
        assert!(
            !judge(Some(&p), &log, Some(&evidence(&p))).pass,
            "the operator's buckets are not taken"
        );
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(wildcard("arn:aws:s3:::tso-*", BUCKET));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*c*e", "abcde"));
        assert!(!wildcard("arn:aws:s3:::other-*", BUCKET));
        assert!(!wildcard("a*c", "abcd"));
    }
}
