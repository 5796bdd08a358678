//! Tenant access (#3): each tenant's role reaches only its own bucket and key, only the listed
//! service accounts can assume it, read-only is read-only, nobody else gets in; delegated
//! access to a customer's bucket in another account is verified and chained.

use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tenant_storage_operator::api::{ConditionStatus, TenantStorage};

use crate::harness::*;

const REGION: &str = "eu-central-1";

fn access(service_accounts: &[&str], level: &str) -> serde_json::Value {
    json!({"access": {"serviceAccounts": service_accounts, "level": level}})
}

fn role_arn(ts: &TenantStorage) -> String {
    ts.status
        .as_ref()
        .and_then(|s| s.access.as_ref())
        .map(|a| a.role_arn.clone())
        .expect("status.access.roleArn")
}

fn sa(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// The SDK error's HTTP status (403 for a denial).
fn status_of<E, R>(result: &Result<R, aws_sdk_s3::error::SdkError<E>>) -> Option<u16> {
    match result {
        Ok(_) => Some(200),
        Err(e) => e.raw_response().map(|r| r.status().as_u16()),
    }
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<u16> {
    status_of(
        &s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from_static(b"data"))
            .send()
            .await,
    )
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<u16> {
    status_of(&s3.get_object().bucket(bucket).key(key).send().await)
}

async fn list(s3: &aws_sdk_s3::Client, bucket: &str) -> Option<u16> {
    status_of(&s3.list_objects_v2().bucket(bucket).send().await)
}

async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<u16> {
    status_of(&s3.delete_object().bucket(bucket).key(key).send().await)
}

#[tokio::test]
async fn tenant_roles_reach_only_their_own_bucket_and_key() {
    let s = Scenario::new("access").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("a", &policy, access(&["app", "etl"], "ReadWrite")))
        .await
        .expect("create a");
    s.create(&tenant("b", &policy, access(&["reader"], "ReadOnly")))
        .await
        .expect("create b");
    let a = s.wait_condition("a", "Ready", ConditionStatus::True).await;
    let b = s.wait_condition("b", "Ready", ConditionStatus::True).await;
    let (bucket_a, bucket_b) = (s.bucket_for("a"), s.bucket_for("b"));
    let (role_a, role_b) = (role_arn(&a), role_arn(&b));
    let a_access = a
        .status
        .as_ref()
        .and_then(|st| st.access.clone())
        .expect("access status");
    assert_eq!(
        a_access.service_account_annotation,
        format!("eks.amazonaws.com/role-arn: {role_a}")
    );
    let key_b = b
        .status
        .as_ref()
        .and_then(|st| st.kms_key_arn.clone())
        .expect("key b");
    let root = Aws::root().await;
    let key_a = a
        .status
        .as_ref()
        .and_then(|st| st.kms_key_arn.clone())
        .expect("key a");

    // The trust policy admits exactly the listed service accounts of this namespace.
    let as_a = Aws::web_identity(&role_a, &sa(&s.ns, "app"))
        .await
        .expect("app assumes tenant a's role");
    assert!(Aws::web_identity(&role_a, &sa(&s.ns, "etl")).await.is_ok());
    for outsider in [
        sa(&s.ns, "other"),
        sa(&s.ns, "reader"),
        sa("elsewhere", "app"),
    ] {
        let refused = Aws::web_identity(&role_a, &outsider).await.err();
        assert_eq!(
            refused.as_deref(),
            Some("AccessDenied"),
            "{outsider} must not assume tenant a's role"
        );
    }
    let other_audience = Aws::web_identity_for(&role_a, &sa(&s.ns, "app"), "other").await;
    assert_eq!(other_audience.err().as_deref(), Some("AccessDenied"));

    // Tenant a reads and writes its own bucket...
    let s3 = as_a.s3(REGION);
    assert_eq!(put(&s3, &bucket_a, "x").await, Some(200));
    assert_eq!(get(&s3, &bucket_a, "x").await, Some(200));
    assert_eq!(list(&s3, &bucket_a).await, Some(200));
    // ...and nothing of tenant b: objects, listing, or its key.
    root.s3(REGION)
        .put_object()
        .bucket(&bucket_b)
        .key("b-secret")
        .body(ByteStream::from_static(b"b"))
        .send()
        .await
        .expect("seed b");
    assert_eq!(put(&s3, &bucket_b, "x").await, Some(403));
    assert_eq!(get(&s3, &bucket_b, "b-secret").await, Some(403));
    assert_eq!(list(&s3, &bucket_b).await, Some(403));
    assert_eq!(delete(&s3, &bucket_b, "b-secret").await, Some(403));
    let kms = as_a.kms(REGION);
    for key in [&key_b, &key_a] {
        // Not even its own key directly: only through S3 (kms:ViaService).
        let direct = kms
            .generate_data_key()
            .key_id(key)
            .number_of_bytes(32)
            .send()
            .await;
        assert_eq!(
            direct.err().map(|e| error_code(&e)).as_deref(),
            Some("AccessDeniedException"),
            "direct GenerateDataKey on {key}"
        );
    }
    let sealed = root
        .kms(REGION)
        .encrypt()
        .key_id(&key_b)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"b's data key".to_vec()))
        .send()
        .await
        .expect("encrypt with b's key");
    let opened = kms
        .decrypt()
        .ciphertext_blob(sealed.ciphertext_blob().expect("ciphertext").clone())
        .send()
        .await;
    assert_eq!(
        opened.err().map(|e| error_code(&e)).as_deref(),
        Some("AccessDeniedException"),
        "tenant a decrypting with b's key"
    );

    // Read-only is read-only.
    let as_b = Aws::web_identity(&role_b, &sa(&s.ns, "reader"))
        .await
        .expect("reader assumes tenant b's role");
    let s3b = as_b.s3(REGION);
    assert_eq!(get(&s3b, &bucket_b, "b-secret").await, Some(200));
    assert_eq!(list(&s3b, &bucket_b).await, Some(200));
    assert_eq!(put(&s3b, &bucket_b, "new").await, Some(403));
    assert_eq!(delete(&s3b, &bucket_b, "b-secret").await, Some(403));
    assert_eq!(get(&s3b, &bucket_a, "x").await, Some(403));

    // A principal that is neither tenant, operator nor admin is denied by the bucket policy,
    // though its own IAM policy allows s3:*.
    let iam = root.iam();
    let user = format!("outsider-{}", s.cluster_id);
    iam.create_user()
        .user_name(&user)
        .send()
        .await
        .expect("create user");
    iam.put_user_policy()
        .user_name(&user)
        .policy_name("all-s3")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#)
        .send()
        .await
        .expect("user policy");
    let key = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .expect("access key");
    let key = key.access_key().expect("access key");
    let outsider = Aws::keys(key.access_key_id(), key.secret_access_key()).await;
    let s3o = outsider.s3(REGION);
    assert_eq!(get(&s3o, &bucket_a, "x").await, Some(403));
    assert_eq!(put(&s3o, &bucket_a, "y").await, Some(403));
    assert_eq!(list(&s3o, &bucket_a).await, Some(403));
    // The same user can use a bucket of its own: the denial is the tenant bucket's policy.
    let own = format!("own-{}", s.cluster_id);
    root.s3(REGION)
        .create_bucket()
        .bucket(&own)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .expect("own bucket");
    assert_eq!(put(&s3o, &own, "y").await, Some(200));
    // The break-glass admin of the operator's configuration still gets in.
    assert_eq!(
        list(&Aws::user().await.s3(REGION), &bucket_a).await,
        Some(200)
    );
}

