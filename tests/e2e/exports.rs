//! DataExportRequests end to end: the operator creates the Job, the Job runs as its pod would
//! (the chart's export service account and the generated export IAM policy), and the export is
//! downloaded through its link with an ordinary HTTP client (Python's urllib) and unpacked with
//! Python's `tarfile`, the way a customer would.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenant_storage_operator::api::{
    ConditionStatus, DataDeletionRequest, DataExportRequest, DeletionPhase, ExportPhase,
};
use tenant_storage_operator::cloud::failpoint;
use tenant_storage_operator::controllers::REFRESH_ANNOTATION;
use tenant_storage_operator::plan::naming::{
    export_bucket_name, export_link_handoff_name, export_link_job_name,
};
use tenant_storage_operator::plan::policy_document::{PolicyDocument, Statement};

use crate::harness::{
    Aws, Scenario, env, eu_spec, eventually, export_aws, export_job_command, iam_user, job_command,
    pod_command, system_job_container, system_namespace, tenant,
};

fn request(name: &str, tenant: &str, scope: Value) -> DataExportRequest {
    let spec = json!({
        "tenantStorageRef": {"name": tenant},
        "scope": scope,
        "requestedBy": "dpo@example.com",
        "reason": "GDPR-77: subject access request",
    });
    DataExportRequest::new(name, serde_json::from_value(spec).expect("request spec"))
}

/// Creates a DataDeletionRequest purging `prefix` of `tenant`; the API of such requests.
async fn delete_prefix(
    s: &Scenario,
    name: &str,
    tenant: &str,
    prefix: &str,
) -> Api<DataDeletionRequest> {
    let deletions: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    let spec = json!({"tenantStorageRef": {"name": tenant}, "scope": {"prefixes": [prefix]},
                      "method": "Purge", "requestedBy": "dpo", "reason": "test"});
    let deletion =
        DataDeletionRequest::new(name, serde_json::from_value(spec).expect("deletion spec"));
    deletions
        .create(&PostParams::default(), &deletion)
        .await
        .expect("create deletion");
    deletions
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that do not repeat, so a misplaced part changes every digest.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest([seed]).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

/// Writes `objects` into `bucket` (as the account root, past the bucket policy, like a workload
/// of the tenant would) and returns the current content of each key.
async fn write(bucket: &str, objects: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    let s3 = Aws::root().await.s3("eu-central-1");
    let mut current = BTreeMap::new();
    for (key, body) in objects {
        s3.put_object()
            .bucket(bucket)
            .key(*key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .expect("put object");
        current.insert((*key).to_owned(), body.clone());
    }
    current
}

async fn submit(s: &Scenario, req: &DataExportRequest) {
    let api: Api<DataExportRequest> = Api::namespaced(s.client.clone(), &s.ns);
    api.create(&PostParams::default(), req)
        .await
        .expect("create export request");
}

/// Waits until the request has succeeded and the operator has put its link in place.
async fn wait_linked(s: &Scenario, name: &str, refresh: Option<&str>) -> DataExportRequest {
    let api: Api<DataExportRequest> = Api::namespaced(s.client.clone(), &s.ns);
    eventually(&format!("export {name} succeeded and linked"), || async {
        let r = api.get(name).await.ok()?;
        let status = r.status.as_ref()?;
        let link = status.link.as_ref()?;
        (status.phase == Some(ExportPhase::Succeeded) && link.refresh.as_deref() == refresh)
            .then_some(r.clone())
    })
    .await
}

/// What a customer sees through the link, checked by Python: the download's status, a
/// plain-HTTP try's status, the archive's digest, each member's digest (after a safe
/// `extractall`), and the manifest.
const DOWNLOAD: &str = r#"
import hashlib, io, json, ssl, sys, tarfile, tempfile, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[3])
def get(url, headers={}):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
status, archive = get(sys.argv[1])
_, manifest = get(sys.argv[2])
plain, _ = get(sys.argv[1], {"X-Forwarded-Proto": "http"})
members = {}
if status == 200:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for m in tar.getmembers():
            members[m.name] = hashlib.sha256(tar.extractfile(m).read()).hexdigest()
        tar.extractall(tempfile.mkdtemp(), filter="data")
print(json.dumps({"status": status, "plainHttp": plain, "archiveSha256": hashlib.sha256(archive).hexdigest(),
                  "members": members, "manifest": manifest.decode(errors="replace")}))
"#;

async fn download(archive_url: &str, manifest_url: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            DOWNLOAD,
            archive_url,
            manifest_url,
            &env("AWS_CA_BUNDLE"),
        ])
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("download report")
}

