use std::collections::BTreeMap;

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BlockedEncryptionTypes, BucketLifecycleConfiguration,
    BucketLocationConstraint, BucketLoggingStatus, BucketVersioningStatus,
    CreateBucketConfiguration, EncryptionType, ExpirationStatus, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, LoggingEnabled, ObjectOwnership, OwnershipControls,
    OwnershipControlsRule, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    Tag, Tagging, VersioningConfiguration,
};

use super::error::{OperationError, SdkFailure};
use super::{CloudError, Regional};
use crate::api::Versioning;
use crate::plan::{
    BucketChange, BucketShape, DefaultEncryption, LoggingTarget, ObservedBucket,
    ObservedEncryption, PublicAccessBlock,
};

const S3: &str = "s3";

/// What a bucket name refers to, as seen from our account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketPresence {
    Absent,
    /// Exists in our account, in this region.
    Ours {
        region: String,
    },
    /// Exists but HEAD is forbidden: another account's, or ours with permissions missing.
    OtherAccount,
}

/// Tags of a bucket, or the fact that it is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedTags {
    Gone,
    Tags(BTreeMap<String, String>),
}

fn err<E: OperationError>(op: &'static str) -> impl FnOnce(SdkFailure<E>) -> CloudError {
    move |e| CloudError::from_sdk(S3, op, e)
}

fn build(op: &'static str) -> impl FnOnce(aws_sdk_s3::error::BuildError) -> CloudError {
    move |e| CloudError::Build(op, e.to_string())
}

