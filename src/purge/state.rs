//! The checkpoint: everything a rerun needs to continue exactly where a killed run stopped.

use serde::{Deserialize, Serialize};

use super::manifest::{Entry, JournalState};
use crate::api::DeletionProgress;

/// Bumped when the checkpoint layout changes incompatibly. 2: passes also list and abort
/// incomplete multipart uploads (`Pass::stage`, `Counts::multipart_uploads`). A format 1
/// checkpoint is refused rather than upgraded: its verification never looked for uploads, so
/// certifying from it would claim what was not checked, and a format 1 binary must not resume a
/// checkpoint whose manifest holds uploads.
pub const FORMAT: u32 = 2;

/// Totals so far (for a dry run: what would be deleted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub versions: u64,
    pub delete_markers: u64,
    pub bytes: u64,
    /// Versions kept by Object Lock.
    pub locked: u64,
    /// Incomplete multipart uploads aborted (their parts deleted); not in `bytes`. Defaulted
    /// only so that a format 1 checkpoint parses and is refused for its format.
    #[serde(default)]
    pub multipart_uploads: u64,
}

/// A listing position: the last `(key, versionId)` returned, or `(key, uploadId)` in the
/// upload stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    pub key: String,
    pub version_id: String,
}

/// What a pass is listing: first the versions and delete markers of every prefix, then the
/// incomplete multipart uploads of every prefix (which `ListObjectVersions` does not show).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    #[default]
    Versions,
    Uploads,
}

/// One listing of every scope prefix. The first pass deletes; later ones delete what the
/// previous pass could not (or what was written meanwhile) until a pass finds nothing but
/// locked versions: that pass is the verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pass {
    pub number: u32,
    /// Defaulted only so that a format 1 checkpoint parses and is refused for its format.
    #[serde(default)]
    pub stage: Stage,
    /// Index into the prefixes of the one being listed in `stage`; `prefixes.len()` once the
    /// upload stage has listed them all.
    pub prefix_index: usize,
    /// Listing resumes after this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Marker>,
    /// The entry at `after`, not deleted yet: some S3 implementations cannot resume a listing
    /// after a version that no longer exists, so it is deleted only with the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<Entry>,
    /// Versions sent for deletion and uploads sent for abort in this pass.
    pub attempted: u64,
    /// Versions listed in this pass that Object Lock keeps (known from earlier batches).
    pub remaining_locked: u64,
}

impl Pass {
    pub fn new(number: u32) -> Pass {
        Pass {
            number,
            stage: Stage::Versions,
            prefix_index: 0,
            after: None,
            carry: None,
            attempted: 0,
            remaining_locked: 0,
        }
    }

    /// Whether both stages have listed every prefix.
    pub fn listed(&self, prefixes: usize) -> bool {
        prefixes == 0 || (self.stage == Stage::Uploads && self.prefix_index >= prefixes)
    }

    /// Moves the listing on to the next prefix, or from the last prefix's versions to the first
    /// prefix's uploads.
    pub fn next_prefix(&mut self, prefixes: usize) {
        self.after = None;
        self.prefix_index += 1;
        if self.stage == Stage::Versions && self.prefix_index >= prefixes {
            self.stage = Stage::Uploads;
            self.prefix_index = 0;
        }
    }
}

/// A batch whose `DeleteObjects` may have been sent and whose result is not recorded: its
/// entries are in the batch record in `slot`, and a rerun sends it again (deleting a deleted
/// version id succeeds) before anything else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub id: u64,
    pub slot: u32,
}

/// The final listing's result: a pass that found nothing to delete or abort, so no delete
/// marker and no incomplete multipart upload is left in scope, and no version but locked ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Versions left in scope (all of them under Object Lock).
    pub remaining: u64,
    /// Listings of the scope it took (the last one is the verification).
    pub passes: u32,
    pub time: String,
}

/// What crypto-shredding did to the tenant key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shred {
    pub key_arn: String,
    /// Key state after the calls, as KMS reports it.
    pub key_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    pub window_days: i32,
    /// Set when the key was deliberately left alone, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The checkpoint of one request's purge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub format: u32,
    /// A checkpoint left by an earlier request of the same name is not this one's.
    pub request_uid: String,
    pub dry_run: bool,
    /// Normalised scope: no prefix is inside another, `""` is the whole bucket.
    pub prefixes: Vec<String>,
    pub start_time: String,
    pub counts: Counts,
    pub manifest: JournalState,
    pub locked: JournalState,
    pub pass: Pass,
    pub next_batch: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<InFlight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<String>,
    /// When listing (and, unless a dry run, deleting and verifying) finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shred: Option<Shred>,
    /// The tenant's exports removed from the export bucket, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports_deleted: Option<ExportsDeleted>,
    /// Set once everything is done; a rerun then only rewrites the certificate and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Set once the signed certificate and the manifest are in the evidence bucket; the
    /// manifest's chunks are then removed from the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRecord>,
    /// What the first run proved was the tenant's; every rerun works on exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// A deletion also removes every export of the tenant (archives, manifests and the export
/// Jobs' journals, which name its keys): they are copies of its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportsDeleted {
    pub bucket: String,
    pub prefixes: Vec<String>,
    pub objects: u64,
}

