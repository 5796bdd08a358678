//! The desired cloud state of one tenant (its bucket and key), computed from its spec, its
//! policy and operator settings; and of the buckets the operator keeps per policy and region
//! for access logs and deletion evidence.

use std::collections::BTreeMap;

use crate::api::{EncryptionMode, ResidencyPolicySpec, Versioning};

use super::arn::{Arn, partition_of};
use super::diff::{BucketShape, DefaultEncryption, LoggingTarget};
use super::identity::{TenantIdentity, operator_tags, tags, tenant_tags};
use super::policy_document::{PolicyDocument, Principal, Statement};
use super::{access, iam_policy, naming};

/// Everything the tenant's bucket and key must look like.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub bucket: String,
    pub region: String,
    pub partition: &'static str,
    pub key_alias: String,
    /// The policy's encryption mode: the tenant key (SSE-KMS) or S3-managed keys (SSE-S3).
    pub encryption: EncryptionMode,
    pub tags: BTreeMap<String, String>,
    pub versioning: Versioning,
    pub min_tls_version: &'static str,
    pub presigned_max_age_ms: i64,
    /// Where the bucket's access logs go, when the policy asks for access logging.
    pub logging: Option<LoggingTarget>,
    /// A whole-tenant purge is running and the policy refuses new writes meanwhile.
    pub deny_writes: bool,
    /// This is a replica: only S3 replication writes to it, every upload is refused.
    pub replica: bool,
    /// The tenant was refused after the fact and its policy makes such data read-only.
    pub read_only: bool,
    /// Principal ARN patterns that may reach the bucket (tenant role, operator, deletion jobs,
    /// break-glass admins); every other principal is denied. Empty: no such restriction.
    pub allowed_principals: Vec<String>,
}

impl Desired {
    pub fn new(
        bucket_prefix: &str,
        id: &TenantIdentity,
        policy_name: &str,
        policy: &ResidencyPolicySpec,
        region: String,
    ) -> Self {
        let mut tags = tenant_tags(id, policy_name, &policy.jurisdiction);
        if policy.encryption.mode == EncryptionMode::S3Managed {
            tags.insert(tags::ENCRYPTION.to_owned(), "S3Managed".to_owned());
        }
        let logging = policy.access_logging.enabled.then(|| LoggingTarget {
            bucket: naming::log_bucket_name(bucket_prefix, &id.cluster_id, policy_name, &region),
            prefix: format!("{}/{}/", id.namespace, id.name),
        });
        Desired {
            deny_writes: false,
            replica: false,
            read_only: false,
            allowed_principals: Vec::new(),
            logging,
            bucket: naming::bucket_name(bucket_prefix, &id.cluster_id, &id.namespace, &id.name),
            partition: partition_of(&region),
            region,
            key_alias: naming::key_alias(&id.cluster_id, &id.namespace, &id.name),
            encryption: policy.encryption.mode,
            tags,
            versioning: policy.versioning,
            min_tls_version: policy.transport.min_tls_version.as_str(),
            presigned_max_age_ms: policy.transport.presigned_url_max_age_seconds * 1000,
        }
    }

    /// The bucket's full desired shape, given its encryption (the tenant key, or S3's).
    pub fn shape(&self, encryption: &DefaultEncryption) -> BucketShape {
        BucketShape {
            tags: self.tags.clone(),
            encryption: encryption.clone(),
            versioning: Some(self.versioning),
            policy: self.bucket_policy(encryption),
            logging: Some(self.logging.clone()),
            expiration_days: None,
        }
    }

    /// What a refused tenant's bucket keeps: Block Public Access, object ownership, its
    /// encryption and the bucket policy, nothing else managed (tags, versioning and logging stay
    /// as they are).
    pub fn lockdown_shape(&self, encryption: &DefaultEncryption) -> BucketShape {
        BucketShape {
            tags: BTreeMap::new(),
            encryption: encryption.clone(),
            versioning: None,
            policy: self.bucket_policy(encryption),
            logging: None,
            expiration_days: None,
        }
    }

