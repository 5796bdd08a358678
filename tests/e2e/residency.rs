use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{Aws, Scenario, condition, eu_spec, eventually, tenant};

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

/// Without the admission policy, the operator refuses a namespace the policy does not select.
#[tokio::test]
async fn namespace_not_selected_is_refused_at_reconcile() {
    let s = Scenario::new("nsbind").await;
    let mut spec = eu_spec();
    spec.namespace_selector = Some(tenant_storage_operator::api::NamespaceSelector {
        match_labels: [("tso-customer-class".to_owned(), "eu".to_owned())].into(),
    });
    let policy = s.policy(spec).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("outsider", &policy, json!({})))
        .await
        .expect("create");
    let ts = s
        .wait_reason("outsider", "ResidencyCompliant", "NamespaceNotAllowed")
        .await;
    let message = condition(&ts, "ResidencyCompliant")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("tso-customer-class=eu"), "{message}");
    assert_eq!(
        ts.status.and_then(|st| st.bucket_name),
        None,
        "nothing is claimed"
    );

    // Labelling the namespace is the fix the message names.
    let (ok, _, err) =
        crate::harness::kubectl(&["label", "namespace", &s.ns, "tso-customer-class=eu"]);
    assert!(ok, "{err}");
    s.tenants()
        .patch(
            "outsider",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"storage.tenancy.dev/recheck": "labelled"}}}),
            ),
        )
        .await
        .expect("ask for a recheck");
    s.wait_ready("outsider").await;
}

/// A policy change re-evaluates every bound tenant at once: what can be changed (the bucket
/// policy) is changed; data is never moved, the tenant is reported non-compliant instead, and
/// the policy's status counts it.
#[tokio::test]
async fn policy_change_re_evaluates_bound_tenants() {
    let s = Scenario::new("polchange").await;
    let policy = s.policy(eu_spec()).await;
    // Default 10-minute resync: only the policy watch can explain prompt re-evaluation.
    let op = s.operator(&[]).await;
    s.create(&tenant("west", &policy, json!({"region": "eu-west-1"})))
        .await
        .expect("create");
    s.create(&tenant("central", &policy, json!({})))
        .await
        .expect("create");
    let west = s
        .wait_ready("west")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    let central = s
        .wait_ready("central")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    let policies: kube::Api<tenant_storage_operator::api::ResidencyPolicy> =
        kube::Api::all(s.client.clone());
    eventually("policy counts two compliant tenants", || async {
        let st = policies.get(&policy).await.ok()?.status?;
        (st.bound_tenants == 2 && st.non_compliant_tenants == 0).then_some(())
    })
    .await;

    let change = json!({"spec": {
        "allowedRegions": ["eu-central-1"],
        "transport": {"minTlsVersion": "1.3", "presignedUrlMaxAgeSeconds": 3600}
    }});
    policies
        .patch(
            &policy,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(change),
        )
        .await
        .expect("tighten the policy");

    let ts = s
        .wait_reason("west", "ResidencyCompliant", "RegionNotAllowed")
        .await;
    assert_eq!(
        condition(&ts, "ResidencyCompliant").map(|c| c.status),
        Some(ConditionStatus::False)
    );
    s.wait_event("west", "RegionNotAllowed").await;
    let aws = Aws::root().await;
    aws.s3("eu-west-1")
        .head_bucket()
        .bucket(&west)
        .send()
        .await
        .expect("the data stays where it is");

    let s3 = aws.s3("eu-central-1");
    eventually("stricter transport rules in the bucket policy", || async {
        let p = s3.get_bucket_policy().bucket(&central).send().await.ok()?;
        let text = p.policy()?.to_owned();
        (text.contains("\"s3:TlsVersion\":\"1.3\"")
            && text.contains("\"s3:signatureAge\":\"3600000\""))
        .then_some(())
    })
    .await;

    let status = eventually("policy counts the non-compliant tenant", || async {
        let st = policies.get(&policy).await.ok()?.status?;
        (st.non_compliant_tenants == 1).then_some(st)
    })
    .await;
    assert_eq!(status.bound_tenants, 2);
    let compliant = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Compliant")
        .expect("Compliant");
    assert_eq!(compliant.status, ConditionStatus::False);
    assert!(
        compliant.message.contains(&format!("{}/west", s.ns)),
        "{}",
        compliant.message
    );
    let gauge = op
        .counter(
            "tenant_storage_policy_tenants",
            &[&format!("policy=\"{policy}\""), "state=\"non_compliant\""],
        )
        .await;
    assert_eq!(gauge, 1.0);

    // The refused tenant's data stays locked down, under the policy's current transport rules,
    // and read-only for workloads (the default refusedTenantAccess).
    let west_s3 = aws.s3("eu-west-1");
    let ts = s
        .wait_condition("west", "LockedDown", ConditionStatus::True)
        .await;
    let locked = condition(&ts, "LockedDown").expect("LockedDown");
    assert!(
        locked.message.contains("may only read"),
        "{}",
        locked.message
    );
    let text = west_s3
        .get_bucket_policy()
        .bucket(&west)
        .send()
        .await
        .expect("policy");
    let text = text.policy().unwrap_or_default().to_owned();
    assert!(
        text.contains("DenyWritesOutsidePolicy") && text.contains("\"s3:TlsVersion\":\"1.3\""),
        "{text}"
    );
    let user = Aws::user().await.s3("eu-west-1");
    let write = |key: &'static str| {
        user.put_object()
            .bucket(&west)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
    };
    let refused = write("refused")
        .await
        .expect_err("no writes outside the policy");
    assert_eq!(crate::harness::error_code(&refused), "AccessDenied");
    // Opened by someone: closed again, refused or not.
    west_s3
        .delete_public_access_block()
        .bucket(&west)
        .send()
        .await
        .expect("open");
    s.recheck("west").await;
    eventually(
        "the refused tenant's public access block restored",
        || async {
            let pab = west_s3
                .get_public_access_block()
                .bucket(&west)
                .send()
                .await
                .ok()?;
            let c = pab.public_access_block_configuration()?;
            (c.block_public_policy() == Some(true) && c.restrict_public_buckets() == Some(true))
                .then_some(())
        },
    )
    .await;
    // A policy that lets such data stay writable while it is moved.
    policies
        .patch(
            &policy,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"refusedTenantAccess": "Writable"}})),
        )
        .await
        .expect("allow writes");
    eventually("writes allowed again", || async {
        write("moving").await.ok()
    })
    .await;
}

