//! Manifest and locked-version lines, the chunked journals holding them, and the certificate
//! hashes.
//!
//! A line is tab-separated. Keys may contain any character, so `%`, TAB, LF and CR in keys and
//! version ids are percent-encoded (`%25`, `%09`, `%0A`, `%0D`): a line stays one line and its
//! fields stay apart. The manifest records everything removed: versions and delete markers, and
//! aborted incomplete multipart uploads (kind `multipartUpload`, the upload id in the second
//! field). The certificate has one hash per kind, over the encoded fields in manifest order,
//! so anyone can recompute them from the published manifest as it streams past: `awk -F'\t'
//! '$3 != "multipartUpload"' | cut -f1,2 | sha256sum` for versions and markers, and the same
//! with `==` for uploads. (Certificates before format 4 hashed the lines sorted, which needs the
//! whole manifest at once.)

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::api::LockedVersion;

/// At most this many lines per journal chunk...
pub const CHUNK_MAX_LINES: usize = 5000;
/// ...and at most this many bytes, so a chunk stays one small object even
/// with long keys.
pub const CHUNK_MAX_BYTES: usize = 700 * 1024;
/// An append starts a new chunk once the last one holds this many lines: every append rewrites
/// the last chunk, so letting it grow to the maximum would write each line several times.
pub const CHUNK_ROLL_LINES: usize = 1000;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed line {line:?}: {problem}")]
pub struct LineError {
    pub line: String,
    pub problem: &'static str,
}

/// An object version, a delete marker, or an incomplete multipart upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Version,
    DeleteMarker,
    /// Removed by `AbortMultipartUpload`, which deletes its parts.
    MultipartUpload,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Version => "version",
            Kind::DeleteMarker => "deleteMarker",
            Kind::MultipartUpload => "multipartUpload",
        }
    }
}

/// One listed version, delete marker or incomplete upload: what is removed and recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub key: String,
    /// The upload id for a multipart upload.
    pub version_id: String,
    pub kind: Kind,
    /// Bytes; 0 for a delete marker, and for an upload (its parts are not listed, so not sized).
    pub size: u64,
}

impl From<crate::cloud::ListedVersion> for Entry {
    fn from(v: crate::cloud::ListedVersion) -> Self {
        Entry {
            key: v.key,
            version_id: v.version_id,
            kind: if v.delete_marker {
                Kind::DeleteMarker
            } else {
                Kind::Version
            },
            size: v.size,
        }
    }
}

impl Entry {
    /// `key<TAB>versionId<TAB>kind<TAB>size`.
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            escape(&self.key),
            escape(&self.version_id),
            self.kind.as_str(),
            self.size
        )
    }

    pub fn parse(line: &str) -> Result<Entry, LineError> {
        let bad = |problem| LineError {
            line: line.to_owned(),
            problem,
        };
        let mut fields = line.split('\t');
        let (Some(key), Some(version_id), Some(kind), Some(size), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(bad("expected 4 tab-separated fields"));
        };
        let kind = match kind {
            "version" => Kind::Version,
            "deleteMarker" => Kind::DeleteMarker,
            "multipartUpload" => Kind::MultipartUpload,
            _ => return Err(bad("kind is not version, deleteMarker or multipartUpload")),
        };
        Ok(Entry {
            key: unescape(key).ok_or_else(|| bad("bad percent-encoding in key"))?,
            version_id: unescape(version_id)
                .ok_or_else(|| bad("bad percent-encoding in version id"))?,
            kind,
            size: size.parse().map_err(|_| bad("size is not a number"))?,
        })
    }

    pub fn id(&self) -> (String, String) {
        (self.key.clone(), self.version_id.clone())
    }

    /// An incomplete multipart upload, as listed.
    pub fn upload(key: String, upload_id: String) -> Entry {
        Entry {
            key,
            version_id: upload_id,
            kind: Kind::MultipartUpload,
            size: 0,
        }
    }
}

/// `key<TAB>versionId<TAB>mode<TAB>retainUntil` (`-` when there is no retention date).
pub fn locked_line(v: &LockedVersion) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        escape(&v.key),
        escape(&v.version_id),
        v.mode,
        v.retain_until.as_deref().unwrap_or("-")
    )
}

pub fn parse_locked(line: &str) -> Result<LockedVersion, LineError> {
    let bad = |problem| LineError {
        line: line.to_owned(),
        problem,
    };
    let fields: Vec<&str> = line.split('\t').collect();
    let [key, version_id, mode, until] = fields.as_slice() else {
        return Err(bad("expected 4 tab-separated fields"));
    };
    Ok(LockedVersion {
        key: unescape(key).ok_or_else(|| bad("bad percent-encoding in key"))?,
        version_id: unescape(version_id)
            .ok_or_else(|| bad("bad percent-encoding in version id"))?,
        mode: (*mode).to_owned(),
        retain_until: (*until != "-").then(|| (*until).to_owned()),
    })
}

fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '\t', '\n', '\r']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// What the certificate certifies of a manifest: one hash for versions and delete markers, one
/// for aborted uploads. Kept apart so that a reader of either needs only `awk` and `cut`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256 (hex) of the `key<TAB>versionId<LF>` of every version and delete marker line, in
    /// manifest order, and how many there were.
    pub versions: (String, u64),
    /// The same over the `multipartUpload` lines (`key<TAB>uploadId`).
    pub uploads: (String, u64),
}

/// [`Digests`] computed line by line as the manifest streams past, so that no manifest is ever
/// held whole: a sorted hash would need every line at once (6 GB at 100 million versions).
#[derive(Clone, Default)]
pub struct DigestBuilder {
    versions: (Sha256, u64),
    uploads: (Sha256, u64),
}

impl DigestBuilder {
    /// Adds one manifest line (without its LF).
    pub fn push(&mut self, line: &str) {
        // Encoded fields hold no TAB, so the kind is what follows the second one.
        let second_tab = line.match_indices('\t').nth(1).map(|(i, _)| i);
        let upload = second_tab.is_some_and(|i| {
            line[i + 1..]
                .split('\t')
                .next()
                .is_some_and(|kind| kind == Kind::MultipartUpload.as_str())
        });
        // The first two fields, still encoded: what the certificate promises.
        let id = second_tab.map_or(line, |end| &line[..end]);
        let (hasher, count) = if upload {
            &mut self.uploads
        } else {
            &mut self.versions
        };
        hasher.update(id.as_bytes());
        hasher.update(b"\n");
        *count += 1;
    }

    pub fn finish(self) -> Digests {
        let hex = |(hasher, count): (Sha256, u64)| {
            let hex = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (hex, count)
        };
        Digests {
            versions: hex(self.versions),
            uploads: hex(self.uploads),
        }
    }
}

/// [`Digests`] of manifest lines, in the order given.
#[cfg(test)]
pub fn digests<'a>(lines: impl IntoIterator<Item = &'a str>) -> Digests {
    let mut builder = DigestBuilder::default();
    for line in lines {
        builder.push(line);
    }
    builder.finish()
}

/// Where a journal stands, as committed in the checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalState {
    /// Chunks in use (`0` to `chunks - 1`).
    pub chunks: u32,
    /// Committed lines in the last chunk; lines after them are from an interrupted commit.
    pub last_chunk_lines: u32,
    /// Committed lines in all chunks.
    pub lines: u64,
}

/// An append-only list of lines stored in chunks; only the last chunk is kept in memory, so an
/// append rewrites just that one (and starts new ones).
#[derive(Debug)]
pub struct Journal {
    state: JournalState,
    tail: Vec<String>,
    tail_bytes: usize,
}

impl Journal {
    /// A journal whose last chunk holds `tail` (its committed lines).
    pub fn new(state: JournalState, tail: Vec<String>) -> Journal {
        let tail_bytes = tail.iter().map(|l| l.len() + 1).sum();
        Journal {
            state,
            tail,
            tail_bytes,
        }
    }

    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// Appends lines; returns the chunks to write, as `(index, text)`.
    pub fn append(&mut self, lines: Vec<String>) -> Vec<(u32, String)> {
        let mut writes = Vec::new();
        let mut dirty = false;
        if !lines.is_empty() && self.tail.len() >= CHUNK_ROLL_LINES {
            self.tail.clear();
            self.tail_bytes = 0;
            self.state.chunks += 1;
        }
        for line in lines {
            if self.state.chunks == 0 {
                self.state.chunks = 1;
            }
            let full = self.tail.len() >= CHUNK_MAX_LINES
                || self.tail_bytes + line.len() + 1 > CHUNK_MAX_BYTES;
            if full && !self.tail.is_empty() {
                if dirty {
                    writes.push((self.state.chunks - 1, join(&self.tail)));
                }
                self.tail.clear();
                self.tail_bytes = 0;
                self.state.chunks += 1;
            }
            self.tail_bytes += line.len() + 1;
            self.tail.push(line);
            self.state.lines += 1;
            dirty = true;
        }
        if dirty {
            writes.push((self.state.chunks - 1, join(&self.tail)));
        }
        self.state.last_chunk_lines = u32::try_from(self.tail.len()).unwrap_or(u32::MAX);
        writes
    }
}

