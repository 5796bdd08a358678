//! DataExportRequest controller: accepts or rejects a request, prepares the export bucket and
//! the evidence store of the tenant's region, turns the request into a Job that runs
//! `tenant-storage-operator export` under the export service account, mirrors the Job into the
//! request's phase, copies the download link the Job hands over into a Secret in the request's
//! namespace, signs a fresh link when the refresh annotation changes, and tracks the deadline
//! and the export's expiry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::conditions;
use super::toolkit::{StatusPatch, publish, reconcile_finalized};
use super::{Context, Error};
use crate::api::{
    ConditionStatus, DataDeletionRequest, DataExportRequest, DataExportRequestStatus,
    DeletionPhase, ExportLink, ExportPhase, ResidencyPolicy, TenantStorage,
};
use crate::export::link;
use crate::plan::naming::{
    deletion_request_label, export_job_name, export_link_handoff_name, export_link_job_name,
};
use crate::plan::{DesiredEvidence, DesiredExports};

/// Keeps a request until its Jobs are stopped.
pub const FINALIZER: &str = "storage.tenancy.dev/stop-export";
/// Label on export Jobs: the request they serve (`<namespace>.<name>`, or a hash).
pub const EXPORT_REQUEST_LABEL: &str = "storage.tenancy.dev/export-request";
/// Annotation on export Jobs: `<namespace>/<name>` of the request they serve.
pub const REQUEST_ANNOTATION: &str = "storage.tenancy.dev/export";
/// Set (to any new value) to get a fresh download link for a finished export.
pub const REFRESH_ANNOTATION: &str = "storage.tenancy.dev/refresh-link";
/// The action of every event about an export.
const ACTION: &str = "Export";

#[instrument(skip_all, fields(namespace = req.namespace().unwrap_or_default(), request = req.name_any()))]
pub async fn reconcile(req: Arc<DataExportRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = req
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<DataExportRequest> = Api::namespaced(ctx.client.clone(), &ns);
    reconcile_finalized(&ctx, &api, FINALIZER, req, |event| async {
        match event {
            Finalizer::Apply(req) => apply(&req, &ctx, &api).await,
            Finalizer::Cleanup(req) => cleanup(&req, &ctx).await,
        }
    })
    .await
}

/// One reconcile's view: the request, its namespace and the status being built.
struct Review<'a> {
    req: &'a DataExportRequest,
    ctx: &'a Context,
    ns: String,
    name: String,
    status: DataExportRequestStatus,
    now: Timestamp,
}

impl Review<'_> {
    fn set(&mut self, type_: &str, s: ConditionStatus, reason: &str, message: String) {
        let generation = self.req.metadata.generation.unwrap_or_default();
        conditions::set(
            &mut self.status.conditions,
            type_,
            s,
            reason,
            message,
            generation,
            &self.now.to_string(),
        );
    }

    /// Refused for good: the request never runs.
    fn reject(&mut self, reason: &str, message: &str) {
        self.status.phase = Some(ExportPhase::Rejected);
        self.set(
            "Accepted",
            ConditionStatus::False,
            reason,
            message.to_owned(),
        );
    }

    /// Not yet: the request waits, saying why.
    fn wait(&mut self, reason: &str, message: String) {
        self.status.phase.get_or_insert(ExportPhase::Pending);
        self.set("Accepted", ConditionStatus::False, reason, message);
    }
}

