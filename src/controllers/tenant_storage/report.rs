//! What a reconcile tells the user: the status it writes (only what changed, with the
//! stages' write-ahead marks), refusals, events and the drift metric.

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::lockdown::{Corrected, Refused};
use super::record::{Ledger, Mark, Record};
use super::refusal::{Refusal, Verdict};
use super::replica::ReplicaStep;
use super::storage::Provisioned;
use super::{RECHECK, tenant_key};
use crate::api::{ConditionStatus, RefusedTenantAccess, TenantStorage, TenantStorageStatus};
use crate::controllers::conditions::{
    self, ENCRYPTED, PUBLIC_ACCESS_BLOCKED, READY, RESIDENCY_COMPLIANT,
};
use crate::controllers::own_writes::OwnWrites;
use crate::controllers::toolkit::{StatusPatch, publish};
use crate::controllers::{Context, Error};
use crate::plan::{BucketChange, DefaultEncryption, KeyChange};
use crate::telemetry::SettingLabels;

/// Condition: the tenant's replica is in shape and receiving every write.
const REPLICATED: &str = "Replicated";

/// Condition: a tenant refused after the fact has its data locked down where it is.
const LOCKED_DOWN: &str = "LockedDown";

/// Condition: a whole-tenant deletion runs (and whether it refuses new writes).
const DELETION_IN_PROGRESS: &str = "DeletionInProgress";

/// What a reconcile is writing into status, compared with what was there.
pub(super) struct Report<'a> {
    pub ts: &'a TenantStorage,
    own: &'a OwnWrites,
    pub status: TenantStorageStatus,
    generation: i64,
    pub now: String,
    /// The object's resourceVersion as this reconcile last saw it (its own writes included).
    resource_version: Option<String>,
}

