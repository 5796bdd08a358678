//! What the export Jobs call: reading a tenant's object versions as a stream, multipart
//! uploads into the export bucket (encrypted with the tenant's own key where it has one), and
//! presigned download links.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};

use super::{CloudError, Regional};

const S3: &str = "s3";

/// How an export's objects are encrypted: with the tenant's KMS key (a crypto-shred of the
/// tenant makes them unreadable too), or SSE-S3 for a tenant with S3-managed keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sealing {
    TenantKey(String),
    S3Managed,
}

/// A version's bytes, in the chunks S3 sends them.
pub type ByteChunks = futures::stream::BoxStream<'static, Result<Vec<u8>, CloudError>>;

fn read_error(e: impl std::fmt::Display) -> CloudError {
    CloudError::Api {
        service: S3,
        operation: "GetObject",
        code: "ReadError".to_owned(),
        message: e.to_string(),
        status: None,
    }
}

impl Regional {
    /// Version `version_id` of `key` from byte `from` on, streamed.
    pub async fn read_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        from: u64,
    ) -> Result<ByteChunks, CloudError> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .version_id(version_id)
            .set_range((from > 0).then(|| format!("bytes={from}-")))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(S3, "GetObject", e))?;
        // A server may answer a range with the whole object (HTTP allows it; ministack does for
        // a version): then the bytes before `from` are skipped here.
        let skip = if out.content_range().is_some() {
            0
        } else {
            from
        };
        let body: ByteStream = out.body;
        Ok(Box::pin(futures::stream::unfold(
            (body, skip),
            |(mut body, mut skip)| async move {
                loop {
                    let bytes = match body.next().await? {
                        Ok(bytes) => bytes,
                        Err(e) => return Some((Err(read_error(e)), (body, skip))),
                    };
                    let drop = usize::try_from(skip).unwrap_or(usize::MAX).min(bytes.len());
                    skip -= drop as u64;
                    if drop < bytes.len() {
                        return Some((Ok(bytes[drop..].to_vec()), (body, skip)));
                    }
                }
            },
        )))
    }

    pub async fn start_upload(
        &self,
        bucket: &str,
        key: &str,
        sealing: &Sealing,
    ) -> Result<String, CloudError> {
        let req = self
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key);
        let req = match sealing {
            Sealing::TenantKey(arn) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(arn)
                .bucket_key_enabled(true),
            Sealing::S3Managed => req.server_side_encryption(ServerSideEncryption::Aes256),
        };
        let out = req
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(S3, "CreateMultipartUpload", e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or(CloudError::Incomplete {
                service: S3,
                operation: "CreateMultipartUpload",
                field: "UploadId",
            })
    }

    /// Uploads one part; returns its ETag.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String, CloudError> {
        let out = self
            .s3
            .upload_part()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(S3, "UploadPart", e))?;
        out.e_tag()
            .map(str::to_owned)
            .ok_or(CloudError::Incomplete {
                service: S3,
                operation: "UploadPart",
                field: "ETag",
            })
    }

    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), CloudError> {
        let parts = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(S3, "CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// The size of an object; `None` when there is none.
    pub async fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, CloudError> {
        match self
            .s3
            .head_object()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(out.content_length().and_then(|n| u64::try_from(n).ok())),
            Err(e) => {
                let e = CloudError::from_sdk(S3, "HeadObject", e);
                if e.is_not_found(&["NoSuchKey", "NotFound"]) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// How long the credentials this client signs with still live; `None` when they do not
    /// expire (an IAM user's keys).
    pub async fn credentials_left(&self) -> Result<Option<Duration>, CloudError> {
        use aws_sdk_s3::config::ProvideCredentials;
        let Some(provider) = &self.credentials else {
            return Ok(None);
        };
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| CloudError::Build("credentials", e.to_string()))?;
        Ok(credentials.expiry().map(|at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        }))
    }

    /// A GET link to `key` that works for `lifetime` (and no longer than the credentials that
    /// sign it: an assumed-role session's end ends it too).
    pub async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        lifetime: Duration,
    ) -> Result<String, CloudError> {
        let config = PresigningConfig::expires_in(lifetime)
            .map_err(|e| CloudError::Build("presign", e.to_string()))?;
        let request = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| CloudError::from_sdk(S3, "GetObject (presign)", e))?;
        Ok(request.uri().to_owned())
    }
}

impl Regional {
    /// One page of keys under `prefix` after `start_after` (an unversioned bucket's objects),
    /// and where the next page starts. A bucket that does not exist holds nothing.
    pub async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), CloudError> {
        let out = match self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let e = CloudError::from_sdk(S3, "ListObjectsV2", e);
                return if e.code() == "NoSuchBucket" {
                    Ok((Vec::new(), None))
                } else {
                    Err(e)
                };
            }
        };
        let keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        let next = if out.is_truncated().unwrap_or(false) {
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    /// Deletes up to 1000 keys of an unversioned bucket; returns how many S3 confirmed.
    pub async fn delete_keys(&self, bucket: &str, keys: &[String]) -> Result<u64, CloudError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CloudError::Build("DeleteObjects", e.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(false)
            .build()
            .map_err(|e| CloudError::Build("DeleteObjects", e.to_string()))?;
        let out = self
            .s3
            .delete_objects()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .delete(delete)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(S3, "DeleteObjects", e))?;
        if let Some(failed) = out.errors().first() {
            return Err(CloudError::Api {
                service: S3,
                operation: "DeleteObjects",
                code: failed.code().unwrap_or("Unknown").to_owned(),
                message: format!(
                    "{}: {}",
                    failed.key().unwrap_or_default(),
                    failed.message().unwrap_or_default()
                ),
                status: None,
            });
        }
        Ok(out.deleted().len() as u64)
    }
}
