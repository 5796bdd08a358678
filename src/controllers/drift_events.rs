//! Drift learned from AWS itself: CloudTrail's management events, polled per tenant region,
//! re-check exactly the tenants whose bucket, key or role someone else changed. While the
//! source answers everywhere, the full resync of every tenant is only the audit's safety net
//! (`--audit-period`); when it does not (not permitted, not enabled, throttled), the operator
//! says so in a metric and its log and polls every tenant at `--resync-period` again.
//!
//! The decisions (which events matter, for which tenant) are pure and tested here; the loop
//! around them reads the tenants' cache and CloudTrail.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::Context;
use crate::api::{ConditionStatus, TenantStorage};
use crate::cloud::{CloudError, TrailEvent};
use crate::plan::principal;
use crate::telemetry::{PollLabels, RegionLabels};

/// Where CloudTrail records IAM's events (IAM is global; in the aws partition they are
/// recorded in us-east-1).
const IAM_EVENTS_REGION: &str = "us-east-1";

/// Where events are polled, and how.
#[derive(Clone, Debug)]
pub struct EventSettings {
    /// Between two polls of a region.
    pub interval: Duration,
    /// How far back each poll looks: CloudTrail delivers an event some minutes after the call
    /// on AWS, so a window shorter than that delay would miss it.
    pub lookback: Duration,
    /// Where IAM records its (global) events.
    pub iam_region: String,
}

impl EventSettings {
    /// A poll every `interval` that looks back `lookback`, and at least as far as the previous
    /// poll: a shorter window would skip the events between two polls.
    pub fn new(interval: Duration, lookback: Duration) -> Self {
        EventSettings {
            interval,
            lookback: lookback.max(interval),
            iam_region: IAM_EVENTS_REGION.to_owned(),
        }
    }
}

/// The tenants' resources by name. Built only when a poll brings events of someone else's:
/// for 10,000 tenants it is some megabytes, and a quiet account needs none.
#[derive(Default)]
pub struct TenantIndex {
    by_resource: HashMap<String, Target>,
}

/// The regions to poll: those holding tenants, and `iam_region`, where IAM records its
/// (global) events (us-east-1 for AWS), once a tenant has a role.
pub fn regions<'a>(
    tenants: impl IntoIterator<Item = &'a TenantStorage>,
    iam_region: &str,
) -> BTreeSet<String> {
    let mut regions = BTreeSet::new();
    for status in tenants.into_iter().filter_map(|ts| ts.status.as_ref()) {
        let replica = status.replica.as_ref().map(|r| &r.region);
        for region in status.region.iter().chain(replica) {
            if !regions.contains(region) {
                regions.insert(region.clone());
            }
        }
        let replication_role = status
            .replica
            .as_ref()
            .is_some_and(|r| r.replication_role_arn.is_some());
        if (status.access.is_some() || replication_role) && !regions.contains(iam_region) {
            regions.insert(iam_region.to_owned());
        }
    }
    regions
}

/// Events not acted on yet (`seen` remembers ids across overlapping polls) that someone other
/// than the operator (`own`) made: the operator's own writes are what it decided, and
/// re-checking them would cost a reconcile each.
pub fn news<'e>(
    events: &'e [TrailEvent],
    own: &Own,
    seen: &mut HashMap<String, f64>,
) -> Vec<&'e TrailEvent> {
    events
        .iter()
        .filter(|e| seen.insert(e.id.clone(), e.time).is_none() && !own.made(e))
        .collect()
}

/// A tenant an event may concern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tenant: ObjectRef<TenantStorage>,
    /// The tenant's role, when the resource is its role: read again, not from the sweep.
    pub role: Option<String>,
}

