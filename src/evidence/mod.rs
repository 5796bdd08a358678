//! Deletion evidence an auditor can check without the cluster: where it is kept, how it is
//! signed, and how it is verified. The layout below is the contract between the deletion Job
//! that writes the evidence and `tenant-storage-operator verify-certificate` that checks it.
//!
//! Per request, in the operator-owned evidence bucket of the tenant's policy and region (Object
//! Lock on; every object written in COMPLIANCE mode until the policy's retention ends):
//! - `deletions/<namespace>/<request>/<request-uid>/certificate.json`: the certificate;
//! - `.../certificate.json.sig`: an ECDSA P-256 signature (DER, as KMS `Sign` returns it with
//!   `ECDSA_SHA_256` over the SHA-256 digest of the certificate's exact bytes) by the
//!   operator's signing key in that region, named in the certificate (`evidence.signingKeyArn`);
//! - `.../manifest.tsv.gz`: the manifest (every removed version, delete marker and aborted
//!   upload, one line each, as `crate::purge` writes them), gzip-compressed; the certificate
//!   names its version id and the SHA-256 of the compressed bytes. A manifest of more than
//!   about 8 MiB compressed continues in `.../manifest.tsv.gz.00002`, `...00003` and so on,
//!   each a gzip member of its own, named by the certificate in order (so the Job never holds
//!   more than a part): the manifest is their concatenation, as `cat | gunzip` reads it.

pub mod verify;

use serde::{Deserialize, Serialize};

pub use verify::{ObjectUri, OutputFormat, Verdict};

/// KMS signing algorithm of certificates.
pub const SIGNING_ALGORITHM: &str = "ECDSA_SHA_256";
/// KMS key spec of the signing keys.
pub const SIGNING_KEY_SPEC: &str = "ECC_NIST_P256";

/// Where one request's evidence is kept: under `deletions/<namespace>/<request>/<uid>/`, and its
/// Job's journal under `journal/` with the same path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// `<namespace>/<request>/<uid>/`.
    path: String,
}

impl Location {
    pub fn new(bucket: &str, namespace: &str, request: &str, uid: &str) -> Self {
        Location {
            bucket: bucket.to_owned(),
            path: format!("{namespace}/{request}/{uid}/"),
        }
    }

    /// Where the evidence objects are.
    pub fn prefix(&self) -> String {
        format!("deletions/{}", self.path)
    }

    pub fn certificate(&self) -> String {
        format!("deletions/{}certificate.json", self.path)
    }

    pub fn signature(&self) -> String {
        format!("deletions/{}certificate.json.sig", self.path)
    }

    pub fn manifest(&self) -> String {
        format!("deletions/{}manifest.tsv.gz", self.path)
    }

    /// Part `n` (2 or more) of the manifest.
    pub fn manifest_part(&self, n: usize) -> String {
        format!("{}.{n:05}", self.manifest())
    }

    pub fn locked(&self) -> String {
        format!("deletions/{}locked.tsv.gz", self.path)
    }

    /// Where the Job journals while it works (not locked; removed once the evidence is
    /// published).
    pub fn journal(&self) -> String {
        format!("journal/{}", self.path)
    }
}

/// The certificate's `evidence` section: what a verifier fetches and checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceSection {
    pub bucket: String,
    pub region: String,
    /// The compressed manifest: its key, version id, and SHA-256 of its bytes (hex).
    pub manifest_key: String,
    pub manifest_version_id: String,
    pub manifest_sha256: String,
    /// The manifest's further parts, in order, when it has any (certificate format 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_continuation: Vec<EvidenceObject>,
    /// The versions Object Lock kept, when there were any (`key<TAB>versionId<TAB>mode<TAB>
    /// retainUntil`, gzip, one per line): where they are and the SHA-256 of the compressed bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<EvidenceObject>,
    /// The key that signs `certificate.json` (its public key: KMS `GetPublicKey`).
    pub signing_key_arn: String,
    pub signing_algorithm: String,
    /// Object Lock mode and the date until which none of these objects can be deleted or
    /// overwritten, by anyone.
    pub retention_mode: String,
    pub retain_until: String,
}

/// One locked object of the evidence: a part of the manifest, or the list of versions a purge
/// left because Object Lock keeps them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceObject {
    pub key: String,
    pub version_id: String,
    pub sha256: String,
}
