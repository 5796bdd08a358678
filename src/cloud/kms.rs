use std::collections::{BTreeMap, HashMap};

use aws_sdk_kms::types::{KeySpec, KeyUsageType, Tag};

use super::error::{OperationError, SdkFailure};
use super::{CloudError, Regional};
use crate::plan::ObservedKey;

const KMS: &str = "kms";

/// What KMS says about a key now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub arn: String,
    pub state: String,
    pub deletion_date: Option<String>,
}

fn err<E: OperationError>(op: &'static str) -> impl FnOnce(SdkFailure<E>) -> CloudError {
    move |e| CloudError::from_sdk(KMS, op, e)
}

impl Regional {
    /// The tenant key, found by its alias (no listing, so this stays one call at any scale),
    /// and its rotation if `rotation` (else taken as on: see `controllers::slow_settings`).
    pub async fn observe_key(
        &self,
        alias: &str,
        rotation: bool,
    ) -> Result<Option<ObservedKey>, CloudError> {
        let described = match self.kms.describe_key().key_id(alias).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = CloudError::from_sdk(KMS, "DescribeKey", e);
                return if e.code() == "NotFoundException" {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let meta = described.key_metadata().ok_or(CloudError::Incomplete {
            service: KMS,
            operation: "DescribeKey",
            field: "KeyMetadata",
        })?;
        let state = meta
            .key_state()
            .map_or("Unknown", |s| s.as_str())
            .to_owned();
        // Rotation status cannot be read from a key pending deletion; it does not matter then.
        let rotation_enabled = if state == "PendingDeletion" || state == "PendingReplicaDeletion" {
            false
        } else if !rotation {
            true
        } else {
            self.kms
                .get_key_rotation_status()
                .key_id(meta.key_id())
                .send()
                .await
                .map_err(err("GetKeyRotationStatus"))?
                .key_rotation_enabled()
        };
        Ok(Some(ObservedKey {
            arn: meta
                .arn()
                .map_or_else(|| meta.key_id().to_owned(), str::to_owned),
            key_id: meta.key_id().to_owned(),
            state,
            rotation_enabled,
        }))
    }

    /// Creates a symmetric SSE key carrying the ownership tags; returns `(key id, arn)`.
    pub async fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(String, String), CloudError> {
        self.new_key(description, tags, None).await
    }

    /// Creates an ECC P-256 signing key (deletion certificates) carrying `tags`.
    pub async fn create_signing_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(String, String), CloudError> {
        let signing = (KeySpec::EccNistP256, KeyUsageType::SignVerify);
        self.new_key(description, tags, Some(signing)).await
    }

    async fn new_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
        spec: Option<(KeySpec, KeyUsageType)>,
    ) -> Result<(String, String), CloudError> {
        let (key_spec, key_usage) = spec.unzip();
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
        // Never retried by the SDK: CreateKey is not idempotent, so a retry after an answer
        // that was lost (the key created, the response never received) makes a second key.
        // The caller's write-ahead marker instead has the next attempt find the first key by
        // its tags.
        let out = self
            .kms
            .create_key()
            .description(description)
            .set_key_spec(key_spec)
            .set_key_usage(key_usage)
            .set_tags(Some(tags))
            .customize()
            .config_override(
                aws_sdk_kms::config::Builder::default()
                    .retry_config(aws_config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(err("CreateKey"))?;
        let meta = out.key_metadata().ok_or(CloudError::Incomplete {
            service: KMS,
            operation: "CreateKey",
            field: "KeyMetadata",
        })?;
        let arn = meta
            .arn()
            .map_or_else(|| meta.key_id().to_owned(), str::to_owned);
        Ok((meta.key_id().to_owned(), arn))
    }

    /// Finds an enabled key carrying every tag in `tags`: the key of a creation that was
    /// interrupted before its alias was written. Lists every key in the region (a page per
    /// 1000), but reads the tags only of keys this process has not seen yet: a burst of
    /// interrupted creations among 10,000 keys reads 10,000 tag sets once, not once each.
    pub async fn find_tagged_key(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<(String, String)>, CloudError> {
        let index = &self.key_tags;
        let wanted: Vec<u64> = tags.iter().map(|tag| index.hash(tag)).collect();
        // One search at a time: the next finds what this one read.
        let mut seen = index.seen.lock().await;
        let mut marker = None;
        loop {
            let page = self
                .kms
                .list_keys()
                .set_marker(marker)
                .send()
                .await
                .map_err(err("ListKeys"))?;
            for key in page.keys() {
                let Some(key_id) = key.key_id() else { continue };
                let id = index.hash(key_id);
                // Read now: a key not seen yet, or one whose tags as read before match (a
                // match is confirmed with its tags and state now).
                let now = match seen.get(&id) {
                    Some(hashes) if !wanted.iter().all(|w| hashes.contains(w)) => continue,
                    _ => match self.readable_tags(key_id).await? {
                        Some(now) => now,
                        None => continue,
                    },
                };
                let hashes: Box<[u64]> = now.iter().map(|tag| index.hash(tag)).collect();
                // A key without tags is read again next time: KMS shows a new key's tags some
                // time after creating it, and the key of an interrupted creation must not be
                // remembered as someone else's.
                if !hashes.is_empty() {
                    seen.insert(id, hashes);
                }
                if !tags.iter().all(|(k, v)| now.get(k) == Some(v)) {
                    continue;
                }
                if let Some(found) = self.enabled(key_id).await? {
                    return Ok(Some(found));
                }
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(None),
            }
        }
    }

    /// A key's tags; `None` for a key that shuts the operator out (its policy, or the
    /// operator's own IAM policy: not ours to find) or that was deleted since it was listed.
    /// Any other failure must not pass for "not found".
    async fn readable_tags(
        &self,
        key_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, CloudError> {
        match self.key_tags(key_id).await {
            Ok(tags) => Ok(Some(tags)),
            Err(e) if e.is_denied() || e.is_not_found(&["NotFoundException"]) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `(key id, arn)` of the key if it is enabled.
    async fn enabled(&self, key_id: &str) -> Result<Option<(String, String)>, CloudError> {
        let described = match self.kms.describe_key().key_id(key_id).send().await {
            Ok(described) => described,
            Err(e) => {
                let e = CloudError::from_sdk(KMS, "DescribeKey", e);
                if e.is_denied() || e.is_not_found(&["NotFoundException"]) {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        Ok(described
            .key_metadata()
            .filter(|meta| meta.key_state().is_some_and(|s| s.as_str() == "Enabled"))
            .map(|meta| {
                let arn = meta.arn().map_or_else(|| key_id.to_owned(), str::to_owned);
                (key_id.to_owned(), arn)
            }))
    }

    /// Tags of a key.
    pub async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, CloudError> {
        Ok(self
            .kms
            .list_resource_tags()
            .key_id(key_id)
            .send()
            .await
            .map_err(err("ListResourceTags"))?
            .tags()
            .iter()
            .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
            .collect())
    }

    pub async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), CloudError> {
        self.kms
            .create_alias()
            .alias_name(alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(err("CreateAlias"))?;
        Ok(())
    }

    pub async fn enable_rotation(&self, key_id: &str) -> Result<(), CloudError> {
        self.kms
            .enable_key_rotation()
            .key_id(key_id)
            .send()
            .await
            .map_err(err("EnableKeyRotation"))?;
        Ok(())
    }

    /// Schedules the key's deletion after the policy's waiting period and frees its alias.
    /// Both steps tolerate having been done already, so an interrupted deletion can be retried.
    pub async fn retire_key(
        &self,
        alias: &str,
        key_id: &str,
        window_days: i32,
    ) -> Result<(), CloudError> {
        match self
            .kms
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(window_days)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let e = CloudError::from_sdk(KMS, "ScheduleKeyDeletion", e);
                // KMSInvalidStateException: already pending deletion.
                if !matches!(e.code(), "KMSInvalidStateException" | "NotFoundException") {
                    return Err(e);
                }
            }
        }
        match self.kms.delete_alias().alias_name(alias).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = CloudError::from_sdk(KMS, "DeleteAlias", e);
                if e.code() == "NotFoundException" {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// State of a key (`Enabled`, `Disabled`, `PendingDeletion`, ...) and, when pending
    /// deletion, the date it will be deleted (RFC 3339).
    pub async fn key_state(&self, key_id: &str) -> Result<KeyState, CloudError> {
        let out = self
            .kms
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(err("DescribeKey"))?;
        let meta = out.key_metadata().ok_or(CloudError::Incomplete {
            service: KMS,
            operation: "DescribeKey",
            field: "KeyMetadata",
        })?;
        Ok(KeyState {
            arn: meta
                .arn()
                .map_or_else(|| meta.key_id().to_owned(), str::to_owned),
            state: meta
                .key_state()
                .map_or("Unknown", |s| s.as_str())
                .to_owned(),
            deletion_date: meta
                .deletion_date()
                .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
        })
    }

    /// Disables a key: nothing can be encrypted or decrypted with it from now on.
    pub async fn disable_key(&self, key_id: &str) -> Result<(), CloudError> {
        self.kms
            .disable_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(err("DisableKey"))?;
        Ok(())
    }

    /// Schedules a key's deletion after `window_days` (7-30).
    pub async fn schedule_key_deletion(
        &self,
        key_id: &str,
        window_days: i32,
    ) -> Result<(), CloudError> {
        self.kms
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(window_days)
            .send()
            .await
            .map_err(err("ScheduleKeyDeletion"))?;
        Ok(())
    }
}

/// The tags of the keys of a region seen by key searches, as hashes of each key's id and of
/// each of its tags (some bytes a key: no key id or tag is held). Kept for the process's life:
/// a key someone re-tags after it was read is seen with its new tags after a restart.
#[derive(Debug, Default)]
pub struct KeyTagIndex {
    hasher: std::hash::RandomState,
    seen: tokio::sync::Mutex<HashMap<u64, Box<[u64]>>>,
}

impl KeyTagIndex {
    fn hash<T: std::hash::Hash>(&self, value: T) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(value)
    }
}
