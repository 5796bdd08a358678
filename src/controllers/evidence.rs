//! The evidence store of a policy in a region: an Object-Locked bucket and the operator's
//! signing key, made ready before a deletion Job is created (the Job only writes into them).

use tracing::info;

use super::{Context, Error};
use crate::cloud::{BucketPresence, ObservedTags, Regional};
use crate::plan::{self, BucketChange, DesiredEvidence};

/// Creates or corrects the evidence bucket and signing key, at most once per resync period
/// each; returns the signing key's ARN. Neither is ever deleted by the operator.
pub async fn ensure(
    ctx: &Context,
    cloud: &Regional,
    evidence: &DesiredEvidence,
) -> Result<String, Error> {
    let mut verified = ctx.log_buckets.lock().await;
    let fresh = |name: &str| {
        verified
            .get(name)
            .is_some_and(|at| at.elapsed() < ctx.settings.resync_period)
    };
    if !fresh(&evidence.bucket) {
        ensure_bucket(cloud, evidence).await?;
        verified.insert(evidence.bucket.clone(), std::time::Instant::now());
    }
    signing_key(cloud, evidence).await
}

fn conflict(evidence: &DesiredEvidence, why: impl Into<String>) -> Error {
    Error::EvidenceConflict {
        what: format!("evidence bucket {}", evidence.bucket),
        why: why.into(),
    }
}

async fn ensure_bucket(cloud: &Regional, evidence: &DesiredEvidence) -> Result<(), Error> {
    let shape = evidence.shape();
    let observed = match cloud.bucket_presence(&evidence.bucket).await? {
        BucketPresence::Absent => None,
        BucketPresence::OtherAccount => {
            return Err(conflict(evidence, "it belongs to another AWS account"));
        }
        BucketPresence::Ours { region } if region != evidence.region => {
            return Err(conflict(
                evidence,
                format!("it is in {region}, not {}", evidence.region),
            ));
        }
        BucketPresence::Ours { .. } => match cloud.bucket_tags(&evidence.bucket).await? {
            ObservedTags::Gone => None,
            ObservedTags::Tags(seen) => {
                // Untagged: our creation interrupted before tagging (the name hashes our
                // cluster id, policy and region, and HEAD proved it is in our account).
                let untagged = !seen.keys().any(|k| k.starts_with("tenancy.dev/"));
                if !untagged && !plan::same_operator_resource(&seen, &evidence.tags) {
                    return Err(conflict(
                        evidence,
                        "its tags do not say it is this operator's evidence bucket",
                    ));
                }
                Some(cloud.observe_bucket(&evidence.bucket, seen, &shape).await?)
            }
        },
    };
    for change in plan::bucket_changes(&shape, observed.as_ref()) {
        if change == BucketChange::Create {
            cloud.create_locked_bucket(&evidence.bucket).await?;
        } else {
            cloud.apply_bucket_change(&evidence.bucket, &change).await?;
        }
        info!(bucket = %evidence.bucket, %change, "evidence bucket");
    }
    Ok(())
}

/// The region's signing key, created on first use. A key behind the alias that is not the
/// operator's signing key is never used.
async fn signing_key(cloud: &Regional, evidence: &DesiredEvidence) -> Result<String, Error> {
    let alias = &evidence.signing_key_alias;
    let existing = match cloud.key_state(alias).await {
        Ok(key) => Some(key),
        Err(e) if e.code() == "NotFoundException" => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(key) = existing {
        let seen = cloud.key_tags(&key.arn).await?;
        if !plan::same_operator_resource(&seen, &evidence.signing_key_tags) {
            return Err(Error::EvidenceConflict {
                what: format!("KMS alias {alias}"),
                why: format!(
                    "it points at key {}, which is not this operator's signing key",
                    key.arn
                ),
            });
        }
        if key.state != "Enabled" {
            return Err(Error::EvidenceConflict {
                what: format!("signing key {}", key.arn),
                why: format!("it is {}; certificates cannot be signed", key.state),
            });
        }
        return Ok(key.arn);
    }
    // A key created just before a crash, before its alias: found by its tags, not duplicated.
    let (key_id, arn) = match cloud.find_tagged_key(&evidence.signing_key_tags).await? {
        Some(found) => found,
        None => {
            cloud
                .create_signing_key(
                    "tenant-storage-operator: signs deletion certificates",
                    &evidence.signing_key_tags,
                )
                .await?
        }
    };
    cloud.create_alias(alias, &key_id).await?;
    info!(key = %arn, %alias, "signing key");
    Ok(arn)
}
