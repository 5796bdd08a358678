//! The export's checkpoint, saved in the journal after every archive part: where the listing
//! is, how far into its member the archive has got, the multipart upload's parts, and both
//! running SHA-256 states (the archive's and the member's), so a rerun continues the very same
//! byte stream.

use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sha2::digest::common::hazmat::SerializableState;

/// Version of this layout; a checkpoint of another is refused rather than misread.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub format: u32,
    /// The request's uid: a checkpoint of another request (same name, re-created) is not ours.
    pub uid: String,
    /// Normalized prefixes (none inside another); `[""]` for the whole tenant.
    pub prefixes: Vec<String>,
    pub all_versions: bool,
    /// The prefix being listed; `prefixes.len()` once every one is.
    pub prefix_index: usize,
    /// Every version of every key up to this one (in the current prefix) is done: a rerun lists
    /// from the key after it, whatever the bucket gained or lost before it meanwhile.
    pub done_through: Option<String>,
    /// The key being worked through, and its versions already done (a key's versions may span
    /// pages and parts).
    pub in_key: Option<InKey>,
    /// The member being written, if the last part ended inside one.
    pub current: Option<Current>,
    /// Bytes of the end-of-archive blocks written (they may straddle parts too).
    pub end_written: u64,
    /// The archive's multipart upload, once started.
    pub upload: Option<Upload>,
    /// Bytes of the archive so far (every part uploaded), and their running SHA-256.
    pub archive_bytes: u64,
    pub archive_hash: String,
    /// Versions archived and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Manifest chunks written to the journal (lines of the members done at each checkpoint).
    pub manifest_chunks: u32,
    pub started: String,
    /// Set once the archive and the manifest are complete.
    pub finished: Option<Finished>,
    /// The signed export record, once written.
    #[serde(default)]
    pub record: Option<crate::api::EvidenceLocation>,
}

/// A key whose versions are being archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InKey {
    pub key: String,
    pub done: Vec<String>,
}

/// A member the archive is inside of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Current {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub mtime: i64,
    /// Bytes of the member (header, content, padding) already in the archive.
    pub written: u64,
    /// SHA-256 state of the content written so far.
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    pub id: String,
    /// `(part number, ETag)` of every uploaded part, in order.
    pub parts: Vec<(i32, String)>,
    /// Every part is uploaded and `CompleteMultipartUpload` was sent (its answer may be lost).
    pub completing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    pub archive_sha256: String,
    pub manifest_sha256: String,
    pub manifest_bytes: u64,
    pub completed: String,
}

impl State {
    pub fn new(uid: &str, prefixes: &[String], all_versions: bool, now: String) -> State {
        State {
            format: FORMAT,
            uid: uid.to_owned(),
            prefixes: crate::api::normalize_prefixes(prefixes),
            all_versions,
            prefix_index: 0,
            done_through: None,
            in_key: None,
            current: None,
            end_written: 0,
            upload: None,
            archive_bytes: 0,
            archive_hash: save_hash(&Sha256::default()),
            objects: 0,
            bytes: 0,
            manifest_chunks: 0,
            started: now,
            finished: None,
            record: None,
        }
    }

    /// Whether every prefix has been listed.
    pub fn listed(&self) -> bool {
        self.prefix_index >= self.prefixes.len()
    }
}

/// A running SHA-256, as hex (its block state, the bytes hashed so far and the partial block).
pub fn save_hash(hasher: &Sha256) -> String {
    hasher
        .serialize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A running SHA-256 saved by [`save_hash`].
pub fn load_hash(hex: &str) -> Result<Sha256, String> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("hash state is not hex at {i}"))
        })
        .collect::<Result<_, _>>()?;
    let state = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("hash state has {} bytes", bytes.len()))?;
    Sha256::deserialize(state).map_err(|e| format!("hash state: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn a_saved_hash_continues_where_it_stopped() {
        let mut h = Sha256::new();
        h.update(b"hello, ");
        let mut resumed = load_hash(&save_hash(&h)).expect("state");
        resumed.update(b"world");
        assert_eq!(resumed.finalize(), Sha256::digest(b"hello, world"));
        assert!(load_hash("zz").is_err());
        assert!(load_hash("00").is_err());
    }

    #[test]
    fn state_round_trips_as_json() {
        let mut s = State::new(
            "u",
            &["b/".into(), "a/".into(), "a/x/".into()],
            true,
            "t".into(),
        );
        s.current = Some(Current {
            key: "a/1".into(),
            version_id: "v".into(),
            size: 3,
            mtime: 9,
            written: 700,
            hash: save_hash(&Sha256::new()),
        });
        assert_eq!(s.prefixes, ["a/", "b/"]);
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<State>(&json).expect("state"), s);
    }
}
