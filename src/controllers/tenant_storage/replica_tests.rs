//! The replica stage on the in-memory cloud, after the storage stage as the driver runs them:
//! what a replica is made of, a no-op run, a crash before and after every write, a policy that
//! stops allowing the replica's region, and a replication rule nobody asked for.

use std::time::Duration;

use super::access::{ManagedRole, ServiceRoles};
use super::log_bucket;
use super::record::Record;
use super::replica::{self, ReplicaStep, Replicas};
use super::role::Iam;
use super::storage::{Outcome, Step, Tenant, converge};
use super::storage_tests::{FakeLedger, Purge, id, policy};
use crate::api::ResidencyPolicySpec;
use crate::cloud::fake::{ACCOUNT, Crash, FakeCloud};
use crate::controllers::role_snapshot::RoleSnapshot;
use crate::controllers::{AccessSettings, Error};
use crate::plan::replication::{ObservedReplication, Replication};
use crate::plan::{naming, tags};

const EU2: &str = "eu-west-1";

fn replicated() -> ResidencyPolicySpec {
    let mut policy = policy();
    policy.replication.regions = vec![EU2.into()];
    policy.replication.default_region = Some(EU2.into());
    policy.replication.required = true;
    policy
}

struct Harness {
    cloud: FakeCloud,
    policy: ResidencyPolicySpec,
    status: Record,
    settings: AccessSettings,
    snapshot: RoleSnapshot,
    log_buckets: log_bucket::Verified,
}

impl Harness {
    fn new(policy: ResidencyPolicySpec) -> Self {
        let operator = format!("arn:aws:iam::{ACCOUNT}:role/operator");
        Harness {
            cloud: FakeCloud::default(),
            policy,
            status: Record::default(),
            settings: AccessSettings {
                oidc: None,
                account_id: ACCOUNT.into(),
                operator_arn: operator.clone(),
                allowed_principals: vec![operator],
            },
            snapshot: RoleSnapshot::new(naming::role_path("c1"), Duration::from_secs(3600)),
            log_buckets: log_bucket::Verified::default(),
        }
    }

    /// The storage stage, then the replica stage; a failed run keeps only its marks (a kill).
    async fn run(&mut self) -> Result<ReplicaStep, Error> {
        let id = id();
        let tenant = Tenant {
            id: &id,
            policy_name: "eu",
            policy: &self.policy,
            requested_region: None,
            bucket_prefix: "tso",
            slow_due: true,
            now: "2026-12-03T00:00:00Z",
            log_buckets: &self.log_buckets,
            log_bucket_period: Duration::from_secs(3600),
        };
        let iam = || Iam {
            roles: &self.cloud,
            snapshot: &self.snapshot,
            settings: &self.settings,
        };
        let replicated = self.policy.replication.region_for(None).is_some();
        let mut principals = ManagedRole {
            iam: iam(),
            id: &id,
            access: None,
            permissions_boundary: None,
            fresh: true,
            services: ServiceRoles {
                replication: replicated || self.status.replica.is_some(),
                backup: false,
            },
            decided: None,
        };
        let mut record = self.status.clone();
        let mut ledger = FakeLedger {
            cloud: &self.cloud,
            saved: &mut self.status,
        };
        let Outcome { step, .. } = converge(
            &self.cloud,
            &tenant,
            &mut record,
            &mut ledger,
            &mut principals,
            &mut Purge(false),
        )
        .await?;
        let Step::Provisioned(primary) = step else {
            panic!("primary not provisioned: {step:?}");
        };
        let replicas = Replicas {
            cloud: &self.cloud,
            iam: iam(),
            named: None,
            slow: true,
        };
        let step =
            replica::converge(&replicas, &tenant, &primary, &mut record, &mut ledger).await?;
        *ledger.saved = record;
        Ok(step)
    }

    fn replica_bucket(&self) -> String {
        naming::replica_bucket_name("tso", "c1", "acme", "data", EU2)
    }

    fn primary_bucket(&self) -> String {
        naming::bucket_name("tso", "c1", "acme", "data")
    }

    fn writes(&self) -> Vec<String> {
        self.cloud.world().writes.clone()
    }

    /// Everything the two stages made, in a comparable form.
    fn end_state(&self) -> String {
        let w = self.cloud.world();
        let buckets: Vec<_> = w
            .buckets
            .iter()
            .map(|(n, b)| {
                (
                    n,
                    &b.region,
                    &b.settings.tags,
                    &b.settings.policy,
                    &b.replication,
                )
            })
            .collect();
        let keys: Vec<_> = w
            .keys
            .iter()
            .map(|k| (&k.region, &k.tags, &k.state))
            .collect();
        let roles: Vec<_> = w.roles.keys().collect();
        format!(
            "{buckets:?}\n{keys:?}\n{:?}\n{roles:?}",
            w.aliases.keys().collect::<Vec<_>>()
        )
    }
}

fn creations(writes: &[String]) -> Vec<&String> {
    let mut created: Vec<&String> = writes.iter().filter(|w| w.starts_with("Create")).collect();
    created.sort();
    created
}