/// The link Secret the operator wrote in the request's namespace.
async fn link_secret(s: &Scenario, request: &str) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns);
    let secret = secrets
        .get(&format!("{request}-export-link"))
        .await
        .expect("link secret");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

async fn run_export(s: &Scenario, name: &str) {
    let out = export_job_command(&s.ns, name)
        .await
        .output()
        .await
        .expect("run the export job");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The export of one prefix holds exactly the current versions under it, byte for byte as the
/// tenant's bucket has them, downloadable through the link over TLS only; the link is only in
/// the Secret; the export bucket is in the tenant's region, locked to the export identity; the
/// signed record verifies; and a fresh link can be asked for.
#[tokio::test]
async fn an_export_holds_exactly_its_scope_and_downloads_through_its_link() {
    let s = Scenario::new("dxr").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let other = s.ready_bucket("other", &policy).await;
    write(&other, &[("users/1/a.json", b"another tenant".to_vec())]).await;
    write(&bucket, &[("users/1/c", b"old".to_vec())]).await;
    let source = write(
        &bucket,
        &[
            ("users/1/a.json", br#"{"name":"Ada"}"#.to_vec()),
            ("users/1/deep/b.bin", noise(9 * 1024 * 1024 + 77, 1)),
            ("users/1/c", b"current".to_vec()),
            ("users/10/x", b"another user".to_vec()),
            ("users/1/gone", b"deleted".to_vec()),
        ],
    )
    .await;
    Aws::root()
        .await
        .s3("eu-central-1")
        .delete_object()
        .bucket(&bucket)
        .key("users/1/gone")
        .send()
        .await
        .expect("delete");
    submit(&s, &request("ask", "t", json!({"prefixes": ["users/1/"]}))).await;
    run_export(&s, "ask").await;
    let done = wait_linked(&s, "ask", None).await;
    let status = done.status.clone().expect("status");
    let result = status.result.clone().expect("result");
    let link = link_secret(&s, "ask").await;
    let got = download(&link["archiveUrl"], &link["manifestUrl"]).await;

    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(
        got["plainHttp"], 403,
        "plain HTTP to the export bucket is refused"
    );
    assert_eq!(got["archiveSha256"], result.archive_sha256.as_str());
    let expected: BTreeMap<String, String> = ["users/1/a.json", "users/1/deep/b.bin", "users/1/c"]
        .iter()
        .map(|k| (format!("objects/{k}"), sha(&source[*k])))
        .collect();
    let members: BTreeMap<String, String> =
        serde_json::from_value(got["members"].clone()).expect("members");
    assert_eq!(members, expected, "exactly the current versions in scope");

    let manifest: Vec<Value> = got["manifest"]
        .as_str()
        .expect("manifest")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        manifest[0]["archive"]["sha256"],
        result.archive_sha256.as_str()
    );
    assert_eq!(manifest[0]["objects"], 3);
    let listed: BTreeMap<String, String> = manifest[1..]
        .iter()
        .map(|l| {
            let key = l["key"].as_str().expect("key");
            (
                format!("objects/{key}"),
                l["sha256"].as_str().expect("sha").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed, expected,
        "the manifest lists exactly what the archive holds"
    );

    // The link lives no longer than the policy's presigned-URL maximum.
    let max_age = eu_spec().transport.presigned_url_max_age_seconds;
    let expires: i64 = link["archiveUrl"]
        .split("X-Amz-Expires=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|n| n.parse().ok())
        .expect("X-Amz-Expires");
    assert!(0 < expires && expires <= max_age, "{expires}");
    let status_json = serde_json::to_string(&status).expect("status JSON");
    assert!(
        !status_json.contains("X-Amz-") && !status_json.contains("https://"),
        "no link in status: {status_json}"
    );

    // The export bucket: in the tenant's region, expiring exports, and no reader but the
    // export identity and the admins (an IAM user allowed s3:* is refused).
    let exports = export_bucket_name(&s.prefix, &s.cluster_id, &policy, "eu-central-1");
    assert_eq!(result.bucket, exports);
    let root = Aws::root().await.s3("eu-central-1");
    let location = root
        .get_bucket_location()
        .bucket(&exports)
        .send()
        .await
        .expect("location");
    assert_eq!(
        location.location_constraint().map(|c| c.as_str()),
        Some("eu-central-1")
    );
    let lifecycle = root
        .get_bucket_lifecycle_configuration()
        .bucket(&exports)
        .send()
        .await
        .expect("lifecycle");
    assert_eq!(
        lifecycle.rules()[0].expiration().and_then(|e| e.days()),
        Some(7)
    );
    let everything = PolicyDocument::new(vec![
        Statement::allow("AllOfS3").action("s3:*").resources(["*"]),
    ]);
    let (key, secret) = iam_user("tso-export-outsider", "all-of-s3", &everything).await;
    let outsider = Aws::keys(&key, &secret)
        .await
        .s3("eu-central-1")
        .get_object()
        .bucket(&exports)
        .key(&result.archive_key)
        .send()
        .await;
    assert!(outsider.is_err(), "an s3:* user cannot read exports");
    let policy_text = root
        .get_bucket_policy()
        .bucket(&exports)
        .send()
        .await
        .expect("policy");
    let policy_text = policy_text.policy().unwrap_or_default();
    assert!(
        policy_text.contains("DenyStalePresignedUrls") && policy_text.contains("s3:signatureAge"),
        "{policy_text}"
    );

    // The export record, signed by the region's signing key, under Object Lock.
    let record = result.record.clone().expect("record");
    let body = root
        .get_object()
        .bucket(&record.bucket)
        .key(&record.key)
        .send()
        .await
        .expect("record");
    let body = body.body.collect().await.expect("bytes").into_bytes();
    let signature = root
        .get_object()
        .bucket(&record.bucket)
        .key(format!("{}.sig", record.key))
        .send()
        .await
        .expect("signature");
    let signature = signature.body.collect().await.expect("bytes").into_bytes();
    let verified = Aws::root()
        .await
        .kms("eu-central-1")
        .verify()
        .key_id(&record.signing_key_arn)
        .message(aws_sdk_kms::primitives::Blob::new(
            Sha256::digest(&body).to_vec(),
        ))
        .message_type(aws_sdk_kms::types::MessageType::Digest)
        .signature(aws_sdk_kms::primitives::Blob::new(signature.to_vec()))
        .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect("verify");
    assert!(verified.signature_valid());
    let record: Value = serde_json::from_slice(&body).expect("record JSON");
    assert_eq!(
        record["export"]["archiveSha256"],
        result.archive_sha256.as_str()
    );
    assert_eq!(record["requestedBy"], "dpo@example.com");

    // A fresh link, asked for with the annotation: a link Job, then the Secret renewed.
    let api: Api<DataExportRequest> = Api::namespaced(s.client.clone(), &s.ns);
    let annotate = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "1"}}});
    api.patch("ask", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    let uid = done.metadata.uid.clone().expect("uid");
    let job = export_link_job_name(&uid, "1");
    let container = system_job_container(&job, &env("TSO_EXPORT_SERVICE_ACCOUNT")).await;
    assert_eq!(
        container
            .args
            .as_deref()
            .and_then(|a| a.last())
            .map(String::as_str),
        Some("1")
    );
    let out = pod_command(&env("TSO_EXPORT_SERVICE_ACCOUNT"), &container)
        .await
        .output()
        .await
        .expect("run the link job");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_linked(&s, "ask", Some("1")).await;
    let fresh = link_secret(&s, "ask").await;
    let again = download(&fresh["archiveUrl"], &fresh["manifestUrl"]).await;
    assert_eq!(again["archiveSha256"], result.archive_sha256.as_str());
    // The handover Secrets are gone from the operator's namespace once copied.
    let handoffs: Api<Secret> = Api::namespaced(s.client.clone(), &system_namespace());
    for refresh in [None, Some("1")] {
        let name = export_link_handoff_name(&uid, refresh);
        eventually(&format!("handover {name} removed"), || async {
            handoffs
                .get_opt(&name)
                .await
                .ok()
                .and_then(|found| found.is_none().then_some(()))
        })
        .await;
    }
}

/// Killed at several instants (right after an archive part, right after the archive's
/// completion, whose answer is then lost), rerun: the same archive digest as an export that
/// was never killed, every object once, and no multipart upload left open. A deletion of the
/// tenant waits for the running export.
#[tokio::test]
async fn a_killed_export_resumes_to_the_same_archive_and_deletion_waits_for_it() {
    let s = Scenario::new("dxrkill").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let mut objects = vec![("big.bin", noise(20 * 1024 * 1024, 7))];
    let small: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("small/{i:03}"), noise(1000 + i * 37, i as u8)))
        .collect();
    objects.extend(small.iter().map(|(k, v)| (k.as_str(), v.clone())));
    write(&bucket, &objects).await;
    submit(&s, &request("killed", "t", json!({"wholeTenant": true}))).await;
    submit(&s, &request("clean", "t", json!({"wholeTenant": true}))).await;

    // While the export's Job runs (exists and has not ended), a deletion waits.
    export_job_command(&s.ns, "killed").await;
    let deletions = delete_prefix(&s, "bye", "t", "nothing/").await;
    eventually("deletion waits for the export", || async {
        let r = deletions.get("bye").await.ok()?;
        r.status?
            .conditions
            .iter()
            .any(|c| {
                c.type_ == "Accepted"
                    && c.status == ConditionStatus::False
                    && c.reason == "WaitingForExport"
            })
            .then_some(())
    })
    .await;

    for kill in ["UploadPart:2", "UploadPart:2", "CompleteMultipartUpload:1"] {
        let exit = export_job_command(&s.ns, "killed")
            .await
            .env(failpoint::VARIABLE, kill)
            .status()
            .await
            .expect("run export");
        assert_eq!(exit.code(), Some(failpoint::EXIT), "killed after {kill}");
    }
    run_export(&s, "killed").await;
    run_export(&s, "clean").await;
    let killed = wait_linked(&s, "killed", None).await;
    let clean = wait_linked(&s, "clean", None).await;
    let digest = |r: &DataExportRequest| {
        let result = r
            .status
            .as_ref()
            .and_then(|s| s.result.clone())
            .expect("result");
        (result.archive_sha256, result.archive_bytes)
    };
    assert_eq!(
        digest(&killed),
        digest(&clean),
        "the same archive, killed or not"
    );
    let progress = killed.status.and_then(|s| s.progress).expect("progress");
    assert_eq!(progress.objects, 41);
    let exports = export_bucket_name(&s.prefix, &s.cluster_id, &policy, "eu-central-1");
    let open = export_aws()
        .await
        .s3("eu-central-1")
        .list_multipart_uploads()
        .bucket(&exports)
        .send()
        .await
        .expect("uploads");
    assert!(open.uploads().is_empty(), "{:?}", open.uploads());
    let link = link_secret(&s, "killed").await;
    let got = download(&link["archiveUrl"], &link["manifestUrl"]).await;
    let members: BTreeSet<String> = got["members"]
        .as_object()
        .expect("members")
        .keys()
        .cloned()
        .collect();
    assert_eq!(members.len(), 41, "every object once");

    // With the exports ended, the deletion goes ahead, and takes the tenant's exports (and
    // their journals, which name its keys) with it.
    let out = job_command(&s.ns, "bye")
        .await
        .output()
        .await
        .expect("run the purge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = eventually("deletion succeeded", || async {
        let r = deletions.get("bye").await.ok()?;
        (r.status.as_ref()?.phase == Some(DeletionPhase::Succeeded)).then_some(r)
    })
    .await;
    let root = Aws::root().await.s3("eu-central-1");
    for prefix in tenant_storage_operator::export::tenant_prefixes(&s.ns, "t") {
        let left = root
            .list_objects_v2()
            .bucket(&exports)
            .prefix(&prefix)
            .send()
            .await
            .expect("list exports");
        assert_eq!(left.key_count(), Some(0), "{prefix}: {:?}", left.contents());
    }
    let certificate = done
        .status
        .and_then(|s| s.certificate)
        .expect("certificate");
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(s.client.clone(), &system_namespace());
    let cm = configmaps
        .get(&certificate.config_map)
        .await
        .expect("certificate ConfigMap");
    let text = cm
        .data
        .and_then(|d| d.get("certificate.json").cloned())
        .expect("certificate.json");
    let cert: Value = serde_json::from_str(&text).expect("certificate JSON");
    // Two archives and two manifests, and each export's journal (state and chunks).
    let deleted = cert["exportsDeleted"]["objects"]
        .as_u64()
        .expect("exportsDeleted");
    assert!(deleted >= 6, "{cert}");
    assert_eq!(cert["exportsDeleted"]["bucket"], exports.as_str());
}

