//! The storage stage on the in-memory cloud: every plan for the interesting observed states,
//! every refusal, and a crash before and after every write.

use std::collections::BTreeMap;
use std::time::Duration;

use super::log_bucket;
use super::record::{Ledger, Mark, Record};
use super::refusal::Refusal;
use super::storage::{Outcome, Principals, Provisioned, Purges, Step, Tenant, converge};
use crate::api::{ResidencyPolicySpec, Versioning};
use crate::cloud::fake::{Bucket, Crash, FakeCloud, Key, World};
use crate::controllers::Error;
use crate::plan::{BucketChange, DefaultEncryption, Desired, KeyChange, TenantIdentity, tags};

pub(super) const EU: &str = "eu-central-1";
const EU2: &str = "eu-west-1";
const OPERATOR: &str = "arn:aws:iam::111122223333:role/operator";

pub(super) fn policy() -> ResidencyPolicySpec {
    ResidencyPolicySpec {
        jurisdiction: "EU".into(),
        allowed_regions: vec![EU.into(), EU2.into()],
        default_region: EU.into(),
        encryption: Default::default(),
        transport: Default::default(),
        versioning: Versioning::Enabled,
        namespace_selector: None,
        access_logging: Default::default(),
        deletion: Default::default(),
        access: Default::default(),
        export: Default::default(),
        replication: Default::default(),
        backup: Default::default(),
        refused_tenant_access: Default::default(),
    }
}

pub(super) fn id() -> TenantIdentity {
    TenantIdentity {
        cluster_id: "c1".into(),
        namespace: "acme".into(),
        name: "data".into(),
    }
}

/// Stores marks as the status would, through the fake's crash plan.
pub(super) struct FakeLedger<'a> {
    pub cloud: &'a FakeCloud,
    pub saved: &'a mut Record,
}

impl Ledger for FakeLedger<'_> {
    async fn write(&mut self, record: &Record, mark: Mark<'_>) -> Result<(), Error> {
        // Like the status: a claim made before is not written again.
        if matches!(mark, Mark::Claim { first: false, .. }) {
            return Ok(());
        }
        let saved = &mut *self.saved;
        let what = match mark {
            Mark::Claim { .. } => "status Claim".to_owned(),
            other => format!("status {other:?}"),
        };
        self.cloud.write(what, |_| {
            *saved = record.clone();
            Ok(())
        })?;
        Ok(())
    }
}

/// The role decision, fixed.
struct Fixed(Result<Vec<String>, Refusal>);

impl Principals for Fixed {
    async fn allowed(
        &mut self,
        _desired: &Desired,
        _encryption: &DefaultEncryption,
    ) -> Result<Result<Vec<String>, Refusal>, Error> {
        Ok(self.0.clone())
    }
}

/// A purge that runs, or not.
pub(super) struct Purge(pub bool);

impl Purges for Purge {
    async fn writes_denied(&mut self) -> Result<bool, Error> {
        Ok(self.0)
    }
}