impl Regional {
    /// HEAD the bucket: absent, ours (with its real region), or someone else's.
    pub async fn bucket_presence(&self, bucket: &str) -> Result<BucketPresence, CloudError> {
        match self
            .s3
            .head_bucket()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(BucketPresence::Ours {
                region: out.bucket_region().unwrap_or(&self.region).to_owned(),
            }),
            Err(e) => {
                // AWS answers a HEAD sent to the wrong region with a redirect (301, or 400 for
                // some regions) that still names the bucket's real region.
                let elsewhere = e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map(str::to_owned);
                let e = CloudError::from_sdk(S3, "HeadBucket", e);
                match (e.status(), elsewhere) {
                    (Some(404), _) => Ok(BucketPresence::Absent),
                    (Some(403), _) => Ok(BucketPresence::OtherAccount),
                    (Some(301 | 400), Some(region)) => Ok(BucketPresence::Ours { region }),
                    _ => Err(e),
                }
            }
        }
    }

    /// Whether S3 answers at all (any HTTP status, even 403 or 404, proves endpoint, TLS and
    /// signing work); used for readiness, with a name no tenant bucket can have.
    pub async fn reachable(&self) -> Result<(), CloudError> {
        match self
            .s3
            .head_bucket()
            .bucket("tenant-storage-operator-readiness-probe")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = CloudError::from_sdk(S3, "HeadBucket", e);
                if e.status().is_some() { Ok(()) } else { Err(e) }
            }
        }
    }

    /// The bucket's tags; the first read of every reconcile, so it also tells if the bucket
    /// vanished.
    pub async fn bucket_tags(&self, bucket: &str) -> Result<ObservedTags, CloudError> {
        match self
            .s3
            .get_bucket_tagging()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(ObservedTags::Tags(
                out.tag_set()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect(),
            )),
            Err(e) => {
                let e = CloudError::from_sdk(S3, "GetBucketTagging", e);
                if e.is_not_found(&["NoSuchTagSet", "NoSuchTagSetError"]) {
                    Ok(ObservedTags::Tags(BTreeMap::new()))
                } else if e.is_not_found(&["NoSuchBucket"]) {
                    Ok(ObservedTags::Gone)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Reads, concurrently, every setting that `shape` manages (and nothing else).
    pub async fn observe_bucket(
        &self,
        bucket: &str,
        tags: BTreeMap<String, String>,
        shape: &BucketShape,
    ) -> Result<ObservedBucket, CloudError> {
        let versioning = async {
            match shape.versioning {
                Some(_) => self.versioning(bucket).await,
                None => Ok(None),
            }
        };
        let logging = async {
            match shape.logging {
                Some(_) => self.logging(bucket).await,
                None => Ok(None),
            }
        };
        let expiration = async {
            match shape.expiration_days {
                Some(_) => self.expiration_days(bucket).await,
                None => Ok(None),
            }
        };
        let (
            encryption,
            public_access_block,
            object_ownership,
            versioning,
            policy,
            logging,
            expiration_days,
        ) = futures::try_join!(
            self.bucket_encryption(bucket),
            self.public_access_block(bucket),
            self.object_ownership(bucket),
            versioning,
            self.bucket_policy(bucket),
            logging,
            expiration,
        )?;
        Ok(ObservedBucket {
            tags,
            encryption,
            public_access_block,
            object_ownership,
            versioning,
            policy,
            logging,
            expiration_days,
        })
    }

    /// Where the bucket's access logs go.
    pub async fn logging(&self, bucket: &str) -> Result<Option<LoggingTarget>, CloudError> {
        let out = self
            .s3
            .get_bucket_logging()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
            .map_err(err("GetBucketLogging"))?;
        Ok(out.logging_enabled().map(|l| LoggingTarget {
            bucket: l.target_bucket().to_owned(),
            prefix: l.target_prefix().to_owned(),
        }))
    }

    /// The expiration of the bucket's catch-all lifecycle rule, if that is its only rule.
    async fn expiration_days(&self, bucket: &str) -> Result<Option<i32>, CloudError> {
        match self
            .s3
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(match out.rules() {
                [rule] if rule.status() == &ExpirationStatus::Enabled => {
                    rule.expiration().and_then(|e| e.days())
                }
                _ => None,
            }),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "GetBucketLifecycleConfiguration", e),
                &["NoSuchLifecycleConfiguration"],
            ),
        }
    }

    pub async fn bucket_encryption(
        &self,
        bucket: &str,
    ) -> Result<Option<ObservedEncryption>, CloudError> {
        match self
            .s3
            .get_bucket_encryption()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|rule| {
                    let default = rule.apply_server_side_encryption_by_default()?;
                    Some(ObservedEncryption {
                        algorithm: default.sse_algorithm().as_str().to_owned(),
                        key_id: default.kms_master_key_id().map(str::to_owned),
                        bucket_key: rule.bucket_key_enabled().unwrap_or(false),
                        sse_c_blocked: rule
                            .blocked_encryption_types()
                            .is_some_and(|b| b.encryption_type().contains(&EncryptionType::SseC)),
                    })
                })),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "GetBucketEncryption", e),
                &["ServerSideEncryptionConfigurationNotFoundError"],
            ),
        }
    }

    pub async fn public_access_block(
        &self,
        bucket: &str,
    ) -> Result<Option<PublicAccessBlock>, CloudError> {
        match self
            .s3
            .get_public_access_block()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(out
                .public_access_block_configuration()
                .map(|c| PublicAccessBlock {
                    block_public_acls: c.block_public_acls().unwrap_or(false),
                    ignore_public_acls: c.ignore_public_acls().unwrap_or(false),
                    block_public_policy: c.block_public_policy().unwrap_or(false),
                    restrict_public_buckets: c.restrict_public_buckets().unwrap_or(false),
                })),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "GetPublicAccessBlock", e),
                &["NoSuchPublicAccessBlockConfiguration"],
            ),
        }
    }

    pub async fn object_ownership(&self, bucket: &str) -> Result<Option<String>, CloudError> {
        match self
            .s3
            .get_bucket_ownership_controls()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(out
                .ownership_controls()
                .and_then(|c| c.rules().first())
                .map(|r| r.object_ownership().as_str().to_owned())),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "GetBucketOwnershipControls", e),
                &["OwnershipControlsNotFoundError"],
            ),
        }
    }

    async fn versioning(&self, bucket: &str) -> Result<Option<String>, CloudError> {
        let out = self
            .s3
            .get_bucket_versioning()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
            .map_err(err("GetBucketVersioning"))?;
        Ok(out.status().map(|s| s.as_str().to_owned()))
    }

    pub async fn bucket_policy(&self, bucket: &str) -> Result<Option<String>, CloudError> {
        match self
            .s3
            .get_bucket_policy()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(out) => Ok(out.policy().map(str::to_owned)),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "GetBucketPolicy", e),
                &["NoSuchBucketPolicy"],
            ),
        }
    }

    /// Creates the bucket in this client's region. Returns `false` when it already existed in
    /// our account (`BucketAlreadyOwnedByYou`): not an error, but its ownership must be
    /// re-checked, since someone may have created it since we looked.
    pub async fn create_bucket(&self, bucket: &str) -> Result<bool, CloudError> {
        self.new_bucket(bucket, false).await
    }

    /// The same with S3 Object Lock enabled, which S3 allows only at creation (evidence).
    pub async fn create_locked_bucket(&self, bucket: &str) -> Result<bool, CloudError> {
        self.new_bucket(bucket, true).await
    }

    async fn new_bucket(&self, bucket: &str, object_lock: bool) -> Result<bool, CloudError> {
        let mut req = self
            .s3
            .create_bucket()
            .bucket(bucket)
            .set_object_lock_enabled_for_bucket(object_lock.then_some(true));
        // us-east-1 is the one region that refuses an explicit location constraint.
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
                let e = CloudError::from_sdk(S3, "CreateBucket", e);
                if e.code() == "BucketAlreadyOwnedByYou" {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Applies one planned change.
    pub async fn apply_bucket_change(
        &self,
        bucket: &str,
        change: &BucketChange,
    ) -> Result<(), CloudError> {
        match change {
            BucketChange::Create => self.create_bucket(bucket).await.map(|_| ()),
            BucketChange::PutTags(tags) => {
                let tag_set = tags
                    .iter()
                    .map(|(k, v)| {
                        Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .map_err(build("PutBucketTagging"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let tagging = Tagging::builder()
                    .set_tag_set(Some(tag_set))
                    .build()
                    .map_err(build("PutBucketTagging"))?;
                self.s3
                    .put_bucket_tagging()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .tagging(tagging)
                    .send()
                    .await
                    .map_err(err("PutBucketTagging"))?;
                Ok(())
            }
            BucketChange::PutPublicAccessBlock => {
                let all_on = PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build();
                self.s3
                    .put_public_access_block()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .public_access_block_configuration(all_on)
                    .send()
                    .await
                    .map_err(err("PutPublicAccessBlock"))?;
                Ok(())
            }
            BucketChange::PutOwnershipControls => {
                let rule = OwnershipControlsRule::builder()
                    .object_ownership(ObjectOwnership::BucketOwnerEnforced)
                    .build()
                    .map_err(build("PutBucketOwnershipControls"))?;
                let controls = OwnershipControls::builder()
                    .rules(rule)
                    .build()
                    .map_err(build("PutBucketOwnershipControls"))?;
                self.s3
                    .put_bucket_ownership_controls()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .ownership_controls(controls)
                    .send()
                    .await
                    .map_err(err("PutBucketOwnershipControls"))?;
                Ok(())
            }
            BucketChange::PutEncryption(encryption) => {
                // Uploads naming a customer-provided key (SSE-C) would escape the bucket's key
                // and survive crypto-shredding; S3 refuses them on every bucket here.
                let block_sse_c = BlockedEncryptionTypes::builder()
                    .encryption_type(EncryptionType::SseC)
                    .build();
                let rule = match encryption {
                    DefaultEncryption::Kms(key_arn) => ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::AwsKms)
                                .kms_master_key_id(key_arn)
                                .build()
                                .map_err(build("PutBucketEncryption"))?,
                        )
                        .bucket_key_enabled(true)
                        .blocked_encryption_types(block_sse_c)
                        .build(),
                    DefaultEncryption::S3Managed => ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
                                .build()
                                .map_err(build("PutBucketEncryption"))?,
                        )
                        .blocked_encryption_types(block_sse_c)
                        .build(),
                };
                let config = ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .map_err(build("PutBucketEncryption"))?;
                self.s3
                    .put_bucket_encryption()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .server_side_encryption_configuration(config)
                    .send()
                    .await
                    .map_err(err("PutBucketEncryption"))?;
                Ok(())
            }
            BucketChange::PutVersioning(v) => {
                let status = match v {
                    Versioning::Enabled => BucketVersioningStatus::Enabled,
                    Versioning::Suspended => BucketVersioningStatus::Suspended,
                };
                self.s3
                    .put_bucket_versioning()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .versioning_configuration(
                        VersioningConfiguration::builder().status(status).build(),
                    )
                    .send()
                    .await
                    .map_err(err("PutBucketVersioning"))?;
                Ok(())
            }
            BucketChange::PutLogging(target) => {
                let mut status = BucketLoggingStatus::builder();
                if let Some(t) = target {
                    status = status.logging_enabled(
                        LoggingEnabled::builder()
                            .target_bucket(&t.bucket)
                            .target_prefix(&t.prefix)
                            .build()
                            .map_err(build("PutBucketLogging"))?,
                    );
                }
                self.s3
                    .put_bucket_logging()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .bucket_logging_status(status.build())
                    .send()
                    .await
                    .map_err(err("PutBucketLogging"))?;
                Ok(())
            }
            BucketChange::PutExpiration(days) => {
                let rule = LifecycleRule::builder()
                    .id("expire-access-logs")
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix("").build())
                    .expiration(LifecycleExpiration::builder().days(*days).build())
                    // An upload a killed Job left behind holds parts nobody sees: gone in a day.
                    .abort_incomplete_multipart_upload(
                        AbortIncompleteMultipartUpload::builder()
                            .days_after_initiation(1)
                            .build(),
                    )
                    .build()
                    .map_err(build("PutBucketLifecycleConfiguration"))?;
                let config = BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()
                    .map_err(build("PutBucketLifecycleConfiguration"))?;
                self.s3
                    .put_bucket_lifecycle_configuration()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .lifecycle_configuration(config)
                    .send()
                    .await
                    .map_err(err("PutBucketLifecycleConfiguration"))?;
                Ok(())
            }
            BucketChange::PutPolicy(policy) => {
                self.s3
                    .put_bucket_policy()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .policy(policy)
                    .send()
                    .await
                    .map_err(err("PutBucketPolicy"))?;
                Ok(())
            }
        }
    }

    /// Whether the bucket holds any object version or delete marker.
    pub async fn bucket_has_data(&self, bucket: &str) -> Result<bool, CloudError> {
        let out = self
            .s3
            .list_object_versions()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .max_keys(1)
            .send()
            .await
            .map_err(err("ListObjectVersions"))?;
        Ok(!out.versions().is_empty() || !out.delete_markers().is_empty())
    }

    /// Deletes an empty bucket; a bucket already gone is fine.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), CloudError> {
        match self
            .s3
            .delete_bucket()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "DeleteBucket", e),
                &["NoSuchBucket"],
            )
            .map(|_: Option<()>| ()),
        }
    }
}

