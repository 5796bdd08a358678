//! DataDeletionRequest controller: accepts or rejects a request, turns it into a Job that runs
//! `tenant-storage-operator purge`, mirrors the Job into the request's phase, tracks the
//! policy's deadline, and keeps the certificate when the request is deleted.
//!
//! Jobs run in the operator's own namespace under a dedicated service account (the only pods
//! holding the purge role), labelled with the request they serve; tenant namespaces never get
//! pods with AWS credentials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use serde_json::json;
use tracing::{info, instrument};

use super::conditions;
use super::toolkit::{StatusPatch, publish, reconcile_finalized};
use super::{Context, Error};
use crate::api::{
    ConditionStatus, DataDeletionRequest, DataDeletionRequestStatus, DeletionPhase, EncryptionMode,
    ResidencyPolicy, TenantStorage,
};
use crate::plan::DesiredEvidence;
use crate::plan::naming::{
    DELETION_REQUEST_LABEL as REQUEST_LABEL, deletion_job_name, deletion_request_label,
};
use crate::purge::UID_LABEL;

/// Keeps a request until its Job is stopped and its certificate detached from it.
pub const FINALIZER: &str = "storage.tenancy.dev/keep-certificate";
/// Annotation on Jobs: `<namespace>/<name>` of the request they serve.
pub const REQUEST_ANNOTATION: &str = "storage.tenancy.dev/request";
/// The action of every event about a request.
const ACTION: &str = "Delete";

#[instrument(skip_all, fields(namespace = req.namespace().unwrap_or_default(), request = req.name_any()))]
pub async fn reconcile(req: Arc<DataDeletionRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = req
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<DataDeletionRequest> = Api::namespaced(ctx.client.clone(), &ns);
    reconcile_finalized(&ctx, &api, FINALIZER, req, |event| async {
        match event {
            Finalizer::Apply(req) => apply(&req, &ctx, &api).await,
            Finalizer::Cleanup(req) => cleanup(&req, &ctx).await,
        }
    })
    .await
}

