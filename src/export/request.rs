//! `tenant-storage-operator export`: one DataExportRequest, from its tenant's bucket to the
//! archive, the manifest, the signed export record and a download link. Writes only the status
//! fields the Job owns: `phase` (Running, then Succeeded or Failed), `progress` and `result`.
//! The link goes to the operator through a Secret in the operator's namespace, never status.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::{info, warn};

use super::engine::{Chunks, Engine, ExportError, Journal, Layout, Source, Target};
use super::link;
use super::state::{FORMAT, State};
use crate::api::{
    DataExportRequest, EncryptionMode, EvidenceLocation, ExportPhase, ExportProgress, ExportResult,
    ExportVersions, ResidencyPolicy, TenantStorage,
};
use crate::cloud::{CloudError, Regional, Sealing, VersionPage};
use crate::plan::TenantIdentity;
use crate::purge::{BucketObjects, Marker, Objects, persist};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("refusing to run: {0}")]
    Refused(String),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("AWS: {0}")]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Purge(#[from] crate::purge::RequestError),
    #[error(transparent)]
    Store(#[from] crate::purge::StoreError),
}

/// Which request, where its outputs go.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    pub request: String,
    /// The operator's namespace: where the link is handed over.
    pub records_namespace: String,
    pub cluster_id: String,
    pub export_bucket: String,
    pub region: String,
    pub evidence: crate::purge::EvidenceTarget,
    /// Only sign a fresh link for a finished export, answering this refresh annotation value.
    pub refresh: Option<String>,
    pub part_bytes: usize,
}

/// Runs (or resumes) the export of one request, or, once finished, signs a fresh link.
pub async fn run(
    client: kube::Client,
    cloud: &crate::cloud::Cloud,
    opts: &Options,
) -> Result<(), RunError> {
    let ns = opts.namespace.as_str();
    let requests: Api<DataExportRequest> = Api::namespaced(client.clone(), ns);
    let req = persist("reading the DataExportRequest", || {
        requests.get_opt(&opts.request)
    })
    .await?
    .ok_or_else(|| {
        RunError::Refused(format!(
            "DataExportRequest {ns}/{} does not exist",
            opts.request
        ))
    })?;
    let uid = req
        .uid()
        .ok_or_else(|| RunError::Refused("the request has no metadata.uid".into()))?;
    let tenant = tenant_of(&client, &req, ns).await?;
    let policies: Api<ResidencyPolicy> = Api::all(client.clone());
    let policy = persist("reading the ResidencyPolicy", || {
        policies.get_opt(&tenant.spec.policy_ref)
    })
    .await?
    .ok_or_else(|| {
        RunError::Refused(format!(
            "ResidencyPolicy {} (the tenant's) does not exist: its link lifetime and export retention are needed",
            tenant.spec.policy_ref
        ))
    })?;
    let source = tenant_bucket(cloud, opts, &tenant, ns).await?;
    let status = StatusWriter::new(requests, &opts.request);
    let layout = layout(ns, &tenant.name_any(), &opts.request, &uid);
    let regional = cloud.region(&opts.region);
    let engine = Engine::new(
        source,
        ExportBucket {
            regional: regional.clone(),
            bucket: opts.export_bucket.clone(),
            sealing: sealing(&tenant)?,
        },
        BucketJournal {
            regional: regional.clone(),
            bucket: opts.export_bucket.clone(),
            root: format!("journal/{ns}/{}/{}/{uid}/", tenant.name_any(), opts.request),
            status: &status,
        },
        opts.part_bytes,
    );
    let mut state = load(&engine, &req, &uid).await?;
    if state.finished.is_none() {
        if opts.refresh.is_some() {
            return Err(RunError::Refused(
                "the export has not finished: there is no archive to link to yet".into(),
            ));
        }
        info!(namespace = ns, request = %opts.request, resumed = state.upload.is_some(), "export starting");
        status
            .patch(json!({"phase": ExportPhase::Running, "progress": progress(&state)}))
            .await?;
        let header = |state: &State, sha: &str| header(&req, &tenant, &layout, state, sha);
        if let Err(e) = engine.run(&mut state, &layout, header).await {
            if let Err(patch) = status.patch(json!({"phase": ExportPhase::Failed})).await {
                warn!(error = %patch, "could not record the failure in status");
            }
            return Err(e.into());
        }
    }
    let result = publish(&engine, opts, &req, &tenant, &layout, &mut state).await?;
    let expires_at = link::expiry(&state, policy.spec.export.retention_days)?;
    let max_age = policy.spec.transport.presigned_url_max_age_seconds;
    let handoff = link::Handoff {
        client: &client,
        records_namespace: &opts.records_namespace,
        namespace: ns,
        request: &opts.request,
        uid: &uid,
        refresh: opts.refresh.as_deref(),
    };
    handoff
        .sign_and_hand_over(&regional, &opts.export_bucket, &layout, expires_at, max_age)
        .await?;
    status
        .patch(json!({
            "phase": ExportPhase::Succeeded,
            "progress": progress(&state),
            "result": result,
        }))
        .await?;
    info!(
        objects = state.objects,
        bytes = state.bytes,
        "export finished"
    );
    Ok(())
}

