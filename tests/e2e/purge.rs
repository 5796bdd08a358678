//! The purge engine end to end: a TenantStorage provisioned by the operator, a
//! DataDeletionRequest, and its Job's command run by the test as a kubelet would (the test API
//! server has no kubelet), as the chart's purge service account.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, ObjectLockLegalHoldStatus, ObjectLockMode,
    ServerSideEncryption,
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenant_storage_operator::api::{DataDeletionRequest, DeletionPhase};
use tokio::process::Command;

use tenant_storage_operator::cloud::failpoint;
use tenant_storage_operator::controllers::{REQUEST_LABEL, deletion_job_name};
use tenant_storage_operator::plan::naming::deletion_request_label;
use tenant_storage_operator::purge::{State, UID_LABEL};

use crate::harness::{
    Aws, Scenario, eu_spec, eventually, job_command, job_container, pod_command, purge_aws,
    put_bucket_tags, system_namespace, tenant,
};

/// One version or delete marker the test wrote.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Written {
    key: String,
    version_id: String,
    marker: bool,
    size: u64,
}

/// Totals of a set of versions: (versions, delete markers, bytes).
fn totals<'a>(written: impl IntoIterator<Item = &'a Written>) -> (u64, u64, u64) {
    written.into_iter().fold((0, 0, 0), |(v, m, b), w| {
        if w.marker {
            (v, m + 1, b)
        } else {
            (v + 1, m, b + w.size)
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `versions` versions of `key` (sizes 1, 2, ...) and then, if asked, a delete marker.
async fn write_key(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    versions: usize,
    marker: bool,
) {
    for v in 1..=versions {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(vec![b'x'; v]))
            .send()
            .await
            .expect("put object");
    }
    if marker {
        let del = s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("delete object");
        assert_eq!(del.delete_marker(), Some(true));
    }
}

/// Fills keys concurrently (`layout` is `(key, versions, delete marker)`) and returns what the
/// bucket then holds: under load the SDK may retry a PutObject or DeleteObject whose first
/// attempt did land, adding a version no response names, so the listing is the truth.
async fn fill(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    layout: Vec<(String, usize, bool)>,
) -> BTreeSet<Written> {
    futures::stream::iter(layout)
        .map(|(key, versions, marker)| async move {
            write_key(s3, bucket, &key, versions, marker).await
        })
        .buffer_unordered(24)
        .collect::<Vec<_>>()
        .await;
    snapshot(s3, bucket).await
}

/// A few keys under each prefix: 1-3 versions each, every other key ending in a delete marker.
fn layout(prefixes: &[&str], keys: usize) -> Vec<(String, usize, bool)> {
    prefixes
        .iter()
        .flat_map(|p| (0..keys).map(move |i| (format!("{p}f{i}.bin"), 1 + i % 3, i % 2 == 0)))
        .collect()
}

/// Every version and delete marker in the bucket.
async fn snapshot(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<Written> {
    let mut all = BTreeSet::new();
    let mut marker: Option<(String, String)> = None;
    loop {
        let mut req = s3.list_object_versions().bucket(bucket);
        if let Some((k, v)) = &marker {
            req = req.key_marker(k).version_id_marker(v);
        }
        let page = req.send().await.expect("list versions");
        for v in page.versions() {
            all.insert(Written {
                key: v.key().unwrap_or_default().to_owned(),
                version_id: v.version_id().unwrap_or_default().to_owned(),
                marker: false,
                size: v.size().unwrap_or_default() as u64,
            });
        }
        for m in page.delete_markers() {
            all.insert(Written {
                key: m.key().unwrap_or_default().to_owned(),
                version_id: m.version_id().unwrap_or_default().to_owned(),
                marker: true,
                size: 0,
            });
        }
        match (
            page.is_truncated(),
            page.next_key_marker(),
            page.next_version_id_marker(),
        ) {
            (Some(true), Some(k), Some(v)) => marker = Some((k.to_owned(), v.to_owned())),
            _ => return all,
        }
    }
}

/// Every version and delete marker in the bucket, as `(key, versionId)`.
async fn listing(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<(String, String)> {
    ids(&snapshot(s3, bucket).await)
}

fn ids<'a>(written: impl IntoIterator<Item = &'a Written>) -> BTreeSet<(String, String)> {
    written
        .into_iter()
        .map(|w| (w.key.clone(), w.version_id.clone()))
        .collect()
}

fn request(
    name: &str,
    tenant: &str,
    scope: Value,
    method: &str,
    dry_run: bool,
) -> DataDeletionRequest {
    DataDeletionRequest::new(
        name,
        serde_json::from_value(json!({
            "tenantStorageRef": {"name": tenant},
            "scope": scope,
            "method": method,
            "requestedBy": "dpo@example.com",
            "reason": format!("GDPR-{name}"),
            "dryRun": dry_run,
        }))
        .expect("request spec"),
    )
}

fn requests(s: &Scenario) -> Api<DataDeletionRequest> {
    Api::namespaced(s.client.clone(), &s.ns)
}

/// Creates the request and waits until the controller has accepted it (made its Job), so the
/// purge below does what the Job would.
/// Creates the request and waits for its Job; returns the request's uid.
async fn submit(s: &Scenario, req: &DataDeletionRequest) -> String {
    let api = requests(s);
    let created = api
        .create(&PostParams::default(), req)
        .await
        .expect("create request");
    let name = req.name_any();
    eventually(&format!("request {name} accepted"), || async {
        api.get(&name).await.ok()?.status?.job_name.map(|_| ())
    })
    .await;
    created.uid().expect("uid")
}

/// The request's Job, started as its pod would be, logging to the run directory.
async fn purge_command(s: &Scenario, request: &str) -> Command {
    let mut command = job_command(&s.ns, request).await;
    command.stdout(Stdio::null()).stderr(log_file(s, request));
    command
}

fn log_path(s: &Scenario, request: &str) -> PathBuf {
    PathBuf::from(std::env::var("TSO_RUN").unwrap_or_else(|_| "/tmp".into()))
        .join(format!("purge-{}-{request}.log", s.ns))
}

fn log_file(s: &Scenario, request: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(s, request))
        .expect("purge log file")
}

async fn purge(s: &Scenario, request: &str) -> ExitStatus {
    let mut child = purge_command(s, request)
        .await
        .spawn()
        .expect("start purge");
    tokio::time::timeout(Duration::from_secs(300), child.wait())
        .await
        .expect("purge finishes")
        .expect("wait for purge")
}

async fn status(
    s: &Scenario,
    name: &str,
) -> tenant_storage_operator::api::DataDeletionRequestStatus {
    requests(s)
        .get(name)
        .await
        .expect("get request")
        .status
        .expect("status")
}

async fn certificate(s: &Scenario, name: &str) -> Value {
    let summary = status(s, name)
        .await
        .certificate
        .expect("certificate summary");
    assert_eq!(summary.namespace, system_namespace());
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &summary.namespace);
    let cm = cms
        .get(&summary.config_map)
        .await
        .expect("certificate ConfigMap");
    assert_eq!(
        cm.name_any(),
        format!("{}-certificate", deletion_job_name(&s.ns, name))
    );
    assert_eq!(
        cm.labels().get(UID_LABEL),
        requests(s).get(name).await.expect("request").uid().as_ref()
    );
    let json = cm
        .data
        .and_then(|d| d.get("certificate.json").cloned())
        .expect("certificate.json");
    if summary.evidence.is_some() {
        let signed = evidence_certificate(s, name).await;
        assert_eq!(json, signed, "the cluster's copy is the signed certificate");
    }
    serde_json::from_str(&json).expect("certificate is JSON")
}

/// The certificate as published in the evidence bucket (where status says), after checking it
/// is under Object Lock in COMPLIANCE mode, cannot be deleted, and has its signature beside it.
async fn evidence_certificate(s: &Scenario, name: &str) -> String {
    let location = status(s, name)
        .await
        .certificate
        .and_then(|c| c.evidence)
        .expect("evidence location in status");
    let s3 = Aws::root().await.s3(&location.region);
    let object = s3
        .get_object()
        .bucket(&location.bucket)
        .key(&location.key)
        .version_id(&location.version_id)
        .send()
        .await
        .expect("certificate in the evidence bucket");
    let body = object.body.collect().await.expect("body").into_bytes();
    let retention = s3
        .get_object_retention()
        .bucket(&location.bucket)
        .key(&location.key)
        .version_id(&location.version_id)
        .send()
        .await
        .expect("retention");
    assert_eq!(
        retention
            .retention()
            .and_then(|r| r.mode())
            .map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let deleted = s3
        .delete_object()
        .bucket(&location.bucket)
        .key(&location.key)
        .version_id(&location.version_id)
        .send()
        .await;
    assert!(deleted.is_err(), "a locked certificate cannot be deleted");
    s3.head_object()
        .bucket(&location.bucket)
        .key(format!("{}.sig", location.key))
        .send()
        .await
        .expect("signature beside the certificate");
    String::from_utf8(body.to_vec()).expect("UTF-8")
}

/// The hash recomputed by an auditor from the published manifest alone, and its
/// `(key, versionId)` entries: versions and delete markers.
async fn manifest(s: &Scenario, name: &str) -> (String, Vec<(String, String)>) {
    manifest_of(s, name, &["version", "deleteMarker"]).await
}

/// The compressed manifest: its parts as the certificate names them (each checked against its
/// SHA-256), concatenated.
async fn manifest_bytes(evidence: &Value) -> Vec<u8> {
    let s3 = Aws::root()
        .await
        .s3(evidence["region"].as_str().expect("region"));
    let first = json!({
        "key": evidence["manifestKey"],
        "versionId": evidence["manifestVersionId"],
        "sha256": evidence["manifestSha256"],
    });
    let rest = evidence["manifestContinuation"].as_array().cloned();
    let mut gz = Vec::new();
    for part in std::iter::once(first).chain(rest.into_iter().flatten()) {
        let object = s3
            .get_object()
            .bucket(evidence["bucket"].as_str().expect("bucket"))
            .key(part["key"].as_str().expect("key"))
            .version_id(part["versionId"].as_str().expect("version"))
            .send()
            .await
            .expect("manifest part in the evidence bucket");
        let bytes = object.body.collect().await.expect("body").into_bytes();
        assert_eq!(
            json!(hex(&Sha256::digest(&bytes))),
            part["sha256"],
            "the manifest part is the one certified"
        );
        gz.extend_from_slice(&bytes);
    }
    gz
}

/// The same for the entries of the manifest whose kind is one of `kinds`, hashed in manifest
/// order as the certificate says. The manifest is in the evidence bucket, and no longer in the
/// cluster.
async fn manifest_of(s: &Scenario, name: &str, kinds: &[&str]) -> (String, Vec<(String, String)>) {
    let certificate: Value =
        serde_json::from_str(&evidence_certificate(s, name).await).expect("certificate JSON");
    assert_eq!(certificate["format"], json!(4));
    let gz = manifest_bytes(&certificate["evidence"]).await;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(gz.as_slice()),
        &mut text,
    )
    .expect("gunzip");
    let uid = requests(s)
        .get(name)
        .await
        .expect("request")
        .uid()
        .expect("uid");
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &system_namespace());
    let selector = format!(
        "storage.tenancy.dev/deletion-request-uid={uid},storage.tenancy.dev/purge-record=manifest"
    );
    let chunks = cms
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("manifest chunks");
    assert!(chunks.items.is_empty(), "no object key left in the cluster");
    let mut lines = Vec::new();
    let mut entries = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "{line:?}");
        assert!(
            matches!(fields[2], "version" | "deleteMarker" | "multipartUpload"),
            "{line:?}"
        );
        if !kinds.contains(&fields[2]) {
            continue;
        }
        lines.push(format!("{}\t{}\n", fields[0], fields[1]));
        entries.push((fields[0].to_owned(), fields[1].to_owned()));
    }
    (hex(&Sha256::digest(lines.concat().as_bytes())), entries)
}

