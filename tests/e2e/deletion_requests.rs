use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tenant_storage_operator::api::{
    ConditionStatus, DataDeletionRequest, DeletionPhase, EncryptionMode,
};
use tenant_storage_operator::controllers::{REQUEST_LABEL, deletion_job_name};
use tenant_storage_operator::plan::naming::{deletion_request_label, key_alias};
use tenant_storage_operator::purge::UID_LABEL;

use crate::harness::{
    Aws, Scenario, client_as, condition, eu_spec, eventually, job_command, system_namespace, tenant,
};

fn request(name: &str, tenant: &str, extra: serde_json::Value) -> DataDeletionRequest {
    let mut spec = json!({
        "tenantStorageRef": {"name": tenant},
        "scope": {"wholeTenant": true},
        "method": "Purge",
        "requestedBy": "dpo@example.com",
        "reason": "GDPR-1234: customer left",
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    DataDeletionRequest::new(name, serde_json::from_value(spec).expect("request spec"))
}

/// Plays the kubelet: runs the request's Job as its pod would, and waits for the request to
/// report success.
async fn run_job_to_success(s: &Scenario, name: &str) -> DataDeletionRequest {
    let out = job_command(&s.ns, name)
        .await
        .output()
        .await
        .expect("run the job's command");
    assert!(
        out.status.success(),
        "purge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    eventually("request succeeded", || async {
        let r = requests.get(name).await.ok()?;
        (r.status.as_ref()?.phase == Some(DeletionPhase::Succeeded)).then_some(r)
    })
    .await
}

fn ddr_condition<'a>(
    r: &'a DataDeletionRequest,
    type_: &str,
) -> Option<&'a tenant_storage_operator::api::Condition> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// An accepted request becomes a hardened Job running `purge` under the purge service account;
/// while it runs the tenant shows it and its bucket refuses new writes; the request mirrors the
/// Job, and when the purge reports success the tenant accepts writes again.
#[tokio::test]
async fn request_becomes_a_job_and_locks_writes_while_it_runs() {
    let s = Scenario::new("ddrjob").await;
    let policy = s.policy(eu_spec()).await;
    let op = s
        .operator(&["--purge-image", "registry.example/tso:test"])
        .await;
    let bucket = s.ready_bucket("t", &policy).await;
    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    requests
        .create(&PostParams::default(), &request("leave", "t", json!({})))
        .await
        .expect("create request");

    let job_name = deletion_job_name(&s.ns, "leave");
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), &system_namespace());
    let job = eventually("deletion job", || async {
        jobs.get_opt(&job_name).await.ok()?
    })
    .await;
    let pod = job
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .expect("pod spec");
    assert_eq!(
        pod.service_account_name,
        Some(crate::harness::env("TSO_PURGE_SERVICE_ACCOUNT"))
    );
    let spec = job.spec.as_ref().expect("job spec");
    assert_eq!(
        (spec.parallelism, spec.pod_replacement_policy.as_deref()),
        (Some(1), Some("Failed")),
        "one pod at a time, replaced only once failed"
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/tso:test")
    );
    let args = container.args.clone().unwrap_or_default();
    let evidence = tenant_storage_operator::plan::naming::evidence_bucket_name(
        &s.prefix,
        &s.cluster_id,
        &policy,
        "eu-central-1",
    );
    assert_eq!(
        args[..15],
        [
            "purge",
            "--namespace",
            s.ns.as_str(),
            "--request",
            "leave",
            "--records-namespace",
            &system_namespace(),
            "--cluster-id",
            &s.cluster_id,
            "--evidence-bucket",
            &evidence,
            "--evidence-region",
            "eu-central-1",
            "--signing-key",
            args[14].as_str(),
        ]
    );
    assert!(
        args[14].starts_with("arn:aws:kms:eu-central-1:"),
        "{args:?}"
    );
    let exports = tenant_storage_operator::plan::naming::export_bucket_name(
        &s.prefix,
        &s.cluster_id,
        &policy,
        "eu-central-1",
    );
    assert_eq!(
        args[15..],
        [
            "--evidence-retention-days",
            "2190",
            "--export-bucket",
            &exports
        ]
    );
    let sc = container
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(
        (
            sc.run_as_non_root,
            sc.read_only_root_filesystem,
            sc.allow_privilege_escalation
        ),
        (Some(true), Some(true), Some(false))
    );

    let req = eventually("request accepted", || async {
        let r = requests.get("leave").await.ok()?;
        (ddr_condition(&r, "Accepted")?.status == ConditionStatus::True).then_some(r)
    })
    .await;
    let status = req.status.clone().expect("status");
    assert_eq!(status.phase, Some(DeletionPhase::Pending));
    assert_eq!(status.job_name.as_deref(), Some(job_name.as_str()));
    let created = req.metadata.creation_timestamp.clone().expect("created").0;
    let deadline: k8s_openapi::jiff::Timestamp = status
        .deadline
        .expect("deadline")
        .parse()
        .expect("RFC 3339");
    assert_eq!(
        deadline.duration_since(created).as_hours(),
        30 * 24,
        "the policy's 30 days"
    );
    assert_eq!(
        ddr_condition(&req, "Overdue").map(|c| c.status),
        Some(ConditionStatus::False)
    );

    // The tenant shows the purge and refuses writes.
    let ts = s
        .wait_condition("t", "DeletionInProgress", ConditionStatus::True)
        .await;
    assert!(condition(&ts, "DeletionInProgress").is_some_and(|c| c.message.contains("leave")));
    let user = Aws::user().await.s3("eu-central-1");
    let put = || {
        user.put_object()
            .bucket(&bucket)
            .key("during-purge")
            .body(ByteStream::from_static(b"x"))
            .send()
    };
    eventually("writes refused during the purge", || async {
        put().await.is_err().then_some(())
    })
    .await;

    // The Job's pod starts: the request says Running.
    jobs.patch_status(
        &job_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"active": 1}})),
    )
    .await
    .expect("mark job active");
    eventually("request Running", || async {
        let r = requests.get("leave").await.ok()?;
        (r.status?.phase == Some(DeletionPhase::Running)).then_some(())
    })
    .await;

    // The purge command reports success (what `tenant-storage-operator purge` writes at the end),
    // as the purge service account.
    let as_purge: Api<DataDeletionRequest> = Api::namespaced(client_as("purge").await, &s.ns);
    as_purge
        .patch_status(
            "leave",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .expect("report success");
    let done = eventually("request complete", || async {
        let r = requests.get("leave").await.ok()?;
        (ddr_condition(&r, "Complete")?.status == ConditionStatus::True).then_some(r)
    })
    .await;
    assert_eq!(
        done.status.and_then(|st| st.phase),
        Some(DeletionPhase::Succeeded)
    );
    s.wait_condition("t", "DeletionInProgress", ConditionStatus::False)
        .await;
    assert_eq!(
        op.counter("tenant_storage_deletion_requests", &["phase=\"Succeeded\""])
            .await,
        1.0,
        "deletion requests by phase are exported"
    );
    eventually("writes accepted again", || async {
        put().await.is_ok().then_some(())
    })
    .await;
}

