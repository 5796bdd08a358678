//! A managed tenant with a workload role, on the in-memory cloud: the storage stage with the
//! role decided before the bucket policy names it, then the role stage, as the driver runs
//! them. Every refusal and outcome of the role, and a crash before and after every write.

use std::collections::BTreeMap;
use std::time::Duration;

use super::access::ManagedRole;
use super::log_bucket;
use super::record::Record;
use super::role::{self, Iam, RoleOutcome};
use super::storage::{Outcome, Step, Tenant, converge};
use super::storage_tests::{EU, FakeLedger, Purge, id, policy};
use crate::api::{AccessLevel, AccessSpec, AccessStatus};
use crate::cloud::fake::{ACCOUNT, Crash, FakeCloud};
use crate::controllers::role_snapshot::RoleSnapshot;
use crate::controllers::{AccessSettings, Error};
use crate::plan::access::{INLINE_POLICY, ObservedRole, OidcProvider, RoleName};
use crate::plan::{naming, tags};

const BOUNDARY: &str = "arn:aws:iam::111122223333:policy/tenant-boundary";

fn settings() -> AccessSettings {
    AccessSettings {
        oidc: Some(OidcProvider {
            arn: format!(
                "arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC"
            ),
            audience: "sts.amazonaws.com".into(),
        }),
        account_id: ACCOUNT.into(),
        operator_arn: format!("arn:aws:iam::{ACCOUNT}:role/operator"),
        allowed_principals: vec![format!("arn:aws:iam::{ACCOUNT}:role/operator")],
    }
}

fn access(accounts: &[&str], level: AccessLevel) -> AccessSpec {
    AccessSpec {
        service_accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        level,
    }
}

struct Harness {
    cloud: FakeCloud,
    status: Record,
    access: Option<AccessSpec>,
    boundary: Option<String>,
    settings: AccessSettings,
    snapshot: RoleSnapshot,
    log_buckets: log_bucket::Verified,
}

/// How a run ended: the storage stage's step, and the role stage's outcome if it ran.
type Ran = (Step, Option<RoleOutcome>);

impl Harness {
    fn new(access: Option<AccessSpec>) -> Self {
        Harness {
            cloud: FakeCloud::default(),
            status: Record::default(),
            access,
            boundary: None,
            settings: settings(),
            snapshot: RoleSnapshot::new(naming::role_path("c1"), Duration::from_secs(3600)),
            log_buckets: log_bucket::Verified::default(),
        }
    }

    fn role_name(&self) -> RoleName {
        RoleName::of("aws", ACCOUNT, &id())
    }

    fn role(&self) -> Option<ObservedRole> {
        let name = self.role_name().name;
        self.cloud.world().roles.get(&name).map(|(_, r)| r.clone())
    }

