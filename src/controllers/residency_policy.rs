//! ResidencyPolicy status: how many tenants are bound to a policy and how many of them are out of
//! compliance, computed from the TenantStorage caches (no API or cloud calls per tenant), and
//! how the operator learns of changes made in AWS to them (`DriftDetection`).

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::Error;
use super::conditions::{self, READY, RESIDENCY_COMPLIANT};
use super::drift_events::DetectionReport;
use super::toolkit::StatusPatch;
use crate::api::{ConditionStatus, ResidencyPolicy, ResidencyPolicyStatus, TenantStorage};
use crate::telemetry::Metrics;

/// How often policy statuses are recomputed from the caches.
const PERIOD: Duration = Duration::from_secs(3);
/// How changes made in AWS are learned: from CloudTrail, or by polling every tenant.
const DRIFT_DETECTION: &str = "DriftDetection";
/// Non-compliant tenants named in the `Compliant` condition message.
const NAMED: usize = 5;

/// Keeps every policy's status current until the future is dropped. When the operator watches
/// only some namespaces, it reports on the policies its tenants use (and keeps reporting on a
/// policy it has written to), so operators sharing a cluster do not overwrite each other.
pub async fn maintain_status(
    client: Client,
    tenants: Vec<Store<TenantStorage>>,
    all_namespaces: bool,
    metrics: Metrics,
    detection: DetectionReport,
) {
    let api: Api<ResidencyPolicy> = Api::all(client);
    let (policies, writer) = reflector::store();
    let watch = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .backoff(super::watch_backoff::WatchBackoff::default())
        .for_each(|_| futures::future::ready(()));
    let update = async {
        let mut reported: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tick.tick().await;
            let all: Vec<_> = tenants.iter().flat_map(Store::state).collect();
            for policy in policies.state() {
                let name = policy.name_any();
                let bound: Vec<_> = all.iter().filter(|t| t.spec.policy_ref == name).collect();
                if bound.is_empty() && !all_namespaces && !reported.contains(&name) {
                    continue;
                }
                let non_compliant: Vec<String> = bound
                    .iter()
                    .filter(|t| {
                        t.status.as_ref().is_some_and(|s| {
                            s.conditions.iter().any(|c| {
                                c.type_ == RESIDENCY_COMPLIANT && c.status == ConditionStatus::False
                            })
                        })
                    })
                    .map(|t| format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any()))
                    .collect();
                metrics.record_policy(&name, bound.len(), non_compliant.len());
                let status =
                    next_status(&policy, bound.len(), &non_compliant, detection.condition());
                match save(&api, &policy, &status).await {
                    Ok(()) => {
                        reported.insert(name);
                    }
                    Err(e) => warn!(policy = %name, error = %e, "could not update policy status"),
                }
            }
        }
    };
    tokio::select! {
        () = watch => {}
        () = update => {}
    }
}

/// Writes `status` if it differs from the stored one.
async fn save(
    api: &Api<ResidencyPolicy>,
    policy: &ResidencyPolicy,
    status: &ResidencyPolicyStatus,
) -> Result<(), Error> {
    if let Some(patch) = StatusPatch::between(policy.status.as_ref(), status)? {
        patch.send(api, &policy.name_any()).await?;
    }
    Ok(())
}

fn next_status(
    policy: &ResidencyPolicy,
    bound: usize,
    non_compliant: &[String],
    (detection, detection_reason, detection_message): (ConditionStatus, &str, String),
) -> ResidencyPolicyStatus {
    let mut status = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation.unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    status.observed_generation = Some(generation);
    status.bound_tenants = i32::try_from(bound).unwrap_or(i32::MAX);
    status.non_compliant_tenants = i32::try_from(non_compliant.len()).unwrap_or(i32::MAX);
    conditions::set(
        &mut status.conditions,
        READY,
        ConditionStatus::True,
        "Evaluated",
        format!("{bound} TenantStorage(s) bound"),
        generation,
        &now,
    );
    conditions::set(
        &mut status.conditions,
        DRIFT_DETECTION,
        detection,
        detection_reason,
        detection_message,
        generation,
        &now,
    );
    if non_compliant.is_empty() {
        conditions::set(
            &mut status.conditions,
            "Compliant",
            ConditionStatus::True,
            "AllTenantsCompliant",
            "every bound tenant satisfies the policy",
            generation,
            &now,
        );
    } else {
        let mut named = non_compliant
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if non_compliant.len() > NAMED {
            named.push_str(", ...");
        }
        conditions::set(
            &mut status.conditions,
            "Compliant",
            ConditionStatus::False,
            "TenantsOutOfCompliance",
            format!(
                "{} tenant(s) out of compliance ({named}); their data is never moved automatically: see each tenant's ResidencyCompliant condition",
                non_compliant.len()
            ),
            generation,
            &now,
        );
    }
    status
}