impl<'a> Report<'a> {
    pub fn new(ts: &'a TenantStorage, own: &'a OwnWrites) -> Self {
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

    pub fn set(
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
    pub fn not_ready(&mut self, reason: &str, message: &str) {
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

    pub fn previous_ready_reason(&self) -> Option<&str> {
        self.ts
            .status
            .as_ref()
            .and_then(|s| conditions::reason(&s.conditions, READY))
    }

    pub async fn save(&mut self, api: &Api<TenantStorage>) -> Result<(), Error> {
        self.write(api, false).await
    }

    /// Saves only if nobody else changed the object since this reconcile observed it (409
    /// otherwise): for a write-ahead marker, which must not be decided from a stale view (a
    /// replica that just took over may not have seen the previous leader's marker yet).
    pub async fn save_if_unchanged(&mut self, api: &Api<TenantStorage>) -> Result<(), Error> {
        self.write(api, true).await
    }

    async fn write(&mut self, api: &Api<TenantStorage>, precondition: bool) -> Result<(), Error> {
        let Some(mut patch) = StatusPatch::between(self.ts.status.as_ref(), &self.status)? else {
            return Ok(());
        };
        if precondition {
            patch = patch.onto(self.resource_version.clone());
        }
        let write = self.own.begin(self.ts);
        let saved = patch.send(api, &self.ts.name_any()).await?;
        self.resource_version = saved.resource_version();
        write.answered(saved.resource_version());
        Ok(())
    }
}

/// Records a refusal: Ready=False with the reason (and the condition it is about), a Warning
/// event the first time, no cloud call beyond what was needed to find out.
pub(super) async fn refuse(
    report: &mut Report<'_>,
    ctx: &Context,
    api: &Api<TenantStorage>,
    refusal: Refusal,
) -> Result<Action, Error> {
    let reason = refusal.reason();
    let message = refusal.to_string();
    match refusal.verdict() {
        Verdict::Residency => report.set(
            RESIDENCY_COMPLIANT,
            ConditionStatus::False,
            reason,
            message.clone(),
        ),
        Verdict::Encryption => {
            report.set(ENCRYPTED, ConditionStatus::False, reason, message.clone())
        }
        Verdict::None => {}
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

/// The stages' marks, stored in the TenantStorage status.
pub(super) struct StatusLedger<'r, 'a> {
    pub report: &'r mut Report<'a>,
    pub api: &'r Api<TenantStorage>,
}

impl Ledger for StatusLedger<'_, '_> {
    async fn write(&mut self, record: &Record, mark: Mark<'_>) -> Result<(), Error> {
        record.write_into(&mut self.report.status);
        match mark {
            Mark::Claim {
                first,
                policy,
                jurisdiction,
            } => {
                let region = record.region.as_deref().unwrap_or_default();
                self.report.set(
                    RESIDENCY_COMPLIANT,
                    ConditionStatus::True,
                    "RegionAllowed",
                    format!("{region} is allowed by ResidencyPolicy {policy} ({jurisdiction})"),
                );
                if first {
                    let bucket = record.bucket_name.as_deref().unwrap_or_default();
                    let creating = format!("creating bucket {bucket} in {region}");
                    self.report.not_ready("Provisioning", &creating);
                    self.report.save(self.api).await?;
                }
                Ok(())
            }
            Mark::KeyCreationStarted => self.report.save_if_unchanged(self.api).await,
            Mark::RoleCreationStarted | Mark::ReplicaClaimed => self.report.save(self.api).await,
        }
    }
}

/// Events for what the storage stage created, adopted or restored.
pub(super) async fn announce(ctx: &Context, ts: &TenantStorage, done: &Provisioned) {
    let Provisioned {
        desired,
        encryption,
        existed,
        adopting,
        key_changes,
        bucket_changes,
    } = done;
    let (existed, adopting) = (*existed, *adopting);
    if !existed {
        let with = match encryption {
            DefaultEncryption::Kms(key_arn) => key_arn.as_str(),
            DefaultEncryption::S3Managed => "S3-managed keys (SSE-S3, AES-256)",
        };
        let note = format!(
            "created bucket {} in {} encrypted with {with}",
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
pub(super) async fn drift_corrected(
    ctx: &Context,
    ts: &TenantStorage,
    restored: &[&str],
    what: &str,
) {
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

/// Shows a running whole-tenant purge, and whether it refuses new writes meanwhile.
pub(super) fn purge(report: &mut Report<'_>, request: Option<&str>, deny_writes: bool) {
    match request {
        Some(request) => report.set(
            DELETION_IN_PROGRESS,
            ConditionStatus::True,
            "WholeTenantPurge",
            format!(
                "DataDeletionRequest {request} is deleting all data{}",
                if deny_writes {
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
}

/// Everything is in shape: the conditions say what that means.
pub(super) fn provisioned(report: &mut Report<'_>, done: &Provisioned, policy: &str) {
    let Provisioned {
        desired,
        encryption,
        ..
    } = done;
    let (reason, message) = match encryption {
        DefaultEncryption::Kms(key_arn) => (
            "TenantKey",
            format!("default encryption SSE-KMS with the tenant key {key_arn}, Bucket Keys on, automatic rotation on; other keys and weaker encryption are denied"),
        ),
        DefaultEncryption::S3Managed => (
            "S3ManagedKeys",
            "default encryption SSE-S3 (AES-256 with keys managed by AWS), as the policy's encryption.mode asks; uploads asking for any other encryption are denied. There is no tenant key, so crypto-shredding is not available".to_owned(),
        ),
    };
    report.set(ENCRYPTED, ConditionStatus::True, reason, message);
    report.set(
        PUBLIC_ACCESS_BLOCKED,
        ConditionStatus::True,
        "AllBlocked",
        "all four Block Public Access settings on; ACLs disabled (BucketOwnerEnforced)",
    );
    report.status.last_recheck = report.ts.annotations().get(RECHECK).cloned();
    report.set(
        READY,
        ConditionStatus::True,
        "Provisioned",
        format!(
            "bucket {} in {} matches ResidencyPolicy {policy}",
            desired.bucket, desired.region
        ),
    );
}

/// The replica stage's outcome: the `Replicated` condition (absent when no replica is wanted or
/// kept), a replica outside the policy as a residency violation, and what was changed.
pub(super) async fn replica(
    ctx: &Context,
    ts: &TenantStorage,
    report: &mut Report<'_>,
    step: &ReplicaStep,
) {
    let message = || {
        let replica = report.status.replica.as_ref();
        replica.and_then(|r| r.message.clone()).unwrap_or_default()
    };
    match step {
        ReplicaStep::None { removed } => {
            report.status.conditions.retain(|c| c.type_ != REPLICATED);
            if !removed.is_empty() {
                drift_corrected(ctx, ts, &["replication"], &removed.join("; ")).await;
            }
        }
        ReplicaStep::Replicating { changes } => {
            let message = message();
            report.set(REPLICATED, ConditionStatus::True, "Replicating", message);
            if !changes.is_empty() {
                let note = changes.join("; ");
                publish(ctx, ts, EventType::Normal, "ReplicaUpdated", "Update", note).await;
            }
        }
        ReplicaStep::OutsidePolicy { why } => {
            report.set(
                REPLICATED,
                ConditionStatus::False,
                "ResidencyViolation",
                why.clone(),
            );
            let why = format!("replica: {why}");
            report.set(
                RESIDENCY_COMPLIANT,
                ConditionStatus::False,
                "ResidencyViolation",
                why,
            );
        }
        ReplicaStep::Refused { reason, message } => {
            report.set(REPLICATED, ConditionStatus::False, reason, message.clone());
        }
        // The driver runs the reconcile again first.
        ReplicaStep::ReadAgain => {}
    }
}

/// A refused tenant's copies were locked down: the `LockedDown` condition says how, and what had
/// to be corrected is told as drift.
pub(super) async fn locked_down(
    ctx: &Context,
    report: &mut Report<'_>,
    tenant: &Refused<'_>,
    corrected: &Corrected,
) {
    let access = match tenant.policy {
        Some((_, p)) if p.refused_tenant_access == RefusedTenantAccess::Writable => {
            "workloads may still write (the policy's refusedTenantAccess is Writable)"
        }
        _ => "workloads may only read: every bucket policy refuses writes",
    };
    let message = format!(
        "the tenant is refused but its data stays where it is, every copy locked down (Block Public Access, object ownership, encryption, TLS-only bucket policy); {access}. Move it deliberately (README: data outside its policy) or delete it with a DataDeletionRequest"
    );
    report.set(
        LOCKED_DOWN,
        ConditionStatus::True,
        "DataLockedDown",
        message,
    );
    for (bucket, changes) in corrected {
        let restored: Vec<&str> = changes.iter().map(BucketChange::setting).collect();
        drift_corrected(ctx, report.ts, &restored, &format!("bucket {bucket}")).await;
    }
}