async fn apply(
    req: &DataExportRequest,
    ctx: &Context,
    api: &Api<DataExportRequest>,
) -> Result<Action, Error> {
    let mut r = Review {
        req,
        ctx,
        ns: req
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?,
        name: req.name_any(),
        status: req.status.clone().unwrap_or_default(),
        now: Timestamp::now(),
    };
    r.status.observed_generation = req.metadata.generation;
    let Some((tenant, policy)) = accept(&mut r).await? else {
        let terminal = r.status.phase == Some(ExportPhase::Rejected);
        let warning = r
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted" && terminal)
            .map(|c| (c.reason.clone(), c.message.clone()));
        let requeue = (!terminal).then_some(Duration::from_secs(30));
        return finish(&r, api, warning, requeue).await;
    };
    let deadline = deadline(req, r.now, policy.spec.export.deadline_days);
    r.status.deadline = Some(deadline.to_string());
    if r.status.phase == Some(ExportPhase::Expired) {
        return finish(&r, api, None, None).await;
    }
    // A finished export is never run again: only a refresh starts a (link) Job.
    let succeeded = r.status.phase == Some(ExportPhase::Succeeded);
    if !succeeded || wanted_refresh(&r).is_some() {
        match run_job(&mut r, &tenant, &policy, deadline).await? {
            Some(job) => mirror(&mut r, &job),
            None => return finish(&r, api, None, Some(Duration::from_secs(30))).await,
        }
    }
    let mut handover_left = false;
    if r.status.phase == Some(ExportPhase::Succeeded) {
        expiry(&mut r, &policy);
        handover_left = take_link(&mut r).await?;
    }
    let done = matches!(
        r.status.phase,
        Some(ExportPhase::Succeeded | ExportPhase::Expired)
    );
    report(&mut r, deadline, done, policy.spec.export.deadline_days);
    let requeue = if handover_left {
        Duration::from_secs(5)
    } else {
        next_check(&r, deadline, done)
    };
    finish(&r, api, None, Some(requeue)).await
}

/// The request's tenant and policy, once it may run; `None` (status saying why) otherwise.
async fn accept(r: &mut Review<'_>) -> Result<Option<(TenantStorage, ResidencyPolicy)>, Error> {
    if r.status.phase == Some(ExportPhase::Rejected) {
        return Ok(None);
    }
    let ns = r.ns.clone();
    let target = &r.req.spec.tenant_storage_ref;
    if let Some(other) = target.namespace.as_deref().filter(|o| *o != ns) {
        let message = format!(
            "spec.tenantStorageRef.namespace is {other:?}, but a DataExportRequest may only export data of a TenantStorage in its own namespace ({ns}); create the request in {other:?}"
        );
        r.reject("CrossNamespaceReference", &message);
        return Ok(None);
    }
    let tenants: Api<TenantStorage> = Api::namespaced(r.ctx.client.clone(), &ns);
    let Some(tenant) = tenants.get_opt(&target.name).await? else {
        let message = format!(
            "TenantStorage {:?} (spec.tenantStorageRef.name) does not exist in {ns}",
            target.name
        );
        r.wait("TenantStorageNotFound", message);
        return Ok(None);
    };
    if let Some(delegated) = &tenant.spec.delegated {
        let message = format!(
            "TenantStorage {:?} is delegated: its data is already in the customer's own bucket {} in their AWS account, which the operator only reads; the customer exports it from there",
            target.name, delegated.bucket
        );
        r.reject("DelegatedTenant", &message);
        return Ok(None);
    }
    let status = tenant.status.clone().unwrap_or_default();
    let (Some(_), Some(region)) = (status.bucket_name, status.region) else {
        r.wait(
            "TenantNotProvisioned",
            "the TenantStorage has no bucket yet; the request waits for it".into(),
        );
        return Ok(None);
    };
    if r.ctx.settings.jobs.export_principal_arn.is_none() {
        r.wait(
            "ExportIdentityNotConfigured",
            "the operator has no --export-principal-arn (Helm export.irsaRoleArn): the export bucket would let nobody read the export; the request waits until it is set".into(),
        );
        return Ok(None);
    }
    let policies: Api<ResidencyPolicy> = Api::all(r.ctx.client.clone());
    let Some(policy) = policies.get_opt(&tenant.spec.policy_ref).await? else {
        let message = format!(
            "ResidencyPolicy {:?} of the TenantStorage does not exist: its deadline, retention and link lifetime are needed; the request waits for it",
            tenant.spec.policy_ref
        );
        r.wait("PolicyNotFound", message);
        return Ok(None);
    };
    if !policy.spec.allowed_regions.contains(&region) {
        let message = format!(
            "the tenant's region {region} is not allowed by ResidencyPolicy {}: nothing is exported until the tenant is back in an allowed region (an export never leaves the jurisdiction)",
            tenant.spec.policy_ref
        );
        r.wait("ResidencyViolation", message);
        return Ok(None);
    }
    let message = format!(
        "exporting {} of TenantStorage {}",
        r.req.spec.scope.describe(),
        target.name
    );
    r.set("Accepted", ConditionStatus::True, "Accepted", message);
    Ok(Some((tenant, policy)))
}