/// A request for another namespace's tenant is rejected and never gets a Job; its spec cannot
/// change after acceptance; crypto-shredding needs the whole tenant.
#[tokio::test]
async fn invalid_requests_are_refused() {
    let s = Scenario::new("ddrbad").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("t", &policy, json!({})))
        .await
        .expect("create tenant");
    s.wait_ready("t").await;
    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);

    let foreign = request(
        "foreign",
        "t",
        json!({"tenantStorageRef": {"name": "t", "namespace": "someone-else"}}),
    );
    requests
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create");
    let r = eventually("request rejected", || async {
        let r = requests.get("foreign").await.ok()?;
        (r.status.as_ref()?.phase == Some(DeletionPhase::Rejected)).then_some(r)
    })
    .await;
    let accepted = ddr_condition(&r, "Accepted").expect("Accepted");
    assert_eq!(
        (accepted.status, accepted.reason.as_str()),
        (ConditionStatus::False, "CrossNamespaceReference")
    );
    assert!(
        accepted.message.contains("spec.tenantStorageRef.namespace"),
        "{}",
        accepted.message
    );
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), &system_namespace());
    assert!(
        jobs.get_opt(&deletion_job_name(&s.ns, "foreign"))
            .await
            .expect("get job")
            .is_none()
    );

    let err = requests
        .create(
            &PostParams::default(),
            &request(
                "shred-part",
                "t",
                json!({"method": "CryptoShred", "scope": {"prefixes": ["users/1/"]}}),
            ),
        )
        .await
        .expect_err("crypto-shredding a prefix is refused");
    assert!(
        err.to_string().contains("needs spec.scope.wholeTenant"),
        "{err}"
    );

    requests
        .create(
            &PostParams::default(),
            &request("fixed", "t", json!({"scope": {"prefixes": ["users/1/"]}})),
        )
        .await
        .expect("create");
    let err = requests
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scope": {"prefixes": ["users/2/"]}}})),
        )
        .await
        .expect_err("scope is immutable");
    assert!(err.to_string().contains("immutable once accepted"), "{err}");
}

