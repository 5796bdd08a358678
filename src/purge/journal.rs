//! The purge's checkpoint, write-ahead batch records and journals, kept in the evidence bucket of
//! the tenant's region under `journal/<namespace>/<request>/<uid>/`: `state.json`,
//! `batch-<slot>.tsv` (the batch id on the first line), `manifest-NNNN.tsv` and
//! `locked-NNNN.tsv`. Only the operator's identities can reach that bucket (no tenant can forge
//! or alter a record), the tenant's object keys never enter the cluster's etcd, and the API
//! server carries only the request's status, at most every [`PROGRESS_EVERY`]. Once the
//! evidence is published, [`Store::discard`] removes the journal but for the checkpoint's last
//! version (a rerun re-publishes from it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::engine::{JournalKind, Store, StoreError};
use super::records::RequestRecords;
use super::state::State;
use crate::cloud::{CloudError, Regional, VersionPage};

/// Least time between two progress updates of the request's status.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Versions per listing or `DeleteObjects` call when discarding.
const PAGE: i32 = 1000;

pub struct BucketJournal {
    regional: Regional,
    bucket: String,
    /// `journal/<namespace>/<request>/<uid>/`.
    root: String,
    records: RequestRecords,
    /// Version id of the checkpoint last read or written: the one [`Store::discard`] keeps.
    state_version: Mutex<Option<String>>,
    last_progress: Mutex<Option<Instant>>,
}

fn journal_name(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Manifest => "manifest",
        JournalKind::Locked => "locked",
    }
}

impl BucketJournal {
    pub fn new(regional: Regional, bucket: String, root: String, records: RequestRecords) -> Self {
        BucketJournal {
            regional,
            bucket,
            root,
            records,
            state_version: Mutex::new(None),
            last_progress: Mutex::new(None),
        }
    }

    /// The request's status and certificate, in the cluster.
    pub fn records(&self) -> &RequestRecords {
        &self.records
    }

    /// Where the checkpoint is, for messages.
    pub fn state_uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.state_key())
    }

    fn state_key(&self) -> String {
        format!("{}state.json", self.root)
    }

    fn batch_key(&self, slot: u32) -> String {
        format!("{}batch-{slot}.tsv", self.root)
    }

    fn chunk_key(&self, kind: JournalKind, index: u32) -> String {
        format!("{}{}-{index:04}.tsv", self.root, journal_name(kind))
    }

    fn s3_err(&self, what: String) -> impl FnOnce(CloudError) -> StoreError + '_ {
        move |source| StoreError::Cloud {
            what: format!("{what} in bucket {}", self.bucket),
            source,
        }
    }

    async fn put(&self, key: &str, body: String) -> Result<Option<String>, StoreError> {
        self.regional
            .put_object(&self.bucket, key, body.into_bytes())
            .await
            .map_err(self.s3_err(format!("writing {key}")))
    }

    async fn get(&self, key: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        let Some((bytes, version)) = self
            .regional
            .get_object_opt(&self.bucket, key)
            .await
            .map_err(self.s3_err(format!("reading {key}")))?
        else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|e| StoreError::Invalid {
            what: key.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Some((text, version)))
    }

    /// When there is no checkpoint: a record that only a run that had checkpointed can have
    /// written (a manifest or locked-version chunk, or published evidence under `evidence`), so
    /// the checkpoint was lost or removed and starting over would certify only what the new run
    /// deletes. Batch records alone are not such a record: they are written before the first
    /// checkpoint, and nothing is sent before it.
    pub async fn orphan(&self, evidence: &str) -> Result<Option<String>, StoreError> {
        let chunks = [JournalKind::Manifest, JournalKind::Locked]
            .map(|kind| format!("{}{}-", self.root, journal_name(kind)));
        for prefix in chunks.iter().map(String::as_str).chain([evidence]) {
            if let Some(found) = self.list(prefix, None).await?.versions.first() {
                return Ok(Some(format!("s3://{}/{}", self.bucket, found.key)));
            }
        }
        Ok(None)
    }

    /// One page of the versions under `prefix`, after `after`.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
    ) -> Result<VersionPage, StoreError> {
        self.regional
            .list_versions(
                &self.bucket,
                prefix,
                after.map(|(k, v)| (k.as_str(), v.as_str())),
                PAGE,
            )
            .await
            .map_err(self.s3_err(format!("listing {prefix}")))
    }

    /// Deletes every version under `prefix` that `keep` does not keep.
    async fn delete_versions(
        &self,
        prefix: &str,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<(), StoreError> {
        // Listing after a version that was just deleted may skip the rest of its key (see the
        // engine), so the listing restarts where it was and only moves past kept versions.
        let mut after: Option<(String, String)> = None;
        let mut previous: Vec<(String, String)> = Vec::new();
        loop {
            let page = self.list(prefix, after.as_ref()).await?;
            let doomed: Vec<(String, String)> = page
                .versions
                .into_iter()
                .filter(|v| !keep(&v.key, &v.version_id))
                .map(|v| (v.key, v.version_id))
                .collect();
            if !doomed.is_empty() && doomed == previous {
                return Err(StoreError::Invalid {
                    what: format!("removing the journal under {prefix}"),
                    detail:
                        "DeleteObjects reported these versions deleted, yet they are still listed"
                            .to_owned(),
                });
            }
            if !doomed.is_empty() {
                let report = self
                    .regional
                    .delete_versions(&self.bucket, &doomed)
                    .await
                    .map_err(self.s3_err("deleting journal objects".to_owned()))?;
                if let Some(f) = report.failed.first() {
                    return Err(StoreError::Invalid {
                        what: format!("deleting journal object {}", f.key),
                        detail: format!("{}: {}", f.code, f.message),
                    });
                }
            }
            match page.next {
                None => return Ok(()),
                Some(next) if doomed.is_empty() => after = Some(next),
                Some(_) => previous = doomed,
            }
        }
    }
}

