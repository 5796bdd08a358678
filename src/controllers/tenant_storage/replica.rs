//! The replica stage, after the primary's: the policy's choice ([`policy::replica_plan`]), then
//! over the cloud port the replica's key and bucket in their region (with the primary's
//! lock-down, see `plan::replication`), the role S3 replicates with and the replication rule on
//! the primary. A replica the policy no longer allows is kept locked down and stops receiving
//! data; nothing is created for it.

use std::collections::BTreeMap;

use super::decide;
use super::log_bucket;
use super::record::{Copy, Ledger, Mark, Record};
use super::refusal::Refusal;
use super::role::{self, Iam};
use super::storage::{self, Provisioned, Step, Tenant};
use crate::api::ReplicaStatus;
use crate::cloud::port::{Buckets, Regions, Roles};
use crate::cloud::{BucketPresence, ObservedTags};
use crate::controllers::Error;
use crate::plan::access::role_changes;
use crate::plan::replication::{
    ObservedReplication, Replication, ReplicationChange, replication_change, replication_role,
};
use crate::plan::{DefaultEncryption, Desired, DesiredLogBucket, naming};
use crate::policy::{self, ReplicaPlan};

/// `status.replica.state` of a replica in shape.
pub(super) const REPLICATING: &str = "Replicating";
/// `status.replica.state` of a replica the policy no longer allows.
pub(super) const OUTSIDE_POLICY: &str = "OutsidePolicy";

/// How the stage ended.
#[derive(Debug, PartialEq)]
pub(super) enum ReplicaStep {
    /// No replica wanted, none recorded; the primary replicates nowhere (`removed`: the rules
    /// someone else had added).
    None { removed: Vec<String> },
    /// In shape and receiving every write; what was changed on the way.
    Replicating { changes: Vec<String> },
    /// Kept outside the policy (or found gone), not receiving data.
    OutsidePolicy { why: String },
    /// Not provisioned: the reason and what to do.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Something must change but the slow settings were skipped.
    ReadAgain,
}

/// The replica's side of the cloud and what it needs from the driver.
pub(super) struct Replicas<'a, C, R> {
    pub cloud: &'a C,
    pub iam: Iam<'a, R>,
    /// The region `spec.replicaRegion` names.
    pub named: Option<&'a str>,
    /// The slow settings (tags, key rotation) are read in this run.
    pub slow: bool,
}

/// Brings the tenant's replica (or its absence) to what the policy says.
pub(super) async fn converge<C: Regions, R: Roles>(
    replicas: &Replicas<'_, C, R>,
    tenant: &Tenant<'_>,
    primary: &Provisioned,
    record: &mut Record,
    ledger: &mut impl Ledger,
) -> Result<ReplicaStep, Error> {
    let recorded = record.replica.as_ref().map(|r| r.region.as_str());
    let plan = policy::replica_plan(
        tenant.policy_name,
        tenant.policy,
        &primary.desired.region,
        replicas.named,
        recorded,
    );
    let source = replicas.cloud.region(&primary.desired.region);
    let (region, outside) = match plan {
        Ok(ReplicaPlan::In(region)) => (region, None),
        Ok(ReplicaPlan::OutsidePolicy { region, why }) => (region, Some(why)),
        Ok(ReplicaPlan::None) => {
            let removed = replicate(&source, &primary.desired.bucket, None).await?;
            return Ok(ReplicaStep::None { removed });
        }
        Err(refusal) => {
            replicate(&source, &primary.desired.bucket, None).await?;
            let (reason, message) = (refusal.reason(), refusal.to_string());
            return Ok(ReplicaStep::Refused { reason, message });
        }
    };
    let mut desired = primary
        .desired
        .replica(tenant.bucket_prefix, tenant.id, &region);
    desired.allowed_principals = primary.desired.allowed_principals.clone();
    let claimed = claim(record, &desired, ledger).await?;
    let step = match outside {
        None => provision(replicas, tenant, primary, &desired, claimed, record, ledger).await?,
        Some(why) => keep(replicas, tenant, primary, &desired, why, record).await?,
    };
    if let (Some(replica), ReplicaStep::Refused { reason, message }) = (&mut record.replica, &step)
    {
        replica.state = (*reason).to_owned();
        replica.message = Some(message.clone());
    }
    Ok(step)
}