/// One tenant, its stored status and the operator's in-process state.
pub(super) struct Harness {
    pub cloud: FakeCloud,
    policy: ResidencyPolicySpec,
    requested: Option<String>,
    pub status: Record,
    principals: Result<Vec<String>, Refusal>,
    log_buckets: log_bucket::Verified,
    /// Whether a failed run stores its record (the reconcile's error path) or not (a kill).
    saves_on_error: bool,
    /// A whole-tenant purge runs and the policy refuses writes meanwhile.
    purge: bool,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            cloud: FakeCloud::default(),
            policy: policy(),
            requested: None,
            status: Record::default(),
            principals: Ok(vec![OPERATOR.into()]),
            log_buckets: log_bucket::Verified::default(),
            saves_on_error: false,
            purge: false,
        }
    }

    pub fn desired(&self, region: &str) -> Desired {
        Desired::new("tso", &id(), "eu", &self.policy, region.into())
    }

    async fn run(&mut self, slow_due: bool) -> Result<Outcome, Error> {
        let id = id();
        let tenant = Tenant {
            id: &id,
            policy_name: "eu",
            policy: &self.policy,
            requested_region: self.requested.as_deref(),
            bucket_prefix: "tso",
            slow_due,
            now: "2026-12-03T00:00:00Z",
            log_buckets: &self.log_buckets,
            log_bucket_period: Duration::from_secs(3600),
        };
        let mut record = self.status.clone();
        let mut ledger = FakeLedger {
            cloud: &self.cloud,
            saved: &mut self.status,
        };
        let mut principals = Fixed(self.principals.clone());
        let outcome = converge(
            &self.cloud,
            &tenant,
            &mut record,
            &mut ledger,
            &mut principals,
            &mut Purge(self.purge),
        )
        .await;
        let saved = match &outcome {
            Ok(o) => !matches!(o.step, Step::ReadAgain),
            Err(_) => self.saves_on_error,
        };
        if saved {
            self.status = record;
        }
        outcome
    }

    /// Runs like the reconcile does: a skipped read that found work runs again reading all.
    async fn settle(&mut self, slow_due: bool) -> Step {
        let mut slow = slow_due;
        for _ in 0..3 {
            match self.run(slow).await {
                Ok(Outcome {
                    step: Step::ReadAgain,
                    ..
                }) => slow = true,
                Ok(outcome) => return outcome.step,
                Err(e) => panic!("run failed: {e}"),
            }
        }
        panic!("did not settle in three runs");
    }

    pub async fn provisioned(&mut self) -> Provisioned {
        match self.settle(true).await {
            Step::Provisioned(p) => p,
            other => panic!("expected provisioned, got {other:?}"),
        }
    }

    async fn refused(&mut self) -> Refusal {
        match self.settle(true).await {
            Step::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.cloud.world()
    }

    pub fn writes(&self) -> Vec<String> {
        self.world().writes.clone()
    }
}

pub(super) fn ours(bucket_tags: &BTreeMap<String, String>) -> Bucket {
    Bucket {
        region: EU.into(),
        settings: crate::plan::ObservedBucket {
            tags: bucket_tags.clone(),
            ..Default::default()
        },
        ..Bucket::default()
    }
}

#[tokio::test]
async fn a_fresh_tenant_gets_a_key_then_a_locked_down_bucket_and_a_log_bucket() {
    let mut h = Harness::new();
    let done = h.provisioned().await;
    let desired = h.desired(EU);
    assert!(!done.existed && !done.adopting);
    assert_eq!(
        done.key_changes,
        [
            KeyChange::CreateKey,
            KeyChange::CreateAlias,
            KeyChange::EnableRotation
        ]
    );
    assert_eq!(done.bucket_changes[0], BucketChange::Create);
    let world = h.world();
    assert_eq!(world.keys.len(), 1);
    let key = &world.keys[0];
    assert!(key.rotation && key.region == EU);
    let bucket = &world.buckets[&desired.bucket];
    let shape = desired.shape(&DefaultEncryption::Kms(key.arn.clone()));
    assert_eq!(
        crate::plan::bucket_changes(&shape, Some(&bucket.settings)),
        [BucketChange::PutPolicy(shape.policy.to_string())],
        "in shape but for the principals, which the stage decides: {bucket:?}"
    );
    assert!(
        bucket
            .settings
            .policy
            .as_deref()
            .unwrap_or_default()
            .contains(OPERATOR),
        "the bucket policy names the principals decided: {:?}",
        bucket.settings.policy
    );
    assert_eq!(
        world.buckets.len(),
        2,
        "tenant bucket and access-log bucket"
    );
    let log = desired.logging.as_ref().map(|l| l.bucket.clone());
    assert!(world.buckets.keys().any(|b| Some(b) == log.as_ref()));
    drop(world);
    assert_eq!(
        h.status.bucket_name.as_deref(),
        Some(desired.bucket.as_str())
    );
    assert_eq!(h.status.kms_key_arn.as_deref(), Some(key_arn(&h).as_str()));
    assert_eq!(h.status.key_creation_started, None);
}

