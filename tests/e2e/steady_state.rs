use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use kube::Api;
use serde_json::json;
use tenant_storage_operator::api::{ResidencyPolicy, TenantStorageStatus};

use crate::harness::{
    Aws, CALLS, Operator, RECONCILES, Scenario, bucket_tags, eu_spec, eventually, put_bucket_tags,
    tenant,
};

/// Reconciling an up-to-date tenant makes no mutating AWS call, counted by the operator's own
/// Prometheus counter.
/// A scenario whose policy has access logging off, an operator started with `args`, and
/// tenant `name` (its spec plus `extra`) Ready: the policy's name and the tenant's status.
async fn one_ready_tenant(
    tag: &str,
    name: &str,
    extra: serde_json::Value,
    args: &[&str],
) -> (Scenario, Operator, String, TenantStorageStatus) {
    let s = Scenario::new(tag).await;
    let mut spec = eu_spec();
    spec.access_logging.enabled = false;
    let policy = s.policy(spec).await;
    let op = s.operator(args).await;
    s.create(&tenant(name, &policy, extra))
        .await
        .expect("create");
    let status = s.wait_ready(name).await.status.expect("status");
    (s, op, policy, status)
}

/// Waits until the bucket carries its jurisdiction tag again; its tags then.
async fn identity_tags_restored(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> std::collections::BTreeMap<String, String> {
    eventually("ownership tags restored", || async {
        let tags = bucket_tags(s3, bucket).await;
        tags.contains_key("tenancy.dev/jurisdiction")
            .then_some(tags)
    })
    .await
}

async fn key_rotation_restored(aws: &Aws, key_arn: &str) {
    eventually("key rotation re-enabled", || async {
        let r = aws
            .kms("eu-central-1")
            .get_key_rotation_status()
            .key_id(key_arn)
            .send()
            .await
            .ok()?;
        r.key_rotation_enabled().then_some(())
    })
    .await;
}

#[tokio::test]
async fn no_op_resync_makes_zero_mutating_calls() {
    // S3: encryption, public access block, ownership, versioning, policy, logging (off here,
    // and kept off), replication (none: a rule nobody asked for would copy the data out); KMS:
    // the key. The bucket's tags and the key's rotation are read at the
    // audit period (or when anything else drifted). The shared access-log bucket (off here) is
    // re-verified once per resync period per policy and region, not per tenant.
    no_op_resync("noop", json!({}), 8.0).await;
}

/// The same with a workload role: the role adds no read of its own, and still no write. A
/// role widened behind the operator's back is found in the next sweep and restored, with no
/// recheck asked.
#[tokio::test]
async fn no_op_resync_with_a_tenant_role_makes_zero_mutating_calls() {
    // The above plus one GetAccountAuthorizationDetails: the sweep of every tenant role, taken
    // at most twice per resync period (so at every resync of this 1 s period; with 10,000
    // tenants it is a few pages a period), instead of GetRole, ListRolePolicies, GetRolePolicy
    // and ListAttachedRolePolicies for each role.
    let (s, op) = no_op_resync(
        "noop-role",
        json!({"access": {"serviceAccounts": ["app"]}}),
        9.0,
    )
    .await;
    let (_, iam_reads) = op.calls_over_reconciles_of("iam", 3.0).await;
    assert!(iam_reads <= 1.0, "{iam_reads} IAM reads per resync");
    let role = s
        .get("steady")
        .await
        .status
        .and_then(|st| st.access)
        .expect("access status")
        .role_arn;
    let role_name = role.rsplit('/').next().expect("role name").to_owned();
    let iam = Aws::root().await.iam();
    iam.attach_role_policy()
        .role_name(&role_name)
        .policy_arn("arn:aws:iam::aws:policy/AmazonS3FullAccess")
        .send()
        .await
        .expect("attach");
    eventually("the widened role restored by a resync", || async {
        let attached = iam
            .list_attached_role_policies()
            .role_name(&role_name)
            .send()
            .await
            .ok()?;
        attached.attached_policies().is_empty().then_some(())
    })
    .await;
}

async fn no_op_resync(tag: &str, extra: serde_json::Value, max_reads: f64) -> (Scenario, Operator) {
    let (s, op, _, _) = one_ready_tenant(
        tag,
        "steady",
        extra,
        &["--resync-period", "1s", "--drift-events", "off"],
    )
    .await;
    // Let the reconcile triggered by the final status write settle.
    let settled = op.counter(RECONCILES, &["result=\"ok\""]).await;
    eventually("one more reconcile", || async {
        (op.counter(RECONCILES, &["result=\"ok\""]).await > settled).then_some(())
    })
    .await;

    let writes = op.counter(CALLS, &["mutating=\"true\""]).await;
    let reads = op.counter(CALLS, &["mutating=\"false\""]).await;
    let iam_writes = op
        .counter(CALLS, &["service=\"iam\"", "mutating=\"true\""])
        .await;
    println!(
        "{tag}: AWS calls to converge one tenant (incl. reconciles after its own status writes): {writes} mutating ({} IAM), {reads} reads",
        iam_writes + 0.0
    );
    let version = s.get("steady").await.metadata.resource_version;
    assert!(writes > 0.0, "provisioning itself made mutating calls");
    let (written, per_resync) = op.calls_over_reconciles(3.0).await;
    assert_eq!(written, 0.0, "no-op resyncs must not mutate anything");
    println!("{tag}: AWS read calls per no-op resync: {per_resync}");
    assert!(per_resync <= max_reads, "{per_resync} reads per resync");
    assert_eq!(
        s.get("steady").await.metadata.resource_version,
        version,
        "a no-op resync does not rewrite the object"
    );
    assert!(per_resync > 0.0, "resyncs read the cloud (drift detection)");
    (s, op)
}

/// The bucket's identity tags and the key's rotation, read at the audit period rather than at
/// every resync, are restored then even when nothing else drifted.
#[tokio::test]
async fn tags_and_key_rotation_are_restored_at_the_audit_period() {
    let (_s, _op, _, status) = one_ready_tenant(
        "slowdrift",
        "slow",
        json!({}),
        &[
            "--resync-period",
            "1s",
            "--audit-period",
            "3s",
            "--drift-events",
            "off",
        ],
    )
    .await;
    let bucket = status.bucket_name.expect("bucket");
    let key_arn = status.kms_key_arn.expect("key");
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");
    let mut tags = bucket_tags(&s3, &bucket).await;
    tags.remove("tenancy.dev/jurisdiction");
    put_bucket_tags(&s3, &bucket, &tags).await;
    aws.kms("eu-central-1")
        .disable_key_rotation()
        .key_id(&key_arn)
        .send()
        .await
        .expect("disable rotation");
    identity_tags_restored(&s3, &bucket).await;
    key_rotation_restored(&aws, &key_arn).await;
}

/// A bucket deleted behind the operator's back is created again by the next resync, which
/// skipped its tags: the missing bucket sends it back to read everything, not into a failure.
#[tokio::test]
async fn a_deleted_bucket_is_created_again_without_a_failed_reconcile() {
    let (s, op, _, status) = one_ready_tenant(
        "gone",
        "gone",
        json!({}),
        &["--resync-period", "1s", "--drift-events", "off"],
    )
    .await;
    let bucket = status.bucket_name.expect("bucket");
    let s3 = Aws::root().await.s3("eu-central-1");
    s3.delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("delete the bucket");
    eventually("the bucket is back", || async {
        s3.head_bucket()
            .bucket(&bucket)
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    s.wait_ready("gone").await;
    assert_eq!(
        op.counter(RECONCILES, &["result=\"AwsNoSuchBucket\""])
            .await,
        0.0,
        "no reconcile failed on the missing bucket"
    );
}

/// Settings changed behind the operator's back are restored on the next resync, with a
/// DriftCorrected Event.
#[tokio::test]
async fn drift_is_detected_and_corrected() {
    let s = Scenario::new("drift").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s
        .operator(&["--resync-period", "1s", "--drift-events", "off"])
        .await;
    s.create(&tenant("drifty", &policy, json!({})))
        .await
        .expect("create");
    let ts = s.wait_ready("drifty").await;
    let status = ts.status.expect("status");
    let bucket = status.bucket_name.expect("bucket");
    let key_arn = status.kms_key_arn.expect("key");
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");

    // Break every setting.
    let aes = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .expect("sse"),
                )
                .build(),
        )
        .build()
        .expect("sse config");
    s3.put_bucket_encryption()
        .bucket(&bucket)
        .server_side_encryption_configuration(aes)
        .send()
        .await
        .expect("weaken encryption");
    let open = PublicAccessBlockConfiguration::builder()
        .block_public_acls(false)
        .ignore_public_acls(false)
        .block_public_policy(false)
        .restrict_public_buckets(false)
        .build();
    s3.put_public_access_block()
        .bucket(&bucket)
        .public_access_block_configuration(open)
        .send()
        .await
        .expect("open public access");
    s3.delete_bucket_policy()
        .bucket(&bucket)
        .send()
        .await
        .expect("drop policy");
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .expect("suspend versioning");
    s3.put_bucket_ownership_controls()
        .bucket(&bucket)
        .ownership_controls(
            OwnershipControls::builder()
                .rules(
                    OwnershipControlsRule::builder()
                        .object_ownership(ObjectOwnership::ObjectWriter)
                        .build()
                        .expect("rule"),
                )
                .build()
                .expect("controls"),
        )
        .send()
        .await
        .expect("enable ACLs");
    let mut tags = bucket_tags(&s3, &bucket).await;
    tags.remove("tenancy.dev/jurisdiction");
    tags.insert("cost-center".into(), "42".into());
    put_bucket_tags(&s3, &bucket, &tags).await;
    aws.kms("eu-central-1")
        .disable_key_rotation()
        .key_id(&key_arn)
        .send()
        .await
        .expect("disable rotation");

    // Everything comes back.
    eventually("encryption restored", || async {
        let enc = s3
            .get_bucket_encryption()
            .bucket(&bucket)
            .send()
            .await
            .ok()?;
        let rule = enc
            .server_side_encryption_configuration()?
            .rules()
            .first()?
            .clone();
        let default = rule.apply_server_side_encryption_by_default()?;
        (default.sse_algorithm() == &ServerSideEncryption::AwsKms
            && default.kms_master_key_id() == Some(key_arn.as_str())
            && rule.bucket_key_enabled() == Some(true))
        .then_some(())
    })
    .await;
    eventually("public access blocked again", || async {
        let pab = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .ok()?;
        let c = pab.public_access_block_configuration()?;
        (c.block_public_acls() == Some(true)
            && c.ignore_public_acls() == Some(true)
            && c.block_public_policy() == Some(true)
            && c.restrict_public_buckets() == Some(true))
        .then_some(())
    })
    .await;
    eventually("bucket policy restored", || async {
        s3.get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    eventually("versioning re-enabled", || async {
        let v = s3
            .get_bucket_versioning()
            .bucket(&bucket)
            .send()
            .await
            .ok()?;
        (v.status() == Some(&BucketVersioningStatus::Enabled)).then_some(())
    })
    .await;
    eventually("ACLs disabled again", || async {
        let o = s3
            .get_bucket_ownership_controls()
            .bucket(&bucket)
            .send()
            .await
            .ok()?;
        (o.ownership_controls()?.rules().first()?.object_ownership()
            == &ObjectOwnership::BucketOwnerEnforced)
            .then_some(())
    })
    .await;
    let tags = identity_tags_restored(&s3, &bucket).await;
    assert_eq!(
        tags.get("cost-center").map(String::as_str),
        Some("42"),
        "user tags are kept"
    );
    key_rotation_restored(&aws, &key_arn).await;
    let event = s.wait_event("drifty", "DriftCorrected").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("encryption") || note.contains("bucketPolicy"),
        "{note}"
    );
}

/// A tenant key someone disabled is reported, not silently re-enabled.
#[tokio::test]
async fn disabled_key_is_reported() {
    let s = Scenario::new("keyoff").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s
        .operator(&["--resync-period", "1s", "--drift-events", "off"])
        .await;
    s.create(&tenant("k", &policy, json!({})))
        .await
        .expect("create");
    let key_arn = s
        .wait_ready("k")
        .await
        .status
        .and_then(|st| st.kms_key_arn)
        .expect("key");
    let kms = Aws::root().await.kms("eu-central-1");
    kms.disable_key()
        .key_id(&key_arn)
        .send()
        .await
        .expect("disable key");
    let ts = s.wait_reason("k", "Encrypted", "KeyNotUsable").await;
    let encrypted = crate::harness::condition(&ts, "Encrypted").expect("Encrypted");
    assert_eq!(
        encrypted.status,
        tenant_storage_operator::api::ConditionStatus::False
    );
    assert!(
        encrypted.message.contains("Disabled"),
        "{}",
        encrypted.message
    );
    let key = kms
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .expect("key");
    assert_eq!(
        key.key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str()),
        Some("Disabled")
    );
}

/// A policy deleted behind the operator's back, and the tenant's bucket.
async fn drop_bucket_policy(s: &Scenario, name: &str) -> (aws_sdk_s3::Client, String) {
    let bucket = s
        .get(name)
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    let s3 = Aws::root().await.s3("eu-central-1");
    s3.delete_bucket_policy()
        .bucket(&bucket)
        .send()
        .await
        .expect("drop policy");
    (s3, bucket)
}

async fn policy_restored(s3: &aws_sdk_s3::Client, bucket: &str) {
    eventually("bucket policy restored", || async {
        s3.get_bucket_policy()
            .bucket(bucket)
            .send()
            .await
            .ok()
            .and_then(|p| p.policy)
    })
    .await;
}

/// The operator learns of a change made by someone else from CloudTrail's events and re-checks
/// that tenant, with its resync an hour away; until then resyncs cost nothing.
#[tokio::test]
async fn drift_is_learned_from_cloudtrail_events() {
    let (s, op, policy, _) = one_ready_tenant(
        "ctdrift",
        "watched",
        json!({}),
        &[
            "--resync-period",
            "1h",
            "--drift-events-interval",
            "1s",
            "--drift-events-lookback",
            "30s",
        ],
    )
    .await;
    eventually("the event source answers", || async {
        (op.counter("tenant_storage_drift_event_source_up", &[])
            .await
            == 1.0)
            .then_some(())
    })
    .await;
    let (status, message) = drift_detection(&s, &policy, "CloudTrailEvents").await;
    assert_eq!(status, "True");
    assert!(message.contains("eu-central-1"), "{message}");
    let (s3, bucket) = drop_bucket_policy(&s, "watched").await;
    policy_restored(&s3, &bucket).await;
    let corrected = op
        .counter(
            "tenant_storage_drift_corrected_total",
            &["setting=\"bucketPolicy\""],
        )
        .await;
    assert!(corrected >= 1.0, "{corrected} bucket policies put back");
    let learned = op
        .counter(
            "tenant_storage_drift_events_total",
            &["region=\"eu-central-1\""],
        )
        .await;
    assert!(learned >= 1.0, "{learned} drift events");
    s.wait_event("watched", "DriftCorrected").await;
}

/// The policy's `DriftDetection` condition once its reason is `reason`: (status, message).
async fn drift_detection(s: &Scenario, policy: &str, reason: &str) -> (String, String) {
    let policies: Api<ResidencyPolicy> = Api::all(s.client.clone());
    eventually(&format!("DriftDetection {reason}"), || async {
        let policy = policies.get(policy).await.ok()?;
        let condition = policy
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "DriftDetection" && c.reason == reason)?;
        Some((format!("{:?}", condition.status), condition.message))
    })
    .await
}

