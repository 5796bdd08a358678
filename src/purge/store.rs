//! Checkpoints in ConfigMaps in the operator's namespace (the deletion Jobs' own), where no
//! tenant has rights: a namespace editor can neither forge a finished state nor alter the
//! manifest. Named after the request's Job (`<job>` is unique per request namespace and name):
//! `<job>-purge-state` (`state.json`), `<job>-purge-batch-<slot>` (write-ahead records of
//! batches in flight), `<job>-manifest-NNNN` and `<job>-locked-NNNN` (`entries`), and
//! `<job>-certificate` (`certificate.json`). All carry the request's uid as a label, which is how
//! chunks are found and how a record of another request of the same name is recognised. They
//! have no owner (an owner in another namespace is invalid), so they outlive the request.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};

use super::engine::{JournalKind, Store, StoreError};
use super::state::State;
use crate::api::DataDeletionRequest;
use crate::plan::naming::{
    DELETION_REQUEST_LABEL as REQUEST_LABEL, deletion_job_name, deletion_request_label,
};

const FIELD_MANAGER: &str = "tenant-storage-operator-purge";
/// Label: uid of the DataDeletionRequest a record belongs to.
pub const UID_LABEL: &str = "storage.tenancy.dev/deletion-request-uid";
/// Label: which record (`state`, `batch`, `manifest`, `locked`, `certificate`).
pub const RECORD_LABEL: &str = "storage.tenancy.dev/purge-record";
pub struct ConfigMapStore {
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

fn journal_name(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Manifest => "manifest",
        JournalKind::Locked => "locked",
    }
}

impl ConfigMapStore {
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
        Ok(ConfigMapStore {
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

    pub fn state_name(&self) -> String {
        format!("{}-purge-state", self.prefix)
    }

    fn batch_name(&self, slot: u32) -> String {
        format!("{}-purge-batch-{slot}", self.prefix)
    }

    pub fn chunk_name(&self, kind: JournalKind, index: u32) -> String {
        format!("{}-{}-{index:04}", self.prefix, journal_name(kind))
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
        self.config_maps
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(kube_err(format!("writing ConfigMap {name}")))?;
        Ok(())
    }

    async fn read(&self, name: &str, key: &str) -> Result<Option<(ConfigMap, String)>, StoreError> {
        let Some(cm) = self
            .config_maps
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading ConfigMap {name}")))?
        else {
            return Ok(None);
        };
        let value = cm
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
            .ok_or_else(|| StoreError::Invalid {
                what: format!("ConfigMap {name}"),
                detail: format!("has no data key {key}"),
            })?;
        Ok(Some((cm, value)))
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
        self.requests
            .patch_status(
                &self.request,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .map_err(kube_err(format!(
                "updating the status of DataDeletionRequest {}",
                self.request
            )))?;
        Ok(())
    }
}

impl Store for ConfigMapStore {
    async fn load_state(&self) -> Result<Option<State>, StoreError> {
        let name = self.state_name();
        match self.read(&name, "state.json").await? {
            None => Ok(None),
            Some((_, json)) => {
                serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|e| StoreError::Invalid {
                        what: format!("ConfigMap {name}"),
                        detail: e.to_string(),
                    })
            }
        }
    }

    async fn save_state(&self, state: &State) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|e| StoreError::Invalid {
            what: "checkpoint".to_owned(),
            detail: e.to_string(),
        })?;
        self.apply(
            &self.state_name(),
            "state",
            BTreeMap::from([("state.json".to_owned(), json)]),
        )
        .await
    }

    async fn progress(&self, state: &State) -> Result<(), StoreError> {
        self.patch_status(serde_json::json!({ "progress": state.progress() }))
            .await
    }

    async fn write_batch(&self, slot: u32, id: u64, lines: &str) -> Result<(), StoreError> {
        self.apply(
            &self.batch_name(slot),
            "batch",
            BTreeMap::from([
                ("batch".to_owned(), id.to_string()),
                ("entries".to_owned(), lines.to_owned()),
            ]),
        )
        .await
    }

    async fn read_batch(&self, slot: u32) -> Result<Option<(u64, String)>, StoreError> {
        let name = self.batch_name(slot);
        let Some((cm, lines)) = self.read(&name, "entries").await? else {
            return Ok(None);
        };
        let id = cm
            .data
            .as_ref()
            .and_then(|d| d.get("batch"))
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| StoreError::Invalid {
                what: format!("ConfigMap {name}"),
                detail: "has no numeric data key batch".to_owned(),
            })?;
        Ok(Some((id, lines)))
    }

    async fn write_chunk(
        &self,
        kind: JournalKind,
        index: u32,
        text: &str,
    ) -> Result<(), StoreError> {
        self.apply(
            &self.chunk_name(kind, index),
            journal_name(kind),
            BTreeMap::from([("entries".to_owned(), text.to_owned())]),
        )
        .await
    }

    async fn read_chunk(
        &self,
        kind: JournalKind,
        index: u32,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .read(&self.chunk_name(kind, index), "entries")
            .await?
            .map(|(_, text)| text))
    }

    async fn chunk_indices(&self, kind: JournalKind) -> Result<Vec<u32>, StoreError> {
        let selector = format!(
            "{UID_LABEL}={},{RECORD_LABEL}={}",
            self.uid,
            journal_name(kind)
        );
        let list = self
            .config_maps
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(format!("listing {} chunks", journal_name(kind))))?;
        let prefix = format!("{}-{}-", self.prefix, journal_name(kind));
        Ok(list
            .items
            .iter()
            .filter_map(|cm| cm.name_any().strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    async fn delete_chunk(&self, kind: JournalKind, index: u32) -> Result<(), StoreError> {
        let name = self.chunk_name(kind, index);
        match self
            .config_maps
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(StoreError::Kube {
                what: format!("deleting ConfigMap {name}"),
                source,
            }),
        }
    }
}