impl TenantIndex {
    /// Indexes the tenants' bucket names, key ARNs and ids, and role names, of every copy.
    pub fn of<'a>(tenants: impl IntoIterator<Item = &'a TenantStorage>) -> Self {
        let mut index = TenantIndex::default();
        for ts in tenants {
            let Some(status) = &ts.status else { continue };
            let tenant = ObjectRef::from_obj(ts);
            let replica = status.replica.as_ref();
            let buckets = status
                .bucket_name
                .iter()
                .chain(replica.map(|r| &r.bucket_name));
            for bucket in buckets {
                index.insert(bucket, &tenant, None);
            }
            let keys = status.kms_key_arn.iter();
            for key in keys.chain(replica.and_then(|r| r.kms_key_arn.as_ref())) {
                index.insert(key, &tenant, None);
                if let Some((_, id)) = key.rsplit_once('/') {
                    index.insert(id, &tenant, None);
                }
            }
            let roles = status.access.as_ref().map(|a| &a.role_arn);
            let roles = roles
                .into_iter()
                .chain(replica.and_then(|r| r.replication_role_arn.as_ref()));
            for role in roles {
                if let Some((_, name)) = role.rsplit_once('/') {
                    index.insert(role, &tenant, Some(name));
                    index.insert(name, &tenant, Some(name));
                }
            }
        }
        index
    }

    fn insert(&mut self, resource: &str, tenant: &ObjectRef<TenantStorage>, role: Option<&str>) {
        let target = Target {
            tenant: tenant.clone(),
            role: role.map(str::to_owned),
        };
        self.by_resource.insert(resource.to_owned(), target);
    }

    /// The tenants whose resources `events` name, each once.
    pub fn targets(&self, events: &[&TrailEvent]) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        for e in events {
            for t in e.resources.iter().filter_map(|r| self.by_resource.get(r)) {
                if !targets.contains(t) {
                    targets.push(t.clone());
                }
            }
        }
        targets
    }
}

/// Who the operator is in CloudTrail: its principal, and the access keys it has signed with
/// lately (temporary keys change as credentials are refreshed).
#[derive(Debug, Default)]
pub struct Own {
    pub arn: String,
    pub access_keys: Vec<String>,
}

impl Own {
    /// Keys kept: a few refreshes' worth, enough for any lookback.
    const KEYS: usize = 8;

    fn made(&self, e: &TrailEvent) -> bool {
        e.caller_arn
            .as_deref()
            .is_some_and(|c| same_principal(c, &self.arn))
            || e.access_key_id
                .as_ref()
                .is_some_and(|k| self.access_keys.contains(k))
    }

    /// Notes the key the operator signs with now.
    pub fn signing_with(&mut self, key: Option<String>) {
        if let Some(key) = key.filter(|k| !self.access_keys.contains(k)) {
            self.access_keys.push(key);
            if self.access_keys.len() > Self::KEYS {
                self.access_keys.remove(0);
            }
        }
    }
}

/// Whether two caller ARNs are the same principal: equal, or the same role as a role ARN
/// (`arn:aws:iam::<account>:role/<path>/<name>`, what the operator may be configured with) or as
/// any of its sessions (`arn:aws:sts::<account>:assumed-role/<name>/<session>`, what CloudTrail
/// records).
fn same_principal(a: &str, b: &str) -> bool {
    a == b || principal::same_role(a, b)
}

/// Consecutive failed rounds of polls after which every tenant is polled again.
const FAILED_ROUNDS: u32 = 3;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How changes made in AWS reach the operator; the policies' `DriftDetection` condition says it.
#[derive(Clone, Debug, PartialEq)]
pub enum Detection {
    /// Drift events are off: every tenant is read at the resync period.
    Polling,
    /// No round of polls has ended yet.
    Starting,
    /// CloudTrail answers in every region polled.
    Events { regions: Vec<String> },
    /// Some regions did not answer for several rounds (region, error code): every tenant is
    /// read at the resync period until they do.
    Unavailable {
        failures: Vec<(String, String)>,
        denied: bool,
    },
}

