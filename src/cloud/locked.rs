//! Evidence that nobody can alter: buckets created with S3 Object Lock, objects written in
//! COMPLIANCE mode, and the operator's asymmetric KMS key that signs deletion certificates.

use std::collections::BTreeMap;

use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec, Tag};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, ObjectLockMode, ServerSideEncryption,
};
use aws_smithy_types::Blob;

use super::{CloudError, Regional};

/// The operator's signing key in a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub arn: String,
    pub state: String,
}

impl Regional {
    /// Creates a bucket with Object Lock enabled (which S3 allows only at creation). `false`
    /// when it already existed in our account.
    pub async fn create_locked_bucket(&self, bucket: &str) -> Result<bool, CloudError> {
        let mut req = self
            .s3
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = CloudError::from_sdk("s3", "CreateBucket", e);
                if e.code() == "BucketAlreadyOwnedByYou" {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Writes an object that nobody can delete or overwrite before `retain_until` (RFC 3339):
    /// COMPLIANCE mode, SSE-S3. Returns its version id.
    pub async fn put_locked_object(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: &str,
    ) -> Result<String, CloudError> {
        let until = DateTime::from_str(
            retain_until,
            aws_sdk_s3::primitives::DateTimeFormat::DateTime,
        )
        .map_err(|e| {
            CloudError::Build("PutObject", format!("retain-until {retain_until:?}: {e}"))
        })?;
        let out = self
            .s3
            .put_object()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(until)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("s3", "PutObject", e))?;
        out.version_id()
            .map(str::to_owned)
            .ok_or(CloudError::Incomplete {
                service: "s3",
                operation: "PutObject",
                field: "VersionId (is versioning on?)",
            })
    }

    /// The signing key behind `alias`, if there is one.
    pub async fn signing_key(&self, alias: &str) -> Result<Option<SigningKey>, CloudError> {
        match self.kms.describe_key().key_id(alias).send().await {
            Ok(out) => {
                let meta = out.key_metadata().ok_or(CloudError::Incomplete {
                    service: "kms",
                    operation: "DescribeKey",
                    field: "KeyMetadata",
                })?;
                Ok(Some(SigningKey {
                    arn: meta
                        .arn()
                        .map_or_else(|| meta.key_id().to_owned(), str::to_owned),
                    state: meta
                        .key_state()
                        .map_or("Unknown", |s| s.as_str())
                        .to_owned(),
                }))
            }
            Err(e) => {
                let e = CloudError::from_sdk("kms", "DescribeKey", e);
                if e.code() == "NotFoundException" {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates an ECC P-256 signing key carrying `tags`; returns `(key id, arn)`.
    pub async fn create_signing_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(String, String), CloudError> {
        let tags = tags
            .iter()
            .map(|(k, v)| {
                Tag::builder()
                    .tag_key(k)
                    .tag_value(v)
                    .build()
                    .map_err(|e| CloudError::Build("CreateKey", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .kms
            .create_key()
            .description(description)
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("kms", "CreateKey", e))?;
        let meta = out.key_metadata().ok_or(CloudError::Incomplete {
            service: "kms",
            operation: "CreateKey",
            field: "KeyMetadata",
        })?;
        let arn = meta
            .arn()
            .map_or_else(|| meta.key_id().to_owned(), str::to_owned);
        Ok((meta.key_id().to_owned(), arn))
    }

    /// Signs a SHA-256 digest with ECDSA (DER signature).
    pub async fn sign_digest(&self, key: &str, digest: &[u8]) -> Result<Vec<u8>, CloudError> {
        let out = self
            .kms
            .sign()
            .key_id(key)
            .message(Blob::new(digest))
            .message_type(MessageType::Digest)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("kms", "Sign", e))?;
        out.signature()
            .map(|s| s.as_ref().to_vec())
            .ok_or(CloudError::Incomplete {
                service: "kms",
                operation: "Sign",
                field: "Signature",
            })
    }
}