#[tokio::test]
async fn access_changes_in_place_and_retain_removes_only_the_role() {
    let s = Scenario::new("access-change").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("t", &policy, access(&["app"], "ReadWrite")))
        .await
        .expect("create");
    let t = s.wait_condition("t", "Ready", ConditionStatus::True).await;
    let role = role_arn(&t);
    let bucket = s.bucket_for("t");
    let as_app = Aws::web_identity(&role, &sa(&s.ns, "app"))
        .await
        .expect("app");
    assert_eq!(put(&as_app.s3(REGION), &bucket, "k").await, Some(200));

    // Another service account, read-only: trust and permissions follow, in place.
    let patch = json!({"spec": {"access": {"serviceAccounts": ["etl"], "level": "ReadOnly"}}});
    s.tenants()
        .patch("t", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch access");
    eventually("app no longer admitted", || async {
        Aws::web_identity(&role, &sa(&s.ns, "app"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let as_etl = eventually("etl admitted", || async {
        Aws::web_identity(&role, &sa(&s.ns, "etl")).await.ok()
    })
    .await;
    let s3 = as_etl.s3(REGION);
    eventually("etl is read-only", || async {
        (put(&s3, &bucket, "k2").await == Some(403)).then_some(())
    })
    .await;
    assert_eq!(get(&s3, &bucket, "k").await, Some(200));
    s.wait_event("t", "AccessChanged").await;
    let t = s.get("t").await;
    assert_eq!(
        t.status
            .and_then(|st| st.access)
            .map(|a| a.service_accounts),
        Some(vec!["etl".to_owned()])
    );

    // Someone widens the role behind the operator's back: undone at the next check.
    let root = Aws::root().await;
    let role_name = role.rsplit('/').next().expect("role name");
    root.iam()
        .attach_role_policy()
        .role_name(role_name)
        .policy_arn("arn:aws:iam::aws:policy/AmazonS3FullAccess")
        .send()
        .await
        .expect("attach");
    s.recheck("t").await;
    eventually("attached policy removed", || async {
        let attached = root
            .iam()
            .list_attached_role_policies()
            .role_name(role_name)
            .send()
            .await
            .ok()?;
        attached.attached_policies().is_empty().then_some(())
    })
    .await;

    // Retain: the role goes (and the event says so), the bucket and its data stay.
    s.tenants()
        .delete("t", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("TenantStorage gone", || async {
        s.tenants().get_opt("t").await.ok()?.is_none().then_some(())
    })
    .await;
    let gone = root.iam().get_role().role_name(role_name).send().await;
    assert_eq!(
        gone.err().map(|e| error_code(&e)).as_deref(),
        Some("NoSuchEntity"),
        "role must be deleted"
    );
    assert_eq!(get(&root.s3(REGION), &bucket, "k").await, Some(200));
    s.wait_event("t", "RoleDeleted").await;

    // Removing spec.access removes the role and its status; the tenant stays Ready.
    s.create(&tenant("u", &policy, access(&["app"], "ReadWrite")))
        .await
        .expect("create u");
    let u = s.wait_condition("u", "Ready", ConditionStatus::True).await;
    let u_role = role_arn(&u);
    let patch = json!({"spec": {"access": null}});
    s.tenants()
        .patch("u", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove access");
    let u = eventually("status.access cleared", || async {
        let u = s.get("u").await;
        u.status.as_ref()?.access.is_none().then_some(u)
    })
    .await;
    assert_eq!(
        condition(&u, "Ready").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    s.wait_event("u", "RoleDeleted").await;
    let u_name = u_role.rsplit('/').next().expect("role name");
    let gone = root.iam().get_role().role_name(u_name).send().await;
    assert_eq!(
        gone.err().map(|e| error_code(&e)).as_deref(),
        Some("NoSuchEntity")
    );
    let bucket_policy = root
        .s3(REGION)
        .get_bucket_policy()
        .bucket(s.bucket_for("u"))
        .send()
        .await
        .expect("bucket policy")
        .policy
        .unwrap_or_default();
    assert!(
        !bucket_policy.contains(u_name),
        "the deleted role is no longer admitted"
    );
}

#[tokio::test]
async fn bad_access_input_is_rejected_naming_the_field() {
    let s = Scenario::new("access-input").await;
    let policy = s.policy(eu_spec()).await;
    let cases = [
        (access(&["Not_A_Name"], "ReadWrite"), "serviceAccounts"),
        (access(&["app", "app"], "ReadWrite"), "serviceAccounts"),
        (
            json!({"mode": "Delegated", "delegated": {"bucket": "acme-data", "roleArn": "arn:aws:iam::12345:role/x"}}),
            "roleArn",
        ),
        (
            json!({"mode": "Delegated", "delegated": {"bucket": "arn:aws-cn:s3:::acme-data", "roleArn": "arn:aws:iam::111111111111:role/x"}}),
            "delegated.bucket",
        ),
        (json!({"mode": "Delegated"}), "delegated"),
    ];
    for (i, (extra, field)) in cases.into_iter().enumerate() {
        let err = s
            .create(&tenant(&format!("bad{i}"), &policy, extra.clone()))
            .await
            .expect_err("must be rejected at admission");
        assert!(err.to_string().contains(field), "{extra}: {err}");
    }

    // Consistent but in another partition than the policy's regions: a condition names it.
    let _op = s.operator(&[]).await;
    let cn = json!({"mode": "Delegated", "delegated": {"bucket": "acme-data", "roleArn": "arn:aws-cn:iam::111111111111:role/x"}});
    s.create(&tenant("cn", &policy, cn))
        .await
        .expect("create cn");
    let ts = s.wait_reason("cn", "Ready", "PartitionMismatch").await;
    let ready = condition(&ts, "Ready").expect("Ready");
    assert!(
        ready.message.contains("spec.delegated.roleArn"),
        "{}",
        ready.message
    );
}

const CUSTOMER: &str = "111111111111";

/// A customer's bucket in their own account, set up as the policy requires (or not).
async fn customer_bucket(customer: &Aws, bucket: &str, region: &str) {
    let s3 = customer.s3(region);
    let mut create = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(region.into())
                .build(),
        );
    }
    create.send().await.expect("customer bucket");
    let key = customer
        .kms(region)
        .create_key()
        .send()
        .await
        .expect("customer key");
    let key_arn = key
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("key arn")
        .to_owned();
    let rule = aws_sdk_s3::types::ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .kms_master_key_id(key_arn)
                .build()
                .expect("sse default"),
        )
        .bucket_key_enabled(true)
        .build();
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .expect("sse config"),
        )
        .send()
        .await
        .expect("customer bucket encryption");
}

/// What the customer configured on their bucket: encryption, public access block, policy.
async fn bucket_config(customer: &Aws, bucket: &str) -> (String, String, Option<String>) {
    let s3 = customer.s3("eu-west-1");
    let enc = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .expect("encryption");
    let pab = s3
        .get_public_access_block()
        .bucket(bucket)
        .send()
        .await
        .expect("public access block");
    let policy = s3
        .get_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .ok()
        .and_then(|p| p.policy);
    (
        format!("{:?}", enc.server_side_encryption_configuration()),
        format!("{:?}", pab.public_access_block_configuration()),
        policy,
    )
}

/// Inline policies of one of our roles.
async fn root_role_policies(role_arn: &str) -> Vec<String> {
    let name = role_arn.rsplit('/').next().expect("role name");
    Aws::root()
        .await
        .iam()
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .expect("list role policies")
        .policy_names
}

/// The tenant's ExternalId (from its Secret in the operator's namespace) and the trust policy
/// its status publishes.
async fn delegation(s: &Scenario, tenant: &str) -> (String, String) {
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &system_namespace());
    let role = tenant_storage_operator::plan::naming::role_name(&s.cluster_id, &s.ns, tenant);
    let external_id = eventually("ExternalId Secret", || async {
        let secret = secrets
            .get_opt(&format!("{role}-external-id"))
            .await
            .ok()??;
        let value = secret.data?.get("externalId")?.0.clone();
        Some(String::from_utf8_lossy(&value).into_owned())
    })
    .await;
    let trust = eventually("published trust policy", || async {
        let ts = s.tenants().get(tenant).await.ok()?;
        Some(ts.status?.delegation?.trust_policy)
    })
    .await;
    (external_id, trust)
}

#[tokio::test]
async fn delegated_access_is_verified_and_chained() {
    let s = Scenario::new("delegated").await;
    let policy = s.policy(eu_spec()).await;
    let op = s
        .operator(&["--resync-period", "2s", "--drift-events", "off"])
        .await;
    let customer = Aws::account_root(CUSTOMER).await;
    let bucket = format!("customer-{}", s.cluster_id);
    customer_bucket(&customer, &bucket, "eu-west-1").await;
    let config_before = bucket_config(&customer, &bucket).await;
    let customer_role = format!("vendor-{}", s.cluster_id);
    let customer_role_arn = format!("arn:aws:iam::{CUSTOMER}:role/{customer_role}");

    let spec = json!({
        "mode": "Delegated",
        "delegated": {"bucket": bucket, "roleArn": customer_role_arn},
        "access": {"serviceAccounts": ["app"], "level": "ReadWrite"}
    });
    s.create(&tenant("d", &policy, spec))
        .await
        .expect("create d");
    let (external_id, trust) = delegation(&s, "d").await;
    assert!(
        trust.contains(&external_id),
        "the published trust policy is ready to copy"
    );
    let own_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns);
    assert!(
        own_secrets
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "the ExternalId is not kept where the tenant could change it"
    );
    assert!(
        !op.logs().contains(&external_id),
        "the ExternalId must never be logged"
    );
    let ts = s
        .wait_reason("d", "DelegationVerified", "AssumeRoleDenied")
        .await;
    let published = ts
        .status
        .as_ref()
        .and_then(|st| st.delegation.clone())
        .expect("delegation status");
    // The customer creates the role with a wrong ExternalId: verification fails and says how to fix it.
    let wrong = trust.replace(&external_id, "not-the-external-id");
    let iam = customer.iam();
    iam.create_role()
        .role_name(&customer_role)
        .assume_role_policy_document(wrong)
        .send()
        .await
        .expect("customer role");
    iam.put_role_policy()
        .role_name(&customer_role)
        .policy_name("vendor")
        .policy_document(&published.permissions_policy)
        .send()
        .await
        .expect("customer role policy");
    // Two more reconciles: at least one started after the customer role existed.
    let before = op.counter(RECONCILES, &["result=\"ok\""]).await;
    eventually("a verification after the customer role exists", || async {
        (op.counter(RECONCILES, &["result=\"ok\""]).await >= before + 2.0).then_some(())
    })
    .await;
    let ts = s.get("d").await;
    let cond = condition(&ts, "DelegationVerified").expect("condition");
    assert_eq!(cond.reason, "AssumeRoleDenied");
    assert!(
        cond.message.contains("status.delegation.trustPolicy"),
        "{}",
        cond.message
    );
    assert_eq!(
        condition(&ts, "Ready").map(|c| c.status),
        Some(ConditionStatus::False)
    );
    let role = role_arn(&ts);
    // Until verified, the tenant's role may not assume the customer's role.
    let pod = Aws::web_identity(&role, &sa(&s.ns, "app"))
        .await
        .expect("pod identity");
    assert_eq!(
        pod.assume(&customer_role_arn, None).await.err().as_deref(),
        Some("AccessDenied")
    );

    // The customer applies the published trust policy: Ready, and pods reach the data by chaining.
    iam.update_assume_role_policy()
        .role_name(&customer_role)
        .policy_document(&trust)
        .send()
        .await
        .expect("fix trust");
    let ts = s.wait_condition("d", "Ready", ConditionStatus::True).await;
    for c in [
        "DelegationVerified",
        "ResidencyCompliant",
        "Encrypted",
        "PublicAccessBlocked",
    ] {
        assert_eq!(
            condition(&ts, c).map(|c| c.status),
            Some(ConditionStatus::True),
            "{c}"
        );
    }
    assert_eq!(
        ts.status
            .as_ref()
            .and_then(|st| st.delegation.as_ref())
            .and_then(|d| d.bucket_region.clone()),
        Some("eu-west-1".into())
    );
    // Steady state: re-verification reads the customer's side and writes nothing.
    let writes = op.counter(CALLS, &["mutating=\"true\""]).await;
    let version = s.get("d").await.metadata.resource_version;
    let (written, per_resync) = op.calls_over_reconciles(3.0).await;
    assert_eq!(written, 0.0, "no-op resyncs must not mutate anything");
    println!("delegated: {writes} mutating calls to converge, {per_resync} reads per no-op resync");
    // AssumeRole with the ExternalId, with a wrong one and with none; HeadBucket,
    // GetBucketEncryption, GetPublicAccessBlock; the workload role's 4 IAM reads.
    assert!(per_resync <= 10.0, "{per_resync} reads per resync");
    // Nor is the object rewritten (a status that changes every time would re-trigger itself).
    assert_eq!(s.get("d").await.metadata.resource_version, version);
    let chained = eventually("role chaining allowed", || async {
        pod.assume(&customer_role_arn, None).await.ok()
    })
    .await;
    assert_eq!(
        put(&chained.s3("eu-west-1"), &bucket, "from-pod").await,
        Some(200)
    );
    // The pod's own role cannot touch the customer's bucket directly.
    assert_eq!(
        put(&pod.s3("eu-west-1"), &bucket, "direct").await,
        Some(403)
    );

    // A customer bucket outside the policy's regions: a residency violation, never used.
    let us_bucket = format!("customer-us-{}", s.cluster_id);
    customer_bucket(&customer, &us_bucket, "us-east-1").await;
    let spec = json!({
        "mode": "Delegated",
        "delegated": {"bucket": us_bucket, "roleArn": format!("arn:aws:iam::{CUSTOMER}:role/vendor-us-{}", s.cluster_id)},
        "access": {"serviceAccounts": ["app"], "level": "ReadWrite"}
    });
    s.create(&tenant("us", &policy, spec))
        .await
        .expect("create us");
    // The customer grants a role for this tenant too, exactly as published.
    let (_, us_trust) = delegation(&s, "us").await;
    let us_role = format!("vendor-us-{}", s.cluster_id);
    iam.create_role()
        .role_name(&us_role)
        .assume_role_policy_document(us_trust)
        .send()
        .await
        .expect("customer role us");
    iam.put_role_policy()
        .role_name(&us_role)
        .policy_name("vendor")
        .policy_document(published.permissions_policy.replace(&bucket, &us_bucket))
        .send()
        .await
        .expect("customer role policy us");
    let ts = s
        .wait_reason("us", "ResidencyCompliant", "ResidencyViolation")
        .await;
    assert_eq!(
        condition(&ts, "Ready").map(|c| c.reason.clone()),
        Some("ResidencyViolation".into())
    );
    s.wait_event("us", "ResidencyViolation").await;
    let us_pod = Aws::web_identity(&role_arn(&ts), &sa(&s.ns, "app"))
        .await
        .expect("us pod");
    let us_role_arn = format!("arn:aws:iam::{CUSTOMER}:role/{us_role}");
    // The operator itself got in (it read the bucket's region), the pods may not.
    assert_eq!(
        condition(&ts, "DelegationVerified").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    assert!(
        us_pod.assume(&us_role_arn, None).await.err().as_deref() == Some("AccessDenied"),
        "a non-compliant customer bucket is never used"
    );
    // A customer role that does not require the ExternalId: any tenant could name it, so it is
    // refused and nothing is granted.
    let loose_role = format!("vendor-loose-{}", s.cluster_id);
    let loose_trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "sts:AssumeRole"}]});
    iam.create_role()
        .role_name(&loose_role)
        .assume_role_policy_document(loose_trust.to_string())
        .send()
        .await
        .expect("loose customer role");
    iam.put_role_policy()
        .role_name(&loose_role)
        .policy_name("vendor")
        .policy_document(&published.permissions_policy)
        .send()
        .await
        .expect("loose role policy");
    let spec = json!({
        "mode": "Delegated",
        "delegated": {"bucket": bucket, "roleArn": format!("arn:aws:iam::{CUSTOMER}:role/{loose_role}")},
        "access": {"serviceAccounts": ["app"], "level": "ReadWrite"}
    });
    s.create(&tenant("loose", &policy, spec))
        .await
        .expect("create loose");
    s.wait_reason("loose", "DelegationVerified", "ExternalIdNotEnforced")
        .await;
    // The role's write-ahead record is saved before the verdict: wait for the final status.
    let ts = s
        .wait_condition("loose", "Ready", ConditionStatus::False)
        .await;
    assert_eq!(
        condition(&ts, "DelegationVerified").map(|c| c.reason.as_str()),
        Some("ExternalIdNotEnforced")
    );
    let granted = root_role_policies(&role_arn(&ts)).await;
    assert!(granted.is_empty(), "no permission granted: {granted:?}");

    // The operator only read the customer's buckets: their configuration is as the customer left it.
    assert_eq!(bucket_config(&customer, &bucket).await, config_before);

    // Deleting a delegated tenant removes our role and its ExternalId; the customer's bucket
    // and data stay.
    let secret = format!(
        "{}-external-id",
        tenant_storage_operator::plan::naming::role_name(&s.cluster_id, &s.ns, "d")
    );
    s.tenants()
        .delete("d", &DeleteParams::default())
        .await
        .expect("delete d");
    eventually("d gone", || async {
        s.tenants().get_opt("d").await.ok()?.is_none().then_some(())
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &system_namespace());
    assert!(secrets.get_opt(&secret).await.expect("get").is_none());
    let role_name = role.rsplit('/').next().expect("role name");
    let gone = Aws::root()
        .await
        .iam()
        .get_role()
        .role_name(role_name)
        .send()
        .await;
    assert_eq!(
        gone.err().map(|e| error_code(&e)).as_deref(),
        Some("NoSuchEntity")
    );
    assert_eq!(
        get(&customer.s3("eu-west-1"), &bucket, "from-pod").await,
        Some(200)
    );
}