/// Deleting a request stops its Job and keeps its certificate, labelled as evidence of a deleted
/// request, in the operator's namespace.
#[tokio::test]
async fn deleting_a_request_keeps_its_certificate() {
    let s = Scenario::new("ddrkeep").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("t", &policy, json!({})))
        .await
        .expect("create tenant");
    s.wait_ready("t").await;
    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    let req = requests
        .create(
            &PostParams::default(),
            &request("old", "t", json!({"dryRun": true})),
        )
        .await
        .expect("create");
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), &system_namespace());
    let job_name = deletion_job_name(&s.ns, "old");
    eventually("deletion job", || async {
        jobs.get_opt(&job_name).await.ok()?
    })
    .await;

    // The certificate as the purge Job writes it, as the purge service account.
    let config_maps: Api<ConfigMap> =
        Api::namespaced(client_as("purge").await, &system_namespace());
    let certificate_name = format!("{job_name}-certificate");
    let certificate: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": certificate_name, "labels": {
            UID_LABEL: req.uid().expect("uid"),
            "storage.tenancy.dev/purge-record": "certificate",
        }},
        "data": {"certificate.json": "{\"sha256\": \"...\"}"}
    }))
    .expect("configmap");
    config_maps
        .create(&PostParams::default(), &certificate)
        .await
        .expect("create certificate");

    requests
        .delete("old", &Default::default())
        .await
        .expect("delete request");
    eventually("request gone", || async {
        requests.get_opt("old").await.ok()?.is_none().then_some(())
    })
    .await;
    let records: Api<ConfigMap> = Api::namespaced(s.client.clone(), &system_namespace());
    let kept = eventually("certificate labelled as kept", || async {
        let cm = records.get(&certificate_name).await.ok()?;
        cm.labels()
            .contains_key("storage.tenancy.dev/deleted-request")
            .then_some(cm)
    })
    .await;
    assert!(
        kept.owner_references().is_empty(),
        "nothing to be collected with"
    );
    assert!(
        jobs.get_opt(&job_name)
            .await
            .expect("get job")
            .is_none_or(|j| j.metadata.deletion_timestamp.is_some()),
        "the job is stopped"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(s.client.clone(), &s.ns);
    let noted = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("CertificateKept")
                && e.note.unwrap_or_default().contains(&certificate_name)
        });
    assert!(noted, "the user is told the certificate was kept");
}

