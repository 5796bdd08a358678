//! `tenant-storage-operator purge`: one DataDeletionRequest, from its tenant's bucket to its
//! certificate. Writes only the status fields the Job owns: `phase` (Running, then Succeeded,
//! Blocked or Failed), `progress` and `certificate`.

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use serde::Serialize;
use serde_json::json;
use thiserror::Error;
use tracing::{info, warn};

use super::BucketObjects;
use super::engine::{Engine, PurgeError, Store, StoreError};
use super::evidence;
use super::journal::BucketJournal;
use super::manifest;
use super::records::RequestRecords;
use super::state::{self, Counts, EvidenceRecord, ExportsDeleted, Shred, State, Verification};
use crate::api::{
    CertificateSummary, DataDeletionRequest, DataScope, DeletionMethod, DeletionPhase,
    EncryptionMode, LockedVersion, ResidencyPolicy, TenantStorage,
};
use crate::cloud::{Cloud, CloudError, ObservedTags, Regional};
use crate::evidence::{EvidenceSection, Location};
use crate::plan::{self, Ownership, TenantIdentity};

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("refusing to run: {0}")]
    Refused(String),
    #[error("Kubernetes API: {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Purge(#[from] PurgeError),
    #[error("checkpoint: {0}")]
    Store(#[from] StoreError),
    #[error("AWS: {0}")]
    Cloud(#[from] CloudError),
    #[error("serializing the certificate: {0}")]
    Json(#[from] serde_json::Error),
}

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> RequestError {
    let what = what.to_owned();
    move |source| RequestError::Kube { what, source }
}

/// Which request, and how hard to push.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    pub request: String,
    /// Where the request's records are kept.
    pub records_namespace: String,
    /// The operator's cluster id: a bucket or key is the tenant's only if its tags say so.
    pub cluster_id: String,
    /// Where the certificate, its signature and the manifest are published.
    pub evidence: evidence::Target,
    /// `DeleteObjects` batches in flight.
    pub concurrency: usize,
    /// The export bucket of the tenant's policy and region, whose exports of the tenant go
    /// too (none: a Job created before exports existed).
    pub export_bucket: Option<String>,
}

/// How a request ended (a failure is an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Versions under Object Lock remain.
    Blocked,
}

