//! The export engine: lists the versions in scope, streams each into one tar archive uploaded
//! in parts, and writes the manifest. It checkpoints after every part (the part's ETag, the
//! listing position, how far into its member the archive is, both running hashes), so a rerun
//! after a kill at any instant writes the same bytes from where the last part ended: the same
//! archive, digest and manifest, no object twice or missing. Memory is one part plus one chunk
//! of the object being read, whatever the objects' sizes.

use std::future::Future;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::json;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::archive::{self, END, Member};
use super::state::{Current, Finished, InKey, State, Upload, load_hash, save_hash};
use crate::cloud::{CloudError, ListedVersion, VersionPage};
use crate::purge::Marker;

/// Bytes of each of the first thousand archive parts (S3 needs at least 5 MiB; 8 MiB keeps the
/// Job's memory small). Each further thousand parts is this much larger (see [`part_size`]).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;

/// The size of part `number` (from 1): `base` for the first thousand, twice that for the next,
/// and so on, so that 10,000 parts hold 55,000 × `base` (440 GB at 8 MiB) while an archive of
/// a few GB stays at the small size. A function of the part number alone: a rerun cuts the
/// same parts.
pub fn part_size(base: usize, number: usize) -> usize {
    base * (1 + number.saturating_sub(1) / 1000)
}

/// Versions listed per page.
pub const PAGE: i32 = 1000;

/// An object version's bytes, in chunks.
pub type Chunks = BoxStream<'static, Result<Vec<u8>, CloudError>>;

/// The tenant's bucket, read only. Cloned into the tasks that read ahead.
pub trait Source: Clone + Send + Sync + 'static {
    /// One page of versions and delete markers under `prefix`, after `after`.
    fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> impl Future<Output = Result<VersionPage, CloudError>> + Send;
    /// The bytes of one version from offset `from` on.
    fn read(
        &self,
        key: &str,
        version_id: &str,
        from: u64,
    ) -> impl Future<Output = Result<Chunks, CloudError>> + Send;
}

/// The export bucket: where the archive and the manifest are written.
pub trait Target: Send + Sync {
    fn start_upload(&self, key: &str) -> impl Future<Output = Result<String, CloudError>> + Send;
    /// Uploads part `number`; returns its ETag.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<String, CloudError>> + Send;
    fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Ids of the incomplete uploads of exactly `key`.
    fn uploads(&self, key: &str) -> impl Future<Output = Result<Vec<String>, CloudError>> + Send;
    fn abort_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// The size of an object, `None` when there is none.
    fn size(&self, key: &str) -> impl Future<Output = Result<Option<u64>, CloudError>> + Send;
}

/// Where checkpoints and the manifest's lines wait until the manifest is written.
pub trait Journal: Send + Sync {
    fn load(&self) -> impl Future<Output = Result<Option<State>, ExportError>> + Send;
    fn save(&self, state: &State) -> impl Future<Output = Result<(), ExportError>> + Send;
    /// Writes manifest chunk `n` (overwriting one a crashed run wrote).
    fn put_chunk(
        &self,
        n: u32,
        lines: &str,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;
    fn chunk(&self, n: u32) -> impl Future<Output = Result<String, ExportError>> + Send;
    /// Told after every checkpoint (e.g. to mirror the counts in status).
    fn progress(&self, state: &State) -> impl Future<Output = Result<(), ExportError>> + Send;
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("AWS: {0}")]
    Cloud(#[from] CloudError),
    #[error("journal: {0}")]
    Journal(String),
    /// Names the version by id only: keys may be personal data, and errors reach logs.
    #[error(
        "object version {version_id} is not what was listed: {why}; it is read by version id, so the bucket answered with other bytes"
    )]
    Changed { version_id: String, why: String },
    #[error("checkpoint: {0}")]
    State(String),
}

/// Keys of one export in the export bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub archive: String,
    pub manifest: String,
}

pub struct Engine<S, T, J> {
    source: S,
    target: T,
    journal: J,
    part_bytes: usize,
}

/// Versions up to this size are read ahead, whole, while the archive is being written.
const READ_AHEAD_OBJECT: u64 = 1024 * 1024;
/// At most this many bytes and reads ahead at once (memory stays within the 64 MiB bar).
const READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;
const READ_AHEAD_READS: usize = 16;