#[tokio::test]
async fn a_replica_is_a_locked_down_bucket_and_key_in_its_region_fed_by_one_rule() {
    let mut h = Harness::new(replicated());
    let step = h.run().await.expect("run");
    assert!(matches!(step, ReplicaStep::Replicating { .. }), "{step:?}");
    let replica = h.status.replica.clone().expect("recorded");
    assert_eq!(
        (replica.region.as_str(), replica.state.as_str()),
        (EU2, "Replicating")
    );
    {
        let world = h.cloud.world();
        let bucket = &world.buckets[&h.replica_bucket()];
        assert_eq!(bucket.region, EU2);
        assert_eq!(
            bucket.settings.tags.get(tags::COPY).map(String::as_str),
            Some("replica")
        );
        let policy = bucket.settings.policy.clone().unwrap_or_default();
        assert!(
            policy.contains("DenyWritesToReplica") && policy.contains("DenyOtherPrincipals"),
            "{policy}"
        );
        let role_arn = replica.replication_role_arn.clone().expect("role");
        assert!(
            policy.contains(&role_arn),
            "the replication role may reach the replica: {policy}"
        );
        let primary = &world.buckets[&h.primary_bucket()];
        let primary_policy = primary.settings.policy.clone().unwrap_or_default();
        assert!(
            primary_policy.contains(&role_arn),
            "and the primary: {primary_policy}"
        );
        let key = world
            .keys
            .iter()
            .find(|k| k.region == EU2)
            .expect("a key in the replica's region");
        assert_eq!(replica.kms_key_arn.as_deref(), Some(key.arn.as_str()));
        assert_eq!(
            primary.replication,
            ObservedReplication::Ours(Replication {
                role_arn,
                destination_bucket_arn: format!("arn:aws:s3:::{}", h.replica_bucket()),
                replica_key_arn: Some(key.arn.clone()),
            })
        );
    }
    let before = h.writes().len();
    let again = h.run().await.expect("run again");
    assert_eq!(again, ReplicaStep::Replicating { changes: vec![] });
    assert_eq!(
        h.writes().len(),
        before,
        "a no-op run writes nothing: {:?}",
        &h.writes()[before..]
    );
}

#[tokio::test]
async fn a_crash_before_or_after_any_replica_write_converges_with_nothing_twice() {
    let mut clean = Harness::new(replicated());
    clean.run().await.expect("clean run");
    let expected = clean.end_state();
    let steps = clean.writes().len();
    for n in 0..steps {
        for crash in [Crash::Before(n), Crash::After(n)] {
            let mut h = Harness::new(replicated());
            h.cloud.crash(Some(crash));
            assert!(h.run().await.is_err(), "{crash:?} stops the run");
            h.cloud.crash(None);
            let step = h.run().await.expect("rerun");
            let at = format!("{crash:?} ({})", clean.writes()[n]);
            assert!(
                matches!(step, ReplicaStep::Replicating { .. }),
                "{at}: {step:?}"
            );
            assert_eq!(h.end_state(), expected, "{at}");
            // The same creations as a clean run, each once (a key and an alias per region).
            assert_eq!(creations(&h.writes()), creations(&clean.writes()), "{at}");
        }
    }
}

#[tokio::test]
async fn a_region_the_policy_drops_keeps_the_replica_locked_down_and_feeds_it_nothing() {
    let mut h = Harness::new(replicated());
    h.run().await.expect("run");
    let replica = h.replica_bucket();
    h.policy = policy();
    let step = h.run().await.expect("run outside the policy");
    let ReplicaStep::OutsidePolicy { why } = step else {
        panic!("{step:?}")
    };
    assert!(why.contains("data is kept"), "{why}");
    {
        let world = h.cloud.world();
        assert_eq!(
            world.buckets[&h.primary_bucket()].replication,
            ObservedReplication::None
        );
        assert!(world.buckets.contains_key(&replica), "the data is kept");
        assert!(
            world.roles.is_empty(),
            "no role to replicate with: {:?}",
            world.roles.keys()
        );
    }
    assert_eq!(
        h.status.replica.as_ref().map(|r| r.state.as_str()),
        Some("OutsidePolicy")
    );
    // Opened by hand: still corrected.
    h.cloud
        .world()
        .buckets
        .get_mut(&replica)
        .expect("replica")
        .settings
        .policy = None;
    h.run().await.expect("run");
    let policy = h.cloud.world().buckets[&replica]
        .settings
        .policy
        .clone()
        .unwrap_or_default();
    assert!(policy.contains("DenyInsecureTransport"), "{policy}");
    // Gone: forgotten, and nothing is created outside the policy.
    h.cloud.world().buckets.remove(&replica);
    let before = h.writes().len();
    h.run().await.expect("run");
    assert!(h.status.replica.is_none());
    assert!(!h.cloud.world().buckets.contains_key(&replica));
    assert!(
        h.writes()[before..]
            .iter()
            .all(|w| !w.starts_with("Create")),
        "{:?}",
        &h.writes()[before..]
    );
}

#[tokio::test]
async fn a_replication_rule_nobody_asked_for_is_removed() {
    let mut h = Harness::new(policy());
    assert_eq!(
        h.run().await.expect("run"),
        ReplicaStep::None { removed: vec![] }
    );
    let elsewhere = ObservedReplication::Other {
        destinations: vec!["arn:aws:s3:::someone-elses".into()],
    };
    let primary = h.primary_bucket();
    h.cloud
        .world()
        .buckets
        .get_mut(&primary)
        .expect("primary")
        .replication = elsewhere;
    let ReplicaStep::None { removed } = h.run().await.expect("run") else {
        panic!()
    };
    assert_eq!(removed.len(), 1);
    assert!(removed[0].contains("someone-elses"), "{removed:?}");
    assert_eq!(
        h.cloud.world().buckets[&primary].replication,
        ObservedReplication::None
    );
}
