//! TenantStorage reconciler: a short driver over its stages. Dereference (`dereference`),
//! decide (`decide`, pure) and apply the bucket and key over the cloud port (`storage`), the
//! workload role (`access`) or a customer's bucket (`delegation`), report (`report`); deletion
//! in `cleanup`.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use tracing::{instrument, warn};

mod access;
mod cleanup;
mod decide;
mod delegation;
mod dereference;
mod lockdown;
mod log_bucket;
mod record;
mod refusal;
mod release;
#[cfg(test)]
mod release_tests;
mod replica;
#[cfg(test)]
mod replica_tests;
mod report;
mod role;
#[cfg(test)]
mod role_tests;
mod storage;
#[cfg(test)]
mod storage_tests;

pub(crate) use self::log_bucket::Verified as VerifiedLogBuckets;
use self::record::Record;
use self::replica::ReplicaStep;
use self::report::{Report, refuse};
use self::storage::Step;
use super::conditions::{self, READY};
use super::{Context, Error, toolkit};
use crate::api::{
    ConditionStatus, ResidencyPolicy, ResidencyPolicySpec, StorageMode, TenantStorage,
};
use crate::plan::TenantIdentity;
use crate::plan::access::{DesiredRole, ObservedRole};
use crate::plan::principal::principal_patterns;
use crate::telemetry::TenantLabels;

/// The tenant role the storage stage decided, and the role as it was observed.
type DecidedRole = (DesiredRole, Option<ObservedRole>);

/// Finalizer that keeps a TenantStorage until its cloud resources are released or deleted.
pub const FINALIZER: &str = "storage.tenancy.dev/cleanup";
/// `"true"` stops reconciliation of one object (deletion still proceeds).
pub const PAUSED: &str = "storage.tenancy.dev/paused";
/// Any new value forces an immediate re-check of the cloud (the on-demand drift check); the
/// value acted upon is echoed in `status.lastRecheck`.
pub const RECHECK: &str = "storage.tenancy.dev/recheck";

const PAUSED_CONDITION: &str = "Paused";

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
    let ns = cached
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<TenantStorage> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache keeps a slim copy (see `slim`); the reconcile reads the whole object.
    let Some(ts) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let ts = Arc::new(ts);
    toolkit::reconcile_finalized(&ctx, &api, FINALIZER, ts, |event| async {
        match event {
            Finalizer::Apply(ts) => apply(&ts, &ctx, &api).await,
            Finalizer::Cleanup(ts) => {
                let action = cleanup::cleanup(&ts, &ctx, &api).await?;
                ctx.metrics.record_tenant(&tenant_key(&ts), None);
                ctx.own_writes.forget(&ts);
                ctx.schedule.forget(&tenant_key(&ts));
                ctx.slow_settings.forget(&tenant_key(&ts));
                Ok(action)
            }
        }
    })
    .await
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

/// The pipeline: dereference, decide and apply the storage stage, the role, report. Refusals
/// return early through `refuse`.
async fn provision(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
    report: &mut Report<'_>,
) -> Result<Action, Error> {
    let id = identity(ctx, ts)?;
    let policy = match dereference::policy(ctx, ts).await? {
        Ok(policy) => policy,
        Err(refusal) => return refused(report, ctx, api, (&id, None), refusal).await,
    };
    let policy_name = policy.name_any();
    report.status.jurisdiction = Some(policy.spec.jurisdiction.clone());
    if let Err(refusal) = dereference::namespace(ctx, &policy, &id.namespace).await? {
        return refused(report, ctx, api, (&id, Some(&policy)), refusal).await;
    }
    if ts.spec.mode == StorageMode::Delegated {
        return delegation::provision(ts, ctx, api, report, &policy_name, &policy.spec, &id).await;
    }
    let key = tenant_key(ts);
    let (outcome, role) = storage_stage(ts, ctx, api, report, &id, &policy).await?;
    let slow = outcome.read_slow_settings;
    if slow {
        ctx.slow_settings.read(&key);
    }
    let done = match outcome.step {
        Step::Provisioned(done) => done,
        Step::Refused(refusal) => {
            return refused(report, ctx, api, (&id, Some(&policy)), refusal).await;
        }
        Step::ReadAgain => return Ok(read_slow_settings_first(ctx, &key)),
    };
    report::announce(ctx, ts, &done).await;
    report.status.backup = super::backup::ensure(ctx, &policy, &done.desired.region).await?;
    let (wanted, observed) = role.unzip();
    let access = ts.spec.access.as_ref();
    let observed = observed.flatten();
    if let Some(refusal) =
        access::reconcile_role(ctx, ts, report, api, &id, wanted.as_ref(), observed, access).await?
    {
        return refuse(report, ctx, api, refusal).await;
    }
    report::provisioned(report, &done, &policy_name);
    let replicas = replica::Replicas {
        cloud: &ctx.cloud,
        iam: access::iam(ctx),
        named: ts.spec.replica_region.as_deref(),
        slow,
    };
    match replica_stage(ts, ctx, api, report, (&id, &policy), &replicas, &done).await? {
        ReplicaStep::ReadAgain => return Ok(read_slow_settings_first(ctx, &key)),
        step => report::replica(ctx, ts, report, &step).await,
    }
    report.save(api).await?;
    Ok(ctx.schedule.resync(&key))
}

