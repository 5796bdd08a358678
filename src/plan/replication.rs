//! A tenant's replica: the bucket in a second region (shaped from the primary's [`Desired`]),
//! the role S3 replicates with, and the replication configuration on the primary. Pure: the
//! adapters observe and apply.

use std::collections::BTreeMap;

use super::access::{DesiredRole, s3_via};
use super::arn::Arn;
use super::desired::Desired;
use super::identity::{TenantIdentity, tags};
use super::naming;
use super::policy_document::{PolicyDocument, Principal, Statement};

/// Value of [`tags::COPY`] on a replica bucket, its key and its replication role.
pub const REPLICA: &str = "replica";
/// ID of the one replication rule the operator writes.
pub const RULE_ID: &str = "tenant-storage-replica";
/// The service that assumes the replication role.
const S3_SERVICE: &str = "s3.amazonaws.com";

impl Desired {
    /// The replica of this (primary) bucket in `region`: the same lock-down, its own bucket and
    /// key alias in that region, tagged as a replica, logging to that region's log bucket, and
    /// refusing every upload (only S3 replication writes to it).
    pub fn replica(&self, bucket_prefix: &str, id: &TenantIdentity, region: &str) -> Desired {
        let mut replica = self.clone();
        replica.bucket = naming::replica_bucket_name(
            bucket_prefix,
            &id.cluster_id,
            &id.namespace,
            &id.name,
            region,
        );
        replica.region = region.to_owned();
        replica.partition = super::partition_of(region);
        replica
            .tags
            .insert(tags::COPY.to_owned(), REPLICA.to_owned());
        if let (Some(logging), Some(policy)) = (&mut replica.logging, self.tags.get(tags::POLICY)) {
            logging.bucket = naming::log_bucket_name(bucket_prefix, &id.cluster_id, policy, region);
        }
        replica.deny_writes = false;
        replica.replica = true;
        replica
    }
}

/// The replication rule the operator keeps on a replicated tenant's primary bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    pub role_arn: String,
    pub destination_bucket_arn: String,
    /// The replica's key: SSE-KMS objects are replicated and re-encrypted with it. `None` with
    /// S3-managed keys.
    pub replica_key_arn: Option<String>,
}

/// A primary bucket's replication configuration as S3 reports it, reduced to what the operator
/// compares: one rule in the operator's shape reads back as [`Replication`], anything else as
/// `Other`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ObservedReplication {
    #[default]
    None,
    Ours(Replication),
    /// Rules the operator did not write (or changed since): replaced or removed.
    Other {
        destinations: Vec<String>,
    },
}

/// What to do to the primary's replication configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationChange {
    Put(Replication),
    Remove,
}

/// The change that brings `observed` to `wanted` (no replication when `None`), if any.
pub fn replication_change(
    wanted: Option<&Replication>,
    observed: &ObservedReplication,
) -> Option<ReplicationChange> {
    match (wanted, observed) {
        (None, ObservedReplication::None) => None,
        (None, _) => Some(ReplicationChange::Remove),
        (Some(want), ObservedReplication::Ours(seen)) if seen == want => None,
        (Some(want), _) => Some(ReplicationChange::Put(want.clone())),
    }
}

/// `(path, name, ARN)` of the tenant's replication role.
pub fn replication_role_name(
    partition: &str,
    account_id: &str,
    id: &TenantIdentity,
) -> (String, String, String) {
    let path = naming::role_path(&id.cluster_id);
    let name = naming::replication_role_name(&id.cluster_id, &id.namespace, &id.name);
    let arn = Arn::role(partition, account_id, &path, &name).to_string();
    (path, name, arn)
}

