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
use super::state::{Current, Finished, State, Upload, load_hash, save_hash};
use crate::cloud::{CloudError, ListedVersion, VersionPage};
use crate::purge::Marker;

/// Bytes of each archive part but the last (S3 needs at least 5 MiB; 8 MiB keeps the Job's
/// memory small).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Versions listed per page.
pub const PAGE: i32 = 1000;

/// An object version's bytes, in chunks.
pub type Chunks = BoxStream<'static, Result<Vec<u8>, CloudError>>;

/// The tenant's bucket, read only.
pub trait Source: Send + Sync {
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
        if state.current.is_some() {
            self.member(state, w, key).await?;
            state.skip += 1;
        }
        while !state.listed() {
            let prefix = state.prefixes[state.prefix_index].clone();
            let page = self.source.list(&prefix, state.page.as_ref(), PAGE).await?;
            for v in page.versions.iter().skip(state.skip) {
                self.entry(state, w, key, v).await?;
                state.skip += 1;
            }
            state.skip = 0;
            match page.next {
                Some((key, version_id)) => state.page = Some(Marker { key, version_id }),
                None => {
                    state.prefix_index += 1;
                    state.page = None;
                }
            }
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

    /// One listed entry: archived if in scope, a manifest line for an `All` export's marker.
    async fn entry(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
        v: &ListedVersion,
    ) -> Result<(), ExportError> {
        if v.delete_marker {
            if state.all_versions {
                let line = json!({
                    "key": v.key, "versionId": v.version_id, "deleteMarker": true,
                    "lastModified": rfc3339(v.last_modified),
                });
                w.lines.push_str(&format!("{line}\n"));
                state.delete_markers += 1;
            }
            return Ok(());
        }
        if !state.all_versions && !v.is_latest {
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
        self.member(state, w, key).await
    }

    /// Writes `state.current` from where it stands to its end.
    async fn member(
        &self,
        state: &mut State,
        w: &mut Writer,
        key: &str,
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
            self.content(state, w, key, &cur, done).await?;
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
    ) -> Result<(), ExportError> {
        let changed = |why: String| ExportError::Changed {
            version_id: cur.version_id.clone(),
            why,
        };
        let mut chunks = self.source.read(&cur.key, &cur.version_id, from).await?;
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
            if w.buf.len() >= self.part_bytes {
                self.flush(state, w, key).await?;
            }
            let n = (self.part_bytes - w.buf.len()).min(bytes.len());
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

    /// Uploads the part and checkpoints: the journal's manifest chunk first, then the state that
    /// counts it.
    async fn flush(&self, state: &mut State, w: &mut Writer, key: &str) -> Result<(), ExportError> {
        if w.buf.is_empty() {
            return Ok(());
        }
        let upload = state
            .upload
            .as_mut()
            .ok_or_else(|| ExportError::State("no upload to add a part to".into()))?;
        let number = i32::try_from(upload.parts.len() + 1)
            .map_err(|_| ExportError::State("too many parts".into()))?;
        let body = std::mem::replace(&mut w.buf, Vec::with_capacity(self.part_bytes));
        let size = body.len() as u64;
        let etag = self
            .target
            .upload_part(key, &upload.id, number, body)
            .await?;
        upload.parts.push((number, etag));
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