    pub fn bucket_arn(&self) -> String {
        Arn::bucket(self.partition, &self.bucket).to_string()
    }

    /// Human description stored on the KMS key (visible in the AWS console).
    pub fn key_description(&self) -> String {
        format!(
            "tenant-storage-operator: encryption key of bucket {} ({}/{})",
            self.bucket,
            self.tags.get(tags::NAMESPACE).map_or("", String::as_str),
            self.tags.get(tags::NAME).map_or("", String::as_str),
        )
    }

    /// The bucket policy: TLS only (and at least the policy's version), no encryption but the
    /// bucket's own (see [`encryption_statements`]), no customer-provided keys, no stale
    /// presigned URLs. SSE-C (a customer-provided key, AWS's documented `Null` test on its
    /// algorithm header) is denied: such objects would escape the bucket's encryption (and,
    /// with the tenant key, survive crypto-shredding).
    pub fn bucket_policy(&self, encryption: &DefaultEncryption) -> PolicyDocument {
        let bucket = Arn::bucket(self.partition, &self.bucket);
        let objects = bucket.objects("*");
        let mut statements = vec![
            deny_insecure_transport(&bucket),
            deny_all("DenyOutdatedTls", &bucket).condition(
                "NumericLessThan",
                "s3:TlsVersion",
                self.min_tls_version,
            ),
        ];
        statements.extend(encryption_statements(encryption, &objects));
        statements.extend([
            deny_uploads("DenyCustomerProvidedKeys", &objects).condition(
                "Null",
                "s3:x-amz-server-side-encryption-customer-algorithm",
                "false",
            ),
            deny_all("DenyStalePresignedUrls", &bucket)
                .condition("StringEquals", "s3:authType", "REST-QUERY-STRING")
                .condition(
                    "NumericGreaterThan",
                    "s3:signatureAge",
                    self.presigned_max_age_ms,
                ),
        ]);
        if !self.allowed_principals.is_empty() {
            statements.push(access::deny_other_principals(
                &bucket.to_string(),
                &self.allowed_principals,
            ));
        }
        if self.deny_writes {
            statements.push(deny_uploads("DenyWritesDuringPurge", &objects));
        }
        if self.replica {
            statements.push(deny_uploads("DenyWritesToReplica", &objects));
        }
        if self.read_only {
            statements.push(
                Statement::deny("DenyWritesOutsidePolicy")
                    .principal(Principal::Everyone)
                    .actions(["s3:PutObject", "s3:DeleteObject"])
                    .resource(&objects),
            );
        }
        PolicyDocument::new(statements)
    }
}

/// Uploads may ask for the bucket's own encryption or name none (the `Null` guards make each
/// statement apply only to requests that name an encryption or key: negated operators match a
/// missing key, so a request naming none gets the bucket default). With the tenant key: only
/// that key, nothing weaker than SSE-KMS, and not `aws:kms` without a key (that would be the
/// AWS managed key, not the tenant's). With S3-managed keys: only `AES256`, no KMS key.
fn encryption_statements(encryption: &DefaultEncryption, objects: &Arn) -> Vec<Statement> {
    match encryption {
        DefaultEncryption::Kms(key_arn) => vec![
            deny_uploads("DenyOtherKmsKeys", objects)
                .condition("Null", SSE_KMS_KEY, "false")
                .condition("StringNotEquals", SSE_KMS_KEY, key_arn),
            deny_uploads("DenyWeakerEncryption", objects)
                .condition("Null", SSE, "false")
                .condition_any("StringNotEquals", SSE, ["aws:kms", "aws:kms:dsse"]),
            deny_uploads("DenyKmsWithoutTenantKey", objects)
                .condition("Null", SSE, "false")
                .condition("Null", SSE_KMS_KEY, "true"),
        ],
        DefaultEncryption::S3Managed => vec![
            deny_uploads("DenyOtherEncryption", objects)
                .condition("Null", SSE, "false")
                .condition("StringNotEquals", SSE, "AES256"),
            deny_uploads("DenyKmsKeys", objects).condition("Null", SSE_KMS_KEY, "false"),
        ],
    }
}

