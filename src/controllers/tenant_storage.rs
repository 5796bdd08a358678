//! TenantStorage reconciler: dereference policy, validate residency, observe, plan, apply,
//! report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

mod access;
mod delegation;

use super::conditions::{self, ENCRYPTED, PUBLIC_ACCESS_BLOCKED, READY, RESIDENCY_COMPLIANT};
use super::own_writes::OwnWrites;
use super::{Context, Error};
use crate::api::{
    ConditionStatus, DataDeletionRequest, DeletionPhase, DeletionPolicy, ResidencyPolicy,
    StorageMode, TenantStorage, TenantStorageStatus,
};
use crate::cloud::{BucketPresence, ObservedTags, Regional};
use crate::plan::access::managed_access_policy;
use crate::plan::{
    self, BucketChange, Desired, DesiredLogBucket, KeyChange, Ownership, TenantIdentity, tags,
};
use crate::policy;
use crate::telemetry::{SettingLabels, TenantLabels};

/// Finalizer that keeps a TenantStorage until its cloud resources are released or deleted.
pub const FINALIZER: &str = "storage.tenancy.dev/cleanup";
/// `"true"` stops reconciliation of one object (deletion still proceeds).
pub const PAUSED: &str = "storage.tenancy.dev/paused";
/// Any new value forces an immediate re-check of the cloud (the on-demand drift check); the
/// value acted upon is echoed in `status.lastRecheck`.
pub const RECHECK: &str = "storage.tenancy.dev/recheck";

const PAUSED_CONDITION: &str = "Paused";
const DELETION_IN_PROGRESS: &str = "DeletionInProgress";
const KIND: &str = "TenantStorage";

/// Whether this reconcile must read the cloud itself rather than a shared snapshot: the spec
/// changed since it was last handled, or a recheck was asked and not handled yet.
fn reads_fresh(ts: &TenantStorage) -> bool {
    let status = ts.status.as_ref();
    let handled = status.and_then(|s| s.last_recheck.as_ref());
    let recheck = ts
        .annotations()
        .get(RECHECK)
        .is_some_and(|asked| Some(asked) != handled);
    recheck || status.and_then(|s| s.observed_generation) != ts.metadata.generation
}