    /// The driver's pipeline without Kubernetes; a failed run keeps only its marks (a kill).
    async fn run(&mut self, fresh: bool) -> Result<Ran, Error> {
        let (id, policy) = (id(), policy());
        let tenant = Tenant {
            id: &id,
            policy_name: "eu",
            policy: &policy,
            requested_region: None,
            bucket_prefix: "tso",
            slow_due: fresh,
            now: "2026-12-03T00:00:00Z",
            log_buckets: &self.log_buckets,
            log_bucket_period: Duration::from_secs(3600),
        };
        let iam = || Iam {
            roles: &self.cloud,
            snapshot: &self.snapshot,
            settings: &self.settings,
        };
        let mut principals = ManagedRole {
            iam: iam(),
            id: &id,
            access: self.access.as_ref(),
            permissions_boundary: self.boundary.clone(),
            fresh,
            services: Default::default(),
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
        let role_outcome = match &step {
            Step::Provisioned(_) => {
                let (wanted, observed) = principals.decided.unzip();
                let access = self.access.as_ref();
                let observed = observed.flatten();
                let (role, iam) = (wanted.as_ref(), iam());
                let outcome =
                    role::converge(&iam, &mut ledger, &mut record, &id, role, observed, access);
                Some(outcome.await?)
            }
            _ => None,
        };
        *ledger.saved = record;
        Ok((step, role_outcome))
    }

    async fn settle(&mut self) -> RoleOutcome {
        for _ in 0..3 {
            match self.run(true).await {
                Ok((Step::Provisioned(_), Some(outcome))) => return outcome,
                Ok((Step::Refused(r), _)) => return RoleOutcome::Refused(r),
                Ok((Step::ReadAgain, _)) => continue,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => panic!("run failed: {e}"),
            }
        }
        panic!("did not settle");
    }

    fn writes(&self) -> Vec<String> {
        self.cloud.world().writes.clone()
    }
}

fn reader() -> Option<AccessSpec> {
    Some(access(&["app"], AccessLevel::ReadOnly))
}

#[tokio::test]
async fn the_role_is_created_with_its_permissions_and_the_bucket_policy_names_it() {
    let mut h = Harness::new(reader());
    assert_eq!(h.settle().await, RoleOutcome::Created);
    let role = h
        .role()
        .unwrap_or_else(|| panic!("no role: {:?}", h.writes()));
    let key = h.cloud.world().keys[0].arn.clone();
    let permissions = role.inline_policies[INLINE_POLICY].to_string();
    assert!(
        permissions.contains(&key),
        "the role's permissions name the key: {permissions}"
    );
    assert!(role.tags.get(tags::NAME) == Some(&"data".to_owned()));
    let bucket = super::storage_tests::Harness::new().desired(EU).bucket;
    let policy = h.cloud.world().buckets[&bucket].settings.policy.clone();
    let arn = h.role_name().arn;
    assert!(
        policy.unwrap_or_default().contains(&arn),
        "the bucket policy admits the role"
    );
    let recorded = h.status.access.clone().map(|a| a.role_arn);
    assert_eq!(recorded, Some(arn));
}

#[tokio::test]
async fn a_resync_of_a_role_in_shape_reads_the_sweep_and_writes_nothing() {
    let mut h = Harness::new(reader());
    h.settle().await;
    let writes = h.writes().len();
    let ran = h.run(false).await.map(|(_, outcome)| outcome);
    assert!(matches!(ran, Ok(Some(RoleOutcome::InShape))), "{ran:?}");
    assert_eq!(h.writes().len(), writes, "{:?}", h.writes());
}

#[tokio::test]
async fn a_role_changed_behind_the_operator_is_restored() {
    let mut h = Harness::new(reader());
    h.settle().await;
    let name = h.role_name().name;
    if let Some((_, role)) = h.cloud.world().roles.get_mut(&name) {
        role.inline_policies.clear();
        role.attached_policies
            .push("arn:aws:iam::aws:policy/AmazonS3FullAccess".into());
    }
    let outcome = h.settle().await;
    assert_eq!(
        outcome,
        RoleOutcome::Restored(vec!["rolePolicy", "roleAttachedPolicies"])
    );
    let role = h.role().unwrap_or_else(|| panic!("role gone"));
    assert!(role.attached_policies.is_empty() && role.inline_policies.len() == 1);
}

#[tokio::test]
async fn a_changed_spec_access_is_reported_as_such_and_its_removal_deletes_the_role() {
    let mut h = Harness::new(reader());
    h.settle().await;
    h.access = Some(access(&["app", "batch"], AccessLevel::ReadWrite));
    let outcome = h.settle().await;
    let previous = AccessStatus {
        role_arn: h.role_name().arn,
        service_account_annotation: format!("eks.amazonaws.com/role-arn: {}", h.role_name().arn),
        service_accounts: vec!["app".into()],
        level: AccessLevel::ReadOnly,
    };
    assert_eq!(outcome, RoleOutcome::AccessChanged { previous });
    h.access = None;
    let removed = h.settle().await;
    let arn = h.role_name().arn;
    assert_eq!(removed, RoleOutcome::Removed { arn, deleted: true });
    assert!(h.role().is_none() && h.status.access.is_none());
}

#[tokio::test]
async fn every_role_refusal_names_its_reason_and_no_role_is_written() {
    let mut no_oidc = Harness::new(reader());
    no_oidc.settings.oidc = None;
    let taken = Harness::new(reader());
    let foreign = ObservedRole {
        tags: BTreeMap::from([(tags::NAME.to_owned(), "someone-else".to_owned())]),
        trust_policy: serde_json::Value::Null,
        permissions_boundary: None,
        inline_policies: BTreeMap::new(),
        attached_policies: Vec::new(),
    };
    let name = taken.role_name();
    taken
        .cloud
        .world()
        .roles
        .insert(name.name.clone(), (name.path.clone(), foreign.clone()));
    let mut no_boundary = Harness::new(reader());
    no_boundary.boundary = Some(BOUNDARY.into());
    let appears = Harness::new(reader());
    appears.cloud.world().role_appears_on_create = Some((name.name, name.path, foreign.clone()));
    for (mut h, reason) in [
        (no_oidc, "OidcProviderNotConfigured"),
        (taken, "RoleConflict"),
        (no_boundary, "PermissionsBoundaryNotFound"),
        (appears, "RoleConflict"),
    ] {
        let outcome = h.settle().await;
        let RoleOutcome::Refused(refusal) = &outcome else {
            panic!("{reason}: not refused: {outcome:?}");
        };
        assert_eq!(refusal.reason(), reason, "{refusal}");
        let role = h.role();
        assert!(
            role.is_none() || role == Some(foreign.clone()),
            "{reason}: no role of ours, and someone else's untouched: {role:?}"
        );
    }
}

#[tokio::test]
async fn a_boundary_that_exists_is_set_on_the_role() {
    let mut h = Harness::new(reader());
    h.boundary = Some(BOUNDARY.into());
    h.cloud.world().managed_policies.push(BOUNDARY.into());
    assert_eq!(h.settle().await, RoleOutcome::Created);
    let role = h.role().unwrap_or_else(|| panic!("no role"));
    assert_eq!(role.permissions_boundary.as_deref(), Some(BOUNDARY));
}

#[tokio::test]
async fn a_crash_before_or_after_any_write_of_a_tenant_with_a_role_converges_once() {
    let mut clean = Harness::new(reader());
    clean.settle().await;
    let steps = clean.writes();
    let expected = (clean.role(), clean.status.clone());
    assert!(steps.iter().any(|w| w.starts_with("Create ")), "{steps:?}");
    for (n, step) in steps.iter().enumerate() {
        for crash in [Crash::Before(n), Crash::After(n)] {
            let mut h = Harness::new(reader());
            h.cloud.crash(Some(crash));
            assert!(h.run(true).await.is_err(), "{crash:?} stops the run");
            h.cloud.crash(None);
            h.settle().await;
            let at = format!("{crash:?} ({step})");
            assert_eq!((h.role(), h.status.clone()), expected, "{at}");
            let writes = h.writes();
            let created = writes.iter().filter(|w| w.starts_with("Create ")).count();
            assert_eq!(
                created, 1,
                "the role is created once after {at}: {writes:?}"
            );
            assert_eq!(h.cloud.world().keys.len(), 1, "{at}");
        }
    }
}

#[tokio::test]
async fn a_role_created_just_before_a_crash_is_removed_when_spec_access_goes() {
    let mut clean = Harness::new(reader());
    clean.settle().await;
    let at = clean.writes().iter().position(|w| w.starts_with("Create "));
    let at = at.unwrap_or_else(|| panic!("no role creation: {:?}", clean.writes()));
    let mut h = Harness::new(reader());
    h.cloud.crash(Some(Crash::After(at)));
    assert!(h.run(true).await.is_err());
    h.cloud.crash(None);
    assert!(h.role().is_some(), "created before the crash");
    h.access = None;
    let arn = h.role_name().arn;
    assert_eq!(
        h.settle().await,
        RoleOutcome::Removed { arn, deleted: true }
    );
    assert!(h.role().is_none(), "the write-ahead mark found it");
}
