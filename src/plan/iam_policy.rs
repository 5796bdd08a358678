//! The IAM permissions this project's own identities need, as typed policy documents: printed by
//! `tenant-storage-operator iam-policy`, held by the identities the tests run as, so what is
//! documented, what is tested and what is attached cannot diverge. Pure: no I/O.

use super::arn::Arn;
use super::identity::tags;
use super::naming::role_path;
use super::policy_document::{PolicyDocument, Statement};

/// `tenancy.dev/role` of the operator's certificate-signing keys.
pub const EVIDENCE_SIGNING: &str = "evidence-signing";

/// An `Allow` statement as `iam-policy` prints them: actions and resources always as lists.
fn allow<A: ToString, R: ToString>(
    sid: &str,
    actions: impl IntoIterator<Item = A>,
    resources: impl IntoIterator<Item = R>,
) -> Statement {
    Statement::allow(sid).actions(actions).resources(resources)
}

/// What a deletion Job calls, on tenant buckets (`<prefix>-*`) and the operator's keys only:
/// prove ownership from tags, list and delete every version, marker and incomplete upload, read
/// Object Lock state (never bypass it), crypto-shred the key, sign the certificate and write the
/// evidence. No write to tenant objects, no bucket configuration, no
/// `s3:BypassGovernanceRetention`.
pub fn purge(partition: &str, account_id: &str, bucket_prefix: &str) -> PolicyDocument {
    let buckets = Arn::bucket(partition, &format!("{bucket_prefix}-*"));
    let evidence = Arn::bucket(partition, &format!("{bucket_prefix}-evidence-*"));
    let keys = [Arn::kms_key(partition, "*", account_id, "*")];
    PolicyDocument::new(vec![
        allow(
            "TenantBuckets",
            [
                "s3:GetBucketTagging",
                "s3:ListBucketVersions",
                "s3:ListBucketMultipartUploads",
            ],
            [&buckets],
        ),
        // DeleteObjects needs s3:DeleteObject always, and s3:DeleteObjectVersion per
        // version id.
        allow(
            "TenantObjects",
            [
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:AbortMultipartUpload",
                "s3:GetObjectRetention",
                "s3:GetObjectLegalHold",
            ],
            [buckets.objects("*")],
        ),
        // Tenant keys (tagged with their tenant) to prove and shred; never the signing key.
        managed(
            allow(
                "TenantKeys",
                [
                    "kms:DescribeKey",
                    "kms:ListResourceTags",
                    "kms:DisableKey",
                    "kms:ScheduleKeyDeletion",
                ],
                &keys,
            ),
            "aws:ResourceTag",
        )
        .condition(
            "StringLike",
            format!("aws:ResourceTag/{}", tags::NAMESPACE),
            "*",
        ),
        // The operator's signing key: sign, nothing else.
        managed(allow("SigningKey", ["kms:Sign"], &keys), "aws:ResourceTag").condition(
            "StringEquals",
            format!("aws:ResourceTag/{}", tags::ROLE),
            EVIDENCE_SIGNING,
        ),
        // `<prefix>-*` also matches the operator's own buckets: their objects are never the
        // Jobs' to remove.
        Statement::deny("NotOperatorBuckets")
            .actions([
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:AbortMultipartUpload",
            ])
            .resources([
                Arn::bucket(partition, &format!("{bucket_prefix}-logs-*")).objects("*"),
                evidence.objects("deletions/*"),
                evidence.objects("exports/*"),
            ]),
        // Evidence is written once, under Object Lock; never read back, deleted or
        // re-locked by the Jobs.
        allow(
            "Evidence",
            ["s3:PutObject", "s3:PutObjectRetention"],
            [evidence.objects("deletions/*")],
        ),
        // The Jobs' own journals (checkpoint, batch records, manifest while it grows),
        // beside the evidence and removed once it is published. Listing the evidence
        // bucket's versions is `TenantBuckets`' s3:ListBucketVersions on `<prefix>-*`.
        // s3:ListBucket on the evidence buckets makes S3 answer a missing checkpoint with
        // 404 rather than 403.
        allow(
            "Journal",
            [
                "s3:PutObject",
                "s3:GetObject",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
            ],
            [evidence.objects("journal/*")],
        ),
        allow("JournalLookup", ["s3:ListBucket"], [&evidence]),
        // A tenant's exports are its data too: `TenantObjects` deletes them and
        // `TenantBuckets` lists their versions; a plain listing of the export buckets
        // (ListObjectsV2) needs s3:ListBucket.
        allow(
            "ExportBuckets",
            ["s3:ListBucket"],
            [Arn::bucket(partition, &format!("{bucket_prefix}-export-*"))],
        ),
    ])
}