/// The policy's deadline, counted from the request's creation.
fn deadline(req: &DataExportRequest, now: Timestamp, days: i32) -> Timestamp {
    let created = req
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    created
        .checked_add(SignedDuration::from_hours(24 * i64::from(days)))
        .unwrap_or(created)
}

/// The Job this request needs now (the export, or a link refresh), created if missing; `None`
/// while a deletion of the same tenant runs.
async fn run_job(
    r: &mut Review<'_>,
    tenant: &TenantStorage,
    policy: &ResidencyPolicy,
    deadline: Timestamp,
) -> Result<Option<Job>, Error> {
    let refresh = wanted_refresh(r);
    let uid = r.req.uid().unwrap_or_default();
    let job_name = match refresh.as_deref() {
        Some(value) => export_link_job_name(&uid, value),
        None => export_job_name(&r.ns, &r.name),
    };
    let jobs: Api<Job> = Api::namespaced(r.ctx.client.clone(), &r.ctx.settings.jobs.namespace);
    if let Some(job) = jobs.get_opt(&job_name).await? {
        r.status.job_name = Some(job_name);
        return Ok(Some(job));
    }
    // One link Job at a time: a new refresh value waits for the one in flight.
    if let Some(previous) = r.status.job_name.clone().filter(|n| n.starts_with("link-"))
        && let Some(job) = jobs.get_opt(&previous).await?
        && !super::job::finished(&job)
    {
        return Ok(Some(job));
    }
    // Checked and created under the gate, against the API server: a deletion's Job of this
    // tenant and this one never both start, and an export waits behind a deletion that is
    // asked for but not started yet (back-to-back exports never starve it).
    let _gate = r.ctx.job_gate.lock().await;
    let tenant_label = deletion_request_label(&r.ns, &tenant.name_any());
    let mut deleting =
        super::job::running_for_tenant(r.ctx, &tenant_label, super::job::Kind::Deletion).await?;
    if refresh.is_none() {
        deleting.extend(pending_deletions(r, &tenant.name_any()).await?);
    }
    if !deleting.is_empty() {
        r.wait(
            "WaitingForDeletion",
            format!(
                "a deletion of this tenant's data is running or asked for ({}); the export starts when it ends, so it never holds data the deletion removed",
                deleting.join(", ")
            ),
        );
        return Ok(None);
    }
    let region = tenant
        .status
        .as_ref()
        .and_then(|s| s.region.clone())
        .ok_or(Error::MissingField("TenantStorage status.region"))?;
    let cloud = r.ctx.cloud.region(&region);
    let evidence = DesiredEvidence::new(
        &r.ctx.settings.bucket_prefix,
        &r.ctx.settings.cluster_id,
        &tenant.spec.policy_ref,
        &policy.spec,
        &region,
    );
    let signing_key = super::evidence::ensure(r.ctx, &cloud, &evidence).await?;
    let exports = desired_exports(r.ctx, tenant, policy, &region);
    super::evidence::ensure_exports(r.ctx, &cloud, &exports).await?;
    let spec = JobArgs {
        job_name: &job_name,
        tenant_label,
        exports: &exports,
        evidence: &evidence,
        signing_key: &signing_key,
        refresh: refresh.as_deref(),
    };
    let mut job = build_job(r, &spec);
    if let Some(spec) = job.spec.as_mut() {
        if refresh.is_some() {
            // A link Job is done once its link is handed over: removed an hour after it ends,
            // and given ten minutes, so refreshes over the export's life do not pile up.
            spec.ttl_seconds_after_finished = Some(3600);
            spec.active_deadline_seconds = Some(600);
        } else {
            // An export stuck (a pod that never starts) must not hold the tenant's deletions
            // off forever: it fails at the request's deadline, and its checkpoint is kept.
            let left = deadline.duration_since(r.now).as_secs().max(3600);
            spec.active_deadline_seconds = Some(left);
        }
    }
    let created = jobs.create(&PostParams::default(), &job).await?;
    info!(job = %job_name, "created export job");
    let what = if refresh.is_some() {
        "link refresh"
    } else {
        "export"
    };
    let note = format!(
        "{what} job {}/{job_name} created",
        r.ctx.settings.jobs.namespace
    );
    publish(r.ctx, r.req, EventType::Normal, "JobCreated", ACTION, note).await;
    r.status.job_name = Some(job_name);
    Ok(Some(created))
}