/// One version's bytes, being read.
type Read = tokio::task::JoinHandle<Result<Vec<u8>, CloudError>>;

/// Reads of the small versions coming next on a page, running while the archive is written
/// and its parts uploaded: S3 answers each GET after tens of milliseconds, which one object
/// after another would add up to minutes for many small objects. Only a cache: what is not
/// read ahead is streamed as before, and the bytes written are the same either way.
#[derive(Default)]
struct ReadAhead {
    /// Page index, size and read of each version read ahead, in page order.
    reads: std::collections::VecDeque<(usize, u64, Read)>,
    bytes: u64,
    /// The next page index to consider.
    next: usize,
}

impl ReadAhead {
    /// Starts reads of the versions after `at` that the export will probably want.
    fn refill<S: Source>(&mut self, source: &S, state: &State, page: &[&ListedVersion], at: usize) {
        self.next = self.next.max(at);
        while self.next < page.len() && self.reads.len() < READ_AHEAD_READS {
            let v = page[self.next];
            if self.bytes + v.size > READ_AHEAD_BYTES {
                break;
            }
            let index = self.next;
            self.next += 1;
            let past = state.done_through.as_ref().is_some_and(|d| v.key <= *d);
            if v.size > READ_AHEAD_OBJECT || past || !(state.all_versions || v.is_latest) {
                continue;
            }
            let (source, key, version) = (source.clone(), v.key.clone(), v.version_id.clone());
            let size = usize::try_from(v.size).unwrap_or(0);
            let read = tokio::spawn(async move {
                let mut chunks = source.read(&key, &version, 0).await?;
                let mut bytes = Vec::with_capacity(size);
                while let Some(chunk) = chunks.next().await {
                    bytes.extend_from_slice(&chunk?);
                }
                Ok(bytes)
            });
            self.bytes += v.size;
            self.reads.push_back((index, v.size, read));
        }
    }

    /// The bytes of page entry `at`, if they were read ahead; earlier reads nobody took are
    /// dropped.
    async fn take(&mut self, at: usize) -> Result<Option<Vec<u8>>, ExportError> {
        while let Some((index, size, read)) = self.reads.pop_front() {
            self.bytes -= size;
            if index < at {
                read.abort();
                continue;
            }
            if index > at {
                self.bytes += size;
                self.reads.push_front((index, size, read));
                return Ok(None);
            }
            let bytes = read
                .await
                .map_err(|e| ExportError::State(format!("a read ahead stopped: {e}")))??;
            return Ok(Some(bytes));
        }
        Ok(None)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for (_, _, read) in &self.reads {
            read.abort();
        }
    }
}

/// Records a finished member's version as done within its key.
fn mark_done(state: &mut State, key: &str, version_id: &str) {
    match state.in_key.as_mut() {
        Some(k) if k.key == key => k.done.push(version_id.to_owned()),
        _ => {
            state.in_key = Some(InKey {
                key: key.to_owned(),
                done: vec![version_id.to_owned()],
            });
        }
    }
}

/// What bytes are, for the checkpoint's counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A member's header or padding.
    Framing,
    /// A member's content: hashed for the manifest too.
    Content,
    /// The end-of-archive blocks.
    End,
}

/// The part being filled, and the running hashes of the archive and of the member's content.
struct Writer {
    buf: Vec<u8>,
    archive: Sha256,
    member: Option<Sha256>,
    /// Manifest lines of the members finished since the last checkpoint.
    lines: String,
}

impl<S: Source, T: Target, J: Journal> Engine<S, T, J> {
    pub fn new(source: S, target: T, journal: J, part_bytes: usize) -> Self {
        Engine {
            source,
            target,
            journal,
            part_bytes: part_bytes.max(1),
        }
    }

    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// Runs (or resumes) the export to its end; `header` is the manifest's first line, given
    /// the finished archive's SHA-256.
    pub async fn run(
        &self,
        state: &mut State,
        layout: &Layout,
        header: impl Fn(&State, &str) -> String,
    ) -> Result<(), ExportError> {
        if state.finished.is_some() {
            return Ok(());
        }
        let mut w = Writer {
            buf: Vec::with_capacity(self.part_bytes),
            archive: load_hash(&state.archive_hash).map_err(ExportError::State)?,
            member: None,
            lines: String::new(),
        };
        if state.upload.is_none() {
            self.start(state, &layout.archive).await?;
        }
        if !state.upload.as_ref().is_some_and(|u| u.completing) {
            self.archive(state, &mut w, &layout.archive).await?;
        }
        self.complete(state, &layout.archive).await?;
        let archive_sha256 = hex(&w.archive.finalize());
        let (manifest_sha256, manifest_bytes) = self
            .manifest(state, &layout.manifest, &header(state, &archive_sha256))
            .await?;
        state.finished = Some(Finished {
            archive_sha256,
            manifest_sha256,
            manifest_bytes,
            completed: super::now(),
        });
        self.journal.save(state).await?;
        self.journal.progress(state).await
    }

