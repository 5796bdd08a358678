//! The IAM permissions this project's own identities need, as typed policy documents: printed by
//! `tenant-storage-operator iam-policy`, held by the identities the tests run as, so what is
//! documented, what is tested and what is attached cannot diverge. Pure: no I/O.

use serde::Serialize;
use serde_json::{Value, json};

use super::arn::Arn;
use super::identity::tags;
use super::naming::role_path;

/// `tenancy.dev/role` of the operator's certificate-signing keys.
pub const EVIDENCE_SIGNING: &str = "evidence-signing";

/// An IAM identity-based policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

/// One `Allow` statement.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: &'static str,
    pub effect: &'static str,
    pub action: Vec<&'static str>,
    pub resource: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
}

impl Statement {
    fn allow(sid: &'static str, action: &[&'static str], resource: Vec<String>) -> Self {
        Statement {
            sid,
            effect: "Allow",
            action: action.to_vec(),
            resource,
            condition: None,
        }
    }
}

/// What a deletion Job calls, on tenant buckets (`<prefix>-*`) and the operator's keys only:
/// prove ownership from tags, list and delete every version, marker and incomplete upload, read
/// Object Lock state (never bypass it), crypto-shred the key, sign the certificate and write the
/// evidence. No write to tenant objects, no bucket configuration, no
/// `s3:BypassGovernanceRetention`.
pub fn purge(partition: &str, account_id: &str, bucket_prefix: &str) -> PolicyDocument {
    let buckets = Arn::bucket(partition, &format!("{bucket_prefix}-*"));
    let evidence = Arn::bucket(partition, &format!("{bucket_prefix}-evidence-*"));
    let keys = vec![Arn::kms_key(partition, "*", account_id, "*").to_string()];
    PolicyDocument {
        version: "2012-10-17",
        statement: vec![
            Statement::allow(
                "TenantBuckets",
                &[
                    "s3:GetBucketTagging",
                    "s3:ListBucketVersions",
                    "s3:ListBucketMultipartUploads",
                ],
                vec![buckets.to_string()],
            ),
            // DeleteObjects needs s3:DeleteObject always, and s3:DeleteObjectVersion per
            // version id.
            Statement::allow(
                "TenantObjects",
                &[
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                    "s3:AbortMultipartUpload",
                    "s3:GetObjectRetention",
                    "s3:GetObjectLegalHold",
                ],
                vec![buckets.objects("*").to_string()],
            ),
            // Tenant keys (tagged with their tenant) to prove and shred; never the signing key.
            Statement {
                condition: Some(json!({
                    "StringEquals": {
                        format!("aws:ResourceTag/{}", tags::MANAGED_BY): tags::OPERATOR
                    },
                    "StringLike": {format!("aws:ResourceTag/{}", tags::NAMESPACE): "*"}
                })),
                ..Statement::allow(
                    "TenantKeys",
                    &[
                        "kms:DescribeKey",
                        "kms:ListResourceTags",
                        "kms:DisableKey",
                        "kms:ScheduleKeyDeletion",
                    ],
                    keys.clone(),
                )
            },
            // The operator's signing key: sign, nothing else.
            Statement {
                condition: Some(json!({
                    "StringEquals": {
                        format!("aws:ResourceTag/{}", tags::MANAGED_BY): tags::OPERATOR,
                        format!("aws:ResourceTag/{}", tags::ROLE): EVIDENCE_SIGNING,
                    }
                })),
                ..Statement::allow("SigningKey", &["kms:Sign"], keys)
            },
            // `<prefix>-*` also matches the operator's own buckets: their objects are never the
            // Jobs' to remove.
            Statement {
                effect: "Deny",
                ..Statement::allow(
                    "NotOperatorBuckets",
                    &[
                        "s3:DeleteObject",
                        "s3:DeleteObjectVersion",
                        "s3:AbortMultipartUpload",
                    ],
                    vec![
                        Arn::bucket(partition, &format!("{bucket_prefix}-logs-*"))
                            .objects("*")
                            .to_string(),
                        evidence.objects("deletions/*").to_string(),
                    ],
                )
            },
            // Evidence is written once, under Object Lock; never read back, deleted or
            // re-locked by the Jobs.
            Statement::allow(
                "Evidence",
                &["s3:PutObject", "s3:PutObjectRetention"],
                vec![evidence.objects("deletions/*").to_string()],
            ),
            // The Jobs' own journals (checkpoint, batch records, manifest while it grows),
            // beside the evidence and removed once it is published. Listing the evidence
            // bucket's versions is `TenantBuckets`' s3:ListBucketVersions on `<prefix>-*`.
            // s3:ListBucket on the evidence buckets makes S3 answer a missing checkpoint with
            // 404 rather than 403.
            Statement::allow(
                "Journal",
                &[
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                ],
                vec![evidence.objects("journal/*").to_string()],
            ),
            Statement::allow(
                "JournalLookup",
                &["s3:ListBucket"],
                vec![evidence.to_string()],
            ),
        ],
    }
}

