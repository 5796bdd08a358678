//! A tenant-namespace editor (the built-in `edit` role in its namespace, extended to this
//! project's kinds by the chart's aggregated role) tries to cross its boundary. Every test
//! asserts what the API server and AWS report afterwards: nothing outside the tenant's own data
//! changed. The namespaces are labelled for the chart's admission policies, as installed.

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tenant_storage_operator::api::{
    ConditionStatus, DataDeletionRequest, DeletionPhase, TenantStorage,
};
use tenant_storage_operator::controllers::deletion_job_name;
use tenant_storage_operator::purge::State;

use crate::harness::{
    Aws, Operator, Scenario, bucket_tags, client_as, error_code, eu_spec, eventually, job_command,
    operator_aws, system_namespace, tenant,
};

const EDITOR: &str = "tenant-editor";
const REGION: &str = "eu-central-1";

/// The HTTP status of a refused Kubernetes call, and its message.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A namespace of its own for a second tenant, labelled like the scenario's.
async fn namespace(s: &Scenario, suffix: &str) -> String {
    let name = format!("{}-{suffix}", s.ns);
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"tso.test/admission": "enforced"}}
    }))
    .expect("namespace");
    Api::<Namespace>::all(s.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// The scenario's namespace under the chart's admission policies, and `tenant-editor` bound to
/// the built-in `edit` role in it (as a platform team onboards a tenant).
async fn hostile(tag: &str) -> Scenario {
    let s = Scenario::new(tag).await;
    let label = json!({"metadata": {"labels": {"tso.test/admission": "enforced"}}});
    Api::<Namespace>::all(s.client.clone())
        .patch(&s.ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label namespace");
    bind(&s, EDITOR, "ClusterRole", "edit").await;
    s
}

/// Binds `user` to a role in the scenario's namespace.
async fn bind(s: &Scenario, user: &str, kind: &str, role: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{user}-{role}")),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(s.client.clone(), &s.ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create role binding");
}

async fn editor<K>(ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client_as("editor").await, ns)
}

async fn ready_bucket(s: &Scenario, ns: &str, name: &str, policy: &str) -> String {
    let api: Api<TenantStorage> = Api::namespaced(s.client.clone(), ns);
    api.create(&PostParams::default(), &tenant(name, policy, json!({})))
        .await
        .expect("create tenant");
    eventually(&format!("{ns}/{name} ready"), || async {
        let ts = api.get(name).await.ok()?;
        let st = ts.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
            .then_some(st.bucket_name?)
    })
    .await
}

/// Every (key, version) of a bucket.
async fn versions(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<(String, String)> {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .expect("list versions");
    out.versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap_or_default().to_owned(),
                v.version_id().unwrap_or_default().to_owned(),
            )
        })
        .chain(out.delete_markers().iter().map(|m| {
            (
                m.key().unwrap_or_default().to_owned(),
                m.version_id().unwrap_or_default().to_owned(),
            )
        }))
        .collect()
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"personal data"))
        .send()
        .await
        .expect("put object");
}

fn deletion_request(name: &str, tenant: &str, namespace: Option<&str>) -> DataDeletionRequest {
    DataDeletionRequest::new(
        name,
        serde_json::from_value(json!({
            "tenantStorageRef": {"name": tenant, "namespace": namespace},
            "scope": {"wholeTenant": true},
            "method": "Purge",
            "requestedBy": "dpo@example.com",
            "reason": "GDPR",
        }))
        .expect("request spec"),
    )
}

/// Two tenants of one policy under one operator: the editor's `mine` in the scenario's namespace
/// and another namespace's `theirs`.
struct Neighbours {
    s: Scenario,
    op: Operator,
    own: String,
    victim: String,
    victim_ns: String,
}

