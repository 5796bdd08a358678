//! Checking a deletion certificate from its evidence alone: the signature over its exact
//! bytes, the manifest it names against the digests and counts it certifies, the Object Lock
//! retention of the three objects, and (optionally) a listing of the scope today. Pure: the
//! objects, the public key and the listings come in as values (`crate::cloud::evidence` fetches
//! them), checks come out as a [`Verdict`].
//!
//! Nothing here prints an object key of the tenant: a malformed or duplicated manifest line is
//! named by its line number only (keys are often personal data, and a verdict ends up in
//! tickets and logs).

use std::fmt::Write as _;
use std::io::Read;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{EvidenceSection, Location, SIGNING_ALGORITHM, SIGNING_KEY_SPEC};
use crate::api::DataScope;
use crate::plan::Arn;

/// DER of a SubjectPublicKeyInfo up to its key bits, for an `id-ecPublicKey` key on
/// `prime256v1` with an uncompressed point: SEQUENCE(89) { SEQUENCE(19) { OID 1.2.840.10045.2.1,
/// OID 1.2.840.10045.3.1.7 }, BIT STRING(66) { 0 unused bits, ...} }. What KMS `GetPublicKey`
/// returns for an `ECC_NIST_P256` key; the 65-byte point follows.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The object lock mode the evidence must be under: nobody can shorten or lift it.
pub const RETENTION_MODE: &str = "COMPLIANCE";

const KIND_VERSION: &[u8] = b"version";
const KIND_DELETE_MARKER: &[u8] = b"deleteMarker";
const KIND_UPLOAD: &[u8] = b"multipartUpload";

/// Why a signature does not verify.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "the public key is not the DER SubjectPublicKeyInfo of an uncompressed NIST P-256 point ({0}); refusing to verify with it"
    )]
    NotP256(String),
    #[error("the signature does not match the certificate's bytes under this key")]
    Mismatch,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The uncompressed point (`04 || X || Y`) of a P-256 SubjectPublicKeyInfo, which is what
/// `ring` verifies with. Anything but exactly that layout is refused.
pub fn p256_point(spki: &[u8]) -> Result<&[u8], SignatureError> {
    let Some(point) = spki.strip_prefix(&P256_SPKI_PREFIX[..]) else {
        let shown = &spki[..spki.len().min(P256_SPKI_PREFIX.len())];
        return Err(SignatureError::NotP256(format!(
            "{} bytes, starting {}, expected {} then 65 bytes",
            spki.len(),
            hex(shown),
            hex(&P256_SPKI_PREFIX)
        )));
    };
    match point.first() {
        Some(0x04) if point.len() == 65 => Ok(point),
        _ => Err(SignatureError::NotP256(format!(
            "the key bits are {} bytes starting {}, expected 65 bytes starting 04 (uncompressed)",
            point.len(),
            hex(&point[..point.len().min(1)])
        ))),
    }
}

/// Verifies an ASN.1 DER ECDSA P-256 SHA-256 signature (as KMS `Sign` with `ECDSA_SHA_256`
/// returns it, and as `openssl dgst -sha256 -sign` writes it) over `message`, with a public
/// key as KMS `GetPublicKey` returns it (DER SubjectPublicKeyInfo).
pub fn verify_signature(
    message: &[u8],
    signature: &[u8],
    spki: &[u8],
) -> Result<(), SignatureError> {
    let point = p256_point(spki)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(message, signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// `s3://bucket/key`; a key ending in `/` names the request's evidence folder, whose
/// `certificate.json` is meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectUri {
    pub bucket: String,
    pub key: String,
}

impl ObjectUri {
    pub fn parse(uri: &str) -> Result<ObjectUri, String> {
        let usage = || {
            format!(
                "{uri:?} is not s3://<evidence-bucket>/<key of certificate.json>, e.g. s3://evidence-bucket/deletions/acme-eu/gdpr-1234/<uid>/certificate.json"
            )
        };
        let rest = uri.strip_prefix("s3://").ok_or_else(usage)?;
        let (bucket, key) = rest.split_once('/').ok_or_else(usage)?;
        if bucket.is_empty() || key.is_empty() {
            return Err(usage());
        }
        let key = if key.ends_with('/') {
            format!("{key}certificate.json")
        } else {
            key.to_owned()
        };
        Ok(ObjectUri {
            bucket: bucket.to_owned(),
            key,
        })
    }

    /// Where the certificate's signature is (`<certificate key>.sig`).
    pub fn signature_key(&self) -> String {
        format!("{}.sig", self.key)
    }
}

impl std::fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A namespaced name, as the certificate gives the request and the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Named {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
}

/// The certificate's `counts`, as far as the manifest can prove them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertifiedCounts {
    pub versions: u64,
    pub delete_markers: u64,
    pub multipart_uploads: u64,
}

/// The certificate's `verification`: the final listing of the scope.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CertifiedVerification {
    pub remaining: u64,
    #[serde(default)]
    pub passes: u32,
    #[serde(default)]
    pub time: String,
}

/// The certificate's `cryptoShred`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertifiedShred {
    pub key_arn: String,
    pub key_state: String,
    #[serde(default)]
    pub deletion_date: Option<String>,
    #[serde(default)]
    pub skipped: Option<String>,
}

/// What a verifier reads of `certificate.json` (other fields are ignored, so a certificate
/// with more fields still verifies; one without these is refused).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The certificate's format: from 4 on, the hashes follow manifest order.
    #[serde(default)]
    pub format: u32,
    pub request: Named,
    pub tenant: Named,
    /// The tenant's bucket and region.
    pub bucket: String,
    pub region: String,
    pub scope: DataScope,
    /// `Purge`, `CryptoShred` or `PurgeAndCryptoShred`.
    pub method: String,
    #[serde(default)]
    pub dry_run: bool,
    /// `Succeeded` or `Blocked`.
    pub outcome: String,
    pub counts: CertifiedCounts,
    pub sha256: String,
    pub entries: u64,
    pub multipart_uploads_sha256: String,
    pub multipart_upload_entries: u64,
    /// Versions Object Lock kept (listed in `evidence.locked`).
    #[serde(default)]
    pub locked_versions_total: u64,
    /// Format 2 listed the locked versions in the certificate itself (at most 500).
    #[serde(default)]
    pub locked_versions: Vec<serde_json::Value>,
    #[serde(default)]
    pub verification: Option<CertifiedVerification>,
    #[serde(default)]
    pub crypto_shred: Option<CertifiedShred>,
    pub evidence: EvidenceSection,
}

impl Claims {
    pub fn parse(certificate: &[u8]) -> Result<Claims, String> {
        serde_json::from_slice(certificate).map_err(|e| e.to_string())
    }

    /// In which order the certificate's hashes take the manifest's lines.
    pub fn hash_order(&self) -> HashOrder {
        if self.format >= 4 {
            HashOrder::AsWritten
        } else {
            HashOrder::Sorted
        }
    }

    fn purges(&self) -> bool {
        self.method != "CryptoShred"
    }

    fn shreds(&self) -> bool {
        self.method.contains("CryptoShred")
    }
}

/// One check, passed or failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            passed: true,
            detail: detail.into(),
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            passed: false,
            detail: detail.into(),
        }
    }
}

/// How a verdict is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per check, then `VERIFIED` or `NOT VERIFIED: <first failure>`.
    Text,
    /// `{"certificate", "verified", "failure", "checks": [{"name", "passed", "detail"}]}`.
    Json,
}

/// Every check made of one certificate, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `s3://bucket/key` of the certificate.
    pub certificate: String,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn new(certificate: impl Into<String>) -> Verdict {
        Verdict {
            certificate: certificate.into(),
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Verified: at least one check was made and every check passed.
    pub fn verified(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.passed)
    }

    fn conclusion(&self) -> String {
        match self.first_failure() {
            None if self.verified() => "VERIFIED".to_owned(),
            None => "NOT VERIFIED: nothing was checked".to_owned(),
            Some(c) => format!("NOT VERIFIED: {}: {}", c.name, c.detail),
        }
    }

    pub fn text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = if c.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{mark}  {:width$}  {}", c.name, c.detail);
        }
        out.push_str(&self.conclusion());
        out.push('\n');
        out
    }

    /// `{"certificate", "verified", "failure", "checks": [{"name", "passed", "detail"}]}`,
    /// pretty-printed; `failure` is the first failed check (`null` when verified).
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            certificate: &'a str,
            verified: bool,
            failure: Option<String>,
            checks: &'a [Check],
        }
        let json = Json {
            certificate: &self.certificate,
            verified: self.verified(),
            failure: self
                .first_failure()
                .map(|c| format!("{}: {}", c.name, c.detail)),
            checks: &self.checks,
        };
        // Strings and booleans only: serializing cannot fail.
        serde_json::to_string_pretty(&json).unwrap_or_default()
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Text => self.text(),
            OutputFormat::Json => format!("{}\n", self.json()),
        }
    }
}

