//! The IAM permissions this project's own identities need, as typed policy documents: printed by
//! `tenant-storage-operator iam-policy`, held by the identities the tests run as, so what is
//! documented, what is tested and what is attached cannot diverge. Pure: no I/O.

use serde::Serialize;
use serde_json::{Value, json};

use super::tags;

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
    let buckets = format!("arn:{partition}:s3:::{bucket_prefix}-*");
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
                vec![buckets.clone()],
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
                vec![format!("{buckets}/*")],
            ),
            // Tenant keys to shred, and the signing key: the operator's keys only.
            Statement {
                condition: Some(json!({
                    "StringEquals": {
                        format!("aws:ResourceTag/{}", tags::MANAGED_BY): tags::OPERATOR
                    }
                })),
                ..Statement::allow(
                    "OperatorKeys",
                    &[
                        "kms:DescribeKey",
                        "kms:ListResourceTags",
                        "kms:DisableKey",
                        "kms:ScheduleKeyDeletion",
                        "kms:Sign",
                    ],
                    vec![format!("arn:{partition}:kms:*:{account_id}:key/*")],
                )
            },
            // Evidence is written once, under Object Lock; never read back, deleted or
            // re-locked by the Jobs.
            Statement::allow(
                "Evidence",
                &["s3:PutObject", "s3:PutObjectRetention"],
                vec![format!(
                    "arn:{partition}:s3:::{bucket_prefix}-evidence-*/deletions/*"
                )],
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
        for s in statements {
            assert_eq!(s["Effect"], "Allow");
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
            // The only writes: evidence, under its prefix in the evidence buckets.
            if actions.contains("PutObject") {
                assert_eq!(s["Sid"], "Evidence");
                assert_eq!(
                    s["Resource"],
                    serde_json::json!(["arn:aws:s3:::acme-evidence-*/deletions/*"])
                );
            }
        }
        let keys = &statements[2];
        assert_eq!(
            keys["Condition"]["StringEquals"]["aws:ResourceTag/tenancy.dev/managed-by"],
            "tenant-storage-operator"
        );
        assert!(
            statements[1]["Action"]
                .to_string()
                .contains("\"s3:DeleteObject\"")
        );
    }
}