impl Detection {
    /// The policies' `DriftDetection` condition: status, reason and message, given the resync
    /// and audit periods.
    pub fn condition(
        &self,
        resync: Duration,
        audit: Duration,
    ) -> (ConditionStatus, &'static str, String) {
        let polled = format!("every tenant is read every {resync:?} (--resync-period)");
        match self {
            Detection::Polling => (
                ConditionStatus::True,
                "Polling",
                format!("drift events are off (--drift-events off): {polled}"),
            ),
            Detection::Starting => (
                ConditionStatus::Unknown,
                "Starting",
                "the first poll of CloudTrail events has not ended yet".to_owned(),
            ),
            Detection::Events { regions } => (
                ConditionStatus::True,
                "CloudTrailEvents",
                format!(
                    "changes made in AWS are learned from CloudTrail events in {}; every tenant is also read every {audit:?} (--audit-period)",
                    regions.join(", ")
                ),
            ),
            Detection::Unavailable { failures, denied } => {
                let failed = failures
                    .iter()
                    .map(|(region, code)| format!("{region} ({code})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (reason, fix) = if *denied {
                    (
                        "EventsDenied",
                        "; allow cloudtrail:LookupEvents on * to the operator (the chart's IAM policy has it)",
                    )
                } else {
                    ("EventsUnavailable", "")
                };
                (
                    ConditionStatus::False,
                    reason,
                    format!(
                        "CloudTrail LookupEvents fails in {failed}: {polled} until it answers{fix}"
                    ),
                )
            }
        }
    }
}

/// What the policies' `DriftDetection` condition is made of.
#[derive(Clone)]
pub struct DetectionReport {
    pub now: watch::Receiver<Detection>,
    pub resync: Duration,
    pub audit: Duration,
}

impl DetectionReport {
    pub fn condition(&self) -> (ConditionStatus, &'static str, String) {
        self.now.borrow().condition(self.resync, self.audit)
    }
}

/// Polls every tenant region until the process ends; sends each concerned tenant to the
/// controller of its scope (`senders`, by namespace; `None` for all namespaces), and tells
/// `detection` whether the events answer.
pub async fn run(
    ctx: Arc<Context>,
    events: EventSettings,
    stores: Vec<Store<TenantStorage>>,
    senders: Vec<(Option<String>, mpsc::Sender<ObjectRef<TenantStorage>>)>,
    detection: watch::Sender<Detection>,
) {
    let mut own = Own {
        arn: ctx.settings.access.operator_arn.clone(),
        access_keys: Vec::new(),
    };
    // Long-lived keys (the principal's ARN covers role sessions, whose keys change).
    own.signing_with(ctx.cloud.access_key_id().await);
    let mut poller = Poller {
        ctx,
        senders,
        stores,
        own,
        seen: HashMap::new(),
    };
    let mut up = None;
    let mut failed_rounds = 0u32;
    let mut ticker = tokio::time::interval(events.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let regions = regions(poller.tenants().iter().map(|t| &**t), &events.iam_region);
        if regions.is_empty() {
            // No tenant yet: nothing answered, nothing failed.
            continue;
        }
        let now = now_secs();
        let start = now - events.lookback.as_secs_f64();
        poller.seen.retain(|_, time| *time >= start);
        let mut failures = Vec::new();
        for region in &regions {
            if let Err(e) = poller.poll(region, (start, now), up == Some(false)).await {
                failures.push((region.clone(), e));
            }
        }
        failed_rounds = if failures.is_empty() {
            0
        } else {
            failed_rounds + 1
        };
        // One failed round (a throttle, a lost answer) is not an outage.
        let healthy = failures.is_empty() || (failed_rounds < FAILED_ROUNDS && up == Some(true));
        detection.send_if_modified(|now| {
            let next = if healthy {
                Detection::Events {
                    regions: regions.iter().cloned().collect(),
                }
            } else {
                Detection::Unavailable {
                    denied: failures.iter().any(|(_, e)| e.is_denied()),
                    failures: failures
                        .iter()
                        .map(|(region, e)| (region.clone(), e.code().to_owned()))
                        .collect(),
                }
            };
            let changed = *now != next;
            *now = next;
            changed
        });
        if up != Some(healthy) {
            poller.switch(healthy, up, events.interval).await;
            up = Some(healthy);
        }
    }
}

/// What the polls of every region share.
struct Poller {
    ctx: Arc<Context>,
    senders: Vec<(Option<String>, mpsc::Sender<ObjectRef<TenantStorage>>)>,
    stores: Vec<Store<TenantStorage>>,
    own: Own,
    /// Ids of the events acted on, with their times (kept for the lookback).
    seen: HashMap<String, f64>,
}

impl Poller {
    fn tenants(&self) -> Vec<Arc<TenantStorage>> {
        self.stores.iter().flat_map(Store::state).collect()
    }