/// Check `certificate`: the object was read and is a certificate this verifier understands.
pub fn check_certificate(
    uri: &ObjectUri,
    version_id: Option<&str>,
    bytes: &[u8],
) -> (Check, Option<Claims>) {
    const NAME: &str = "certificate";
    let read = format!(
        "{uri} (version {}, {} bytes, sha256 {})",
        version_id.unwrap_or("-"),
        bytes.len(),
        sha256_hex(bytes)
    );
    match Claims::parse(bytes) {
        Ok(claims) => {
            let detail = format!(
                "{read}: request {}/{} (uid {}), tenant {}/{}, bucket {} in {}, {}, outcome {}",
                claims.request.namespace,
                claims.request.name,
                claims.request.uid.as_deref().unwrap_or("-"),
                claims.tenant.namespace,
                claims.tenant.name,
                claims.bucket,
                claims.region,
                claims.method,
                claims.outcome
            );
            (Check::pass(NAME, detail), Some(claims))
        }
        Err(e) => (
            Check::fail(
                NAME,
                format!("{read} is not a signed deletion certificate: {e}"),
            ),
            None,
        ),
    }
}

/// The signing key as KMS `GetPublicKey` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The key's ARN, as KMS resolved the name it was asked for.
    pub key_id: Option<String>,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    pub key_spec: Option<String>,
    pub signing_algorithms: Vec<String>,
}

/// Check `signature`: `signature` is a valid signature of `certificate` by the key the
/// certificate names (which must be `pinned` when given), with the certified algorithm.
pub fn check_signature(
    certificate: &[u8],
    signature: &[u8],
    key: &PublicKey,
    claims: &Claims,
    pinned: Option<&str>,
) -> Check {
    const NAME: &str = "signature";
    let named = claims.evidence.signing_key_arn.as_str();
    if let Some(pinned) = pinned.filter(|p| *p != named) {
        return Check::fail(
            NAME,
            format!("the certificate names signing key {named}, not {pinned} (--signing-key-arn)"),
        );
    }
    if claims.evidence.signing_algorithm != SIGNING_ALGORITHM {
        return Check::fail(
            NAME,
            format!(
                "the certificate names signing algorithm {:?}; only {SIGNING_ALGORITHM} is accepted",
                claims.evidence.signing_algorithm
            ),
        );
    }
    if let Some(resolved) = key.key_id.as_deref().filter(|k| *k != named) {
        // An alias can be pointed at another key at any time: the certificate must name the key.
        return Check::fail(
            NAME,
            format!(
                "the certificate names {named}, which KMS resolves to {resolved}: a certificate must name its key's ARN"
            ),
        );
    }
    if let Some(spec) = key.key_spec.as_deref().filter(|s| *s != SIGNING_KEY_SPEC) {
        return Check::fail(
            NAME,
            format!("key {named} is a {spec} key, not {SIGNING_KEY_SPEC}"),
        );
    }
    if !key.signing_algorithms.is_empty()
        && !key
            .signing_algorithms
            .iter()
            .any(|a| a == SIGNING_ALGORITHM)
    {
        return Check::fail(
            NAME,
            format!(
                "key {named} cannot sign with {SIGNING_ALGORITHM} (it offers {})",
                key.signing_algorithms.join(", ")
            ),
        );
    }
    let pinning = if pinned.is_some() {
        "the pinned key"
    } else {
        "the key the certificate names; pass --signing-key-arn to require the operator's key"
    };
    match verify_signature(certificate, signature, &key.spki) {
        Ok(()) => Check::pass(
            NAME,
            format!("valid {SIGNING_ALGORITHM} signature by {named} ({pinning})"),
        ),
        Err(e) => Check::fail(NAME, format!("{e} (key {named})")),
    }
}

/// The region of a KMS key ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`), if it is
/// a key ARN.
fn key_arn_region(arn: &str) -> Option<String> {
    let arn: Arn = arn.parse().ok()?;
    (arn.service == "kms" && arn.resource.starts_with("key/")).then_some(arn.region)
}

/// Check `location`: the certificate was read where its evidence section says the evidence
/// is, under the layout of `crate::evidence`, and the evidence and the signing key are in the
/// tenant's region. `bucket_region` is where the evidence bucket was found.
pub fn check_location(uri: &ObjectUri, bucket_region: &str, claims: &Claims) -> Check {
    const NAME: &str = "location";
    let ev = &claims.evidence;
    let mut problems = Vec::new();
    if uri.bucket != ev.bucket {
        problems.push(format!(
            "read from bucket {}, but the certificate's evidence is in {}",
            uri.bucket, ev.bucket
        ));
    }
    match claims.request.uid.as_deref() {
        Some(uid) => {
            let layout = Location::new(
                &ev.bucket,
                &claims.request.namespace,
                &claims.request.name,
                uid,
            );
            if uri.key != layout.certificate() {
                problems.push(format!(
                    "read from key {}, but request {}/{} (uid {uid}) keeps its certificate at {}",
                    uri.key,
                    claims.request.namespace,
                    claims.request.name,
                    layout.certificate()
                ));
            }
            for (n, (key, _, _)) in manifest_parts(ev).into_iter().enumerate() {
                let expected = match n + 1 {
                    1 => layout.manifest(),
                    n => layout.manifest_part(n),
                };
                if key != expected {
                    problems.push(format!(
                        "manifest part {} is named {key}, not {expected}",
                        n + 1
                    ));
                }
            }
        }
        None => problems.push("the certificate does not give the request's uid".to_owned()),
    }
    if ev.region != claims.region {
        problems.push(format!(
            "the evidence is kept in {}, outside the tenant's region {}",
            ev.region, claims.region
        ));
    }
    if bucket_region != ev.region {
        problems.push(format!(
            "bucket {} is in {bucket_region}, but the certificate says {}",
            uri.bucket, ev.region
        ));
    }
    match key_arn_region(&ev.signing_key_arn) {
        Some(r) if r == claims.region => {}
        Some(r) => problems.push(format!(
            "the signing key is in {r}, outside the tenant's region {}",
            claims.region
        )),
        None => problems.push(format!(
            "the signing key {} is not a KMS key ARN",
            ev.signing_key_arn
        )),
    }
    if problems.is_empty() {
        Check::pass(
            NAME,
            format!(
                "evidence bucket {} and signing key in {}, the tenant's region; keys as laid out for the request",
                ev.bucket, ev.region
            ),
        )
    } else {
        Check::fail(NAME, problems.join("; "))
    }
}

/// Check `outcome`: the certificate certifies a completed deletion: not a dry run,
/// `Succeeded`, a final listing that found nothing left (when it purged), the key pending
/// deletion (when it crypto-shredded).
pub fn check_outcome(claims: &Claims) -> Check {
    const NAME: &str = "outcome";
    if claims.dry_run {
        return Check::fail(
            NAME,
            "a dry run: it counts what would be deleted, nothing was",
        );
    }
    let mut said = Vec::new();
    if claims.purges() {
        match &claims.verification {
            None => {
                return Check::fail(
                    NAME,
                    format!(
                        "outcome {}, but the certificate records no verification listing",
                        claims.outcome
                    ),
                );
            }
            Some(v) if v.remaining > 0 => {
                return Check::fail(
                    NAME,
                    format!(
                        "outcome {}: {} versions under Object Lock remain in scope",
                        claims.outcome, v.remaining
                    ),
                );
            }
            Some(v) => said.push(format!(
                "the final listing ({} passes, {}) found nothing left in scope",
                v.passes, v.time
            )),
        }
    }
    if claims.shreds() {
        match &claims.crypto_shred {
            Some(s) if s.skipped.is_none() && s.key_state == "PendingDeletion" => {
                said.push(format!(
                    "key {} pending deletion{}",
                    s.key_arn,
                    s.deletion_date
                        .as_deref()
                        .map(|d| format!(" on {d}"))
                        .unwrap_or_default()
                ))
            }
            Some(s) => {
                return Check::fail(
                    NAME,
                    format!(
                        "key {} was not crypto-shredded (state {}{})",
                        s.key_arn,
                        s.key_state,
                        s.skipped
                            .as_deref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default()
                    ),
                );
            }
            None => {
                return Check::fail(
                    NAME,
                    format!(
                        "method {}, but the certificate records no crypto-shred",
                        claims.method
                    ),
                );
            }
        }
    }
    if claims.outcome != "Succeeded" {
        return Check::fail(NAME, format!("outcome {}, not Succeeded", claims.outcome));
    }
    Check::pass(NAME, format!("Succeeded: {}", said.join("; ")))
}

