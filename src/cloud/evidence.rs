//! Reading a deletion's evidence as an auditor does, with read-only credentials and no cluster:
//! the three objects, their Object Lock retention, the signing key's public key and (for
//! `--check-scope`) a listing of the tenant's bucket. Every check is decided in
//! `crate::evidence::verify`; [`verify_certificate`] only fetches and hands over, and turns a
//! failed call into a failed check.

use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::DateTime;

use super::error::{OperationError, SdkFailure};
use super::{AwsSettings, CloudError, https_client};
use crate::evidence::verify::{
    self, Check, Claims, ObjectUri, PrefixListing, PublicKey, Retention, ScopeListing, Verdict,
};

/// Region asked where a bucket is when none is configured.
const DEFAULT_REGION: &str = "us-east-1";
/// Listing page size for `--check-scope` (the first non-empty page is enough to fail).
const PAGE: i32 = 1000;

fn s3_err<E: OperationError>(op: &'static str) -> impl FnOnce(SdkFailure<E>) -> CloudError {
    move |e| CloudError::from_sdk("s3", op, e)
}

/// S3 and KMS clients in any region, with the caller's own credentials (the SDK's default
/// chain: environment, profile, SSO, instance role).
#[derive(Clone, Debug)]
pub struct EvidenceReader {
    base: SdkConfig,
    force_path_style: bool,
}