    /// The events answer everywhere (`healthy`) or not any more, as of this round.
    async fn switch(&self, healthy: bool, was: Option<bool>, interval: Duration) {
        self.ctx
            .metrics
            .drift_event_source_up
            .set(i64::from(healthy));
        self.ctx.schedule.set_events_healthy(healthy);
        if healthy {
            info!(
                ?interval,
                "CloudTrail events answer in every tenant region: the full resync is the audit period's"
            );
        } else if was == Some(true) {
            // Resyncs were scheduled an audit period away: check everyone now instead.
            for ts in self.tenants() {
                recheck(&self.senders, ObjectRef::from_obj(&*ts)).await;
            }
        }
    }

    /// Polls one region over `(start, end)` and re-checks the tenants its events concern;
    /// CloudTrail's error if it did not answer (logged unless `quiet`: the source is known
    /// down).
    async fn poll(
        &mut self,
        region: &str,
        (start, end): (f64, f64),
        quiet: bool,
    ) -> Result<(), CloudError> {
        let polled = self
            .ctx
            .cloud
            .region(region)
            .mutating_events(start, end)
            .await;
        let outcome = match &polled {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        };
        self.ctx
            .metrics
            .drift_event_polls
            .get_or_create(&PollLabels {
                region: region.to_owned(),
                outcome,
            })
            .inc();
        let found = polled.inspect_err(|e| {
            if !quiet {
                warn!(%region, error = %e, "cannot read CloudTrail events; after {FAILED_ROUNDS} failed rounds every tenant is polled at the resync period until they answer");
            }
        })?;
        let labels = RegionLabels {
            region: region.to_owned(),
        };
        if let Some(newest) = found.iter().map(|e| e.time).reduce(f64::max) {
            self.ctx
                .metrics
                .drift_event_lag
                .get_or_create(&labels)
                .set((end - newest).max(0.0) as i64);
        }
        let news = news(&found, &self.own, &mut self.seen);
        if news.is_empty() {
            return Ok(());
        }
        let tenants = self.tenants();
        let index = TenantIndex::of(tenants.iter().map(|t| &**t));
        for target in index.targets(&news) {
            self.ctx.metrics.drift_events.get_or_create(&labels).inc();
            if let Some(role) = &target.role {
                self.ctx.roles.changing(role);
            }
            // The change may be to the tags or the key's rotation, which a resync skips.
            self.ctx
                .slow_settings
                .forget(&super::tenant_storage::ref_key(&target.tenant));
            info!(tenant = %target.tenant, %region, "changed by someone else in AWS: re-checking");
            // Waits for room: the event is marked seen, so a dropped re-check would be lost.
            recheck(&self.senders, target.tenant).await;
        }
        Ok(())
    }
}

/// The sender of the controller watching `tenant`'s namespace.
fn sender_for<'a>(
    senders: &'a [(Option<String>, mpsc::Sender<ObjectRef<TenantStorage>>)],
    tenant: &ObjectRef<TenantStorage>,
) -> Option<&'a mpsc::Sender<ObjectRef<TenantStorage>>> {
    senders
        .iter()
        .find(|(scope, _)| scope.is_none() || *scope == tenant.namespace)
        .map(|(_, sender)| sender)
}