/// The whole flow, playing the kubelet: a `Delete`-policy tenant with data cannot be deleted;
/// a whole-tenant DataDeletionRequest becomes a Job; running the Job's own command purges every
/// version, the request succeeds with a certificate, and the tenant's deletion completes.
#[tokio::test]
async fn whole_tenant_purge_lets_a_delete_policy_tenant_go() {
    let s = Scenario::new("ddrflow").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s
        .operator(&["--resync-period", "2s", "--drift-events", "off"])
        .await;
    s.create(&tenant(
        "leaving",
        &policy,
        json!({"deletionPolicy": "Delete"}),
    ))
    .await
    .expect("create tenant");
    let status = s.wait_ready("leaving").await.status.expect("status");
    let bucket = status.bucket_name.expect("bucket");
    let key_arn = status.kms_key_arn.expect("key");
    let s3 = Aws::root().await.s3("eu-central-1");
    for (key, body) in [("a/1", "one"), ("a/1", "one again"), ("b/2", "two")] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .expect("write data");
    }
    s3.delete_object()
        .bucket(&bucket)
        .key("b/2")
        .send()
        .await
        .expect("delete marker");
    s.tenants()
        .delete("leaving", &Default::default())
        .await
        .expect("delete tenant");
    s.wait_reason("leaving", "Ready", "DeletionBlocked").await;

    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    requests
        .create(
            &PostParams::default(),
            &request("offboard", "leaving", json!({})),
        )
        .await
        .expect("create request");
    let done = run_job_to_success(&s, "offboard").await;
    let status = done.status.expect("status");
    let progress = status.progress.expect("progress");
    assert_eq!(
        (progress.versions_deleted, progress.delete_markers_deleted),
        (3, 1),
        "{progress:?}"
    );
    let certificate = status.certificate.expect("certificate");
    assert!(certificate.verified);
    assert_eq!(certificate.entries, 4);

    eventually("tenant deleted", || async {
        s.tenants()
            .get_opt("leaving")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        s3.head_bucket().bucket(&bucket).send().await.is_err(),
        "bucket deleted"
    );
    let key = Aws::root()
        .await
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
        Some("PendingDeletion")
    );
}

/// A prefix means a folder: the API server refuses one that does not end in `/` (S3 would also
/// match `users/40/...`) or that holds a wildcard (S3 would match nothing), saying why and what
/// to write instead, and names the offending item. `users/4/` is accepted, and a raw prefix only
/// through the explicit `rawPrefixes` list. No operator runs: this is admission alone.
#[tokio::test]
async fn ambiguous_prefixes_are_refused_at_admission() {
    let s = Scenario::new("ddrprefix").await;
    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    let create = |name: &'static str, scope: serde_json::Value| {
        let requests = requests.clone();
        async move {
            requests
                .create(
                    &PostParams::default(),
                    &request(name, "t", json!({"scope": scope})),
                )
                .await
        }
    };
    const NOT_A_FOLDER: &str = "a prefix must end with '/': S3 prefixes are literal, so 'users/4' would also cover 'users/40/...'";
    const WILDCARD: &str = "S3 has no wildcards (prefixes are literal), so 'users/*/tmp/' would cover nothing; list each prefix";

    let err = create("partial", json!({"prefixes": ["users/1/", "users/4"]}))
        .await
        .expect_err("users/4 is refused");
    let err = err.to_string();
    assert!(err.contains("spec.scope.prefixes[1]"), "{err}");
    assert!(err.contains(NOT_A_FOLDER), "{err}");
    assert!(
        err.contains("spec.scope.rawPrefixes"),
        "the opt-in is named: {err}"
    );
    assert!(!err.contains("wildcards"), "{err}");

    let err = create("star", json!({"prefixes": ["users/*/tmp/"]}))
        .await
        .expect_err("users/*/tmp/ is refused")
        .to_string();
    assert!(err.contains("spec.scope.prefixes[0]"), "{err}");
    assert!(err.contains(WILDCARD), "{err}");
    assert!(!err.contains("must end with '/'"), "{err}");

    let err = create("question", json!({"prefixes": ["users/?"]}))
        .await
        .expect_err("users/? is refused")
        .to_string();
    assert!(
        err.contains(NOT_A_FOLDER) && err.contains(WILDCARD),
        "both reasons: {err}"
    );

    let err = create(
        "both",
        json!({"wholeTenant": true, "rawPrefixes": ["users/4"]}),
    )
    .await
    .expect_err("whole tenant and raw prefixes together are refused")
    .to_string();
    assert!(err.contains("needs exactly one of wholeTenant"), "{err}");

    let folder = create("folder", json!({"prefixes": ["users/4/"]}))
        .await
        .expect("users/4/ is a folder");
    assert_eq!(folder.spec.scope.listing_prefixes(), ["users/4/"]);
    let raw = create(
        "raw",
        json!({"prefixes": ["users/1/"], "rawPrefixes": ["users/4", "tmp/*"]}),
    )
    .await
    .expect("raw prefixes are the explicit opt-in, every character literal");
    assert_eq!(
        raw.spec.scope.raw_prefixes.as_deref(),
        Some(&["users/4".to_owned(), "tmp/*".to_owned()][..])
    );
    assert_eq!(
        raw.spec.scope.listing_prefixes(),
        ["users/1/", "users/4", "tmp/*"]
    );
}

