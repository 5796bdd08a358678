//! The stage that owns a managed tenant's bucket and key: observe them through the cloud port,
//! decide (pure, in [`decide`]), apply, with the write-ahead marks as explicit steps. Nothing
//! here talks to Kubernetes: status writes go through a [`Ledger`], the tenant role through
//! [`Principals`], a running purge through [`Purges`], so the whole stage runs on a fake cloud
//! in `storage_tests.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::info;

use super::decide::{self, Placement};
use super::log_bucket;
use super::record::{Copy, Ledger, Mark, Record};
use super::refusal::Refusal;
use crate::api::{EncryptionMode, ResidencyPolicySpec};
use crate::cloud::port::{Buckets, Keys, Regions};
use crate::cloud::{BucketPresence, ObservedTags};
use crate::controllers::Error;
use crate::plan::{
    self, BucketChange, DefaultEncryption, Desired, DesiredLogBucket, KeyChange, TenantIdentity,
};

/// Who may reach the bucket besides the operator's own principals: decided once the key is
/// known (the tenant role's permissions name it), before the bucket policy is written.
pub(super) trait Principals: Send {
    fn allowed(
        &mut self,
        desired: &Desired,
        encryption: &DefaultEncryption,
    ) -> impl Future<Output = Result<Result<Vec<String>, Refusal>, Error>> + Send;
}

/// Whether new writes to the bucket are refused: a whole-tenant purge runs and the policy says
/// so. Asked once the key is in shape, as the bucket policy is about to be decided.
pub(super) trait Purges: Send {
    fn writes_denied(&mut self) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// The tenant as this stage needs it.
pub(super) struct Tenant<'a> {
    pub id: &'a TenantIdentity,
    pub policy_name: &'a str,
    pub policy: &'a ResidencyPolicySpec,
    pub requested_region: Option<&'a str>,
    pub bucket_prefix: &'a str,
    /// The slow settings (tags, key rotation) are due; see `controllers::slow_settings`.
    pub slow_due: bool,
    /// Now, as recorded in write-ahead marks.
    pub now: &'a str,
    pub log_buckets: &'a log_bucket::Verified,
    pub log_bucket_period: Duration,
}

/// How the stage ended.
#[derive(Debug)]
pub(super) enum Step {
    Provisioned(Provisioned),
    Refused(Refusal),
    /// Something must change but the slow settings were skipped: run again reading them.
    ReadAgain,
}

/// What a stage run found and did.
#[derive(Debug)]
pub(super) struct Outcome {
    pub step: Step,
    /// The slow settings were read in this run.
    pub read_slow_settings: bool,
}

#[derive(Debug)]
pub(super) struct Provisioned {
    pub desired: Desired,
    /// The bucket's default encryption: the tenant key, or S3-managed keys.
    pub encryption: DefaultEncryption,
    /// The bucket existed before this run.
    pub existed: bool,
    /// It existed but was not claimed: left by an earlier run, now adopted.
    pub adopting: bool,
    pub key_changes: Vec<KeyChange>,
    pub bucket_changes: Vec<BucketChange>,
}

/// The bucket as observed before claiming it.
struct Found<R> {
    placement: Placement,
    cloud: R,
    tags: Option<BTreeMap<String, String>>,
}