fn none_if<T>(e: CloudError, absent_codes: &[&str]) -> Result<Option<T>, CloudError> {
    if e.is_not_found(absent_codes) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// One version or delete marker, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    pub key: String,
    pub version_id: String,
    pub delete_marker: bool,
    /// Bytes; 0 for a delete marker.
    pub size: u64,
    /// Whether it is the key's current version (or, for a marker, whether the key is deleted).
    pub is_latest: bool,
    /// `LastModified`, seconds since the epoch.
    pub last_modified: i64,
}

/// One page of `ListObjectVersions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionPage {
    pub versions: Vec<ListedVersion>,
    /// Where the next page starts (`(key, versionId)` of the last entry of this one); `None`
    /// when the listing is complete.
    pub next: Option<(String, String)>,
}

/// A key `DeleteObjects` did not delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteFailure {
    pub key: String,
    pub version_id: Option<String>,
    pub code: String,
    pub message: String,
}

/// Per-key results of one `DeleteObjects` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteReport {
    /// `(key, versionId)` of every deleted version or marker.
    pub deleted: Vec<(String, Option<String>)>,
    pub failed: Vec<DeleteFailure>,
}

/// Object Lock protection of one version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionLock {
    /// Retention mode (`GOVERNANCE`, `COMPLIANCE`) and its end (RFC 3339).
    pub retention: Option<(String, Option<String>)>,
    pub legal_hold: bool,
}