/// Condition keys of an upload's encryption headers.
const SSE: &str = "s3:x-amz-server-side-encryption";
const SSE_KMS_KEY: &str = "s3:x-amz-server-side-encryption-aws-kms-key-id";

/// A statement denying every principal every action on `bucket` and its objects.
fn deny_all(sid: &str, bucket: &Arn) -> Statement {
    Statement::deny(sid)
        .principal(Principal::Everyone)
        .action("s3:*")
        .resources([bucket.clone(), bucket.objects("*")])
}

/// A statement denying every principal uploads to `objects`.
fn deny_uploads(sid: &str, objects: &Arn) -> Statement {
    Statement::deny(sid)
        .principal(Principal::Everyone)
        .action("s3:PutObject")
        .resource(objects)
}

/// Every bucket the operator keeps refuses plain HTTP.
fn deny_insecure_transport(bucket: &Arn) -> Statement {
    deny_all("DenyInsecureTransport", bucket).condition("Bool", "aws:SecureTransport", "false")
}

/// The service that delivers S3 server access logs.
const S3_LOGGING: &str = "logging.s3.amazonaws.com";

/// Tags of a bucket the operator owns for a policy in a region (access logs, evidence): whose
/// it is and what it is for.
fn operator_bucket_tags(
    cluster_id: &str,
    role: &str,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
) -> BTreeMap<String, String> {
    let mut all = operator_tags(cluster_id, role);
    all.insert(tags::POLICY.to_owned(), policy_name.to_owned());
    all.insert(tags::JURISDICTION.to_owned(), policy.jurisdiction.clone());
    all
}

/// The operator-owned bucket that receives the access logs of one policy's tenants in one
/// region: never outside that region, encrypted, locked down, expiring logs after the policy's
/// retention, writable only by the S3 logging service.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredLogBucket {
    pub bucket: String,
    pub region: String,
    pub tags: BTreeMap<String, String>,
    pub retention_days: i32,
    /// ARN pattern of the buckets allowed to deliver logs here (this operator's tenants).
    pub source_arns: Arn,
}

impl DesiredLogBucket {
    pub fn new(
        bucket_prefix: &str,
        cluster_id: &str,
        policy_name: &str,
        policy: &ResidencyPolicySpec,
        region: &str,
    ) -> Self {
        let tags = operator_bucket_tags(cluster_id, "access-logs", policy_name, policy);
        DesiredLogBucket {
            bucket: naming::log_bucket_name(bucket_prefix, cluster_id, policy_name, region),
            region: region.to_owned(),
            tags,
            retention_days: policy.access_logging.retention_days,
            source_arns: Arn::bucket(partition_of(region), &format!("{bucket_prefix}-*")),
        }
    }

    pub fn shape(&self) -> BucketShape {
        let bucket = Arn::bucket(partition_of(&self.region), &self.bucket);
        let objects = bucket.objects("*");
        let policy = PolicyDocument::new(vec![
            Statement::allow("S3ServerAccessLogsDelivery")
                .principal(Principal::service(S3_LOGGING))
                .action("s3:PutObject")
                .resource(&objects)
                .condition("ArnLike", "aws:SourceArn", &self.source_arns),
            deny_uploads("OnlyS3LoggingWrites", &objects).condition(
                "StringNotEquals",
                "aws:PrincipalServiceName",
                S3_LOGGING,
            ),
            deny_insecure_transport(&bucket),
        ]);
        BucketShape {
            tags: self.tags.clone(),
            // The only default encryption S3 server access logging delivers into.
            encryption: DefaultEncryption::S3Managed,
            versioning: None,
            policy,
            logging: None,
            expiration_days: Some(self.retention_days),
        }
    }
}

