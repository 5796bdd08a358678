//! The access-log bucket of a policy in a region: shared by every tenant of that policy there,
//! created or corrected at most once per period, never deleted by the operator (it holds the
//! audit trail).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::info;

use crate::cloud::port::Buckets;
use crate::cloud::{BucketPresence, ObservedTags};
use crate::controllers::Error;
use crate::plan::{
    self, BucketChange, BucketShape, DesiredLogBucket, ObservedBucket, same_operator_resource,
};

/// Access-log buckets verified recently, shared by every tenant of a policy and region.
pub(crate) type Verified = tokio::sync::Mutex<HashMap<String, Instant>>;

/// Creates or corrects the bucket, unless that was done less than `period` ago.
pub(super) async fn ensure<B: Buckets>(
    cloud: &B,
    logs: &DesiredLogBucket,
    verified: &Verified,
    period: Duration,
) -> Result<(), Error> {
    let mut verified = verified.lock().await;
    if verified
        .get(&logs.bucket)
        .is_some_and(|at| at.elapsed() < period)
    {
        return Ok(());
    }
    let shape = logs.shape();
    let observed = observe(cloud, logs, &shape).await?;
    for change in plan::bucket_changes(&shape, observed.as_ref()) {
        if change == BucketChange::Create {
            cloud.create(&logs.bucket).await?;
        } else {
            cloud.change(&logs.bucket, &change).await?;
        }
        info!(bucket = %logs.bucket, %change, "access-log bucket");
    }
    verified.insert(logs.bucket.clone(), Instant::now());
    Ok(())
}

/// The bucket as it is, if it exists and is this operator's.
async fn observe<B: Buckets>(
    cloud: &B,
    logs: &DesiredLogBucket,
    shape: &BucketShape,
) -> Result<Option<ObservedBucket>, Error> {
    let conflict = |why: String| Error::LogBucketConflict {
        bucket: logs.bucket.clone(),
        why,
    };
    match cloud.presence(&logs.bucket).await? {
        BucketPresence::Absent => Ok(None),
        BucketPresence::OtherAccount => Err(conflict("it belongs to another AWS account".into())),
        BucketPresence::Ours { region } if region != logs.region => {
            Err(conflict(format!("it is in {region}, not {}", logs.region)))
        }
        BucketPresence::Ours { .. } => match cloud.tags(&logs.bucket).await? {
            ObservedTags::Gone => Ok(None),
            ObservedTags::Tags(seen) if !ours(&seen, logs) => Err(conflict(
                "its tags do not say it is this operator's access-log bucket".into(),
            )),
            ObservedTags::Tags(seen) => Ok(Some(cloud.observe(&logs.bucket, seen, shape).await?)),
        },
    }
}

/// No ownership tags at all: a creation of ours interrupted before tagging (the name hashes
/// our cluster id, policy and region, and HEAD proved it is in our account). Tags naming
/// anyone else: not ours.
fn ours(seen: &std::collections::BTreeMap<String, String>, logs: &DesiredLogBucket) -> bool {
    let untagged = !seen.keys().any(|k| k.starts_with("tenancy.dev/"));
    untagged || same_operator_resource(seen, &logs.tags)
}