/// A refresh annotation value not yet answered, on a finished export.
fn wanted_refresh(r: &Review<'_>) -> Option<String> {
    let value = r.req.annotations().get(REFRESH_ANNOTATION)?;
    let answered = r.status.link.as_ref().and_then(|l| l.refresh.as_ref());
    (r.status.phase == Some(ExportPhase::Succeeded) && answered != Some(value))
        .then(|| value.clone())
}

/// DataDeletionRequests of the tenant asked for and not ended (a dry run deletes nothing).
async fn pending_deletions(r: &Review<'_>, tenant: &str) -> Result<Vec<String>, Error> {
    let api: Api<DataDeletionRequest> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    let pending = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|d| {
            let phase = d.status.as_ref().and_then(|s| s.phase);
            d.spec.tenant_storage_ref.name == tenant
                && !d.spec.dry_run
                && !matches!(
                    phase,
                    Some(
                        DeletionPhase::Succeeded
                            | DeletionPhase::Blocked
                            | DeletionPhase::Failed
                            | DeletionPhase::Rejected
                    )
                )
        });
    Ok(pending
        .map(|d| format!("DataDeletionRequest {}", d.name_any()))
        .collect())
}

fn desired_exports(
    ctx: &Context,
    tenant: &TenantStorage,
    policy: &ResidencyPolicy,
    region: &str,
) -> DesiredExports {
    let mut readers = ctx.settings.access.allowed_principals.clone();
    readers.extend(ctx.settings.jobs.export_principal_arn.clone());
    DesiredExports::new(
        &ctx.settings.bucket_prefix,
        &ctx.settings.cluster_id,
        &tenant.spec.policy_ref,
        &policy.spec,
        region,
        readers,
    )
}

struct JobArgs<'a> {
    job_name: &'a str,
    tenant_label: String,
    exports: &'a DesiredExports,
    evidence: &'a DesiredEvidence,
    signing_key: &'a str,
    refresh: Option<&'a str>,
}

fn build_job(r: &Review<'_>, spec: &JobArgs<'_>) -> Job {
    let settings = &r.ctx.settings;
    let labels = BTreeMap::from([
        (
            EXPORT_REQUEST_LABEL.to_owned(),
            deletion_request_label(&r.ns, &r.name),
        ),
        (
            super::job::TENANT_LABEL.to_owned(),
            spec.tenant_label.clone(),
        ),
    ]);
    let annotations = BTreeMap::from([(
        REQUEST_ANNOTATION.to_owned(),
        format!("{}/{}", r.ns, r.name),
    )]);
    let retention = spec.evidence.retention_days.to_string();
    let mut args = vec![
        "export",
        "--namespace",
        &r.ns,
        "--request",
        &r.name,
        "--records-namespace",
        &settings.jobs.namespace,
        "--cluster-id",
        &settings.cluster_id,
        "--export-bucket",
        &spec.exports.bucket,
        "--region",
        &spec.exports.region,
        "--evidence-bucket",
        &spec.evidence.bucket,
        "--signing-key",
        spec.signing_key,
        "--evidence-retention-days",
        &retention,
    ];
    if let Some(refresh) = spec.refresh {
        args.extend(["--refresh", refresh]);
    }
    super::job::build(
        r.ctx,
        super::job::Pod {
            name: spec.job_name,
            labels,
            annotations,
            service_account: &settings.jobs.export_service_account,
            container: "export",
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        },
    )
}