/// Brings the tenant's key and bucket to the policy's shape, stopping at the first refusal.
pub(super) async fn converge<C: Regions>(
    cloud: &C,
    tenant: &Tenant<'_>,
    record: &mut Record,
    ledger: &mut impl Ledger,
    principals: &mut impl Principals,
    purges: &mut impl Purges,
) -> Result<Outcome, Error> {
    let placement = match decide::placement(tenant, record) {
        Ok(p) => p,
        Err(r) => return Ok(stopped(Step::Refused(r), false)),
    };
    let slow = !placement.known_here || tenant.slow_due;
    let found = match find_bucket(cloud, tenant, placement, slow).await? {
        Ok(found) => found,
        Err(r) => return Ok(stopped(Step::Refused(r), false)),
    };
    let Found {
        placement,
        cloud: region,
        tags,
    } = found;
    let mut desired = placement.desired;
    let adopting = match decide::bucket_owner(tags.as_ref(), tenant, &desired, placement.claimed) {
        Ok(adopting) => adopting,
        Err(r) => return Ok(stopped(Step::Refused(r), false)),
    };
    let mark = Mark::Claim {
        first: !placement.claimed,
        policy: tenant.policy_name,
        jurisdiction: &tenant.policy.jurisdiction,
    };
    claim(record, &desired, ledger, mark).await?;
    let (encryption, key_changes) = match key(
        &region,
        tenant,
        &desired,
        (record, Copy::Primary),
        ledger,
        slow,
    )
    .await?
    {
        Ok(done) => done,
        // A refused key stops the run before the slow settings count as read.
        Err(step) => return Ok(stopped(step, false)),
    };
    desired.deny_writes = purges.writes_denied().await?;
    if desired.logging.is_some() {
        let logs = DesiredLogBucket::new(
            tenant.bucket_prefix,
            &tenant.id.cluster_id,
            tenant.policy_name,
            tenant.policy,
            &desired.region,
        );
        log_bucket::ensure(&region, &logs, tenant.log_buckets, tenant.log_bucket_period).await?;
    }
    desired.allowed_principals = match principals.allowed(&desired, &encryption).await? {
        Ok(allowed) => allowed,
        Err(r) => return Ok(stopped(Step::Refused(r), slow)),
    };
    let existed = tags.is_some();
    let bucket_changes = match bucket(&region, tenant, &desired, &encryption, tags, slow).await? {
        Ok(changes) => changes,
        Err(step) => return Ok(stopped(step, slow)),
    };
    let provisioned = Provisioned {
        desired,
        encryption,
        existed,
        adopting,
        key_changes,
        bucket_changes,
    };
    Ok(stopped(Step::Provisioned(provisioned), slow))
}

fn stopped(step: Step, read_slow_settings: bool) -> Outcome {
    Outcome {
        step,
        read_slow_settings,
    }
}

/// Where the bucket is and whose it is. Its tags are read only when the slow settings are due
/// (a claimed bucket's tags are then taken as desired); a bucket not known here is looked up.
async fn find_bucket<C: Regions>(
    cloud: &C,
    tenant: &Tenant<'_>,
    mut placement: Placement,
    slow: bool,
) -> Result<Result<Found<C::Region>, Refusal>, Error> {
    let mut region = cloud.region(&placement.desired.region);
    let bucket = placement.desired.bucket.clone();
    let tags = if !slow {
        Some(placement.desired.tags.clone())
    } else if placement.known_here {
        tags_of(region.tags(&bucket).await?)
    } else {
        match region.presence(&bucket).await? {
            BucketPresence::Absent => None,
            BucketPresence::OtherAccount => {
                return Ok(Err(Refusal::BucketInOtherAccount { bucket }));
            }
            BucketPresence::Ours { region: actual } => {
                if let Err(r) = decide::relocate(&mut placement, tenant, &actual) {
                    return Ok(Err(r));
                }
                region = cloud.region(&placement.desired.region);
                tags_of(region.tags(&bucket).await?)
            }
        }
    };
    Ok(Ok(Found {
        placement,
        cloud: region,
        tags,
    }))
}

fn tags_of(seen: ObservedTags) -> Option<BTreeMap<String, String>> {
    match seen {
        ObservedTags::Gone => None,
        ObservedTags::Tags(t) => Some(t),
    }
}

/// Records the bucket's name, region and key alias before anything is created.
async fn claim(
    record: &mut Record,
    desired: &Desired,
    ledger: &mut impl Ledger,
    mark: Mark<'_>,
) -> Result<(), Error> {
    record.region = Some(desired.region.clone());
    record.bucket_name = Some(desired.bucket.clone());
    record.bucket_arn = Some(desired.bucket_arn());
    record.encryption_mode = Some(desired.encryption);
    record.kms_key_alias =
        (desired.encryption == EncryptionMode::TenantKey).then(|| desired.key_alias.clone());
    ledger.write(record, mark).await
}

