//! The purge engine: lists every version and delete marker in scope and deletes them in
//! batches, then every incomplete multipart upload in scope and aborts them (their parts are
//! data too, and `ListObjectVersions` does not show them), several batches in flight,
//! checkpointing so that a run killed at any instant is continued by the next one without
//! counting anything twice or missing anything.
//!
//! Protocol (the checkpoint `State` is the single commit point):
//! 1. A listed page becomes one or more batches. Each batch is first written to a batch record
//!    (write-ahead), then one checkpoint registers them as in flight and moves the listing
//!    position past the page. Only then is `DeleteObjects` (or, for uploads, one
//!    `AbortMultipartUpload` per upload) sent.
//! 2. When a batch returns, its deleted entries are appended to the manifest chunks, its locked
//!    versions to the locked chunks, and one checkpoint records the new counts and journal
//!    lengths and drops the batch from the in-flight list.
//! 3. A rerun first truncates the journals to their committed length, re-sends every in-flight
//!    batch (S3 answers "deleted" for a version id that is already gone, and `NoSuchUpload` for
//!    an upload already aborted, which counts as aborted, so the result is the same), then lists
//!    on from the saved position.
//!
//! The entry the listing resumes after (the page's last) is held back ("carried") and deleted
//! with the next page: ministack, and possibly other S3 implementations, skip the rest of a key
//! when asked to list after a version that no longer exists.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::manifest::{self, Entry, Journal, JournalState, Kind};
use super::state::{InFlight, Marker, Pass, Stage, State, Verification};
use crate::api::LockedVersion;
use crate::cloud::{CloudError, DeleteReport, VersionLock, VersionPage};

/// `DeleteObjects` takes at most 1000 keys.
pub const BATCH_MAX: usize = 1000;
/// A batch record (one object of the journal) stays well under a megabyte even with long keys.
const BATCH_MAX_BYTES: usize = 700 * 1024;
/// Keys per listing page.
const PAGE_SIZE: i32 = 1000;
/// Listings of the scope before giving up on versions that keep failing or keep appearing.
pub const MAX_PASSES: u32 = 5;
/// Attempts for keys S3 reports as throttled or failed internally.
const KEY_ATTEMPTS: u32 = 8;
/// Attempts for a whole `DeleteObjects` call that failed after the SDK's own retries.
const CALL_ATTEMPTS: u32 = 4;
/// Per-key Object Lock lookups running at once within a batch.
const LOCK_LOOKUPS: usize = 16;
/// `AbortMultipartUpload` calls running at once within a batch (there is no batch call).
const ABORTS: usize = 16;
/// Journal chunks read back at once when publishing.
const CHUNK_READS: usize = 8;

/// Per-key error codes that mean "try again later".
const RETRYABLE: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "OperationAborted",
];

/// The bucket, as the engine needs it. Implemented over S3 by [`super::BucketObjects`].
pub trait Objects: Send + Sync + 'static {
    /// One page of versions and delete markers under `prefix`, after `after`.
    fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> impl Future<Output = Result<VersionPage, CloudError>> + Send;
    /// `DeleteObjects` of `(key, versionId)` pairs, at most [`BATCH_MAX`].
    fn delete(
        &self,
        versions: &[(String, String)],
    ) -> impl Future<Output = Result<DeleteReport, CloudError>> + Send;
    /// Object Lock retention and legal hold of one version.
    fn lock(
        &self,
        key: &str,
        version_id: &str,
    ) -> impl Future<Output = Result<VersionLock, CloudError>> + Send;
    /// One page of incomplete multipart uploads under `prefix`, after `after` (its `version_id`
    /// is the upload id).
    fn list_uploads(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_uploads: i32,
    ) -> impl Future<Output = Result<UploadPage, CloudError>> + Send;
    /// `AbortMultipartUpload`; `Ok(false)` when there is no such upload (`NoSuchUpload`).
    fn abort_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<bool, CloudError>> + Send;
}

/// One page of `ListMultipartUploads`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadPage {
    /// `(key, uploadId)` of each incomplete upload.
    pub uploads: Vec<(String, String)>,
    /// `(key, uploadId)` markers where the next page starts; `None` when the listing is
    /// complete.
    pub next: Option<(String, String)>,
}

/// Which chunked journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JournalKind {
    /// Deleted versions and markers, aborted uploads: `key\tversionId\tkind\tsize`.
    Manifest,
    /// Versions Object Lock keeps: `key\tversionId\tmode\tretainUntil`.
    Locked,
}

