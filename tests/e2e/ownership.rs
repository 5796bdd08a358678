use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, Tag, Tagging};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{Aws, Scenario, bucket_tags, condition, eu_spec, tenant};

async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str, tags: &[(&str, &str)]) {
    s3.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    if tags.is_empty() {
        return;
    }
    let tag_set = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().expect("tag"))
        .collect::<Vec<_>>();
    s3.put_bucket_tagging()
        .bucket(bucket)
        .tagging(
            Tagging::builder()
                .set_tag_set(Some(tag_set))
                .build()
                .expect("tagging"),
        )
        .send()
        .await
        .expect("tag bucket");
}

/// A bucket that holds our name but is not ours is never touched: BucketConflict.
#[tokio::test]
async fn foreign_buckets_are_never_touched() {
    let s = Scenario::new("foreign").await;
    let policy = s.policy(eu_spec()).await;
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");
    let untagged = s.bucket_for("untagged");
    create_bucket(&s3, &untagged, &[("owner", "someone-else")]).await;
    let other = s.bucket_for("other");
    create_bucket(
        &s3,
        &other,
        &[
            ("tenancy.dev/managed-by", "tenant-storage-operator"),
            ("tenancy.dev/cluster-id", "another-cluster"),
            ("tenancy.dev/namespace", &s.ns),
            ("tenancy.dev/name", "other"),
        ],
    )
    .await;
    let tags_before = (
        bucket_tags(&s3, &untagged).await,
        bucket_tags(&s3, &other).await,
    );

    let _op = s.operator(&[]).await;
    for name in ["untagged", "other"] {
        s.create(&tenant(name, &policy, json!({})))
            .await
            .expect("create");
        let ts = s.wait_reason(name, "Ready", "BucketConflict").await;
        let ready = condition(&ts, "Ready").expect("Ready");
        assert_eq!(ready.status, ConditionStatus::False);
        s.wait_event(name, "BucketConflict").await;
    }
    let ready = condition(&s.get("other").await, "Ready")
        .cloned()
        .expect("Ready");
    assert!(
        ready.message.contains("another-cluster"),
        "{}",
        ready.message
    );

    // Untouched: same tags, no policy, no key.
    assert_eq!(
        (
            bucket_tags(&s3, &untagged).await,
            bucket_tags(&s3, &other).await
        ),
        tags_before
    );
    for bucket in [&untagged, &other] {
        let policy = s3.get_bucket_policy().bucket(bucket).send().await;
        assert!(policy.is_err(), "no policy may be written on {bucket}");
    }
    let alias = tenant_storage_operator::plan::naming::key_alias(&s.cluster_id, &s.ns, "untagged");
    assert!(
        aws.kms("eu-central-1")
            .describe_key()
            .key_id(&alias)
            .send()
            .await
            .is_err()
    );
}

/// Our own bucket from an earlier run is adopted: found by its tags, or recognised as the one
/// this tenant had claimed when a creation was interrupted before tagging.
#[tokio::test]
async fn own_buckets_from_interrupted_runs_are_adopted() {
    let s = Scenario::new("adopt").await;
    let policy = s.policy(eu_spec()).await;
    let aws = Aws::root().await;
    let s3 = aws.s3("eu-central-1");

    // Tagged by an earlier run whose status was lost.
    let tagged = s.bucket_for("tagged");
    create_bucket(
        &s3,
        &tagged,
        &[
            ("tenancy.dev/managed-by", "tenant-storage-operator"),
            ("tenancy.dev/cluster-id", &s.cluster_id),
            ("tenancy.dev/namespace", &s.ns),
            ("tenancy.dev/name", "tagged"),
        ],
    )
    .await;
    s.create(&tenant("tagged", &policy, json!({})))
        .await
        .expect("create");

    // Claimed in status, created, then interrupted before tagging.
    let claimed = s.bucket_for("claimed");
    s.create(&tenant("claimed", &policy, json!({})))
        .await
        .expect("create");
    s.tenants()
        .patch_status(
            "claimed",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"bucketName": claimed, "region": "eu-central-1"}})),
        )
        .await
        .expect("record the claim");
    create_bucket(&s3, &claimed, &[]).await;

    let _op = s.operator(&[]).await;
    for (name, bucket) in [("tagged", &tagged), ("claimed", &claimed)] {
        let ts = s.wait_ready(name).await;
        assert_eq!(
            ts.status.and_then(|st| st.bucket_name).as_ref(),
            Some(bucket)
        );
        let tags = bucket_tags(&s3, bucket).await;
        assert_eq!(
            tags.get("tenancy.dev/jurisdiction").map(String::as_str),
            Some("EU")
        );
        let enc = s3
            .get_bucket_encryption()
            .bucket(bucket)
            .send()
            .await
            .expect("encryption");
        let rule = &enc
            .server_side_encryption_configuration()
            .expect("config")
            .rules()[0];
        assert!(
            rule.apply_server_side_encryption_by_default()
                .and_then(|d| d.kms_master_key_id())
                .is_some()
        );
    }
    s.wait_event("tagged", "Adopted").await;
}