/// The raw opt-in reaches the purge: raw `users/4` deletes every key starting with it
/// (`users/4/...`, `users/40/...`, `users/4.json`), a folder inside it is listed once (nothing
/// counted twice), and keys outside both lists stay.
#[tokio::test]
async fn raw_prefixes_are_purged_as_written() {
    let s = Scenario::new("ddrraw").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let keys = [
        "users/4/a",
        "users/40/b",
        "users/4.json",
        "users/5/c",
        "users/50/kept",
        "users/3/kept",
    ];
    for key in keys {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("write data");
    }
    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    requests
        .create(
            &PostParams::default(),
            &request(
                "raw",
                "t",
                json!({"scope": {"prefixes": ["users/40/", "users/5/"], "rawPrefixes": ["users/4"]}}),
            ),
        )
        .await
        .expect("create request");
    let done = run_job_to_success(&s, "raw").await;
    let status = done.status.expect("status");
    let progress = status.progress.expect("progress");
    assert_eq!(progress.versions_deleted, 4, "{progress:?}");
    let certificate = status.certificate.expect("certificate");
    assert!(certificate.verified);
    assert_eq!(certificate.entries, 4);

    let left = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list");
    let left: Vec<&str> = left.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(left, ["users/3/kept", "users/50/kept"]);
}

/// An operator given `--namespace` serves only those namespaces: another namespace's tenant, its
/// deletion request and a Job of that request in the shared Jobs' namespace get no status, no
/// Job and not a line in its log (it used to pick up their events and log each one as "not
/// found in local store").
#[tokio::test]
async fn an_operator_limited_to_a_namespace_leaves_the_others_alone() {
    let s = Scenario::new("scoped").await;
    let other = Scenario::new("outside").await;
    let policy = s.policy(eu_spec()).await;
    let op = s.operator(&[]).await;

    other
        .tenants()
        .create(&PostParams::default(), &tenant("t", &policy, json!({})))
        .await
        .expect("create the other namespace's tenant");
    let theirs: Api<DataDeletionRequest> = Api::namespaced(other.client.clone(), &other.ns);
    theirs
        .create(&PostParams::default(), &request("leave", "t", json!({})))
        .await
        .expect("create the other namespace's request");
    let jobs: Api<Job> = Api::namespaced(s.client.clone(), &system_namespace());
    let job: Job = serde_json::from_value(json!({
        "metadata": {
            "name": deletion_job_name(&other.ns, "leave"),
            "labels": {REQUEST_LABEL: deletion_request_label(&other.ns, "leave")},
            "annotations": {"storage.tenancy.dev/request": format!("{}/leave", other.ns)},
        },
        "spec": {
            "suspend": true,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "purge", "image": "registry.example/none"}],
            }},
        },
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create a Job of the other namespace's request");

    // Its own namespace, changed after the other one, is served.
    s.tenants()
        .create(&PostParams::default(), &tenant("t", &policy, json!({})))
        .await
        .expect("create tenant");
    s.wait_ready("t").await;
    let ours: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    ours.create(&PostParams::default(), &request("leave", "t", json!({})))
        .await
        .expect("create request");
    eventually("our request accepted", || async {
        let r = ours.get("leave").await.ok()?;
        (ddr_condition(&r, "Accepted")?.status == ConditionStatus::True).then_some(())
    })
    .await;

    let tenant = other.get("t").await;
    assert!(tenant.status.is_none(), "{:?}", tenant.status);
    let request = theirs.get("leave").await.expect("their request");
    assert!(request.status.is_none(), "{:?}", request.status);
    let logs = op.logs();
    assert!(
        !logs.contains(&other.ns),
        "the operator logged about {}:\n{logs}",
        other.ns
    );
    jobs.delete(&job.name_any(), &Default::default())
        .await
        .expect("delete the hand-made Job");
}