/// Answers that mean "this version has no Object Lock setting": real S3 says
/// `NoSuchObjectLockConfiguration`, or `InvalidRequest` for a bucket without Object Lock.
const NO_LOCK: &[&str] = &["NoSuchObjectLockConfiguration", "InvalidRequest"];

impl Regional {
    /// One page of versions and delete markers under `prefix`, after `after` (exclusive).
    pub async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        max_keys: i32,
    ) -> Result<VersionPage, CloudError> {
        let mut req = self
            .s3
            .list_object_versions()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .prefix(prefix)
            .max_keys(max_keys);
        // An empty version id: from the key after `key` (all of its versions done).
        match after {
            Some((key, "")) => req = req.key_marker(key),
            Some((key, version_id)) => req = req.key_marker(key).version_id_marker(version_id),
            None => {}
        }
        let out = req.send().await.map_err(err("ListObjectVersions"))?;
        let incomplete = |field| CloudError::Incomplete {
            service: S3,
            operation: "ListObjectVersions",
            field,
        };
        let mut versions = Vec::with_capacity(out.versions().len() + out.delete_markers().len());
        for v in out.versions() {
            versions.push(ListedVersion {
                key: v.key().ok_or_else(|| incomplete("Version.Key"))?.to_owned(),
                // Objects written before versioning was enabled have the version id "null".
                version_id: v.version_id().unwrap_or("null").to_owned(),
                delete_marker: false,
                size: v.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                is_latest: v.is_latest().unwrap_or(false),
                last_modified: v.last_modified().map_or(0, |t| t.secs()),
            });
        }
        for m in out.delete_markers() {
            versions.push(ListedVersion {
                key: m
                    .key()
                    .ok_or_else(|| incomplete("DeleteMarker.Key"))?
                    .to_owned(),
                version_id: m.version_id().unwrap_or("null").to_owned(),
                delete_marker: true,
                size: 0,
                is_latest: m.is_latest().unwrap_or(false),
                last_modified: m.last_modified().map_or(0, |t| t.secs()),
            });
        }
        let next = if out.is_truncated().unwrap_or(false) {
            let key = out
                .next_key_marker()
                .ok_or_else(|| incomplete("NextKeyMarker"))?;
            let version_id = out
                .next_version_id_marker()
                .ok_or_else(|| incomplete("NextVersionIdMarker"))?;
            Some((key.to_owned(), version_id.to_owned()))
        } else {
            None
        };
        Ok(VersionPage { versions, next })
    }

    /// Deletes up to 1000 versions by id (never bypassing Object Lock governance), with a result
    /// per key.
    pub async fn delete_versions(
        &self,
        bucket: &str,
        versions: &[(String, String)],
    ) -> Result<DeleteReport, CloudError> {
        let objects = versions
            .iter()
            .map(|(key, version_id)| {
                aws_sdk_s3::types::ObjectIdentifier::builder()
                    .key(key)
                    .version_id(version_id)
                    .build()
                    .map_err(build("DeleteObjects"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let delete = aws_sdk_s3::types::Delete::builder()
            .set_objects(Some(objects))
            // Quiet: S3 answers only for the keys it could not delete, so every other key sent
            // was deleted (and the purge's verification listing checks that nothing is left).
            // A thousand `Deleted` elements fewer to build, send and parse per call.
            .quiet(true)
            .build()
            .map_err(build("DeleteObjects"))?;
        let out = self
            .s3
            .delete_objects()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .delete(delete)
            .send()
            .await
            .map_err(err("DeleteObjects"))?;
        let failed: Vec<DeleteFailure> = out
            .errors()
            .iter()
            .filter_map(|e| {
                Some(DeleteFailure {
                    key: e.key()?.to_owned(),
                    version_id: e.version_id().map(str::to_owned),
                    code: e.code().unwrap_or("Unknown").to_owned(),
                    message: e.message().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        let not_deleted: std::collections::HashSet<(&str, &str)> = failed
            .iter()
            .map(|f| (f.key.as_str(), f.version_id.as_deref().unwrap_or("null")))
            .collect();
        let sent: std::collections::HashSet<(&str, &str)> = versions
            .iter()
            .map(|(key, version)| (key.as_str(), version.as_str()))
            .collect();
        // An error naming no key, or a key or version not sent, leaves it unknown which keys
        // failed: none is taken as deleted (the caller sends them again).
        if out.errors().len() != failed.len() || !not_deleted.is_subset(&sent) {
            return Ok(DeleteReport {
                deleted: Vec::new(),
                failed,
            });
        }
        let deleted = versions
            .iter()
            .filter(|(key, version)| !not_deleted.contains(&(key.as_str(), version.as_str())))
            .map(|(key, version)| (key.clone(), Some(version.clone())))
            .collect();
        Ok(DeleteReport { deleted, failed })
    }

    /// Retention and legal hold of one version.
    pub async fn version_lock(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<VersionLock, CloudError> {
        let retention = async {
            match self
                .s3
                .get_object_retention()
                .bucket(bucket)
                .set_expected_bucket_owner(self.bucket_owner.clone())
                .key(key)
                .version_id(version_id)
                .send()
                .await
            {
                Ok(out) => Ok(out.retention().and_then(|r| {
                    let mode = r.mode()?.as_str().to_owned();
                    let until = r
                        .retain_until_date()
                        .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
                    Some((mode, until))
                })),
                Err(e) => none_if(CloudError::from_sdk(S3, "GetObjectRetention", e), NO_LOCK)
                    .map(Option::flatten),
            }
        };
        let legal_hold = async {
            match self
                .s3
                .get_object_legal_hold()
                .bucket(bucket)
                .set_expected_bucket_owner(self.bucket_owner.clone())
                .key(key)
                .version_id(version_id)
                .send()
                .await
            {
                Ok(out) => Ok(out
                    .legal_hold()
                    .and_then(|h| h.status())
                    .is_some_and(|s| s.as_str() == "ON")),
                Err(e) => none_if(CloudError::from_sdk(S3, "GetObjectLegalHold", e), NO_LOCK)
                    .map(|on: Option<bool>| on.unwrap_or(false)),
            }
        };
        let (retention, legal_hold) = futures::try_join!(retention, legal_hold)?;
        Ok(VersionLock {
            retention,
            legal_hold,
        })
    }
}

/// `(key, uploadId)` of each incomplete multipart upload on a page, and where the next page
/// starts (`(key, uploadId)` markers; `None` when the listing is complete).
pub type UploadListing = (Vec<(String, String)>, Option<(String, String)>);

impl Regional {
    /// One page of incomplete multipart uploads under `prefix`, after `after` (exclusive).
    /// Both markers are sent: with `key-marker` alone, ministack lists the marker key's uploads
    /// again (AWS skips them).
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        max_uploads: i32,
    ) -> Result<UploadListing, CloudError> {
        let mut req = self
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .prefix(prefix)
            .max_uploads(max_uploads);
        if let Some((key, upload_id)) = after {
            req = req.key_marker(key).upload_id_marker(upload_id);
        }
        let out = req.send().await.map_err(err("ListMultipartUploads"))?;
        let incomplete = |field| CloudError::Incomplete {
            service: S3,
            operation: "ListMultipartUploads",
            field,
        };
        let uploads = out
            .uploads()
            .iter()
            .map(|u| {
                Ok((
                    u.key().ok_or_else(|| incomplete("Upload.Key"))?.to_owned(),
                    u.upload_id()
                        .ok_or_else(|| incomplete("Upload.UploadId"))?
                        .to_owned(),
                ))
            })
            .collect::<Result<Vec<_>, CloudError>>()?;
        let next = if out.is_truncated().unwrap_or(false) {
            let key = out
                .next_key_marker()
                .ok_or_else(|| incomplete("NextKeyMarker"))?;
            let upload_id = out
                .next_upload_id_marker()
                .ok_or_else(|| incomplete("NextUploadIdMarker"))?;
            Some((key.to_owned(), upload_id.to_owned()))
        } else {
            None
        };
        Ok((uploads, next))
    }

    /// Aborts an incomplete multipart upload, deleting its parts. `Ok(false)`: there is no such
    /// upload (already aborted, or completed into an object version, which the version listing
    /// then finds).
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<bool, CloudError> {
        match self
            .s3
            .abort_multipart_upload()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => none_if(
                CloudError::from_sdk(S3, "AbortMultipartUpload", e),
                &["NoSuchUpload"],
            )
            .map(|_: Option<()>| false),
        }
    }
}