/// The tenant (by uid), bucket, region and key a request deletes from, pinned for its life: a
/// tenant deleted and recreated under the same name, or a status changed mid-run, must not
/// redirect a resumed purge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub tenant_uid: String,
    pub bucket: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Target {
    /// `Err` says what changed since the request started.
    pub fn check(&self, now: &Target) -> Result<(), String> {
        let mut changed = Vec::new();
        if self.tenant_uid != now.tenant_uid {
            changed.push(format!(
                "the TenantStorage is another object (uid {} then, {} now)",
                self.tenant_uid, now.tenant_uid
            ));
        }
        for (what, then, now) in [
            ("bucket", &self.bucket, &now.bucket),
            ("region", &self.region, &now.region),
        ] {
            if then != now {
                changed.push(format!("its {what} was {then}, is {now}"));
            }
        }
        if self.key != now.key {
            changed.push(format!("its key was {:?}, is {:?}", self.key, now.key));
        }
        if changed.is_empty() {
            Ok(())
        } else {
            Err(changed.join("; "))
        }
    }
}

/// What was published, so a rerun re-publishes the same certificate without the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRecord {
    /// Where it was published; none for a dry run, which publishes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<crate::api::EvidenceLocation>,
    /// The certificate's exact JSON, as signed.
    pub certificate: String,
    pub sha256: String,
    pub entries: u64,
}

impl State {
    /// What `status.progress` shows.
    pub fn progress(&self) -> DeletionProgress {
        DeletionProgress {
            versions_deleted: self.counts.versions,
            delete_markers_deleted: self.counts.delete_markers,
            bytes_deleted: self.counts.bytes,
            locked_versions: self.counts.locked,
            multipart_uploads_aborted: self.counts.multipart_uploads,
            start_time: Some(self.start_time.clone()),
            completion_time: self.completion_time.clone(),
            last_checkpoint: self.last_checkpoint.clone(),
        }
    }

    pub fn new(request_uid: &str, prefixes: &[String], dry_run: bool, now: String) -> State {
        State {
            format: FORMAT,
            request_uid: request_uid.to_owned(),
            dry_run,
            prefixes: crate::api::normalize_prefixes(prefixes),
            start_time: now,
            counts: Counts::default(),
            manifest: JournalState::default(),
            locked: JournalState::default(),
            pass: Pass::new(1),
            next_batch: 0,
            in_flight: Vec::new(),
            last_checkpoint: None,
            purged: None,
            verification: None,
            shred: None,
            exports_deleted: None,
            completion_time: None,
            evidence: None,
            target: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::normalize_prefixes;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn prefixes_never_overlap() {
        assert_eq!(
            normalize_prefixes(&strings(&["users/42/", "users/4", "logs/", "logs/", "a"])),
            strings(&["a", "logs/", "users/4"])
        );
        assert_eq!(normalize_prefixes(&strings(&["x/", ""])), strings(&[""]));
        assert_eq!(
            normalize_prefixes(&strings(&["a/b", "a/c", "a/bc"])),
            strings(&["a/b", "a/c"])
        );
    }

    #[test]
    fn a_pass_lists_versions_then_uploads_of_every_prefix() {
        let mut pass = Pass::new(1);
        let mut seen = Vec::new();
        while !pass.listed(2) {
            seen.push((pass.stage, pass.prefix_index));
            pass.after = Some(Marker {
                key: "k".into(),
                version_id: "v".into(),
            });
            pass.next_prefix(2);
            assert_eq!(pass.after, None);
        }
        assert_eq!(
            seen,
            vec![
                (Stage::Versions, 0),
                (Stage::Versions, 1),
                (Stage::Uploads, 0),
                (Stage::Uploads, 1)
            ]
        );
        assert!(Pass::new(1).listed(0), "no prefix, nothing to list");
    }

    #[test]
    fn state_round_trips_as_json() {
        let mut s = State::new("uid-1", &strings(&["p/"]), false, "t0".into());
        s.pass.carry = Some(Entry {
            key: "k".into(),
            version_id: "v".into(),
            kind: super::super::manifest::Kind::Version,
            size: 1,
        });
        s.in_flight.push(InFlight { id: 3, slot: 1 });
        s.pass.stage = Stage::Uploads;
        s.counts.multipart_uploads = 4;
        let json = serde_json::to_string(&s).expect("serialize");
        assert!(json.contains(r#""stage":"Uploads""#), "{json}");
        assert!(json.contains(r#""format":2"#), "{json}");
        assert_eq!(serde_json::from_str::<State>(&json).expect("parse"), s);
        // A format 1 checkpoint still parses, so that it is refused for its format (not as
        // malformed JSON).
        let v1 = json
            .replace(r#""format":2"#, r#""format":1"#)
            .replace(r#""stage":"Uploads","#, "")
            .replace(r#","multipartUploads":4"#, "");
        assert!(
            !v1.contains("stage") && !v1.contains("multipartUploads"),
            "{v1}"
        );
        let old = serde_json::from_str::<State>(&v1).expect("format 1 parses");
        assert_ne!(old.format, FORMAT);
    }

    #[test]
    fn a_pinned_target_refuses_any_change() {
        let pinned = Target {
            tenant_uid: "u1".into(),
            bucket: "b".into(),
            region: "eu-central-1".into(),
            key: Some("k".into()),
        };
        assert_eq!(pinned.check(&pinned.clone()), Ok(()));
        let recreated = Target {
            tenant_uid: "u2".into(),
            ..pinned.clone()
        };
        assert!(
            pinned
                .check(&recreated)
                .is_err_and(|e| e.contains("another object"))
        );
        let moved = Target {
            bucket: "other".into(),
            ..pinned.clone()
        };
        assert!(
            pinned
                .check(&moved)
                .is_err_and(|e| e.contains("bucket was b, is other"))
        );
        let rekeyed = Target {
            key: None,
            ..pinned.clone()
        };
        assert!(pinned.check(&rekeyed).is_err());
    }
}
