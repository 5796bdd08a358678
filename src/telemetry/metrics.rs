//! Prometheus metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `tenant_storage_aws_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: String,
    pub operation: String,
    /// `true` for calls that change cloud state; a no-op reconcile makes none.
    pub mutating: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of the reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    /// `ok` or the error reason.
    pub result: String,
}

/// Labels of `tenant_storage_tenants`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Status of the `Ready` condition.
    pub ready: String,
    /// Reason of the `Ready` condition.
    pub reason: String,
}

/// Labels of `tenant_storage_deletion_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Labels of `tenant_storage_deletion_objects_deleted`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `<namespace>/<name>` of the request.
    pub request: String,
}

/// Labels of `tenant_storage_policy_tenants`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    /// `bound` or `non_compliant`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Labels of the drift event metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

/// Labels of `tenant_storage_drift_corrected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// What was put back: `bucketPolicy`, `keyRotation`, `trustPolicy`, ...
    pub setting: String,
}

/// Labels of `tenant_storage_drift_event_polls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub region: String,
    /// `ok`, or the error code (a failed poll falls back to polling every tenant).
    pub outcome: String,
}

/// All metrics of the operator; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub aws_calls: Family<AwsCallLabels, Counter>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    tenants: Family<TenantLabels, Gauge>,
    policy_tenants: Family<PolicyLabels, Gauge>,
    deletion_requests: Family<PhaseLabels, Gauge>,
    deletion_objects: Family<RequestLabels, Gauge>,
    deletion_phases: Arc<Mutex<HashMap<String, String>>>,
    tenant_states: Arc<Mutex<HashMap<String, TenantLabels>>>,
    /// Settings of an existing bucket, key or role that the operator put back.
    pub drift_corrected: Family<SettingLabels, Counter>,
    /// Changes made by others to a tenant's bucket, key or role, learned from CloudTrail.
    pub drift_events: Family<RegionLabels, Counter>,
    pub drift_event_polls: Family<PollLabels, Counter>,
    /// Seconds since the newest event seen, as of the last poll.
    pub drift_event_lag: Family<RegionLabels, Gauge>,
    /// 1 while the event source answers in every region, 0 while the operator falls back to
    /// polling every tenant at the resync period.
    pub drift_event_source_up: Gauge,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tenant_storage");
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "AWS API calls (attempts) by service, operation, whether they mutate, and outcome",
            aws_calls.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations by kind and result",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations",
            reconcile_duration.clone(),
        );
        let tenants = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tenants",
            "TenantStorages by status and reason of their Ready condition",
            tenants.clone(),
        );
        let policy_tenants = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_tenants",
            "TenantStorages bound to each ResidencyPolicy, and how many are out of compliance",
            policy_tenants.clone(),
        );
        let deletion_requests = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "deletion_requests",
            "DataDeletionRequests by phase",
            deletion_requests.clone(),
        );
        let deletion_objects = Family::<RequestLabels, Gauge>::default();
        registry.register(
            "deletion_objects_deleted",
            "Object versions and delete markers deleted so far, per DataDeletionRequest",
            deletion_objects.clone(),
        );
        let drift_corrected = Family::<SettingLabels, Counter>::default();
        registry.register(
            "drift_corrected",
            "Settings of existing buckets, keys and roles put back after someone else changed them",
            drift_corrected.clone(),
        );
        let drift_events = Family::<RegionLabels, Counter>::default();
        registry.register(
            "drift_events",
            "Changes by others to a tenant's bucket, key or role, learned from CloudTrail (each re-checks its tenant)",
            drift_events.clone(),
        );
        let drift_event_polls = Family::<PollLabels, Counter>::default();
        registry.register(
            "drift_event_polls",
            "CloudTrail LookupEvents polls by region and outcome",
            drift_event_polls.clone(),
        );
        let drift_event_lag = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "drift_event_lag_seconds",
            "Seconds between the newest CloudTrail event seen and its poll",
            drift_event_lag.clone(),
        );
        let drift_event_source_up = Gauge::default();
        registry.register(
            "drift_event_source_up",
            "1 while CloudTrail answers in every tenant region (resync at the audit period), 0 while every tenant is polled at the resync period",
            drift_event_source_up.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            drift_corrected,
            drift_events,
            drift_event_polls,
            drift_event_lag,
            drift_event_source_up,
            policy_tenants,
            deletion_requests,
            deletion_objects,
            deletion_phases: Arc::default(),
            aws_calls,
            reconciles,
            reconcile_duration,
            tenants,
            tenant_states: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Records a tenant's Ready status (`None` once it is gone): moves it from its old count to
    /// its new one, so a reconcile costs the same at any number of tenants. A state nobody is
    /// in any more leaves the gauge.
    pub fn record_tenant(&self, key: &str, state: Option<TenantLabels>) {
        let mut states = self.tenant_states.lock().unwrap_or_else(|p| p.into_inner());
        let previous = match &state {
            Some(labels) => states.insert(key.to_owned(), labels.clone()),
            None => states.remove(key),
        };
        if previous == state {
            return;
        }
        if let Some(old) = previous
            && self.tenants.get_or_create(&old).dec() <= 1
        {
            self.tenants.remove(&old);
        }
        if let Some(new) = state {
            self.tenants.get_or_create(&new).inc();
        }
    }

    /// Records a deletion request's phase and progress (`None` once it is gone).
    pub fn record_deletion(&self, request: &str, phase: Option<String>, objects_deleted: u64) {
        let mut phases = self
            .deletion_phases
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let labels = RequestLabels {
            request: request.to_owned(),
        };
        match phase {
            Some(phase) => {
                phases.insert(request.to_owned(), phase);
                self.deletion_objects
                    .get_or_create(&labels)
                    .set(i64::try_from(objects_deleted).unwrap_or(i64::MAX));
            }
            None => {
                phases.remove(request);
                self.deletion_objects.remove(&labels);
            }
        }
        self.deletion_requests.clear();
        for phase in phases.values() {
            self.deletion_requests
                .get_or_create(&PhaseLabels {
                    phase: phase.clone(),
                })
                .inc();
        }
    }

    /// Records how many tenants a policy has and how many are out of compliance.
    pub fn record_policy(&self, policy: &str, bound: usize, non_compliant: usize) {
        for (state, n) in [("bound", bound), ("non_compliant", non_compliant)] {
            self.policy_tenants
                .get_or_create(&PolicyLabels {
                    policy: policy.to_owned(),
                    state: state.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn count_reconcile(&self, kind: &str, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(seconds);
    }
}

/// Whether an AWS operation changes state (by AWS naming convention).
pub fn is_mutating(operation: &str) -> bool {
    // Assuming a role changes nothing in the cloud: it only issues credentials.
    !["Get", "Head", "List", "Describe", "Lookup", "AssumeRole"]
        .iter()
        .any(|p| operation.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_write_operations() {
        for op in [
            "GetBucketPolicy",
            "HeadBucket",
            "ListObjectVersions",
            "DescribeKey",
            "LookupEvents",
            "AssumeRole",
        ] {
            assert!(!is_mutating(op), "{op}");
        }
        for op in [
            "PutBucketPolicy",
            "CreateKey",
            "DeleteBucket",
            "EnableKeyRotation",
            "ScheduleKeyDeletion",
        ] {
            assert!(is_mutating(op), "{op}");
        }
    }

    #[test]
    fn exposes_counters_in_text_format() {
        let m = Metrics::default();
        m.aws_calls
            .get_or_create(&AwsCallLabels {
                service: "s3".into(),
                operation: "HeadBucket".into(),
                mutating: "false".into(),
                outcome: "ok".into(),
            })
            .inc();
        m.count_reconcile("TenantStorage", "ok", 0.1);
        let ready = |r: &str| TenantLabels {
            ready: "True".into(),
            reason: r.into(),
        };
        m.record_tenant("a/x", Some(ready("Provisioned")));
        m.record_tenant("a/y", Some(ready("Provisioned")));
        m.record_tenant("a/z", Some(ready("Provisioned")));
        m.record_tenant("a/z", None);
        m.record_tenant("a/w", Some(ready("Adopted")));
        m.record_tenant("a/w", Some(ready("Adopted")));
        m.record_tenant("a/w", Some(ready("Provisioned")));
        m.record_tenant("a/w", None);
        let text = m.encode().unwrap_or_default();
        assert!(
            !text.contains("Adopted"),
            "a state nobody is in leaves: {text}"
        );
        assert!(text.contains("tenant_storage_aws_calls_total{service=\"s3\",operation=\"HeadBucket\",mutating=\"false\",outcome=\"ok\"} 1"), "{text}");
        assert!(
            text.contains(
                "tenant_storage_reconciles_total{kind=\"TenantStorage\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("tenant_storage_tenants{ready=\"True\",reason=\"Provisioned\"} 2"),
            "{text}"
        );
    }

    /// The dashboard in `docs/grafana` asks only for series the operator exports.
    #[test]
    fn the_dashboard_names_only_exported_series() {
        // A family shows in the exposition once it has a series.
        let m = Metrics::default();
        m.count_reconcile("TenantStorage", "ok", 0.1);
        m.aws_calls
            .get_or_create(&AwsCallLabels {
                service: "s3".into(),
                operation: "PutBucketPolicy".into(),
                mutating: "true".into(),
                outcome: "ok".into(),
            })
            .inc();
        m.record_tenant(
            "a/x",
            Some(TenantLabels {
                ready: "True".into(),
                reason: "Provisioned".into(),
            }),
        );
        m.record_policy("eu", 1, 0);
        m.record_deletion("a/r", Some("Running".into()), 1);
        let region = RegionLabels {
            region: "eu-central-1".into(),
        };
        m.drift_events.get_or_create(&region).inc();
        m.drift_event_lag.get_or_create(&region).set(1);
        m.drift_event_polls
            .get_or_create(&PollLabels {
                region: "eu-central-1".into(),
                outcome: "ok".into(),
            })
            .inc();
        m.drift_corrected
            .get_or_create(&SettingLabels {
                setting: "bucketPolicy".into(),
            })
            .inc();
        let text = m.encode().unwrap_or_default();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let exported = |name: &str| {
            families.iter().any(|(family, kind)| {
                let suffixes: &[&str] = match *kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| name == format!("{family}{s}"))
            })
        };
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../docs/grafana/tenant-storage-operator.json"
        ))
        .unwrap_or_default();
        let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
        assert!(panels.len() >= 10, "{dashboard}");
        for panel in &panels {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let expr = target["expr"].as_str().unwrap_or_default();
                let found: Vec<&str> = expr
                    .match_indices("tenant_storage_")
                    .map(|(at, _)| {
                        let rest = &expr[at..];
                        let end = rest
                            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                            .unwrap_or(rest.len());
                        &rest[..end]
                    })
                    .collect();
                assert!(!found.is_empty(), "{expr}");
                for name in found {
                    assert!(exported(name), "{name} in panel {}", panel["title"]);
                }
            }
        }
    }
}