async fn apply(
    req: &DataDeletionRequest,
    ctx: &Context,
    api: &Api<DataDeletionRequest>,
) -> Result<Action, Error> {
    let ns = req
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = req.name_any();
    let generation = req.metadata.generation.unwrap_or_default();
    let now = Timestamp::now();
    let mut status = req.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    let set = |status: &mut DataDeletionRequestStatus,
               type_: &str,
               s: ConditionStatus,
               reason: &str,
               message: String| {
        conditions::set(
            &mut status.conditions,
            type_,
            s,
            reason,
            message,
            generation,
            &now.to_string(),
        );
    };

    // A refusal for good: the request never runs.
    let reject = |status: &mut DataDeletionRequestStatus, reason: &str, message: &str| {
        status.phase = Some(DeletionPhase::Rejected);
        set(
            status,
            "Accepted",
            ConditionStatus::False,
            reason,
            message.to_owned(),
        );
    };

    // Validate: a request never reaches another namespace, and needs its tenant.
    if let Some(other) = req
        .spec
        .tenant_storage_ref
        .namespace
        .as_deref()
        .filter(|o| *o != ns)
    {
        let message = format!(
            "spec.tenantStorageRef.namespace is {other:?}, but a DataDeletionRequest may only delete data of a TenantStorage in its own namespace ({ns}); create the request in {other:?}"
        );
        reject(&mut status, "CrossNamespaceReference", &message);
        return finish(
            req,
            ctx,
            api,
            status,
            Some(("CrossNamespaceReference", message)),
            None,
        )
        .await;
    }
    let tenants: Api<TenantStorage> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(tenant) = tenants.get_opt(&req.spec.tenant_storage_ref.name).await? else {
        let message = format!(
            "TenantStorage {:?} (spec.tenantStorageRef.name) does not exist in {ns}",
            req.spec.tenant_storage_ref.name
        );
        status.phase.get_or_insert(DeletionPhase::Pending);
        set(
            &mut status,
            "Accepted",
            ConditionStatus::False,
            "TenantStorageNotFound",
            message.clone(),
        );
        return finish(
            req,
            ctx,
            api,
            status,
            Some(("TenantStorageNotFound", message)),
            Some(Duration::from_secs(30)),
        )
        .await;
    };
    if let Some(delegated) = &tenant.spec.delegated {
        let message = format!(
            "TenantStorage {:?} is delegated: its data is in the customer's bucket {} in their own AWS account, which the operator only reads. The customer deletes it there",
            req.spec.tenant_storage_ref.name, delegated.bucket
        );
        reject(&mut status, "DelegatedTenant", &message);
        return finish(
            req,
            ctx,
            api,
            status,
            Some(("DelegatedTenant", message)),
            None,
        )
        .await;
    }
    if tenant
        .status
        .as_ref()
        .and_then(|s| s.bucket_name.as_ref())
        .is_none()
    {
        let message = "the TenantStorage has no bucket yet; the request waits for it".to_owned();
        status.phase.get_or_insert(DeletionPhase::Pending);
        set(
            &mut status,
            "Accepted",
            ConditionStatus::False,
            "TenantNotProvisioned",
            message.clone(),
        );
        return finish(req, ctx, api, status, None, Some(Duration::from_secs(30))).await;
    }

    let s3_managed =
        tenant.status.as_ref().and_then(|s| s.encryption_mode) == Some(EncryptionMode::S3Managed);
    if s3_managed && req.spec.method.shreds() {
        let message = format!(
            "TenantStorage {:?} is encrypted with S3-managed keys (its policy's encryption.mode S3Managed): there is no tenant key to destroy, so spec.method {:?} cannot be honoured. Use method Purge, which deletes every version and delete marker",
            req.spec.tenant_storage_ref.name, req.spec.method
        );
        reject(&mut status, "CryptoShredImpossible", &message);
        let warning = Some(("CryptoShredImpossible", message));
        return finish(req, ctx, api, status, warning, None).await;
    }
    let policies: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
    let Some(policy) = policies.get_opt(&tenant.spec.policy_ref).await? else {
        let message = format!(
            "ResidencyPolicy {:?} of the TenantStorage does not exist: its deadline and evidence store are needed; the request waits for it",
            tenant.spec.policy_ref
        );
        status.phase.get_or_insert(DeletionPhase::Pending);
        set(
            &mut status,
            "Accepted",
            ConditionStatus::False,
            "PolicyNotFound",
            message,
        );
        return finish(req, ctx, api, status, None, Some(Duration::from_secs(30))).await;
    };
    // The policy's deadline, counted from the request's creation.
    let deadline_days = policy.spec.deletion.deadline_days;
    let created = req
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let deadline = created
        .checked_add(SignedDuration::from_hours(24 * i64::from(deadline_days)))
        .unwrap_or(created);
    status.deadline = Some(deadline.to_string());
    set(
        &mut status,
        "Accepted",
        ConditionStatus::True,
        "Accepted",
        format!(
            "deleting {} of TenantStorage {}",
            req.spec.scope.describe(),
            req.spec.tenant_storage_ref.name
        ),
    );

    // The Job: created once, then mirrored.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let job_name = deletion_job_name(&ns, &name);
    status.job_name = Some(job_name.clone());
    let job = match jobs.get_opt(&job_name).await? {
        Some(job) => job,
        None => {
            // Checked and created under the gate, against the API server: an export's Job of
            // this tenant and this one never both run (an export would hold data the deletion
            // removes, and the deletion also removes the tenant's exports).
            let _gate = ctx.job_gate.lock().await;
            let tenant_label = deletion_request_label(&ns, &req.spec.tenant_storage_ref.name);
            let exporting =
                super::job::running_for_tenant(ctx, &tenant_label, super::job::Kind::Export)
                    .await?;
            if !exporting.is_empty() {
                let message = format!(
                    "an export of this tenant's data is running (Job {}); the deletion starts when it ends",
                    exporting.join(", ")
                );
                status.phase.get_or_insert(DeletionPhase::Pending);
                status.job_name = None;
                set(
                    &mut status,
                    "Accepted",
                    ConditionStatus::False,
                    "WaitingForExport",
                    message,
                );
                return finish(req, ctx, api, status, None, Some(Duration::from_secs(30))).await;
            }
            // The evidence store in the tenant's region, ready before the Job writes into it.
            let region = tenant
                .status
                .as_ref()
                .and_then(|s| s.region.clone())
                .ok_or(Error::MissingField("TenantStorage status.region"))?;
            if !policy.spec.allowed_regions.contains(&region) {
                // Evidence names the tenant's keys: never kept outside its jurisdiction.
                let message = format!(
                    "the tenant's region {region} is not allowed by ResidencyPolicy {}: no evidence is kept there and nothing is deleted until the tenant is back in an allowed region",
                    tenant.spec.policy_ref
                );
                status.phase.get_or_insert(DeletionPhase::Pending);
                status.job_name = None;
                set(
                    &mut status,
                    "Accepted",
                    ConditionStatus::False,
                    "ResidencyViolation",
                    message,
                );
                return finish(req, ctx, api, status, None, Some(Duration::from_secs(300))).await;
            }
            let evidence = DesiredEvidence::new(
                &ctx.settings.bucket_prefix,
                &ctx.settings.cluster_id,
                &tenant.spec.policy_ref,
                &policy.spec,
                &region,
            );
            let signing_key =
                super::evidence::ensure(ctx, &ctx.cloud.region(&region), &evidence).await?;
            // The tenant's exports there go with its data.
            let exports = crate::plan::naming::export_bucket_name(
                &ctx.settings.bucket_prefix,
                &ctx.settings.cluster_id,
                &tenant.spec.policy_ref,
                &region,
            );
            let stores = Stores {
                evidence: &evidence,
                signing_key: &signing_key,
                exports: &exports,
            };
            let job = build_job(req, &ns, &name, &job_name, ctx, &stores);
            let created = jobs.create(&PostParams::default(), &job).await?;
            info!(job = %job_name, "created deletion job");
            publish(
                ctx,
                req,
                EventType::Normal,
                "JobCreated",
                ACTION,
                format!(
                    "deletion job {}/{job_name} created",
                    ctx.settings.jobs.namespace
                ),
            )
            .await;
            created
        }
    };
    let job_status = job.status.unwrap_or_default();
    let terminal = matches!(
        status.phase,
        Some(DeletionPhase::Succeeded | DeletionPhase::Blocked | DeletionPhase::Rejected)
    );
    let job_failed = job_status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Failed" && c.status == "True");
    if !terminal {
        if job_failed {
            status.phase = Some(DeletionPhase::Failed);
        } else if job_status.active.unwrap_or(0) > 0 && status.phase != Some(DeletionPhase::Running)
        {
            status.phase = Some(DeletionPhase::Running);
        } else if status.phase.is_none() {
            status.phase = Some(DeletionPhase::Pending);
        }
    }
    let done = matches!(status.phase, Some(DeletionPhase::Succeeded));
    let phase = status.phase;
    set(
        &mut status,
        "Complete",
        if done { ConditionStatus::True } else { ConditionStatus::False },
        match phase {
            Some(DeletionPhase::Succeeded) => "Succeeded",
            Some(DeletionPhase::Blocked) => "ObjectLock",
            Some(DeletionPhase::Failed) => "JobFailed",
            _ => "InProgress",
        },
        match phase {
            Some(DeletionPhase::Succeeded) => "every version in scope is deleted and verified; see the certificate".to_owned(),
            Some(DeletionPhase::Blocked) => "versions under Object Lock remain: status.progress.lockedVersions counts them; the certificate's evidence lists them with their retain-until dates (evidence.locked in the evidence bucket)".to_owned(),
            Some(DeletionPhase::Failed) => format!("the deletion job {job_name} failed; its checkpoint is kept, delete the Job to retry from it"),
            _ => "the deletion job has not finished".to_owned(),
        },
    );
    let overdue = is_overdue(done, now, deadline);
    set(
        &mut status,
        "Overdue",
        if overdue {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if overdue {
            "DeadlinePassed"
        } else {
            "WithinDeadline"
        },
        format!("the policy's deadline ({deadline_days} days) ends at {deadline}"),
    );
    ctx.metrics.record_deletion(
        &format!("{ns}/{name}"),
        status.phase.map(|p| format!("{p:?}")),
        status
            .progress
            .as_ref()
            .map_or(0, |p| p.versions_deleted + p.delete_markers_deleted),
    );
    let until_deadline = deadline.duration_since(now).as_secs().max(1);
    let requeue =
        (!done).then(|| Duration::from_secs(u64::try_from(until_deadline).unwrap_or(60).min(300)));
    finish(req, ctx, api, status, None, requeue).await
}

/// A request not completed by its deadline is overdue (a Blocked or Failed one too: the data is
/// still there).
fn is_overdue(done: bool, now: Timestamp, deadline: Timestamp) -> bool {
    !done && now > deadline
}

async fn finish(
    req: &DataDeletionRequest,
    ctx: &Context,
    api: &Api<DataDeletionRequest>,
    status: DataDeletionRequestStatus,
    warning: Option<(&str, String)>,
    requeue: Option<Duration>,
) -> Result<Action, Error> {
    if let Some(patch) = StatusPatch::between(req.status.as_ref(), &status)? {
        // The Job writes the phase too: send only what this reconcile changed, and only onto
        // the version it read (a 409 requeues), so a finished request never moves backwards.
        patch
            .onto(req.resource_version())
            .send(api, &req.name_any())
            .await?;
        if let Some((reason, message)) = warning {
            publish(ctx, req, EventType::Warning, reason, ACTION, message).await;
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Where a deletion Job writes its evidence and finds the tenant's exports.
struct Stores<'a> {
    evidence: &'a DesiredEvidence,
    signing_key: &'a str,
    exports: &'a str,
}

fn build_job(
    req: &DataDeletionRequest,
    ns: &str,
    name: &str,
    job_name: &str,
    ctx: &Context,
    stores: &Stores<'_>,
) -> Job {
    let purge = &ctx.settings.jobs;
    let evidence = stores.evidence;
    let labels = BTreeMap::from([
        (REQUEST_LABEL.to_owned(), deletion_request_label(ns, name)),
        (
            super::job::TENANT_LABEL.to_owned(),
            deletion_request_label(ns, &req.spec.tenant_storage_ref.name),
        ),
    ]);
    let annotations = BTreeMap::from([
        (REQUEST_ANNOTATION.to_owned(), format!("{ns}/{name}")),
        (
            "storage.tenancy.dev/request-uid".to_owned(),
            req.uid().unwrap_or_default(),
        ),
    ]);
    let args = [
        "purge",
        "--namespace",
        ns,
        "--request",
        name,
        "--records-namespace",
        &purge.namespace,
        "--cluster-id",
        &ctx.settings.cluster_id,
        "--evidence-bucket",
        &evidence.bucket,
        "--evidence-region",
        &evidence.region,
        "--signing-key",
        stores.signing_key,
        "--evidence-retention-days",
        &evidence.retention_days.to_string(),
        "--export-bucket",
        stores.exports,
    ];
    super::job::build(
        ctx,
        super::job::Pod {
            name: job_name,
            labels,
            annotations,
            service_account: &purge.service_account,
            container: "purge",
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        },
    )
}

/// Deleting a request stops its Job and keeps the certificate and manifest, labelled as the
/// record of a deleted request.
async fn cleanup(req: &DataDeletionRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = req.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let job = deletion_job_name(&ns, &name);
    if jobs.get_opt(&job).await?.is_some() {
        let params = kube::api::DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        jobs.delete(&job, &params).await?;
    }
    // The records have no owner to be collected with; labelling them says their request is gone.
    let records: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let selector = format!("{UID_LABEL}={}", req.uid().unwrap_or_default());
    let mut kept = Vec::new();
    for cm in records
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let patch = json!({"metadata": {
            "labels": {"storage.tenancy.dev/deleted-request": deletion_request_label(&ns, &name)}
        }});
        records
            .patch(
                &cm.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        kept.push(cm.name_any());
    }
    ctx.metrics
        .record_deletion(&format!("{ns}/{name}"), None, 0);
    if !kept.is_empty() {
        let note = format!(
            "request deleted; its deletion job is stopped and its evidence is kept: ConfigMaps {} in namespace {} (labelled storage.tenancy.dev/deleted-request)",
            kept.join(", "),
            ctx.settings.jobs.namespace
        );
        publish(ctx, req, EventType::Normal, "CertificateKept", ACTION, note).await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_only_when_unfinished_after_the_deadline() {
        let deadline = Timestamp::now();
        let later = deadline
            .checked_add(SignedDuration::from_hours(1))
            .unwrap_or(deadline);
        let earlier = deadline
            .checked_sub(SignedDuration::from_hours(1))
            .unwrap_or(deadline);
        assert!(is_overdue(false, later, deadline));
        assert!(!is_overdue(false, earlier, deadline));
        assert!(
            !is_overdue(true, later, deadline),
            "a completed request is never overdue"
        );
    }
}
