use aws_sdk_s3::primitives::ByteStream;
use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{Aws, Scenario, bucket_tags, condition, eu_spec, eventually, tenant};

/// `Retain` (the default) keeps bucket, data and key, and tags the bucket as released.
#[tokio::test]
async fn retain_releases_bucket_and_keeps_data() {
    let s = Scenario::new("retain").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("keep", &policy, json!({})))
        .await
        .expect("create");
    let status = s.wait_ready("keep").await.status.expect("status");
    let bucket = status.bucket_name.expect("bucket");
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");
    s3.put_object()
        .bucket(&bucket)
        .key("invoices/1.pdf")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .expect("write data");

    s.tenants()
        .delete("keep", &Default::default())
        .await
        .expect("delete");
    eventually("TenantStorage gone", || async {
        s.tenants()
            .get_opt("keep")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    let tags = bucket_tags(&s3, &bucket).await;
    assert_eq!(
        tags.get("tenancy.dev/released").map(String::as_str),
        Some("true")
    );
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key("invoices/1.pdf")
        .send()
        .await
        .expect("data kept");
    assert_eq!(
        object
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"data"
    );
    let key = aws
        .kms("eu-central-1")
        .describe_key()
        .key_id(status.kms_key_arn.expect("key"))
        .send()
        .await
        .expect("key kept");
    assert_eq!(
        key.key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str()),
        Some("Enabled")
    );
}

/// `Delete` never deletes data: a non-empty bucket blocks deletion with a condition; once
/// emptied, bucket goes and the key is scheduled for deletion.
#[tokio::test]
async fn delete_waits_for_an_empty_bucket() {
    let s = Scenario::new("delete").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s
        .operator(&["--resync-period", "2s", "--drift-events", "off"])
        .await;
    s.create(&tenant(
        "gone",
        &policy,
        json!({"deletionPolicy": "Delete"}),
    ))
    .await
    .expect("create");
    let status = s.wait_ready("gone").await.status.expect("status");
    let bucket = status.bucket_name.expect("bucket");
    let key_arn = status.kms_key_arn.expect("key");
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key("a")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("write data");

    s.tenants()
        .delete("gone", &Default::default())
        .await
        .expect("delete");
    let ts = s.wait_reason("gone", "Ready", "DeletionBlocked").await;
    let ready = condition(&ts, "Ready").expect("Ready");
    assert_eq!(ready.status, ConditionStatus::False);
    s.wait_event("gone", "DeletionBlocked").await;
    assert!(
        ready.message.contains("DataDeletionRequest"),
        "{}",
        ready.message
    );
    assert!(
        ts.metadata.deletion_timestamp.is_some(),
        "the object stays while data remains"
    );
    s3.head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket kept while it holds data");

    // Empty it (what a DataDeletionRequest will do), then deletion completes.
    s3.delete_object()
        .bucket(&bucket)
        .key("a")
        .set_version_id(put.version_id().map(str::to_owned))
        .send()
        .await
        .expect("delete the object version");
    eventually("TenantStorage gone", || async {
        s.tenants()
            .get_opt("gone")
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
    assert!(meta.deletion_date().is_some());
    s.wait_event("gone", "Deleted").await;
}
