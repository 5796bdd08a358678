use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{Aws, Scenario, condition, eu_spec, tenant};

/// A region outside the policy never produces a bucket or a key: the API server refuses what
/// CEL can judge, the operator refuses the rest with a condition and an Event.
#[tokio::test]
async fn region_outside_the_policy_never_produces_a_bucket() {
    let s = Scenario::new("residency").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;

    // Not a region name at all: refused at admission, naming the field.
    let err = s
        .create(&tenant("mars", &policy, json!({"region": "Mars"})))
        .await
        .expect_err("a malformed region must be refused by the API server");
    assert!(err.to_string().contains("spec.region"), "{err}");

    // A real region, but not the policy's: refused by the operator.
    s.create(&tenant("wrong", &policy, json!({"region": "us-east-1"})))
        .await
        .expect("create");
    let ts = s
        .wait_condition("wrong", "ResidencyCompliant", ConditionStatus::False)
        .await;
    let residency = condition(&ts, "ResidencyCompliant").expect("condition");
    assert_eq!(residency.reason, "RegionNotAllowed");
    assert!(
        residency.message.contains("us-east-1")
            && residency.message.contains("eu-central-1, eu-west-1"),
        "the message names the region and the allowed ones: {}",
        residency.message
    );
    let ready = condition(&ts, "Ready").expect("Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "RegionNotAllowed")
    );
    s.wait_event("wrong", "RegionNotAllowed").await;
    assert_eq!(ts.status.and_then(|st| st.bucket_name), None);

    let aws = Aws::root().await;
    let bucket = s.bucket_for("wrong");
    for region in ["us-east-1", "eu-central-1"] {
        let head = aws.s3(region).head_bucket().bucket(&bucket).send().await;
        assert!(head.is_err(), "no bucket {bucket} may exist");
    }
    let alias = tenant_storage_operator::plan::naming::key_alias(&s.cluster_id, &s.ns, "wrong");
    let key = aws
        .kms("us-east-1")
        .describe_key()
        .key_id(&alias)
        .send()
        .await;
    assert!(key.is_err(), "no key may exist for a refused tenant");
}

/// A policy whose default region it does not allow is refused at admission, naming the field.
#[tokio::test]
async fn inconsistent_policy_is_refused_at_admission() {
    let client = kube::Client::try_default().await.expect("kube client");
    crate::harness::install_crds(&client).await;
    let api: kube::Api<tenant_storage_operator::api::ResidencyPolicy> = kube::Api::all(client);
    let mut spec = eu_spec();
    spec.default_region = "us-east-1".into();
    let policy = tenant_storage_operator::api::ResidencyPolicy::new("inconsistent", spec);
    let err = api
        .create(&Default::default(), &policy)
        .await
        .expect_err("defaultRegion outside allowedRegions must be refused");
    assert!(
        err.to_string()
            .contains("spec.defaultRegion must be one of spec.allowedRegions"),
        "{err}"
    );
}

/// Once placed, a tenant never moves: region and policy are immutable at admission.
#[tokio::test]
async fn region_and_policy_are_immutable() {
    let s = Scenario::new("immutable").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("pinned", &policy, json!({"region": "eu-west-1"})))
        .await
        .expect("create");
    let ts = s.wait_ready("pinned").await;
    assert_eq!(
        ts.status.and_then(|st| st.region).as_deref(),
        Some("eu-west-1")
    );

    let api = s.tenants();
    let params = kube::api::PatchParams::default();
    let err = api
        .patch(
            "pinned",
            &params,
            &kube::api::Patch::Merge(json!({"spec": {"region": "eu-central-1"}})),
        )
        .await
        .expect_err("moving a tenant must be refused");
    assert!(
        err.to_string().contains("spec.region is immutable"),
        "{err}"
    );
    let err = api
        .patch(
            "pinned",
            &params,
            &kube::api::Patch::Merge(json!({"spec": {"policyRef": "us"}})),
        )
        .await
        .expect_err("changing jurisdiction must be refused");
    assert!(
        err.to_string().contains("spec.policyRef is immutable"),
        "{err}"
    );
}

/// A reference to a missing policy is a condition, and the tenant is provisioned as soon as the
/// policy appears.
#[tokio::test]
async fn missing_policy_is_a_condition_then_recovers() {
    let s = Scenario::new("nopolicy").await;
    let _op = s.operator(&[]).await;
    let policy = format!("{}-policy", s.ns);
    s.create(&tenant("early", &policy, json!({})))
        .await
        .expect("create");
    let ts = s
        .wait_condition("early", "Ready", ConditionStatus::False)
        .await;
    let ready = condition(&ts, "Ready").expect("Ready");
    assert_eq!(ready.reason, "PolicyNotFound");
    assert!(
        ready.message.contains("spec.policyRef"),
        "{}",
        ready.message
    );

    s.policy(eu_spec()).await;
    let ts = s.wait_ready("early").await;
    assert_eq!(
        ts.status.and_then(|st| st.region).as_deref(),
        Some("eu-central-1")
    );
}