    /// A new multipart upload, after aborting any a crashed run started and never recorded.
    async fn start(&self, state: &mut State, key: &str) -> Result<(), ExportError> {
        for id in self.target.uploads(key).await? {
            self.target.abort_upload(key, &id).await?;
        }
        let id = self.target.start_upload(key).await?;
        state.upload = Some(Upload {
            id,
            parts: Vec::new(),
            completing: false,
        });
        self.journal.save(state).await
    }

    /// Every member, then the end of the archive and its last part.
    async fn archive(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
    ) -> Result<(), ExportError> {
        if let Some(cur) = state.current.clone() {
            self.member(state, w, key, None).await?;
            mark_done(state, &cur.key, &cur.version_id);
        }
        while !state.listed() {
            let prefix = state.prefixes[state.prefix_index].clone();
            // From the key after the last one done: the marker names a key only.
            let mut cursor = state.done_through.clone().map(|key| Marker {
                key,
                version_id: String::new(),
            });
            loop {
                let page = self.source.list(&prefix, cursor.as_ref(), PAGE).await?;
                let versions: Vec<&ListedVersion> =
                    page.versions.iter().filter(|v| !v.delete_marker).collect();
                let mut ahead = ReadAhead::default();
                for (i, v) in versions.iter().enumerate() {
                    ahead.refill(&self.source, state, &versions, i);
                    let body = ahead.take(i).await?;
                    self.entry(state, w, key, v, body).await?;
                }
                match page.next {
                    Some((key, version_id)) => cursor = Some(Marker { key, version_id }),
                    None => break,
                }
            }
            state.prefix_index += 1;
            state.done_through = None;
            state.in_key = None;
        }
        let from = usize::try_from(state.end_written).unwrap_or(END.len());
        self.emit(
            state,
            w,
            key,
            END.get(from..).unwrap_or_default(),
            Part::End,
        )
        .await?;
        self.flush(state, w, key).await?;
        if let Some(upload) = state.upload.as_mut() {
            upload.completing = true;
        }
        self.journal.save(state).await
    }

    /// One listed version: archived if it is in scope and not done yet. Delete markers are not
    /// data and never reach here.
    async fn entry(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
        v: &ListedVersion,
        body: Option<Vec<u8>>,
    ) -> Result<(), ExportError> {
        // A server that repeats the marker key (or an earlier one) is skipped past.
        if state
            .done_through
            .as_ref()
            .is_some_and(|done| v.key <= *done)
        {
            return Ok(());
        }
        if state.in_key.as_ref().is_none_or(|k| k.key != v.key) {
            state.done_through = state.in_key.take().map(|k| k.key);
            state.in_key = Some(InKey {
                key: v.key.clone(),
                done: Vec::new(),
            });
        }
        let done = state.in_key.as_ref().map_or(&[][..], |k| k.done.as_slice());
        // `Current`: one version per key, even if a newer one appeared since a kill.
        let wanted = if state.all_versions {
            !done.contains(&v.version_id)
        } else {
            v.is_latest && done.is_empty()
        };
        if !wanted {
            return Ok(());
        }
        state.current = Some(Current {
            key: v.key.clone(),
            version_id: v.version_id.clone(),
            size: v.size,
            mtime: v.last_modified,
            written: 0,
            hash: save_hash(&Sha256::default()),
        });
        self.member(state, w, key, body).await?;
        mark_done(state, &v.key, &v.version_id);
        Ok(())
    }

