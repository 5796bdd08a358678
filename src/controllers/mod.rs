//! One controller per kind on `kube::runtime::Controller`.

mod backup;
mod conditions;
mod data_deletion_request;
mod data_export_request;
mod drift_events;
mod error;
mod evidence;
mod job;
mod own_writes;
mod residency_policy;
mod role_snapshot;
mod schedule;
mod slow_settings;
mod tenant_storage;
mod toolkit;
mod watch_backoff;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use data_deletion_request::REQUEST_ANNOTATION;
use futures::{FutureExt, StreamExt, TryStreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

pub use crate::plan::naming::{DELETION_REQUEST_LABEL as REQUEST_LABEL, deletion_job_name};
pub use data_export_request::{EXPORT_REQUEST_LABEL, REFRESH_ANNOTATION};
pub use drift_events::EventSettings;
use drift_events::{Detection, DetectionReport};
pub use error::Error;
pub use tenant_storage::{FINALIZER, PAUSED, RECHECK};

use crate::api::{DataDeletionRequest, ResidencyPolicy, TenantStorage};
use crate::cloud::Cloud;
use crate::telemetry::Metrics;
use own_writes::OwnWrites;
use role_snapshot::RoleSnapshot;
use schedule::Schedule;
use slow_settings::SlowSettings;
use watch_backoff::WatchBackoff;

/// Operator-wide settings that shape every tenant.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_id: String,
    pub bucket_prefix: String,
    pub resync_period: Duration,
    /// Tenants resynced per second at most: the resync period stretches beyond that.
    pub resync_rate: f64,
    /// The resync period while drift events arrive from AWS.
    pub audit_period: Duration,
    /// Where drift events come from; none polls every tenant at the resync period.
    pub drift_events: Option<EventSettings>,
    /// Watch only these namespaces (all namespaces when empty).
    pub namespaces: Vec<String>,
    /// Reconciles running at once (per watched namespace), so a burst of tenants is paced
    /// instead of flooding AWS.
    pub max_concurrent_reconciles: u16,
    /// How deletion and export Jobs are run.
    pub jobs: JobSettings,
    /// Who may reach tenant data, besides each tenant's own role.
    pub access: AccessSettings,
}

/// Identities and the cluster's OIDC provider, for tenant roles and bucket policies.
#[derive(Clone, Debug, Default)]
pub struct AccessSettings {
    /// The cluster's OIDC provider; without it, `spec.access` cannot be honoured.
    pub oidc: Option<crate::plan::access::OidcProvider>,
    /// Our AWS account: tenant roles live there.
    pub account_id: String,
    /// The operator's principal ARN, as a customer's trust policy must name it.
    pub operator_arn: String,
    /// Principal ARN patterns always allowed on tenant buckets: the operator, the deletion
    /// jobs, break-glass admins.
    pub allowed_principals: Vec<String>,
}

/// Deletion and export Jobs: where they run, as whom, with which image and environment.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// Namespace of the Jobs (the operator's own).
    pub namespace: String,
    /// Service account of the Jobs: the only identity holding the purge permissions.
    pub service_account: String,
    /// Image of the Jobs (this operator's image).
    pub image: String,
    /// Environment passed to the Jobs (AWS endpoint, region, CA bundle, log settings).
    pub env: Vec<(String, String)>,
    /// The operator's CA bundle, mounted into the Jobs at the same path.
    pub ca_bundle: Option<MountedCaBundle>,
    /// Service account of export Jobs (same namespace, image and environment).
    pub export_service_account: String,
    /// The export Jobs' IAM principal: the export buckets let only it (and admins) read.
    pub export_principal_arn: Option<String>,
}

/// Where the operator's CA bundle comes from in its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaBundleSource {
    ConfigMap(String),
    Secret(String),
}

impl CaBundleSource {
    /// Mounted whole at `dir` (the bundle is the file named after its key).
    pub fn at(self, dir: &std::path::Path) -> MountedCaBundle {
        MountedCaBundle {
            source: self,
            dir: dir.display().to_string(),
        }
    }
}