fn key_arn(h: &Harness) -> String {
    h.world().keys[0].arn.clone()
}

#[tokio::test]
async fn a_resync_of_a_tenant_in_shape_writes_nothing_and_skips_slow_reads() {
    let mut h = Harness::new();
    h.provisioned().await;
    let before = h.writes().len();
    let reads = h.world().reads;
    let Step::Provisioned(done) = h.settle(false).await else {
        panic!("not provisioned")
    };
    assert!(done.key_changes.is_empty() && done.bucket_changes.is_empty());
    assert_eq!(h.writes().len(), before, "{:?}", h.writes());
    let skipping = h.world().reads - reads;
    h.settle(true).await;
    let reading = h.world().reads - reads - skipping;
    assert!(
        skipping < reading,
        "a resync that skips tags and rotation reads less: {skipping} vs {reading}"
    );
}

#[tokio::test]
async fn drift_found_while_skipping_slow_reads_is_corrected_after_reading_everything() {
    let mut h = Harness::new();
    h.provisioned().await;
    let bucket = h.desired(EU).bucket;
    if let Some(b) = h.world().buckets.get_mut(&bucket) {
        b.settings.encryption = None;
    }
    let first = h.run(false).await.map(|o| o.step);
    assert!(matches!(first, Ok(Step::ReadAgain)), "{first:?}");
    let Step::Provisioned(done) = h.settle(true).await else {
        panic!("not provisioned")
    };
    assert!(matches!(
        done.bucket_changes[..],
        [BucketChange::PutEncryption(_)]
    ));
}

#[tokio::test]
async fn a_bucket_deleted_behind_the_operator_is_created_again() {
    let mut h = Harness::new();
    h.provisioned().await;
    let bucket = h.desired(EU).bucket;
    h.world().buckets.remove(&bucket);
    let first = h.run(false).await.map(|o| o.step);
    assert!(matches!(first, Ok(Step::ReadAgain)), "{first:?}");
    let done = h.provisioned().await;
    assert_eq!(done.bucket_changes[0], BucketChange::Create);
    assert!(h.world().buckets.contains_key(&bucket));
}

#[tokio::test]
async fn a_bucket_left_by_an_earlier_run_is_adopted() {
    let mut h = Harness::new();
    let desired = h.desired(EU);
    h.world()
        .buckets
        .insert(desired.bucket.clone(), ours(&desired.tags));
    let done = h.provisioned().await;
    assert!(done.existed && done.adopting);
    assert!(!done.bucket_changes.contains(&BucketChange::Create));
}

#[tokio::test]
async fn a_claimed_bucket_without_tags_is_a_creation_interrupted_before_tagging() {
    let mut h = Harness::new();
    let desired = h.desired(EU);
    h.status.bucket_name = Some(desired.bucket.clone());
    h.status.region = Some(EU.into());
    h.world()
        .buckets
        .insert(desired.bucket.clone(), ours(&BTreeMap::new()));
    let done = h.provisioned().await;
    assert!(done.existed && !done.adopting);
    assert!(matches!(done.bucket_changes[0], BucketChange::PutTags(_)));
}

#[tokio::test]
async fn a_bucket_released_under_this_policy_is_taken_back_and_loses_the_released_tag() {
    let mut h = Harness::new();
    let desired = h.desired(EU);
    let mut released = desired.tags.clone();
    released.insert(tags::RELEASED.into(), "true".into());
    h.world()
        .buckets
        .insert(desired.bucket.clone(), ours(&released));
    h.provisioned().await;
    let stored = h.world().buckets[&desired.bucket].settings.tags.clone();
    assert!(!stored.contains_key(tags::RELEASED), "{stored:?}");
}

#[tokio::test]
async fn an_existing_bucket_in_another_allowed_region_is_used_there() {
    let mut h = Harness::new();
    let desired = h.desired(EU2);
    let mut there = ours(&desired.tags);
    there.region = EU2.into();
    h.world().buckets.insert(desired.bucket.clone(), there);
    let done = h.provisioned().await;
    assert_eq!(done.desired.region, EU2);
    assert_eq!(h.status.region.as_deref(), Some(EU2));
    assert_eq!(
        h.world().keys[0].region,
        EU2,
        "the key lives with the bucket"
    );
}