    /// Writes `state.current` from where it stands to its end; `body`: its bytes, read ahead.
    async fn member(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(), ExportError> {
        let cur = state
            .current
            .clone()
            .ok_or_else(|| ExportError::State("no member to continue".into()))?;
        let version = state.all_versions.then_some(cur.version_id.as_str());
        let member = Member {
            path: archive::path(&cur.key, version),
            size: cur.size,
            mtime: cur.mtime,
        };
        let header = member.header();
        let header_len = header.len() as u64;
        w.member = Some(load_hash(&cur.hash).map_err(ExportError::State)?);
        if cur.written < header_len {
            let from = usize::try_from(cur.written).unwrap_or(usize::MAX);
            self.emit(state, w, key, &header[from..], Part::Framing)
                .await?;
        }
        let done = cur.written.saturating_sub(header_len);
        if done < cur.size {
            self.content(state, w, key, &cur, done, body).await?;
        }
        let padded = cur.written.saturating_sub(header_len + cur.size);
        let padding = member.padding().saturating_sub(padded);
        self.emit(state, w, key, &vec![0; padding as usize], Part::Framing)
            .await?;
        let sha256 = w
            .member
            .take()
            .map(|h| hex(&h.finalize()))
            .unwrap_or_default();
        let line = json!({
            "path": member.path, "key": cur.key, "versionId": cur.version_id,
            "size": cur.size, "lastModified": rfc3339(cur.mtime), "sha256": sha256,
        });
        w.lines.push_str(&format!("{line}\n"));
        state.objects += 1;
        state.bytes += cur.size;
        state.current = None;
        Ok(())
    }

    /// The version's bytes from `from`, checked against its listed size.
    async fn content(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
        cur: &Current,
        from: u64,
        body: Option<Vec<u8>>,
    ) -> Result<(), ExportError> {
        let changed = |why: String| ExportError::Changed {
            version_id: cur.version_id.clone(),
            why,
        };
        let mut chunks = match body {
            // Read ahead whole, from the start: a member is read ahead only from its start.
            Some(bytes) if from == 0 => Box::pin(futures::stream::iter([Ok(bytes)])),
            _ => self.source.read(&cur.key, &cur.version_id, from).await?,
        };
        let mut at = from;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            at += chunk.len() as u64;
            if at > cur.size {
                return Err(changed(format!(
                    "more than its listed {} bytes ({at} from offset {from})",
                    cur.size
                )));
            }
            self.emit(state, w, key, &chunk, Part::Content).await?;
        }
        if at != cur.size {
            return Err(changed(format!("{at} bytes, listed as {}", cur.size)));
        }
        Ok(())
    }

    /// Appends `bytes` to the archive, uploading each part as it fills. A full part is sent
    /// only once more bytes come, so the checkpoint after it already counts a member that ended
    /// exactly at its end as done.
    async fn emit(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
        mut bytes: &[u8],
        part: Part,
    ) -> Result<(), ExportError> {
        while !bytes.is_empty() {
            let limit = self.next_part_size(state);
            if w.buf.len() >= limit {
                self.flush(state, w, key).await?;
                continue;
            }
            let n = (limit - w.buf.len()).min(bytes.len());
            let (piece, rest) = bytes.split_at(n);
            w.buf.extend_from_slice(piece);
            w.archive.update(piece);
            match part {
                Part::End => state.end_written += n as u64,
                Part::Content | Part::Framing => {
                    if let Some(cur) = state.current.as_mut() {
                        cur.written += n as u64;
                    }
                    if let (Part::Content, Some(h)) = (part, w.member.as_mut()) {
                        h.update(piece);
                    }
                }
            }
            bytes = rest;
        }
        Ok(())
    }

    /// The size of the archive's next part.
    fn next_part_size(&self, state: &State) -> usize {
        let done = state.upload.as_ref().map_or(0, |u| u.parts.len());
        part_size(self.part_bytes, done + 1)
    }