/// Where one policy's deletion evidence is kept in one region: an operator-owned bucket with
/// Object Lock (each evidence object is written in COMPLIANCE mode until the policy's retention
/// ends), versioned, SSE-S3 (an auditor needs no KMS grant to read it), TLS only; and the
/// operator's signing key there.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredEvidence {
    pub bucket: String,
    pub region: String,
    pub tags: BTreeMap<String, String>,
    pub retention_days: i32,
    pub signing_key_alias: String,
    /// Tags of the signing key: the operator's, for signing.
    pub signing_key_tags: BTreeMap<String, String>,
}

impl DesiredEvidence {
    pub fn new(
        bucket_prefix: &str,
        cluster_id: &str,
        policy_name: &str,
        policy: &ResidencyPolicySpec,
        region: &str,
    ) -> Self {
        DesiredEvidence {
            bucket: naming::evidence_bucket_name(bucket_prefix, cluster_id, policy_name, region),
            region: region.to_owned(),
            tags: operator_bucket_tags(cluster_id, "deletion-evidence", policy_name, policy),
            retention_days: policy.deletion.evidence_retention_days,
            signing_key_alias: naming::signing_key_alias(cluster_id),
            signing_key_tags: operator_tags(cluster_id, iam_policy::EVIDENCE_SIGNING),
        }
    }

    pub fn shape(&self) -> BucketShape {
        let bucket = Arn::bucket(partition_of(&self.region), &self.bucket);
        BucketShape {
            tags: self.tags.clone(),
            encryption: DefaultEncryption::S3Managed,
            // Object Lock needs versioning; it is on from creation.
            versioning: Some(Versioning::Enabled),
            policy: PolicyDocument::new(vec![deny_insecure_transport(&bucket)]),
            logging: None,
            // Evidence never expires by lifecycle: Object Lock decides how long it stays.
            expiration_days: None,
        }
    }
}

/// Where one policy's exports are kept in one region: an operator-owned bucket in that region
/// (never elsewhere), SSE-S3 by default (each export is uploaded sealed with its tenant's key),
/// unversioned (the lifecycle rule really removes an export after the policy's retention), TLS
/// only, presigned links no older than the policy allows, and readable only by the export
/// identity and the admin principals, so a link (signed by the export identity) is the only
/// way in for anyone else.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredExports {
    pub bucket: String,
    pub region: String,
    pub tags: BTreeMap<String, String>,
    pub retention_days: i32,
    pub presigned_max_age_ms: i64,
    /// Principal ARN patterns that may read exports.
    pub readers: Vec<String>,
}

impl DesiredExports {
    pub fn new(
        bucket_prefix: &str,
        cluster_id: &str,
        policy_name: &str,
        policy: &ResidencyPolicySpec,
        region: &str,
        readers: Vec<String>,
    ) -> Self {
        DesiredExports {
            bucket: naming::export_bucket_name(bucket_prefix, cluster_id, policy_name, region),
            region: region.to_owned(),
            tags: operator_bucket_tags(cluster_id, "exports", policy_name, policy),
            retention_days: policy.export.retention_days,
            presigned_max_age_ms: policy.transport.presigned_url_max_age_seconds * 1000,
            readers,
        }
    }