/// The storage stage as the reconcile runs it: on the operator's cloud, with its marks in
/// status, the tenant role and a running purge decided through the cluster. Returns its outcome
/// and the role it decided (for the role stage).
async fn storage_stage(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
    report: &mut Report<'_>,
    id: &TenantIdentity,
    policy: &ResidencyPolicy,
) -> Result<(storage::Outcome, Option<DecidedRole>), Error> {
    let policy_name = policy.name_any();
    let now = report.now.clone();
    let tenant = stage_tenant(ts, ctx, id, (&policy_name, &policy.spec), &now);
    let mut role = access::ManagedRole {
        iam: access::iam(ctx),
        id,
        access: ts.spec.access.as_ref(),
        permissions_boundary: policy.spec.access.permissions_boundary_arn.clone(),
        fresh: reads_fresh(ts),
        services: access::ServiceRoles {
            replication: policy
                .spec
                .replication
                .region_for(ts.spec.replica_region.as_deref())
                .is_some()
                || report.status.replica.is_some(),
            backup: policy.spec.backup.enabled,
        },
        decided: None,
    };
    let deny_during_purge = policy.spec.deletion.deny_writes_during_purge;
    let mut purges = dereference::PurgeCheck {
        ctx,
        id,
        deny_during_purge,
        running: None,
    };
    let mut record = Record::of(&report.status);
    let mut ledger = report::StatusLedger { report, api };
    let cloud = &ctx.cloud;
    let outcome = storage::converge(
        cloud,
        &tenant,
        &mut record,
        &mut ledger,
        &mut role,
        &mut purges,
    )
    .await;
    record.write_into(&mut report.status);
    if let Some(running) = purges.running {
        report::purge(report, running.as_deref(), deny_during_purge);
    }
    Ok((outcome?, role.decided))
}

/// A refusal; one that came after the tenant was provisioned leaves its data where it is, every
/// copy locked down first.
async fn refused(
    report: &mut Report<'_>,
    ctx: &Context,
    api: &Api<TenantStorage>,
    (id, policy): (&TenantIdentity, Option<&ResidencyPolicy>),
    refusal: refusal::Refusal,
) -> Result<Action, Error> {
    let record = Record::of(&report.status);
    if refusal.after_the_fact() && record.claimed().is_some() {
        let policy_name = policy.map(ResourceExt::name_any);
        let mut allowed = ctx.settings.access.allowed_principals.clone();
        allowed.extend(
            record
                .access
                .iter()
                .flat_map(|a| principal_patterns(&a.role_arn)),
        );
        allowed.extend(record.replica.iter().flat_map(|r| {
            r.replication_role_arn
                .iter()
                .flat_map(|arn| principal_patterns(arn))
        }));
        let jurisdiction = report.status.jurisdiction.clone().unwrap_or_default();
        let tenant = lockdown::Refused {
            id,
            bucket_prefix: &ctx.settings.bucket_prefix,
            policy: policy_name.as_deref().zip(policy.map(|p| &p.spec)),
            jurisdiction: &jurisdiction,
            allowed_principals: allowed,
        };
        let corrected = lockdown::lock_down(&ctx.cloud, &tenant, &record).await?;
        report::locked_down(ctx, report, &tenant, &corrected).await;
    }
    refuse(report, ctx, api, refusal).await
}

/// The tenant as the storage and replica stages see it.
fn stage_tenant<'a>(
    ts: &'a TenantStorage,
    ctx: &'a Context,
    id: &'a TenantIdentity,
    (policy_name, policy): (&'a str, &'a ResidencyPolicySpec),
    now: &'a str,
) -> storage::Tenant<'a> {
    storage::Tenant {
        id,
        policy_name,
        policy,
        requested_region: ts.spec.region.as_deref(),
        bucket_prefix: &ctx.settings.bucket_prefix,
        slow_due: ctx.slow_settings.due(&tenant_key(ts), reads_fresh(ts)),
        now,
        log_buckets: &ctx.log_buckets,
        log_bucket_period: ctx.settings.resync_period,
    }
}

/// The replica stage as the reconcile runs it, its marks in status.
async fn replica_stage(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
    report: &mut Report<'_>,
    (id, policy): (&TenantIdentity, &ResidencyPolicy),
    replicas: &replica::Replicas<'_, crate::cloud::Cloud, crate::cloud::Iam>,
    done: &storage::Provisioned,
) -> Result<ReplicaStep, Error> {
    let policy_name = policy.name_any();
    let now = report.now.clone();
    let tenant = stage_tenant(ts, ctx, id, (&policy_name, &policy.spec), &now);
    let mut record = Record::of(&report.status);
    let mut ledger = report::StatusLedger { report, api };
    // Boxed: the stage's future is large, and the reconcile's would overflow a worker's stack.
    let step = Box::pin(replica::converge(
        replicas,
        &tenant,
        done,
        &mut record,
        &mut ledger,
    ))
    .await;
    record.write_into(&mut report.status);
    step
}

/// Who the tenant is, as far as naming and ownership go.
fn identity(ctx: &Context, ts: &TenantStorage) -> Result<TenantIdentity, Error> {
    Ok(TenantIdentity {
        cluster_id: ctx.settings.cluster_id.clone(),
        namespace: ts
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?,
        name: ts.name_any(),
    })
}