#[tokio::test]
async fn every_refusal_of_the_stage_names_its_reason_and_writes_nothing_after_it() {
    type Setup = fn(&mut Harness);
    let cases: [(&str, Setup); 10] = [
        ("RegionNotAllowed", |h| {
            h.requested = Some("us-east-1".into())
        }),
        ("RegionChangeRefused", |h| {
            h.status.region = Some(EU.into());
            h.requested = Some(EU2.into());
        }),
        ("BucketNameChanged", |h| {
            h.status.bucket_name = Some("tso-old-name".into())
        }),
        ("BucketConflict", |h| {
            let b = Bucket {
                foreign: true,
                ..ours(&BTreeMap::new())
            };
            h.world().buckets.insert(h.desired(EU).bucket, b);
        }),
        ("BucketConflict", |h| {
            let mut other = h.desired(EU).tags;
            other.insert(tags::NAMESPACE.into(), "someone-else".into());
            h.world().buckets.insert(h.desired(EU).bucket, ours(&other));
        }),
        ("ResidencyViolation", |h| {
            let mut b = ours(&h.desired(EU).tags);
            b.region = "us-east-1".into();
            h.world().buckets.insert(h.desired(EU).bucket, b);
        }),
        ("RegionMismatch", |h| {
            h.requested = Some(EU.into());
            let mut b = ours(&h.desired(EU).tags);
            b.region = EU2.into();
            h.world().buckets.insert(h.desired(EU).bucket, b);
        }),
        ("ReleasedUnderAnotherPolicy", |h| {
            let mut released = h.desired(EU).tags;
            released.insert(tags::RELEASED.into(), "true".into());
            released.insert(tags::POLICY.into(), "us".into());
            h.world()
                .buckets
                .insert(h.desired(EU).bucket, ours(&released));
        }),
        ("KeyConflict", |h| {
            key_behind_alias(h, "Enabled", BTreeMap::from([("owner".into(), "x".into())]))
        }),
        ("KeyNotUsable", |h| {
            key_behind_alias(h, "Disabled", h.desired(EU).tags)
        }),
    ];
    for (reason, setup) in cases {
        let mut h = Harness::new();
        setup(&mut h);
        let before = h.writes();
        let refusal = h.refused().await;
        assert_eq!(refusal.reason(), reason, "{refusal}");
        let after = h.writes();
        assert!(
            after[before.len()..]
                .iter()
                .all(|w| w.starts_with("status")),
            "{reason}: nothing is written to the cloud: {after:?}"
        );
    }
}

pub(super) fn key_behind_alias(h: &mut Harness, state: &str, key_tags: BTreeMap<String, String>) {
    let desired = h.desired(EU);
    let mut world = h.world();
    world.keys.push(Key {
        id: "k0".into(),
        arn: format!("arn:aws:kms:{EU}:111122223333:key/k0"),
        region: EU.into(),
        state: state.into(),
        rotation: true,
        tags: key_tags,
    });
    world
        .aliases
        .insert((EU.into(), desired.key_alias.clone()), "k0".into());
}

#[tokio::test]
async fn a_refused_role_stops_the_stage_before_the_bucket_policy_could_name_it() {
    let mut h = Harness::new();
    h.principals = Err(Refusal::OidcProviderNotConfigured);
    let refusal = h.refused().await;
    assert_eq!(refusal.reason(), "OidcProviderNotConfigured");
    assert!(
        !h.world().buckets.contains_key(&h.desired(EU).bucket),
        "no tenant bucket without its principals decided"
    );
}

