use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;
use tenant_storage_operator::controllers::PAUSED;

use crate::harness::{
    Aws, CALLS, Scenario, bucket_tags, condition, eu_spec, put_bucket_tags, tenant,
};

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
    put_bucket_tags(s3, bucket, tags.iter().copied()).await;
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

/// A bucket of ours found in a region the policy does not allow is never used.
#[tokio::test]
async fn bucket_in_a_region_outside_the_policy_is_never_used() {
    let s = Scenario::new("violation").await;
    let policy = s.policy(eu_spec()).await;
    let aws = Aws::root().await;
    let s3 = aws.s3("us-east-1");
    let bucket = s.bucket_for("moved");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket in us-east-1");
    let tags = [
        ("tenancy.dev/managed-by", "tenant-storage-operator"),
        ("tenancy.dev/cluster-id", s.cluster_id.as_str()),
        ("tenancy.dev/namespace", s.ns.as_str()),
        ("tenancy.dev/name", "moved"),
    ];
    put_bucket_tags(&s3, &bucket, tags.iter().copied()).await;

    let _op = s.operator(&[]).await;
    s.create(&tenant("moved", &policy, json!({})))
        .await
        .expect("create");
    let ts = s
        .wait_reason("moved", "ResidencyCompliant", "ResidencyViolation")
        .await;
    let residency = condition(&ts, "ResidencyCompliant").expect("condition");
    assert_eq!(residency.status, ConditionStatus::False);
    assert!(
        residency.message.contains("us-east-1"),
        "{}",
        residency.message
    );
    s.wait_event("moved", "ResidencyViolation").await;
    assert!(
        s3.get_bucket_policy().bucket(&bucket).send().await.is_err(),
        "the bucket is not touched"
    );
    let alias = tenant_storage_operator::plan::naming::key_alias(&s.cluster_id, &s.ns, "moved");
    for region in ["us-east-1", "eu-central-1"] {
        let key = aws.kms(region).describe_key().key_id(&alias).send().await;
        assert!(
            key.is_err(),
            "no key is created for a tenant that is not used ({region})"
        );
    }
}

/// The KMS key of a creation interrupted before its alias was written is adopted, not doubled;
/// the search for it reads the tags of each key in the region once per process, so a second
/// interrupted creation reads only the keys created since.
#[tokio::test]
async fn key_of_an_interrupted_creation_is_adopted() {
    let s = Scenario::new("orphankey").await;
    let policy = s.policy(eu_spec()).await;
    let kms = Aws::root().await.kms("eu-central-1");
    let op = s.operator(&[]).await;
    let first = interrupted_key_creation(&s, &kms, &policy, "k").await;
    let searched = op.counter(CALLS, &["operation=\"ListResourceTags\""]).await;
    assert!(
        searched >= first as f64,
        "the first search reads every key's tags ({searched} reads, {first} keys)"
    );
    let second = interrupted_key_creation(&s, &kms, &policy, "k2").await;
    let again = op.counter(CALLS, &["operation=\"ListResourceTags\""]).await - searched;
    // Keys other tests created meanwhile, plus the confirmation of the match and the first
    // sight of the adopted key.
    let new_keys = second.saturating_sub(first) as f64;
    assert!(
        again <= new_keys + 3.0,
        "{again} tag reads for {new_keys} new keys"
    );
}

/// Leaves what a run interrupted between CreateKey and CreateAlias leaves behind for tenant
/// `name` (a key with its tags, no alias, the claim in status), waits until the operator adopts
/// that key, and returns how many keys the region held before it was adopted.
async fn interrupted_key_creation(
    s: &Scenario,
    kms: &aws_sdk_kms::Client,
    policy: &str,
    name: &str,
) -> usize {
    let key_tags = [
        ("tenancy.dev/managed-by", "tenant-storage-operator"),
        ("tenancy.dev/cluster-id", s.cluster_id.as_str()),
        ("tenancy.dev/namespace", s.ns.as_str()),
        ("tenancy.dev/name", name),
    ];
    let orphan = kms
        .create_key()
        .set_tags(Some(
            key_tags
                .iter()
                .map(|(k, v)| {
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key(*k)
                        .tag_value(*v)
                        .build()
                        .expect("tag")
                })
                .collect(),
        ))
        .send()
        .await
        .expect("create key");
    let orphan_arn = orphan
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("arn")
        .to_owned();
    let keys = key_count(kms).await;
    // Paused while the status is set as the interrupted run left it, so the operator's first
    // real look at the tenant sees the claim.
    let mut paused = tenant(name, policy, json!({}));
    paused
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(PAUSED.into(), "true".into());
    s.create(&paused).await.expect("create");
    s.tenants()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "bucketName": s.bucket_for(name),
                "region": "eu-central-1",
                "keyCreationStarted": "2026-11-23T00:00:00Z"
            }})),
        )
        .await
        .expect("record the claim");
    s.tenants()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {PAUSED: null}}})),
        )
        .await
        .expect("resume");
    let status = s.wait_ready(name).await.status.expect("status");
    assert_eq!(
        status.kms_key_arn.as_deref(),
        Some(orphan_arn.as_str()),
        "the orphan key is adopted"
    );
    keys
}

async fn key_count(kms: &aws_sdk_kms::Client) -> usize {
    let mut pages = kms.list_keys().into_paginator().items().send();
    let mut n = 0;
    while let Some(key) = pages.next().await {
        key.expect("list keys");
        n += 1;
    }
    n
}