async fn neighbours(tag: &str) -> Neighbours {
    let s = hostile(tag).await;
    let policy = s.policy(eu_spec()).await;
    let victim_ns = namespace(&s, "victim").await;
    let op = Operator::start(&s.cluster_id, &s.prefix, &[&s.ns, &victim_ns], &[]).await;
    let own = ready_bucket(&s, &s.ns, "mine", &policy).await;
    let victim = ready_bucket(&s, &victim_ns, "theirs", &policy).await;
    Neighbours {
        s,
        op,
        own,
        victim,
        victim_ns,
    }
}

/// The editor writes its tenant's spec and annotations, but not its status (RBAC), not even
/// with a wildcard role on this project's kinds (the guard admission policy), and cannot pause
/// enforcement; a platform engineer can.
#[tokio::test]
async fn an_editor_cannot_forge_status_or_pause_enforcement() {
    // `_op` keeps the operator running to the end of the test.
    let Neighbours {
        s,
        op: _op,
        own,
        victim,
        ..
    } = neighbours("hostilestatus").await;
    let tenants: Api<TenantStorage> = editor(&s.ns).await;

    // What an editor may do: its own tenant's annotations.
    let recheck = json!({"metadata": {"annotations": {"storage.tenancy.dev/recheck": "1"}}});
    tenants
        .patch("mine", &PatchParams::default(), &Patch::Merge(&recheck))
        .await
        .expect("the editor asks for a recheck");

    let forged = json!({"status": {"bucketName": victim}});
    let (code, message) = refused(
        tenants
            .patch_status("mine", &PatchParams::default(), &Patch::Merge(&forged))
            .await,
    );
    assert_eq!(code, 403, "RBAC: {message}");
    assert!(message.contains("tenantstorages/status"), "{message}");

    // A tenant-admin role with wildcard resources gets past RBAC; the guard policy still says no.
    let wildcard = Role {
        metadata: ObjectMeta {
            name: Some("tenant-admin".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["storage.tenancy.dev".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(s.client.clone(), &s.ns)
        .create(&PostParams::default(), &wildcard)
        .await
        .expect("create role");
    bind(&s, EDITOR, "Role", "tenant-admin").await;
    let message = eventually("the guard policy refuses a forged status", || async {
        match tenants
            .patch_status("mine", &PatchParams::default(), &Patch::Merge(&forged))
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("ValidatingAdmissionPolicy") => {
                Some(e.message)
            }
            _ => None,
        }
    })
    .await;
    assert!(
        message.contains("written only by the tenant-storage-operator"),
        "{message}"
    );

    let pause = json!({"metadata": {"annotations": {"storage.tenancy.dev/paused": "true"}}});
    let (_, message) = refused(
        tenants
            .patch("mine", &PatchParams::default(), &Patch::Merge(&pause))
            .await,
    );
    assert!(
        message.contains("only platform engineers (groups system:masters) may pause"),
        "{message}"
    );
    let stored = s.get("mine").await;
    assert_eq!(
        stored
            .status
            .as_ref()
            .and_then(|st| st.bucket_name.as_deref()),
        Some(own.as_str()),
        "the status still names the tenant's own bucket"
    );
    assert!(
        !stored
            .annotations()
            .contains_key("storage.tenancy.dev/paused")
    );

    // A platform engineer (system:masters) may pause and resume.
    s.tenants()
        .patch("mine", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .expect("a platform engineer pauses");
    s.wait_condition("mine", "Paused", ConditionStatus::True)
        .await;
}

/// A status pointing at another tenant's bucket (written by someone allowed to, or by a
/// compromised platform role) never aims a purge there: the Job proves ownership from the
/// bucket's tags first, deletes nothing, and says why.
#[tokio::test]
async fn a_forged_status_never_aims_a_purge_at_another_tenants_bucket() {
    let Neighbours { s, op, victim, .. } = neighbours("hostilepurge").await;
    let s3 = Aws::root().await.s3(REGION);
    put(&s3, &victim, "customers/1").await;
    put(&s3, &victim, "customers/2").await;
    let before = versions(&s3, &victim).await;

    // The editor files a whole-tenant request for its own tenant; the operator makes the Job.
    let requests: Api<DataDeletionRequest> = editor(&s.ns).await;
    requests
        .create(
            &PostParams::default(),
            &deletion_request("wipe", "mine", None),
        )
        .await
        .expect("the editor files a request");
    let mut command = job_command(&s.ns, "wipe").await;
    // With the operator stopped, nothing corrects the status before the Job runs.
    op.crash().await;
    let forged = json!({"status": {"bucketName": victim}});
    s.tenants()
        .patch_status("mine", &PatchParams::default(), &Patch::Merge(&forged))
        .await
        .expect("forge the status as a platform identity");

    let out = command.output().await.expect("run the job");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bucket {victim} named in the status of TenantStorage {}/mine is not that tenant's",
            s.ns
        )) && stderr.contains("Nothing was deleted"),
        "{stderr}"
    );
    assert_eq!(
        versions(&s3, &victim).await,
        before,
        "the victim's data is intact"
    );
    let request = requests.get("wipe").await.expect("request");
    assert_ne!(
        request.status.and_then(|st| st.phase),
        Some(DeletionPhase::Succeeded)
    );
}

/// The operator's namespace is out of reach: its records, its Jobs and the ExternalId Secrets.
/// A journal forged in the tenant's own namespace changes nothing: the purge deletes and
/// certifies exactly. A request naming another namespace's tenant is refused.
#[tokio::test]
async fn an_editor_cannot_reach_the_operators_records_or_other_namespaces() {
    let Neighbours {
        s,
        op: _op,
        own,
        victim,
        victim_ns,
    } = neighbours("hostilerecords").await;
    let s3 = Aws::root().await.s3(REGION);
    for key in ["a", "b", "c"] {
        put(&s3, &own, key).await;
        put(&s3, &victim, key).await;
    }
    let victim_before = versions(&s3, &victim).await;
    let own_before = versions(&s3, &own).await;

    let system = system_namespace();
    let records: Api<ConfigMap> = editor(&system).await;
    let record = deletion_job_name(&s.ns, "wipe") + "-certificate";
    assert_eq!(refused(records.get(&record).await).0, 403);
    assert_eq!(refused(records.list(&Default::default()).await).0, 403);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": record}})).expect("cm");
    assert_eq!(
        refused(records.create(&PostParams::default(), &cm).await).0,
        403
    );
    assert_eq!(
        refused(records.delete(&record, &DeleteParams::default()).await).0,
        403
    );
    // An auditor bound to `view` in the tenant's namespace reads, and changes nothing.
    bind(&s, "auditor", "ClusterRole", "view").await;
    let auditor = client_as("auditor").await;
    let audited: Api<TenantStorage> = Api::namespaced(auditor.clone(), &s.ns);
    let seen = eventually("the auditor reads tenants", || async {
        audited.list(&Default::default()).await.ok()
    })
    .await;
    assert_eq!(seen.items.len(), 1);
    Api::<DataDeletionRequest>::namespaced(auditor.clone(), &s.ns)
        .list(&Default::default())
        .await
        .expect("the auditor reads requests");
    let (code, _) = refused(audited.delete("mine", &DeleteParams::default()).await);
    assert_eq!(code, 403);

    let secrets: Api<Secret> = editor(&system).await;
    assert_eq!(refused(secrets.list(&Default::default()).await).0, 403);
    let jobs: Api<Job> = editor(&system).await;
    assert_eq!(refused(jobs.list(&Default::default()).await).0, 403);

    // Another namespace's tenant, named from a request: refused, no Job.
    let requests: Api<DataDeletionRequest> = editor(&s.ns).await;
    requests
        .create(
            &PostParams::default(),
            &deletion_request("reach", "theirs", Some(&victim_ns)),
        )
        .await
        .expect("the editor files a request");
    let rejected = eventually("request rejected", || async {
        let r = s_requests(&s).get("reach").await.ok()?;
        (r.status.as_ref()?.phase == Some(DeletionPhase::Rejected)).then_some(r)
    })
    .await;
    let accepted = rejected
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Accepted")
        .expect("Accepted");
    assert!(
        accepted.message.contains("spec.tenantStorageRef.namespace"),
        "{}",
        accepted.message
    );
    let admin_jobs: Api<Job> = Api::namespaced(s.client.clone(), &system);
    assert!(
        admin_jobs
            .get_opt(&deletion_job_name(&s.ns, "reach"))
            .await
            .expect("get job")
            .is_none()
    );

    // A finished checkpoint forged where the records used to be (the tenant's namespace).
    requests
        .create(
            &PostParams::default(),
            &deletion_request("wipe", "mine", None),
        )
        .await
        .expect("the editor files a request");
    let mut command = job_command(&s.ns, "wipe").await;
    let uid = s_requests(&s)
        .get("wipe")
        .await
        .expect("request")
        .uid()
        .expect("uid");
    let mut state = serde_json::to_value(State::new(
        &uid,
        &[String::new()],
        false,
        "2026-01-01T00:00:00Z".into(),
    ))
    .expect("state");
    state["purged"] = json!("2026-01-01T00:00:01Z");
    state["verification"] = json!({"remaining": 0, "passes": 1, "time": "2026-01-01T00:00:01Z"});
    state["completionTime"] = json!("2026-01-01T00:00:02Z");
    let forged: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": record},
        "data": {"state.json": state.to_string()}
    }))
    .expect("cm");
    editor::<ConfigMap>(&s.ns)
        .await
        .create(&PostParams::default(), &forged)
        .await
        .expect("the editor writes ConfigMaps in its namespace");

    let out = command.output().await.expect("run the job");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        versions(&s3, &own).await.is_empty(),
        "every version deleted"
    );
    let done = s_requests(&s)
        .get("wipe")
        .await
        .expect("request")
        .status
        .expect("status");
    assert_eq!(done.phase, Some(DeletionPhase::Succeeded));
    let certificate = done.certificate.expect("certificate");
    assert!(certificate.verified);
    assert_eq!(
        certificate.entries,
        own_before.len() as u64,
        "exactly what was there"
    );
    assert_eq!(
        versions(&s3, &victim).await,
        victim_before,
        "the other tenant is untouched"
    );
}