/// A CA bundle's ConfigMap or Secret, mounted as a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountedCaBundle {
    pub source: CaBundleSource,
    pub dir: String,
}

/// What the cache keeps of a tenant, for the life of the process: what triggers and routes a
/// reconcile (name, namespace, resourceVersion, generation, finalizers, deletion, the spec),
/// what the drift index reads (region, bucket, key, role) and what the policies' status counts
/// (the `ResidencyCompliant` condition's status). A reconcile reads the whole object from the
/// API server. The rest of the status (conditions' messages, delegation documents),
/// annotations, labels and managedFields were two thirds of the cache: 2 of 3 KB a tenant.
fn slim(ts: &mut TenantStorage) {
    let meta = &mut ts.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
    meta.owner_references = None;
    if let Some(status) = ts.status.take() {
        let compliance = status
            .conditions
            .into_iter()
            .filter(|c| c.type_ == conditions::RESIDENCY_COMPLIANT)
            .map(|c| crate::api::Condition {
                type_: c.type_,
                status: c.status,
                reason: String::new(),
                message: String::new(),
                last_transition_time: String::new(),
                observed_generation: c.observed_generation,
            })
            .collect();
        ts.status = Some(crate::api::TenantStorageStatus {
            conditions: compliance,
            region: status.region,
            bucket_name: status.bucket_name,
            kms_key_arn: status.kms_key_arn,
            access: status.access.map(|a| crate::api::AccessStatus {
                role_arn: a.role_arn,
                level: a.level,
                ..crate::api::AccessStatus::default()
            }),
            ..crate::api::TenantStorageStatus::default()
        });
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub cloud: Cloud,
    pub metrics: Metrics,
    pub recorder: Events,
    pub settings: Settings,
    /// Operator-owned buckets (access logs, evidence) verified recently, by name.
    pub log_buckets: tenant_storage::VerifiedLogBuckets,
    /// Backups of a policy in a region ensured recently, by vault.
    pub backups: backup::Verified,
    /// TenantStorage status writes of ours, whose watch events trigger nothing.
    pub own_writes: OwnWrites,
    /// Every tenant role, swept at most twice per resync period.
    pub roles: RoleSnapshot,
    /// When each tenant is resynced or retried.
    pub schedule: Schedule,
    /// When each tenant's bucket tags and key rotation were last read.
    pub slow_settings: SlowSettings,
    /// Held while a request controller checks for the other kind's running Job and creates its
    /// own: a tenant's deletion and export never run at once.
    pub job_gate: tokio::sync::Mutex<()>,
}

/// Publishes Kubernetes Events. kube's `Recorder` keeps each event it sends for six minutes,
/// to count repeats into a series, and drops old ones only when it next publishes: with
/// thousands of tenants converging it held thousands of events (6 MB at 2,000 tenants), and
/// kept them once all were Ready. Normal events here mark one-off changes (created, deleted)
/// and go through a recorder that keeps nothing; warnings, which can repeat, are counted.
pub struct Events {
    client: Client,
    reporter: Reporter,
    warnings: Recorder,
}

impl Events {
    fn new(client: Client, reporter: Reporter) -> Self {
        Events {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    pub async fn publish(
        &self,
        event: &kube::runtime::events::Event,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
    ) -> Result<(), kube::Error> {
        match event.type_ {
            EventType::Warning => self.warnings.publish(event, regarding).await,
            EventType::Normal => {
                let once = Recorder::new(self.client.clone(), self.reporter.clone());
                once.publish(event, regarding).await
            }
        }
    }
}

/// A JSON merge patch (RFC 7386) from `old` to `new`: `new`, plus `null` for every field `old`
/// has and `new` lacks. Optional status fields are left out when empty, and a merge patch that
/// leaves a field out keeps the stored value; without the nulls a cleared field never clears.
pub(crate) fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                let value = match old.get(key) {
                    Some(before) => merge_patch(before, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), value);
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Waits until every watched scope can be listed with our credentials.
pub async fn wait_for_api(client: &Client, settings: &Settings) {
    for scope in scopes(settings) {
        let api: Api<TenantStorage> = scoped(client, scope.as_deref());
        while let Err(e) = api.list_metadata(&ListParams::default().limit(1)).await {
            warn!(error = %e, "cannot list TenantStorages yet");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// The namespaces the controllers watch: `None` for all of them, else one entry per distinct
/// namespace (two controllers on the same objects would race).
fn scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.namespaces.is_empty() {
        vec![None]
    } else {
        let unique: std::collections::BTreeSet<&String> = settings.namespaces.iter().collect();
        unique.into_iter().map(|ns| Some(ns.clone())).collect()
    }
}

fn scoped<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// ResidencyPolicies whose spec changed (a new generation) or that were deleted: what the tenants
/// bound to them depend on. Their status (which the operator itself keeps counting tenants) is
/// not.
fn policy_changes(
    client: &Client,
) -> impl futures::Stream<Item = Result<ResidencyPolicy, watcher::Error>> + Send + 'static {
    let mut generations: HashMap<String, Option<i64>> = HashMap::new();
    watcher(
        Api::<ResidencyPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .try_filter_map(move |event| {
        let changed = match event {
            watcher::Event::Delete(policy) => {
                generations.remove(&policy.name_any());
                Some(policy)
            }
            watcher::Event::Apply(policy) | watcher::Event::InitApply(policy) => {
                let generation = policy.metadata.generation;
                let seen = generations.insert(policy.name_any(), generation);
                (seen != Some(generation)).then_some(policy)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        };
        future::ready(Ok(changed))
    })
}

/// Runs the TenantStorage controller (one per watched namespace) until SIGTERM/SIGINT, letting
/// in-flight reconciles finish.
pub async fn run(client: Client, cloud: Cloud, metrics: Metrics, settings: Settings) {
    let scopes = scopes(&settings);
    let reporter = Reporter {
        controller: "tenant-storage-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let roles = RoleSnapshot::new(
        crate::plan::naming::role_path(&settings.cluster_id),
        settings.resync_period / 2,
    );
    let schedule = Schedule::new(
        settings.resync_period,
        settings.audit_period,
        settings.resync_rate,
    );
    let settings_audit = settings.audit_period;
    let ctx = Arc::new(Context {
        recorder: Events::new(client.clone(), reporter),
        client: client.clone(),
        cloud,
        metrics,
        settings,
        log_buckets: tokio::sync::Mutex::default(),
        backups: tokio::sync::Mutex::default(),
        own_writes: OwnWrites::default(),
        roles,
        schedule,
        slow_settings: SlowSettings::new(settings_audit),
        job_gate: tokio::sync::Mutex::default(),
    });
    let mut stores = Vec::new();
    let mut rechecks = Vec::new();
    let controllers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            // Tenants that drift events name, re-checked like a change.
            let (recheck, mut asked) = tokio::sync::mpsc::channel(1024);
            rechecks.push((scope.clone(), recheck));
            let asked = futures::stream::poll_fn(move |cx| asked.poll_recv(cx));
            let tenants: Api<TenantStorage> = scoped(&client, scope.as_deref());
            let (store, writer) = reflector::store();
            let own_writes = ctx.own_writes.clone();
            let trigger = watcher(tenants, watcher::Config::default().any_semantic())
                .modify(slim)
                .reflect(writer)
                .applied_objects()
                .try_filter(move |ts| {
                    let produced = own_writes.produced(ts);
                    async move { !produced.await }
                });
            let controller = Controller::for_stream(trigger, store)
                .with_config(
                    kube::runtime::controller::Config::default()
                        .concurrency(ctx.settings.max_concurrent_reconciles),
                )
                .trigger_backoff(WatchBackoff::default())
                .reconcile_on(asked);
            let store = controller.store();
            stores.push(store.clone());
            let policies = policy_changes(&client);
            controller
                .watches_stream(policies, move |policy: ResidencyPolicy| {
                    let name = policy.name_any();
                    store
                        .state()
                        .into_iter()
                        .filter(move |t| t.spec.policy_ref == name)
                        .map(|t| ObjectRef::from_obj(&*t))
                        .collect::<Vec<_>>()
                })
                // A deletion request changing state changes its tenant's bucket policy and may let
                // a blocked deletion finish.
                .watches(
                    scoped::<DataDeletionRequest>(&client, scope.as_deref()),
                    watcher::Config::default(),
                    |req: DataDeletionRequest| {
                        req.namespace().map(|ns| {
                            ObjectRef::<TenantStorage>::new(&req.spec.tenant_storage_ref.name)
                                .within(&ns)
                        })
                    },
                )
                .shutdown_on_signal()
                .run(tenant_storage::reconcile, error_policy, ctx.clone())
                .for_each(|res| async move {
                    if let Err(e) = res {
                        warn!(error = %e, "reconcile failed");
                    }
                })
        })
        .collect();
    let deletion_requests: Vec<_> = scopes
        .iter()
        .map(|scope| {
            request_controller(
                &ctx,
                scope.clone(),
                (REQUEST_LABEL, REQUEST_ANNOTATION),
                data_deletion_request::reconcile,
            )
        })
        .collect();
    let export_requests: Vec<_> = scopes
        .into_iter()
        .map(|scope| {
            request_controller(
                &ctx,
                scope,
                (
                    data_export_request::EXPORT_REQUEST_LABEL,
                    data_export_request::REQUEST_ANNOTATION,
                ),
                data_export_request::reconcile,
            )
        })
        .collect();
    let (detection, now) = tokio::sync::watch::channel(match ctx.settings.drift_events {
        Some(_) => Detection::Starting,
        None => Detection::Polling,
    });
    let resyncs = resync_when_due(ctx.clone(), rechecks.clone());
    let drift = match ctx.settings.drift_events.clone() {
        Some(events) => {
            drift_events::run(ctx.clone(), events, stores.clone(), rechecks, detection).boxed()
        }
        None => future::pending().boxed(),
    };
    let policy_status = residency_policy::maintain_status(
        client,
        stores,
        ctx.settings.namespaces.is_empty(),
        ctx.metrics.clone(),
        DetectionReport {
            now,
            resync: ctx.settings.resync_period,
            audit: ctx.settings.audit_period,
        },
    );
    tokio::select! {
        _ = futures::future::join3(
            futures::future::join_all(controllers),
            futures::future::join_all(deletion_requests),
            futures::future::join_all(export_requests),
        ) => {}
        () = policy_status => {}
        () = drift => {}
        () = resyncs => {}
    }
    info!("controllers stopped");
}

/// Sends each tenant whose resync is due to its controller, at its pace.
async fn resync_when_due(
    ctx: Arc<Context>,
    senders: Vec<(
        Option<String>,
        tokio::sync::mpsc::Sender<ObjectRef<TenantStorage>>,
    )>,
) {
    let due = &ctx.schedule.due;
    loop {
        let (tenants, next) = due.take(std::time::Instant::now());
        for tenant in tenants.iter().filter_map(|t| tenant_storage::key_ref(t)) {
            drift_events::recheck(&senders, tenant).await;
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = due.set.notified() => {}
                }
            }
            None => due.set.notified().await,
        }
    }
}

/// A request's reconcile failed: retried soon (its Job and checkpoint lose nothing).
fn request_error_policy<K>(_req: Arc<K>, _err: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

/// The controller of one kind of request (deletion, export) in one scope. Every request's Job
/// runs in the Jobs' namespace, labelled `label` and annotated `annotation: <ns>/<name>`: each
/// controller takes only the Jobs of requests in its own scope.
fn request_controller<K, F>(
    ctx: &Arc<Context>,
    scope: Option<String>,
    (label, annotation): (&'static str, &'static str),
    reconcile: fn(Arc<K>, Arc<Context>) -> F,
) -> impl std::future::Future<Output = ()> + use<K, F>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    let client = &ctx.client;
    let requests: Api<K> = scoped(client, scope.as_deref());
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ctx.settings.jobs.namespace);
    Controller::new(requests, watcher::Config::default())
        .trigger_backoff(WatchBackoff::default())
        .watches(
            jobs,
            watcher::Config::default().labels(label),
            move |job: Job| {
                let target = job.annotations().get(annotation)?.clone();
                let (ns, name) = target.split_once('/')?;
                scope
                    .as_deref()
                    .is_none_or(|scope| scope == ns)
                    .then(|| ObjectRef::<K>::new(name).within(ns))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, request_error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile failed");
            }
        })
}