/// Chunk text: one line per entry, each ending in LF.
pub fn join(lines: &[String]) -> String {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, version_id: &str) -> Entry {
        Entry {
            key: key.into(),
            version_id: version_id.into(),
            kind: Kind::Version,
            size: 3,
        }
    }

    #[test]
    fn lines_round_trip_any_key() {
        for key in [
            "a/b.txt",
            "tab\there",
            "new\nline\r",
            "100%",
            "ünï/çødé",
            "",
        ] {
            let e = Entry {
                key: key.into(),
                version_id: "v%1".into(),
                kind: Kind::DeleteMarker,
                size: 0,
            };
            let line = e.line();
            assert_eq!(line.matches('\t').count(), 3, "{line:?}");
            assert!(!line.contains('\n'));
            assert_eq!(Entry::parse(&line), Ok(e));
        }
        let locked = LockedVersion {
            key: "k\t1".into(),
            version_id: "v".into(),
            mode: "COMPLIANCE".into(),
            retain_until: Some("2030-01-01T00:00:00Z".into()),
        };
        assert_eq!(parse_locked(&locked_line(&locked)), Ok(locked));
        assert!(Entry::parse("a\tb\tversion").is_err());
        assert!(Entry::parse("a\tb\tfolder\t1").is_err());
        assert!(Entry::parse("a%2\tb\tversion\t1").is_err());
    }

    fn sha256sum(text: &[u8]) -> String {
        Sha256::digest(text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn hash_follows_manifest_order_and_matches_sha256sum() {
        let a = entry("b", "2").line();
        let b = entry("a", "1").line();
        let d = digests([a.as_str(), b.as_str()]);
        // printf 'b\t2\na\t1\n' | sha256sum
        assert_eq!(d.versions, (sha256sum(b"b\t2\na\t1\n"), 2));
        assert_ne!(digests([b.as_str(), a.as_str()]).versions, d.versions);
        let empty = digests([]);
        assert_eq!(empty.versions.1, 0);
        assert!(empty.versions.0.starts_with("e3b0c442"));
    }

    #[test]
    fn uploads_are_hashed_apart_from_versions() {
        let upload = Entry::upload("a\tb".into(), "u1".into());
        let line = upload.line();
        assert_eq!(line, "a%09b\tu1\tmultipartUpload\t0");
        assert_eq!(Entry::parse(&line), Ok(upload));
        let version = entry("a", "1").line();
        // A key that looks like a kind is still a key.
        let tricky = entry("multipartUpload", "2").line();
        let d = digests([line.as_str(), version.as_str(), tricky.as_str()]);
        assert_eq!(
            d.versions,
            digests([version.as_str(), tricky.as_str()]).versions
        );
        assert_eq!(d.versions.0, sha256sum(b"a\t1\nmultipartUpload\t2\n"));
        // printf 'a%09b\tu1\n' | sha256sum
        assert_eq!(d.uploads, (sha256sum(b"a%09b\tu1\n"), 1));
    }

    #[test]
    fn journal_rolls_chunks_by_lines_and_bytes() {
        let mut j = Journal::new(JournalState::default(), Vec::new());
        let writes = j.append((0..CHUNK_MAX_LINES + 10).map(|i| format!("l{i}")).collect());
        assert_eq!(writes.iter().map(|w| w.0).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(writes[0].1.lines().count(), CHUNK_MAX_LINES);
        assert_eq!(
            j.state(),
            &JournalState {
                chunks: 2,
                last_chunk_lines: 10,
                lines: CHUNK_MAX_LINES as u64 + 10
            }
        );
        // A small last chunk is rewritten with the new lines...
        let writes = j.append(vec!["x".into()]);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, 1);
        assert_eq!(writes[0].1.lines().count(), 11);
        // ...one holding CHUNK_ROLL_LINES is left alone: a new one starts.
        j.append(vec!["y".into(); CHUNK_ROLL_LINES]);
        let writes = j.append(vec!["z".into()]);
        assert_eq!(writes, vec![(2, "z\n".to_owned())]);
        assert_eq!(j.state().chunks, 3);

        let long = "k".repeat(1100);
        let mut j = Journal::new(JournalState::default(), Vec::new());
        let writes = j.append(vec![long; 1000]);
        assert!(writes.len() >= 2);
        assert!(writes.iter().all(|(_, text)| text.len() <= CHUNK_MAX_BYTES));
        assert_eq!(
            writes.iter().map(|(_, t)| t.lines().count()).sum::<usize>(),
            1000
        );
    }

    #[test]
    fn empty_append_writes_nothing() {
        let mut j = Journal::new(JournalState::default(), Vec::new());
        assert!(j.append(Vec::new()).is_empty());
        assert_eq!(j.state(), &JournalState::default());
    }
}
