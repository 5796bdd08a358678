//! The desired cloud state of one tenant (its bucket and key), computed from its spec, its
//! policy and operator settings; and of the buckets the operator keeps per policy and region
//! for access logs and deletion evidence.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::{ResidencyPolicySpec, Versioning};

use super::arn::{Arn, partition_of};
use super::diff::{BucketShape, DefaultEncryption, LoggingTarget};
use super::identity::{TenantIdentity, operator_tags, tags, tenant_tags};
use super::{access, iam_policy, naming};

/// Everything the tenant's bucket and key must look like.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub bucket: String,
    pub region: String,
    pub partition: &'static str,
    pub key_alias: String,
    pub tags: BTreeMap<String, String>,
    pub versioning: Versioning,
    pub min_tls_version: &'static str,
    pub presigned_max_age_ms: i64,
    /// Where the bucket's access logs go, when the policy asks for access logging.
    pub logging: Option<LoggingTarget>,
    /// A whole-tenant purge is running and the policy refuses new writes meanwhile.
    pub deny_writes: bool,
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
        let tags = tenant_tags(id, policy_name, &policy.jurisdiction);
        let logging = policy.access_logging.enabled.then(|| LoggingTarget {
            bucket: naming::log_bucket_name(bucket_prefix, &id.cluster_id, policy_name, &region),
            prefix: format!("{}/{}/", id.namespace, id.name),
        });
        Desired {
            deny_writes: false,
            allowed_principals: Vec::new(),
            logging,
            bucket: naming::bucket_name(bucket_prefix, &id.cluster_id, &id.namespace, &id.name),
            partition: partition_of(&region),
            region,
            key_alias: naming::key_alias(&id.cluster_id, &id.namespace, &id.name),
            tags,
            versioning: policy.versioning,
            min_tls_version: policy.transport.min_tls_version.as_str(),
            presigned_max_age_ms: policy.transport.presigned_url_max_age_seconds * 1000,
        }
    }

    /// The bucket's full desired shape, given the tenant key.
    pub fn shape(&self, key_arn: &str) -> BucketShape {
        BucketShape {
            tags: self.tags.clone(),
            encryption: DefaultEncryption::Kms(key_arn.to_owned()),
            versioning: Some(self.versioning),
            policy: self.bucket_policy(key_arn),
            logging: Some(self.logging.clone()),
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

    /// The bucket policy: TLS only (and at least the policy's version), only the tenant key or
    /// no encryption header at all, nothing weaker than SSE-KMS, no stale presigned URLs. A
    /// request asking for `aws:kms` without naming a key would get the AWS managed key, not the
    /// tenant's, so it is denied too. The `Null` guards
    /// make the encryption statements apply only to requests that name an encryption or key
    /// (negated operators match a missing key), so a request naming none gets the bucket default.
    /// SSE-C (a customer-provided key, AWS's documented `Null` test on its algorithm header) is
    /// denied: such objects would escape the tenant key and survive crypto-shredding.
    pub fn bucket_policy(&self, key_arn: &str) -> Value {
        let bucket = Arn::bucket(self.partition, &self.bucket);
        let objects = bucket.objects("*");
        let mut policy = json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket, objects],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}
                },
                {
                    "Sid": "DenyOutdatedTls",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket, objects],
                    "Condition": {"NumericLessThan": {"s3:TlsVersion": self.min_tls_version}}
                },
                {
                    "Sid": "DenyOtherKmsKeys",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": objects,
                    "Condition": {
                        "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
                        "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}
                    }
                },
                {
                    "Sid": "DenyWeakerEncryption",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": objects,
                    "Condition": {
                        "Null": {"s3:x-amz-server-side-encryption": "false"},
                        "StringNotEquals": {"s3:x-amz-server-side-encryption": ["aws:kms", "aws:kms:dsse"]}
                    }
                },
                {
                    "Sid": "DenyKmsWithoutTenantKey",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": objects,
                    "Condition": {"Null": {
                        "s3:x-amz-server-side-encryption": "false",
                        "s3:x-amz-server-side-encryption-aws-kms-key-id": "true"
                    }}
                },
                {
                    "Sid": "DenyCustomerProvidedKeys",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": objects,
                    "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}
                },
                {
                    "Sid": "DenyStalePresignedUrls",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket, objects],
                    "Condition": {
                        "StringEquals": {"s3:authType": "REST-QUERY-STRING"},
                        "NumericGreaterThan": {"s3:signatureAge": self.presigned_max_age_ms.to_string()}
                    }
                }
            ]
        });
        if let Some(statements) = policy["Statement"].as_array_mut() {
            if !self.allowed_principals.is_empty() {
                statements.push(access::deny_other_principals(
                    &bucket.to_string(),
                    &self.allowed_principals,
                ));
            }
            if self.deny_writes {
                statements.push(json!({
                    "Sid": "DenyWritesDuringPurge",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": objects
                }));
            }
        }
        policy
    }
}

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
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "S3ServerAccessLogsDelivery",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": objects,
                    "Condition": {"ArnLike": {"aws:SourceArn": self.source_arns}}
                },
                {
                    "Sid": "OnlyS3LoggingWrites",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": objects,
                    "Condition": {"StringNotEquals": {"aws:PrincipalServiceName": "logging.s3.amazonaws.com"}}
                },
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket, objects],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}
                }
            ]
        });
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
        let objects = bucket.objects("*");
        BucketShape {
            tags: self.tags.clone(),
            encryption: DefaultEncryption::S3Managed,
            // Object Lock needs versioning; it is on from creation.
            versioning: Some(Versioning::Enabled),
            policy: json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket, objects],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}
                }]
            }),
            logging: None,
            // Evidence never expires by lifecycle: Object Lock decides how long it stays.
            expiration_days: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EncryptionSpec, TlsVersion, TransportSpec};

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
        };
        let id = TenantIdentity {
            cluster_id: "c1".into(),
            namespace: "acme".into(),
            name: "data".into(),
        };
        Desired::new("tso", &id, "eu", &policy, "eu-central-1".into())
    }

    fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
        policy["Statement"]
            .as_array()
            .and_then(|s| s.iter().find(|st| st["Sid"] == sid))
            .unwrap_or_else(|| panic!("no statement {sid}"))
    }

    #[test]
    fn policy_carries_the_policy_intent() {
        let d = desired();
        let arn = "arn:aws:kms:eu-central-1:000000000000:key/k1";
        let p = d.bucket_policy(arn);
        assert_eq!(
            statement(&p, "DenyInsecureTransport")["Condition"]["Bool"]["aws:SecureTransport"],
            "false"
        );
        assert_eq!(
            statement(&p, "DenyOutdatedTls")["Condition"]["NumericLessThan"]["s3:TlsVersion"],
            "1.3"
        );
        assert_eq!(
            statement(&p, "DenyOtherKmsKeys")["Condition"]["StringNotEquals"]["s3:x-amz-server-side-encryption-aws-kms-key-id"],
            arn
        );
        assert_eq!(
            statement(&p, "DenyStalePresignedUrls")["Condition"]["NumericGreaterThan"]["s3:signatureAge"],
            "3600000"
        );
        assert_eq!(
            statement(&p, "DenyKmsWithoutTenantKey")["Condition"]["Null"],
            json!({
                "s3:x-amz-server-side-encryption": "false",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": "true"
            })
        );
        for st in p["Statement"].as_array().into_iter().flatten() {
            assert_eq!(st["Effect"], "Deny", "the policy only ever denies: {st}");
        }
    }

    /// Any upload that names a customer-provided key (SSE-C) is refused, on every object of the
    /// bucket, whoever sends it. The emulator never sets the condition key, so this is asserted
    /// here rather than observed.
    #[test]
    fn policy_refuses_customer_provided_keys() {
        let d = desired();
        let p = d.bucket_policy("arn:aws:kms:eu-central-1:000000000000:key/k1");
        assert_eq!(
            *statement(&p, "DenyCustomerProvidedKeys"),
            json!({
                "Sid": "DenyCustomerProvidedKeys",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": format!("{}/*", d.bucket_arn()),
                "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}
            })
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