#[tokio::test]
async fn a_bucket_that_appears_while_it_is_created_is_used_only_if_it_is_ours() {
    let mut h = Harness::new();
    let mut other = h.desired(EU).tags;
    other.insert(tags::NAME.into(), "someone-else".into());
    h.world().appears_on_create = Some((h.desired(EU).bucket, ours(&other)));
    let refusal = h.refused().await;
    assert_eq!(refusal.reason(), "BucketConflict");
    assert!(matches!(refusal, Refusal::BucketTakenMeanwhile { .. }));
    let stored = h.world().buckets[&h.desired(EU).bucket].settings.clone();
    assert_eq!(stored.tags, other, "not touched");
    assert_eq!(stored.policy, None, "not touched");
}

/// What a clean run leaves: the world's buckets, keys and aliases, and the stored record.
type EndState = (
    BTreeMap<String, Bucket>,
    Vec<Key>,
    BTreeMap<(String, String), String>,
    Record,
);

fn end_state(h: &Harness) -> EndState {
    let w = h.world();
    let record = h.status.clone();
    (w.buckets.clone(), w.keys.clone(), w.aliases.clone(), record)
}

#[tokio::test]
async fn a_crash_before_or_after_any_write_converges_to_the_same_state_with_nothing_twice() {
    let mut clean = Harness::new();
    clean.provisioned().await;
    let expected = end_state(&clean);
    let steps = clean.writes().len();
    assert!(
        steps >= 15,
        "every write is a crash point: {:?}",
        clean.writes()
    );
    let mut cases = 0;
    for n in 0..steps {
        for crash in [Crash::Before(n), Crash::After(n)] {
            for saves_on_error in [false, true] {
                let mut h = Harness::new();
                h.saves_on_error = saves_on_error;
                h.cloud.crash(Some(crash));
                let crashed = h.run(true).await;
                assert!(crashed.is_err(), "{crash:?} stops the run");
                h.cloud.crash(None);
                h.provisioned().await;
                let at = format!(
                    "{crash:?} ({}), saves on error {saves_on_error}",
                    clean.writes()[n]
                );
                assert_eq!(end_state(&h), expected, "{at}");
                let writes = h.writes();
                for creation in writes.iter().filter(|w| w.starts_with("Create")) {
                    let times = writes.iter().filter(|w| *w == creation).count();
                    assert_eq!(
                        times, 1,
                        "{creation} done {times} times after {at}: {writes:?}"
                    );
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, steps * 4);
}

#[tokio::test]
async fn a_running_purge_that_refuses_writes_is_in_the_bucket_policy_until_it_ends() {
    let mut h = Harness::new();
    h.provisioned().await;
    let bucket = h.desired(EU).bucket;
    let policy = |h: &Harness| {
        h.world().buckets[&bucket]
            .settings
            .policy
            .clone()
            .unwrap_or_default()
    };
    assert!(!policy(&h).contains("DenyWritesDuringPurge"));
    h.purge = true;
    let Step::Provisioned(done) = h.settle(true).await else {
        panic!("not provisioned")
    };
    assert!(matches!(
        done.bucket_changes[..],
        [BucketChange::PutPolicy(_)]
    ));
    assert!(
        policy(&h).contains("DenyWritesDuringPurge"),
        "{}",
        policy(&h)
    );
    h.purge = false;
    h.settle(true).await;
    assert!(!policy(&h).contains("DenyWritesDuringPurge"));
}

fn s3_managed(h: &mut Harness) {
    h.policy.encryption.mode = crate::api::EncryptionMode::S3Managed;
}

#[tokio::test]
async fn with_s3_managed_keys_the_bucket_gets_aes256_and_no_tenant_key_exists() {
    let mut h = Harness::new();
    s3_managed(&mut h);
    let done = h.provisioned().await;
    assert_eq!(done.encryption, DefaultEncryption::S3Managed);
    assert!(done.key_changes.is_empty());
    let bucket = h.desired(EU).bucket;
    {
        let world = h.world();
        assert!(world.keys.is_empty() && world.aliases.is_empty(), "no key");
        let settings = &world.buckets[&bucket].settings;
        let algorithm = settings.encryption.as_ref().map(|e| e.algorithm.as_str());
        assert_eq!(algorithm, Some("AES256"));
        let policy = settings.policy.clone().unwrap_or_default();
        assert!(policy.contains("DenyOtherEncryption") && !policy.contains("DenyOtherKmsKeys"));
    }
    assert_eq!(
        h.status.encryption_mode,
        Some(crate::api::EncryptionMode::S3Managed)
    );
    assert_eq!(
        (h.status.kms_key_alias.clone(), h.status.kms_key_arn.clone()),
        (None, None)
    );
    let writes = h.writes().len();
    h.settle(false).await;
    assert_eq!(h.writes().len(), writes, "a resync writes nothing");
}

#[tokio::test]
async fn a_tenant_keeps_its_encryption_mode_when_the_policy_changes() {
    let mut keyed = Harness::new();
    keyed.provisioned().await;
    s3_managed(&mut keyed);
    let refusal = keyed.refused().await;
    assert_eq!(refusal.reason(), "EncryptionModeChangeRefused", "{refusal}");
    assert_eq!(keyed.world().keys[0].state, "Enabled", "the key is kept");

    let mut legacy = Harness::new();
    legacy.provisioned().await;
    legacy.status.encryption_mode = None;
    s3_managed(&mut legacy);
    let refusal = legacy.refused().await;
    assert_eq!(
        refusal.reason(),
        "EncryptionModeChangeRefused",
        "recorded key: {refusal}"
    );

    let mut s3 = Harness::new();
    s3_managed(&mut s3);
    s3.provisioned().await;
    s3.policy.encryption.mode = crate::api::EncryptionMode::TenantKey;
    let refusal = s3.refused().await;
    assert_eq!(refusal.reason(), "EncryptionModeChangeRefused", "{refusal}");
    assert!(
        s3.world().keys.is_empty(),
        "no key is made for data that is not under it"
    );
}

/// A bucket of ours left by an earlier run (or released): tagged by a tenant-key policy, or by an
/// S3-managed-keys one. Its default encryption is S3's for new buckets (SSE-S3) either way.
fn left_behind(h: &Harness, s3_managed_mark: bool) {
    let mut tags = id().tags();
    if s3_managed_mark {
        tags.insert(tags::ENCRYPTION.to_owned(), "S3Managed".to_owned());
    }
    let mut bucket = ours(&tags);
    bucket.settings.encryption = Some(crate::plan::ObservedEncryption {
        algorithm: "AES256".into(),
        key_id: None,
        bucket_key: false,
        sse_c_blocked: false,
    });
    h.world().buckets.insert(h.desired(EU).bucket, bucket);
}

#[tokio::test]
async fn a_bucket_is_adopted_only_if_it_is_encrypted_the_way_the_policy_now_asks() {
    let mut s3 = Harness::new();
    s3_managed(&mut s3);
    left_behind(&s3, false);
    let refusal = s3.refused().await;
    assert_eq!(refusal.reason(), "EncryptionModeChangeRefused", "{refusal}");
    assert!(s3.writes().is_empty(), "not touched: {:?}", s3.writes());

    let mut keyed = Harness::new();
    left_behind(&keyed, true);
    let refusal = keyed.refused().await;
    assert_eq!(refusal.reason(), "EncryptionModeChangeRefused", "{refusal}");
    assert!(
        keyed.world().keys.is_empty(),
        "no key for data it never protected"
    );

    for (s3_managed_policy, mark) in [(true, true), (false, false)] {
        let mut same = Harness::new();
        if s3_managed_policy {
            s3_managed(&mut same);
        }
        left_behind(&same, mark);
        assert!(same.provisioned().await.adopting, "{s3_managed_policy}");
    }
}

#[tokio::test]
async fn a_tenant_claimed_before_modes_were_recorded_is_a_tenant_key_one() {
    let mut h = Harness::new();
    h.status.bucket_name = Some(h.desired(EU).bucket);
    h.status.region = Some(EU.into());
    s3_managed(&mut h);
    let refusal = h.refused().await;
    assert_eq!(refusal.reason(), "EncryptionModeChangeRefused", "{refusal}");
}