/// The newest certificate format this verifier knows.
pub const CERTIFICATE_FORMAT: u32 = 4;

/// In which order a certificate's hashes take the manifest's `key<TAB>versionId` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashOrder {
    /// Sorted bytewise (`LC_ALL=C sort | sha256sum`): certificates before format 4.
    Sorted,
    /// As the manifest has them (`| sha256sum`): format 4, hashed by the Job as it streams.
    AsWritten,
}

/// What a manifest holds, computed as the certificate's `hashInput` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestFacts {
    /// SHA-256 (hex) and count of the `key<TAB>versionId<LF>` lines of every line whose third
    /// field is not `multipartUpload` (`awk -F'\t' '$3 != "multipartUpload"' | cut -f1,2 |
    /// sha256sum`, with `LC_ALL=C sort` before `sha256sum` for [`HashOrder::Sorted`]).
    pub versions_sha256: String,
    pub versions_lines: u64,
    /// The same over the `multipartUpload` lines.
    pub uploads_sha256: String,
    pub uploads_lines: u64,
    /// Lines of each kind.
    pub versions: u64,
    pub delete_markers: u64,
    pub uploads: u64,
    /// Malformed lines (1-based line numbers of the first few) and how many.
    pub malformed: Vec<(u64, &'static str)>,
    pub malformed_total: u64,
    /// Lines whose `(key, versionId)` (or `(key, uploadId)`) an earlier line already has: the
    /// first few as (earlier line, this line), and how many.
    pub duplicates: Vec<(u64, u64)>,
    pub duplicates_total: u64,
}

/// Line numbers of problems kept for the report.
const SHOWN: usize = 5;

/// Why a manifest field is not as the writer encodes it (only `%25`, `%09`, `%0A`, `%0D` are
/// escapes; no raw CR; UTF-8).
fn field_problem(field: &[u8]) -> Option<&'static str> {
    if field.contains(&b'\r') {
        return Some("a raw CR in a field (it is written %0D)");
    }
    let mut i = 0;
    while let Some(off) = field[i..].iter().position(|b| *b == b'%') {
        let at = i + off;
        match field.get(at + 1..at + 3) {
            Some(b"25" | b"09" | b"0A" | b"0D") => i = at + 3,
            _ => return Some("a % that is not one of the escapes %25, %09, %0A, %0D"),
        }
    }
    std::str::from_utf8(field)
        .is_err()
        .then_some("a field that is not UTF-8")
}

/// Why a manifest line is malformed, if it is.
fn line_problem(line: &[u8]) -> Option<&'static str> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
    let [key, id, kind, size] = fields.as_slice() else {
        return Some("expected 4 tab-separated fields: key, version id, kind, size");
    };
    if ![KIND_VERSION, KIND_DELETE_MARKER, KIND_UPLOAD].contains(kind) {
        return Some("kind is not version, deleteMarker or multipartUpload");
    }
    if size.is_empty()
        || !size.iter().all(u8::is_ascii_digit)
        || std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_none()
    {
        return Some("size is not a decimal number");
    }
    field_problem(key).or_else(|| field_problem(id))
}

/// The first two fields, as `cut -f1,2` prints them: up to the second TAB, or the whole line.
fn id_part(line: &[u8]) -> &[u8] {
    let mut tabs = line
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\t')
        .map(|(i, _)| i);
    let _ = tabs.next();
    tabs.next().map_or(line, |end| &line[..end])
}

/// Hashes the ids in `order` as `sha256sum` would, and finds ids given twice.
fn hash_ids(
    mut ids: Vec<(&[u8], u64)>,
    order: HashOrder,
    facts: &mut ManifestFacts,
) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut hash = |ids: &[(&[u8], u64)]| {
        for (id, _) in ids {
            hasher.update(id);
            hasher.update(b"\n");
        }
    };
    if order == HashOrder::AsWritten {
        hash(&ids);
    }
    ids.sort_unstable();
    if order == HashOrder::Sorted {
        hash(&ids);
    }
    for pair in ids.windows(2) {
        if pair[0].0 == pair[1].0 {
            facts.duplicates_total += 1;
            if facts.duplicates.len() < SHOWN {
                facts.duplicates.push((pair[0].1, pair[1].1));
            }
        }
    }
    (hex(&hasher.finalize()), ids.len() as u64)
}

/// Gunzips (every gzip member, as `gunzip` does) and reads a manifest.
pub fn read_manifest(compressed: &[u8], order: HashOrder) -> Result<ManifestFacts, String> {
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .read_to_end(&mut text)
        .map_err(|e| format!("not a gzip stream: {e}"))?;
    Ok(manifest_facts(&text, order))
}

/// Reads uncompressed manifest text: one line per entry, each ending in LF (a last line
/// without one counts too, as for `awk`).
pub fn manifest_facts(text: &[u8], order: HashOrder) -> ManifestFacts {
    let mut facts = ManifestFacts::default();
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let lines = (!text.is_empty()).then(|| body.split(|b| *b == b'\n'));
    let mut versions = Vec::new();
    let mut uploads = Vec::new();
    for (i, line) in lines.into_iter().flatten().enumerate() {
        let line_no = i as u64 + 1;
        if let Some(problem) = line_problem(line) {
            facts.malformed_total += 1;
            if facts.malformed.len() < SHOWN {
                facts.malformed.push((line_no, problem));
            }
        }
        let kind = line.split(|b| *b == b'\t').nth(2);
        match kind {
            Some(KIND_VERSION) => facts.versions += 1,
            Some(KIND_DELETE_MARKER) => facts.delete_markers += 1,
            Some(KIND_UPLOAD) => facts.uploads += 1,
            _ => {}
        }
        if kind == Some(KIND_UPLOAD) {
            uploads.push((id_part(line), line_no));
        } else {
            versions.push((id_part(line), line_no));
        }
    }
    (facts.versions_sha256, facts.versions_lines) = hash_ids(versions, order, &mut facts);
    (facts.uploads_sha256, facts.uploads_lines) = hash_ids(uploads, order, &mut facts);
    facts
}