/// Records the replica's name and region before anything is created; whether it was recorded
/// already (a bucket of that name without our tags is then ours: an interrupted creation).
async fn claim(
    record: &mut Record,
    desired: &Desired,
    ledger: &mut impl Ledger,
) -> Result<bool, Error> {
    let recorded = record.replica.as_ref().map(|r| r.bucket_name.as_str());
    if recorded == Some(desired.bucket.as_str()) {
        return Ok(true);
    }
    record.replica = Some(ReplicaStatus {
        region: desired.region.clone(),
        bucket_name: desired.bucket.clone(),
        state: "Provisioning".to_owned(),
        ..ReplicaStatus::default()
    });
    ledger.write(record, Mark::ReplicaClaimed).await?;
    Ok(false)
}

/// A replica the policy allows: key, bucket, role, then the rule that feeds it.
async fn provision<C: Regions, R: Roles>(
    replicas: &Replicas<'_, C, R>,
    tenant: &Tenant<'_>,
    primary: &Provisioned,
    desired: &Desired,
    claimed: bool,
    record: &mut Record,
    ledger: &mut impl Ledger,
) -> Result<ReplicaStep, Error> {
    let region = replicas.cloud.region(&desired.region);
    let tags = match find(&region, desired, claimed, replicas.slow).await? {
        Ok(tags) => tags,
        Err(refused) => return Ok(refused),
    };
    if let Err(r) = decide::bucket_owner(tags.as_ref(), tenant, desired, claimed) {
        return Ok(refused(&r));
    }
    let slow = replicas.slow;
    let (encryption, key_changes) = match storage::key(
        &region,
        tenant,
        desired,
        (record, Copy::Replica),
        ledger,
        slow,
    )
    .await?
    {
        Ok(done) => done,
        Err(step) => return Ok(step_of(step)),
    };
    logs(&region, tenant, desired).await?;
    let bucket_changes =
        match storage::bucket(&region, tenant, desired, &encryption, tags, slow).await? {
            Ok(changes) => changes,
            Err(step) => return Ok(step_of(step)),
        };
    let role = replication_role(
        &replicas.iam.settings.account_id,
        tenant.id,
        (&primary.desired, primary.encryption.key()),
        (desired, encryption.key()),
    );
    let observed = match role::observe(&replicas.iam, tenant.id, &role, slow).await? {
        Ok(observed) => observed,
        Err(r) => return Ok(refused(&r)),
    };
    let mut role_changes = role_changes(&role, observed.as_ref());
    if !slow && !role_changes.is_empty() {
        return Ok(ReplicaStep::ReadAgain);
    }
    if let Err(r) = role::apply(&replicas.iam, tenant.id, &role, &mut role_changes).await? {
        return Ok(refused(&r));
    }
    if let Some(replica) = &mut record.replica {
        replica.replication_role_arn = Some(role.arn.clone());
    }
    let wanted = Replication {
        role_arn: role.arn.clone(),
        destination_bucket_arn: desired.bucket_arn(),
        replica_key_arn: encryption.key().map(str::to_owned),
    };
    let source = replicas.cloud.region(&primary.desired.region);
    let rule_changes = replicate(&source, &primary.desired.bucket, Some(&wanted)).await?;
    if let Some(replica) = &mut record.replica {
        replica.state = REPLICATING.to_owned();
        replica.message = Some(format!(
            "every write to {} is replicated to {} in {}",
            primary.desired.bucket, desired.bucket, desired.region
        ));
    }
    let changes = key_changes
        .iter()
        .map(|c| format!("replica key: {c}"))
        .chain(
            bucket_changes
                .iter()
                .map(|c| format!("replica bucket: {c}")),
        )
        .chain(
            role_changes
                .iter()
                .map(|c| format!("replication role: {c:?}")),
        )
        .chain(rule_changes)
        .collect();
    Ok(ReplicaStep::Replicating { changes })
}