/// What an export Job calls: read a tenant's objects (every version) and prove ownership from
/// tags, decrypt them with the tenant key and re-encrypt the export with it, through S3 only;
/// write the export and its journal into the export buckets (`<prefix>-export-*`), sign the
/// export record and write it beside the deletion evidence. No object of the operator's log or
/// evidence buckets is read, no tenant object written, no key used outside S3.
pub fn export(partition: &str, account_id: &str, bucket_prefix: &str) -> PolicyDocument {
    let buckets = Arn::bucket(partition, &format!("{bucket_prefix}-*"));
    let exports = Arn::bucket(partition, &format!("{bucket_prefix}-export-*"));
    let evidence = Arn::bucket(partition, &format!("{bucket_prefix}-evidence-*"));
    let keys = [Arn::kms_key(partition, "*", account_id, "*")];
    PolicyDocument::new(vec![
        allow(
            "TenantBuckets",
            [
                "s3:GetBucketTagging",
                "s3:ListBucketVersions",
                "s3:ListBucket",
            ],
            [&buckets],
        ),
        allow(
            "TenantObjects",
            ["s3:GetObject", "s3:GetObjectVersion"],
            [buckets.objects("*")],
        ),
        // `<prefix>-*` also matches the operator's own buckets: the Jobs read tenants' data,
        // never the access logs or the evidence.
        Statement::deny("NotOperatorObjects")
            .actions(["s3:GetObject", "s3:GetObjectVersion"])
            .resources([
                Arn::bucket(partition, &format!("{bucket_prefix}-logs-*")).objects("*"),
                evidence.objects("*"),
            ]),
        // Tenant keys (tagged with their tenant), through S3 only: reading a tenant's objects
        // decrypts with its key, and the export is uploaded encrypted with it too, so
        // crypto-shredding the tenant also makes its exports unreadable. Never the signing key.
        managed(
            allow("TenantKeys", ["kms:Decrypt", "kms:GenerateDataKey"], &keys),
            "aws:ResourceTag",
        )
        .condition(
            "StringLike",
            format!("aws:ResourceTag/{}", tags::NAMESPACE),
            "*",
        )
        .condition("StringLike", "kms:ViaService", "s3.*.amazonaws.com"),
        // Before sealing an export with the key named in a tenant's status, the Job proves by
        // its tags that it is that tenant's key.
        managed(
            allow("TenantKeyTags", ["kms:ListResourceTags"], &keys),
            "aws:ResourceTag",
        )
        .condition(
            "StringLike",
            format!("aws:ResourceTag/{}", tags::NAMESPACE),
            "*",
        ),
        // The archive and manifest (multipart uploads, aborted when a killed run left one),
        // and the Jobs' own journal, read back to resume; the lifecycle rule removes both.
        allow(
            "Exports",
            ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
            [exports.objects("exports/*"), exports.objects("journal/*")],
        ),
        // s3:ListBucket also makes S3 answer a missing journal with 404 rather than 403.
        allow(
            "ExportBuckets",
            ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
            [&exports],
        ),
        // The signed export record, written once under Object Lock beside the deletion
        // evidence; never read back, deleted or re-locked by the Jobs.
        allow(
            "Evidence",
            ["s3:PutObject", "s3:PutObjectRetention"],
            [evidence.objects("exports/*")],
        ),
        // The operator's signing key: sign, nothing else.
        managed(allow("SigningKey", ["kms:Sign"], &keys), "aws:ResourceTag").condition(
            "StringEquals",
            format!("aws:ResourceTag/{}", tags::ROLE),
            EVIDENCE_SIGNING,
        ),
    ])
}

