//! The IAM permissions this project's own identities need, as typed policy documents: printed by
//! `tenant-storage-operator iam-policy`, held by the identities the tests run as, so what is
//! documented, what is tested and what is attached cannot diverge. Pure: no I/O.

use serde::Serialize;
use serde_json::{Value, json};

use super::tags;

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
    let buckets = format!("arn:{partition}:s3:::{bucket_prefix}-*");
    let keys = vec![format!("arn:{partition}:kms:*:{account_id}:key/*")];
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
                        format!("arn:{partition}:s3:::{bucket_prefix}-logs-*/*"),
                        format!("arn:{partition}:s3:::{bucket_prefix}-evidence-*/deletions/*"),
                    ],
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
            // The Jobs' own journals (checkpoint, batch records, manifest while it grows),
            // beside the evidence and removed once it is published. Listing the evidence
            // bucket's versions is `TenantBuckets`' s3:ListBucketVersions on `<prefix>-*`.
            Statement::allow(
                "Journal",
                &[
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                ],
                vec![format!(
                    "arn:{partition}:s3:::{bucket_prefix}-evidence-*/journal/*"
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
}