/// Checks status and certificate against what was deleted.
async fn assert_deleted_exactly(s: &Scenario, name: &str, deleted: &BTreeSet<Written>) {
    assert_removed_exactly(s, name, deleted, &BTreeSet::new()).await;
}

/// Checks status and certificate against what was deleted and the incomplete multipart uploads
/// (`(key, uploadId)`) aborted.
async fn assert_removed_exactly(
    s: &Scenario,
    name: &str,
    deleted: &BTreeSet<Written>,
    aborted: &BTreeSet<(String, String)>,
) {
    let (versions, markers, bytes) = totals(deleted);
    let uploads = aborted.len() as u64;
    let st = status(s, name).await;
    assert_eq!(st.phase, Some(DeletionPhase::Succeeded));
    let progress = st.progress.expect("progress");
    assert_eq!(
        (
            progress.versions_deleted,
            progress.delete_markers_deleted,
            progress.bytes_deleted,
            progress.locked_versions,
            progress.multipart_uploads_aborted
        ),
        (versions, markers, bytes, 0, uploads)
    );
    assert!(progress.start_time.is_some() && progress.completion_time.is_some());
    let summary = st.certificate.expect("certificate summary");
    assert!(summary.verified);
    assert_eq!(summary.entries, versions + markers);
    let (recomputed, entries) = manifest(s, name).await;
    assert_eq!(
        recomputed, summary.sha256,
        "hash re-checked from the manifest"
    );
    assert_eq!(entries.len() as u64, versions + markers, "no entry twice");
    assert_eq!(entries.into_iter().collect::<BTreeSet<_>>(), ids(deleted));
    let (uploads_hash, upload_entries) = manifest_of(s, name, &["multipartUpload"]).await;
    assert_eq!(upload_entries.len() as u64, uploads, "no upload twice");
    assert_eq!(
        &upload_entries.into_iter().collect::<BTreeSet<_>>(),
        aborted
    );
    let cert = certificate(s, name).await;
    assert_eq!(cert["sha256"], json!(summary.sha256));
    assert_eq!(cert["entries"], json!(versions + markers));
    assert_eq!(
        cert["counts"],
        json!({
            "versions": versions,
            "deleteMarkers": markers,
            "bytes": bytes,
            "locked": 0,
            "multipartUploads": uploads,
        })
    );
    assert_eq!(cert["multipartUploadEntries"], json!(uploads));
    assert_eq!(cert["multipartUploadsSha256"], json!(uploads_hash));
    assert_eq!(cert["verification"]["remaining"], json!(0));
    assert_eq!(cert["requestedBy"], json!("dpo@example.com"));
    assert_eq!(cert["request"]["namespace"], json!(s.ns));
    assert_eq!(cert["outcome"], json!("Succeeded"));
}

