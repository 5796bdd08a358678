//! Publishing a deletion's evidence (layout in `crate::evidence`): the manifest, compressed,
//! then the certificate naming it, then the certificate's signature, each under Object Lock in
//! COMPLIANCE mode in the evidence bucket of the tenant's region. A rerun after a crash writes
//! new versions; the certificate names the exact versions it covers. The manifest is streamed:
//! compressed as its lines arrive and written in parts of [`PART_BYTES`], so the Job's memory
//! does not grow with the number of versions.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::request::RequestError;
use crate::api::EvidenceLocation;
use crate::cloud::Regional;
use crate::evidence::{EvidenceObject, EvidenceSection, Location, SIGNING_ALGORITHM};

/// Where the Job publishes, as the operator prepared it.
#[derive(Clone, Debug)]
pub struct Target {
    pub bucket: String,
    /// The tenant's region, the bucket's.
    pub region: String,
    pub signing_key: String,
    pub retention_days: i32,
    /// Compressed bytes per manifest part.
    pub part_bytes: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339 date `days` from now, to the second.
pub(crate) fn retain_until(days: i32) -> Result<String, RequestError> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let until = now
        .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(
            24 * i64::from(days),
        ))
        .map_err(|e| RequestError::Refused(format!("evidence retention of {days} days: {e}")))?;
    Ok(k8s_openapi::jiff::Timestamp::from_second(until.as_second())
        .unwrap_or(until)
        .to_string())
}

/// Manifest bytes (before compression) per part: about 180 parts for 100 million versions,
/// each a few MiB compressed, which is about what the Job holds at once.
pub const PART_BYTES: u64 = 32 * 1024 * 1024;

fn gzip_err(e: std::io::Error) -> RequestError {
    RequestError::Refused(format!("compressing the manifest: {e}"))
}

/// Lines compressed into parts: each part is a gzip member of its own, closed once the lines
/// in it reach the part size. (Counted before compression: deflate emits its output in blocks
/// of tens of KiB, so the compressed size moves in steps.)
pub struct Parts {
    gz: GzEncoder<Vec<u8>>,
    part_bytes: u64,
    in_part: u64,
}

impl Parts {
    pub fn new(part_bytes: u64) -> Self {
        Parts {
            gz: GzEncoder::new(Vec::new(), Compression::default()),
            part_bytes,
            in_part: 0,
        }
    }

    /// Adds a line; returns the part it closed, if it closed one.
    pub fn push(&mut self, line: &str) -> Result<Option<Vec<u8>>, RequestError> {
        self.gz.write_all(line.as_bytes()).map_err(gzip_err)?;
        self.gz.write_all(b"\n").map_err(gzip_err)?;
        self.in_part += line.len() as u64 + 1;
        if self.in_part < self.part_bytes {
            return Ok(None);
        }
        self.in_part = 0;
        let full = std::mem::replace(
            &mut self.gz,
            GzEncoder::new(Vec::new(), Compression::default()),
        );
        full.finish().map(Some).map_err(gzip_err)
    }

    /// The last part (an empty gzip member for an empty manifest).
    pub fn finish(self) -> Result<Vec<u8>, RequestError> {
        self.gz.finish().map_err(gzip_err)
    }
}

/// Writes the manifest as its lines arrive, each part under Object Lock once it is closed.
pub struct ManifestWriter<'a> {
    parts: Parts,
    sink: PartSink<'a>,
}

/// Where closed parts go, and what was written.
struct PartSink<'a> {
    regional: &'a Regional,
    target: &'a Target,
    location: &'a Location,
    until: String,
    written: Vec<EvidenceObject>,
}

impl PartSink<'_> {
    async fn put(&mut self, body: Vec<u8>) -> Result<(), RequestError> {
        let key = match self.written.len() + 1 {
            1 => self.location.manifest(),
            n => self.location.manifest_part(n),
        };
        let part = publish(self.regional, self.target, key, body, &self.until).await?;
        self.written.push(part);
        Ok(())
    }
}

impl<'a> ManifestWriter<'a> {
    pub fn new(
        regional: &'a Regional,
        target: &'a Target,
        location: &'a Location,
    ) -> Result<Self, RequestError> {
        Ok(ManifestWriter {
            parts: Parts::new(target.part_bytes),
            sink: PartSink {
                regional,
                target,
                location,
                until: retain_until(target.retention_days)?,
                written: Vec::new(),
            },
        })
    }

    pub async fn push(&mut self, line: &str) -> Result<(), RequestError> {
        match self.parts.push(line)? {
            Some(part) => self.sink.put(part).await,
            None => Ok(()),
        }
    }