/// The request's TenantStorage: in its namespace, managed (a delegated tenant's data is in the
/// customer's own bucket already), provisioned.
async fn tenant_of(
    client: &kube::Client,
    req: &DataExportRequest,
    ns: &str,
) -> Result<TenantStorage, RunError> {
    let target = &req.spec.tenant_storage_ref;
    if let Some(other) = target.namespace.as_deref().filter(|o| *o != ns) {
        return Err(RunError::Refused(format!(
            "spec.tenantStorageRef.namespace is {other:?}: a request only exports data of a TenantStorage in its own namespace ({ns})"
        )));
    }
    if req.status.as_ref().and_then(|s| s.phase) == Some(ExportPhase::Rejected) {
        return Err(RunError::Refused(
            "the request was rejected (see its Accepted condition)".into(),
        ));
    }
    let tenants: Api<TenantStorage> = Api::namespaced(client.clone(), ns);
    let tenant = persist("reading the TenantStorage", || {
        tenants.get_opt(&target.name)
    })
    .await?
    .ok_or_else(|| {
        RunError::Refused(format!("TenantStorage {ns}/{} does not exist", target.name))
    })?;
    if tenant.spec.delegated.is_some() {
        return Err(RunError::Refused(
            "the TenantStorage is delegated: its data is in the customer's own bucket".into(),
        ));
    }
    Ok(tenant)
}

fn sealing(tenant: &TenantStorage) -> Result<Sealing, RunError> {
    let status = tenant.status.clone().unwrap_or_default();
    if status.encryption_mode == Some(EncryptionMode::S3Managed) {
        return Ok(Sealing::S3Managed);
    }
    status
        .kms_key_arn
        .map(Sealing::TenantKey)
        .ok_or_else(|| RunError::Refused("the TenantStorage has no status.kmsKeyArn yet".into()))
}

/// A checkpoint of this request, or a fresh state.
async fn load<S: Source, T: Target>(
    engine: &Engine<S, T, BucketJournal<'_>>,
    req: &DataExportRequest,
    uid: &str,
) -> Result<State, RunError> {
    match engine.journal().load().await? {
        None => Ok(State::new(
            uid,
            &req.spec.scope.listing_prefixes(),
            req.spec.versions == ExportVersions::All,
            super::now(),
        )),
        Some(s) if s.uid != uid || s.format != FORMAT => Err(RunError::Refused(format!(
            "the journal holds a checkpoint of request uid {} (format {}), not of this request; delete it or file a new request",
            s.uid, s.format
        ))),
        Some(s) => Ok(s),
    }
}

pub fn layout(ns: &str, tenant: &str, request: &str, uid: &str) -> Layout {
    let root = format!("exports/{ns}/{tenant}/{request}/{uid}/");
    Layout {
        archive: format!("{root}archive.tar"),
        manifest: format!("{root}manifest.jsonl"),
    }
}

fn progress(state: &State) -> ExportProgress {
    ExportProgress {
        objects: state.objects,
        bytes: state.bytes,
        start_time: Some(state.started.clone()),
        completion_time: state.finished.as_ref().map(|f| f.completed.clone()),
    }
}

/// The manifest's first line: what was exported, for whom, and the archive's digest.
fn header(
    req: &DataExportRequest,
    tenant: &TenantStorage,
    layout: &Layout,
    state: &State,
    archive_sha256: &str,
) -> String {
    json!({
        "kind": "tenant-storage-operator/export-manifest",
        "request": {"namespace": req.namespace(), "name": req.name_any(), "uid": req.uid()},
        "tenant": tenant.name_any(),
        "scope": req.spec.scope,
        "versions": req.spec.versions,
        "archive": {"key": layout.archive, "bytes": state.archive_bytes, "sha256": archive_sha256},
        "objects": state.objects,
        "bytes": state.bytes,
        "started": state.started,
    })
    .to_string()
}