/// Adds the condition that `<key>/tenancy.dev/managed-by` (`key`: `aws:ResourceTag` or
/// `aws:RequestTag`) is the operator's.
fn managed(statement: Statement, key: &str) -> Statement {
    statement.condition(
        "StringEquals",
        format!("{key}/{}", tags::MANAGED_BY),
        tags::OPERATOR,
    )
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
    let buckets = [Arn::bucket(partition, &format!("{bucket_prefix}-*"))];
    let keys = [Arn::kms_key(partition, "*", account_id, "*")];
    let roles = [Arn::role(
        partition,
        account_id,
        &role_path(cluster_id),
        "*",
    )];
    PolicyDocument::new(vec![
        allow(
            "Buckets",
            [
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
                // Replicas: Get/Put/DeleteBucketReplication.
                "s3:GetReplicationConfiguration",
                "s3:PutReplicationConfiguration",
            ],
            &buckets,
        ),
        // A replication rule names the role S3 replicates with: only tenants' replication
        // roles, and only to S3.
        allow(
            "PassReplicationRoles",
            ["iam:PassRole"],
            [Arn::role(
                partition,
                account_id,
                &role_path(cluster_id),
                "replication-*",
            )],
        )
        .condition("StringEquals", "iam:PassedToService", "s3.amazonaws.com"),
        // CreateKey names no resource; the key must be created with the operator's tag
        // (which needs kms:TagResource too).
        managed(
            allow("CreateTaggedKeys", ["kms:CreateKey"], ["*"]),
            "aws:RequestTag",
        ),
        managed(
            allow("TagOwnKeys", ["kms:TagResource"], &keys),
            "aws:RequestTag",
        ),
        // Finding keys after a lost CreateKey answer: list, then read tags and metadata.
        allow("ListKeys", ["kms:ListKeys"], ["*"]),
        allow(
            "ReadKeys",
            ["kms:DescribeKey", "kms:ListResourceTags"],
            &keys,
        ),
        managed(
            allow(
                "OwnKeys",
                [
                    "kms:GetKeyRotationStatus",
                    "kms:EnableKeyRotation",
                    "kms:ScheduleKeyDeletion",
                    "kms:CreateAlias",
                    "kms:DeleteAlias",
                ],
                &keys,
            ),
            "aws:ResourceTag",
        ),
        // An alias operation needs rights on the alias as well as on the key.
        allow(
            "OwnAliases",
            ["kms:CreateAlias", "kms:DeleteAlias"],
            [Arn::kms_alias(
                partition,
                "*",
                account_id,
                "tenant-storage/*",
            )],
        ),
        allow(
            "WorkloadRoles",
            [
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
            &roles,
        ),
        // One sweep of every role reads what four calls per tenant role would; IAM
        // grants it on the account only. It returns role documents, which hold no secret.
        allow("SweepRoles", ["iam:GetAccountAuthorizationDetails"], ["*"]),
        // Drift events: CloudTrail grants reading management events on the account only.
        allow("DriftEvents", ["cloudtrail:LookupEvents"], ["*"]),
        allow(
            "DelegatedTenants",
            ["sts:AssumeRole"],
            [Arn::role(partition, "*", "/", "*")],
        ),
    ])
    .with(backup_statements(
        partition,
        account_id,
        bucket_prefix,
        cluster_id,
    ))
}

/// The backups of policies that ask for them: vaults named `<prefix>-*` and plans (which IAM
/// names by id only), the operator's vault keys used as AWS Backup documents for creating a
/// vault, and the one backup role, given only its managed policy and passed only to AWS
/// Backup. The role's other IAM actions are `WorkloadRoles`' (it lives under the same path).
fn backup_statements(
    partition: &str,
    account_id: &str,
    bucket_prefix: &str,
    cluster_id: &str,
) -> Vec<Statement> {
    use super::backup::{BACKUP_SERVICE, S3_BACKUP_POLICY, VAULT_ROLE};
    let vaults = Arn::backup(
        partition,
        "*",
        account_id,
        &format!("backup-vault:{bucket_prefix}-*"),
    );
    let plans = Arn::backup(partition, "*", account_id, "backup-plan:*");
    let keys = [Arn::kms_key(partition, "*", account_id, "*")];
    let role = Arn::role(
        partition,
        account_id,
        &role_path(cluster_id),
        &super::naming::backup_role_name(cluster_id),
    );
    let vault_keys = |statement: Statement| {
        managed(statement, "aws:ResourceTag").condition(
            "StringEquals",
            format!("aws:ResourceTag/{}", tags::ROLE),
            VAULT_ROLE,
        )
    };
    vec![
        allow(
            "BackupVaults",
            [
                "backup:DescribeBackupVault",
                "backup:CreateBackupVault",
                "backup:ListTags",
                "backup:TagResource",
            ],
            [&vaults],
        ),
        allow(
            "BackupPlans",
            [
                "backup:GetBackupPlan",
                "backup:CreateBackupPlan",
                "backup:UpdateBackupPlan",
                "backup:ListTags",
                "backup:TagResource",
                "backup:ListBackupSelections",
                "backup:GetBackupSelection",
                "backup:CreateBackupSelection",
                "backup:DeleteBackupSelection",
            ],
            [&plans],
        ),
        // Plans are found by name: listing them is granted on the account only.
        allow("ListBackupPlans", ["backup:ListBackupPlans"], ["*"]),
        // Creating a vault encrypted with a customer managed key mounts it.
        allow("BackupVaultStorage", ["backup-storage:MountCapsule"], ["*"]),
        vault_keys(allow(
            "BackupVaultKeys",
            [
                "kms:DescribeKey",
                "kms:Decrypt",
                "kms:GenerateDataKey",
                "kms:RetireGrant",
            ],
            &keys,
        )),
        vault_keys(allow("BackupVaultKeyGrants", ["kms:CreateGrant"], &keys)).condition(
            "Bool",
            "kms:GrantIsForAWSResource",
            "true",
        ),
        allow("BackupRolePolicy", ["iam:AttachRolePolicy"], [&role]).condition(
            "ArnEquals",
            "iam:PolicyARN",
            Arn::aws_managed_policy(partition, S3_BACKUP_POLICY),
        ),
        allow("PassBackupRole", ["iam:PassRole"], [&role]).condition(
            "StringEquals",
            "iam:PassedToService",
            BACKUP_SERVICE,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::policy_document::{Effect, VERSION};

    fn by_sid<'a>(doc: &'a PolicyDocument, sid: &str) -> &'a Statement {
        doc.statement(sid)
            .unwrap_or_else(|| panic!("statement {sid}"))
    }

    #[test]
    fn purge_policy_reaches_only_tenant_buckets_and_operator_keys() {
        let doc = purge("aws", "123456789012", "acme");
        assert_eq!(doc.version, VERSION);
        for s in doc.statements.iter().filter(|s| s.effect == Effect::Allow) {
            for r in s.resources_named() {
                assert!(
                    r.starts_with("arn:aws:s3:::acme-")
                        || r.starts_with("arn:aws:kms:*:123456789012:key/"),
                    "{r}"
                );
            }
            let actions = s.actions_named();
            assert!(
                actions
                    .iter()
                    .all(|a| !a.contains('*') && !a.contains("Bypass")),
                "{actions:?}"
            );
            // The only writes: evidence and the journal, under their prefixes in the evidence
            // buckets.
            if actions.iter().any(|a| a == "s3:PutObject") {
                let prefix = match s.sid.as_deref() {
                    Some("Evidence") => "deletions",
                    Some("Journal") => "journal",
                    other => panic!("{other:?} writes objects"),
                };
                assert_eq!(
                    s.resources_named(),
                    [format!("arn:aws:s3:::acme-evidence-*/{prefix}/*")]
                );
            }
        }
        let keys = by_sid(&doc, "TenantKeys");
        assert_eq!(
            keys.condition_values("StringEquals", "aws:ResourceTag/tenancy.dev/managed-by"),
            ["tenant-storage-operator"]
        );
        assert!(!keys.actions_named().iter().any(|a| a.contains("Sign")));
        let signing = by_sid(&doc, "SigningKey");
        assert_eq!(signing.actions_named(), ["kms:Sign"]);
        assert_eq!(
            signing.condition_values("StringEquals", "aws:ResourceTag/tenancy.dev/role"),
            ["evidence-signing"]
        );
        let deny = by_sid(&doc, "NotOperatorBuckets");
        assert_eq!(deny.effect, Effect::Deny);
        assert_eq!(
            deny.resources_named(),
            [
                "arn:aws:s3:::acme-logs-*/*",
                "arn:aws:s3:::acme-evidence-*/deletions/*",
                "arn:aws:s3:::acme-evidence-*/exports/*"
            ]
        );
        // A tenant's exports are deleted with its data: listed, and (`TenantObjects` on
        // `acme-*/*`) deleted.
        assert_eq!(
            by_sid(&doc, "ExportBuckets").resources_named(),
            ["arn:aws:s3:::acme-export-*"]
        );
        assert_eq!(
            by_sid(&doc, "TenantObjects").resources_named(),
            ["arn:aws:s3:::acme-*/*"]
        );
        // The e2e suite takes s3:DeleteObject away from the second statement.
        assert!(
            doc.statements[1]
                .actions_named()
                .iter()
                .any(|a| a == "s3:DeleteObject")
        );
    }

    #[test]
    fn export_policy_reads_tenants_and_writes_only_exports_and_their_records() {
        let doc = export("aws", "123456789012", "acme");
        assert_eq!(doc.version, VERSION);
        for s in doc.statements.iter().filter(|s| s.effect == Effect::Allow) {
            for r in s.resources_named() {
                assert!(
                    r.starts_with("arn:aws:s3:::acme-")
                        || r.starts_with("arn:aws:kms:*:123456789012:key/"),
                    "{r}"
                );
            }
            let actions = s.actions_named();
            assert!(
                actions
                    .iter()
                    .all(|a| !a.contains('*') && !a.contains("Bypass")),
                "{actions:?}"
            );
            // The only writes: the export and its journal in the export buckets, the record
            // in the evidence buckets.
            if actions
                .iter()
                .any(|a| a == "s3:PutObject" || a == "s3:DeleteObject")
            {
                let expected: &[&str] = match s.sid.as_deref() {
                    Some("Exports") => &[
                        "arn:aws:s3:::acme-export-*/exports/*",
                        "arn:aws:s3:::acme-export-*/journal/*",
                    ],
                    Some("Evidence") => &["arn:aws:s3:::acme-evidence-*/exports/*"],
                    other => panic!("{other:?} writes objects"),
                };
                assert_eq!(s.resources_named(), expected);
            }
            assert!(
                !actions.iter().any(|a| a == "s3:DeleteObjectVersion"
                    || a.starts_with("s3:PutBucket")
                    || a == "kms:ScheduleKeyDeletion"
                    || a == "kms:DisableKey"),
                "{actions:?}"
            );
        }
        let deny = by_sid(&doc, "NotOperatorObjects");
        assert_eq!(deny.effect, Effect::Deny);
        assert_eq!(
            deny.actions_named(),
            ["s3:GetObject", "s3:GetObjectVersion"]
        );
        assert_eq!(
            deny.resources_named(),
            [
                "arn:aws:s3:::acme-logs-*/*",
                "arn:aws:s3:::acme-evidence-*/*"
            ]
        );
        let keys = by_sid(&doc, "TenantKeys");
        assert_eq!(
            keys.condition_values("StringEquals", "aws:ResourceTag/tenancy.dev/managed-by"),
            ["tenant-storage-operator"]
        );
        assert_eq!(
            keys.condition_values("StringLike", "aws:ResourceTag/tenancy.dev/namespace"),
            ["*"]
        );
        // Only through S3: the Job never decrypts or generates data keys itself.
        assert_eq!(
            keys.condition_values("StringLike", "kms:ViaService"),
            ["s3.*.amazonaws.com"]
        );
        assert!(!keys.actions_named().iter().any(|a| a.contains("Sign")));
        let signing = by_sid(&doc, "SigningKey");
        assert_eq!(signing.actions_named(), ["kms:Sign"]);
        assert_eq!(
            signing.condition_values("StringEquals", "aws:ResourceTag/tenancy.dev/role"),
            ["evidence-signing"]
        );
        assert_eq!(
            by_sid(&doc, "ExportBuckets").resources_named(),
            ["arn:aws:s3:::acme-export-*"]
        );
        // Only KMS statements name keys, and each is limited to the operator's.
        for s in &doc.statements {
            if s.actions_named().iter().any(|a| a.starts_with("kms:")) {
                assert_eq!(
                    s.condition_values("StringEquals", "aws:ResourceTag/tenancy.dev/managed-by"),
                    ["tenant-storage-operator"],
                    "{:?}",
                    s.sid
                );
            }
        }
    }

    #[test]
    fn operator_policy_reaches_only_its_backups() {
        let doc = operator("aws", "123456789012", "acme", "c1");
        let by_sid = |sid| by_sid(&doc, sid);
        assert_eq!(
            by_sid("BackupVaults").resources_named(),
            ["arn:aws:backup:*:123456789012:backup-vault:acme-*"]
        );
        let backup_actions: Vec<&String> = doc
            .statements
            .iter()
            .flat_map(|s| s.actions_named())
            .filter(|a| a.starts_with("backup:"))
            .collect();
        // Nothing that removes a recovery point, a vault or a plan, or starts a restore.
        assert!(
            backup_actions
                .iter()
                .all(|a| !a.contains("Delete") || *a == "backup:DeleteBackupSelection")
                && !backup_actions.iter().any(|a| a.contains("Restore")),
            "{backup_actions:?}"
        );
        let role = format!(
            "arn:aws:iam::123456789012:role/tenant-storage-operator/c1/{}",
            crate::plan::naming::backup_role_name("c1")
        );
        let pass = by_sid("PassBackupRole");
        assert_eq!(pass.resources_named(), std::slice::from_ref(&role));
        assert_eq!(
            pass.condition_values("StringEquals", "iam:PassedToService"),
            ["backup.amazonaws.com"]
        );
        let attach = by_sid("BackupRolePolicy");
        assert_eq!(attach.resources_named(), [role]);
        assert_eq!(
            attach.condition_values("ArnEquals", "iam:PolicyARN"),
            ["arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Backup"]
        );
        for sid in ["BackupVaultKeys", "BackupVaultKeyGrants"] {
            assert_eq!(
                by_sid(sid).condition_values("StringEquals", "aws:ResourceTag/tenancy.dev/role"),
                ["backup-vault"]
            );
        }
        // The role it is passed to lies under the path the operator's role rights cover.
        assert!(
            by_sid("WorkloadRoles").resources_named()[0]
                .strip_suffix('*')
                .is_some_and(|path| pass.resources_named()[0].starts_with(path))
        );
    }

    #[test]
    fn operator_policy_changes_only_what_the_operator_owns() {
        let doc = operator("aws", "123456789012", "acme", "c1");
        for s in &doc.statements {
            assert_eq!(s.effect, Effect::Allow);
            let actions = s.actions_named();
            assert!(actions.iter().all(|a| !a.contains('*')), "{actions:?}");
            // No object access at all: tenant data is never the operator's to read or change.
            assert!(
                actions
                    .iter()
                    .all(|a| !a.starts_with("s3:") || !a.contains("Object") || a.contains("Lock")),
                "{actions:?}"
            );
        }
        let by_sid = |sid| by_sid(&doc, sid);
        assert_eq!(by_sid("Buckets").resources_named(), ["arn:aws:s3:::acme-*"]);
        // The one IAM grant on the whole account reads, and only that.
        assert_eq!(
            by_sid("SweepRoles").actions_named(),
            ["iam:GetAccountAuthorizationDetails"]
        );
        assert_eq!(
            by_sid("DriftEvents").actions_named(),
            ["cloudtrail:LookupEvents"]
        );
        assert_eq!(
            by_sid("WorkloadRoles").resources_named(),
            ["arn:aws:iam::123456789012:role/tenant-storage-operator/c1/*"]
        );
        let tagged = |sid, key: &str| {
            by_sid(sid).condition_values("StringEquals", &format!("{key}/tenancy.dev/managed-by"))
                == ["tenant-storage-operator"]
        };
        assert!(tagged("CreateTaggedKeys", "aws:RequestTag"));
        assert!(tagged("TagOwnKeys", "aws:RequestTag"));
        assert!(tagged("OwnKeys", "aws:ResourceTag"));
        assert!(
            by_sid("OwnKeys")
                .actions_named()
                .iter()
                .any(|a| a == "kms:ScheduleKeyDeletion")
        );
    }
}