/// A replica outside the policy: no rule feeds it, its role goes, its bucket stays locked down
/// with the key it has. Nothing is created in a region the policy does not allow.
async fn keep<C: Regions, R: Roles>(
    replicas: &Replicas<'_, C, R>,
    tenant: &Tenant<'_>,
    primary: &Provisioned,
    desired: &Desired,
    why: String,
    record: &mut Record,
) -> Result<ReplicaStep, Error> {
    let source = replicas.cloud.region(&primary.desired.region);
    replicate(&source, &primary.desired.bucket, None).await?;
    let name =
        naming::replication_role_name(&tenant.id.cluster_id, &tenant.id.namespace, &tenant.id.name);
    role::remove(&replicas.iam, tenant.id, &name).await?;
    let region = replicas.cloud.region(&desired.region);
    let tags = match find(&region, desired, true, true).await? {
        Ok(Some(tags)) => Some(tags),
        Ok(None) => {
            record.replica = None;
            let why = format!("{why}; the replica bucket {} is gone", desired.bucket);
            return Ok(ReplicaStep::OutsidePolicy { why });
        }
        Err(refused) => return Ok(refused),
    };
    if let Err(r) = decide::bucket_owner(tags.as_ref(), tenant, desired, true) {
        return Ok(refused(&r));
    }
    let encryption = match record.key_arn(Copy::Replica) {
        Some(arn) => DefaultEncryption::Kms(arn.to_owned()),
        None => DefaultEncryption::S3Managed,
    };
    if let Err(step) = storage::bucket(&region, tenant, desired, &encryption, tags, true).await? {
        return Ok(step_of(step));
    }
    if let Some(replica) = &mut record.replica {
        replica.state = OUTSIDE_POLICY.to_owned();
        replica.replication_role_arn = None;
        replica.message = Some(why.clone());
    }
    Ok(ReplicaStep::OutsidePolicy { why })
}

/// The replica bucket's tags: `None` if it does not exist; refused if the name is held by
/// another account or in another region. Not read on a fast run of a recorded replica.
async fn find<B: Buckets>(
    region: &B,
    desired: &Desired,
    claimed: bool,
    slow: bool,
) -> Result<Result<Option<BTreeMap<String, String>>, ReplicaStep>, Error> {
    if claimed && !slow {
        return Ok(Ok(Some(desired.tags.clone())));
    }
    let bucket = desired.bucket.clone();
    match region.presence(&bucket).await? {
        BucketPresence::Absent => Ok(Ok(None)),
        BucketPresence::OtherAccount => Ok(Err(refused(&Refusal::BucketInOtherAccount { bucket }))),
        BucketPresence::Ours { region: actual } if actual != desired.region => {
            let why = format!("it is in {actual}, not {}", desired.region);
            Ok(Err(refused(&Refusal::BucketNotOurs { bucket, why })))
        }
        BucketPresence::Ours { .. } => Ok(Ok(match region.tags(&bucket).await? {
            ObservedTags::Gone => None,
            ObservedTags::Tags(tags) => Some(tags),
        })),
    }
}

/// The replica region's access-log bucket, when the policy logs access.
async fn logs<B: Buckets>(region: &B, tenant: &Tenant<'_>, desired: &Desired) -> Result<(), Error> {
    if desired.logging.is_none() {
        return Ok(());
    }
    let logs = DesiredLogBucket::new(
        tenant.bucket_prefix,
        &tenant.id.cluster_id,
        tenant.policy_name,
        tenant.policy,
        &desired.region,
    );
    log_bucket::ensure(region, &logs, tenant.log_buckets, tenant.log_bucket_period).await
}

/// Brings the primary's replication configuration to `wanted` (none: no replication at all, so
/// a rule someone added to copy the data elsewhere is removed). Returns what was changed.
async fn replicate<B: Buckets>(
    source: &B,
    bucket: &str,
    wanted: Option<&Replication>,
) -> Result<Vec<String>, Error> {
    let observed = source.replication(bucket).await?;
    let Some(change) = replication_change(wanted, &observed) else {
        return Ok(Vec::new());
    };
    source.change_replication(bucket, &change).await?;
    Ok(vec![match (change, observed) {
        (ReplicationChange::Put(_), ObservedReplication::None) => {
            "replication rule: created".to_owned()
        }
        (ReplicationChange::Put(_), _) => "replication rule: restored".to_owned(),
        (ReplicationChange::Remove, ObservedReplication::Other { destinations }) => format!(
            "replication rule: removed a rule the operator did not write (to {})",
            destinations.join(", ")
        ),
        (ReplicationChange::Remove, _) => "replication rule: removed".to_owned(),
    }])
}

fn refused(refusal: &Refusal) -> ReplicaStep {
    ReplicaStep::Refused {
        reason: refusal.reason(),
        message: refusal.to_string(),
    }
}

fn step_of(step: Step) -> ReplicaStep {
    match step {
        Step::Refused(r) => refused(&r),
        Step::ReadAgain | Step::Provisioned(_) => ReplicaStep::ReadAgain,
    }
}