#[instrument(skip_all, fields(namespace = cached.namespace().unwrap_or_default(), tenant = cached.name_any()))]
pub async fn reconcile(cached: Arc<TenantStorage>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = cached
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<TenantStorage> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache keeps a slim copy (see `slim`); the reconcile reads the whole object.
    let Some(ts) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let result = finalizer(&api, FINALIZER, Arc::new(ts), |event| async {
        match event {
            Finalizer::Apply(ts) => apply(&ts, &ctx, &api).await,
            Finalizer::Cleanup(ts) => {
                let action = cleanup(&ts, &ctx, &api).await?;
                ctx.metrics.record_tenant(&tenant_key(&ts), None);
                ctx.own_writes.forget(&ts);
                ctx.schedule.forget(&tenant_key(&ts));
                ctx.slow_settings.forget(&tenant_key(&ts));
                Ok(action)
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.reason(),
    };
    ctx.metrics
        .count_reconcile(KIND, &outcome, started.elapsed().as_secs_f64());
    result
}

/// What a reconcile is writing into status, compared with what was there.
struct Report<'a> {
    ts: &'a TenantStorage,
    own: &'a OwnWrites,
    status: TenantStorageStatus,
    generation: i64,
    now: String,
    /// The object's resourceVersion as this reconcile last saw it (its own writes included).
    resource_version: Option<String>,
}

impl<'a> Report<'a> {
    fn new(ts: &'a TenantStorage, own: &'a OwnWrites) -> Self {
        let mut status = ts.status.clone().unwrap_or_default();
        let generation = ts.metadata.generation.unwrap_or_default();
        status.observed_generation = Some(generation);
        Report {
            ts,
            own,
            status,
            generation,
            now: k8s_openapi::jiff::Timestamp::now().to_string(),
            resource_version: ts.resource_version(),
        }
    }

    fn set(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            &self.now,
        );
    }

    /// Ready=False with `reason`; the other conditions say they could not be evaluated, unless
    /// already decided in this reconcile.
    fn not_ready(&mut self, reason: &str, message: &str) {
        for type_ in [RESIDENCY_COMPLIANT, ENCRYPTED, PUBLIC_ACCESS_BLOCKED] {
            if conditions::reason(&self.status.conditions, type_).is_none() {
                self.set(
                    type_,
                    ConditionStatus::Unknown,
                    reason,
                    "not evaluated: see the Ready condition",
                );
            }
        }
        self.set(READY, ConditionStatus::False, reason, message);
    }

    fn previous_ready_reason(&self) -> Option<&str> {
        self.ts
            .status
            .as_ref()
            .and_then(|s| conditions::reason(&s.conditions, READY))
    }

    async fn save(&mut self, api: &Api<TenantStorage>) -> Result<(), Error> {
        self.write(api, false).await
    }

    /// Saves only if nobody else changed the object since this reconcile observed it (409
    /// otherwise): for a write-ahead marker, which must not be decided from a stale view (a
    /// replica that just took over may not have seen the previous leader's marker yet).
    async fn save_if_unchanged(&mut self, api: &Api<TenantStorage>) -> Result<(), Error> {
        self.write(api, true).await
    }

    async fn write(&mut self, api: &Api<TenantStorage>, precondition: bool) -> Result<(), Error> {
        if self.ts.status.as_ref() == Some(&self.status) {
            return Ok(());
        }
        let old = serde_json::to_value(&self.ts.status).unwrap_or_default();
        let new = serde_json::to_value(&self.status).unwrap_or_default();
        let mut patch = json!({ "status": super::merge_patch(&old, &new) });
        if precondition {
            patch["metadata"] = json!({"resourceVersion": self.resource_version});
        }
        let write = self.own.begin(self.ts);
        let saved = api
            .patch_status(
                &self.ts.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        self.resource_version = saved.resource_version();
        write.answered(saved.resource_version());
        Ok(())
    }
}

async fn publish(
    ctx: &Context,
    ts: &TenantStorage,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ts.object_ref(&())).await {
        warn!(error = %e, reason, "could not record event");
    }
}

/// Records a refusal: Ready=False with the reason, a Warning event the first time, no cloud
/// call beyond what was needed to find out.
async fn refuse(
    report: &mut Report<'_>,
    ctx: &Context,
    api: &Api<TenantStorage>,
    residency: Option<bool>,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    match residency {
        Some(false) => report.set(
            RESIDENCY_COMPLIANT,
            ConditionStatus::False,
            reason,
            message.clone(),
        ),
        Some(true) => report.set(
            RESIDENCY_COMPLIANT,
            ConditionStatus::True,
            "RegionAllowed",
            "the region is allowed by the policy",
        ),
        None => {}
    }
    let first_time = report.previous_ready_reason() != Some(reason);
    report.not_ready(reason, &message);
    report.save(api).await?;
    if first_time {
        warn!(reason, %message, "refusing to provision");
        publish(
            ctx,
            report.ts,
            EventType::Warning,
            reason,
            "Validate",
            message,
        )
        .await;
    }
    Ok(ctx.schedule.resync(&tenant_key(report.ts)))
}

async fn apply(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
) -> Result<Action, Error> {
    let mut report = Report::new(ts, &ctx.own_writes);
    if ts.annotations().get(PAUSED).map(String::as_str) == Some("true") {
        report.set(
            PAUSED_CONDITION,
            ConditionStatus::True,
            "PausedByAnnotation",
            format!("reconciliation is paused by the annotation {PAUSED}=true: nothing is read or changed in AWS; remove the annotation to resume"),
        );
        report.save(api).await?;
        return Ok(Action::await_change());
    }
    if conditions::reason(&report.status.conditions, PAUSED_CONDITION).is_some() {
        report.set(
            PAUSED_CONDITION,
            ConditionStatus::False,
            "Resumed",
            "reconciliation resumed",
        );
    }
    let result = match provision(ts, ctx, api, &mut report).await {
        Ok(action) => Ok(action),
        Err(e) => {
            // Say why in status before backing off; the error itself drives the retry.
            report.not_ready(&e.reason(), &e.to_string());
            if let Err(save) = report.save(api).await {
                warn!(error = %save, "could not record failure in status");
            }
            Err(e)
        }
    };
    let ready = report.status.conditions.iter().find(|c| c.type_ == READY);
    ctx.metrics.record_tenant(
        &tenant_key(ts),
        ready.map(|c| TenantLabels {
            ready: format!("{:?}", c.status),
            reason: c.reason.clone(),
        }),
    );
    result
}

/// A resync that skipped the slow settings found something to change: it stops before any
/// write and runs again at once, reading everything.
fn read_slow_settings_first(ctx: &Context, tenant: &str) -> Action {
    ctx.slow_settings.forget(tenant);
    Action::requeue(Duration::ZERO)
}

/// A tenant's key in the operator's per-tenant state (schedule, slow settings, own writes,
/// metrics): `namespace/name`.
pub(super) fn tenant_key(ts: &TenantStorage) -> String {
    ref_key(&ObjectRef::from_obj(ts))
}

pub(super) fn ref_key(tenant: &ObjectRef<TenantStorage>) -> String {
    format!(
        "{}/{}",
        tenant.namespace.as_deref().unwrap_or_default(),
        tenant.name
    )
}

/// The tenant a [`tenant_key`] names.
pub(super) fn key_ref(key: &str) -> Option<ObjectRef<TenantStorage>> {
    let (ns, name) = key.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// The pipeline: dereference, validate, observe, plan, apply, report. Refusals return early
/// through `refuse`.
async fn provision(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
    report: &mut Report<'_>,
) -> Result<Action, Error> {
    let ns = ts
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = ts.name_any();

    // Dereference.
    let policies: Api<ResidencyPolicy> = Api::all(ctx.client.clone());
    let Some(policy) = policies.get_opt(&ts.spec.policy_ref).await? else {
        let message = format!(
            "ResidencyPolicy {:?} (spec.policyRef) does not exist: create it or point spec.policyRef at an existing policy (kubectl get rp)",
            ts.spec.policy_ref
        );
        return refuse(report, ctx, api, None, "PolicyNotFound", message).await;
    };
    let policy_name = policy.name_any();
    report.status.jurisdiction = Some(policy.spec.jurisdiction.clone());

    // Validate residency before any cloud call.
    if policy.spec.namespace_selector.is_some() {
        let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
        let labels = namespaces
            .get(&ns)
            .await?
            .metadata
            .labels
            .unwrap_or_default();
        if let Err(e) = policy::check_namespace(&policy_name, &policy.spec, &ns, &labels) {
            return refuse(report, ctx, api, Some(false), e.reason(), e.to_string()).await;
        }
    }
    let id = TenantIdentity {
        cluster_id: ctx.settings.cluster_id.clone(),
        namespace: ns,
        name,
    };
    if ts.spec.mode == StorageMode::Delegated {
        return delegation::provision(ts, ctx, api, report, &policy_name, &policy.spec, &id).await;
    }
    let recorded = report.status.region.clone();
    let mut region = match policy::resolve_region(
        &policy_name,
        &policy.spec,
        ts.spec.region.as_deref(),
        recorded.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => return refuse(report, ctx, api, Some(false), e.reason(), e.to_string()).await,
    };
    let mut desired = Desired::new(
        &ctx.settings.bucket_prefix,
        &id,
        &policy_name,
        &policy.spec,
        region.clone(),
    );
    let claimed = report.status.bucket_name.as_deref() == Some(desired.bucket.as_str());
    if let Some(recorded_bucket) = report.status.bucket_name.clone().filter(|_| !claimed) {
        // The name is derived from --bucket-prefix and --cluster-id: a changed setting must not
        // silently switch the tenant to a new, empty bucket.
        let message = format!(
            "this tenant's data is in bucket {recorded_bucket}, but the operator's settings now name it {}: --bucket-prefix or --cluster-id changed. Restore the previous settings; the operator never switches a tenant to another bucket",
            desired.bucket
        );
        return refuse(report, ctx, api, None, "BucketNameChanged", message).await;
    }

    // Observe the bucket: where it is and whose it is. The tags of a bucket claimed here are
    // read only when the slow settings are due; any planned change makes them due.
    let mut cloud = ctx.cloud.region(&region);
    let known_here = claimed && recorded.as_deref() == Some(region.as_str());
    let tenant = tenant_key(ts);
    let slow = !known_here || ctx.slow_settings.due(&tenant, reads_fresh(ts));
    let existing_tags = if !slow {
        Some(desired.tags.clone())
    } else if known_here {
        match cloud.bucket_tags(&desired.bucket).await? {
            ObservedTags::Gone => None,
            ObservedTags::Tags(t) => Some(t),
        }
    } else {
        match cloud.bucket_presence(&desired.bucket).await? {
            BucketPresence::Absent => None,
            BucketPresence::OtherAccount => {
                let message = format!(
                    "bucket {} exists but HEAD is forbidden: it belongs to another AWS account (choose another --bucket-prefix or TenantStorage name), or the operator lacks s3:ListBucket on it. It is not touched",
                    desired.bucket
                );
                return refuse(report, ctx, api, None, "BucketConflict", message).await;
            }
            BucketPresence::Ours { region: actual } => {
                if let Err(e) = policy::check_actual_region(&policy_name, &policy.spec, &actual) {
                    return refuse(report, ctx, api, Some(false), e.reason(), e.to_string()).await;
                }
                if actual != region {
                    if ts.spec.region.is_some() {
                        let message = format!(
                            "bucket {} already exists in {actual}, but spec.region is {region}; data is never moved: set spec.region to {actual} or remove it",
                            desired.bucket
                        );
                        return refuse(report, ctx, api, Some(false), "RegionMismatch", message)
                            .await;
                    }
                    region = actual;
                    desired = Desired::new(
                        &ctx.settings.bucket_prefix,
                        &id,
                        &policy_name,
                        &policy.spec,
                        region.clone(),
                    );
                    cloud = ctx.cloud.region(&region);
                }
                match cloud.bucket_tags(&desired.bucket).await? {
                    ObservedTags::Gone => None,
                    ObservedTags::Tags(t) => Some(t),
                }
            }
        }
    };
    if let Some(seen) = &existing_tags
        && let Ownership::Foreign(why) = plan::ownership(seen, &id, claimed)
    {
        let message = format!(
            "bucket {} already exists and is not this tenant's: {why}. The operator never modifies or deletes it; delete this TenantStorage or use another name",
            desired.bucket
        );
        return refuse(report, ctx, api, None, "BucketConflict", message).await;
    }
    if let Some(why) = existing_tags
        .as_ref()
        .and_then(|seen| plan::released_under_another_policy(seen, &policy_name))
    {
        let message = format!(
            "bucket {} is not adopted: {why}. Use that policy, or another TenantStorage name",
            desired.bucket
        );
        return refuse(
            report,
            ctx,
            api,
            None,
            "ReleasedUnderAnotherPolicy",
            message,
        )
        .await;
    }
    let adopting = existing_tags.is_some() && !claimed;

    // Claim the name before creating anything, so a restart mid-way recognises its own work.
    report.status.region = Some(region.clone());
    report.status.bucket_name = Some(desired.bucket.clone());
    report.status.bucket_arn = Some(desired.bucket_arn());
    report.status.kms_key_alias = Some(desired.key_alias.clone());
    report.set(
        RESIDENCY_COMPLIANT,
        ConditionStatus::True,
        "RegionAllowed",
        format!(
            "{region} is allowed by ResidencyPolicy {policy_name} ({})",
            policy.spec.jurisdiction
        ),
    );
    if !claimed {
        report.not_ready(
            "Provisioning",
            &format!("creating bucket {} in {region}", desired.bucket),
        );
        report.save(api).await?;
    }

    // Key first: the bucket's encryption and policy name it.
    let key = cloud.observe_key(&desired.key_alias, slow).await?;
    if let Some(key) = &key
        && report.status.kms_key_arn.as_deref() != Some(key.arn.as_str())
    {
        // First sight of this key (or the alias was repointed): it must carry our tags.
        let key_tags = cloud.key_tags(&key.key_id).await?;
        if let Ownership::Foreign(why) = plan::ownership(&key_tags, &id, false) {
            let message = format!(
                "KMS alias {} points at key {}, which is not this tenant's: {why}. The operator does not use or delete it; point the alias back at the tenant's key or delete the alias",
                desired.key_alias, key.arn
            );
            report.set(
                ENCRYPTED,
                ConditionStatus::False,
                "KeyConflict",
                message.clone(),
            );
            return refuse(report, ctx, api, None, "KeyConflict", message).await;
        }
    }
    let key_changes = match plan::key_changes(key.as_ref()) {
        Ok(changes) => changes,
        Err(unusable) => {
            let message = format!(
                "KMS key {} is {}; the operator does not re-enable a key someone disabled or scheduled for deletion. Enable it (or cancel its deletion) in KMS if that was a mistake",
                desired.key_alias, unusable.state
            );
            report.set(
                ENCRYPTED,
                ConditionStatus::False,
                "KeyNotUsable",
                message.clone(),
            );
            return refuse(report, ctx, api, None, "KeyNotUsable", message).await;
        }
    };
    if !slow && !key_changes.is_empty() {
        return Ok(read_slow_settings_first(ctx, &tenant));
    }
    if slow {
        ctx.slow_settings.read(&tenant);
    }
    let existing = key.as_ref().map(|k| (k.key_id.clone(), k.arn.clone()));
    let creating_key = key_changes.contains(&KeyChange::CreateKey);
    // A key creation that was started and never confirmed may have left a key without its
    // alias: only then is the region searched for it (an expensive listing).
    let interrupted = creating_key && report.status.key_creation_started.is_some();
    if creating_key && !interrupted {
        report.status.key_creation_started = Some(report.now.clone());
        report.save_if_unchanged(api).await?;
    }
    let key_arn = apply_key_changes(
        &cloud,
        &desired,
        existing,
        &key_changes,
        interrupted.then_some(&id),
    )
    .await?;
    report.status.key_creation_started = None;
    report.status.kms_key_arn = Some(key_arn.clone());

    // A whole-tenant purge in progress: shown in status and, if the policy says so, no new
    // writes meanwhile.
    let purging = whole_tenant_purge_in_progress(ctx, &id).await?;
    desired.deny_writes = purging.is_some() && policy.spec.deletion.deny_writes_during_purge;
    match &purging {
        Some(request) => report.set(
            DELETION_IN_PROGRESS,
            ConditionStatus::True,
            "WholeTenantPurge",
            format!(
                "DataDeletionRequest {request} is deleting all data{}",
                if desired.deny_writes {
                    "; new writes are refused until it ends"
                } else {
                    ""
                }
            ),
        ),
        None if conditions::reason(&report.status.conditions, DELETION_IN_PROGRESS).is_some() => {
            report.set(
                DELETION_IN_PROGRESS,
                ConditionStatus::False,
                "NoDeletionRunning",
                "no whole-tenant deletion is running",
            )
        }
        None => {}
    }

    // The access-log bucket, in the same region, before the tenant bucket points at it.
    if desired.logging.is_some() {
        let logs = DesiredLogBucket::new(
            &ctx.settings.bucket_prefix,
            &ctx.settings.cluster_id,
            &policy_name,
            &policy.spec,
            &region,
        );
        ensure_log_bucket(ctx, &cloud, &logs).await?;
    }

    // Who may reach the data: the tenant's role, the operator, admins; nobody else. A role
    // name held by someone else is refused before it could appear in the bucket policy.
    let (role, observed_role) = match &ts.spec.access {
        Some(spec) => match access::wanted_role(
            ctx,
            &id,
            desired.partition,
            &desired.tags,
            spec,
            Some(managed_access_policy(
                spec.level,
                &desired.bucket_arn(),
                &key_arn,
                &region,
            )),
            policy.spec.access.permissions_boundary_arn.clone(),
            reads_fresh(ts),
        )
        .await?
        {
            Ok((role, seen)) => (Some(role), seen),
            Err(r) => return refuse(report, ctx, api, None, r.reason, r.message).await,
        },
        None => (None, None),
    };
    desired.allowed_principals = access::allowed_principals(ctx, role.as_ref());

    // Then the bucket.
    let shape = desired.shape(&key_arn);
    let observed = match existing_tags {
        Some(t) => match cloud.observe_bucket(&desired.bucket, t, &shape).await {
            Ok(observed) => Some(observed),
            // Gone since it was last seen: the tags, read next, say so.
            Err(e) if !slow && e.is_not_found(&["NoSuchBucket"]) => {
                return Ok(read_slow_settings_first(ctx, &tenant));
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let bucket_changes = plan::bucket_changes(&shape, observed.as_ref());
    if !slow && !bucket_changes.is_empty() {
        return Ok(read_slow_settings_first(ctx, &tenant));
    }
    for change in &bucket_changes {
        if *change == BucketChange::Create {
            if !cloud.create_bucket(&desired.bucket).await?
                && let ObservedTags::Tags(seen) = cloud.bucket_tags(&desired.bucket).await?
                && let Ownership::Foreign(why) = plan::ownership(&seen, &id, true)
            {
                let message = format!(
                    "bucket {} appeared while it was being created and is not this tenant's: {why}. It is not touched",
                    desired.bucket
                );
                return refuse(report, ctx, api, None, "BucketConflict", message).await;
            }
            continue;
        }
        cloud.apply_bucket_change(&desired.bucket, change).await?;
    }
    announce(
        ctx,
        ts,
        &desired,
        &key_arn,
        observed.is_some(),
        adopting,
        &key_changes,
        &bucket_changes,
    )
    .await;

    if let Some(refusal) = access::reconcile_role(
        ctx,
        ts,
        report,
        api,
        &id,
        role.as_ref(),
        observed_role,
        ts.spec.access.as_ref(),
    )
    .await?
    {
        return refuse(report, ctx, api, None, refusal.reason, refusal.message).await;
    }

    report.set(
        ENCRYPTED,
        ConditionStatus::True,
        "TenantKey",
        format!("default encryption SSE-KMS with the tenant key {key_arn}, Bucket Keys on, automatic rotation on; other keys and weaker encryption are denied"),
    );
    report.set(
        PUBLIC_ACCESS_BLOCKED,
        ConditionStatus::True,
        "AllBlocked",
        "all four Block Public Access settings on; ACLs disabled (BucketOwnerEnforced)",
    );
    report.status.last_recheck = ts.annotations().get(RECHECK).cloned();
    report.set(
        READY,
        ConditionStatus::True,
        "Provisioned",
        format!(
            "bucket {} in {region} matches ResidencyPolicy {policy_name}",
            desired.bucket
        ),
    );
    report.save(api).await?;
    Ok(ctx.schedule.resync(&tenant_key(ts)))
}

async fn apply_key_changes(
    cloud: &Regional,
    desired: &Desired,
    existing: Option<(String, String)>,
    changes: &[KeyChange],
    orphan_of: Option<&TenantIdentity>,
) -> Result<String, Error> {
    let (mut key_id, mut arn) = existing.unwrap_or_default();
    for change in changes {
        match change {
            KeyChange::CreateKey => {
                let orphan = match orphan_of {
                    Some(id) => cloud.find_tagged_key(&id.tags()).await?,
                    None => None,
                };
                (key_id, arn) = match orphan {
                    Some(found) => {
                        info!(arn = %found.1, "adopting the KMS key of an interrupted creation");
                        found
                    }
                    None => {
                        cloud
                            .create_key(&desired.key_description(), &desired.tags)
                            .await?
                    }
                };
                info!(%arn, "tenant KMS key ready");
            }
            KeyChange::CreateAlias => cloud.create_alias(&desired.key_alias, &key_id).await?,
            KeyChange::EnableRotation => cloud.enable_rotation(&key_id).await?,
        }
    }
    Ok(arn)
}

/// The name of a whole-tenant purge request that is accepted and not finished, if any.
async fn whole_tenant_purge_in_progress(
    ctx: &Context,
    id: &TenantIdentity,
) -> Result<Option<String>, Error> {
    let requests: Api<DataDeletionRequest> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let running = requests
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|r| {
            r.spec.tenant_storage_ref.name == id.name
                && r.spec
                    .tenant_storage_ref
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == id.namespace)
                && r.spec.scope.is_whole_tenant()
                && r.spec.method.purges()
                && !r.spec.dry_run
                && r.metadata.deletion_timestamp.is_none()
                && matches!(
                    r.status.as_ref().and_then(|s| s.phase),
                    None | Some(DeletionPhase::Pending | DeletionPhase::Running)
                )
        });
    Ok(running.map(|r| r.name_any()))
}

/// Creates or corrects the access-log bucket of a policy in a region, at most once per resync
/// period (it is shared by every tenant of that policy there). Never deleted by the operator:
/// it holds the audit trail.
async fn ensure_log_bucket(
    ctx: &Context,
    cloud: &Regional,
    logs: &DesiredLogBucket,
) -> Result<(), Error> {
    let mut verified = ctx.log_buckets.lock().await;
    if verified
        .get(&logs.bucket)
        .is_some_and(|at| at.elapsed() < ctx.settings.resync_period)
    {
        return Ok(());
    }
    let shape = logs.shape();
    let observed = match cloud.bucket_presence(&logs.bucket).await? {
        BucketPresence::Absent => None,
        BucketPresence::OtherAccount => {
            return Err(Error::LogBucketConflict {
                bucket: logs.bucket.clone(),
                why: "it belongs to another AWS account".into(),
            });
        }
        BucketPresence::Ours { region } if region != logs.region => {
            return Err(Error::LogBucketConflict {
                bucket: logs.bucket.clone(),
                why: format!("it is in {region}, not {}", logs.region),
            });
        }
        BucketPresence::Ours { .. } => match cloud.bucket_tags(&logs.bucket).await? {
            ObservedTags::Gone => None,
            ObservedTags::Tags(seen) => {
                // No ownership tags at all: a creation of ours interrupted before tagging (the
                // name hashes our cluster id, policy and region, and HEAD proved it is in our
                // account). Tags naming anyone else: not ours.
                let untagged = !seen.keys().any(|k| k.starts_with("tenancy.dev/"));
                let ours = untagged
                    || [tags::MANAGED_BY, tags::CLUSTER, tags::ROLE]
                        .iter()
                        .all(|k| seen.get(*k) == logs.tags.get(*k));
                if !ours {
                    return Err(Error::LogBucketConflict {
                        bucket: logs.bucket.clone(),
                        why: "its tags do not say it is this operator's access-log bucket".into(),
                    });
                }
                Some(cloud.observe_bucket(&logs.bucket, seen, &shape).await?)
            }
        },
    };
    for change in plan::bucket_changes(&shape, observed.as_ref()) {
        if change == BucketChange::Create {
            cloud.create_bucket(&logs.bucket).await?;
        } else {
            cloud.apply_bucket_change(&logs.bucket, &change).await?;
        }
        info!(bucket = %logs.bucket, %change, "access-log bucket");
    }
    verified.insert(logs.bucket.clone(), std::time::Instant::now());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn announce(
    ctx: &Context,
    ts: &TenantStorage,
    desired: &Desired,
    key_arn: &str,
    existed: bool,
    adopting: bool,
    key_changes: &[KeyChange],
    bucket_changes: &[BucketChange],
) {
    if !existed {
        let note = format!(
            "created bucket {} in {} encrypted with {key_arn}",
            desired.bucket, desired.region
        );
        info!(bucket = %desired.bucket, region = %desired.region, "provisioned");
        publish(ctx, ts, EventType::Normal, "Provisioned", "Create", note).await;
        return;
    }
    if adopting {
        let note = format!("adopted bucket {} left by an earlier run", desired.bucket);
        publish(ctx, ts, EventType::Normal, "Adopted", "Adopt", note).await;
    }
    let mut restored: Vec<&str> = bucket_changes.iter().map(BucketChange::setting).collect();
    if key_changes.contains(&KeyChange::EnableRotation)
        && !key_changes.contains(&KeyChange::CreateKey)
    {
        restored.push("keyRotation");
    }
    if key_changes.contains(&KeyChange::CreateKey) {
        restored.push("kmsKey");
    }
    if !restored.is_empty() && !adopting {
        let what = format!("bucket {}", desired.bucket);
        drift_corrected(ctx, ts, &restored, &what).await;
    }
}

/// Records settings of an existing resource (`what`) put back after someone else changed them:
/// a log line, a `DriftCorrected` warning and the `drift_corrected` metric.
async fn drift_corrected(ctx: &Context, ts: &TenantStorage, restored: &[&str], what: &str) {
    for setting in restored {
        ctx.metrics
            .drift_corrected
            .get_or_create(&SettingLabels {
                setting: (*setting).to_owned(),
            })
            .inc();
    }
    warn!(restored = ?restored, "drift corrected");
    let note = format!("restored {} of {what}", restored.join(", "));
    publish(
        ctx,
        ts,
        EventType::Warning,
        "DriftCorrected",
        "Restore",
        note,
    )
    .await;
}

/// Deletion: `Retain` releases, `Delete` removes an empty bucket and retires the key.
async fn cleanup(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
) -> Result<Action, Error> {
    let status = ts.status.clone().unwrap_or_default();
    let id = TenantIdentity {
        cluster_id: ctx.settings.cluster_id.clone(),
        namespace: ts
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?,
        name: ts.name_any(),
    };
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
                let purging = whole_tenant_purge_in_progress(ctx, &id).await?;
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