/// Runs (or resumes, or, once done, re-publishes) the purge of one request.
pub async fn run(
    client: kube::Client,
    cloud: &Cloud,
    opts: &Options,
) -> Result<Outcome, RequestError> {
    let ns = opts.namespace.as_str();
    let requests: Api<DataDeletionRequest> = Api::namespaced(client.clone(), ns);
    let req = requests
        .get_opt(&opts.request)
        .await
        .map_err(kube_err("reading the DataDeletionRequest"))?
        .ok_or_else(|| {
            RequestError::Refused(format!(
                "DataDeletionRequest {ns}/{} does not exist",
                opts.request
            ))
        })?;
    let uid = req
        .uid()
        .ok_or_else(|| RequestError::Refused("the request has no metadata.uid".into()))?;
    let target = &req.spec.tenant_storage_ref;
    if let Some(other) = target.namespace.as_deref().filter(|o| *o != ns) {
        return Err(RequestError::Refused(format!(
            "spec.tenantStorageRef.namespace is {other:?}: a request only deletes data of a TenantStorage in its own namespace ({ns})"
        )));
    }
    if req.status.as_ref().and_then(|s| s.phase) == Some(DeletionPhase::Rejected) {
        return Err(RequestError::Refused(
            "the request was rejected (see its Accepted condition)".into(),
        ));
    }
    let records = RequestRecords::new(client.clone(), &req, &opts.records_namespace)?;
    records.check_names().await?;
    let location = Location::new(&opts.evidence.bucket, ns, &opts.request, &uid);
    let store = BucketJournal::new(
        cloud.region(&opts.evidence.region),
        opts.evidence.bucket.clone(),
        location.journal(),
        records,
    );
    let loaded = store.load_state().await?;
    if loaded.is_none()
        && let Some(found) = store.orphan(&location.prefix()).await?
    {
        return Err(RequestError::Refused(format!(
            "{} (the checkpoint) is missing, yet {found} exists: a run of this request had checkpointed. Starting over would certify only what a new run deletes; file a new request",
            store.state_uri()
        )));
    }
    if let Some(done) = loaded.as_ref().filter(|s| s.request_uid == uid)
        && let (Some(_), Some(_), Some(pinned)) =
            (&done.completion_time, &done.evidence, &done.target)
    {
        // Finished and published: only the status is re-published, whatever became of the
        // tenant since (deleted, its bucket gone).
        let regional = cloud.region(&pinned.region);
        let published = Published {
            regional: &regional,
            target: &opts.evidence,
            tenant_name: &target.name,
            bucket: &pinned.bucket,
        };
        let mut state = done.clone();
        let engine = Engine::new(
            BucketObjects::new(regional.clone(), pinned.bucket.clone()),
            store,
            opts.concurrency,
        );
        info!(namespace = ns, request = %opts.request, "already finished: re-publishing its status");
        return finish(&engine, &published, &req, &mut state).await;
    }
    let tenants: Api<TenantStorage> = Api::namespaced(client.clone(), ns);
    let tenant = tenants
        .get_opt(&target.name)
        .await
        .map_err(kube_err("reading the TenantStorage"))?
        .ok_or_else(|| {
            RequestError::Refused(format!("TenantStorage {ns}/{} does not exist", target.name))
        })?;
    let tenant_status = tenant.status.clone().unwrap_or_default();
    let missing = |field: &str| {
        RequestError::Refused(format!(
            "TenantStorage {ns}/{} has no status.{field} yet",
            target.name
        ))
    };
    let bucket = tenant_status
        .bucket_name
        .clone()
        .ok_or_else(|| missing("bucketName"))?;
    let region = tenant_status
        .region
        .clone()
        .ok_or_else(|| missing("region"))?;
    let method = req.spec.method;
    // The controller rejects such a request; a Job started another way must not report a
    // missing key as the reason.
    if method.shreds() && tenant_status.encryption_mode == Some(EncryptionMode::S3Managed) {
        return Err(RequestError::Refused(
            "the tenant is encrypted with S3-managed keys: there is no tenant key to crypto-shred; use method Purge".into(),
        ));
    }
    let shred_target = if method.shreds() && !req.spec.dry_run {
        let key = tenant_status
            .kms_key_arn
            .clone()
            .ok_or_else(|| missing("kmsKeyArn"))?;
        let policies: Api<ResidencyPolicy> = Api::all(client.clone());
        let policy = policies
            .get_opt(&tenant.spec.policy_ref)
            .await
            .map_err(kube_err("reading the ResidencyPolicy"))?
            .ok_or_else(|| {
                RequestError::Refused(format!(
                    "ResidencyPolicy {} (the tenant's) does not exist: its key deletion window is needed",
                    tenant.spec.policy_ref
                ))
            })?;
        Some((key, policy.spec.encryption.key_deletion_window_days))
    } else {
        None
    };

    if region != opts.evidence.region {
        return Err(RequestError::Refused(format!(
            "the tenant's bucket is in {region}, the evidence bucket {} in {}: evidence is kept in the tenant's region only",
            opts.evidence.bucket, opts.evidence.region
        )));
    }
    let regional = cloud.region(&region);
    let identity = TenantIdentity {
        cluster_id: opts.cluster_id.clone(),
        namespace: ns.to_owned(),
        name: target.name.clone(),
    };
    let shred_key = shred_target.as_ref().map(|(key, _)| key.as_str());
    prove_ownership(
        &regional,
        &identity,
        &bucket,
        shred_key,
        "Nothing was deleted",
    )
    .await?;

    let pinned = state::Target {
        tenant_uid: tenant.uid().unwrap_or_default(),
        bucket: bucket.clone(),
        region: region.clone(),
        key: shred_target.as_ref().map(|(key, _)| key.clone()),
    };
    let mut state = match loaded {
        None => State {
            target: Some(pinned),
            ..State::new(
                &uid,
                &req.spec.scope.listing_prefixes(),
                req.spec.dry_run,
                super::now(),
            )
        },
        Some(s) if s.request_uid != uid => {
            return Err(RequestError::Refused(format!(
                "{} holds the checkpoint of request uid {}, not of this one",
                store.state_uri(),
                s.request_uid
            )));
        }
        Some(s) if s.format != state::FORMAT => {
            return Err(RequestError::Refused(format!(
                "{} holds a checkpoint of format {}, written by an older version of the operator; finish the request with that version, or delete it and file a new one",
                store.state_uri(),
                s.format
            )));
        }
        Some(s) => {
            if let Some(then) = &s.target
                && let Err(changed) = then.check(&pinned)
            {
                return Err(RequestError::Refused(format!(
                    "the TenantStorage changed since this request started ({changed}); the request only ever deletes what it proved was the tenant's at its start. File a new request"
                )));
            }
            s
        }
    };
    let engine = Engine::new(
        BucketObjects::new(regional.clone(), bucket.clone()),
        store,
        opts.concurrency,
    );
    info!(namespace = ns, request = %opts.request, tenant = %target.name, %bucket, %region, ?method, dry_run = req.spec.dry_run, resumed = state.next_batch > 0 || state.purged.is_some(), "purge starting");

    if state.completion_time.is_none() {
        engine
            .store()
            .records()
            .patch_status(json!({"phase": DeletionPhase::Running, "progress": state.progress()}))
            .await?;
        let exports = (!req.spec.dry_run)
            .then(|| opts.export_bucket.clone())
            .flatten()
            .map(|bucket| (bucket, crate::export::tenant_prefixes(ns, &target.name)));
        if let Err(e) = work(
            &engine,
            &regional,
            method,
            shred_target,
            exports,
            &mut state,
        )
        .await
        {
            // Best effort: the checkpoint is what a rerun needs; the phase only informs.
            if let Err(patch) = engine
                .store()
                .records()
                .patch_status(json!({"phase": DeletionPhase::Failed}))
                .await
            {
                warn!(error = %patch, "could not record the failure in status");
            }
            return Err(e);
        }
    }
    let published = Published {
        regional: &regional,
        target: &opts.evidence,
        tenant_name: &target.name,
        bucket: &bucket,
    };
    finish(&engine, &published, &req, &mut state).await
}