/// Where checkpoints live. Implemented over the evidence bucket by [`super::BucketJournal`].
pub trait Store: Send + Sync {
    fn load_state(&self) -> impl Future<Output = Result<Option<State>, StoreError>> + Send;
    fn save_state(&self, state: &State) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Told after every checkpoint that changed the counts (e.g. to mirror them in status).
    fn progress(&self, state: &State) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The write-ahead record of batch `id`, in `slot`.
    fn write_batch(
        &self,
        slot: u32,
        id: u64,
        lines: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `(id, lines)` of the batch record in `slot`.
    fn read_batch(
        &self,
        slot: u32,
    ) -> impl Future<Output = Result<Option<(u64, String)>, StoreError>> + Send;
    fn write_chunk(
        &self,
        journal: JournalKind,
        index: u32,
        text: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn read_chunk(
        &self,
        journal: JournalKind,
        index: u32,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Indexes of every chunk that exists, committed or not.
    fn chunk_indices(
        &self,
        journal: JournalKind,
    ) -> impl Future<Output = Result<Vec<u32>, StoreError>> + Send;
    fn delete_chunk(
        &self,
        journal: JournalKind,
        index: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Once the evidence is kept elsewhere: removes the batch records and the journals, keeping
    /// the checkpoint.
    fn discard(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Cloud {
        what: String,
        #[source]
        source: CloudError,
    },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

#[derive(Debug, Error)]
pub enum PurgeError {
    #[error("AWS: {0}")]
    Cloud(#[from] CloudError),
    #[error("checkpoint: {0}")]
    Store(#[from] StoreError),
    #[error("checkpoint is inconsistent: {0}")]
    Corrupt(String),
    #[error(
        "after {passes} listings the scope still held {attempted} versions to delete (keys that failed: {codes}); the checkpoint is kept, rerun to retry"
    )]
    NotConverged {
        passes: u32,
        attempted: u64,
        codes: String,
    },
    #[error("a deletion task stopped: {0}")]
    Task(String),
}

/// What one batch achieved.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// Versions and markers deleted, uploads aborted.
    deleted: Vec<Entry>,
    locked: Vec<LockedVersion>,
    /// Error codes of keys not deleted (not locked): the next pass tries them again.
    failed: Vec<String>,
}

type Done = (u64, Result<BatchOutcome, CloudError>);

pub struct Engine<O, S> {
    objects: Arc<O>,
    store: S,
    concurrency: usize,
    /// Keys per listing page ([`PAGE_SIZE`]; small in tests to make many pages).
    page_size: i32,
}

impl<O: Objects, S: Store> Engine<O, S> {
    pub fn new(objects: O, store: S, concurrency: usize) -> Self {
        Engine {
            objects: Arc::new(objects),
            store,
            concurrency: concurrency.max(1),
            page_size: PAGE_SIZE,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Purges (or, for a dry run, counts) until `state.purged` is set, checkpointing as it goes.
    pub async fn run(&self, state: &mut State) -> Result<(), PurgeError> {
        if state.purged.is_some() {
            return Ok(());
        }
        let manifest = self
            .open_journal(JournalKind::Manifest, &state.manifest)
            .await?;
        let locked = self
            .open_journal(JournalKind::Locked, &state.locked)
            .await?;
        let mut known_locked = HashSet::new();
        for line in self
            .read_journal(JournalKind::Locked, &state.locked)
            .await?
        {
            let v =
                manifest::parse_locked(&line).map_err(|e| PurgeError::Corrupt(e.to_string()))?;
            known_locked.insert((v.key, v.version_id));
        }
        let mut run = Run {
            engine: self,
            state,
            manifest,
            locked,
            known_locked,
            resent_uploads: HashSet::new(),
            tasks: JoinSet::new(),
            failures: BTreeMap::new(),
        };
        run.resume_in_flight().await?;
        loop {
            run.pass().await?;
            let pass = run.state.pass.clone();
            let now = super::now();
            if run.state.dry_run {
                run.state.purged = Some(now);
            } else if pass.attempted == 0 {
                // Nothing left to delete: this listing is the verification.
                run.state.verification = Some(Verification {
                    remaining: pass.remaining_locked,
                    passes: pass.number,
                    time: now.clone(),
                });
                run.state.purged = Some(now);
            } else if pass.number >= MAX_PASSES {
                let codes = run
                    .failures
                    .iter()
                    .map(|(code, n)| format!("{code}: {n}"))
                    .collect::<Vec<_>>();
                return Err(PurgeError::NotConverged {
                    passes: pass.number,
                    attempted: pass.attempted,
                    codes: if codes.is_empty() {
                        "none; versions kept appearing".to_owned()
                    } else {
                        codes.join(", ")
                    },
                });
            } else {
                info!(
                    pass = pass.number,
                    attempted = pass.attempted,
                    "listing the scope again to verify"
                );
                run.state.pass = Pass::new(pass.number + 1);
                run.failures.clear();
            }
            run.state.last_checkpoint = Some(checkpoint_text(run.state));
            self.store.save_state(run.state).await?;
            self.store.progress(run.state).await?;
            if run.state.purged.is_some() {
                return Ok(());
            }
        }
    }

    /// SHA-256 of the committed manifest's versions and markers, and of its aborted uploads,
    /// with their entry counts, read back from the store (so they are exactly what anyone
    /// re-checking the published manifest computes).
    /// The committed manifest, chunk by chunk in order (each chunk's text cut to its committed
    /// lines): streamed, so that publishing holds a few chunks at a time, not the manifest.
    pub fn manifest_chunks(
        &self,
        state: &State,
    ) -> impl Stream<Item = Result<String, PurgeError>> + '_ {
        self.journal_chunks(JournalKind::Manifest, &state.manifest)
    }

    /// Every locked version recorded.
    pub async fn locked_versions(&self, state: &State) -> Result<Vec<LockedVersion>, PurgeError> {
        self.read_journal(JournalKind::Locked, &state.locked)
            .await?
            .iter()
            .map(|line| {
                manifest::parse_locked(line).map_err(|e| PurgeError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// The journal with its last chunk cut back to what the checkpoint committed, and chunks of
    /// an interrupted commit beyond it removed.
    async fn open_journal(
        &self,
        kind: JournalKind,
        committed: &JournalState,
    ) -> Result<Journal, PurgeError> {
        for index in self.store.chunk_indices(kind).await? {
            if index >= committed.chunks {
                self.store.delete_chunk(kind, index).await?;
            }
        }
        if committed.chunks == 0 {
            return Ok(Journal::new(committed.clone(), Vec::new()));
        }
        let last = committed.chunks - 1;
        let text = self
            .store
            .read_chunk(kind, last)
            .await?
            .ok_or_else(|| PurgeError::Corrupt(format!("{kind:?} chunk {last} is missing")))?;
        let all = text.lines().count();
        let tail: Vec<String> = text
            .lines()
            .take(committed.last_chunk_lines as usize)
            .map(str::to_owned)
            .collect();
        if tail.len() < committed.last_chunk_lines as usize {
            return Err(PurgeError::Corrupt(format!(
                "{kind:?} chunk {last} has {} lines, the checkpoint committed {}",
                tail.len(),
                committed.last_chunk_lines
            )));
        }
        if all > tail.len() {
            self.store
                .write_chunk(kind, last, &manifest::join(&tail))
                .await?;
        }
        Ok(Journal::new(committed.clone(), tail))
    }

    /// Every committed line of a journal.
    async fn read_journal(
        &self,
        kind: JournalKind,
        committed: &JournalState,
    ) -> Result<Vec<String>, PurgeError> {
        let mut lines = Vec::new();
        let mut chunks = std::pin::pin!(self.journal_chunks(kind, committed));
        while let Some(text) = chunks.next().await {
            lines.extend(text?.lines().map(str::to_owned));
        }
        Ok(lines)
    }

    /// The committed text of each chunk of a journal, in order; an error once a chunk is missing
    /// or the lines do not add up to what the checkpoint committed.
    fn journal_chunks(
        &self,
        kind: JournalKind,
        committed: &JournalState,
    ) -> impl Stream<Item = Result<String, PurgeError>> + '_ {
        let committed = committed.clone();
        let chunks = committed.chunks;
        let mut seen = 0u64;
        // Several reads in flight, kept in order: one slow read must not idle the rest.
        futures::stream::iter(0..chunks)
            .map(move |index| async move { (index, self.store.read_chunk(kind, index).await) })
            .buffered(CHUNK_READS)
            .map(move |(index, text)| {
                let text = text?.ok_or_else(|| {
                    PurgeError::Corrupt(format!("{kind:?} chunk {index} is missing"))
                })?;
                let last = index + 1 == chunks;
                let text = if last {
                    committed_prefix(&text, committed.last_chunk_lines as usize)
                } else {
                    text
                };
                seen += text.lines().count() as u64;
                if last && seen != committed.lines {
                    return Err(PurgeError::Corrupt(format!(
                        "{kind:?} holds {seen} lines, the checkpoint committed {}",
                        committed.lines
                    )));
                }
                Ok(text)
            })
            .chain(futures::stream::iter(
                (chunks == 0 && committed.lines != 0).then(|| {
                    Err(PurgeError::Corrupt(format!(
                        "{kind:?} has no chunk, the checkpoint committed {} lines",
                        committed.lines
                    )))
                }),
            ))
    }
}

/// The first `lines` lines of `text`, each ending in LF.
fn committed_prefix(text: &str, lines: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().take(lines) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// One run of the engine: the checkpoint and what is derived from it.
struct Run<'a, O, S> {
    engine: &'a Engine<O, S>,
    state: &'a mut State,
    manifest: Journal,
    locked: Journal,
    /// Versions known to be locked: skipped (not retried) by later listings.
    known_locked: HashSet<(String, String)>,
    /// Uploads of batches re-sent on resuming: the listing must not take them again.
    resent_uploads: HashSet<(String, String)>,
    tasks: JoinSet<Done>,
    /// Error codes of keys that failed in this pass.
    failures: BTreeMap<String, u64>,
}

/// A listed page, as entries, and where in the pass it belongs.
struct Listed {
    stage: Stage,
    prefix_index: usize,
    entries: Vec<Entry>,
    /// Where the next page starts; `None` at the end of the prefix.
    next: Option<Marker>,
}

impl<O: Objects, S: Store> Run<'_, O, S> {
    /// Re-sends the batches a killed run may have sent without recording their result.
    async fn resume_in_flight(&mut self) -> Result<(), PurgeError> {
        for f in self.state.in_flight.clone() {
            let (id, text) = self.engine.store.read_batch(f.slot).await?.ok_or_else(|| {
                PurgeError::Corrupt(format!("batch record {} is missing", f.slot))
            })?;
            if id != f.id {
                return Err(PurgeError::Corrupt(format!(
                    "batch record {} holds batch {id}, the checkpoint expects {}",
                    f.slot, f.id
                )));
            }
            let entries = text
                .lines()
                .map(Entry::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PurgeError::Corrupt(e.to_string()))?;
            info!(
                batch = id,
                entries = entries.len(),
                "re-sending a batch in flight when the last run stopped"
            );
            self.resent_uploads.extend(
                entries
                    .iter()
                    .filter(|e| e.kind == Kind::MultipartUpload)
                    .map(Entry::id),
            );
            self.spawn(id, entries);
        }
        Ok(())
    }

    fn spawn(&mut self, id: u64, entries: Vec<Entry>) {
        let objects = Arc::clone(&self.engine.objects);
        self.tasks
            .spawn(async move { (id, remove_batch(&*objects, entries).await) });
    }

    /// Lists the rest of the current pass and deletes (aborts) what it finds.
    async fn pass(&mut self) -> Result<(), PurgeError> {
        let prefixes = self.state.prefixes.clone();
        // The listing runs up to a round of batches ahead: a slow page (a throttle, a retry)
        // then does not leave the deletions without work.
        let (tx, mut rx) = mpsc::channel(self.engine.concurrency);
        // Aborted when dropped, like the deletions: nothing outlives the run.
        let mut lister = JoinSet::new();
        let mut listing = !self.state.pass.listed(prefixes.len());
        let mut first = true;
        if listing {
            lister.spawn(list_pass(
                Arc::clone(&self.engine.objects),
                prefixes.clone(),
                self.state.pass.clone(),
                std::mem::take(&mut self.resent_uploads),
                self.engine.page_size,
                tx,
            ));
        }
        loop {
            let room = self.state.in_flight.len() < self.engine.concurrency;
            if !listing && self.tasks.is_empty() {
                break;
            }
            let mut turn = Turn::default();
            tokio::select! {
                page = rx.recv(), if listing && room => match page {
                    None => listing = false,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(listed)) => turn.pages.push(listed),
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    turn.done.push(done);
                },
                else => break,
            }
            self.gather(&mut turn, &mut rx, &mut listing, first)?;
            self.journal_turn(turn).await?;
            first = false;
        }
        if !self.state.pass.listed(prefixes.len()) {
            return Err(PurgeError::Task(
                "the listing stopped before the end".into(),
            ));
        }
        Ok(())
    }

    /// Adds to a turn what else is ready without waiting: finished batches, and pages for the
    /// room they leave. One checkpoint then covers them all, so a slow journal write holds up
    /// one turn, and the next turn takes in what finished meanwhile. The first turn takes at
    /// most one page, so that a pod killed every few writes (a record, a chunk, a checkpoint)
    /// still gets somewhere on each start.
    fn gather(
        &mut self,
        turn: &mut Turn,
        rx: &mut mpsc::Receiver<Result<Listed, CloudError>>,
        listing: &mut bool,
        first: bool,
    ) -> Result<(), PurgeError> {
        while let Some(more) = self.tasks.try_join_next() {
            turn.done.push(more);
        }
        let max_pages = if first { 1 } else { self.engine.concurrency };
        while *listing
            && turn.pages.len() < max_pages
            && self.state.in_flight.len() + turn.pages.len()
                < self.engine.concurrency + turn.done.len()
        {
            match rx.try_recv() {
                Ok(Ok(listed)) => turn.pages.push(listed),
                Ok(Err(e)) => return Err(e.into()),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => *listing = false,
            }
        }
        Ok(())
    }

    /// Journals a turn: the new batches' records and the finished batches' manifest lines,
    /// written together, then one checkpoint naming them; only then are the new batches sent.
    async fn journal_turn(&mut self, turn: Turn) -> Result<(), PurgeError> {
        // Pages first: their batches take slots while the finished batches still hold theirs,
        // so no record the last checkpoint names is overwritten before the next one is saved.
        let mut batches = Vec::new();
        for listed in turn.pages {
            batches.extend(self.take_page(listed)?);
        }
        let (first_error, manifest_lines, locked_lines) = self.settle(turn.done);
        let store = &self.engine.store;
        let records = batches.iter().map(|(slot, id, entries)| {
            let lines: Vec<String> = entries.iter().map(Entry::line).collect();
            async move { store.write_batch(*slot, *id, &manifest::join(&lines)).await }
        });
        let chunks = (self.manifest.append(manifest_lines).into_iter())
            .map(|(index, text)| (JournalKind::Manifest, index, text))
            .chain(
                (self.locked.append(locked_lines).into_iter())
                    .map(|(index, text)| (JournalKind::Locked, index, text)),
            )
            .map(|(kind, index, text)| async move { store.write_chunk(kind, index, &text).await });
        futures::future::try_join(
            futures::future::try_join_all(records),
            futures::future::try_join_all(chunks),
        )
        .await?;
        self.state.manifest = self.manifest.state().clone();
        self.state.locked = self.locked.state().clone();
        self.state.last_checkpoint = Some(checkpoint_text(self.state));
        store.save_state(self.state).await?;
        store.progress(self.state).await?;
        if let Some(e) = first_error {
            return Err(e);
        }
        for (_, id, entries) in batches {
            debug!(batch = id, entries = entries.len(), "removing");
            self.spawn(id, entries);
        }
        Ok(())
    }

    /// Turns a page into batches registered in the checkpoint (or, for a dry run, counts it):
    /// their slots, ids and entries.
    fn take_page(&mut self, listed: Listed) -> Result<Vec<(u32, u64, Vec<Entry>)>, PurgeError> {
        let Listed {
            stage,
            prefix_index,
            entries,
            next,
        } = listed;
        if (stage, prefix_index) != (self.state.pass.stage, self.state.pass.prefix_index) {
            return Err(PurgeError::Task(format!(
                "listing returned {stage:?} of prefix {prefix_index}, expected {:?} of {}",
                self.state.pass.stage, self.state.pass.prefix_index
            )));
        }
        let mut to_delete = Vec::with_capacity(entries.len() + 1);
        let mut new_carry = None;
        for entry in entries {
            if self.state.dry_run {
                add(&mut self.state.counts, &entry);
                continue;
            }
            if entry.kind != Kind::MultipartUpload && self.known_locked.contains(&entry.id()) {
                self.state.pass.remaining_locked += 1;
                continue;
            }
            // Uploads need no carry: an upload-id marker is compared, not looked up, so a
            // listing resumes after an aborted upload.
            if stage == Stage::Versions
                && next
                    .as_ref()
                    .is_some_and(|m| m.key == entry.key && m.version_id == entry.version_id)
            {
                new_carry = Some(entry);
                continue;
            }
            to_delete.push(entry);
        }
        // The previous page's last entry is no longer needed as a listing position.
        to_delete.extend(self.state.pass.carry.take());
        self.state.pass.carry = new_carry;
        self.state.pass.attempted += to_delete.len() as u64;
        match next {
            Some(marker) => self.state.pass.after = Some(marker),
            None => self.state.pass.next_prefix(self.state.prefixes.len()),
        }
        let mut batches = Vec::new();
        for entries in split(to_delete) {
            let id = self.state.next_batch;
            self.state.next_batch += 1;
            let slot = self.free_slot();
            self.state.in_flight.push(InFlight { id, slot });
            batches.push((slot, id, entries));
        }
        Ok(batches)
    }

    fn free_slot(&self) -> u32 {
        let used: BTreeSet<u32> = self.state.in_flight.iter().map(|f| f.slot).collect();
        (0..).find(|s| !used.contains(s)).unwrap_or_default()
    }

    /// Counts finished batches and takes them out of flight: the first error among them, and
    /// the manifest and locked lines to journal.
    fn settle(
        &mut self,
        done: Vec<Result<Done, tokio::task::JoinError>>,
    ) -> (Option<PurgeError>, Vec<String>, Vec<String>) {
        let mut first_error = None;
        let mut manifest_lines = Vec::new();
        let mut locked_lines = Vec::new();
        for joined in done {
            let (id, outcome) = match joined {
                Ok(done) => done,
                Err(e) => {
                    first_error.get_or_insert(PurgeError::Task(e.to_string()));
                    continue;
                }
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Stays in flight: the next run sends it again.
                    first_error.get_or_insert(e.into());
                    continue;
                }
            };
            for entry in &outcome.deleted {
                add(&mut self.state.counts, entry);
                manifest_lines.push(entry.line());
            }
            for v in outcome.locked {
                if self
                    .known_locked
                    .insert((v.key.clone(), v.version_id.clone()))
                {
                    self.state.counts.locked += 1;
                    locked_lines.push(manifest::locked_line(&v));
                }
            }
            for code in outcome.failed {
                *self.failures.entry(code).or_default() += 1;
            }
            self.state.in_flight.retain(|f| f.id != id);
        }
        (first_error, manifest_lines, locked_lines)
    }
}

/// What one turn of the driver journals: listed pages and finished batches.
#[derive(Default)]
struct Turn {
    pages: Vec<Listed>,
    done: Vec<Result<Done, tokio::task::JoinError>>,
}

fn add(counts: &mut super::state::Counts, entry: &Entry) {
    match entry.kind {
        Kind::Version => counts.versions += 1,
        Kind::DeleteMarker => counts.delete_markers += 1,
        Kind::MultipartUpload => counts.multipart_uploads += 1,
    }
    counts.bytes += entry.size;
}

/// Human-readable position, for `status.progress.lastCheckpoint`.
fn checkpoint_text(state: &State) -> String {
    let pass = &state.pass;
    let total = state.prefixes.len();
    let of = match pass.stage {
        Stage::Versions => "versions",
        Stage::Uploads => "incomplete multipart uploads",
    };
    // The scope's prefixes are the request's own; the listing position (an object key of the
    // tenant) stays in the checkpoint, out of the cluster.
    let position = match state.prefixes.get(pass.prefix_index) {
        Some(prefix) if !pass.listed(total) => format!(
            "{of} of prefix {}/{total} {prefix:?}",
            pass.prefix_index + 1
        ),
        _ => "listing done".to_owned(),
    };
    let what = if pass.number == 1 {
        "listing".to_owned()
    } else {
        format!("listing {} (verification)", pass.number)
    };
    format!(
        "{what}: {position}; {} batches in flight; at {}",
        state.in_flight.len(),
        super::now()
    )
}

/// Batches of at most [`BATCH_MAX`] entries and [`BATCH_MAX_BYTES`] of record.
fn split(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let len = entry.key.len() + entry.version_id.len() + 40;
        if !current.is_empty() && (current.len() >= BATCH_MAX || bytes + len > BATCH_MAX_BYTES) {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(entry);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Lists from `start` to the end of the pass, page after page, into `tx`: the versions and
/// delete markers of every prefix, then the incomplete uploads of every prefix. `taken` are
/// uploads already in batches (re-sent ones): never listed again.
async fn list_pass<O: Objects>(
    objects: Arc<O>,
    prefixes: Vec<String>,
    start: Pass,
    taken: HashSet<(String, String)>,
    page_size: i32,
    tx: mpsc::Sender<Result<Listed, CloudError>>,
) {
    let mut at = start;
    let mut seen = SeenUploads {
        taken,
        key: String::new(),
        ids: HashSet::new(),
    };
    while !at.listed(prefixes.len()) {
        let Some(prefix) = prefixes.get(at.prefix_index) else {
            // A position past the prefixes in the version stage: the pass reports the listing
            // as stopped before the end.
            return;
        };
        let page = match at.stage {
            Stage::Versions => objects
                .list(prefix, at.after.as_ref(), page_size)
                .await
                .map(|page| {
                    let entries = page.versions.into_iter().map(Entry::from).collect();
                    (entries, page.next)
                }),
            Stage::Uploads => objects
                .list_uploads(prefix, at.after.as_ref(), page_size)
                .await
                .map(|page| (seen.fresh(page.uploads, at.after.as_ref()), page.next)),
        };
        let (entries, next) = match page {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let next = next.map(|(key, version_id)| Marker { key, version_id });
        let listed = Listed {
            stage: at.stage,
            prefix_index: at.prefix_index,
            entries,
            next: next.clone(),
        };
        match next {
            Some(marker) => at.after = Some(marker),
            None => at.next_prefix(prefixes.len()),
        }
        if tx.send(Ok(listed)).await.is_err() {
            return;
        }
    }
}

/// Keeps an upload from being taken twice in a pass: aborting it twice would answer
/// `NoSuchUpload` the second time, which counts as aborted. AWS and ministack list strictly
/// after both markers, but a server that ignored `upload-id-marker` (ministack does with
/// `key-marker` alone) would list the marker key's uploads again.
struct SeenUploads {
    taken: HashSet<(String, String)>,
    /// The key of the last upload listed, and the upload ids listed for it.
    key: String,
    ids: HashSet<String>,
}

impl SeenUploads {
    /// The uploads of a page not taken already, as entries.
    fn fresh(&mut self, uploads: Vec<(String, String)>, after: Option<&Marker>) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(uploads.len());
        for (key, upload_id) in uploads {
            if after.is_some_and(|m| key < m.key || (key == m.key && upload_id == m.version_id)) {
                continue;
            }
            if self.taken.contains(&(key.clone(), upload_id.clone())) {
                continue;
            }
            if key != self.key {
                self.key.clone_from(&key);
                self.ids.clear();
            }
            if !self.ids.insert(upload_id.clone()) {
                continue;
            }
            entries.push(Entry::upload(key, upload_id));
        }
        entries
    }
}

/// Deletes a batch's versions and markers and aborts its uploads (a batch holds one or the
/// other, as listed; a mixed one would still be handled).
async fn remove_batch<O: Objects>(
    objects: &O,
    entries: Vec<Entry>,
) -> Result<BatchOutcome, CloudError> {
    let (uploads, versions): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| e.kind == Kind::MultipartUpload);
    let mut outcome = if versions.is_empty() {
        BatchOutcome::default()
    } else {
        delete_batch(objects, versions).await?
    };
    let aborted: Vec<Result<Entry, CloudError>> = futures::stream::iter(uploads)
        .map(|entry| async move {
            abort_call(objects, &entry.key, &entry.version_id).await?;
            Ok(entry)
        })
        .buffer_unordered(ABORTS)
        .collect()
        .await;
    for entry in aborted {
        // One failure fails the batch: it stays in flight and a rerun sends it again, its
        // aborted uploads answering NoSuchUpload.
        outcome.deleted.push(entry?);
    }
    Ok(outcome)
}

/// `AbortMultipartUpload`, retried when it fails (the SDK has already retried it). An upload
/// that is gone counts as aborted: it is when a re-sent batch finds its own earlier abort, and
/// otherwise it was completed (the version listing finds the object) or aborted by someone
/// else; either way its parts are gone.
async fn abort_call<O: Objects>(objects: &O, key: &str, upload_id: &str) -> Result<(), CloudError> {
    let mut attempt = 1;
    loop {
        match objects.abort_upload(key, upload_id).await {
            Ok(aborted) => {
                if !aborted {
                    debug!(key, upload_id, "upload already gone");
                }
                return Ok(());
            }
            Err(e) if attempt < CALL_ATTEMPTS && !e.is_denied() => {
                warn!(error = %e, attempt, "AbortMultipartUpload failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes one batch: retries throttled keys with backoff, looks up Object Lock for denied
/// ones (never bypassing it), and reports the rest as failed.
async fn delete_batch<O: Objects>(
    objects: &O,
    entries: Vec<Entry>,
) -> Result<BatchOutcome, CloudError> {
    let mut outcome = BatchOutcome::default();
    let mut pending = entries;
    for attempt in 1..=KEY_ATTEMPTS {
        let ids: Vec<(String, String)> = pending.iter().map(Entry::id).collect();
        let report = delete_call(objects, &ids).await?;
        let mut waiting: HashMap<(String, String), Entry> =
            pending.into_iter().map(|e| (e.id(), e)).collect();
        for (key, version_id) in report.deleted {
            let id = (key, version_id.unwrap_or_else(|| "null".to_owned()));
            if let Some(entry) = waiting.remove(&id) {
                outcome.deleted.push(entry);
            }
        }
        let mut retry = Vec::new();
        let mut denied = Vec::new();
        for failure in report.failed {
            let id = (
                failure.key,
                failure.version_id.unwrap_or_else(|| "null".to_owned()),
            );
            let Some(entry) = waiting.remove(&id) else {
                continue;
            };
            if RETRYABLE.contains(&failure.code.as_str()) {
                retry.push((entry, failure.code));
            } else if failure.code == "AccessDenied" && entry.kind == Kind::Version {
                denied.push(entry);
            } else {
                warn!(code = %failure.code, message = %failure.message, "a version could not be deleted");
                outcome.failed.push(failure.code);
            }
        }
        // Keys S3 did not answer for are simply sent again.
        retry.extend(
            waiting
                .into_values()
                .map(|entry| (entry, "NoResult".to_owned())),
        );
        let looked_up: Vec<Result<(Entry, VersionLock), CloudError>> =
            futures::stream::iter(denied)
                .map(|entry| async move {
                    let lock = objects.lock(&entry.key, &entry.version_id).await?;
                    Ok((entry, lock))
                })
                .buffer_unordered(LOCK_LOOKUPS)
                .collect()
                .await;
        for result in looked_up {
            let (entry, lock) = result?;
            match locked_version(&entry, &lock) {
                Some(locked) => outcome.locked.push(locked),
                None => {
                    warn!(
                        "a version was denied deletion without Object Lock: check the purge role's s3:DeleteObjectVersion permission"
                    );
                    outcome.failed.push("AccessDenied".to_owned());
                }
            }
        }
        if retry.is_empty() {
            return Ok(outcome);
        }
        if attempt == KEY_ATTEMPTS {
            outcome
                .failed
                .extend(retry.into_iter().map(|(_, code)| code));
            return Ok(outcome);
        }
        debug!(keys = retry.len(), attempt, "retrying throttled keys");
        tokio::time::sleep(backoff(attempt)).await;
        pending = retry.into_iter().map(|(entry, _)| entry).collect();
    }
    Ok(outcome)
}

/// `DeleteObjects`, retried when the whole call fails (the SDK has already retried it).
async fn delete_call<O: Objects>(
    objects: &O,
    ids: &[(String, String)],
) -> Result<DeleteReport, CloudError> {
    let mut attempt = 1;
    loop {
        match objects.delete(ids).await {
            Ok(report) => return Ok(report),
            Err(e) if attempt < CALL_ATTEMPTS && e.code() != "AccessDenied" => {
                warn!(error = %e, attempt, "DeleteObjects failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the certificate says about a version Object Lock keeps; `None` when it is not locked.
fn locked_version(entry: &Entry, lock: &VersionLock) -> Option<LockedVersion> {
    let (mode, retain_until) = match (&lock.retention, lock.legal_hold) {
        // A legal hold has no end: it is what keeps the version, whatever the retention says.
        (retention, true) => (
            "LegalHold".to_owned(),
            retention.as_ref().and_then(|(_, until)| until.clone()),
        ),
        (Some((mode, until)), false) => (mode.clone(), until.clone()),
        (None, false) => return None,
    };
    Some(LockedVersion {
        key: entry.key.clone(),
        version_id: entry.version_id.clone(),
        mode,
        retain_until,
    })
}

/// Exponential backoff with jitter: 100 ms, 200 ms, ... capped at 5 s.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5000);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % (base / 2 + 1))
        .unwrap_or(0);
    Duration::from_millis(base / 2 + jitter)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
