//! Publishing a deletion's evidence (layout in `crate::evidence`): the manifest, compressed,
//! then the certificate naming it, then the certificate's signature, each under Object Lock in
//! COMPLIANCE mode in the evidence bucket of the tenant's region. A rerun after a crash writes
//! new versions; the certificate names the exact versions it covers.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::request::RequestError;
use crate::api::EvidenceLocation;
use crate::cloud::Regional;
use crate::evidence::{EvidenceSection, Location, LockedList, SIGNING_ALGORITHM};

/// Where the Job publishes, as the operator prepared it.
#[derive(Clone, Debug)]
pub struct Target {
    pub bucket: String,
    /// The tenant's region, the bucket's.
    pub region: String,
    pub signing_key: String,
    pub retention_days: i32,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339 date `days` from now, to the second.
fn retain_until(days: i32) -> Result<String, RequestError> {
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

/// The manifest lines, gzip-compressed, one per line.
fn compress(lines: &[String]) -> Result<Vec<u8>, RequestError> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        gz.write_all(line.as_bytes())
            .and_then(|()| gz.write_all(b"\n"))
            .map_err(|e| RequestError::Refused(format!("compressing the manifest: {e}")))?;
    }
    gz.finish()
        .map_err(|e| RequestError::Refused(format!("compressing the manifest: {e}")))
}

/// Writes the manifest and, when Object Lock kept any version, the list of those (journal
/// lines both); returns the certificate's evidence section (to be signed with it).
pub async fn publish_manifest(
    regional: &Regional,
    target: &Target,
    location: &Location,
    lines: &[String],
    locked: &[String],
) -> Result<EvidenceSection, RequestError> {
    let until = retain_until(target.retention_days)?;
    let (manifest_key, manifest_version_id, manifest_sha256) =
        publish_lines(regional, target, location.manifest(), lines, &until).await?;
    let locked = if locked.is_empty() {
        None
    } else {
        let (key, version_id, sha256) =
            publish_lines(regional, target, location.locked(), locked, &until).await?;
        Some(LockedList {
            key,
            version_id,
            sha256,
        })
    };
    Ok(EvidenceSection {
        bucket: target.bucket.clone(),
        region: regional.region.clone(),
        manifest_key,
        manifest_version_id,
        manifest_sha256,
        locked,
        signing_key_arn: target.signing_key.clone(),
        signing_algorithm: SIGNING_ALGORITHM.to_owned(),
        retention_mode: "COMPLIANCE".to_owned(),
        retain_until: until,
    })
}

/// Writes `lines`, gzip-compressed, under Object Lock until `until`: `(key, versionId, sha256)`.
async fn publish_lines(
    regional: &Regional,
    target: &Target,
    key: String,
    lines: &[String],
    until: &str,
) -> Result<(String, String, String), RequestError> {
    let body = compress(lines)?;
    let sha256 = hex(&Sha256::digest(&body));
    let version_id = regional
        .put_locked_object(&target.bucket, &key, body, "application/gzip", until)
        .await?;
    Ok((key, version_id, sha256))
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

    #[test]
    fn manifest_compresses_line_by_line() {
        let lines = vec![
            "a\tv1\tversion\t3".to_owned(),
            "b\tv2\tdeleteMarker\t0".to_owned(),
        ];
        let gz = compress(&lines).expect("gzip");
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut text)
            .expect("gunzip");
        assert_eq!(text, "a\tv1\tversion\t3\nb\tv2\tdeleteMarker\t0\n");
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