fn line_list(lines: impl Iterator<Item = String>, total: u64) -> String {
    let shown: Vec<String> = lines.collect();
    let more = total.saturating_sub(shown.len() as u64);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The manifest's parts the certificate names, in order: `(key, versionId, sha256)`.
pub fn manifest_parts(ev: &EvidenceSection) -> Vec<(&str, &str, &str)> {
    std::iter::once((
        ev.manifest_key.as_str(),
        ev.manifest_version_id.as_str(),
        ev.manifest_sha256.as_str(),
    ))
    .chain(ev.manifest_continuation.iter().map(|part| {
        (
            part.key.as_str(),
            part.version_id.as_str(),
            part.sha256.as_str(),
        )
    }))
    .collect()
}

/// Check `manifest-digest`: each compressed part is the one the certificate names.
fn check_parts(parts: &[&[u8]], ev: &EvidenceSection) -> Check {
    const NAME: &str = "manifest-digest";
    let named = manifest_parts(ev);
    if parts.len() != named.len() {
        return Check::fail(
            NAME,
            format!(
                "{} manifest parts read, the certificate names {}",
                parts.len(),
                named.len()
            ),
        );
    }
    let mut bytes = 0;
    for (part, (key, version_id, certified)) in parts.iter().zip(&named) {
        let digest = sha256_hex(part);
        if !digest.eq_ignore_ascii_case(certified) {
            return Check::fail(
                NAME,
                format!(
                    "the compressed manifest's sha256 is {digest} (s3://{}/{key} version {version_id}), the certificate says {certified}",
                    ev.bucket
                ),
            );
        }
        bytes += part.len();
    }
    let (key, version_id, digest) = named[0];
    let more = match named.len() {
        1 => String::new(),
        n => format!(" and {} more parts", n - 1),
    };
    Check::pass(
        NAME,
        format!(
            "s3://{}/{key} version {version_id}{more}: {bytes} bytes, sha256 {digest}{} as certified",
            ev.bucket,
            if more.is_empty() { "" } else { " and theirs" },
        ),
    )
}

/// Checks `manifest-digest`, `manifest-lines`, `versions-hash`, `uploads-hash` and `counts`:
/// the compressed manifest parts are the ones the certificate names, every line is
/// well-formed and appears once, and it hashes to and counts what the certificate certifies.
pub fn check_manifest(parts: &[&[u8]], claims: &Claims) -> Vec<Check> {
    if claims.format > CERTIFICATE_FORMAT {
        let why = format!(
            "certificate format {} is newer than this verifier's ({CERTIFICATE_FORMAT}): use a newer tenant-storage-operator",
            claims.format
        );
        return [
            "manifest-digest",
            "manifest-lines",
            "versions-hash",
            "uploads-hash",
            "counts",
        ]
        .into_iter()
        .map(|name| Check::fail(name, why.clone()))
        .collect();
    }
    let mut checks = vec![check_parts(parts, &claims.evidence)];
    let facts = match read_manifest(&parts.concat(), claims.hash_order()) {
        Ok(facts) => facts,
        Err(e) => {
            for name in ["manifest-lines", "versions-hash", "uploads-hash", "counts"] {
                checks.push(Check::fail(
                    name,
                    format!("the manifest is unreadable: {e}"),
                ));
            }
            return checks;
        }
    };
    let lines = facts.versions_lines + facts.uploads_lines;
    checks.push(if facts.malformed_total > 0 {
        let which = facts
            .malformed
            .iter()
            .map(|(n, why)| format!("line {n} ({why})"));
        Check::fail(
            "manifest-lines",
            format!(
                "{} of {lines} lines malformed: {}",
                facts.malformed_total,
                line_list(which, facts.malformed_total)
            ),
        )
    } else if facts.duplicates_total > 0 {
        let which = facts
            .duplicates
            .iter()
            .map(|(a, b)| format!("line {b} repeats line {a}"));
        Check::fail(
            "manifest-lines",
            format!(
                "{} lines repeat an earlier entry: {}",
                facts.duplicates_total,
                line_list(which, facts.duplicates_total)
            ),
        )
    } else {
        Check::pass(
            "manifest-lines",
            format!("{lines} well-formed lines, no entry twice"),
        )
    });
    checks.push(hash_check(
        "versions-hash",
        "versions and delete markers",
        (&facts.versions_sha256, facts.versions_lines),
        (&claims.sha256, claims.entries),
    ));
    checks.push(hash_check(
        "uploads-hash",
        "aborted multipart uploads",
        (&facts.uploads_sha256, facts.uploads_lines),
        (
            &claims.multipart_uploads_sha256,
            claims.multipart_upload_entries,
        ),
    ));
    let c = &claims.counts;
    let mut off = Vec::new();
    for (what, found, certified) in [
        ("versions", facts.versions, c.versions),
        ("delete markers", facts.delete_markers, c.delete_markers),
        ("multipart uploads", facts.uploads, c.multipart_uploads),
    ] {
        if found != certified {
            off.push(format!(
                "{what}: {found} in the manifest, {certified} in counts"
            ));
        }
    }
    checks.push(if off.is_empty() {
        Check::pass(
            "counts",
            format!(
                "versions {}, delete markers {}, multipart uploads {}: as counted",
                facts.versions, facts.delete_markers, facts.uploads
            ),
        )
    } else {
        Check::fail("counts", off.join("; "))
    });
    checks
}

fn hash_check(name: &str, what: &str, found: (&str, u64), certified: (&str, u64)) -> Check {
    if found.0.eq_ignore_ascii_case(certified.0) && found.1 == certified.1 {
        Check::pass(
            name,
            format!("{what}: {} lines, sha256 {} as certified", found.1, found.0),
        )
    } else {
        Check::fail(
            name,
            format!(
                "{what}: {} lines hashing to {}; the certificate says {} entries, {}",
                found.1, found.0, certified.1, certified.0
            ),
        )
    }
}

/// Check `locked-list`: the versions Object Lock kept are listed in the evidence, in the object
/// the certificate names (same SHA-256), one well-formed line (`key<TAB>versionId<TAB>mode<TAB>
/// retainUntil`) per version it counts. `compressed` is the list as read, when one is named.
pub fn check_locked(compressed: Option<Result<Vec<u8>, String>>, claims: &Claims) -> Check {
    const NAME: &str = "locked-list";
    let total = claims.locked_versions_total;
    let (Some(list), Some(read)) = (&claims.evidence.locked, compressed) else {
        return if total == 0 {
            Check::pass(NAME, "Object Lock kept no version")
        } else if !claims.locked_versions.is_empty() {
            Check::pass(
                NAME,
                format!(
                    "the certificate itself lists {} of the {total} locked versions (format 2)",
                    claims.locked_versions.len()
                ),
            )
        } else {
            Check::fail(
                NAME,
                format!("the certificate counts {total} locked versions but names no list of them"),
            )
        };
    };
    let at = format!(
        "s3://{}/{} version {}",
        claims.evidence.bucket, list.key, list.version_id
    );
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) => return Check::fail(NAME, format!("cannot read {at}: {e}")),
    };
    let digest = sha256_hex(&bytes);
    if !digest.eq_ignore_ascii_case(&list.sha256) {
        return Check::fail(
            NAME,
            format!("{at} has sha256 {digest}, the certificate {}", list.sha256),
        );
    }
    let mut text = String::new();
    if let Err(e) = flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_string(&mut text) {
        return Check::fail(NAME, format!("{at} is not gzip-compressed text: {e}"));
    }
    let lines: Vec<&str> = text.lines().collect();
    if let Some(bad) = lines.iter().position(|l| l.split('\t').count() != 4) {
        return Check::fail(
            NAME,
            format!(
                "{at} line {} is not key, version id, mode, retain-until",
                bad + 1
            ),
        );
    }
    if lines.len() as u64 != total {
        return Check::fail(
            NAME,
            format!(
                "{at} lists {} versions, the certificate counts {total}",
                lines.len()
            ),
        );
    }
    Check::pass(
        NAME,
        format!("{at}: {total} versions, sha256 {digest} as certified"),
    )
}

/// An object's Object Lock retention, as `GetObjectRetention` gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    pub mode: Option<String>,
    pub retain_until: Option<DateTime>,
}

fn rfc3339(t: &DateTime) -> String {
    t.fmt(Format::DateTime)
        .unwrap_or_else(|_| format!("{}s", t.secs()))
}

/// Check `retention-<what>`: the object is under COMPLIANCE retention at least until the date
/// the certificate promises. `retention` is `Ok(None)` when the object has none, `Err` when it
/// could not be read. `now` only qualifies the message: a retention that has run out kept the
/// object for as long as promised.
pub fn check_retention(
    what: &str,
    retention: Result<Option<Retention>, String>,
    claims: &Claims,
    now: &DateTime,
) -> Check {
    let name = format!("retention-{what}");
    let promised = &claims.evidence.retain_until;
    let retention = match retention {
        Err(e) => return Check::fail(&name, format!("cannot read its retention: {e}")),
        Ok(None) => {
            return Check::fail(
                &name,
                "no Object Lock retention: it can be deleted or overwritten",
            );
        }
        Ok(Some(r)) => r,
    };
    let mode = retention.mode.as_deref().unwrap_or("(none)");
    let Some(until) = retention.retain_until else {
        return Check::fail(
            &name,
            format!("{mode} retention without a retain-until date"),
        );
    };
    if mode != RETENTION_MODE {
        return Check::fail(
            &name,
            format!(
                "{mode} until {}: only {RETENTION_MODE} retention cannot be lifted or shortened",
                rfc3339(&until)
            ),
        );
    }
    let Ok(promised_at) = DateTime::from_str(promised, Format::DateTime) else {
        return Check::fail(
            &name,
            format!("the certificate's retainUntil {promised:?} is not an RFC 3339 date"),
        );
    };
    if until.secs() < promised_at.secs() {
        return Check::fail(
            &name,
            format!(
                "{mode} until {}, earlier than the certificate's {promised}",
                rfc3339(&until)
            ),
        );
    }
    let expired = if until.secs() < now.secs() {
        " (expired: the object is no longer protected)"
    } else {
        ""
    };
    Check::pass(&name, format!("{mode} until {}{expired}", rfc3339(&until)))
}

/// What a listing of one scope prefix found in the tenant's bucket today.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixListing {
    pub prefix: String,
    pub versions: u64,
    pub delete_markers: u64,
    pub uploads: u64,
    /// More remain than counted (only the first page is listed once something is found).
    pub more: bool,
}

