//! Deletion of a TenantStorage: `Retain` releases the bucket and key, `Delete` removes an empty
//! bucket and retires the key; the tenant role goes either way.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::dereference::whole_tenant_purge;
use super::record::Record;
use super::release::{Departure, KeyFate, Released, release};
use super::report::Report;
use super::{access, delegation, identity};
use crate::api::{ConditionStatus, DeletionPolicy, ResidencyPolicy, StorageMode, TenantStorage};
use crate::controllers::conditions::READY;
use crate::controllers::toolkit::publish;
use crate::controllers::{Context, Error};
use crate::plan::{self, tags};

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
    let record = Record::of(&status);
    // The cluster is asked about running purges only when there is a bucket to delete.
    let (departure, key_window) = match ts.spec.deletion_policy {
        DeletionPolicy::Delete if record.claimed().is_some() => {
            let key_window = deletion_window(ctx, &ts.spec.policy_ref).await;
            let purge = whole_tenant_purge(ctx, &id).await?;
            (Departure::Delete { purge, key_window }, key_window)
        }
        DeletionPolicy::Delete => (
            Departure::Delete {
                purge: None,
                key_window: 0,
            },
            0,
        ),
        DeletionPolicy::Retain => (Departure::Retain, 0),
    };
    let released = release(&ctx.cloud, &id, &record, &departure).await?;
    announce(ctx, ts, api, released, key_window).await?;
    Ok(Action::await_change())
}

/// Tells the user what became of the bucket and key; a blocked deletion is a failure to retry.
async fn announce(
    ctx: &Context,
    ts: &TenantStorage,
    api: &Api<TenantStorage>,
    released: Released,
    window: i32,
) -> Result<(), Error> {
    let (type_, reason, action, note) = match released {
        Released::NothingClaimed
        | Released::Kept {
            tagged_now: false, ..
        } => return Ok(()),
        Released::NotOurs { bucket, why } => (
            EventType::Warning,
            "BucketConflict",
            "Release",
            format!("bucket {bucket} is not this tenant's ({why}); left untouched"),
        ),
        Released::Kept { bucket, .. } => (
            EventType::Normal,
            "Released",
            "Release",
            format!(
                "deletionPolicy Retain: bucket {bucket} and its key are kept with their data, tagged {}=true",
                tags::RELEASED
            ),
        ),
        Released::Blocked { bucket, purge } => return blocked(ctx, ts, api, bucket, purge).await,
        Released::Deleted { bucket, key } => {
            let key = match key {
                KeyFate::Retired => format!("; key scheduled for deletion in {window} days"),
                KeyFate::Gone => String::new(),
                KeyFate::NotOurs { alias, arn } => {
                    let note = format!(
                        "alias {alias} points at key {arn} that is not this tenant's; left untouched"
                    );
                    publish(ctx, ts, EventType::Warning, "KeyConflict", "Delete", note).await;
                    String::new()
                }
            };
            (
                EventType::Normal,
                "Deleted",
                "Delete",
                format!("deletionPolicy Delete: deleted empty bucket {bucket}{key}"),
            )
        }
    };
    publish(ctx, ts, type_, reason, action, note).await;
    Ok(())
}

/// Ready=False/DeletionBlocked (and a warning the first time); the finalizer stays.
async fn blocked(
    ctx: &Context,
    ts: &TenantStorage,
    api: &Api<TenantStorage>,
    bucket: String,
    purge: Option<String>,
) -> Result<(), Error> {
    let message = match purge {
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
    Err(Error::DeletionBlocked { bucket })
}

/// The policy's key deletion window, or the longest allowed one if the policy is gone.
async fn deletion_window(ctx: &Context, policy_ref: &str) -> i32 {
    let policies: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
    match policies.get_opt(policy_ref).await {
        Ok(Some(p)) => p.spec.encryption.key_deletion_window_days,
        _ => 30,
    }
}