    /// Writes the last part and, when Object Lock kept any version, the list of those
    /// (journal lines); returns the certificate's evidence section (to be signed with it).
    pub async fn finish(self, locked: &[String]) -> Result<EvidenceSection, RequestError> {
        let ManifestWriter { parts, mut sink } = self;
        sink.put(parts.finish()?).await?;
        let locked = if locked.is_empty() {
            None
        } else {
            let mut list = Parts::new(u64::MAX);
            for line in locked {
                list.push(line)?;
            }
            let key = sink.location.locked();
            Some(publish(sink.regional, sink.target, key, list.finish()?, &sink.until).await?)
        };
        let mut written = sink.written.into_iter();
        let first = written
            .next()
            .ok_or_else(|| RequestError::Refused("the manifest has no part".to_owned()))?;
        Ok(EvidenceSection {
            bucket: sink.target.bucket.clone(),
            region: sink.regional.region.clone(),
            manifest_key: first.key,
            manifest_version_id: first.version_id,
            manifest_sha256: first.sha256,
            manifest_continuation: written.collect(),
            locked,
            signing_key_arn: sink.target.signing_key.clone(),
            signing_algorithm: SIGNING_ALGORITHM.to_owned(),
            retention_mode: "COMPLIANCE".to_owned(),
            retain_until: sink.until,
        })
    }
}

/// Writes a compressed body under Object Lock until `until`.
async fn publish(
    regional: &Regional,
    target: &Target,
    key: String,
    body: Vec<u8>,
    until: &str,
) -> Result<EvidenceObject, RequestError> {
    let sha256 = hex(&Sha256::digest(&body));
    let version_id = regional
        .put_locked_object(&target.bucket, &key, body, "application/gzip", until)
        .await?;
    Ok(EvidenceObject {
        key,
        version_id,
        sha256,
    })
}

/// Signs the certificate's exact bytes and writes certificate and signature.
pub async fn publish_certificate(
    regional: &Regional,
    section: &EvidenceSection,
    location: &Location,
    certificate: &str,
) -> Result<EvidenceLocation, RequestError> {
    let signature = regional
        .sign_digest(
            &section.signing_key_arn,
            &Sha256::digest(certificate.as_bytes()),
        )
        .await?;
    let key = location.certificate();
    let version_id = regional
        .put_locked_object(
            &section.bucket,
            &key,
            certificate.as_bytes().to_vec(),
            "application/json",
            &section.retain_until,
        )
        .await?;
    regional
        .put_locked_object(
            &section.bucket,
            &location.signature(),
            signature,
            "application/octet-stream",
            &section.retain_until,
        )
        .await?;
    Ok(EvidenceLocation {
        bucket: section.bucket.clone(),
        region: section.region.clone(),
        key,
        version_id,
        signing_key_arn: section.signing_key_arn.clone(),
        retain_until: section.retain_until.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(parts: &[Vec<u8>]) -> String {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(parts.concat().as_slice())
            .read_to_string(&mut text)
            .expect("gunzip");
        text
    }

    #[test]
    fn manifest_compresses_line_by_line() {
        let mut parts = Parts::new(PART_BYTES);
        for line in ["a\tv1\tversion\t3", "b\tv2\tdeleteMarker\t0"] {
            assert_eq!(parts.push(line).expect("gzip"), None);
        }
        let gz = parts.finish().expect("gzip");
        assert_eq!(gunzip(&[gz]), "a\tv1\tversion\t3\nb\tv2\tdeleteMarker\t0\n");
    }

    #[test]
    fn a_large_manifest_is_cut_into_parts_that_concatenate_to_it() {
        // Lines that do not compress well, so that parts fill up.
        let lines: Vec<String> = (0..5000u64)
            .map(|i| {
                let noise = hex(&Sha256::digest(i.to_be_bytes()));
                format!("{noise}\t{i}\tversion\t{i}")
            })
            .collect();
        let mut parts = Parts::new(16 * 1024);
        let mut closed = Vec::new();
        for line in &lines {
            closed.extend(parts.push(line).expect("gzip"));
        }
        closed.push(parts.finish().expect("gzip"));
        // Every part but the last holds 16 KiB of lines and at most one line more.
        let (last, full) = closed.split_last().expect("a part");
        let total: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert_eq!(full.len(), total / (16 * 1024), "{} parts", closed.len());
        for part in full {
            let text = gunzip(std::slice::from_ref(part));
            assert!(
                (16 * 1024..16 * 1024 + 100).contains(&text.len()),
                "{}",
                text.len()
            );
        }
        assert!(gunzip(std::slice::from_ref(last)).len() < 16 * 1024 + 100);
        let mut expected = lines.join("\n");
        expected.push('\n');
        assert_eq!(gunzip(&closed), expected);
    }

    #[test]
    fn an_empty_manifest_is_one_empty_gzip_member() {
        let gz = Parts::new(PART_BYTES).finish().expect("gzip");
        assert!(!gz.is_empty());
        assert_eq!(gunzip(&[gz]), "");
    }

    #[test]
    fn retention_is_days_from_now() {
        let until: k8s_openapi::jiff::Timestamp =
            retain_until(2).expect("date").parse().expect("RFC 3339");
        let hours = until
            .duration_since(k8s_openapi::jiff::Timestamp::now())
            .as_hours();
        assert!((47..=48).contains(&hours), "{hours}");
    }
}