impl EvidenceReader {
    pub async fn connect(settings: &AwsSettings) -> Result<Self, CloudError> {
        let http = https_client(settings.ca_bundle.as_deref())?;
        // No overall deadline: a large manifest takes as long as it takes; a stalled
        // connection fails (and is retried).
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(5));
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Ok(EvidenceReader {
            base: loader.load().await,
            force_path_style: settings.force_path_style,
        })
    }

    fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .force_path_style(self.force_path_style)
                .build(),
        )
    }

    fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .build(),
        )
    }

    /// Where a bucket is: the `x-amz-bucket-region` of `HeadBucket` (AWS sends it even when
    /// it refuses the HEAD, or redirects it), else `GetBucketLocation`, else the region a
    /// successful HEAD was sent to.
    pub async fn bucket_region(&self, bucket: &str) -> Result<String, CloudError> {
        let asked = self
            .base
            .region()
            .map_or(DEFAULT_REGION, |r| r.as_ref())
            .to_owned();
        let s3 = self.s3(&asked);
        let head = match s3.head_bucket().bucket(bucket).send().await {
            Ok(out) => match out.bucket_region() {
                Some(region) => return Ok(region.to_owned()),
                None => Ok(()),
            },
            Err(e) => {
                let header = e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map(str::to_owned);
                match header {
                    Some(region) => return Ok(region),
                    // A HEAD response has no body: say what its status means.
                    None => Err(match CloudError::from_sdk("s3", "HeadBucket", e) {
                        CloudError::Api {
                            status: Some(status),
                            code,
                            ..
                        } => CloudError::Api {
                            service: "s3",
                            operation: "HeadBucket",
                            message: match status {
                                404 => format!("bucket {bucket} does not exist"),
                                403 => format!("access to bucket {bucket} denied"),
                                _ => format!("HTTP {status}"),
                            },
                            code,
                            status: Some(status),
                        },
                        other => other,
                    }),
                }
            }
        };
        match s3.get_bucket_location().bucket(bucket).send().await {
            Ok(out) => Ok(match out.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1".to_owned(),
                Some("EU") => "eu-west-1".to_owned(),
                Some(region) => region.to_owned(),
            }),
            Err(location) => match head {
                Ok(()) => Ok(asked),
                Err(head) => Err(match head.status() {
                    Some(404) => head,
                    _ => CloudError::from_sdk("s3", "GetBucketLocation", location),
                }),
            },
        }
    }

    /// An object's bytes and version id (the latest version unless `version_id`).
    pub async fn get_object(
        &self,
        region: &str,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>), CloudError> {
        let out = self
            .s3(region)
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(s3_err("GetObject"))?;
        super::journal::object_bytes(out).await
    }

    /// An object version's Object Lock retention; `None` when it has none.
    pub async fn retention(
        &self,
        region: &str,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<Retention>, CloudError> {
        match self
            .s3(region)
            .get_object_retention()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => Ok(out.retention().map(|r| Retention {
                mode: r.mode().map(|m| m.as_str().to_owned()),
                retain_until: r.retain_until_date().copied(),
            })),
            Err(e) => {
                let e = CloudError::from_sdk("s3", "GetObjectRetention", e);
                if e.code() == "NoSuchObjectLockConfiguration" {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The public half of a KMS asymmetric key.
    pub async fn public_key(&self, region: &str, key: &str) -> Result<PublicKey, CloudError> {
        let out = self
            .kms(region)
            .get_public_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("kms", "GetPublicKey", e))?;
        let spki = out.public_key().ok_or(CloudError::Incomplete {
            service: "kms",
            operation: "GetPublicKey",
            field: "PublicKey",
        })?;
        Ok(PublicKey {
            key_id: out.key_id().map(str::to_owned),
            spki: spki.as_ref().to_vec(),
            key_spec: out.key_spec().map(|s| s.as_str().to_owned()),
            signing_algorithms: out
                .signing_algorithms()
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
        })
    }

    /// What remains under each prefix of a bucket today: versions, delete markers and
    /// incomplete multipart uploads (counted on the first page that has any).
    pub async fn scope_listing(
        &self,
        region: &str,
        bucket: &str,
        prefixes: &[String],
    ) -> Result<ScopeListing, CloudError> {
        let s3 = self.s3(region);
        let mut listed = Vec::new();
        for prefix in prefixes {
            let mut found = PrefixListing {
                prefix: prefix.clone(),
                versions: 0,
                delete_markers: 0,
                uploads: 0,
                more: false,
            };
            let (mut key_marker, mut version_marker) = (None, None);
            loop {
                let page = match s3
                    .list_object_versions()
                    .bucket(bucket)
                    .prefix(prefix)
                    .max_keys(PAGE)
                    .set_key_marker(key_marker.take())
                    .set_version_id_marker(version_marker.take())
                    .send()
                    .await
                    .map_err(s3_err("ListObjectVersions"))
                {
                    Ok(page) => page,
                    Err(e) if e.code() == "NoSuchBucket" => return Ok(ScopeListing::BucketGone),
                    Err(e) => return Err(e),
                };
                found.versions = page.versions().len() as u64;
                found.delete_markers = page.delete_markers().len() as u64;
                let truncated = page.is_truncated() == Some(true);
                found.more = truncated;
                if found.versions + found.delete_markers > 0 || !truncated {
                    break;
                }
                key_marker = page.next_key_marker().map(str::to_owned);
                version_marker = page.next_version_id_marker().map(str::to_owned);
            }
            let (mut key_marker, mut upload_marker) = (None, None);
            loop {
                let page = s3
                    .list_multipart_uploads()
                    .bucket(bucket)
                    .prefix(prefix)
                    .max_uploads(PAGE)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(upload_marker.take())
                    .send()
                    .await
                    .map_err(s3_err("ListMultipartUploads"))?;
                found.uploads = page.uploads().len() as u64;
                let truncated = page.is_truncated() == Some(true);
                found.more |= truncated && found.uploads > 0;
                if found.uploads > 0 || !truncated {
                    break;
                }
                key_marker = page.next_key_marker().map(str::to_owned);
                upload_marker = page.next_upload_id_marker().map(str::to_owned);
            }
            listed.push(found);
        }
        Ok(ScopeListing::Prefixes(listed))
    }
}

/// What `verify-certificate` was asked.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub certificate: ObjectUri,
    /// The evidence bucket's region, when known; else asked from S3.
    pub region: Option<String>,
    /// Also list the tenant's bucket under the certificate's scope.
    pub check_scope: bool,
    /// The key that must have signed the certificate.
    pub signing_key_arn: Option<String>,
}

/// The checks that read the manifest, in order (all fail together when it cannot be read).
const MANIFEST_CHECKS: [&str; 5] = [
    "manifest-digest",
    "manifest-lines",
    "versions-hash",
    "uploads-hash",
    "counts",
];

/// Fetches a certificate's evidence and checks it: certificate, signature, location, outcome,
/// the five manifest checks, the locked-version list, the retention of certificate, signature,
/// manifest (and locked-version list), and with
/// `check_scope` the scope today. A call that fails is a failed check, never an early exit,
/// except that nothing more can be checked without the certificate itself.
pub async fn verify_certificate(reader: &EvidenceReader, opts: &VerifyOptions) -> Verdict {
    let uri = &opts.certificate;
    let mut verdict = Verdict::new(uri.to_string());
    let region = match &opts.region {
        Some(region) => region.clone(),
        None => match reader.bucket_region(&uri.bucket).await {
            Ok(region) => region,
            Err(e) => {
                verdict.push(Check::fail(
                    "certificate",
                    format!(
                        "cannot find the region of bucket {}: {e} (pass --region)",
                        uri.bucket
                    ),
                ));
                return verdict;
            }
        },
    };
    let (certificate, version) = match reader
        .get_object(&region, &uri.bucket, &uri.key, None)
        .await
    {
        Ok(read) => read,
        Err(e) => {
            verdict.push(Check::fail(
                "certificate",
                format!("cannot read {uri} in {region}: {e}"),
            ));
            return verdict;
        }
    };
    let (check, claims) = verify::check_certificate(uri, version.as_deref(), &certificate);
    verdict.push(check);
    let Some(claims) = claims else {
        return verdict;
    };
    let ev = &claims.evidence;

    let signature_key = uri.signature_key();
    let signature = reader
        .get_object(&region, &uri.bucket, &signature_key, None)
        .await;
    let signature_version = signature.as_ref().ok().and_then(|(_, v)| v.clone());
    let public_key = reader.public_key(&ev.region, &ev.signing_key_arn).await;
    verdict.push(match (&signature, &public_key) {
        (Ok((signature, _)), Ok(key)) => verify::check_signature(
            &certificate,
            signature,
            key,
            &claims,
            opts.signing_key_arn.as_deref(),
        ),
        (Err(e), _) => Check::fail(
            "signature",
            format!("cannot read s3://{}/{signature_key}: {e}", uri.bucket),
        ),
        (_, Err(e)) => Check::fail(
            "signature",
            format!(
                "cannot get the public key of {} in {}: {e}",
                ev.signing_key_arn, ev.region
            ),
        ),
    });
    verdict.push(verify::check_location(uri, &region, &claims));
    verdict.push(verify::check_outcome(&claims));

    let parts = verify::manifest_parts(ev);
    let mut manifest = Vec::with_capacity(parts.len());
    let mut unreadable = None;
    for (key, version_id, _) in &parts {
        match reader
            .get_object(&ev.region, &ev.bucket, key, Some(version_id))
            .await
        {
            Ok((bytes, _)) => manifest.push(bytes),
            Err(e) => {
                unreadable = Some(format!(
                    "cannot read s3://{}/{key} version {version_id}: {e}",
                    ev.bucket
                ));
                break;
            }
        }
    }
    match unreadable {
        None => {
            let read: Vec<&[u8]> = manifest.iter().map(Vec::as_slice).collect();
            for check in verify::check_manifest(&read, &claims) {
                verdict.push(check);
            }
        }
        Some(why) => {
            for name in MANIFEST_CHECKS {
                verdict.push(Check::fail(name, why.clone()));
            }
        }
    }
    drop(manifest);

    let locked = match &ev.locked {
        Some(list) => Some(
            reader
                .get_object(&ev.region, &ev.bucket, &list.key, Some(&list.version_id))
                .await
                .map(|(bytes, _)| bytes)
                .map_err(|e| e.to_string()),
        ),
        None => None,
    };
    verdict.push(verify::check_locked(locked, &claims));

    let now = DateTime::from(SystemTime::now());
    let locked_list = ev.locked.as_ref().map(|list| {
        (
            "locked-list",
            ev.region.as_str(),
            ev.bucket.as_str(),
            list.key.as_str(),
            Some(list.version_id.as_str()),
        )
    });
    for (what, region, bucket, key, version) in [
        (
            "certificate",
            region.as_str(),
            uri.bucket.as_str(),
            uri.key.as_str(),
            version.as_deref(),
        ),
        (
            "signature",
            region.as_str(),
            uri.bucket.as_str(),
            signature_key.as_str(),
            signature_version.as_deref(),
        ),
    ]
    .into_iter()
    .chain(parts.iter().map(|(key, version_id, _)| {
        (
            "manifest",
            ev.region.as_str(),
            ev.bucket.as_str(),
            *key,
            Some(*version_id),
        )
    }))
    .chain(locked_list)
    {
        let retention = reader
            .retention(region, bucket, key, version)
            .await
            .map_err(|e| e.to_string());
        verdict.push(verify::check_retention(what, retention, &claims, &now));
    }

    if opts.check_scope {
        verdict.push(check_scope(reader, &claims).await);
    }
    verdict
}

async fn check_scope(reader: &EvidenceReader, claims: &Claims) -> Check {
    let listing = reader
        .scope_listing(
            &claims.region,
            &claims.bucket,
            &claims.scope.listing_prefixes(),
        )
        .await
        .map_err(|e| e.to_string());
    verify::check_scope(listing, claims)
}
