//! What a purge keeps in the cluster: the request's status (the fields the Job owns) and the
//! certificate, `<job>-certificate` (`certificate.json`), a ConfigMap in the operator's namespace
//! (the deletion Jobs' own), where no tenant has rights. `<job>` is unique per request namespace
//! and name; the ConfigMap carries the request's uid as a label, which is how a record of another
//! request of the same name is recognised. It has no owner (an owner in another namespace is
//! invalid), so it outlives the request. The journal is in the evidence bucket
//! ([`super::journal`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use tracing::warn;

use super::engine::StoreError;
use crate::api::DataDeletionRequest;
use crate::plan::naming::{
    DELETION_REQUEST_LABEL as REQUEST_LABEL, deletion_job_name, deletion_request_label,
};

const FIELD_MANAGER: &str = "tenant-storage-operator-purge";
/// Label: uid of the DataDeletionRequest a record belongs to.
pub const UID_LABEL: &str = "storage.tenancy.dev/deletion-request-uid";
/// Label: which record (`certificate`).
pub const RECORD_LABEL: &str = "storage.tenancy.dev/purge-record";

pub struct RequestRecords {
    config_maps: Api<ConfigMap>,
    requests: Api<DataDeletionRequest>,
    request: String,
    /// Prefix of every record's name: the request's Job name.
    prefix: String,
    request_label: String,
    uid: String,
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> StoreError {
    move |source| StoreError::Kube { what, source }
}

/// How long a write to the API server is retried when it failed for a passing reason (the server
/// restarting, throttling, a conflict on a write that carries no precondition): longer than a
/// control-plane restart, shorter than the request's fence, which stops the pod anyway.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `write` until it succeeds, fails for good, or [`PATIENCE`] runs out. Every write here is
/// idempotent (a server-side apply, a merge patch), so repeating one that did land is harmless.
pub(crate) async fn persist<T, Fut>(what: &str, write: impl Fn() -> Fut) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match write().await {
            Err(e) if passing(&e) && started.elapsed() + pause < PATIENCE => {
                warn!(error = %e, "{what}: the API server did not take it; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            result => return result.map_err(kube_err(what.to_owned())),
        }
    }
}

/// Whether an error says nothing about the write itself, so that repeating it may succeed.
fn passing(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl RequestRecords {
    /// The records of `req`, kept in `records_namespace`.
    pub fn new(
        client: kube::Client,
        req: &DataDeletionRequest,
        records_namespace: &str,
    ) -> Result<Self, StoreError> {
        let invalid = |detail: &str| StoreError::Invalid {
            what: format!("DataDeletionRequest {}", req.name_any()),
            detail: detail.to_owned(),
        };
        let namespace = req.namespace().ok_or_else(|| invalid("has no namespace"))?;
        let uid = req.uid().ok_or_else(|| invalid("has no uid"))?;
        let request = req.name_any();
        Ok(RequestRecords {
            config_maps: Api::namespaced(client.clone(), records_namespace),
            requests: Api::namespaced(client, &namespace),
            prefix: deletion_job_name(&namespace, &request),
            request_label: deletion_request_label(&namespace, &request),
            request,
            uid,
        })
    }

    pub fn namespace(&self) -> &str {
        self.config_maps.namespace().unwrap_or_default()
    }

    pub fn certificate_name(&self) -> String {
        format!("{}-certificate", self.prefix)
    }

    /// Refuses to write over the kept records of an earlier (deleted) request with the same
    /// namespace and name: they are that request's evidence.
    pub async fn check_names(&self) -> Result<(), StoreError> {
        let selector = format!("{REQUEST_LABEL}={}", self.request_label);
        let list = self
            .config_maps
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("listing ConfigMaps".to_owned()))?;
        let earlier = list
            .items
            .iter()
            .find(|cm| cm.labels().get(UID_LABEL) != Some(&self.uid));
        if let Some(cm) = earlier {
            let owner = cm.labels().get(UID_LABEL).cloned().unwrap_or_default();
            return Err(StoreError::Invalid {
                what: format!("ConfigMap {}/{}", self.namespace(), cm.name_any()),
                detail: format!(
                    "it is not this request's (labelled {UID_LABEL}={owner:?}); it is the kept record of an earlier request of the same name. Keep it and use another request name"
                ),
            });
        }
        // Earlier versions kept the checkpoint and journal in ConfigMaps: resuming without them
        // would certify only what this run deletes.
        let journal = list.items.iter().find(|cm| {
            cm.labels()
                .get(RECORD_LABEL)
                .is_some_and(|r| r != "certificate")
        });
        if let Some(cm) = journal {
            return Err(StoreError::Invalid {
                what: format!("ConfigMap {}/{}", self.namespace(), cm.name_any()),
                detail: "this request was started by an older version of the operator, which kept its checkpoint in ConfigMaps: finish (or re-publish) it with that version, or delete it and file a new one".to_owned(),
            });
        }
        Ok(())
    }

    async fn apply(
        &self,
        name: &str,
        record: &str,
        data: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let labels = BTreeMap::from([
            (UID_LABEL.to_owned(), self.uid.clone()),
            (REQUEST_LABEL.to_owned(), self.request_label.clone()),
            (RECORD_LABEL.to_owned(), record.to_owned()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "tenant-storage-operator".to_owned(),
            ),
        ]);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&cm);
        persist(&format!("writing ConfigMap {name}"), || {
            self.config_maps.patch(name, &params, &patch)
        })
        .await?;
        Ok(())
    }

    pub async fn write_certificate(&self, json: &str) -> Result<String, StoreError> {
        let name = self.certificate_name();
        self.apply(
            &name,
            "certificate",
            BTreeMap::from([("certificate.json".to_owned(), json.to_owned())]),
        )
        .await?;
        Ok(name)
    }

    /// Merge-patches `status` fields of the request (only those the purge owns).
    pub async fn patch_status(&self, status: serde_json::Value) -> Result<(), StoreError> {
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        let params = PatchParams::default();
        persist(
            &format!(
                "updating the status of DataDeletionRequest {}",
                self.request
            ),
            || self.requests.patch_status(&self.request, &params, &patch),
        )
        .await?;
        Ok(())
    }
}