/// Without the right to read CloudTrail, the operator says so in its metrics and polls every
/// tenant at the resync period, which still restores a dropped policy.
#[tokio::test]
async fn without_cloudtrail_the_operator_falls_back_to_polling() {
    let s = Scenario::new("ctdenied").await;
    let mut spec = eu_spec();
    spec.access_logging.enabled = false;
    let policy = s.policy(spec).await;
    // The operator's user exists once it has keys.
    crate::harness::operator_keys(&s.cluster_id, &s.prefix).await;
    let user = format!("tso-op-{}-{}", s.cluster_id, s.prefix);
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "cloudtrail:LookupEvents", "Resource": "*"}
    ]});
    Aws::root()
        .await
        .iam()
        .put_user_policy()
        .user_name(&user)
        .policy_name("no-cloudtrail")
        .policy_document(deny.to_string())
        .send()
        .await
        .expect("deny CloudTrail to the operator");
    let op = s
        .operator(&[
            "--resync-period",
            "2s",
            "--audit-period",
            "1h",
            "--drift-events-interval",
            "1s",
        ])
        .await;
    s.create(&tenant("polled", &policy, json!({})))
        .await
        .expect("create");
    s.wait_ready("polled").await;
    eventually("refused polls counted", || async {
        let refused = op
            .counter(
                "tenant_storage_drift_event_polls_total",
                &["outcome=\"AccessDenied"],
            )
            .await;
        (refused > 0.0).then_some(())
    })
    .await;
    assert_eq!(
        op.counter("tenant_storage_drift_event_source_up", &[])
            .await,
        0.0
    );
    // The platform team sees it where it declares residency, with the fix.
    let (status, message) = drift_detection(&s, &policy, "EventsDenied").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("eu-central-1 (AccessDenied")
            && message.contains("every 2s (--resync-period)")
            && message.contains("cloudtrail:LookupEvents"),
        "{message}"
    );
    let (s3, bucket) = drop_bucket_policy(&s, "polled").await;
    policy_restored(&s3, &bucket).await;
}
