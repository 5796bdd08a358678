//! Evidence that nobody can alter: objects written in COMPLIANCE mode, and signatures by the
//! operator's asymmetric KMS key (created with `create_signing_key`).

use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ObjectLockMode, ServerSideEncryption};
use aws_smithy_types::Blob;

use super::{CloudError, Regional};

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