/// What `--check-scope` saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeListing {
    /// The tenant's bucket no longer exists.
    BucketGone,
    Prefixes(Vec<PrefixListing>),
}

fn describe_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        "the whole bucket".to_owned()
    } else {
        format!("{prefix:?}")
    }
}

/// Check `scope`: nothing (no version, delete marker or incomplete upload) remains today under
/// any prefix of the certificate's scope.
pub fn check_scope(listing: Result<ScopeListing, String>, claims: &Claims) -> Check {
    const NAME: &str = "scope";
    let bucket = format!("bucket {} ({})", claims.bucket, claims.region);
    match listing {
        Err(e) => Check::fail(NAME, format!("cannot list {bucket}: {e}")),
        Ok(ScopeListing::BucketGone) => Check::pass(
            NAME,
            format!("{bucket} no longer exists: nothing of it remains"),
        ),
        Ok(ScopeListing::Prefixes(prefixes)) => {
            let left: Vec<String> = prefixes
                .iter()
                .filter(|p| p.versions + p.delete_markers + p.uploads > 0)
                .map(|p| {
                    format!(
                        "under {}: versions {}, delete markers {}, incomplete uploads {}{}",
                        describe_prefix(&p.prefix),
                        p.versions,
                        p.delete_markers,
                        p.uploads,
                        if p.more {
                            " (first page; more remain)"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            if !left.is_empty() {
                Check::fail(NAME, format!("{bucket} today: {}", left.join("; ")))
            } else {
                let listed: Vec<String> = prefixes
                    .iter()
                    .map(|p| describe_prefix(&p.prefix))
                    .collect();
                Check::pass(
                    NAME,
                    format!(
                        "{bucket} today: no version, delete marker or incomplete upload under {}",
                        listed.join(", ")
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;
    use crate::evidence::EvidenceObject;

    struct Signer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        fn new() -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .expect("key generation");
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("key");
            Signer { pair, rng }
        }

        /// The public key as KMS `GetPublicKey` returns it.
        fn spki(&self) -> Vec<u8> {
            let mut spki = P256_SPKI_PREFIX.to_vec();
            spki.extend_from_slice(self.pair.public_key().as_ref());
            spki
        }

        fn sign(&self, message: &[u8]) -> Vec<u8> {
            self.pair
                .sign(&self.rng, message)
                .expect("signing")
                .as_ref()
                .to_vec()
        }
    }

    const KEY_ARN: &str =
        "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const CERT_KEY: &str = "deletions/acme-eu/gdpr-1234/0b1c2d3e/certificate.json";

    fn gzip(text: &str) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(text.as_bytes()).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn sha(text: &str) -> String {
        sha256_hex(text.as_bytes())
    }

    /// Two versions (one with a TAB and a % in its key), a delete marker, an upload.
    const MANIFEST: &str = "users/42/b.txt\tv2\tversion\t10\n\
        users/42/a%09%25.txt\tv1\tversion\t5\n\
        users/42/b.txt\tdm1\tdeleteMarker\t0\n\
        users/42/big.bin\tu1\tmultipartUpload\t0\n";

    /// `key<TAB>id<LF>` lines sorted bytewise, as `cut -f1,2 | LC_ALL=C sort` prints them.
    const VERSION_IDS: &str = "users/42/a%09%25.txt\tv1\nusers/42/b.txt\tdm1\nusers/42/b.txt\tv2\n";
    const UPLOAD_IDS: &str = "users/42/big.bin\tu1\n";

    fn certificate_json(manifest_gz: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "kind": "DeletionCertificate",
            "format": 3,
            "request": {"namespace": "acme-eu", "name": "gdpr-1234", "uid": "0b1c2d3e"},
            "requestedBy": "dpo@example.com",
            "reason": "GDPR-1234",
            "tenant": {"namespace": "acme-eu", "name": "acme"},
            "bucket": "tenant-c1-acme-eu-acme",
            "region": "eu-central-1",
            "scope": {"prefixes": ["users/42/"]},
            "method": "PurgeAndCryptoShred",
            "dryRun": false,
            "outcome": "Succeeded",
            "counts": {"versions": 2, "deleteMarkers": 1, "bytes": 15, "locked": 0, "multipartUploads": 1},
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:01:00Z",
            "sha256": sha(VERSION_IDS),
            "entries": 3,
            "multipartUploadsSha256": sha(UPLOAD_IDS),
            "multipartUploadEntries": 1,
            "hashInput": "...",
            "evidence": {
                "bucket": "evidence-c1-eu-central-1",
                "region": "eu-central-1",
                "manifestKey": "deletions/acme-eu/gdpr-1234/0b1c2d3e/manifest.tsv.gz",
                "manifestVersionId": "mv1",
                "manifestSha256": sha256_hex(manifest_gz),
                "signingKeyArn": KEY_ARN,
                "signingAlgorithm": "ECDSA_SHA_256",
                "retentionMode": "COMPLIANCE",
                "retainUntil": "2033-01-01T00:00:00Z"
            },
            "verification": {"remaining": 0, "passes": 2, "time": "2026-01-01T00:01:00Z"},
            "lockedVersionsTotal": 0,
            "cryptoShred": {"keyArn": "arn:aws:kms:eu-central-1:123456789012:key/t", "keyState": "PendingDeletion", "deletionDate": "2026-01-31T00:00:00Z", "windowDays": 30}
        })
    }

    fn claims_for(manifest_gz: &[u8]) -> Claims {
        serde_json::from_value(certificate_json(manifest_gz)).expect("claims")
    }

    #[test]
    fn the_locked_list_is_the_named_one_and_counts_what_is_certified() {
        let list = gzip("keep/a\tv1\tCOMPLIANCE\t2030-01-01T00:00:00Z\nkeep/b\tv2\tLegalHold\t-\n");
        let mut claims = claims_for(&gzip(""));
        assert!(check_locked(None, &claims).passed, "none kept, none listed");
        claims.locked_versions_total = 2;
        assert!(
            !check_locked(None, &claims).passed,
            "counted but not listed"
        );
        claims.locked_versions = vec![serde_json::json!({"key": "keep/a"})];
        assert!(
            check_locked(None, &claims).passed,
            "format 2 listed them inline"
        );
        claims.locked_versions.clear();
        claims.evidence.locked = Some(EvidenceObject {
            key: "deletions/acme-eu/gdpr-1234/0b1c2d3e/locked.tsv.gz".into(),
            version_id: "lv1".into(),
            sha256: sha256_hex(&list),
        });
        assert!(check_locked(Some(Ok(list.clone())), &claims).passed);
        assert!(!check_locked(Some(Err("AccessDenied".into())), &claims).passed);
        let other = gzip("keep/a\tv1\tCOMPLIANCE\t2030-01-01T00:00:00Z\n");
        let swapped = check_locked(Some(Ok(other.clone())), &claims);
        assert!(
            !swapped.passed && swapped.detail.contains("sha256"),
            "{swapped:?}"
        );
        claims.evidence.locked.as_mut().expect("list").sha256 = sha256_hex(&other);
        let short = check_locked(Some(Ok(other)), &claims);
        assert!(
            !short.passed && short.detail.contains("lists 1"),
            "{short:?}"
        );
    }

    fn uri() -> ObjectUri {
        ObjectUri {
            bucket: "evidence-c1-eu-central-1".into(),
            key: CERT_KEY.into(),
        }
    }

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    fn public_key(signer: &Signer) -> PublicKey {
        PublicKey {
            key_id: Some(KEY_ARN.into()),
            spki: signer.spki(),
            key_spec: Some("ECC_NIST_P256".into()),
            signing_algorithms: vec!["ECDSA_SHA_256".into()],
        }
    }

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_key() {
        let signer = Signer::new();
        let certificate = br#"{"kind":"DeletionCertificate"}"#.to_vec();
        let signature = signer.sign(&certificate);
        assert_eq!(signer.spki().len(), 91);
        assert_eq!(
            verify_signature(&certificate, &signature, &signer.spki()),
            Ok(())
        );

        let mut changed = certificate.clone();
        changed[3] ^= 1;
        assert_eq!(
            verify_signature(&changed, &signature, &signer.spki()),
            Err(SignatureError::Mismatch)
        );
        let mut bad_signature = signature.clone();
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 1;
        assert_eq!(
            verify_signature(&certificate, &bad_signature, &signer.spki()),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&certificate, &signature, &Signer::new().spki()),
            Err(SignatureError::Mismatch)
        );
        // A raw r||s signature (not DER) is not what KMS returns.
        assert_eq!(
            verify_signature(&certificate, &[0u8; 64], &signer.spki()),
            Err(SignatureError::Mismatch)
        );
    }

    /// Made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`, `openssl pkey
    /// -pubout -outform DER` and `openssl dgst -sha256 -sign key.pem certificate.json` (what the
    /// README's manual check verifies with `openssl dgst -sha256 -verify pub.der -keyform DER`).
    #[test]
    fn an_openssl_signature_verifies() {
        let unhex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>()
        };
        let spki = unhex(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200046ae11b35ea5a74282fd663c514678ccf07b8e131b6719e8665898cf957329cef70558540d3bbf6ea9c3b3f3679549c435b6df521ea497d1940b222cdda6f2330",
        );
        let signature = unhex(
            "304502206b526433229f1104d4b86534664c0a9fee72e64cc23d9a64e94987f5dc27fd76022100d7911b68c200615404899e2c6b9a85e9ad4fb6b9e5a796829dfd29cb90079992",
        );
        let certificate = b"{\"kind\":\"DeletionCertificate\",\"note\":\"signed by openssl\"}\n";
        assert_eq!(verify_signature(certificate, &signature, &spki), Ok(()));
        assert_eq!(
            verify_signature(&certificate[..certificate.len() - 1], &signature, &spki),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn only_a_p256_spki_is_accepted() {
        let signer = Signer::new();
        let spki = signer.spki();
        let point = signer.pair.public_key().as_ref().to_vec();
        assert_eq!(p256_point(&spki), Ok(point.as_slice()));
        let refused = |key: &[u8]| {
            matches!(
                verify_signature(b"m", &signer.sign(b"m"), key),
                Err(SignatureError::NotP256(_))
            )
        };
        // The bare point, a truncated key, trailing bytes, a compressed point.
        assert!(refused(&point));
        assert!(refused(&spki[..90]));
        assert!(refused(&[spki.as_slice(), &[0]].concat()));
        let mut compressed = spki.clone();
        compressed[26] = 0x02;
        assert!(refused(&compressed));
        // Another curve's OID (secp384r1 is 1.3.132.0.34) in an otherwise similar header.
        let mut p384 = spki.clone();
        p384[22] = 0x02;
        assert!(refused(&p384));
        assert!(refused(b""));
        let message = verify_signature(b"m", b"s", &point)
            .expect_err("refused")
            .to_string();
        assert!(message.contains("P-256"), "{message}");
    }

    #[test]
    fn signature_check_names_key_and_refuses_aliases_and_other_keys() {
        let signer = Signer::new();
        let gz = gzip(MANIFEST);
        let claims = claims_for(&gz);
        let certificate = serde_json::to_vec(&certificate_json(&gz)).expect("json");
        let signature = signer.sign(&certificate);
        let key = public_key(&signer);
        let ok = check_signature(&certificate, &signature, &key, &claims, None);
        assert!(ok.passed, "{ok:?}");
        assert!(ok.detail.contains("--signing-key-arn"), "{}", ok.detail);
        assert!(check_signature(&certificate, &signature, &key, &claims, Some(KEY_ARN)).passed);
        let other = "arn:aws:kms:eu-central-1:123456789012:key/other";
        let pinned = check_signature(&certificate, &signature, &key, &claims, Some(other));
        assert!(
            !pinned.passed && pinned.detail.contains(other),
            "{pinned:?}"
        );
        let resolved = PublicKey {
            key_id: Some(other.into()),
            ..key.clone()
        };
        assert!(!check_signature(&certificate, &signature, &resolved, &claims, None).passed);
        let rsa = PublicKey {
            key_spec: Some("RSA_2048".into()),
            ..key.clone()
        };
        assert!(!check_signature(&certificate, &signature, &rsa, &claims, None).passed);
        let mut tampered = certificate.clone();
        tampered[10] ^= 1;
        let bad = check_signature(&tampered, &signature, &key, &claims, None);
        assert!(
            !bad.passed && bad.detail.contains("does not match"),
            "{bad:?}"
        );
        let another = public_key(&Signer::new());
        assert!(!check_signature(&certificate, &signature, &another, &claims, None).passed);
    }

    #[test]
    fn hashes_are_those_of_the_documented_pipeline() {
        let facts = manifest_facts(MANIFEST.as_bytes(), HashOrder::Sorted);
        assert_eq!(
            (facts.versions_sha256.as_str(), facts.versions_lines),
            (sha(VERSION_IDS).as_str(), 3)
        );
        assert_eq!(
            (facts.uploads_sha256.as_str(), facts.uploads_lines),
            (sha(UPLOAD_IDS).as_str(), 1)
        );
        assert_eq!(
            (facts.versions, facts.delete_markers, facts.uploads),
            (2, 1, 1)
        );
        assert_eq!((facts.malformed_total, facts.duplicates_total), (0, 0));
        // printf 'a\t1\nb\t2\n' | sha256sum, whatever the order and with or without the last LF.
        let two = manifest_facts(b"b\t2\tversion\t1\na\t1\tversion\t1", HashOrder::Sorted);
        assert_eq!(
            two.versions_sha256,
            "6d2d1bd0abaed39e891321f7fb19d3f21108674b420432e927ae2fb4d0b7fb73"
        );
        // printf 'users/42/a%%09%%25.txt\tv1\nusers/42/b.txt\tdm1\nusers/42/b.txt\tv2\n' | sha256sum
        assert_eq!(
            facts.versions_sha256,
            "fbfc66ac2ca6ace73650d8302191e738a26e4841d74d40e6ee662c28c091bc39"
        );
        // An empty manifest: the SHA-256 of nothing, twice.
        let empty = manifest_facts(b"", HashOrder::Sorted);
        assert_eq!((empty.versions_lines, empty.uploads_lines), (0, 0));
        assert_eq!(empty.versions_sha256, sha(""));
        assert_eq!(empty.uploads_sha256, sha(""));
        // A key that reads like a kind is still a key.
        let tricky = manifest_facts(b"multipartUpload\tv\tversion\t1\n", HashOrder::Sorted);
        assert_eq!((tricky.versions, tricky.uploads), (1, 0));
    }

    #[test]
    fn a_faithful_manifest_verifies() {
        let gz = gzip(MANIFEST);
        let claims = claims_for(&gz);
        let checks = check_manifest(&[&gz], &claims);
        assert_eq!(failed(&checks), Vec::<&str>::new(), "{checks:#?}");
        assert_eq!(
            checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            [
                "manifest-digest",
                "manifest-lines",
                "versions-hash",
                "uploads-hash",
                "counts"
            ]
        );
        // Written as several gzip members (chunks compressed one by one), it reads the same.
        let (first, rest) = MANIFEST.split_at(MANIFEST.find("users/42/b.txt\tdm1").expect("line"));
        let chunked = [gzip(first), gzip(rest)].concat();
        let mut claims = claims_for(&chunked);
        claims.evidence.manifest_sha256 = sha256_hex(&chunked);
        assert_eq!(
            failed(&check_manifest(&[&chunked], &claims)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_tampered_line_fails_even_with_a_recomputed_digest() {
        let original = gzip(MANIFEST);
        let claims = claims_for(&original);
        let tampered = gzip(&MANIFEST.replace("\tv2\t", "\tv3\t"));
        // As stored under the certificate's digest: the digest catches it.
        assert_eq!(
            failed(&check_manifest(&[&tampered], &claims)),
            ["manifest-digest", "versions-hash"]
        );
        // Even if whoever altered it could also change the certified digest.
        let mut forged = claims.clone();
        forged.evidence.manifest_sha256 = sha256_hex(&tampered);
        assert_eq!(
            failed(&check_manifest(&[&tampered], &forged)),
            ["versions-hash"]
        );
        // An upload id changed: the other hash.
        let upload = gzip(&MANIFEST.replace("\tu1\t", "\tu2\t"));
        forged.evidence.manifest_sha256 = sha256_hex(&upload);
        assert_eq!(
            failed(&check_manifest(&[&upload], &forged)),
            ["uploads-hash"]
        );
    }

    #[test]
    fn a_missing_line_fails_hash_and_counts() {
        let without = MANIFEST.replace("users/42/b.txt\tdm1\tdeleteMarker\t0\n", "");
        let gz = gzip(&without);
        let mut claims = claims_for(&gzip(MANIFEST));
        claims.evidence.manifest_sha256 = sha256_hex(&gz);
        let checks = check_manifest(&[&gz], &claims);
        assert_eq!(failed(&checks), ["versions-hash", "counts"]);
        let counts = checks.iter().find(|c| c.name == "counts").expect("counts");
        assert_eq!(
            counts.detail,
            "delete markers: 0 in the manifest, 1 in counts"
        );
    }

    #[test]
    fn a_duplicated_line_fails_by_line_number() {
        let twice = format!("{MANIFEST}users/42/b.txt\tv2\tversion\t10\n");
        let gz = gzip(&twice);
        let mut claims = claims_for(&gz);
        // Even certified as such (hash and counts taken over the duplicate), it fails.
        let facts = manifest_facts(twice.as_bytes(), HashOrder::Sorted);
        claims.sha256 = facts.versions_sha256.clone();
        claims.entries = facts.versions_lines;
        claims.counts.versions = 3;
        let checks = check_manifest(&[&gz], &claims);
        assert_eq!(failed(&checks), ["manifest-lines"]);
        assert_eq!(facts.duplicates, vec![(1, 5)]);
        let lines = &checks[1];
        assert!(
            lines.detail.contains("line 5 repeats line 1"),
            "{}",
            lines.detail
        );
        assert!(
            !lines.detail.contains("b.txt"),
            "no key in a verdict: {}",
            lines.detail
        );
        // The same (key, version id) under another kind is the same entry.
        let facts = manifest_facts(
            b"k\tv\tversion\t1\nk\tv\tdeleteMarker\t0\n",
            HashOrder::Sorted,
        );
        assert_eq!(facts.duplicates_total, 1);
    }

    #[test]
    fn a_wrong_count_fails() {
        let gz = gzip(MANIFEST);
        let mut claims = claims_for(&gz);
        claims.counts.versions = 3;
        assert_eq!(failed(&check_manifest(&[&gz], &claims)), ["counts"]);
        let mut claims = claims_for(&gz);
        claims.counts.multipart_uploads = 0;
        assert_eq!(failed(&check_manifest(&[&gz], &claims)), ["counts"]);
        let mut claims = claims_for(&gz);
        claims.entries = 4;
        assert_eq!(failed(&check_manifest(&[&gz], &claims)), ["versions-hash"]);
    }

    /// Part `n` of the manifest as the Job names it.
    fn continuation(n: usize, body: &[u8]) -> EvidenceObject {
        let layout = Location::new(
            "evidence-c1-eu-central-1",
            "acme-eu",
            "gdpr-1234",
            "0b1c2d3e",
        );
        EvidenceObject {
            key: layout.manifest_part(n),
            version_id: format!("mv{n}"),
            sha256: sha256_hex(body),
        }
    }

    #[test]
    fn a_format_4_manifest_hashes_in_its_own_order_across_parts() {
        // cut -f1,2 of MANIFEST's versions and markers, as written.
        const AS_WRITTEN: &str =
            "users/42/b.txt\tv2\nusers/42/a%09%25.txt\tv1\nusers/42/b.txt\tdm1\n";
        let (first, rest) = MANIFEST.split_at(MANIFEST.find("users/42/b.txt\tdm1").expect("line"));
        let parts = [gzip(first), gzip(rest)];
        let read = [parts[0].as_slice(), parts[1].as_slice()];
        let mut claims = claims_for(&parts[0]);
        claims.format = 4;
        claims.sha256 = sha(AS_WRITTEN);
        claims.evidence.manifest_continuation = vec![continuation(2, &parts[1])];
        let checks = check_manifest(&read, &claims);
        assert_eq!(failed(&checks), Vec::<&str>::new(), "{checks:#?}");
        assert!(
            checks[0].detail.contains("and 1 more parts"),
            "{}",
            checks[0].detail
        );
        // The sorted hash of earlier formats does not stand for this one.
        let mut sorted = claims.clone();
        sorted.sha256 = sha(VERSION_IDS);
        assert_eq!(failed(&check_manifest(&read, &sorted)), ["versions-hash"]);
        // Parts swapped, or one left out: not the manifest certified.
        assert_eq!(
            failed(&check_manifest(&[read[1], read[0]], &claims)),
            ["manifest-digest", "versions-hash"]
        );
        let mut newer = claims.clone();
        newer.format = 5;
        let refused = check_manifest(&read, &newer);
        assert_eq!(failed(&refused).len(), 5, "{refused:#?}");
        assert!(refused[0].detail.contains("newer than this verifier"));
        let missing = check_manifest(&read[..1], &claims);
        assert_eq!(
            missing[0].detail,
            "1 manifest parts read, the certificate names 2"
        );
        assert!(failed(&missing).contains(&"counts"));
    }

    #[test]
    fn a_wrong_compressed_hash_fails() {
        let gz = gzip(MANIFEST);
        let mut claims = claims_for(&gz);
        claims.evidence.manifest_sha256 = sha("something else");
        let checks = check_manifest(&[&gz], &claims);
        assert_eq!(failed(&checks), ["manifest-digest"]);
        assert!(checks[0].detail.contains(&sha256_hex(&gz)));
        // Not gzip at all: every check on its content fails too.
        let checks = check_manifest(&[MANIFEST.as_bytes()], &claims);
        assert_eq!(
            failed(&checks),
            [
                "manifest-digest",
                "manifest-lines",
                "versions-hash",
                "uploads-hash",
                "counts"
            ]
        );
        assert!(checks[1].detail.contains("gzip"), "{}", checks[1].detail);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for (line, why) in [
            ("k\tv\tversion", "4 tab-separated"),
            ("k\tv\tversion\t1\textra", "4 tab-separated"),
            ("k\tv\tfolder\t1", "kind"),
            ("k\tv\tversion\t-1", "size"),
            ("k\tv\tversion\t+1", "size"),
            ("k\tv\tversion\t", "size"),
            ("k%2\tv\tversion\t1", "%"),
            ("k%41\tv\tversion\t1", "%"),
            ("k\r\tv\tversion\t1", "CR"),
            ("", "4 tab-separated"),
        ] {
            let facts = manifest_facts(
                format!("a\t1\tversion\t1\n{line}\n").as_bytes(),
                HashOrder::Sorted,
            );
            assert_eq!(facts.malformed_total, 1, "{line:?}");
            let (n, problem) = facts.malformed[0];
            assert_eq!(n, 2);
            assert!(problem.contains(why), "{line:?}: {problem}");
        }
        let facts = manifest_facts(b"k\xff\tv\tversion\t1\n", HashOrder::Sorted);
        assert_eq!(facts.malformed[0].1, "a field that is not UTF-8");
        let facts = manifest_facts(
            b"a%25%09%0A%0D\tv\tversion\t18446744073709551615\n",
            HashOrder::Sorted,
        );
        assert_eq!(facts.malformed_total, 0);
    }

    #[test]
    fn verdict_renders_text_and_json() {
        let mut v = Verdict::new("s3://b/k");
        assert!(!v.verified());
        assert_eq!(v.text(), "NOT VERIFIED: nothing was checked\n");
        v.push(Check::pass("signature", "valid"));
        v.push(Check::pass("counts", "3 versions"));
        assert!(v.verified());
        assert_eq!(
            v.text(),
            "PASS  signature  valid\nPASS  counts     3 versions\nVERIFIED\n"
        );
        v.push(Check::fail("scope", "1 version remains"));
        v.push(Check::fail("retention-manifest", "none"));
        assert!(!v.verified());
        assert!(v.text().ends_with("FAIL  scope               1 version remains\nFAIL  retention-manifest  none\nNOT VERIFIED: scope: 1 version remains\n"), "{}", v.text());
        let json: serde_json::Value =
            serde_json::from_str(&v.render(OutputFormat::Json)).expect("json");
        assert_eq!(json["verified"], false);
        assert_eq!(json["certificate"], "s3://b/k");
        assert_eq!(json["failure"], "scope: 1 version remains");
        assert_eq!(json["checks"][0]["name"], "signature");
        assert_eq!(json["checks"][0]["passed"], true);
        assert_eq!(json["checks"][2]["detail"], "1 version remains");
        // Fields in reading order, not alphabetical.
        let text = v.json();
        assert!(
            text.starts_with("{\n  \"certificate\": \"s3://b/k\",\n  \"verified\": false,"),
            "{text}"
        );
        assert!(
            text.contains("\"name\": \"signature\",\n      \"passed\": true,\n      \"detail\""),
            "{text}"
        );
    }

    #[test]
    fn uris_name_a_certificate() {
        assert_eq!(
            ObjectUri::parse(&format!("s3://ev/{CERT_KEY}")),
            Ok(uri_in("ev"))
        );
        assert_eq!(
            ObjectUri::parse("s3://ev/deletions/acme-eu/gdpr-1234/0b1c2d3e/"),
            Ok(uri_in("ev"))
        );
        assert_eq!(uri_in("ev").signature_key(), format!("{CERT_KEY}.sig"));
        assert_eq!(uri_in("ev").to_string(), format!("s3://ev/{CERT_KEY}"));
        for bad in ["ev/key", "s3://ev", "s3:///key", "s3://ev/", "https://ev/k"] {
            assert!(ObjectUri::parse(bad).is_err(), "{bad}");
        }
    }

    fn uri_in(bucket: &str) -> ObjectUri {
        ObjectUri {
            bucket: bucket.into(),
            key: CERT_KEY.into(),
        }
    }

    #[test]
    fn certificate_parses_or_says_why() {
        let gz = gzip(MANIFEST);
        let bytes = serde_json::to_vec(&certificate_json(&gz)).expect("json");
        let (check, claims) = check_certificate(&uri(), Some("cv1"), &bytes);
        assert!(check.passed, "{check:?}");
        assert!(check.detail.contains(&sha256_hex(&bytes)));
        assert!(
            check
                .detail
                .contains("request acme-eu/gdpr-1234 (uid 0b1c2d3e)")
        );
        assert_eq!(claims, Some(claims_for(&gz)));
        // A certificate from before the evidence was signed.
        let mut old = certificate_json(&gz);
        old.as_object_mut().expect("object").remove("evidence");
        let (check, claims) =
            check_certificate(&uri(), None, &serde_json::to_vec(&old).expect("json"));
        assert!(
            !check.passed && check.detail.contains("evidence"),
            "{check:?}"
        );
        assert_eq!(claims, None);
        assert!(!check_certificate(&uri(), None, b"not json").0.passed);
    }

    #[test]
    fn location_must_follow_the_layout_in_the_tenants_region() {
        let claims = claims_for(&gzip(MANIFEST));
        let ok = check_location(&uri(), "eu-central-1", &claims);
        assert!(ok.passed, "{ok:?}");
        let elsewhere = check_location(&uri_in("copy"), "eu-central-1", &claims);
        assert!(!elsewhere.passed && elsewhere.detail.contains("read from bucket copy"));
        let moved = ObjectUri {
            key: "deletions/other/gdpr-1234/0b1c2d3e/certificate.json".into(),
            ..uri()
        };
        assert!(!check_location(&moved, "eu-central-1", &claims).passed);
        assert!(!check_location(&uri(), "us-east-1", &claims).passed);
        let mut abroad = claims.clone();
        abroad.evidence.region = "us-east-1".into();
        let check = check_location(&uri(), "us-east-1", &abroad);
        assert!(
            !check.passed && check.detail.contains("outside the tenant's region"),
            "{check:?}"
        );
        let mut alias = claims.clone();
        alias.evidence.signing_key_arn = "arn:aws:kms:eu-central-1:123456789012:alias/sign".into();
        assert!(!check_location(&uri(), "eu-central-1", &alias).passed);
        let mut key_abroad = claims.clone();
        key_abroad.evidence.signing_key_arn = KEY_ARN.replace("eu-central-1", "us-east-1");
        assert!(!check_location(&uri(), "eu-central-1", &key_abroad).passed);
        let mut parted = claims.clone();
        parted.evidence.manifest_continuation = vec![continuation(2, b"")];
        assert!(check_location(&uri(), "eu-central-1", &parted).passed);
        parted.evidence.manifest_continuation[0].key = "deletions/other/manifest.tsv.gz".into();
        let check = check_location(&uri(), "eu-central-1", &parted);
        assert!(
            !check.passed && check.detail.contains("manifest part 2 is named"),
            "{check:?}"
        );
        let mut no_uid = claims;
        no_uid.request.uid = None;
        assert!(!check_location(&uri(), "eu-central-1", &no_uid).passed);
    }

    #[test]
    fn only_a_completed_deletion_passes_the_outcome() {
        let claims = claims_for(&gzip(MANIFEST));
        let ok = check_outcome(&claims);
        assert!(ok.passed, "{ok:?}");
        let mut blocked = claims.clone();
        blocked.outcome = "Blocked".into();
        blocked.verification = Some(CertifiedVerification {
            remaining: 2,
            passes: 3,
            time: String::new(),
        });
        let check = check_outcome(&blocked);
        assert!(!check.passed && check.detail.contains("2 versions under Object Lock"));
        let mut dry = claims.clone();
        dry.dry_run = true;
        assert!(!check_outcome(&dry).passed);
        let mut unverified = claims.clone();
        unverified.verification = None;
        assert!(!check_outcome(&unverified).passed);
        let mut skipped = claims.clone();
        skipped.crypto_shred = Some(CertifiedShred {
            key_arn: "k".into(),
            key_state: "Enabled".into(),
            deletion_date: None,
            skipped: Some("versions under Object Lock remain".into()),
        });
        assert!(!check_outcome(&skipped).passed);
        // A purge alone needs no shred; a shred alone no listing.
        let mut purge = claims.clone();
        purge.method = "Purge".into();
        purge.crypto_shred = None;
        assert!(check_outcome(&purge).passed);
        let mut shred = claims;
        shred.method = "CryptoShred".into();
        shred.verification = None;
        assert!(check_outcome(&shred).passed);
    }

    #[test]
    fn retention_must_be_compliance_until_the_promised_date() {
        let claims = claims_for(&gzip(MANIFEST));
        let at = |s: &str| DateTime::from_str(s, Format::DateTime).expect("date");
        let now = at("2026-06-01T00:00:00Z");
        let locked = |mode: &str, until: &str| {
            Ok(Some(Retention {
                mode: Some(mode.into()),
                retain_until: Some(at(until)),
            }))
        };
        let ok = check_retention(
            "manifest",
            locked("COMPLIANCE", "2033-01-01T00:00:00Z"),
            &claims,
            &now,
        );
        assert!(ok.passed, "{ok:?}");
        assert_eq!(ok.name, "retention-manifest");
        assert_eq!(ok.detail, "COMPLIANCE until 2033-01-01T00:00:00Z");
        let later = check_retention(
            "manifest",
            locked("COMPLIANCE", "2034-01-01T00:00:00Z"),
            &claims,
            &now,
        );
        assert!(later.passed);
        let expired = check_retention(
            "manifest",
            locked("COMPLIANCE", "2033-01-01T00:00:00Z"),
            &claims,
            &at("2034-01-01T00:00:00Z"),
        );
        assert!(expired.passed && expired.detail.contains("expired"));
        for (retention, why) in [
            (
                locked("GOVERNANCE", "2033-01-01T00:00:00Z"),
                "only COMPLIANCE",
            ),
            (locked("COMPLIANCE", "2032-12-31T23:59:59Z"), "earlier than"),
            (Ok(None), "no Object Lock retention"),
            (Err("AccessDenied: denied".into()), "AccessDenied"),
            (
                Ok(Some(Retention {
                    mode: Some("COMPLIANCE".into()),
                    retain_until: None,
                })),
                "without a retain-until",
            ),
        ] {
            let check = check_retention("certificate.json", retention, &claims, &now);
            assert!(!check.passed && check.detail.contains(why), "{check:?}");
        }
    }

    #[test]
    fn scope_passes_only_when_nothing_remains() {
        let claims = claims_for(&gzip(MANIFEST));
        let empty = PrefixListing {
            prefix: "users/42/".into(),
            versions: 0,
            delete_markers: 0,
            uploads: 0,
            more: false,
        };
        let ok = check_scope(Ok(ScopeListing::Prefixes(vec![empty.clone()])), &claims);
        assert!(ok.passed && ok.detail.contains("\"users/42/\""), "{ok:?}");
        assert!(check_scope(Ok(ScopeListing::BucketGone), &claims).passed);
        let upload = PrefixListing {
            uploads: 1,
            ..empty.clone()
        };
        let check = check_scope(
            Ok(ScopeListing::Prefixes(vec![empty.clone(), upload])),
            &claims,
        );
        assert!(
            !check.passed && check.detail.contains("incomplete uploads 1"),
            "{check:?}"
        );
        let many = PrefixListing {
            prefix: String::new(),
            versions: 1000,
            more: true,
            ..empty
        };
        let check = check_scope(Ok(ScopeListing::Prefixes(vec![many])), &claims);
        assert!(
            check.detail.contains(
                "the whole bucket: versions 1000, delete markers 0, incomplete uploads 0 (first page; more remain)"
            ),
            "{check:?}"
        );
        assert!(!check_scope(Err("AccessDenied".into()), &claims).passed);
    }
}