impl Store for BucketJournal {
    async fn load_state(&self) -> Result<Option<State>, StoreError> {
        let key = self.state_key();
        let Some((json, version)) = self.get(&key).await? else {
            return Ok(None);
        };
        let state = serde_json::from_str(&json).map_err(|e| StoreError::Invalid {
            what: self.state_uri(),
            detail: e.to_string(),
        })?;
        *self.state_version.lock().unwrap_or_else(|p| p.into_inner()) = version;
        Ok(Some(state))
    }

    async fn save_state(&self, state: &State) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|e| StoreError::Invalid {
            what: "checkpoint".to_owned(),
            detail: e.to_string(),
        })?;
        let version = self.put(&self.state_key(), json).await?;
        *self.state_version.lock().unwrap_or_else(|p| p.into_inner()) = version;
        Ok(())
    }

    async fn progress(&self, state: &State) -> Result<(), StoreError> {
        {
            let mut last = self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        self.records
            .patch_status(serde_json::json!({ "progress": state.progress() }))
            .await
    }

    async fn write_batch(&self, slot: u32, id: u64, lines: &str) -> Result<(), StoreError> {
        self.put(&self.batch_key(slot), format!("{id}\n{lines}"))
            .await
            .map(drop)
    }

    async fn read_batch(&self, slot: u32) -> Result<Option<(u64, String)>, StoreError> {
        let key = self.batch_key(slot);
        let Some((text, _)) = self.get(&key).await? else {
            return Ok(None);
        };
        let (id, lines) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let id = id.parse().map_err(|_| StoreError::Invalid {
            what: key.clone(),
            detail: "its first line is not a batch id".to_owned(),
        })?;
        Ok(Some((id, lines.to_owned())))
    }

    async fn write_chunk(
        &self,
        kind: JournalKind,
        index: u32,
        text: &str,
    ) -> Result<(), StoreError> {
        self.put(&self.chunk_key(kind, index), text.to_owned())
            .await
            .map(drop)
    }

    async fn read_chunk(
        &self,
        kind: JournalKind,
        index: u32,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(&self.chunk_key(kind, index))
            .await?
            .map(|(text, _)| text))
    }

    async fn chunk_indices(&self, kind: JournalKind) -> Result<Vec<u32>, StoreError> {
        let prefix = format!("{}{}-", self.root, journal_name(kind));
        let mut indices = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = self.list(&prefix, after.as_ref()).await?;
            indices.extend(page.versions.iter().filter_map(|v| {
                v.key
                    .strip_prefix(&prefix)?
                    .strip_suffix(".tsv")?
                    .parse::<u32>()
                    .ok()
            }));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        indices.sort_unstable();
        indices.dedup();
        Ok(indices)
    }

    async fn delete_chunk(&self, kind: JournalKind, index: u32) -> Result<(), StoreError> {
        let key = self.chunk_key(kind, index);
        self.delete_versions(&key, |k, _| k != key).await
    }

    async fn discard(&self) -> Result<(), StoreError> {
        let state_key = self.state_key();
        let state_version = self
            .state_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.delete_versions(&self.root, |key, version| {
            key == state_key && state_version.as_deref().is_none_or(|kept| kept == version)
        })
        .await
    }
}