/// The role S3 replicates `primary` into `replica` with: trusted by S3 only, allowed only the
/// replication actions on exactly these two buckets, the primary's key only to decrypt through
/// S3 in the primary's region, the replica's key only to encrypt through S3 in the replica's.
pub fn replication_role(
    account_id: &str,
    id: &TenantIdentity,
    primary: (&Desired, Option<&str>),
    replica: (&Desired, Option<&str>),
) -> DesiredRole {
    let (source, source_key) = primary;
    let (destination, replica_key) = replica;
    let (path, name, arn) = replication_role_name(source.partition, account_id, id);
    let source_arn = Arn::bucket(source.partition, &source.bucket);
    let replica_arn = Arn::bucket(destination.partition, &destination.bucket);
    let mut statements = vec![
        Statement::allow("ReadSourceConfiguration")
            .actions(["s3:GetReplicationConfiguration", "s3:ListBucket"])
            .resource(&source_arn),
        Statement::allow("ReadSourceVersions")
            .actions([
                "s3:GetObjectVersionForReplication",
                "s3:GetObjectVersionAcl",
                "s3:GetObjectVersionTagging",
            ])
            .resource(source_arn.objects("*")),
        Statement::allow("WriteReplica")
            .actions([
                "s3:ReplicateObject",
                "s3:ReplicateDelete",
                "s3:ReplicateTags",
            ])
            .resource(replica_arn.objects("*")),
    ];
    if let Some(key) = source_key {
        statements.push(key_via_s3(
            "DecryptSource",
            "kms:Decrypt",
            key,
            source,
            &source_arn,
        ));
    }
    if let Some(key) = replica_key {
        statements.push(key_via_s3(
            "EncryptReplica",
            "kms:Encrypt",
            key,
            destination,
            &replica_arn,
        ));
    }
    let mut role_tags: BTreeMap<String, String> = source.tags.clone();
    role_tags.insert(tags::COPY.to_owned(), REPLICA.to_owned());
    DesiredRole {
        arn,
        description: format!(
            "tenant-storage-operator: S3 replication of TenantStorage {}/{} into {}",
            id.namespace, id.name, destination.region
        ),
        trust_policy: PolicyDocument::new(vec![
            Statement::allow("S3Replication")
                .principal(Principal::service(S3_SERVICE))
                .action("sts:AssumeRole"),
        ]),
        tags: role_tags,
        inline_policy: Some(PolicyDocument::new(statements)),
        permissions_boundary: None,
        name,
        path,
    }
}

