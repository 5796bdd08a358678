//! The purge engine behind `tenant-storage-operator purge`: deletes every object version and
//! delete marker and aborts every incomplete multipart upload in a DataDeletionRequest's scope,
//! resumably and exactly, verifies, optionally crypto-shreds the tenant key, and writes the
//! deletion certificate.

mod engine;
mod evidence;
mod journal;
mod manifest;
mod records;
mod request;
mod state;

pub use engine::{Engine, JournalKind, Objects, PurgeError, Store, StoreError, UploadPage};
pub(crate) use evidence::retain_until;
pub use evidence::{PART_BYTES, Target as EvidenceTarget};
pub use journal::BucketJournal;
pub(crate) use records::persist;
pub use records::{RECORD_LABEL, RequestRecords, UID_LABEL};
pub(crate) use request::prove_ownership;
pub use request::{Options, Outcome, RequestError, run};
pub use state::{Marker, State};

use crate::cloud::{CloudError, DeleteReport, Regional, VersionLock, VersionPage};

/// The tenant's bucket, through the operator's S3 client (or the Job's).
#[derive(Clone)]
pub struct BucketObjects {
    regional: Regional,
    bucket: String,
}

impl BucketObjects {
    pub fn new(regional: Regional, bucket: String) -> Self {
        BucketObjects { regional, bucket }
    }

    pub fn regional(&self) -> &Regional {
        &self.regional
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl Objects for BucketObjects {
    async fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> Result<VersionPage, CloudError> {
        self.regional
            .list_versions(
                &self.bucket,
                prefix,
                after.map(|m| (m.key.as_str(), m.version_id.as_str())),
                max_keys,
            )
            .await
    }

    async fn delete(&self, versions: &[(String, String)]) -> Result<DeleteReport, CloudError> {
        self.regional.delete_versions(&self.bucket, versions).await
    }

    async fn lock(&self, key: &str, version_id: &str) -> Result<VersionLock, CloudError> {
        self.regional
            .version_lock(&self.bucket, key, version_id)
            .await
    }

    async fn list_uploads(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_uploads: i32,
    ) -> Result<UploadPage, CloudError> {
        let (uploads, next) = self
            .regional
            .list_uploads(
                &self.bucket,
                prefix,
                after.map(|m| (m.key.as_str(), m.version_id.as_str())),
                max_uploads,
            )
            .await?;
        Ok(UploadPage { uploads, next })
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<bool, CloudError> {
        self.regional
            .abort_upload(&self.bucket, key, upload_id)
            .await
    }
}

/// Now, RFC 3339 to the second.
fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