/// `aws:ResourceTag/tenancy.dev/managed-by` (or `aws:RequestTag/...`) is the operator's.
fn managed(key: &str) -> Value {
    json!({"StringEquals": {format!("{key}/{}", tags::MANAGED_BY): tags::OPERATOR}})
}

/// What the operator calls: tenant, log and evidence buckets (`<prefix>-*`) and their
/// configuration, never their objects; KMS keys it creates and tags (every change to a key only
/// on keys tagged as the operator's); aliases under `alias/tenant-storage/`; workload roles
/// under its cluster's role path; and `sts:AssumeRole` of customers' roles for delegated
/// tenants (their trust policy and ExternalId decide).
pub fn operator(
    partition: &str,
    account_id: &str,
    bucket_prefix: &str,
    cluster_id: &str,
) -> PolicyDocument {
    let buckets = Arn::bucket(partition, &format!("{bucket_prefix}-*")).to_string();
    let keys = Arn::kms_key(partition, "*", account_id, "*").to_string();
    let roles = Arn::role(partition, account_id, &role_path(cluster_id), "*").to_string();
    PolicyDocument {
        version: "2012-10-17",
        statement: vec![
            Statement::allow(
                "Buckets",
                &[
                    "s3:CreateBucket",
                    "s3:DeleteBucket",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                    "s3:GetBucketTagging",
                    "s3:PutBucketTagging",
                    "s3:GetEncryptionConfiguration",
                    "s3:PutEncryptionConfiguration",
                    "s3:GetBucketPublicAccessBlock",
                    "s3:PutBucketPublicAccessBlock",
                    "s3:GetBucketOwnershipControls",
                    "s3:PutBucketOwnershipControls",
                    "s3:GetBucketVersioning",
                    "s3:PutBucketVersioning",
                    "s3:GetBucketPolicy",
                    "s3:PutBucketPolicy",
                    "s3:GetBucketLogging",
                    "s3:PutBucketLogging",
                    "s3:GetLifecycleConfiguration",
                    "s3:PutLifecycleConfiguration",
                    // Creating a bucket with Object Lock (the evidence buckets) needs it.
                    "s3:PutBucketObjectLockConfiguration",
                ],
                vec![buckets],
            ),
            // CreateKey names no resource; the key must be created with the operator's tag
            // (which needs kms:TagResource too).
            Statement {
                condition: Some(managed("aws:RequestTag")),
                ..Statement::allow("CreateTaggedKeys", &["kms:CreateKey"], vec!["*".into()])
            },
            Statement {
                condition: Some(managed("aws:RequestTag")),
                ..Statement::allow("TagOwnKeys", &["kms:TagResource"], vec![keys.clone()])
            },
            // Finding keys after a lost CreateKey answer: list, then read tags and metadata.
            Statement::allow("ListKeys", &["kms:ListKeys"], vec!["*".into()]),
            Statement::allow(
                "ReadKeys",
                &["kms:DescribeKey", "kms:ListResourceTags"],
                vec![keys.clone()],
            ),
            Statement {
                condition: Some(managed("aws:ResourceTag")),
                ..Statement::allow(
                    "OwnKeys",
                    &[
                        "kms:GetKeyRotationStatus",
                        "kms:EnableKeyRotation",
                        "kms:ScheduleKeyDeletion",
                        "kms:CreateAlias",
                        "kms:DeleteAlias",
                    ],
                    vec![keys],
                )
            },
            // An alias operation needs rights on the alias as well as on the key.
            Statement::allow(
                "OwnAliases",
                &["kms:CreateAlias", "kms:DeleteAlias"],
                vec![Arn::kms_alias(partition, "*", account_id, "tenant-storage/*").to_string()],
            ),
            Statement::allow(
                "WorkloadRoles",
                &[
                    "iam:GetRole",
                    "iam:CreateRole",
                    "iam:TagRole",
                    "iam:DeleteRole",
                    "iam:UpdateAssumeRolePolicy",
                    "iam:ListRolePolicies",
                    "iam:GetRolePolicy",
                    "iam:PutRolePolicy",
                    "iam:DeleteRolePolicy",
                    "iam:ListAttachedRolePolicies",
                    "iam:DetachRolePolicy",
                    "iam:PutRolePermissionsBoundary",
                    "iam:DeleteRolePermissionsBoundary",
                ],
                vec![roles],
            ),
            // One sweep of every role reads what four calls per tenant role would; IAM
            // grants it on the account only. It returns role documents, which hold no secret.
            Statement::allow(
                "SweepRoles",
                &["iam:GetAccountAuthorizationDetails"],
                vec!["*".to_owned()],
            ),
            // Drift events: CloudTrail grants reading management events on the account only.
            Statement::allow(
                "DriftEvents",
                &["cloudtrail:LookupEvents"],
                vec!["*".to_owned()],
            ),
            Statement::allow(
                "DelegatedTenants",
                &["sts:AssumeRole"],
                vec![Arn::role(partition, "*", "/", "*").to_string()],
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_policy_reaches_only_tenant_buckets_and_operator_keys() {
        let doc = serde_json::to_value(purge("aws", "123456789012", "acme")).expect("json");
        let statements = doc["Statement"].as_array().expect("statements");
        assert_eq!(doc["Version"], "2012-10-17");
        for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
            for r in s["Resource"].as_array().expect("resources") {
                let r = r.as_str().expect("string");
                assert!(
                    r.starts_with("arn:aws:s3:::acme-")
                        || r.starts_with("arn:aws:kms:*:123456789012:key/"),
                    "{r}"
                );
            }
            let actions = s["Action"].to_string();
            assert!(
                !actions.contains('*') && !actions.contains("Bypass"),
                "{actions}"
            );
            // The only writes: evidence and the journal, under their prefixes in the evidence
            // buckets.
            if actions.contains("PutObject") {
                let prefix = match s["Sid"].as_str() {
                    Some("Evidence") => "deletions",
                    Some("Journal") => "journal",
                    other => panic!("{other:?} writes objects"),
                };
                assert_eq!(
                    s["Resource"],
                    serde_json::json!([format!("arn:aws:s3:::acme-evidence-*/{prefix}/*")])
                );
            }
        }
        let by_sid = |sid: &str| {
            statements
                .iter()
                .find(|s| s["Sid"] == sid)
                .unwrap_or_else(|| panic!("statement {sid}"))
        };
        let keys = by_sid("TenantKeys");
        assert_eq!(
            keys["Condition"]["StringEquals"]["aws:ResourceTag/tenancy.dev/managed-by"],
            "tenant-storage-operator"
        );
        assert!(!keys["Action"].to_string().contains("Sign"));
        let signing = by_sid("SigningKey");
        assert_eq!(signing["Action"], serde_json::json!(["kms:Sign"]));
        assert_eq!(
            signing["Condition"]["StringEquals"]["aws:ResourceTag/tenancy.dev/role"],
            "evidence-signing"
        );
        let deny = by_sid("NotOperatorBuckets");
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(
            deny["Resource"],
            serde_json::json!([
                "arn:aws:s3:::acme-logs-*/*",
                "arn:aws:s3:::acme-evidence-*/deletions/*"
            ])
        );
        assert!(
            statements[1]["Action"]
                .to_string()
                .contains("\"s3:DeleteObject\"")
        );
    }

    #[test]
    fn operator_policy_changes_only_what_the_operator_owns() {
        let doc = operator("aws", "123456789012", "acme", "c1");
        for s in &doc.statement {
            assert_eq!(s.effect, "Allow");
            assert!(
                s.action
                    .iter()
                    .all(|a| !a.contains('*') && !a.contains("Object\"")),
                "{:?}",
                s.action
            );
            // No object access at all: tenant data is never the operator's to read or change.
            assert!(
                s.action
                    .iter()
                    .all(|a| !a.starts_with("s3:") || !a.contains("Object") || a.contains("Lock")),
                "{:?}",
                s.action
            );
        }
        let by_sid = |sid: &str| {
            doc.statement
                .iter()
                .find(|s| s.sid == sid)
                .unwrap_or_else(|| panic!("statement {sid}"))
        };
        assert_eq!(by_sid("Buckets").resource, ["arn:aws:s3:::acme-*"]);
        // The one IAM grant on the whole account reads, and only that.
        assert_eq!(
            by_sid("SweepRoles").action,
            ["iam:GetAccountAuthorizationDetails"]
        );
        assert_eq!(by_sid("DriftEvents").action, ["cloudtrail:LookupEvents"]);
        assert_eq!(
            by_sid("WorkloadRoles").resource,
            ["arn:aws:iam::123456789012:role/tenant-storage-operator/c1/*"]
        );
        let tagged = |sid: &str, key: &str| {
            by_sid(sid).condition.as_ref().expect("condition")["StringEquals"]
                [format!("{key}/tenancy.dev/managed-by")]
                == "tenant-storage-operator"
        };
        assert!(tagged("CreateTaggedKeys", "aws:RequestTag"));
        assert!(tagged("TagOwnKeys", "aws:RequestTag"));
        assert!(tagged("OwnKeys", "aws:ResourceTag"));
        assert!(
            by_sid("OwnKeys")
                .action
                .contains(&"kms:ScheduleKeyDeletion")
        );
    }
}