/// A key used only through S3 in the bucket's region, and only for that bucket's objects (with
/// S3 Bucket Keys the encryption context is the bucket's ARN, without them the object's).
fn key_via_s3(sid: &str, action: &str, key: &str, bucket: &Desired, arn: &Arn) -> Statement {
    Statement::allow(sid)
        .action(action)
        .resource(key)
        .condition("StringEquals", "kms:ViaService", s3_via(&bucket.region))
        .condition_any(
            "StringLike",
            "kms:EncryptionContext:aws:s3:arn",
            [arn.to_string(), arn.objects("*").to_string()],
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResidencyPolicySpec;

    fn id() -> TenantIdentity {
        TenantIdentity {
            cluster_id: "c1".into(),
            namespace: "acme".into(),
            name: "data".into(),
        }
    }

    fn primary() -> Desired {
        let policy: ResidencyPolicySpec = serde_json::from_value(serde_json::json!({
            "jurisdiction": "EU",
            "allowedRegions": ["eu-central-1", "eu-west-1"],
            "defaultRegion": "eu-central-1",
            "replication": {"regions": ["eu-west-1"]},
        }))
        .expect("policy");
        Desired::new("tso", &id(), "eu", &policy, "eu-central-1".into())
    }

    #[test]
    fn a_replica_is_locked_down_like_its_primary_in_its_own_region() {
        let primary = primary();
        let replica = primary.replica("tso", &id(), "eu-west-1");
        assert_eq!(replica.region, "eu-west-1");
        assert_ne!(replica.bucket, primary.bucket);
        assert_eq!(
            replica.key_alias, primary.key_alias,
            "an alias is per region"
        );
        assert_eq!(
            replica.tags.get(tags::COPY).map(String::as_str),
            Some(REPLICA)
        );
        let logs = replica.logging.as_ref().expect("logging");
        assert!(logs.bucket.contains("eu-west-1"), "{}", logs.bucket);
        let policy = replica.bucket_policy(&crate::plan::DefaultEncryption::Kms("k".into()));
        for sid in [
            "DenyInsecureTransport",
            "DenyStalePresignedUrls",
            "DenyWritesToReplica",
        ] {
            assert!(policy.statement(sid).is_some(), "{sid} missing");
        }
        let primary_policy =
            primary.bucket_policy(&crate::plan::DefaultEncryption::Kms("k".into()));
        assert!(primary_policy.statement("DenyWritesToReplica").is_none());
    }

    #[test]
    fn the_replication_role_reaches_exactly_the_two_buckets_and_keys() {
        let primary = primary();
        let replica = primary.replica("tso", &id(), "eu-west-1");
        let role = replication_role(
            "111122223333",
            &id(),
            (
                &primary,
                Some("arn:aws:kms:eu-central-1:111122223333:key/a"),
            ),
            (&replica, Some("arn:aws:kms:eu-west-1:111122223333:key/b")),
        );
        assert!(role.arn.starts_with(
            "arn:aws:iam::111122223333:role/tenant-storage-operator/c1/replication-acme-data-"
        ));
        let trust = role.trust_policy.to_json().to_string();
        assert!(
            trust.contains("\"Service\":\"s3.amazonaws.com\""),
            "{trust}"
        );
        let policy = role.inline_policy.expect("inline policy");
        let write = policy.statement("WriteReplica").expect("write");
        assert_eq!(
            write.resources_named(),
            [format!("arn:aws:s3:::{}/*", replica.bucket)]
        );
        let decrypt = policy.statement("DecryptSource").expect("decrypt");
        assert_eq!(decrypt.actions_named(), ["kms:Decrypt"]);
        assert_eq!(
            decrypt.resources_named(),
            ["arn:aws:kms:eu-central-1:111122223333:key/a"]
        );
        assert_eq!(
            decrypt.condition_values("StringEquals", "kms:ViaService"),
            ["s3.eu-central-1.amazonaws.com"]
        );
        let encrypt = policy.statement("EncryptReplica").expect("encrypt");
        assert_eq!(
            encrypt.condition_values("StringEquals", "kms:ViaService"),
            ["s3.eu-west-1.amazonaws.com"]
        );
        let all: Vec<&String> = policy_actions(&policy);
        assert!(
            all.iter().all(|a| a.starts_with("s3:Get")
                || a.starts_with("s3:Replicate")
                || *a == "s3:ListBucket"
                || a.starts_with("kms:")),
            "{all:?}"
        );
    }

    fn policy_actions(policy: &PolicyDocument) -> Vec<&String> {
        [
            "ReadSourceConfiguration",
            "ReadSourceVersions",
            "WriteReplica",
            "DecryptSource",
            "EncryptReplica",
        ]
        .iter()
        .filter_map(|sid| policy.statement(sid))
        .flat_map(|s| s.actions_named())
        .collect()
    }

    #[test]
    fn s3_managed_replication_names_no_key() {
        let primary = primary();
        let replica = primary.replica("tso", &id(), "eu-west-1");
        let role = replication_role("111122223333", &id(), (&primary, None), (&replica, None));
        let policy = role.inline_policy.expect("inline policy");
        assert!(policy.statement("DecryptSource").is_none());
        assert!(policy.statement("EncryptReplica").is_none());
    }

    #[test]
    fn replication_changes_only_when_it_differs() {
        let ours = Replication {
            role_arn: "r".into(),
            destination_bucket_arn: "arn:aws:s3:::b".into(),
            replica_key_arn: Some("k".into()),
        };
        assert_eq!(replication_change(None, &ObservedReplication::None), None);
        assert_eq!(
            replication_change(Some(&ours), &ObservedReplication::Ours(ours.clone())),
            None
        );
        let other_key = Replication {
            replica_key_arn: Some("k2".into()),
            ..ours.clone()
        };
        assert_eq!(
            replication_change(Some(&ours), &ObservedReplication::Ours(other_key)),
            Some(ReplicationChange::Put(ours.clone()))
        );
        let foreign = ObservedReplication::Other {
            destinations: vec!["arn:aws:s3:::elsewhere".into()],
        };
        assert_eq!(
            replication_change(Some(&ours), &foreign),
            Some(ReplicationChange::Put(ours.clone()))
        );
        assert_eq!(
            replication_change(None, &foreign),
            Some(ReplicationChange::Remove)
        );
        assert_eq!(
            replication_change(None, &ObservedReplication::Ours(ours)),
            Some(ReplicationChange::Remove)
        );
    }
}
