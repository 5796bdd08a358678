//! Plain objects in the operator's own buckets: the deletion Jobs' journals, kept in the evidence
//! bucket of the tenant's region (nothing of a tenant's keys goes to the cluster), not locked,
//! removed once the evidence is published.

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

use super::{CloudError, Regional};

impl Regional {
    /// Writes an object (SSE-S3); returns its version id, if the bucket is versioned.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<String>, CloudError> {
        let out = self
            .s3
            .put_object()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("s3", "PutObject", e))?;
        Ok(out.version_id().map(str::to_owned))
    }

    /// The latest version of an object, with its version id; `None` when there is none.
    pub async fn get_object_opt(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, CloudError> {
        let out = match self
            .s3
            .get_object()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let e = CloudError::from_sdk("s3", "GetObject", e);
                // Only a missing key: `NoSuchBucket` (or a bare 404) is not "no record".
                return if e.is_not_found(&["NoSuchKey"]) {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        object_bytes(out).await.map(Some)
    }
}

/// A `GetObject` answer's bytes and version id.
pub(super) async fn object_bytes(
    out: GetObjectOutput,
) -> Result<(Vec<u8>, Option<String>), CloudError> {
    let version = out.version_id().map(str::to_owned);
    let body = out.body.collect().await.map_err(|e| CloudError::Api {
        service: "s3",
        operation: "GetObject",
        code: "ReadError".to_owned(),
        message: e.to_string(),
        status: None,
    })?;
    Ok((body.into_bytes().to_vec(), version))
}