/// Status is what the operator wrote, but whoever can write a status subresource could point
/// it at any bucket: before anything is deleted, the bucket (and the key to shred) must carry
/// this tenant's ownership tags, as the operator wrote them.
pub(crate) async fn prove_ownership(
    regional: &Regional,
    identity: &TenantIdentity,
    bucket: &str,
    key: Option<&str>,
    untouched: &str,
) -> Result<(), RequestError> {
    let refuse = |what: String, why: String| {
        RequestError::Refused(format!(
            "{what} named in the status of TenantStorage {}/{} is not that tenant's: {why}. {untouched}",
            identity.namespace, identity.name
        ))
    };
    let tags = match regional.bucket_tags(bucket).await? {
        ObservedTags::Tags(tags) => tags,
        ObservedTags::Gone => {
            return Err(refuse(
                format!("bucket {bucket} (region {})", regional.region),
                "it does not exist there".into(),
            ));
        }
    };
    if let Ownership::Foreign(why) = plan::ownership(&tags, identity, false) {
        return Err(refuse(format!("bucket {bucket}"), why));
    }
    if let Some(key) = key
        && let Ownership::Foreign(why) =
            plan::ownership(&regional.key_tags(key).await?, identity, false)
    {
        return Err(refuse(format!("KMS key {key}"), why));
    }
    Ok(())
}

/// Purge, shred, and mark the checkpoint complete.
async fn work(
    engine: &Engine<BucketObjects, BucketJournal>,
    regional: &Regional,
    method: DeletionMethod,
    shred_target: Option<(String, i32)>,
    exports: Option<(String, [String; 2])>,
    state: &mut State,
) -> Result<(), RequestError> {
    if method.purges() {
        engine.run(state).await?;
        info!(
            versions = state.counts.versions,
            delete_markers = state.counts.delete_markers,
            bytes = state.counts.bytes,
            locked = state.counts.locked,
            "purge done"
        );
    }
    if let Some((key, window_days)) = shred_target
        && state.shred.is_none()
    {
        let locked_remain = state.verification.as_ref().is_some_and(|v| v.remaining > 0);
        state.shred = Some(if locked_remain {
            // Destroying the key would make the retained versions unreadable: the same as
            // deleting them, which Object Lock forbids.
            let current = regional.key_state(&key).await?;
            warn!(key = %current.arn, "not crypto-shredding: versions under Object Lock remain");
            Shred {
                key_arn: current.arn,
                key_state: current.state,
                deletion_date: current.deletion_date,
                window_days,
                skipped: Some(
                    "versions under Object Lock remain; destroying the key would defeat their retention".into(),
                ),
            }
        } else {
            shred(regional, &key, window_days).await?
        });
        engine.store().save_state(state).await?;
    }
    if let Some((bucket, prefixes)) = exports
        && state.exports_deleted.is_none()
    {
        let objects = delete_exports(regional, &bucket, &prefixes).await?;
        info!(%bucket, objects, "the tenant's exports deleted");
        state.exports_deleted = Some(ExportsDeleted {
            bucket,
            prefixes: prefixes.to_vec(),
            objects,
        });
        engine.store().save_state(state).await?;
    }
    state.completion_time = Some(super::now());
    engine.store().save_state(state).await?;
    Ok(())
}