    pub fn shape(&self) -> BucketShape {
        let bucket = Arn::bucket(partition_of(&self.region), &self.bucket);
        let mut readers = self.readers.clone();
        readers.sort();
        readers.dedup();
        let policy = PolicyDocument::new(vec![
            deny_insecure_transport(&bucket),
            deny_all("DenyStalePresignedUrls", &bucket)
                .condition("StringEquals", "s3:authType", "REST-QUERY-STRING")
                .condition(
                    "NumericGreaterThan",
                    "s3:signatureAge",
                    self.presigned_max_age_ms,
                ),
            Statement::deny("DenyOtherReaders")
                .principal(Principal::Everyone)
                .actions(["s3:GetObject", "s3:GetObjectVersion"])
                .resource(bucket.objects("*"))
                .condition_any("ArnNotLike", "aws:PrincipalArn", readers),
        ]);
        BucketShape {
            tags: self.tags.clone(),
            encryption: DefaultEncryption::S3Managed,
            versioning: None,
            policy,
            logging: None,
            expiration_days: Some(self.retention_days),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EncryptionSpec, TlsVersion, TransportSpec};
    use crate::plan::policy_document::Effect;
    use serde_json::json;

    fn desired() -> Desired {
        let policy = ResidencyPolicySpec {
            jurisdiction: "EU".into(),
            allowed_regions: vec!["eu-central-1".into()],
            default_region: "eu-central-1".into(),
            encryption: EncryptionSpec::default(),
            transport: TransportSpec {
                min_tls_version: TlsVersion::Tls13,
                presigned_url_max_age_seconds: 3600,
            },
            versioning: Versioning::Enabled,
            namespace_selector: None,
            access_logging: crate::api::AccessLoggingSpec::default(),
            deletion: crate::api::DeletionSpec::default(),
            access: crate::api::AccessPolicySpec::default(),
            export: Default::default(),
            replication: Default::default(),
            backup: Default::default(),
            refused_tenant_access: Default::default(),
        };
        let id = TenantIdentity {
            cluster_id: "c1".into(),
            namespace: "acme".into(),
            name: "data".into(),
        };
        Desired::new("tso", &id, "eu", &policy, "eu-central-1".into())
    }

    fn statement<'a>(policy: &'a PolicyDocument, sid: &str) -> &'a Statement {
        policy
            .statement(sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    }

    #[test]
    fn policy_carries_the_policy_intent() {
        let d = desired();
        let arn = "arn:aws:kms:eu-central-1:000000000000:key/k1";
        let p = d.bucket_policy(&DefaultEncryption::Kms(arn.into()));
        let value = |sid, operator, key| statement(&p, sid).condition_values(operator, key);
        assert_eq!(
            value("DenyInsecureTransport", "Bool", "aws:SecureTransport"),
            ["false"]
        );
        assert_eq!(
            value("DenyOutdatedTls", "NumericLessThan", "s3:TlsVersion"),
            ["1.3"]
        );
        assert_eq!(
            value("DenyOtherKmsKeys", "StringNotEquals", SSE_KMS_KEY),
            [arn]
        );
        assert_eq!(
            value(
                "DenyStalePresignedUrls",
                "NumericGreaterThan",
                "s3:signatureAge"
            ),
            ["3600000"]
        );
        assert_eq!(value("DenyKmsWithoutTenantKey", "Null", SSE), ["false"]);
        assert_eq!(
            value("DenyKmsWithoutTenantKey", "Null", SSE_KMS_KEY),
            ["true"]
        );
        for st in &p.statements {
            assert_eq!(
                st.effect,
                Effect::Deny,
                "the policy only ever denies: {st:?}"
            );
        }
    }

    /// Any upload that names a customer-provided key (SSE-C) is refused, on every object of the
    /// bucket, whoever sends it. The emulator never sets the condition key, so this is asserted
    /// here rather than observed.
    #[test]
    fn policy_refuses_customer_provided_keys() {
        let d = desired();
        let p = d.bucket_policy(&DefaultEncryption::Kms(
            "arn:aws:kms:eu-central-1:000000000000:key/k1".into(),
        ));
        assert_eq!(
            serde_json::to_value(statement(&p, "DenyCustomerProvidedKeys")).ok(),
            Some(json!({
                "Sid": "DenyCustomerProvidedKeys",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": format!("{}/*", d.bucket_arn()),
                "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}
            }))
        );
    }

    #[test]
    fn ownership_tags_and_names() {
        let d = desired();
        assert_eq!(d.tags[tags::CLUSTER], "c1");
        assert_eq!(d.tags[tags::JURISDICTION], "EU");
        assert_eq!(d.bucket_arn(), format!("arn:aws:s3:::{}", d.bucket));
    }
}