/// Versions and delete markers across prefixes: a prefix request deletes exactly that prefix,
/// then a whole-tenant request the rest; other prefixes and another tenant are untouched.
#[tokio::test]
async fn purge_by_prefix_then_whole_tenant() {
    let s = Scenario::new("purge").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("acme", &policy).await;
    let other = s.ready_bucket("globex", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(
        &s3,
        &bucket,
        layout(&["users/42/", "users/420/", "users/7/", "logs/"], 12),
    )
    .await;
    let theirs = fill(&s3, &other, layout(&["users/42/"], 6)).await;
    let their_listing = listing(&s3, &other).await;
    assert_eq!(their_listing, ids(&theirs));

    // users/42/ only: users/420/ shares the string prefix "users/42" but not "users/42/".
    let (in_scope, rest): (BTreeSet<Written>, BTreeSet<Written>) = written
        .iter()
        .cloned()
        .partition(|w| w.key.starts_with("users/42/"));
    assert!(totals(&in_scope).1 > 0 && in_scope.len() > 20);
    submit(
        &s,
        &request(
            "user-42",
            "acme",
            json!({"prefixes": ["users/42/"]}),
            "Purge",
            false,
        ),
    )
    .await;
    let exit = purge(&s, "user-42").await;
    assert!(exit.success(), "purge exited {exit:?}");
    assert_eq!(
        listing(&s3, &bucket).await,
        ids(&rest),
        "only users/42/ is gone"
    );
    assert_deleted_exactly(&s, "user-42", &in_scope).await;
    let cert = certificate(&s, "user-42").await;
    assert_eq!(cert["scope"], json!({"prefixes": ["users/42/"]}));
    assert_eq!(cert["bucket"], json!(bucket));
    assert_eq!(cert["region"], json!("eu-central-1"));
    assert_eq!(cert["tenant"], json!({"namespace": s.ns, "name": "acme"}));
    assert_eq!(cert["method"], json!("Purge"));
    assert_eq!(cert["dryRun"], json!(false));

    // A rerun of a finished request changes nothing and reports the same.
    let exit = purge(&s, "user-42").await;
    assert!(exit.success());
    assert_deleted_exactly(&s, "user-42", &in_scope).await;

    submit(
        &s,
        &request(
            "leave",
            "acme",
            json!({"wholeTenant": true}),
            "Purge",
            false,
        ),
    )
    .await;
    let exit = purge(&s, "leave").await;
    assert!(exit.success(), "purge exited {exit:?}");
    assert!(listing(&s3, &bucket).await.is_empty(), "bucket empty");
    assert_deleted_exactly(&s, "leave", &rest).await;
    assert_eq!(
        listing(&s3, &other).await,
        their_listing,
        "the other tenant is untouched"
    );
}

/// Killed at several points (right after a DeleteObjects answer, before it is journaled), rerun
/// until done: counts exact, nothing left, the hash matches the manifest.
#[tokio::test]
async fn killed_purges_resume_exactly() {
    let s = Scenario::new("purgekill").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("big", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    // About 5000 versions and markers: several batches of 1000, under three prefixes.
    let written = fill(&s3, &bucket, layout(&["a/", "b/", "c/"], 600)).await;
    let total = written.len() as u64;
    assert!(total > 4000);
    submit(
        &s,
        &request("big", "big", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;

    // Killed right after the first, the third and the fourth answer to DeleteObjects of a run
    // (each run re-sends the batches the last one left in flight); two batches in flight, not
    // the Job's eight, so the kills land mid-run.
    for nth in [1, 3, 4] {
        let exit = purge_command(&s, "big")
            .await
            .env("TSO_PURGE_CONCURRENCY", "2")
            .env(failpoint::VARIABLE, format!("DeleteObjects:{nth}"))
            .status()
            .await
            .expect("run purge");
        assert_eq!(
            exit.code(),
            Some(failpoint::EXIT),
            "killed at DeleteObjects {nth}"
        );
    }
    let exit = purge(&s, "big").await;
    assert!(exit.success(), "purge exited {exit:?}");
    assert!(listing(&s3, &bucket).await.is_empty(), "nothing left");
    assert_deleted_exactly(&s, "big", &written).await;
}

/// Value of the deletion Job's argument `flag`.
async fn job_arg(s: &Scenario, request: &str, flag: &str) -> String {
    let args = job_container(&s.ns, request).await.args.unwrap_or_default();
    let at = args.iter().position(|a| a == flag).expect(flag);
    args.get(at + 1).expect("flag value").clone()
}

/// Every version under a request's journal in the evidence bucket, as `(key, versionId)`.
async fn journal_versions(s: &Scenario, request: &str, uid: &str) -> Vec<(String, String)> {
    let bucket = job_arg(s, request, "--evidence-bucket").await;
    let prefix = format!("journal/{}/{request}/{uid}/", s.ns);
    let out = Aws::root()
        .await
        .s3("eu-central-1")
        .list_object_versions()
        .bucket(&bucket)
        .prefix(&prefix)
        .send()
        .await
        .expect("list the journal");
    let mut all: Vec<(String, String)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap_or_default(),
                v.version_id().unwrap_or_default(),
            )
        })
        .chain(out.delete_markers().iter().map(|m| {
            (
                m.key().unwrap_or_default(),
                m.version_id().unwrap_or_default(),
            )
        }))
        .map(|(k, v)| (k.trim_start_matches(&prefix).to_owned(), v.to_owned()))
        .collect();
    all.sort();
    all
}

/// A pod killed after writing a manifest chunk and before its checkpoint leaves an uncommitted
/// chunk in the journal (in the evidence bucket, where only the operator's identities reach): the
/// next pod discards it and certifies exactly what it deleted. Once the evidence is published,
/// the journal is removed but for the checkpoint, and nothing of it is in the cluster.
#[tokio::test]
async fn an_uncommitted_chunk_of_a_killed_pod_is_discarded() {
    let s = Scenario::new("purgestale").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/"], 20)).await;
    let uid = submit(
        &s,
        &request("stale", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    let evidence = job_arg(&s, "stale", "--evidence-bucket").await;
    // The killed pod had checkpointed (nothing committed to the manifest yet), then written a
    // chunk its next checkpoint never recorded.
    let checkpoint = State::new(&uid, &[String::new()], false, "2026-01-01T00:00:00Z".into());
    let as_purge = purge_aws().await.s3("eu-central-1");
    for (name, body) in [
        (
            "state.json",
            serde_json::to_vec(&checkpoint).expect("checkpoint JSON"),
        ),
        ("manifest-0000.tsv", b"ghost\tv1\tversion\t1\n".to_vec()),
    ] {
        as_purge
            .put_object()
            .bucket(&evidence)
            .key(format!("journal/{}/stale/{uid}/{name}", s.ns))
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await
            .expect("the killed pod's journal, written as the purge identity");
    }
    assert!(purge(&s, "stale").await.success());
    assert_deleted_exactly(&s, "stale", &written).await;

    let journal = journal_versions(&s, "stale", &uid).await;
    let keys: Vec<&str> = journal.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["state.json"],
        "only the checkpoint's last version is kept"
    );
    let records: Api<ConfigMap> = Api::namespaced(s.client.clone(), &system_namespace());
    let kept = records
        .list(&ListParams::default().labels(&format!("{UID_LABEL}={uid}")))
        .await
        .expect("records");
    let names: Vec<String> = kept.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(
        names,
        [format!("{}-certificate", deletion_job_name(&s.ns, "stale"))],
        "the cluster keeps the certificate only"
    );
    let stored =
        serde_json::to_string(&requests(&s).get("stale").await.expect("request")).expect("json");
    for w in &written {
        assert!(
            !stored.contains(&w.version_id),
            "the request's status names a deleted version"
        );
    }

    // The checkpoint removed (by whoever could): a rerun refuses to start over, since it would
    // certify only what it deleted itself; the published certificate stays the only one.
    let before = status(&s, "stale").await.certificate;
    let (_, state_version) = journal.first().expect("checkpoint");
    Aws::root()
        .await
        .s3("eu-central-1")
        .delete_object()
        .bucket(&evidence)
        .key(format!("journal/{}/stale/{uid}/state.json", s.ns))
        .version_id(state_version)
        .send()
        .await
        .expect("remove the checkpoint");
    let out = job_command(&s.ns, "stale")
        .await
        .output()
        .await
        .expect("rerun");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(the checkpoint) is missing"), "{stderr}");
    assert_eq!(status(&s, "stale").await.certificate, before);
}

/// A request an older operator started, whose checkpoint is in ConfigMaps, is refused rather
/// than restarted (a restart would certify only what it deleted itself).
#[tokio::test]
async fn a_checkpoint_left_in_a_config_map_by_an_older_version_is_refused() {
    let s = Scenario::new("purgeold").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/"], 5)).await;
    let uid = submit(
        &s,
        &request("old", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    let state: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-purge-state", deletion_job_name(&s.ns, "old")),
            "labels": {
                UID_LABEL: uid,
                REQUEST_LABEL: deletion_request_label(&s.ns, "old"),
                "storage.tenancy.dev/purge-record": "state",
            },
        },
        "data": {"state.json": "{}"},
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(s.client.clone(), &system_namespace())
        .create(&PostParams::default(), &state)
        .await
        .expect("an older operator's checkpoint");
    assert!(!purge(&s, "old").await.success());
    assert_eq!(
        listing(&s3, &bucket).await.len(),
        written.len(),
        "nothing deleted"
    );
}

/// Two pods of one request never purge at once: the second waits on the request's fence Lease
/// while the first works, then finds the work done; the certificate is exact.
#[tokio::test]
async fn a_second_pod_of_a_request_waits_for_the_first() {
    let s = Scenario::new("purgefence").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/", "b/"], 300)).await;
    submit(
        &s,
        &request("twice", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    // One batch in flight, so the first pod is still at work when the second starts.
    let mut first = purge_command(&s, "twice")
        .await
        .env("TSO_PURGE_CONCURRENCY", "1")
        .spawn()
        .expect("start the first pod");
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &system_namespace());
    let fence = format!("{}-fence", deletion_job_name(&s.ns, "twice"));
    let holder = eventually("the first pod holds the fence", || async {
        leases.get_opt(&fence).await.ok()??.spec?.holder_identity
    })
    .await;
    let second_log = PathBuf::from(crate::harness::env("TSO_RUN"))
        .join(format!("purge-{}-twice-second.log", s.ns));
    let mut second = job_command(&s.ns, "twice")
        .await
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&second_log).expect("log file"))
        .spawn()
        .expect("start the second pod");
    // While the first runs, the second only waits.
    let first_exit = loop {
        if let Some(exit) = first.try_wait().expect("poll the first pod") {
            break exit;
        }
        let log = std::fs::read_to_string(&second_log).unwrap_or_default();
        assert!(
            !log.contains("purge starting"),
            "two pods purge at once: {log}"
        );
        // The first pod holds the fence (or has just released it, on its way out).
        let lease = leases.get(&fence).await.expect("fence");
        let now = lease.spec.and_then(|l| l.holder_identity);
        assert!(
            now.is_none() || now.as_ref() == Some(&holder),
            "the fence passed to {now:?} while the first pod runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(first_exit.success(), "first pod exited {first_exit:?}");
    let second_exit = tokio::time::timeout(Duration::from_secs(120), second.wait())
        .await
        .expect("the second pod finishes")
        .expect("wait");
    assert!(second_exit.success(), "second pod exited {second_exit:?}");
    let log = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(log.contains("waiting for the request's fence"), "{log}");
    assert_deleted_exactly(&s, "twice", &written).await;
}

/// The generated purge policy is what a Job needs, no more: without `s3:DeleteObject` (which
/// `DeleteObjects` always requires) the same Job fails and deletes nothing.
#[tokio::test]
async fn a_job_without_the_generated_permissions_deletes_nothing() {
    let s = Scenario::new("purgeiam").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s
        .operator(&[
            "--admin-principal-arn",
            &format!("arn:aws:iam::000000000000:user/{}", s.ns),
        ])
        .await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    fill(&s3, &bucket, layout(&["a/"], 5)).await;
    let before = listing(&s3, &bucket).await;
    submit(
        &s,
        &request("short", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    let mut document = serde_json::to_value(tenant_storage_operator::plan::iam_policy::purge(
        "aws",
        "000000000000",
        "tso",
    ))
    .expect("policy");
    let objects = &mut document["Statement"][1]["Action"];
    let actions: Vec<Value> = objects
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| *a != "s3:DeleteObject")
        .cloned()
        .collect();
    *objects = Value::Array(actions);
    let iam = Aws::root().await.iam();
    iam.create_user()
        .user_name(&s.ns)
        .send()
        .await
        .expect("user");
    iam.put_user_policy()
        .user_name(&s.ns)
        .policy_name("purge-without-delete-object")
        .policy_document(document.to_string())
        .send()
        .await
        .expect("policy");
    let key = iam
        .create_access_key()
        .user_name(&s.ns)
        .send()
        .await
        .expect("key");
    let key = key.access_key().expect("access key");
    let out = job_command(&s.ns, "short")
        .await
        .env("AWS_ACCESS_KEY_ID", key.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", key.secret_access_key())
        .output()
        .await
        .expect("run the job");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("AccessDenied"), "{stderr}");
    assert_eq!(listing(&s3, &bucket).await, before, "nothing deleted");
}

/// An auditor with read access to the evidence, and nothing of the cluster, verifies the
/// certificate: signature by the operator's key, manifest as certified, everything locked,
/// nothing left in scope. A forged new version of the certificate does not verify.
#[tokio::test]
async fn an_auditor_verifies_the_certificate_without_the_cluster() {
    let s = Scenario::new("purgeaudit").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    fill(&s3, &bucket, layout(&["a/", "b/"], 30)).await;
    submit(
        &s,
        &request("audited", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    // Parts of a kibibyte, so that even this manifest is published in several.
    let mut job = purge_command(&s, "audited").await;
    job.env("TSO_MANIFEST_PART_BYTES", "1024");
    let exit = job.spawn().expect("start purge").wait().await;
    assert!(exit.expect("purge").success());
    let certificate: Value =
        serde_json::from_str(&evidence_certificate(&s, "audited").await).expect("certificate");
    let parts = certificate["evidence"]["manifestContinuation"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(parts >= 2, "the manifest in several parts: {certificate}");
    let location = status(&s, "audited")
        .await
        .certificate
        .and_then(|c| c.evidence)
        .expect("evidence location");
    assert_eq!(
        location.region, "eu-central-1",
        "kept in the tenant's region"
    );
    let verify = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-storage-operator"));
        command
            .env_clear()
            .args([
                "verify-certificate",
                &format!("s3://{}/{}", location.bucket, location.key),
            ])
            .args([
                "--signing-key-arn",
                &location.signing_key_arn,
                "--check-scope",
            ])
            .args(["--output", "json"])
            .env(
                "TSO_AWS_ENDPOINT_URL",
                crate::harness::env("TSO_AWS_ENDPOINT_URL"),
            )
            .env("TSO_S3_FORCE_PATH_STYLE", "true")
            .env("AWS_CA_BUNDLE", crate::harness::env("AWS_CA_BUNDLE"))
            .env(
                "AWS_ACCESS_KEY_ID",
                crate::harness::env("AWS_ACCESS_KEY_ID"),
            )
            .env(
                "AWS_SECRET_ACCESS_KEY",
                crate::harness::env("AWS_SECRET_ACCESS_KEY"),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        command
    };
    let out = verify().output().await.expect("run verify-certificate");
    let verdict: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{verdict}");
    assert_eq!(verdict["verified"], json!(true), "{verdict}");
    let checks: BTreeSet<&str> = verdict["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["passed"] == json!(true))
        .filter_map(|c| c["name"].as_str())
        .collect();
    for check in [
        "signature",
        "manifest-digest",
        "retention-manifest",
        "versions-hash",
        "counts",
        "retention-certificate",
        "scope",
    ] {
        assert!(checks.contains(check), "{check} not passed: {verdict}");
    }

    // Object Lock keeps every version, but a new one can be put on top: it must not verify.
    let signed = evidence_certificate(&s, "audited").await;
    let forged = signed.replacen("\"versions\": ", "\"versions\": 1", 1);
    assert_ne!(forged, signed);
    s3.put_object()
        .bucket(&location.bucket)
        .key(&location.key)
        .body(ByteStream::from(forged.into_bytes()))
        .send()
        .await
        .expect("put a forged version");
    let out = verify().output().await.expect("run verify-certificate");
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("JSON verdict");
    assert!(!out.status.success(), "{verdict}");
    assert_eq!(verdict["verified"], json!(false));
    assert!(
        verdict["failure"]
            .as_str()
            .is_some_and(|f| f.starts_with("signature")),
        "{verdict}"
    );
}

/// A request pins the tenant it proved at its start: when the TenantStorage is deleted and
/// recreated under the same name while a purge is interrupted, the rerun refuses and deletes
/// nothing more.
#[tokio::test]
async fn a_resumed_purge_refuses_a_recreated_tenant() {
    let s = Scenario::new("purgepin").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    fill(&s3, &bucket, layout(&["a/", "b/", "c/"], 400)).await;
    submit(
        &s,
        &request("pinned", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    // Killed right after its first DeleteObjects (of 1000 of some 3000 versions and markers).
    let first = purge_command(&s, "pinned")
        .await
        .env("TSO_PURGE_CONCURRENCY", "1")
        .env(failpoint::VARIABLE, "DeleteObjects")
        .status()
        .await
        .expect("run the purge");
    assert_eq!(first.code(), Some(failpoint::EXIT));
    let old_uid = s.get("t").await.uid();

    s.tenants()
        .delete("t", &Default::default())
        .await
        .expect("delete the tenant");
    eventually("tenant released", || async {
        s.tenants().get_opt("t").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(s.ready_bucket("t", &policy).await, bucket, "re-adopted");
    assert_ne!(s.get("t").await.uid(), old_uid);
    let before = listing(&s3, &bucket).await;
    assert!(!before.is_empty());

    let out = job_command(&s.ns, "pinned")
        .await
        .output()
        .await
        .expect("rerun the job");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("changed since this request started") && stderr.contains("another object"),
        "{stderr}"
    );
    assert_eq!(listing(&s3, &bucket).await, before, "nothing more deleted");
}

/// A Job that published its evidence but stopped before its final status write re-publishes
/// it when rerun, even once the tenant is gone: nothing about the tenant is needed any more.
#[tokio::test]
async fn a_finished_request_republishes_after_its_tenant_is_gone() {
    let s = Scenario::new("purgerepub").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/"], 10)).await;
    submit(
        &s,
        &request("done", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    assert!(purge(&s, "done").await.success());
    let published = status(&s, "done").await.certificate.expect("certificate");
    s.tenants()
        .delete("t", &Default::default())
        .await
        .expect("delete the tenant");
    eventually("tenant gone", || async {
        s.tenants().get_opt("t").await.ok()?.is_none().then_some(())
    })
    .await;
    // The status write the stopped Job never made, as a platform engineer could see it.
    requests(&s)
        .patch_status(
            "done",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Running", "certificate": null}})),
        )
        .await
        .expect("roll the status back");
    assert!(purge(&s, "done").await.success(), "rerun re-publishes");
    let st = status(&s, "done").await;
    assert_eq!(st.phase, Some(DeletionPhase::Succeeded));
    assert_eq!(
        st.certificate,
        Some(published),
        "the same certificate, not a new one"
    );
    assert_deleted_exactly(&s, "done", &written).await;
}

/// A dry run deletes nothing and counts what a real run then deletes.
#[tokio::test]
async fn dry_run_counts_what_a_real_run_deletes() {
    let s = Scenario::new("purgedry").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["x/", "y/"], 15)).await;
    let scope = json!({"prefixes": ["x/"]});
    submit(&s, &request("count", "t", scope.clone(), "Purge", true)).await;
    let exit = purge(&s, "count").await;
    assert!(exit.success(), "purge exited {exit:?}");
    assert_eq!(
        listing(&s3, &bucket).await,
        ids(&written),
        "nothing deleted"
    );
    let dry = status(&s, "count").await;
    assert_eq!(dry.phase, Some(DeletionPhase::Succeeded));
    let counted = dry.progress.clone().expect("progress");
    let in_scope: BTreeSet<Written> = written
        .iter()
        .filter(|w| w.key.starts_with("x/"))
        .cloned()
        .collect();
    let (versions, markers, bytes) = totals(&in_scope);
    assert_eq!(
        (
            counted.versions_deleted,
            counted.delete_markers_deleted,
            counted.bytes_deleted
        ),
        (versions, markers, bytes)
    );
    let summary = dry.certificate.expect("certificate");
    assert_eq!(summary.entries, 0, "a dry run records nothing as deleted");
    assert!(!summary.verified);
    assert!(
        summary.evidence.is_none(),
        "a dry run deleted nothing and locks no evidence"
    );
    let cert = certificate(&s, "count").await;
    assert_eq!(cert["dryRun"], json!(true));
    assert_eq!(cert["counts"]["versions"], json!(versions));

    submit(&s, &request("real", "t", scope, "Purge", false)).await;
    assert!(purge(&s, "real").await.success());
    assert_deleted_exactly(&s, "real", &in_scope).await;
    let real = status(&s, "real").await.progress.expect("progress");
    assert_eq!(
        (
            real.versions_deleted,
            real.delete_markers_deleted,
            real.bytes_deleted
        ),
        (
            counted.versions_deleted,
            counted.delete_markers_deleted,
            counted.bytes_deleted
        )
    );
}

/// Crypto-shred: the tenant key is disabled and scheduled for deletion with the policy's
/// window. ministack's S3 does not check the key's state, so objects stay readable there (on
/// AWS, reads fail once the key is disabled): only the key's state is observable here.
#[tokio::test]
async fn crypto_shred_schedules_key_deletion_with_the_policy_window() {
    let s = Scenario::new("purgeshred").await;
    let mut spec = eu_spec();
    spec.encryption.key_deletion_window_days = 9;
    let policy = s.policy(spec).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("gone", &policy, json!({})))
        .await
        .expect("create tenant");
    let ts = s.wait_ready("gone").await.status.expect("status");
    let (bucket, key_arn) = (
        ts.bucket_name.expect("bucket"),
        ts.kms_key_arn.expect("key"),
    );
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["d/"], 5)).await;

    submit(
        &s,
        &request(
            "shred",
            "gone",
            json!({"wholeTenant": true}),
            "PurgeAndCryptoShred",
            false,
        ),
    )
    .await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(purge(&s, "shred").await.success());
    assert!(listing(&s3, &bucket).await.is_empty());
    assert_deleted_exactly(&s, "shred", &written).await;
    let key = aws
        .kms("eu-central-1")
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .expect("key");
    let meta = key.key_metadata().expect("metadata");
    assert_eq!(
        meta.key_state().map(|s| s.as_str()),
        Some("PendingDeletion")
    );
    let days = (meta.deletion_date().expect("deletion date").as_secs_f64() - before) / 86_400.0;
    assert!((8.9..9.1).contains(&days), "deletion in {days} days");
    let cert = certificate(&s, "shred").await;
    assert_eq!(cert["cryptoShred"]["keyArn"], json!(key_arn));
    assert_eq!(cert["cryptoShred"]["keyState"], json!("PendingDeletion"));
    assert_eq!(cert["cryptoShred"]["windowDays"], json!(9));
    assert!(cert["cryptoShred"]["deletionDate"].is_string());

    // Idempotent: a rerun (a Job retried after the shred) keeps the key pending deletion.
    assert!(purge(&s, "shred").await.success());
    let again = aws
        .kms("eu-central-1")
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .expect("key");
    assert_eq!(
        again
            .key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str()),
        Some("PendingDeletion")
    );
}

/// Object Lock (enforced by ministack: per-key AccessDenied): GOVERNANCE and COMPLIANCE
/// retention and legal holds are never bypassed; everything else goes; the request ends
/// Blocked with the locked versions and their retain-until dates, and the key is not shredded.
#[tokio::test]
async fn object_lock_blocks_and_is_reported() {
    let s = Scenario::new("purgelock").await;
    let policy = s.policy(eu_spec()).await;
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");
    // The tenant's bucket, created beforehand with Object Lock and the ownership tags, so the
    // operator adopts it (the operator itself never turns Object Lock on).
    let bucket = s.bucket_for("vault");
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .expect("create Object Lock bucket");
    let tags = [
        ("tenancy.dev/managed-by", "tenant-storage-operator"),
        ("tenancy.dev/cluster-id", s.cluster_id.as_str()),
        ("tenancy.dev/namespace", s.ns.as_str()),
        ("tenancy.dev/name", "vault"),
    ];
    put_bucket_tags(&s3, &bucket, tags.iter().copied()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("vault", &policy, json!({})))
        .await
        .expect("create tenant");
    let status_ts = s.wait_ready("vault").await.status.expect("status");
    assert_eq!(
        status_ts.bucket_name.as_deref(),
        Some(bucket.as_str()),
        "adopted"
    );
    let key_arn = status_ts.kms_key_arn.expect("key");

    let free = fill(&s3, &bucket, layout(&["free/"], 6)).await;
    let until_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        + 86_400;
    let until = DateTime::from_secs(until_secs);
    let mut locked = BTreeMap::new();
    for (key, mode) in [
        ("keep/governance", "GOVERNANCE"),
        ("keep/compliance", "COMPLIANCE"),
    ] {
        let put = s3
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from_static(b"retained"))
            .object_lock_mode(ObjectLockMode::from(mode))
            .object_lock_retain_until_date(until)
            .send()
            .await
            .expect("put retained object");
        locked.insert(
            key.to_owned(),
            (put.version_id().expect("version").to_owned(), mode),
        );
    }
    let held = s3
        .put_object()
        .bucket(&bucket)
        .key("keep/held")
        .body(ByteStream::from_static(b"on hold"))
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .send()
        .await
        .expect("put held object");
    locked.insert(
        "keep/held".to_owned(),
        (held.version_id().expect("version").to_owned(), "LegalHold"),
    );

    submit(
        &s,
        &request(
            "vault",
            "vault",
            json!({"wholeTenant": true}),
            "PurgeAndCryptoShred",
            false,
        ),
    )
    .await;
    let exit = purge(&s, "vault").await;
    assert_eq!(exit.code(), Some(3), "Blocked exits 3");
    let left = listing(&s3, &bucket).await;
    let expect_left: BTreeSet<(String, String)> = locked
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(left, expect_left, "exactly the locked versions remain");

    let st = status(&s, "vault").await;
    assert_eq!(st.phase, Some(DeletionPhase::Blocked));
    let progress = st.progress.expect("progress");
    let (versions, markers, _) = totals(&free);
    assert_eq!(
        (
            progress.versions_deleted,
            progress.delete_markers_deleted,
            progress.locked_versions
        ),
        (versions, markers, 3)
    );
    // The locked versions are listed in the evidence, under Object Lock like the manifest; the
    // cluster (status, certificate copy) names none of them.
    let cert = certificate(&s, "vault").await;
    let list = &cert["evidence"]["locked"];
    let evidence_bucket = cert["evidence"]["bucket"]
        .as_str()
        .expect("evidence bucket");
    let object = s3
        .get_object()
        .bucket(evidence_bucket)
        .key(list["key"].as_str().expect("key"))
        .version_id(list["versionId"].as_str().expect("version"))
        .send()
        .await
        .expect("the locked-version list");
    assert_eq!(
        object.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let gz = object.body.collect().await.expect("body").into_bytes();
    assert_eq!(
        list["sha256"].as_str(),
        Some(hex(&Sha256::digest(&gz)).as_str())
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
        .expect("gzip");
    let mut reported: Vec<(String, String, String, Option<String>)> = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let until = (f[3] != "-").then(|| f[3].to_owned());
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned(), until)
        })
        .collect();
    reported.sort();
    let in_cluster = format!(
        "{}{}",
        serde_json::to_string(&requests(&s).get("vault").await.expect("request")).expect("json"),
        cert
    );
    for key in locked.keys() {
        assert!(
            !in_cluster.contains(key.as_str()),
            "{key} is named in the cluster"
        );
    }
    let until_text = until
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .expect("date");
    let expected: Vec<(String, String, String, Option<String>)> = locked
        .iter()
        .map(|(k, (v, mode))| {
            let retain = (*mode != "LegalHold").then(|| until_text.clone());
            (k.clone(), v.clone(), (*mode).to_owned(), retain)
        })
        .collect();
    assert_eq!(reported, expected);
    let summary = st.certificate.expect("certificate");
    assert!(!summary.verified, "locked versions remain");
    let (recomputed, entries) = manifest(&s, "vault").await;
    assert_eq!(summary.sha256, recomputed);
    assert_eq!(entries.len(), free.len(), "no entry twice");
    assert_eq!(entries.into_iter().collect::<BTreeSet<_>>(), ids(&free));
    assert_eq!(cert["outcome"], json!("Blocked"));
    assert_eq!(cert["verification"]["remaining"], json!(3));
    assert_eq!(cert["lockedVersionsTotal"], json!(3));
    assert!(
        cert["cryptoShred"]["skipped"].is_string(),
        "{}",
        cert["cryptoShred"]
    );
    let key = aws
        .kms("eu-central-1")
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .expect("key");
    assert_eq!(
        key.key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str()),
        Some("Enabled"),
        "the key of retained data is not destroyed"
    );
}

/// The purge itself refuses a request naming another namespace's TenantStorage, whatever the
/// controller did, and writes nothing.
#[tokio::test]
async fn purge_refuses_another_namespace() {
    let s = Scenario::new("purgens").await;
    let mut req = request(
        "sneaky",
        "victim",
        json!({"wholeTenant": true}),
        "Purge",
        false,
    );
    req.spec.tenant_storage_ref.namespace = Some("kube-system".into());
    requests(&s)
        .create(&PostParams::default(), &req)
        .await
        .expect("create request");
    // No operator runs, so no Job: the command a Job for it would run.
    let args = [
        "purge",
        "--namespace",
        &s.ns,
        "--request",
        "sneaky",
        "--records-namespace",
        &system_namespace(),
        "--cluster-id",
        &s.cluster_id,
        "--evidence-bucket",
        "tso-evidence-unused",
        "--evidence-region",
        "eu-central-1",
        "--signing-key",
        "arn:aws:kms:eu-central-1:000000000000:key/unused",
        "--evidence-retention-days",
        "1",
    ];
    let container = Container {
        command: Some(vec!["tenant-storage-operator".to_owned()]),
        args: Some(args.map(str::to_owned).to_vec()),
        env: Some(
            [
                "TSO_AWS_ENDPOINT_URL",
                "TSO_S3_FORCE_PATH_STYLE",
                "AWS_CA_BUNDLE",
                "AWS_REGION",
            ]
            .map(|name| EnvVar {
                name: name.to_owned(),
                value: Some(crate::harness::env(name)),
                ..EnvVar::default()
            })
            .to_vec(),
        ),
        ..Container::default()
    };
    let out = pod_command(
        &crate::harness::env("TSO_PURGE_SERVICE_ACCOUNT"),
        &container,
    )
    .await
    .output()
    .await
    .expect("run purge");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("only deletes data of a TenantStorage in its own namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &system_namespace());
    let prefix = deletion_job_name(&s.ns, "sneaky");
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.name_any())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// `(key, uploadId)` of every incomplete multipart upload in the bucket, page by page.
async fn uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    let mut marker: Option<(String, String)> = None;
    loop {
        let mut req = s3.list_multipart_uploads().bucket(bucket);
        if let Some((k, u)) = &marker {
            req = req.key_marker(k).upload_id_marker(u);
        }
        let page = req.send().await.expect("list uploads");
        for u in page.uploads() {
            all.insert((
                u.key().unwrap_or_default().to_owned(),
                u.upload_id().unwrap_or_default().to_owned(),
            ));
        }
        match (
            page.is_truncated(),
            page.next_key_marker(),
            page.next_upload_id_marker(),
        ) {
            (Some(true), Some(k), Some(u)) => marker = Some((k.to_owned(), u.to_owned())),
            _ => return all,
        }
    }
}

/// Starts `count` multipart uploads of each key, uploading one part to the first `parts` of
/// them; returns their `(key, uploadId)`.
async fn start_uploads(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    layout: &[(&str, usize)],
    parts: usize,
) -> BTreeSet<(String, String)> {
    let starts = layout
        .iter()
        .flat_map(|(key, count)| (0..*count).map(move |i| ((*key).to_owned(), i < parts)));
    futures::stream::iter(starts)
        .map(|(key, with_part)| async move {
            let upload = s3
                .create_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("create multipart upload");
            let id = upload.upload_id().expect("upload id").to_owned();
            if with_part {
                s3.upload_part()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(&id)
                    .part_number(1)
                    .body(ByteStream::from(vec![b'p'; 1024]))
                    .send()
                    .await
                    .expect("upload part");
            }
            (key, id)
        })
        .buffer_unordered(24)
        .collect()
        .await
}

/// Incomplete multipart uploads, which `ListObjectVersions` never shows, are listed page by page
/// (more than the Job's page of 1000, with a page boundary inside one key), aborted with their
/// parts, counted and recorded; uploads out of scope (`keep/`, `upx/`, which shares the string
/// prefix `up`, and another tenant's `up/`) stay. The Job is killed while aborting: its rerun
/// gets `NoSuchUpload` for what was already aborted and still certifies each upload once.
#[tokio::test]
async fn incomplete_uploads_in_scope_are_aborted_and_certified() {
    let s = Scenario::new("purgemp").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let other = s.ready_bucket("o", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["up/", "keep/"], 6)).await;
    let (in_scope, rest): (BTreeSet<Written>, BTreeSet<Written>) = written
        .iter()
        .cloned()
        .partition(|w| w.key.starts_with("up/"));
    // Sorted, the first page of 1000 ends inside up/many.
    let started = start_uploads(
        &s3,
        &bucket,
        &[("up/deep/x.bin", 1), ("up/f0.bin", 2), ("up/many", 1100)],
        3,
    )
    .await;
    start_uploads(&s3, &bucket, &[("keep/f1.bin", 2), ("upx/y.bin", 1)], 3).await;
    start_uploads(&s3, &other, &[("up/many", 3)], 3).await;
    // Under load the SDK may retry a CreateMultipartUpload whose first attempt did land,
    // starting an upload no response names: the listing is the truth.
    let (aborted, kept): (BTreeSet<_>, BTreeSet<_>) = uploads(&s3, &bucket)
        .await
        .into_iter()
        .partition(|(k, _)| k.starts_with("up/"));
    assert!(aborted.len() >= 1103 && aborted.is_superset(&started));
    assert!(kept.len() >= 3 && kept.iter().all(|(k, _)| !k.starts_with("up/")));
    let theirs = uploads(&s3, &other).await;
    assert!(theirs.len() >= 3);
    let (parted_key, parted_id) = started
        .iter()
        .find(|(k, _)| k == "up/f0.bin")
        .cloned()
        .expect("an upload with a part");

    submit(
        &s,
        &request("mp", "t", json!({"prefixes": ["up/"]}), "Purge", false),
    )
    .await;
    let mut child = purge_command(&s, "mp").await.spawn().expect("start purge");
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        assert!(std::time::Instant::now() < deadline, "no upload aborted");
        if let Some(exit) = child.try_wait().expect("poll purge") {
            panic!("purge finished ({exit:?}) before it could be killed while aborting");
        }
        let left = uploads(&s3, &bucket).await.intersection(&aborted).count();
        if left < aborted.len() {
            assert!(left > 0, "every upload aborted before the kill");
            child.kill().await.expect("SIGKILL purge");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = purge(&s, "mp").await;
    assert!(exit.success(), "purge exited {exit:?}");

    assert_eq!(
        uploads(&s3, &bucket).await,
        kept,
        "only uploads out of scope are left"
    );
    assert_eq!(
        uploads(&s3, &other).await,
        theirs,
        "the other tenant is untouched"
    );
    let parts = s3
        .list_parts()
        .bucket(&bucket)
        .key(&parted_key)
        .upload_id(&parted_id)
        .send()
        .await;
    assert_eq!(
        parts
            .err()
            .and_then(|e| e.into_service_error().meta().code().map(str::to_owned)),
        Some("NoSuchUpload".to_owned()),
        "the aborted upload's parts are gone"
    );
    assert_eq!(
        listing(&s3, &bucket).await,
        ids(&rest),
        "only up/ versions are gone"
    );
    assert_removed_exactly(&s, "mp", &in_scope, &aborted).await;
    let cert = certificate(&s, "mp").await;
    assert!(
        cert["hashInput"]
            .as_str()
            .is_some_and(|h| h.contains("incomplete multipart uploads")),
        "{}",
        cert["hashInput"]
    );
}

/// A purge, run as its Job, with a fifth of its AWS calls failing (throttling, server errors,
/// resets, lost answers, latency on listing, deleting, the journal, the evidence and the
/// signature alike), still certifies exactly what it deleted and leaves nothing.
#[tokio::test]
async fn a_purge_under_a_fifth_of_calls_failing_certifies_exactly() {
    let s = Scenario::new("purgefaults").await;
    let policy = s.policy(eu_spec()).await;
    let proxy = crate::harness::FaultProxy::start(0.2, 5).await;
    // The Job is given the operator's endpoint: the proxy.
    let _op = crate::harness::Operator::start_with_env(
        &s.cluster_id,
        &s.prefix,
        &[s.ns.as_str()],
        &[],
        &[("TSO_AWS_ENDPOINT_URL", proxy.url.as_str())],
    )
    .await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/", "b/"], 600)).await;
    submit(
        &s,
        &request("faulty", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    let endpoint = job_container(&s.ns, "faulty")
        .await
        .env
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "TSO_AWS_ENDPOINT_URL")
        .and_then(|v| v.value);
    assert_eq!(endpoint.as_deref(), Some(proxy.url.as_str()));
    let before = proxy.calls().len();
    let exit = purge(&s, "faulty").await;
    assert!(exit.success(), "purge exited {exit:?}");
    assert!(listing(&s3, &bucket).await.is_empty(), "nothing left");
    assert_deleted_exactly(&s, "faulty", &written).await;
    let calls = proxy.calls().split_off(before);
    let faulted = calls.iter().filter(|[.., fault, _]| fault != "-").count();
    println!(
        "purge under faults: {faulted} of {} calls faulted",
        calls.len()
    );
    assert!(faulted * 20 >= calls.len(), "{faulted} of {}", calls.len());
}

/// The Job's API server (a second one on the suite's etcd) is killed as soon as the purge runs,
/// and comes back once the pod has met the outage (at least 7 s later): the pod keeps its fence,
/// retries its refused writes, and finishes by itself with an exact certificate; nothing
/// remains.
#[tokio::test]
async fn a_purge_survives_an_api_server_restart() {
    let s = Scenario::new("purgeapi").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/", "b/", "c/"], 600)).await;
    submit(
        &s,
        &request("restart", "t", json!({"wholeTenant": true}), "Purge", false),
    )
    .await;
    let mut server = crate::harness::ApiServer::start().await;
    let mut child = purge_command(&s, "restart")
        .await
        .env("KUBECONFIG", server.kubeconfig("purge"))
        .env("TSO_PURGE_CONCURRENCY", "2")
        .spawn()
        .expect("start purge");
    // Killed as soon as the pod has marked the request Running: the rest of its work, and every
    // write it still has to make, falls into the outage.
    eventually("the purge running", || async {
        let phase = requests(&s).get("restart").await.ok()?.status?.phase?;
        assert!(
            phase == DeletionPhase::Running || phase == DeletionPhase::Pending,
            "the purge got to {phase:?} before the outage"
        );
        (phase == DeletionPhase::Running).then_some(())
    })
    .await;
    server.kill().await;
    // Down for at least 7 s, and until the pod has had to retry a write (it cannot finish
    // without its final status and certificate writes).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let log = log_path(&s, "restart");
    eventually("a write of the purge refused by the outage", || async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("the API server did not take it; retrying")
            .then_some(())
    })
    .await;
    server.start_again().await;
    let exit = tokio::time::timeout(Duration::from_secs(300), child.wait())
        .await
        .expect("purge finishes")
        .expect("wait for purge");
    assert!(exit.success(), "purge exited {exit:?}");
    assert!(listing(&s3, &bucket).await.is_empty(), "nothing left");
    assert_deleted_exactly(&s, "restart", &written).await;
}

/// Through a proxy that answers 30% of status writes 409 Conflict (its seed refuses the first two
/// of them, whatever the timing), the Job retries each refused write and finishes with an exact
/// certificate.
#[tokio::test]
async fn a_purge_under_conflicting_status_writes_certifies_exactly() {
    let s = Scenario::new("purgeconflict").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let written = fill(&s3, &bucket, layout(&["a/", "b/"], 600)).await;
    submit(
        &s,
        &request(
            "conflicts",
            "t",
            json!({"wholeTenant": true}),
            "Purge",
            false,
        ),
    )
    .await;
    let proxy = crate::harness::KubeFaultProxy::start(0.3, (1, 4), 4).await;
    let exit = purge_command(&s, "conflicts")
        .await
        .env("KUBECONFIG", proxy.kubeconfig("purge"))
        .env("TSO_PURGE_CONCURRENCY", "2")
        .status()
        .await
        .expect("run purge");
    assert!(exit.success(), "purge exited {exit:?}");
    assert!(listing(&s3, &bucket).await.is_empty(), "nothing left");
    assert_deleted_exactly(&s, "conflicts", &written).await;
    let conflicts = proxy.calls().iter().filter(|c| c[2] == "conflict").count();
    assert!(conflicts > 0, "status writes were refused");
}