/// The Job's state in the request's phase (the Job itself writes Running and Succeeded).
fn mirror(r: &mut Review<'_>, job: &Job) {
    let status = job.status.clone().unwrap_or_default();
    let failed = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Failed" && c.status == "True");
    match r.status.phase {
        Some(ExportPhase::Succeeded | ExportPhase::Rejected | ExportPhase::Expired) => {}
        _ if failed => r.status.phase = Some(ExportPhase::Failed),
        Some(ExportPhase::Running) => {}
        _ if status.active.unwrap_or(0) > 0 => r.status.phase = Some(ExportPhase::Running),
        None => r.status.phase = Some(ExportPhase::Pending),
        _ => {}
    }
}

/// When the lifecycle rule removes the export; past it, the request is Expired and status no
/// longer points at the link Secret (whose links are dead by then: they never outlive it).
fn expiry(r: &mut Review<'_>, policy: &ResidencyPolicy) {
    let completed = r
        .status
        .progress
        .as_ref()
        .and_then(|p| p.completion_time.as_ref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let Some(completed) = completed else { return };
    let days = i64::from(policy.spec.export.retention_days);
    let Ok(expires) = completed.checked_add(SignedDuration::from_hours(24 * days)) else {
        return;
    };
    r.status.expires_at = Some(expires.to_string());
    if r.now > expires {
        r.status.phase = Some(ExportPhase::Expired);
        r.status.link = None;
    }
}

/// Copies a link the Job handed over into the request's Secret. The handover is removed only
/// once the status that records the copy is stored (a later reconcile), so a lost status write
/// never loses the link; returns whether a handover is left for that.
async fn take_link(r: &mut Review<'_>) -> Result<bool, Error> {
    let uid = r.req.uid().unwrap_or_default();
    let refresh = r.req.annotations().get(REFRESH_ANNOTATION).cloned();
    let stored = r.req.status.as_ref().and_then(|s| s.link.clone());
    // The export's own link first, then the latest refresh's.
    let mut candidates = vec![None];
    if refresh.is_some() {
        candidates.push(refresh);
    }
    let handoffs: Api<Secret> =
        Api::namespaced(r.ctx.client.clone(), &r.ctx.settings.jobs.namespace);
    let mut left = false;
    for candidate in candidates {
        let name = export_link_handoff_name(&uid, candidate.as_deref());
        let Some(handoff) = handoffs.get_opt(&name).await? else {
            continue;
        };
        let ours = handoff.labels().get(link::UID_LABEL) == Some(&uid);
        let data = handoff.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        let recorded = stored
            .as_ref()
            .is_some_and(|l| l.refresh == candidate && l.expires_at == text(link::EXPIRES_AT));
        // A first link a refresh already replaced is stale; one not of this request is none.
        let stale = candidate.is_none() && stored.as_ref().is_some_and(|l| l.refresh.is_some());
        if !ours || recorded || stale {
            handoffs.delete(&name, &DeleteParams::default()).await?;
            continue;
        }
        let secret_name = format!("{}-export-link", r.name);
        write_link_secret(r, &secret_name, &data).await?;
        r.status.link = Some(ExportLink {
            secret_name,
            expires_at: text(link::EXPIRES_AT),
            refresh: candidate.clone(),
        });
        left = true;
        let note = format!(
            "download link in Secret {}/{}-export-link, valid until {}",
            r.ns,
            r.name,
            text(link::EXPIRES_AT)
        );
        publish(r.ctx, r.req, EventType::Normal, "LinkReady", ACTION, note).await;
    }
    Ok(left)
}

/// The link Secret in the request's namespace, owned by the request (deleted with it).
async fn write_link_secret(
    r: &Review<'_>,
    name: &str,
    data: &BTreeMap<String, ByteString>,
) -> Result<(), Error> {
    let owner = OwnerReference {
        api_version: DataExportRequest::api_version(&()).into_owned(),
        kind: DataExportRequest::kind(&()).into_owned(),
        name: r.name.clone(),
        uid: r.req.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    };
    let wanted: BTreeMap<String, ByteString> =
        [link::ARCHIVE_URL, link::MANIFEST_URL, link::EXPIRES_AT]
            .iter()
            .filter_map(|k| data.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(r.ns.clone()),
            labels: Some(BTreeMap::from([(
                EXPORT_REQUEST_LABEL.to_owned(),
                deletion_request_label(&r.ns, &r.name),
            )])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(wanted),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    let secrets: Api<Secret> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    let params = PatchParams::apply("tenant-storage-operator").force();
    secrets.patch(name, &params, &Patch::Apply(&secret)).await?;
    Ok(())
}

fn report(r: &mut Review<'_>, deadline: Timestamp, done: bool, days: i32) {
    let job = r.status.job_name.clone().unwrap_or_default();
    let (reason, message) = match r.status.phase {
        Some(ExportPhase::Succeeded) => (
            "Succeeded",
            "the archive and its manifest are written and the export record is signed; the link is in status.link.secretName".to_owned(),
        ),
        Some(ExportPhase::Expired) => (
            "Expired",
            "the export's retention passed and the lifecycle rule removed it; file a new request for a new export".to_owned(),
        ),
        Some(ExportPhase::Failed) => (
            "JobFailed",
            format!("the export job {job} failed; its checkpoint is kept, delete the Job to retry from it"),
        ),
        _ => ("InProgress", "the export job has not finished".to_owned()),
    };
    let complete = if done {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    r.set("Complete", complete, reason, message);
    let overdue = !done && r.now > deadline;
    r.set(
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
        format!("the policy's export deadline ({days} days) ends at {deadline}"),
    );
}

/// The next look: soon while a link is awaited (its handover Secret triggers nothing), at the
/// deadline while running, at the expiry once done.
fn next_check(r: &Review<'_>, deadline: Timestamp, done: bool) -> Duration {
    let awaited = r.status.phase == Some(ExportPhase::Succeeded)
        && (r.status.link.is_none() || wanted_refresh(r).is_some());
    if awaited {
        return Duration::from_secs(5);
    }
    let at = if done {
        r.status
            .expires_at
            .as_ref()
            .and_then(|t| t.parse::<Timestamp>().ok())
    } else {
        Some(deadline)
    };
    let secs = at.map_or(300, |at| at.duration_since(r.now).as_secs().max(1));
    Duration::from_secs(u64::try_from(secs).unwrap_or(300).min(300))
}

async fn finish(
    r: &Review<'_>,
    api: &Api<DataExportRequest>,
    warning: Option<(String, String)>,
    requeue: Option<Duration>,
) -> Result<Action, Error> {
    if let Some(patch) = StatusPatch::between(r.req.status.as_ref(), &r.status)? {
        // The Job writes the phase too: only what this reconcile changed, onto the version it
        // read (a 409 requeues), so a finished request never moves backwards.
        patch
            .onto(r.req.resource_version())
            .send(api, &r.name)
            .await?;
        if let Some((reason, message)) = warning {
            publish(r.ctx, r.req, EventType::Warning, &reason, ACTION, message).await;
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Deleting a request stops its Jobs and removes any link not yet handed over; the link Secret
/// goes with the request (its owner), the export itself with the lifecycle rule.
async fn cleanup(req: &DataExportRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = req.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let selector = format!(
        "{EXPORT_REQUEST_LABEL}={}",
        deletion_request_label(&ns, &name)
    );
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for job in jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        jobs.delete(&job.name_any(), &params).await?;
    }
    let handoffs: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.jobs.namespace);
    let uid = req.uid().unwrap_or_default();
    let mut names = vec![export_link_handoff_name(&uid, None)];
    if let Some(refresh) = req.annotations().get(REFRESH_ANNOTATION) {
        names.push(export_link_handoff_name(&uid, Some(refresh)));
    }
    for handoff in names {
        if handoffs.get_opt(&handoff).await?.is_some() {
            handoffs.delete(&handoff, &DeleteParams::default()).await?;
        }
    }
    Ok(Action::await_change())
}