/// Naming a region later (allowed by CEL, since none was set) never moves the data: the operator
/// refuses a region other than the one the tenant lives in, and creates nothing there.
#[tokio::test]
async fn setting_another_region_later_is_refused_at_reconcile() {
    let s = Scenario::new("moveregion").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("stay", &policy, json!({})))
        .await
        .expect("create");
    let bucket = s
        .wait_ready("stay")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    s.tenants()
        .patch(
            "stay",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"region": "eu-west-1"}})),
        )
        .await
        .expect("the API server allows naming a region for the first time");
    let ts = s
        .wait_reason("stay", "ResidencyCompliant", "RegionChangeRefused")
        .await;
    let message = condition(&ts, "ResidencyCompliant")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("eu-central-1") && message.contains("never moved"),
        "{message}"
    );
    let aws = Aws::root().await;
    aws.s3("eu-central-1")
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("data stays");
    let location = aws
        .s3("eu-central-1")
        .get_bucket_location()
        .bucket(&bucket)
        .send()
        .await
        .expect("location");
    assert_eq!(
        location.location_constraint().map(|c| c.as_str()),
        Some("eu-central-1"),
        "the tenant's only bucket is still in eu-central-1"
    );
    let alias = tenant_storage_operator::plan::naming::key_alias(&s.cluster_id, &s.ns, "stay");
    let key = aws
        .kms("eu-west-1")
        .describe_key()
        .key_id(&alias)
        .send()
        .await;
    assert!(key.is_err(), "no key is created in eu-west-1");
}
