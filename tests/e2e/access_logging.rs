use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLoggingStatus, ObjectOwnership, ServerSideEncryption};
use serde_json::json;
use tenant_storage_operator::plan::naming::log_bucket_name;

use crate::harness::{Aws, Scenario, bucket_tags, eu_spec, eventually, tenant};

/// Access logs of a policy's tenants go to an operator-owned bucket in the tenant's own region:
/// encrypted, locked down, expiring logs after the policy's retention, writable only by the S3
/// logging service; each tenant under its own prefix; never a log bucket elsewhere.
#[tokio::test]
async fn access_logs_stay_in_the_tenants_region() {
    let s = Scenario::new("logging").await;
    let mut spec = eu_spec();
    spec.access_logging.retention_days = 30;
    let policy = s.policy(spec).await;
    let _op = s
        .operator(&["--resync-period", "1s", "--drift-events", "off"])
        .await;
    for name in ["a", "b"] {
        s.create(&tenant(name, &policy, json!({"region": "eu-west-1"})))
            .await
            .expect("create");
    }
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-west-1");
    let logs = log_bucket_name(&s.prefix, &s.cluster_id, &policy, "eu-west-1");
    for name in ["a", "b"] {
        let bucket = s
            .wait_ready(name)
            .await
            .status
            .and_then(|st| st.bucket_name)
            .expect("bucket");
        let logging = s3
            .get_bucket_logging()
            .bucket(&bucket)
            .send()
            .await
            .expect("logging");
        let target = logging.logging_enabled().expect("access logging on");
        assert_eq!(target.target_bucket(), logs);
        assert_eq!(target.target_prefix(), format!("{}/{name}/", s.ns));
    }

    // The log bucket: same region, ours, encrypted, locked down, expiring, service-only writes.
    let head = s3
        .head_bucket()
        .bucket(&logs)
        .send()
        .await
        .expect("log bucket exists");
    assert_eq!(head.bucket_region(), Some("eu-west-1"));
    let tags = bucket_tags(&s3, &logs).await;
    assert_eq!(
        tags.get("tenancy.dev/role").map(String::as_str),
        Some("access-logs")
    );
    assert_eq!(
        tags.get("tenancy.dev/jurisdiction").map(String::as_str),
        Some("EU")
    );
    let enc = s3
        .get_bucket_encryption()
        .bucket(&logs)
        .send()
        .await
        .expect("encryption");
    let rule = &enc
        .server_side_encryption_configuration()
        .expect("config")
        .rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .map(|d| d.sse_algorithm()),
        Some(&ServerSideEncryption::Aes256),
        "SSE-S3: the only encryption S3 access logging delivers into"
    );
    let pab = s3
        .get_public_access_block()
        .bucket(&logs)
        .send()
        .await
        .expect("pab");
    let pab = pab.public_access_block_configuration().expect("pab config");
    assert_eq!(
        (
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let own = s3
        .get_bucket_ownership_controls()
        .bucket(&logs)
        .send()
        .await
        .expect("ownership");
    assert_eq!(
        own.ownership_controls()
            .map(|c| c.rules()[0].object_ownership()),
        Some(&ObjectOwnership::BucketOwnerEnforced)
    );
    let lifecycle = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&logs)
        .send()
        .await
        .expect("lifecycle");
    assert_eq!(
        lifecycle.rules()[0].expiration().and_then(|e| e.days()),
        Some(30)
    );
    let policy_doc = s3
        .get_bucket_policy()
        .bucket(&logs)
        .send()
        .await
        .expect("policy");
    let policy_doc: serde_json::Value =
        serde_json::from_str(policy_doc.policy().unwrap_or_default()).expect("JSON");
    let allow: Vec<_> = policy_doc["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|st| st["Effect"] == "Allow")
        .collect();
    assert_eq!(allow.len(), 1, "one Allow: {policy_doc}");
    assert_eq!(allow[0]["Principal"]["Service"], "logging.s3.amazonaws.com");
    let user = Aws::user().await.s3("eu-west-1");
    let forged = user
        .put_object()
        .bucket(&logs)
        .key(format!("{}/a/forged", s.ns))
        .body(ByteStream::from_static(b"fake log"))
        .send()
        .await;
    assert!(
        matches!(&forged, Err(e) if format!("{e:?}").contains("AccessDenied")),
        "nobody but the logging service writes logs: {forged:?}"
    );

    // Never outside the tenant's region.
    for region in ["eu-central-1", "us-east-1"] {
        let other = log_bucket_name(&s.prefix, &s.cluster_id, &policy, region);
        assert!(
            aws.s3(region)
                .head_bucket()
                .bucket(&other)
                .send()
                .await
                .is_err(),
            "{other}"
        );
    }

    // Turning logging off behind the operator's back is drift.
    let bucket = s
        .get("a")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    s3.put_bucket_logging()
        .bucket(&bucket)
        .bucket_logging_status(BucketLoggingStatus::builder().build())
        .send()
        .await
        .expect("turn logging off");
    eventually("access logging restored", || async {
        let l = s3.get_bucket_logging().bucket(&bucket).send().await.ok()?;
        (l.logging_enabled()?.target_bucket() == logs).then_some(())
    })
    .await;
}
