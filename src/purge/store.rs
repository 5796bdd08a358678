//! Checkpoints in ConfigMaps in the request's namespace, each owned by the request:
//! `<request>-purge-state` (`state.json`), `<request>-purge-batch-<slot>` (write-ahead records
//! of batches in flight), `<request>-manifest-NNNN` and `<request>-locked-NNNN` (`entries`), and
//! `<request>-certificate` (`certificate.json`). All carry the request's uid as a label, which is
//! how chunks are found and how a record of another request of the same name is recognised.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::engine::{JournalKind, Store, StoreError};
use super::state::State;
use crate::api::DataDeletionRequest;

const FIELD_MANAGER: &str = "tenant-storage-operator-purge";
/// Label: uid of the DataDeletionRequest a record belongs to.
pub const UID_LABEL: &str = "storage.tenancy.dev/deletion-request-uid";
/// Label: which record (`state`, `batch`, `manifest`, `locked`, `certificate`).
pub const RECORD_LABEL: &str = "storage.tenancy.dev/purge-record";
/// Longest request name whose record names stay valid object names (253 characters).
const MAX_REQUEST_NAME: usize = 253 - "-purge-batch-".len() - 8;

pub struct ConfigMapStore {
    config_maps: Api<ConfigMap>,
    requests: Api<DataDeletionRequest>,
    request: String,
    uid: String,
    owner: OwnerReference,
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
    pub fn new(client: kube::Client, req: &DataDeletionRequest) -> Result<Self, StoreError> {
        let invalid = |detail: &str| StoreError::Invalid {
            what: format!("DataDeletionRequest {}", req.name_any()),
            detail: detail.to_owned(),
        };
        let namespace = req.namespace().ok_or_else(|| invalid("has no namespace"))?;
        let owner = req
            .controller_owner_ref(&())
            .ok_or_else(|| invalid("has no uid"))?;
        let request = req.name_any();
        if request.len() > MAX_REQUEST_NAME {
            return Err(invalid(&format!(
                "name is longer than {MAX_REQUEST_NAME} characters: the ConfigMaps named after it would be invalid"
            )));
        }
        Ok(ConfigMapStore {
            config_maps: Api::namespaced(client.clone(), &namespace),
            requests: Api::namespaced(client, &namespace),
            uid: owner.uid.clone(),
            request,
            owner,
        })
    }

    pub fn state_name(&self) -> String {
        format!("{}-purge-state", self.request)
    }

    fn batch_name(&self, slot: u32) -> String {
        format!("{}-purge-batch-{slot}", self.request)
    }

    pub fn chunk_name(&self, kind: JournalKind, index: u32) -> String {
        format!("{}-{}-{index:04}", self.request, journal_name(kind))
    }

    pub fn certificate_name(&self) -> String {
        format!("{}-certificate", self.request)
    }

    /// Whether `name` is one this request's records would use.
    fn is_record_name(&self, name: &str) -> bool {
        if name == self.state_name() || name == self.certificate_name() {
            return true;
        }
        let Some(rest) = name
            .strip_prefix(self.request.as_str())
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        ["purge-batch-", "manifest-", "locked-"].iter().any(|p| {
            rest.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    }

    /// Refuses to write over a ConfigMap that is not this request's: a user's, or the kept
    /// record of an earlier (deleted) request with the same name.
    pub async fn check_names(&self) -> Result<(), StoreError> {
        let list = self
            .config_maps
            .list(&ListParams::default())
            .await
            .map_err(kube_err("listing ConfigMaps".to_owned()))?;
        for cm in list.items {
            let name = cm.name_any();
            if !self.is_record_name(&name) {
                continue;
            }
            let owner = cm.labels().get(UID_LABEL).cloned().unwrap_or_default();
            if owner != self.uid {
                return Err(StoreError::Invalid {
                    what: format!("ConfigMap {name}"),
                    detail: format!(
                        "it is not this request's (labelled {UID_LABEL}={owner:?}); it may be the kept record of an earlier request of the same name. Keep it and use another request name"
                    ),
                });
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        name: &str,
        record: &str,
        data: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([
                    (UID_LABEL.to_owned(), self.uid.clone()),
                    (RECORD_LABEL.to_owned(), record.to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "tenant-storage-operator".to_owned(),
                    ),
                ])),
                owner_references: Some(vec![self.owner.clone()]),
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
        let prefix = format!("{}-{}-", self.request, journal_name(kind));
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