    /// Uploads the part and checkpoints: the journal's manifest chunk first, then the state that
    /// counts it.
    async fn flush(&self, state: &mut State, w: &mut Writer, key: &str) -> Result<(), ExportError> {
        if w.buf.is_empty() {
            return Ok(());
        }
        let (id, done) = state
            .upload
            .as_ref()
            .map(|u| (u.id.clone(), u.parts.len()))
            .ok_or_else(|| ExportError::State("no upload to add a part to".into()))?;
        if done >= MAX_PARTS {
            return Err(ExportError::State(format!(
                "the archive needs more than S3's {MAX_PARTS} parts: split the request into prefixes"
            )));
        }
        let number =
            i32::try_from(done + 1).map_err(|_| ExportError::State("too many parts".into()))?;
        // The next part's buffer whole at once: growing it would hold two copies for a moment.
        let next = Vec::with_capacity(part_size(self.part_bytes, done + 2));
        let body = std::mem::replace(&mut w.buf, next);
        let size = body.len() as u64;
        let etag = match self.target.upload_part(key, &id, number, body).await {
            Err(e) if e.code() == "NoSuchUpload" => return Err(self.start_over(state).await),
            other => other?,
        };
        if let Some(upload) = state.upload.as_mut() {
            upload.parts.push((number, etag));
        }
        state.archive_bytes += size;
        if !w.lines.is_empty() {
            self.journal
                .put_chunk(state.manifest_chunks + 1, &w.lines)
                .await?;
            state.manifest_chunks += 1;
            w.lines.clear();
        }
        state.archive_hash = save_hash(&w.archive);
        if let (Some(cur), Some(h)) = (state.current.as_mut(), w.member.as_ref()) {
            cur.hash = save_hash(h);
        }
        self.journal.save(state).await?;
        self.journal.progress(state).await
    }

    /// The upload is gone (aborted by the lifecycle rule after a long pause, say): the next run
    /// starts the archive over from a fresh checkpoint, rather than failing for good.
    async fn start_over(&self, state: &mut State) -> ExportError {
        *state = State::new(
            &state.uid,
            &state.prefixes,
            state.all_versions,
            state.started.clone(),
        );
        match self.journal.save(state).await {
            Ok(()) => ExportError::State(
                "the archive's upload was aborted (by the bucket's lifecycle rule after a long pause?): the next run starts the export over".into(),
            ),
            Err(e) => e,
        }
    }

    /// `CompleteMultipartUpload`; if an earlier run's completion went through and only its
    /// answer was lost, the archive is there with every byte.
    async fn complete(&self, state: &State, key: &str) -> Result<(), ExportError> {
        let upload = state
            .upload
            .as_ref()
            .ok_or_else(|| ExportError::State("no upload to complete".into()))?;
        match self
            .target
            .complete_upload(key, &upload.id, &upload.parts)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == "NoSuchUpload" => match self.target.size(key).await? {
                Some(size) if size == state.archive_bytes => Ok(()),
                found => Err(ExportError::State(format!(
                    "the archive's upload is gone and the archive holds {found:?} bytes, not {}; delete the request's journal to start over",
                    state.archive_bytes
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The manifest: `header`, then every chunk's lines, as one upload (redone whole if a run
    /// dies while writing it). Returns its SHA-256 and size.
    async fn manifest(
        &self,
        state: &State,
        key: &str,
        header: &str,
    ) -> Result<(String, u64), ExportError> {
        for id in self.target.uploads(key).await? {
            self.target.abort_upload(key, &id).await?;
        }
        let id = self.target.start_upload(key).await?;
        let mut parts = Vec::new();
        let mut buf = format!("{header}\n").into_bytes();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for n in 1..=state.manifest_chunks {
            buf.extend_from_slice(self.journal.chunk(n).await?.as_bytes());
            while buf.len() >= self.part_bytes {
                let rest = buf.split_off(self.part_bytes);
                let part = std::mem::replace(&mut buf, rest);
                self.manifest_part(key, &id, &mut parts, &mut hasher, &mut size, part)
                    .await?;
            }
        }
        self.manifest_part(key, &id, &mut parts, &mut hasher, &mut size, buf)
            .await?;
        self.target.complete_upload(key, &id, &parts).await?;
        Ok((hex(&hasher.finalize()), size))
    }

    async fn manifest_part(
        &self,
        key: &str,
        id: &str,
        parts: &mut Vec<(i32, String)>,
        hasher: &mut Sha256,
        size: &mut u64,
        part: Vec<u8>,
    ) -> Result<(), ExportError> {
        hasher.update(&part);
        *size += part.len() as u64;
        let number = i32::try_from(parts.len() + 1)
            .map_err(|_| ExportError::State("too many manifest parts".into()))?;
        let etag = self.target.upload_part(key, id, number, part).await?;
        parts.push((number, etag));
        Ok(())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
