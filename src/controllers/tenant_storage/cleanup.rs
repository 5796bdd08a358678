//! Deletion of a TenantStorage: `Retain` releases the bucket and key, `Delete` removes an empty
//! bucket and retires the key; the tenant role goes either way.

use std::collections::BTreeMap;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::dereference::whole_tenant_purge;
use super::report::Report;
use super::{access, delegation, identity};
use crate::api::{ConditionStatus, DeletionPolicy, ResidencyPolicy, StorageMode, TenantStorage};
use crate::cloud::ObservedTags;
use crate::controllers::conditions::READY;
use crate::controllers::toolkit::publish;
use crate::controllers::{Context, Error};
use crate::plan::{self, BucketChange, Ownership, tags};

/// Deletion: `Retain` releases, `Delete` removes an empty bucket and retires the key.
pub(super) async fn cleanup(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
) -> Result<Action, Error> {
    let status = ts.status.clone().unwrap_or_default();
    let id = identity(ctx, ts)?;
    // The status records a role before it is created (write-ahead), and spec.access covers a
    // role whose creation was never recorded at all.
    if status.access.is_some() || ts.spec.access.is_some() {
        let name = plan::naming::role_name(&id.cluster_id, &id.namespace, &id.name);
        if access::remove_role(ctx, &id, &name).await? {
            let kept = match (&status.bucket_name, ts.spec.deletion_policy) {
                (Some(bucket), DeletionPolicy::Retain) => {
                    format!("; bucket {bucket} and its data stay (deletionPolicy Retain)")
                }
                _ => String::new(),
            };
            let note = format!(
                "deleted role {name}: no workload can reach the data through it any more{kept}"
            );
            publish(ctx, ts, EventType::Normal, "RoleDeleted", "Delete", note).await;
        }
    }
    if ts.spec.mode == StorageMode::Delegated {
        delegation::forget_external_id(ctx, &id).await?;
    }
    let (Some(bucket), Some(region)) = (status.bucket_name.clone(), status.region.clone()) else {
        // Nothing was ever claimed (e.g. the region was refused): nothing to release.
        return Ok(Action::await_change());
    };
    let cloud = ctx.cloud.region(&region);
    let seen = match cloud.bucket_tags(&bucket).await? {
        ObservedTags::Gone => None,
        ObservedTags::Tags(t) => Some(t),
    };
    if let Some(seen) = &seen
        && let Ownership::Foreign(why) = plan::ownership(seen, &id, true)
    {
        let note = format!("bucket {bucket} is not this tenant's ({why}); left untouched");
        publish(
            ctx,
            ts,
            EventType::Warning,
            "BucketConflict",
            "Release",
            note,
        )
        .await;
        return Ok(Action::await_change());
    }
    match ts.spec.deletion_policy {
        DeletionPolicy::Retain => {
            if let Some(seen) = seen
                && !seen.contains_key(tags::RELEASED)
            {
                // Keep (or, for a bucket claimed but never tagged, add) the ownership tags, so a
                // TenantStorage re-created under this name adopts the bucket again.
                let mut released: BTreeMap<String, String> = seen;
                released.extend(id.tags());
                released.insert(tags::RELEASED.to_owned(), "true".to_owned());
                cloud
                    .apply_bucket_change(&bucket, &BucketChange::PutTags(released))
                    .await?;
                let note = format!(
                    "deletionPolicy Retain: bucket {bucket} and its key are kept with their data, tagged {}=true",
                    tags::RELEASED
                );
                publish(ctx, ts, EventType::Normal, "Released", "Release", note).await;
            }
        }
        DeletionPolicy::Delete => {
            if seen.is_some() {
                // A running purge is still listing and verifying the bucket: deleting it under
                // the purge would fail the request; wait until the request finishes.
                let purging = whole_tenant_purge(ctx, &id).await?;
                if purging.is_some() || cloud.bucket_has_data(&bucket).await? {
                    let message = match purging {
                        Some(request) => format!(
                            "deletionPolicy Delete: DataDeletionRequest {request} is purging bucket {bucket}; it is deleted once the request finishes"
                        ),
                        None => format!(
                            "deletionPolicy Delete: bucket {bucket} still holds objects or versions, so it is not deleted. Empty it with a DataDeletionRequest first; this object stays until then"
                        ),
                    };
                    let mut report = Report::new(ts, &ctx.own_writes);
                    let first_time = report.previous_ready_reason() != Some("DeletionBlocked");
                    report.set(
                        READY,
                        ConditionStatus::False,
                        "DeletionBlocked",
                        message.clone(),
                    );
                    report.save(api).await?;
                    if first_time {
                        publish(
                            ctx,
                            ts,
                            EventType::Warning,
                            "DeletionBlocked",
                            "Delete",
                            message,
                        )
                        .await;
                    }
                    return Err(Error::DeletionBlocked { bucket });
                }
                cloud.delete_bucket(&bucket).await?;
            }
            let alias = status.kms_key_alias.clone().unwrap_or_else(|| {
                plan::naming::key_alias(&id.cluster_id, &id.namespace, &id.name)
            });
            let window = deletion_window(ctx, &ts.spec.policy_ref).await;
            if let Some(key) = cloud.observe_key(&alias, true).await? {
                // Only ever schedule the deletion of a key that proves it is this tenant's.
                let key_tags = cloud.key_tags(&key.key_id).await?;
                if plan::ownership(&key_tags, &id, false) == Ownership::Ours {
                    cloud.retire_key(&alias, &key.key_id, window).await?;
                } else {
                    let note = format!(
                        "alias {alias} points at key {} that is not this tenant's; left untouched",
                        key.arn
                    );
                    publish(ctx, ts, EventType::Warning, "KeyConflict", "Delete", note).await;
                }
            }
            let note = format!(
                "deletionPolicy Delete: deleted empty bucket {bucket}; key scheduled for deletion in {window} days"
            );
            publish(ctx, ts, EventType::Normal, "Deleted", "Delete", note).await;
        }
    }
    Ok(Action::await_change())
}

/// The policy's key deletion window, or the longest allowed one if the policy is gone.
async fn deletion_window(ctx: &Context, policy_ref: &str) -> i32 {
    let policies: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
    match policies.get_opt(policy_ref).await {
        Ok(Some(p)) => p.spec.encryption.key_deletion_window_days,
        _ => 30,
    }
}