/// A policy with `encryption.mode: S3Managed` gives its tenants SSE-S3 (AES-256 with keys AWS
/// manages) and no tenant key: an upload naming no encryption is stored with AES256, one asking
/// for SSE-KMS is refused by the bucket policy while one asking for AES256 is accepted, and a
/// crypto-shred request, which has no key to destroy, is rejected with its reason.
#[tokio::test]
async fn s3_managed_keys_mean_aes256_no_tenant_key_and_no_crypto_shredding() {
    let s = Scenario::new("sses3").await;
    let mut spec = eu_spec();
    spec.encryption.mode = EncryptionMode::S3Managed;
    let policy = s.policy(spec).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("aes", &policy, json!({})))
        .await
        .expect("create tenant");
    let ts = s.wait_ready("aes").await;
    let encrypted = condition(&ts, "Encrypted").expect("Encrypted");
    assert_eq!(
        (encrypted.status, encrypted.reason.as_str()),
        (ConditionStatus::True, "S3ManagedKeys")
    );
    let status = ts.status.clone().expect("status");
    assert_eq!(status.encryption_mode, Some(EncryptionMode::S3Managed));
    assert_eq!((status.kms_key_arn, status.kms_key_alias), (None, None));
    let bucket = status.bucket_name.expect("bucket");
    let root = Aws::root().await;
    let rules = root
        .s3("eu-central-1")
        .get_bucket_encryption()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket encryption");
    let algorithm = rules
        .server_side_encryption_configuration()
        .and_then(|c| c.rules().first())
        .and_then(|r| r.apply_server_side_encryption_by_default())
        .map(|d| d.sse_algorithm().clone());
    assert_eq!(algorithm, Some(ServerSideEncryption::Aes256));
    let alias = key_alias(&s.cluster_id, &s.ns, "aes");
    let key = root
        .kms("eu-central-1")
        .describe_key()
        .key_id(&alias)
        .send()
        .await;
    assert!(key.is_err(), "no tenant key: {key:?}");

    let user = Aws::user().await.s3("eu-central-1");
    user.put_object()
        .bucket(&bucket)
        .key("plain")
        .body(ByteStream::from_static(b"no header"))
        .send()
        .await
        .expect("an upload naming no encryption is allowed");
    let head = user
        .head_object()
        .bucket(&bucket)
        .key("plain")
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
    let kms = user
        .put_object()
        .bucket(&bucket)
        .key("kms")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    let refused = matches!(&kms, Err(e) if format!("{e:?}").contains("AccessDenied"));
    assert!(refused, "SSE-KMS is not the bucket's encryption: {kms:?}");
    user.put_object()
        .bucket(&bucket)
        .key("aes")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("an upload asking for the bucket's own encryption is allowed");

    let requests: Api<DataDeletionRequest> = Api::namespaced(s.client.clone(), &s.ns);
    let shred = request("shred", "aes", json!({"method": "CryptoShred"}));
    requests
        .create(&PostParams::default(), &shred)
        .await
        .expect("create request");
    let r = eventually("crypto-shred rejected", || async {
        let r = requests.get("shred").await.ok()?;
        (r.status.as_ref()?.phase == Some(DeletionPhase::Rejected)).then_some(r)
    })
    .await;
    let accepted = ddr_condition(&r, "Accepted").expect("Accepted");
    assert_eq!(
        (accepted.status, accepted.reason.as_str()),
        (ConditionStatus::False, "CryptoShredImpossible")
    );
    assert!(
        accepted.message.contains("method Purge"),
        "{}",
        accepted.message
    );
}