/// Queues a re-check, waiting for room: a wave goes at the controller's pace.
pub(super) async fn recheck(
    senders: &[(Option<String>, mpsc::Sender<ObjectRef<TenantStorage>>)],
    tenant: ObjectRef<TenantStorage>,
) {
    if let Some(sender) = sender_for(senders, &tenant) {
        let _ = sender.send(tenant).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccessStatus, TenantStorageStatus};

    fn tenant(name: &str, role: bool) -> TenantStorage {
        let mut ts = TenantStorage::new(
            name,
            serde_json::from_value(serde_json::json!({"policyRef": "eu"})).expect("spec"),
        );
        ts.metadata.namespace = Some("acme".into());
        ts.status = Some(TenantStorageStatus {
            region: Some("eu-central-1".into()),
            bucket_name: Some(format!("b-{name}")),
            kms_key_arn: Some(format!(
                "arn:aws:kms:eu-central-1:111122223333:key/k-{name}"
            )),
            access: role.then(|| AccessStatus {
                role_arn: format!("arn:aws:iam::111122223333:role/tso/c1/r-{name}"),
                ..AccessStatus::default()
            }),
            ..TenantStorageStatus::default()
        });
        ts
    }

    fn event(id: &str, caller: &str, resources: &[&str]) -> TrailEvent {
        TrailEvent {
            id: id.into(),
            time: 100.0,
            caller_arn: Some(caller.into()),
            access_key_id: Some(format!("AKID-{caller}")),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn concerned(
        index: &TenantIndex,
        events: &[TrailEvent],
        own: &Own,
        seen: &mut HashMap<String, f64>,
    ) -> Vec<Target> {
        index.targets(&news(events, own, seen))
    }

    const OPERATOR: &str = "arn:aws:sts::111122223333:assumed-role/tso-operator/botocore-session-1";

    fn operator() -> Own {
        Own {
            arn: OPERATOR.into(),
            access_keys: Vec::new(),
        }
    }

    #[test]
    fn events_by_others_on_a_tenants_resources_name_that_tenant_once() {
        let (a, b) = (tenant("a", false), tenant("b", true));
        let index = TenantIndex::of([&a, &b]);
        assert_eq!(
            regions([&a, &b], "us-east-1")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["eu-central-1", "us-east-1"],
            "IAM's region is polled once a tenant has a role"
        );
        let admin = "arn:aws:iam::111122223333:user/admin";
        let events = [
            event("1", admin, &["b-a"]),
            event("2", admin, &["k-a"]),
            event("3", admin, &["r-b"]),
            event("4", admin, &["someone-elses-bucket"]),
            event("5", OPERATOR, &["b-b"]),
            event(
                "6",
                "arn:aws:sts::111122223333:assumed-role/tso-operator/other-session",
                &["b-b"],
            ),
        ];
        let mut seen = HashMap::new();
        let targets = concerned(&index, &events, &operator(), &mut seen);
        assert_eq!(
            targets,
            [
                Target {
                    tenant: ObjectRef::from_obj(&a),
                    role: None
                },
                Target {
                    tenant: ObjectRef::from_obj(&b),
                    role: Some("r-b".into())
                },
            ]
        );
        assert!(
            concerned(&index, &events, &operator(), &mut seen).is_empty(),
            "an event polled again is not acted on twice"
        );
    }

    #[test]
    fn a_replicas_bucket_key_and_role_name_their_tenant() {
        let mut a = tenant("a", false);
        if let Some(status) = &mut a.status {
            status.replica = Some(crate::api::ReplicaStatus {
                region: "eu-west-1".into(),
                bucket_name: "rb-a".into(),
                kms_key_arn: Some("arn:aws:kms:eu-west-1:111122223333:key/rk-a".into()),
                replication_role_arn: Some("arn:aws:iam::111122223333:role/tso/c1/repl-a".into()),
                ..Default::default()
            });
        }
        let index = TenantIndex::of([&a]);
        let admin = "arn:aws:iam::111122223333:user/admin";
        for (n, resource) in ["rb-a", "rk-a", "repl-a"].iter().enumerate() {
            let mut seen = HashMap::new();
            let events = [event(&n.to_string(), admin, &[resource])];
            let targets = concerned(&index, &events, &operator(), &mut seen);
            assert_eq!(targets.len(), 1, "{resource}");
            assert_eq!(targets[0].tenant, ObjectRef::from_obj(&a));
        }
        assert_eq!(
            regions([&a], "us-east-1").into_iter().collect::<Vec<_>>(),
            ["eu-central-1", "eu-west-1", "us-east-1"],
            "the replica's region, and IAM's for its role"
        );
    }

    #[test]
    fn a_key_is_known_by_arn_and_by_id() {
        let a = tenant("a", false);
        let index = TenantIndex::of([&a]);
        let mut seen = HashMap::new();
        let by_arn = event("1", "x", &["arn:aws:kms:eu-central-1:111122223333:key/k-a"]);
        assert_eq!(
            concerned(&index, &[by_arn], &operator(), &mut seen).len(),
            1
        );
        assert_eq!(
            regions([&a], "us-east-1").len(),
            1,
            "no IAM region without a role"
        );
    }

    #[test]
    fn the_operators_own_keys_are_known_whatever_the_arn() {
        let a = tenant("a", false);
        let index = TenantIndex::of([&a]);
        let mut own = operator();
        // An emulator that names callers by access key: the ARN says nothing.
        let mine = event("1", "arn:aws:iam::111122223333:user/AKIAOWN", &["b-a"]);
        own.signing_with(mine.access_key_id.clone());
        own.signing_with(mine.access_key_id.clone());
        assert_eq!(own.access_keys.len(), 1);
        assert!(concerned(&index, &[mine], &own, &mut HashMap::new()).is_empty());
        for i in 0..20 {
            own.signing_with(Some(format!("K{i}")));
        }
        assert_eq!(
            own.access_keys.len(),
            Own::KEYS,
            "only the latest keys are kept"
        );
    }

    #[test]
    fn sessions_of_one_role_are_one_principal() {
        assert!(same_principal(OPERATOR, OPERATOR));
        assert!(same_principal(
            OPERATOR,
            "arn:aws:sts::111122223333:assumed-role/tso-operator/session-2"
        ));
        assert!(!same_principal(
            OPERATOR,
            "arn:aws:sts::111122223333:assumed-role/tso-operator-2/session-2"
        ));
        assert!(!same_principal(
            "arn:aws:iam::111122223333:user/a",
            "arn:aws:iam::111122223333:user/b"
        ));
        // The operator configured with its role's ARN, CloudTrail naming a session of it.
        assert!(same_principal(
            "arn:aws:iam::111122223333:role/system/tso-operator",
            OPERATOR
        ));
        assert!(!same_principal(
            "arn:aws:iam::444455556666:role/tso-operator",
            OPERATOR
        ));
    }

    #[test]
    fn the_condition_says_how_drift_is_learned_and_how_to_fix_a_refusal() {
        let (resync, audit) = (Duration::from_secs(600), Duration::from_secs(6 * 3600));
        let (status, reason, message) = Detection::Unavailable {
            failures: vec![("eu-central-1".into(), "AccessDenied".into())],
            denied: true,
        }
        .condition(resync, audit);
        assert_eq!((status, reason), (ConditionStatus::False, "EventsDenied"));
        assert!(message.contains("eu-central-1 (AccessDenied)"), "{message}");
        assert!(
            message.contains("every 600s (--resync-period)"),
            "{message}"
        );
        assert!(message.contains("cloudtrail:LookupEvents"), "{message}");
        let (status, reason, message) = Detection::Unavailable {
            failures: vec![("us-east-1".into(), "ThrottlingException".into())],
            denied: false,
        }
        .condition(resync, audit);
        assert_eq!(
            (status, reason),
            (ConditionStatus::False, "EventsUnavailable")
        );
        assert!(!message.contains("allow"), "{message}");
        let (status, reason, message) = Detection::Events {
            regions: vec!["eu-central-1".into(), "us-east-1".into()],
        }
        .condition(resync, audit);
        assert_eq!(
            (status, reason),
            (ConditionStatus::True, "CloudTrailEvents")
        );
        assert!(message.contains("eu-central-1, us-east-1"), "{message}");
        assert!(message.contains("21600s (--audit-period)"), "{message}");
        assert_eq!(
            Detection::Polling.condition(resync, audit).1,
            "Polling",
            "drift events off is a choice, not a fault"
        );
        assert_eq!(
            Detection::Starting.condition(resync, audit).0,
            ConditionStatus::Unknown
        );
    }
}
