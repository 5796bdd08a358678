//! Evidence that nobody can alter: buckets created with S3 Object Lock, objects written in
//! COMPLIANCE mode, and the operator's asymmetric KMS key that signs deletion certificates.

use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ObjectLockMode, ServerSideEncryption};
use aws_smithy_types::Blob;

use super::{CloudError, Regional};

/// The operator's signing key in a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub arn: String,
    pub state: String,
}

impl Regional {
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