/// The tenant key: first, since the bucket's encryption and policy name it. Returns the
/// bucket's encryption and what was changed; a bucket with S3-managed keys has no key.
pub(super) async fn key<R: Keys>(
    cloud: &R,
    tenant: &Tenant<'_>,
    desired: &Desired,
    (record, copy): (&mut Record, Copy),
    ledger: &mut impl Ledger,
    slow: bool,
) -> Result<Result<(DefaultEncryption, Vec<KeyChange>), Step>, Error> {
    if desired.encryption == EncryptionMode::S3Managed {
        return Ok(Ok((DefaultEncryption::S3Managed, Vec::new())));
    }
    let key = cloud.key(&desired.key_alias, slow).await?;
    // First sight of this key (or the alias was repointed): it must carry our tags.
    let key_tags = match &key {
        Some(k) if record.key_arn(copy) != Some(k.arn.as_str()) => {
            Some(cloud.key_tags(&k.key_id).await?)
        }
        _ => None,
    };
    let changes = match decide::key_changes(key.as_ref(), key_tags.as_ref(), tenant.id, desired) {
        Ok(changes) => changes,
        Err(r) => return Ok(Err(Step::Refused(r))),
    };
    if !slow && !changes.is_empty() {
        return Ok(Err(Step::ReadAgain));
    }
    let creating = changes.contains(&KeyChange::CreateKey);
    // Only a creation that was started and never confirmed may have left a key without its
    // alias: only then is the region searched for it (an expensive listing).
    let interrupted = creating && record.key_creation_started(copy).is_some();
    if creating && !interrupted {
        record.set_key(copy, None, Some(tenant.now.to_owned()));
        ledger.write(record, Mark::KeyCreationStarted).await?;
    }
    let existing = key.map(|k| (k.key_id, k.arn));
    let orphan_of = interrupted.then(|| orphan_tags(tenant.id, desired));
    let arn = apply_key_changes(cloud, desired, existing, &changes, orphan_of.as_ref()).await?;
    record.set_key(copy, Some(arn.clone()), None);
    Ok(Ok((DefaultEncryption::Kms(arn), changes)))
}

/// The tags that find the key of an interrupted creation: the tenant's identity, and a
/// replica's mark (a replica's key is never in its primary's region, but says what it is).
fn orphan_tags(id: &TenantIdentity, desired: &Desired) -> BTreeMap<String, String> {
    let mut tags = id.tags();
    if let Some(copy) = desired.tags.get(plan::tags::COPY) {
        tags.insert(plan::tags::COPY.to_owned(), copy.clone());
    }
    tags
}

async fn apply_key_changes<R: Keys>(
    cloud: &R,
    desired: &Desired,
    existing: Option<(String, String)>,
    changes: &[KeyChange],
    orphan_of: Option<&BTreeMap<String, String>>,
) -> Result<String, Error> {
    let (mut key_id, mut arn) = existing.unwrap_or_default();
    for change in changes {
        match change {
            KeyChange::CreateKey => {
                let orphan = match orphan_of {
                    Some(tags) => cloud.find_tagged_key(tags).await?,
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

/// The bucket: observed (if it exists), compared with its shape, corrected. A bucket that
/// appears under us while it is created is re-checked for ownership.
pub(super) async fn bucket<R: Buckets>(
    cloud: &R,
    tenant: &Tenant<'_>,
    desired: &Desired,
    encryption: &DefaultEncryption,
    tags: Option<BTreeMap<String, String>>,
    slow: bool,
) -> Result<Result<Vec<BucketChange>, Step>, Error> {
    let shape = desired.shape(encryption);
    let observed = match tags {
        Some(t) => match cloud.observe(&desired.bucket, t, &shape).await {
            Ok(observed) => Some(observed),
            // Gone since it was last seen: the tags, read next, say so.
            Err(e) if !slow && e.is_not_found(&["NoSuchBucket"]) => {
                return Ok(Err(Step::ReadAgain));
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let changes = plan::bucket_changes(&shape, observed.as_ref());
    if !slow && !changes.is_empty() {
        return Ok(Err(Step::ReadAgain));
    }
    for change in &changes {
        if *change != BucketChange::Create {
            cloud.change(&desired.bucket, change).await?;
        } else if !cloud.create(&desired.bucket).await?
            && let ObservedTags::Tags(seen) = cloud.tags(&desired.bucket).await?
            && let Err(r) = decide::created_bucket_owner(&seen, tenant.id, &desired.bucket)
        {
            return Ok(Err(Step::Refused(r)));
        }
    }
    Ok(Ok(changes))
}