/// Writes the signed export record beside the deletion evidence, once (the checkpoint keeps
/// where it is, as the Job may not read evidence back), and returns what status shows.
async fn publish<S: Source, T: Target>(
    engine: &Engine<S, T, BucketJournal<'_>>,
    opts: &Options,
    req: &DataExportRequest,
    tenant: &TenantStorage,
    layout: &Layout,
    state: &mut State,
) -> Result<ExportResult, RunError> {
    let finished = state
        .finished
        .clone()
        .ok_or_else(|| RunError::Refused("the export has not finished".into()))?;
    let mut result = ExportResult {
        bucket: opts.export_bucket.clone(),
        region: opts.region.clone(),
        archive_key: layout.archive.clone(),
        archive_sha256: finished.archive_sha256.clone(),
        archive_bytes: state.archive_bytes,
        manifest_key: layout.manifest.clone(),
        manifest_sha256: finished.manifest_sha256.clone(),
        record: None,
    };
    if state.record.is_none() {
        let record = record(opts, req, tenant, state, &result, &finished);
        state.record = Some(sign_record(engine, opts, req, record).await?);
        engine.journal().save(state).await?;
    }
    result.record = state.record.clone();
    Ok(result)
}

/// What the record says: who asked, why, what was exported and its digests.
fn record(
    opts: &Options,
    req: &DataExportRequest,
    tenant: &TenantStorage,
    state: &State,
    result: &ExportResult,
    finished: &super::state::Finished,
) -> String {
    json!({
        "kind": "tenant-storage-operator/export-record",
        "request": {"namespace": opts.namespace, "name": opts.request, "uid": req.uid()},
        "requestedBy": req.spec.requested_by,
        "reason": req.spec.reason,
        "tenant": {
            "name": tenant.name_any(),
            "bucket": tenant.status.as_ref().and_then(|s| s.bucket_name.clone()),
            "region": opts.region,
        },
        "scope": req.spec.scope,
        "versions": req.spec.versions,
        "format": req.spec.format,
        "objects": state.objects,
        "bytes": state.bytes,
        "export": result,
        "manifestBytes": finished.manifest_bytes,
        "started": state.started,
        "completed": finished.completed,
        "clusterId": opts.cluster_id,
    })
    .to_string()
}

/// Signs the record's exact bytes with the region's signing key and writes record and
/// signature under Object Lock until the policy's evidence retention ends.
async fn sign_record<S: Source, T: Target>(
    engine: &Engine<S, T, BucketJournal<'_>>,
    opts: &Options,
    req: &DataExportRequest,
    record: String,
) -> Result<EvidenceLocation, RunError> {
    let regional = &engine.journal().regional;
    let evidence = &opts.evidence;
    let uid = req.uid().unwrap_or_default();
    let key = format!(
        "exports/{}/{}/{uid}/record.json",
        opts.namespace, opts.request
    );
    let signature = regional
        .sign_digest(&evidence.signing_key, &Sha256::digest(record.as_bytes()))
        .await?;
    let until = crate::purge::retain_until(evidence.retention_days)?;
    let version_id = regional
        .put_locked_object(
            &evidence.bucket,
            &key,
            record.into_bytes(),
            "application/json",
            &until,
        )
        .await?;
    regional
        .put_locked_object(
            &evidence.bucket,
            &format!("{key}.sig"),
            signature,
            "application/octet-stream",
            &until,
        )
        .await?;
    Ok(record_location(evidence, &key, version_id, &until))
}

fn record_location(
    evidence: &crate::purge::EvidenceTarget,
    key: &str,
    version_id: String,
    retain_until: &str,
) -> EvidenceLocation {
    EvidenceLocation {
        bucket: evidence.bucket.clone(),
        region: evidence.region.clone(),
        key: key.to_owned(),
        version_id,
        signing_key_arn: evidence.signing_key.clone(),
        retain_until: retain_until.to_owned(),
    }
}

/// The tenant's bucket, once proven the tenant's, through the purge's adapter. Status is what
/// the operator wrote, but whoever can write a status subresource could point it at any bucket:
/// the bucket (and the key exports are sealed with) must carry the tenant's ownership tags, in
/// the export's region.
async fn tenant_bucket(
    cloud: &crate::cloud::Cloud,
    opts: &Options,
    tenant: &TenantStorage,
    ns: &str,
) -> Result<BucketObjects, RunError> {
    let status = tenant.status.clone().unwrap_or_default();
    let missing =
        |field: &str| RunError::Refused(format!("the TenantStorage has no status.{field} yet"));
    let bucket = status.bucket_name.ok_or_else(|| missing("bucketName"))?;
    let region = status.region.ok_or_else(|| missing("region"))?;
    if region != opts.region {
        return Err(RunError::Refused(format!(
            "the tenant's bucket is in {region}, the export bucket {} in {}: exports stay in the tenant's region",
            opts.export_bucket, opts.region
        )));
    }
    let regional = cloud.region(&region);
    let identity = TenantIdentity {
        cluster_id: opts.cluster_id.clone(),
        namespace: ns.to_owned(),
        name: tenant.name_any(),
    };
    let key = match sealing(tenant)? {
        Sealing::TenantKey(arn) => Some(arn),
        Sealing::S3Managed => None,
    };
    crate::purge::prove_ownership(
        &regional,
        &identity,
        &bucket,
        key.as_deref(),
        "Nothing was exported",
    )
    .await?;
    Ok(BucketObjects::new(regional, bucket))
}