#[tokio::test]
async fn the_policy_boundary_caps_the_role_and_foreign_roles_are_not_touched() {
    let s = Scenario::new("access-boundary").await;
    let root = Aws::root().await;
    let boundary = root
        .iam()
        .create_policy()
        .policy_name(format!("read-only-{}", s.cluster_id))
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":"*"}]}"#)
        .send()
        .await
        .expect("boundary policy");
    let boundary_arn = boundary
        .policy()
        .and_then(|p| p.arn())
        .expect("arn")
        .to_owned();
    let mut spec = eu_spec();
    spec.access.permissions_boundary_arn = Some(boundary_arn.clone());
    let policy = s.policy(spec).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("t", &policy, access(&["app"], "ReadWrite")))
        .await
        .expect("create");
    let t = s.wait_condition("t", "Ready", ConditionStatus::True).await;
    let role = role_arn(&t);
    let name = role.rsplit('/').next().expect("role name");
    let got = root
        .iam()
        .get_role()
        .role_name(name)
        .send()
        .await
        .expect("get role");
    assert_eq!(
        got.role()
            .and_then(|r| r.permissions_boundary())
            .and_then(|b| b.permissions_boundary_arn()),
        Some(boundary_arn.as_str())
    );
    // ReadWrite in the inline policy, but the boundary allows no write.
    let pod = Aws::web_identity(&role, &sa(&s.ns, "app"))
        .await
        .expect("pod");
    let bucket = s.bucket_for("t");
    assert_eq!(put(&pod.s3(REGION), &bucket, "k").await, Some(403));
    assert_eq!(list(&pod.s3(REGION), &bucket).await, Some(200));

    // A role already holding the name of another tenant's role, not ours: refused, untouched.
    let taken = tenant_storage_operator::plan::naming::role_name(&s.cluster_id, &s.ns, "taken");
    let foreign_trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"sts:AssumeRole"}]}"#;
    root.iam()
        .create_role()
        .role_name(&taken)
        .path(format!("/tenant-storage-operator/{}/", s.cluster_id))
        .assume_role_policy_document(foreign_trust)
        .send()
        .await
        .expect("foreign role");
    s.create(&tenant("taken", &policy, access(&["app"], "ReadWrite")))
        .await
        .expect("create taken");
    let ts = s.wait_reason("taken", "Ready", "RoleConflict").await;
    assert!(condition(&ts, "Ready").is_some_and(|c| c.message.contains(&taken)));
    let untouched = root
        .iam()
        .get_role()
        .role_name(&taken)
        .send()
        .await
        .expect("still there");
    let doc = untouched
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .expect("trust");
    assert!(
        !doc.contains("AssumeRoleWithWebIdentity"),
        "foreign trust policy kept: {doc}"
    );
    let inline = root
        .iam()
        .list_role_policies()
        .role_name(&taken)
        .send()
        .await
        .expect("list");
    assert!(
        inline.policy_names().is_empty(),
        "no policy put on a foreign role"
    );
    // Nor is that role admitted to the tenant's bucket.
    let policy_text = root
        .s3(REGION)
        .get_bucket_policy()
        .bucket(s.bucket_for("taken"))
        .send()
        .await
        .ok()
        .and_then(|p| p.policy)
        .unwrap_or_default();
    assert!(!policy_text.contains(&taken), "{policy_text}");
}