/// Removes every object and every incomplete multipart upload (an interrupted export's parts)
/// under the tenant's prefixes of the (unversioned) export bucket, and counts them (a run
/// killed midway leaves the next one fewer to count).
async fn delete_exports(
    regional: &Regional,
    bucket: &str,
    prefixes: &[String; 2],
) -> Result<u64, RequestError> {
    let mut deleted = 0;
    for prefix in prefixes {
        loop {
            let (uploads, more) = match regional.list_uploads(bucket, prefix, None, 1000).await {
                Err(e) if e.code() == "NoSuchBucket" => (Vec::new(), None),
                listed => listed?,
            };
            for (key, upload_id) in &uploads {
                if regional.abort_upload(bucket, key, upload_id).await? {
                    deleted += 1;
                }
            }
            if uploads.is_empty() || more.is_none() {
                break;
            }
        }
        loop {
            let (keys, more) = regional.list_keys(bucket, prefix, None).await?;
            if keys.is_empty() {
                break;
            }
            for batch in keys.chunks(1000) {
                deleted += regional.delete_keys(bucket, batch).await?;
            }
            if more.is_none() {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Disables the key and schedules its deletion; a rerun finds it pending and leaves it so.
async fn shred(regional: &Regional, key: &str, window_days: i32) -> Result<Shred, RequestError> {
    let before = regional.key_state(key).await?;
    if before.state != "PendingDeletion" {
        if before.state == "Enabled" {
            regional.disable_key(key).await?;
        }
        regional.schedule_key_deletion(key, window_days).await?;
    }
    let after = regional.key_state(key).await?;
    info!(key = %after.arn, state = %after.state, deletion_date = ?after.deletion_date, "tenant key shredded");
    Ok(Shred {
        key_arn: after.arn,
        key_state: after.state,
        deletion_date: after.deletion_date,
        window_days,
        skipped: None,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    namespace: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
}

/// The deletion certificate (`certificate.json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Certificate<'a> {
    kind: &'static str,
    format: u32,
    request: Identity<'a>,
    requested_by: &'a str,
    reason: &'a str,
    tenant: Identity<'a>,
    bucket: &'a str,
    region: &'a str,
    scope: &'a DataScope,
    method: DeletionMethod,
    dry_run: bool,
    outcome: DeletionPhase,
    counts: &'a Counts,
    start_time: &'a str,
    completion_time: Option<&'a str>,
    sha256: &'a str,
    entries: u64,
    multipart_uploads_sha256: &'a str,
    multipart_upload_entries: u64,
    hash_input: &'static str,
    /// The manifest (every entry hashed above) and the signing key; none for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<&'a EvidenceSection>,
    verification: Option<&'a Verification>,
    /// The versions themselves are listed in the evidence (`evidence.locked`), not here: the
    /// certificate is also kept in the cluster, where no object key of a tenant belongs.
    locked_versions_total: u64,
    crypto_shred: Option<&'a Shred>,
    /// The tenant's exports, removed with its data.
    #[serde(skip_serializing_if = "Option::is_none")]
    exports_deleted: Option<&'a ExportsDeleted>,
}

/// What `finish` publishes where.
struct Published<'a> {
    regional: &'a Regional,
    target: &'a evidence::Target,
    tenant_name: &'a str,
    bucket: &'a str,
}

/// How the certificate's hashes are computed, as it says itself.
const HASH_INPUT: &str = "sha256: SHA-256 of every deleted version and delete marker as the line key<TAB>versionId<LF> (with %, TAB, LF, CR percent-encoded, as in the manifest), in manifest order: cat the manifest parts (evidence.manifestKey, then evidence.manifestContinuation in order) | gunzip | awk -F'\\t' '$3 != \"multipartUpload\"' | cut -f1,2 | sha256sum. multipartUploadsSha256: the same over every aborted incomplete multipart upload (its parts deleted), key<TAB>uploadId: awk -F'\\t' '$3 == \"multipartUpload\"' instead. The verification listing covers object versions, delete markers and incomplete multipart uploads under every prefix in scope";

/// Streams the committed manifest once: hashes it and, unless this is a dry run (which deleted
/// nothing, so its counts need no evidence locked for years), publishes it in parts with the
/// list of versions Object Lock kept.
async fn publish_manifest(
    engine: &Engine<BucketObjects, BucketJournal>,
    to: &Published<'_>,
    location: &Location,
    state: &State,
    locked: &[LockedVersion],
) -> Result<(manifest::Digests, Option<EvidenceSection>), RequestError> {
    let mut digests = manifest::DigestBuilder::default();
    let mut writer = if state.dry_run {
        None
    } else {
        Some(evidence::ManifestWriter::new(
            to.regional,
            to.target,
            location,
        )?)
    };
    let mut chunks = std::pin::pin!(engine.manifest_chunks(state));
    while let Some(text) = chunks.next().await {
        for line in text?.lines() {
            digests.push(line);
            if let Some(writer) = writer.as_mut() {
                writer.push(line).await?;
            }
        }
    }
    let section = match writer {
        Some(writer) => {
            let locked: Vec<String> = locked.iter().map(manifest::locked_line).collect();
            Some(writer.finish(&locked).await?)
        }
        None => None,
    };
    Ok((digests.finish(), section))
}

/// Publishes the evidence (once: a rerun re-publishes the recorded certificate), then the
/// certificate summary and final status; safe to repeat.
async fn finish(
    engine: &Engine<BucketObjects, BucketJournal>,
    to: &Published<'_>,
    req: &DataDeletionRequest,
    state: &mut State,
) -> Result<Outcome, RequestError> {
    let store = engine.store();
    let blocked = state.verification.as_ref().is_some_and(|v| v.remaining > 0);
    let (outcome, phase) = if blocked {
        (Outcome::Blocked, DeletionPhase::Blocked)
    } else {
        (Outcome::Succeeded, DeletionPhase::Succeeded)
    };
    let record = match state.evidence.clone() {
        Some(record) => record,
        None => {
            let ns = req.namespace().unwrap_or_default();
            let name = req.name_any();
            let uid = req.uid();
            let tenant_name = to.tenant_name;
            let location = Location::new(
                &to.target.bucket,
                &ns,
                &name,
                uid.as_deref().unwrap_or_default(),
            );
            let locked = engine.locked_versions(state).await?;
            let (digests, section) =
                publish_manifest(engine, to, &location, state, &locked).await?;
            let certificate = Certificate {
                kind: "DeletionCertificate",
                format: crate::evidence::verify::CERTIFICATE_FORMAT,
                request: Identity {
                    namespace: &ns,
                    name: &name,
                    uid: uid.as_deref(),
                },
                requested_by: &req.spec.requested_by,
                reason: &req.spec.reason,
                tenant: Identity {
                    namespace: &ns,
                    name: tenant_name,
                    uid: None,
                },
                bucket: to.bucket,
                region: &to.regional.region,
                scope: &req.spec.scope,
                method: req.spec.method,
                dry_run: state.dry_run,
                outcome: phase,
                counts: &state.counts,
                start_time: &state.start_time,
                completion_time: state.completion_time.as_deref(),
                sha256: &digests.versions.0,
                entries: digests.versions.1,
                multipart_uploads_sha256: &digests.uploads.0,
                multipart_upload_entries: digests.uploads.1,
                hash_input: HASH_INPUT,
                evidence: section.as_ref(),
                verification: state.verification.as_ref(),
                locked_versions_total: locked.len() as u64,
                crypto_shred: state.shred.as_ref(),
                exports_deleted: state.exports_deleted.as_ref(),
            };
            let json = serde_json::to_string_pretty(&certificate)?;
            let published = match &section {
                Some(section) => Some(
                    evidence::publish_certificate(to.regional, section, &location, &json).await?,
                ),
                None => None,
            };
            let record = EvidenceRecord {
                location: published,
                certificate: json,
                sha256: digests.versions.0.clone(),
                entries: digests.versions.1,
            };
            state.evidence = Some(record.clone());
            store.save_state(state).await?;
            record
        }
    };
    // The published manifest is the record now. Repeated on every rerun, in case one stopped
    // right after recording the evidence.
    store.discard().await?;
    let records = store.records();
    let config_map = records.write_certificate(&record.certificate).await?;
    let summary = CertificateSummary {
        config_map,
        namespace: records.namespace().to_owned(),
        sha256: record.sha256,
        entries: record.entries,
        verified: state
            .verification
            .as_ref()
            .is_some_and(|v| v.remaining == 0),
        evidence: record.location,
    };
    records
        .patch_status(json!({
            "phase": phase,
            "progress": state.progress(),
            "certificate": summary,
        }))
        .await?;
    info!(?phase, sha256 = %summary.sha256, entries = summary.entries, "certificate published");
    Ok(outcome)
}