/// A delegated tenant's data is in the customer's own bucket already: its export is refused
/// with a reason that says so, and no Job is created.
#[tokio::test]
async fn a_delegated_tenant_export_is_refused() {
    let s = Scenario::new("dxrdeleg").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let delegated = tenant(
        "byo",
        &policy,
        json!({"mode": "Delegated", "delegated": {
            "roleArn": "arn:aws:iam::111122223333:role/customer",
            "bucket": "customer-bucket"}}),
    );
    s.create(&delegated).await.expect("create delegated tenant");
    submit(&s, &request("mine", "byo", json!({"wholeTenant": true}))).await;
    let api: Api<DataExportRequest> = Api::namespaced(s.client.clone(), &s.ns);
    let refused = eventually("export rejected", || async {
        let r = api.get("mine").await.ok()?;
        (r.status.as_ref()?.phase == Some(ExportPhase::Rejected)).then_some(r)
    })
    .await;
    let accepted = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"))
        .expect("Accepted condition");
    assert_eq!(accepted.reason, "DelegatedTenant");
    assert!(
        accepted
            .message
            .contains("customer's own bucket customer-bucket")
    );
}

/// An export waits while a deletion of its tenant runs (it would copy data being deleted), and
/// starts once the deletion has ended.
#[tokio::test]
async fn an_export_waits_for_a_running_deletion() {
    let s = Scenario::new("dxrwait").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    write(&bucket, &[("users/1/a", b"a".to_vec())]).await;
    delete_prefix(&s, "first", "t", "users/1/").await;
    let mut purge = job_command(&s.ns, "first").await;
    submit(&s, &request("then", "t", json!({"wholeTenant": true}))).await;
    let api: Api<DataExportRequest> = Api::namespaced(s.client.clone(), &s.ns);
    eventually("export waits for the deletion", || async {
        let r = api.get("then").await.ok()?;
        r.status?
            .conditions
            .iter()
            .any(|c| c.reason == "WaitingForDeletion" && c.status == ConditionStatus::False)
            .then_some(())
    })
    .await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(s.client.clone(), &system_namespace());
    let export_job = tenant_storage_operator::plan::naming::export_job_name(&s.ns, "then");
    assert!(jobs.get_opt(&export_job).await.expect("get").is_none());
    let out = purge.output().await.expect("run the purge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_export(&s, "then").await;
    let done = wait_linked(&s, "then", None).await;
    let progress = done.status.and_then(|s| s.progress).expect("progress");
    assert_eq!(
        progress.objects, 0,
        "the export began after the deletion ended"
    );
}
