//! The stores of a policy in a region that the Jobs write into, made ready before a Job is
//! created: the evidence store (an Object-Locked bucket and the operator's signing key) and the
//! export bucket.

use tracing::info;

use super::{Context, Error};
use crate::cloud::{BucketPresence, ObservedTags, Regional};
use crate::plan::{self, BucketChange, BucketShape, DesiredEvidence, DesiredExports};

/// Creates or corrects the evidence bucket and signing key, at most once per resync period
/// each; returns the signing key's ARN. Neither is ever deleted by the operator.
pub async fn ensure(
    ctx: &Context,
    cloud: &Regional,
    evidence: &DesiredEvidence,
) -> Result<String, Error> {
    let bucket = OperatorBucket {
        what: "evidence bucket",
        name: &evidence.bucket,
        region: &evidence.region,
        tags: &evidence.tags,
        locked: true,
    };
    // Held until the key is there too: two requests never create two signing keys.
    let mut verified = ctx.log_buckets.lock().await;
    ensure_when_due(ctx, &mut verified, cloud, &bucket, &evidence.shape()).await?;
    signing_key(cloud, evidence).await
}

/// Creates or corrects the export bucket, at most once per resync period. Never deleted by
/// the operator: its lifecycle rule empties it.
pub async fn ensure_exports(
    ctx: &Context,
    cloud: &Regional,
    exports: &DesiredExports,
) -> Result<(), Error> {
    let bucket = OperatorBucket {
        what: "export bucket",
        name: &exports.bucket,
        region: &exports.region,
        tags: &exports.tags,
        locked: false,
    };
    let mut verified = ctx.log_buckets.lock().await;
    ensure_when_due(ctx, &mut verified, cloud, &bucket, &exports.shape()).await
}

/// [`ensure_bucket`], unless the bucket was verified within the resync period.
async fn ensure_when_due(
    ctx: &Context,
    verified: &mut std::collections::HashMap<String, std::time::Instant>,
    cloud: &Regional,
    bucket: &OperatorBucket<'_>,
    shape: &BucketShape,
) -> Result<(), Error> {
    let fresh = verified
        .get(bucket.name)
        .is_some_and(|at| at.elapsed() < ctx.settings.resync_period);
    if !fresh {
        ensure_bucket(cloud, bucket, shape).await?;
        verified.insert(bucket.name.to_owned(), std::time::Instant::now());
    }
    Ok(())
}

/// A bucket the operator keeps for a policy in a region.
struct OperatorBucket<'a> {
    what: &'static str,
    name: &'a str,
    region: &'a str,
    tags: &'a std::collections::BTreeMap<String, String>,
    /// Created with Object Lock.
    locked: bool,
}

fn conflict(bucket: &OperatorBucket<'_>, why: impl Into<String>) -> Error {
    Error::EvidenceConflict {
        what: format!("{} {}", bucket.what, bucket.name),
        why: why.into(),
    }
}

async fn ensure_bucket(
    cloud: &Regional,
    bucket: &OperatorBucket<'_>,
    shape: &BucketShape,
) -> Result<(), Error> {
    let observed = match cloud.bucket_presence(bucket.name).await? {
        BucketPresence::Absent => None,
        BucketPresence::OtherAccount => {
            return Err(conflict(bucket, "it belongs to another AWS account"));
        }
        BucketPresence::Ours { region } if region != bucket.region => {
            return Err(conflict(
                bucket,
                format!("it is in {region}, not {}", bucket.region),
            ));
        }
        BucketPresence::Ours { .. } => match cloud.bucket_tags(bucket.name).await? {
            ObservedTags::Gone => None,
            ObservedTags::Tags(seen) => {
                // Untagged: our creation interrupted before tagging (the name hashes our
                // cluster id, policy and region, and HEAD proved it is in our account).
                let untagged = !seen.keys().any(|k| k.starts_with("tenancy.dev/"));
                if !untagged && !plan::same_operator_resource(&seen, bucket.tags) {
                    return Err(conflict(
                        bucket,
                        format!("its tags do not say it is this operator's {}", bucket.what),
                    ));
                }
                Some(cloud.observe_bucket(bucket.name, seen, shape).await?)
            }
        },
    };
    for change in plan::bucket_changes(shape, observed.as_ref()) {
        match change {
            BucketChange::Create if bucket.locked => {
                cloud.create_locked_bucket(bucket.name).await?;
            }
            BucketChange::Create => {
                cloud.create_bucket(bucket.name).await?;
            }
            _ => cloud.apply_bucket_change(bucket.name, &change).await?,
        }
        info!(bucket = %bucket.name, %change, "{}", bucket.what);
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