fn s_requests(s: &Scenario) -> Api<DataDeletionRequest> {
    Api::namespaced(s.client.clone(), &s.ns)
}

/// An editor deletes its `Retain` tenant and creates one of the same name under another policy
/// to take the retained bucket: refused, the bucket untouched. Under its own policy it is
/// re-adopted.
#[tokio::test]
async fn a_released_bucket_stays_with_its_policy() {
    let s = hostile("hostilerelease").await;
    let first = s.policy(eu_spec()).await;
    let other = format!("{}-other", s.ns);
    Api::<tenant_storage_operator::api::ResidencyPolicy>::all(s.client.clone())
        .create(
            &PostParams::default(),
            &tenant_storage_operator::api::ResidencyPolicy::new(&other, eu_spec()),
        )
        .await
        .expect("create the other policy");
    let _op = s.operator(&[]).await;
    let bucket = ready_bucket(&s, &s.ns, "keep", &first).await;
    let s3 = Aws::root().await.s3(REGION);
    put(&s3, &bucket, "customers/1").await;

    let tenants: Api<TenantStorage> = editor(&s.ns).await;
    tenants
        .delete("keep", &DeleteParams::default())
        .await
        .expect("the editor deletes its tenant");
    eventually("tenant released", || async {
        tenants.get_opt("keep").await.ok()?.is_none().then_some(())
    })
    .await;
    let released = bucket_tags(&s3, &bucket).await;
    assert_eq!(
        released.get("tenancy.dev/released").map(String::as_str),
        Some("true")
    );
    let policy_before = s3
        .get_bucket_policy()
        .bucket(&bucket)
        .send()
        .await
        .expect("policy")
        .policy;
    let data_before = versions(&s3, &bucket).await;

    tenants
        .create(&PostParams::default(), &tenant("keep", &other, json!({})))
        .await
        .expect("the editor creates a tenant of the same name");
    let refused = s
        .wait_reason("keep", "Ready", "ReleasedUnderAnotherPolicy")
        .await;
    let message = refused
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&format!("ResidencyPolicy \"{first}\"")),
        "{message}"
    );
    assert_eq!(bucket_tags(&s3, &bucket).await, released, "tags untouched");
    assert_eq!(
        s3.get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .expect("policy")
            .policy,
        policy_before
    );
    assert_eq!(versions(&s3, &bucket).await, data_before);
    assert!(
        refused.status.and_then(|st| st.bucket_name).is_none(),
        "nothing claimed"
    );

    tenants
        .delete("keep", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("refused tenant gone", || async {
        tenants.get_opt("keep").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(
        bucket_tags(&s3, &bucket).await,
        released,
        "deleting it touched nothing"
    );
    tenants
        .create(&PostParams::default(), &tenant("keep", &first, json!({})))
        .await
        .expect("recreate under the first policy");
    let adopted = s.wait_ready("keep").await;
    assert_eq!(
        adopted.status.and_then(|st| st.bucket_name),
        Some(bucket.clone())
    );
    assert!(
        !bucket_tags(&s3, &bucket)
            .await
            .contains_key("tenancy.dev/released")
    );
}

/// Another AWS account that knows the naming scheme creates a tenant's bucket first: the tenant
/// gets `BucketConflict`, and the other account's bucket is never written to or trusted.
/// (Every S3 call also sends ExpectedBucketOwner; the emulator ignores that header, so what is
/// observed here is its cross-account refusal, as AWS would answer without the header too.)
#[tokio::test]
async fn another_accounts_bucket_with_our_name_is_never_used() {
    let s = hostile("hostileaccount").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.bucket_for("squatted");
    let squatter = Aws::account_root("222233334444").await.s3(REGION);
    squatter
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .expect("the other account creates the bucket");

    let tenants: Api<TenantStorage> = editor(&s.ns).await;
    tenants
        .create(
            &PostParams::default(),
            &tenant("squatted", &policy, json!({})),
        )
        .await
        .expect("the editor creates its tenant");
    let ts = s.wait_reason("squatted", "Ready", "BucketConflict").await;
    let message = ts
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("another AWS account"), "{message}");
    assert!(
        ts.status.and_then(|st| st.bucket_name).is_none(),
        "nothing claimed"
    );
    assert!(
        bucket_tags(&squatter, &bucket).await.is_empty(),
        "no tags written"
    );
    assert!(
        squatter
            .get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .is_err(),
        "no bucket policy written"
    );
    let versioning = squatter
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .expect("versioning");
    assert!(versioning.status().is_none(), "versioning untouched");
}

/// The operator's own AWS identity (exactly `iam-policy operator`) configures buckets but never
/// reads or writes a tenant's objects, and cannot touch a KMS key or an IAM role that is not the
/// operator's: a stolen operator credential is not a way into tenant data.
#[tokio::test]
async fn the_operators_credentials_reach_no_tenant_data_and_no_foreign_key() {
    let s = Scenario::new("opcreds").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    let bucket = s.ready_bucket("t", &policy).await;
    let root = Aws::root().await;
    root.s3(REGION)
        .put_object()
        .bucket(&bucket)
        .key("secret")
        .body(ByteStream::from_static(b"tenant data"))
        .send()
        .await
        .expect("the tenant's object");
    let operator = operator_aws(&s.cluster_id, &s.prefix).await;
    let s3 = operator.s3(REGION);
    let read = s3.get_object().bucket(&bucket).key("secret").send().await;
    assert_eq!(
        read.map(|_| ()).map_err(|e| error_code(&e)),
        Err("AccessDenied".into())
    );
    let write = s3
        .put_object()
        .bucket(&bucket)
        .key("planted")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(
        write.map(|_| ()).map_err(|e| error_code(&e)),
        Err("AccessDenied".into())
    );
    let delete = s3
        .delete_object()
        .bucket(&bucket)
        .key("secret")
        .send()
        .await;
    assert_eq!(
        delete.map(|_| ()).map_err(|e| error_code(&e)),
        Err("AccessDenied".into())
    );
    // While it can read what it configures.
    s3.get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .expect("the operator reads its bucket's configuration");

    // A key that is not the operator's: no change to it, no alias onto it.
    let foreign = root
        .kms(REGION)
        .create_key()
        .description("someone else's key")
        .send()
        .await
        .expect("a foreign key");
    let foreign = foreign
        .key_metadata()
        .map(|m| m.arn().unwrap_or_default().to_owned())
        .expect("key arn");
    let kms = operator.kms(REGION);
    let shred = kms
        .schedule_key_deletion()
        .key_id(&foreign)
        .pending_window_in_days(7)
        .send()
        .await;
    assert_eq!(
        shred.map(|_| ()).map_err(|e| error_code(&e)),
        Err("AccessDeniedException".into())
    );
    let untagged = kms.create_key().description("untagged").send().await;
    assert_eq!(
        untagged.map(|_| ()).map_err(|e| error_code(&e)),
        Err("AccessDeniedException".into()),
        "a key without the operator's tag cannot be created"
    );
    let state = root
        .kms(REGION)
        .describe_key()
        .key_id(&foreign)
        .send()
        .await
        .expect("describe")
        .key_metadata()
        .and_then(|m| m.key_state().map(|s| s.as_str().to_owned()));
    assert_eq!(
        state.as_deref(),
        Some("Enabled"),
        "the foreign key is untouched"
    );

    // A role outside the operator's path.
    let role = operator
        .iam()
        .create_role()
        .role_name("not-the-operators")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await;
    assert_eq!(
        role.map(|_| ()).map_err(|e| error_code(&e)),
        Err("AccessDenied".into())
    );
}

/// The operator may write Secrets in every namespace (download links), which RBAC cannot narrow
/// by name: the chart's guard lets it write, outside its own namespace, only Secrets labelled
/// as export links, and never turn a tenant's own Secret into one.
#[tokio::test]
async fn the_operator_writes_no_tenant_secret_but_export_links() {
    let s = hostile("guardsecret").await;
    let as_operator: Api<Secret> = Api::namespaced(client_as("operator").await, &s.ns);
    let secret = |name: &str, labelled: bool| {
        let mut meta = ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        };
        if labelled {
            meta.labels = Some(
                [(
                    tenant_storage_operator::controllers::EXPORT_REQUEST_LABEL.to_owned(),
                    "x".to_owned(),
                )]
                .into(),
            );
        }
        Secret {
            metadata: meta,
            ..Secret::default()
        }
    };
    let (code, message) = refused(
        as_operator
            .create(&PostParams::default(), &secret("db-password", false))
            .await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("export-request"), "{message}");
    as_operator
        .create(&PostParams::default(), &secret("a-export-link", true))
        .await
        .expect("an export link Secret is the operator's to write");
    // A tenant's own Secret stays the tenant's, whatever name a request would give its link.
    Api::<Secret>::namespaced(s.client.clone(), &s.ns)
        .create(&PostParams::default(), &secret("b-export-link", false))
        .await
        .expect("the tenant's own Secret");
    let takeover = as_operator
        .patch(
            "b-export-link",
            &PatchParams::apply("tenant-storage-operator").force(),
            &Patch::Apply(&secret("b-export-link", true)),
        )
        .await;
    let (code, message) = refused(takeover);
    assert_eq!(code, 403, "{message}");
}
