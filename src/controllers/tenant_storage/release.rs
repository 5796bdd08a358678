//! The stage that lets go of a deleted tenant's bucket and key, over the cloud port: `Retain`
//! tags them released (a TenantStorage re-created under the name adopts them), `Delete` removes
//! an empty bucket and schedules the key's deletion. Only what proves it is this tenant's is
//! touched.

use super::record::Record;
use crate::cloud::ObservedTags;
use crate::cloud::port::{Buckets, Keys, Regions};
use crate::controllers::Error;
use crate::plan::{self, BucketChange, Ownership, TenantIdentity, tags};

/// How the tenant is let go: its `deletionPolicy`.
pub(super) enum Departure {
    Retain,
    Delete {
        /// A whole-tenant purge that still lists and verifies the bucket.
        purge: Option<String>,
        /// Days before a retired key is deleted.
        key_window: i32,
    },
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Released {
    /// Nothing was ever claimed (e.g. the region was refused).
    NothingClaimed,
    /// The bucket is not this tenant's: left untouched.
    NotOurs { bucket: String, why: String },
    /// `Retain`: tagged released now (`true`), or already before (`false`).
    Kept { bucket: String, tagged_now: bool },
    /// `Delete`, but the bucket still holds data or a purge runs on it: nothing is deleted.
    Blocked {
        bucket: String,
        purge: Option<String>,
    },
    /// `Delete`: the bucket is gone and the key retired (or left, if not ours).
    Deleted { bucket: String, key: KeyFate },
}

/// What became of the tenant key when its bucket was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum KeyFate {
    Retired,
    /// The alias points at a key that is not this tenant's: left untouched.
    NotOurs {
        alias: String,
        arn: String,
    },
    Gone,
}

pub(super) async fn release<C: Regions>(
    cloud: &C,
    id: &TenantIdentity,
    record: &Record,
    departure: &Departure,
) -> Result<Released, Error> {
    let Some((bucket, region)) = record.claimed() else {
        return Ok(Released::NothingClaimed);
    };
    let (bucket, cloud) = (bucket.to_owned(), cloud.region(region));
    let seen = match cloud.tags(&bucket).await? {
        ObservedTags::Gone => None,
        ObservedTags::Tags(t) => Some(t),
    };
    if let Some(seen) = &seen
        && let Ownership::Foreign(why) = plan::ownership(seen, id, true)
    {
        return Ok(Released::NotOurs { bucket, why });
    }
    match departure {
        Departure::Retain => keep(&cloud, bucket, seen, id).await,
        Departure::Delete { purge, key_window } => {
            let gone = Gone {
                bucket,
                exists: seen.is_some(),
                purge: purge.clone(),
                key_window: *key_window,
            };
            delete(&cloud, gone, record, id).await
        }
    }
}

/// Keeps (or, for a bucket claimed but never tagged, adds) the ownership tags, and marks the
/// bucket released.
async fn keep<B: Buckets>(
    cloud: &B,
    bucket: String,
    seen: Option<std::collections::BTreeMap<String, String>>,
    id: &TenantIdentity,
) -> Result<Released, Error> {
    let Some(mut released) = seen.filter(|t| !t.contains_key(tags::RELEASED)) else {
        return Ok(Released::Kept {
            bucket,
            tagged_now: false,
        });
    };
    released.extend(id.tags());
    released.insert(tags::RELEASED.to_owned(), "true".to_owned());
    cloud
        .change(&bucket, &BucketChange::PutTags(released))
        .await?;
    Ok(Released::Kept {
        bucket,
        tagged_now: true,
    })
}

/// A bucket to delete, and what decides whether it may be.
struct Gone {
    bucket: String,
    exists: bool,
    purge: Option<String>,
    key_window: i32,
}

async fn delete<R: Buckets + Keys>(
    cloud: &R,
    gone: Gone,
    record: &Record,
    id: &TenantIdentity,
) -> Result<Released, Error> {
    let Gone {
        bucket,
        exists,
        purge,
        key_window,
    } = gone;
    if exists {
        // A running purge is still listing and verifying the bucket: deleting it under the
        // purge would fail the request.
        if purge.is_some() || cloud.has_data(&bucket).await? {
            return Ok(Released::Blocked { bucket, purge });
        }
        cloud.delete(&bucket).await?;
    }
    let alias = record
        .kms_key_alias
        .clone()
        .unwrap_or_else(|| plan::naming::key_alias(&id.cluster_id, &id.namespace, &id.name));
    let key = match cloud.key(&alias, true).await? {
        None => KeyFate::Gone,
        // Only ever schedule the deletion of a key that proves it is this tenant's.
        Some(key) => match plan::ownership(&cloud.key_tags(&key.key_id).await?, id, false) {
            Ownership::Ours => {
                cloud.retire_key(&alias, &key.key_id, key_window).await?;
                KeyFate::Retired
            }
            Ownership::Foreign(_) => KeyFate::NotOurs {
                alias,
                arn: key.arn,
            },
        },
    };
    Ok(Released::Deleted { bucket, key })
}