/// Transient failures retry soon; a blocked deletion re-checks on the resync period (at most
/// every 30 s), since emptying a bucket triggers no Kubernetes event.
fn error_policy(ts: Arc<TenantStorage>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.slow_settings.forget(&tenant_storage::tenant_key(&ts));
    match err.origin() {
        Error::DeletionBlocked { .. } => {
            Action::requeue(ctx.settings.resync_period.min(Duration::from_secs(30)))
        }
        _ => {
            let backoff = if err.is_kubernetes_api() {
                schedule::KUBE_BACKOFF
            } else {
                schedule::CLOUD_BACKOFF
            };
            Action::requeue(
                ctx.schedule
                    .retry(&tenant_storage::tenant_key(&ts), backoff),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge_patch;

    #[test]
    fn the_cache_keeps_what_triggers_routes_and_counts() {
        let mut ts: crate::api::TenantStorage = serde_json::from_value(json!({
            "apiVersion": "storage.tenancy.dev/v1alpha1",
            "kind": "TenantStorage",
            "metadata": {
                "name": "t", "namespace": "acme", "uid": "u", "resourceVersion": "7", "generation": 2,
                "labels": {"app": "x"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "finalizers": ["storage.tenancy.dev/cleanup"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"policyRef": "eu", "access": {"serviceAccounts": ["app"]}},
            "status": {
                "observedGeneration": 2, "region": "eu-central-1", "bucketName": "b",
                "bucketArn": "arn:aws:s3:::b", "kmsKeyArn": "arn:k", "kmsKeyAlias": "alias/k",
                "access": {"roleArn": "arn:r", "serviceAccountAnnotation": "a", "serviceAccounts": ["app"], "level": "ReadWrite"},
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "m", "lastTransitionTime": "t", "observedGeneration": 2},
                    {"type": "ResidencyCompliant", "status": "False", "reason": "RegionNotAllowed", "message": "m", "lastTransitionTime": "t", "observedGeneration": 2}
                ]
            }
        }))
        .expect("a tenant");
        super::slim(&mut ts);
        assert_eq!(
            serde_json::to_value(&ts).ok(),
            Some(json!({
                "apiVersion": "storage.tenancy.dev/v1alpha1",
                "kind": "TenantStorage",
                "metadata": {
                    "name": "t", "namespace": "acme", "uid": "u", "resourceVersion": "7", "generation": 2,
                    "finalizers": ["storage.tenancy.dev/cleanup"]
                },
                "spec": serde_json::to_value(&ts.spec).unwrap_or_default(),
                "status": {
                    "region": "eu-central-1", "bucketName": "b", "kmsKeyArn": "arn:k",
                    "access": {"roleArn": "arn:r", "serviceAccountAnnotation": "", "serviceAccounts": [], "level": "ReadWrite"},
                    "conditions": [
                        {"type": "ResidencyCompliant", "status": "False", "reason": "", "message": "", "lastTransitionTime": "", "observedGeneration": 2}
                    ]
                }
            }))
        );
    }

    #[test]
    fn cleared_fields_become_null_and_the_rest_is_kept() {
        let old = json!({"access": {"roleArn": "r"}, "region": "eu", "delegation": {"bucketRegion": "x", "trustPolicy": "t"}});
        let new = json!({"region": "eu", "delegation": {"trustPolicy": "t2"}, "conditions": []});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"access": null, "region": "eu", "delegation": {"bucketRegion": null, "trustPolicy": "t2"}, "conditions": []})
        );
        assert_eq!(merge_patch(&serde_json::Value::Null, &new), new);
    }
}