impl Source for BucketObjects {
    async fn list(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        max_keys: i32,
    ) -> Result<VersionPage, CloudError> {
        Objects::list(self, prefix, after, max_keys).await
    }

    async fn read(&self, key: &str, version_id: &str, from: u64) -> Result<Chunks, CloudError> {
        self.regional()
            .read_version(self.bucket(), key, version_id, from)
            .await
    }
}

/// The export bucket of the tenant's policy and region.
struct ExportBucket {
    regional: Regional,
    bucket: String,
    sealing: Sealing,
}

impl Target for ExportBucket {
    async fn start_upload(&self, key: &str) -> Result<String, CloudError> {
        self.regional
            .start_upload(&self.bucket, key, &self.sealing)
            .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String, CloudError> {
        self.regional
            .upload_part(&self.bucket, key, upload_id, number, body)
            .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<(), CloudError> {
        self.regional
            .complete_upload(&self.bucket, key, upload_id, parts)
            .await
    }

    async fn uploads(&self, key: &str) -> Result<Vec<String>, CloudError> {
        let mut ids = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let marker = after.as_ref().map(|(k, u)| (k.as_str(), u.as_str()));
            let (page, next) = self
                .regional
                .list_uploads(&self.bucket, key, marker, 1000)
                .await?;
            ids.extend(page.into_iter().filter(|(k, _)| k == key).map(|(_, id)| id));
            match next {
                Some(n) => after = Some(n),
                None => return Ok(ids),
            }
        }
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), CloudError> {
        self.regional
            .abort_upload(&self.bucket, key, upload_id)
            .await
            .map(|_| ())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, CloudError> {
        self.regional.object_size(&self.bucket, key).await
    }
}

/// The request's status, patched through the API server's retries.
pub struct StatusWriter {
    requests: Api<DataExportRequest>,
    name: String,
    last: Mutex<Option<Instant>>,
}

/// How often checkpoints are mirrored in status.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl StatusWriter {
    fn new(requests: Api<DataExportRequest>, name: &str) -> Self {
        StatusWriter {
            requests,
            name: name.to_owned(),
            last: Mutex::new(None),
        }
    }

    async fn patch(&self, status: serde_json::Value) -> Result<(), crate::purge::StoreError> {
        let patch = Patch::Merge(json!({ "status": status }));
        let params = PatchParams::default();
        persist(
            &format!("updating the status of DataExportRequest {}", self.name),
            || self.requests.patch_status(&self.name, &params, &patch),
        )
        .await?;
        Ok(())
    }
}

/// Checkpoints and manifest chunks in the export bucket, under `journal/`.
struct BucketJournal<'a> {
    regional: Regional,
    bucket: String,
    root: String,
    status: &'a StatusWriter,
}

fn journal_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Journal(e.to_string())
}

impl Journal for BucketJournal<'_> {
    async fn load(&self) -> Result<Option<State>, ExportError> {
        let key = format!("{}state.json", self.root);
        match self.regional.get_object_opt(&self.bucket, &key).await? {
            None => Ok(None),
            Some((bytes, _)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(journal_err),
        }
    }

    async fn save(&self, state: &State) -> Result<(), ExportError> {
        let body = serde_json::to_vec(state).map_err(journal_err)?;
        let key = format!("{}state.json", self.root);
        self.regional.put_object(&self.bucket, &key, body).await?;
        Ok(())
    }

    async fn put_chunk(&self, n: u32, lines: &str) -> Result<(), ExportError> {
        let key = format!("{}manifest.{n:06}.jsonl", self.root);
        let body = lines.as_bytes().to_vec();
        self.regional.put_object(&self.bucket, &key, body).await?;
        Ok(())
    }

    async fn chunk(&self, n: u32) -> Result<String, ExportError> {
        let key = format!("{}manifest.{n:06}.jsonl", self.root);
        let (bytes, _) = self
            .regional
            .get_object_opt(&self.bucket, &key)
            .await?
            .ok_or_else(|| journal_err(format!("manifest chunk {key} is missing")))?;
        String::from_utf8(bytes).map_err(journal_err)
    }

    async fn progress(&self, state: &State) -> Result<(), ExportError> {
        let due = {
            let mut last = self.status.last.lock().unwrap_or_else(|e| e.into_inner());
            let due =
                last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || state.finished.is_some();
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.status
                .patch(json!({"progress": progress(state)}))
                .await
                .map_err(journal_err)?;
        }
        Ok(())
    }
}
