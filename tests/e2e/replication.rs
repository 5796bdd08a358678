//! Replicas: a tenant's copy in a second allowed region, fed by S3 replication, locked down like
//! the primary, kept when the policy stops allowing it.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, ServerSideEncryption};
use serde_json::json;
use tenant_storage_operator::api::{ConditionStatus, ReplicaStatus, ResidencyPolicySpec};
use tenant_storage_operator::cloud::failpoint;
use tenant_storage_operator::plan::PolicyDocument;
use tenant_storage_operator::plan::policy_document::iam_document_text;

use crate::harness::{
    Aws, CALLS, Operator, Scenario, aliased_keys, bucket_tags, condition, error_code, eventually,
    keys_of_namespace, tenant,
};

const PRIMARY: &str = "eu-central-1";
const REPLICA: &str = "eu-west-1";

fn replicated_spec() -> ResidencyPolicySpec {
    serde_json::from_value(json!({
        "jurisdiction": "EU",
        "allowedRegions": [PRIMARY, REPLICA],
        "defaultRegion": PRIMARY,
        "replication": {"regions": [REPLICA], "defaultRegion": REPLICA, "required": true},
    }))
    .expect("policy spec")
}

/// A replicated tenant, Ready and Replicated: its primary bucket and its replica.
async fn replicated_tenant(s: &Scenario, name: &str, policy: &str) -> (String, ReplicaStatus) {
    s.create(&tenant(name, policy, json!({})))
        .await
        .expect("create tenant");
    let ts = s
        .wait_condition(name, "Replicated", ConditionStatus::True)
        .await;
    let status = ts.status.expect("status");
    (
        status.bucket_name.expect("bucket"),
        status.replica.expect("replica in status"),
    )
}

async fn body(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.body.collect().await.ok()?.into_bytes().to_vec())
}

#[tokio::test]
async fn a_replicated_tenant_has_a_locked_down_copy_in_its_second_region() {
    let s = Scenario::new("repl").await;
    let policy = s.policy(replicated_spec()).await;
    let _op = s.operator(&[]).await;
    let (primary, replica) = replicated_tenant(&s, "data", &policy).await;
    assert_eq!(replica.region, REPLICA);
    assert_eq!(replica.state, "Replicating");
    let replica_key = replica.kms_key_arn.clone().expect("replica key");
    assert!(
        replica_key.starts_with(&format!("arn:aws:kms:{REPLICA}:")),
        "{replica_key}"
    );
    let ts = s.get("data").await;
    let primary_key = ts
        .status
        .and_then(|st| st.kms_key_arn)
        .expect("primary key");
    assert_ne!(primary_key, replica_key, "the replica has its own key");

    // The replica: in its region, locked down like the primary, encrypted with its own key.
    let aws = Aws::root().await;
    let s3 = aws.s3(REPLICA);
    let bucket = &replica.bucket_name;
    let head = s3
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("replica exists");
    assert_eq!(head.bucket_region(), Some(REPLICA));
    let tags = bucket_tags(&s3, bucket).await;
    assert_eq!(
        tags.get("tenancy.dev/copy").map(String::as_str),
        Some("replica")
    );
    assert_eq!(
        tags.get("tenancy.dev/name").map(String::as_str),
        Some("data")
    );
    let versioning = s3
        .get_bucket_versioning()
        .bucket(bucket)
        .send()
        .await
        .expect("versioning");
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));
    let pab = s3
        .get_public_access_block()
        .bucket(bucket)
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
    let enc = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .expect("encryption");
    let rule = &enc
        .server_side_encryption_configuration()
        .expect("sse")
        .rules()[0];
    let default = rule
        .apply_server_side_encryption_by_default()
        .expect("default");
    assert_eq!(default.sse_algorithm(), &ServerSideEncryption::AwsKms);
    assert_eq!(default.kms_master_key_id(), Some(replica_key.as_str()));
    let policy_text = s3
        .get_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .expect("policy");
    let policy_text = policy_text.policy().unwrap_or_default();
    for sid in [
        "DenyInsecureTransport",
        "DenyStalePresignedUrls",
        "DenyWritesToReplica",
        "DenyOtherPrincipals",
    ] {
        assert!(policy_text.contains(sid), "{sid} missing: {policy_text}");
    }

    // The rule on the primary: everything, delete markers too, re-encrypted with the replica's key.
    let config = aws
        .s3(PRIMARY)
        .get_bucket_replication()
        .bucket(&primary)
        .send()
        .await
        .expect("replication");
    let config = config.replication_configuration().expect("configuration");
    let role_arn = replica
        .replication_role_arn
        .clone()
        .expect("role in status");
    assert_eq!(config.role(), role_arn);
    let [rule] = config.rules() else {
        panic!("one rule: {config:?}")
    };
    let destination = rule.destination().expect("destination");
    assert_eq!(destination.bucket(), format!("arn:aws:s3:::{bucket}"));
    assert_eq!(
        destination
            .encryption_configuration()
            .and_then(|e| e.replica_kms_key_id()),
        Some(replica_key.as_str())
    );
    assert!(
        rule.delete_marker_replication()
            .and_then(|d| d.status())
            .is_some_and(|s| s.as_str() == "Enabled")
    );

    // The role: S3's only, the replication actions on exactly these two buckets.
    let role_name = role_arn.rsplit('/').next().expect("role name");
    let iam = aws.iam();
    let role = iam
        .get_role()
        .role_name(role_name)
        .send()
        .await
        .expect("role");
    let trust = role.role().and_then(|r| r.assume_role_policy_document());
    let trust = iam_document_text(trust.unwrap_or_default());
    assert!(
        trust.contains("\"Service\":\"s3.amazonaws.com\""),
        "{trust}"
    );
    let inline = iam
        .get_role_policy()
        .role_name(role_name)
        .policy_name("tenant-storage-access")
        .send()
        .await
        .expect("inline policy");
    let inline = PolicyDocument::parse(&iam_document_text(inline.policy_document()))
        .expect("a policy document");
    let resources: Vec<&String> = inline
        .statements
        .iter()
        .flat_map(|s| s.resources_named())
        .collect();
    assert_eq!(
        resources,
        [
            &format!("arn:aws:s3:::{primary}"),
            &format!("arn:aws:s3:::{primary}/*"),
            &format!("arn:aws:s3:::{bucket}/*"),
            &primary_key,
            &replica_key,
        ],
        "exactly the two buckets and their keys"
    );
    let actions: Vec<&String> = inline
        .statements
        .iter()
        .flat_map(|s| s.actions_named())
        .collect();
    assert!(actions.iter().all(|a| !a.contains('*')), "{actions:?}");

    // Data written to the primary appears in the replica; a delete marker follows it.
    let user = Aws::user().await;
    user.s3(PRIMARY)
        .put_object()
        .bucket(&primary)
        .key("users/1/profile.json")
        .body(ByteStream::from_static(b"{\"name\":\"one\"}"))
        .send()
        .await
        .expect("write to the primary");
    let copied = eventually("the object replicated", || {
        body(&s3, bucket, "users/1/profile.json")
    })
    .await;
    assert_eq!(copied, b"{\"name\":\"one\"}");
    user.s3(PRIMARY)
        .delete_object()
        .bucket(&primary)
        .key("users/1/profile.json")
        .send()
        .await
        .expect("delete");
    eventually("the delete marker replicated", || async {
        body(&s3, bucket, "users/1/profile.json")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let versions = s3
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .expect("versions");
    assert_eq!(
        versions.versions().len(),
        1,
        "the data is still in the replica's history"
    );
    assert_eq!(versions.delete_markers().len(), 1);

    // Nobody writes to the replica directly, not even a principal allowed s3:*.
    let direct = user
        .s3(REPLICA)
        .put_object()
        .bucket(bucket)
        .key("direct")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    let e = direct.expect_err("a direct write to the replica is refused");
    assert_eq!(error_code(&e), "AccessDenied");

    // The compliance report reads the copy from AWS.
    let report: serde_json::Value =
        serde_json::from_str(&crate::report::report(&s.ns, "json")).expect("JSON report");
    let line = &report["tenants"][0];
    for check in ["replicaRegion", "replicaEncrypted"] {
        assert_eq!(line[check]["pass"], true, "{check}: {}", line[check]);
    }
    assert!(
        line["replicaEncrypted"]["evidence"]
            .as_str()
            .unwrap_or_default()
            .contains(&replica_key)
    );
}

#[tokio::test]
async fn replica_drift_is_corrected_and_a_region_removed_stops_replication_but_keeps_the_data() {
    let s = Scenario::new("repldrift").await;
    let policy = s.policy(replicated_spec()).await;
    let _op = s.operator(&[]).await;
    let (primary, replica) = replicated_tenant(&s, "data", &policy).await;
    let aws = Aws::root().await;
    let (source, s3) = (aws.s3(PRIMARY), aws.s3(REPLICA));
    let bucket = replica.bucket_name.clone();

    // Someone removes the replication rule and opens the replica's policy.
    source
        .delete_bucket_replication()
        .bucket(&primary)
        .send()
        .await
        .expect("remove rule");
    s3.delete_bucket_policy()
        .bucket(&bucket)
        .send()
        .await
        .expect("remove policy");
    s.recheck("data").await;
    eventually("the rule and the replica's policy restored", || async {
        source
            .get_bucket_replication()
            .bucket(&primary)
            .send()
            .await
            .ok()?;
        let policy = s3.get_bucket_policy().bucket(&bucket).send().await.ok()?;
        policy
            .policy()?
            .contains("DenyWritesToReplica")
            .then_some(())
    })
    .await;

    // The replica's key disabled by hand: reported, never re-enabled behind the human's back.
    let replica_key = replica.kms_key_arn.clone().expect("replica key");
    let kms = aws.kms(REPLICA);
    kms.disable_key()
        .key_id(&replica_key)
        .send()
        .await
        .expect("disable key");
    s.recheck("data").await;
    let ts = s.wait_reason("data", "Replicated", "KeyNotUsable").await;
    assert_eq!(
        condition(&ts, "Ready").map(|c| c.status),
        Some(ConditionStatus::True),
        "the primary is still fine"
    );
    kms.enable_key()
        .key_id(&replica_key)
        .send()
        .await
        .expect("enable key");
    s.recheck("data").await;
    s.wait_condition("data", "Replicated", ConditionStatus::True)
        .await;

    // Data in the replica, then the policy stops allowing its region.
    source
        .put_object()
        .bucket(&primary)
        .key("kept")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .expect("write");
    eventually("replicated", || body(&s3, &bucket, "kept")).await;
    let policies: kube::Api<tenant_storage_operator::api::ResidencyPolicy> =
        kube::Api::all(s.client.clone());
    let patch =
        json!({"spec": {"replication": {"regions": [], "required": false, "defaultRegion": null}}});
    policies
        .patch(
            &policy,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("narrow the policy");
    let ts = s
        .wait_reason("data", "Replicated", "ResidencyViolation")
        .await;
    let compliant = condition(&ts, "ResidencyCompliant").expect("ResidencyCompliant");
    assert_eq!(
        (compliant.status, compliant.reason.as_str()),
        (ConditionStatus::False, "ResidencyViolation")
    );
    let status = ts.status.expect("status");
    let kept = status.replica.expect("the replica is still recorded");
    assert_eq!(
        (kept.state.as_str(), kept.bucket_name.as_str()),
        ("OutsidePolicy", bucket.as_str())
    );
    let rule = source
        .get_bucket_replication()
        .bucket(&primary)
        .send()
        .await;
    assert_eq!(
        rule.map(|_| ()).map_err(|e| error_code(&e)),
        Err("ReplicationConfigurationNotFoundError".to_owned())
    );
    let report: serde_json::Value =
        serde_json::from_str(&crate::report::report(&s.ns, "json")).expect("JSON report");
    let placed = &report["tenants"][0]["replicaRegion"];
    assert_eq!(placed["pass"], false, "{placed}");
    assert!(
        placed["evidence"]
            .as_str()
            .unwrap_or_default()
            .contains("replication regions: []"),
        "{placed}"
    );
    assert_eq!(
        body(&s3, &bucket, "kept").await.as_deref(),
        Some(&b"kept"[..]),
        "the data stays"
    );
    // Still locked down: its policy, opened again, is restored.
    s3.delete_bucket_policy()
        .bucket(&bucket)
        .send()
        .await
        .expect("remove policy");
    s.recheck("data").await;
    eventually("the kept replica's policy restored", || async {
        let policy = s3.get_bucket_policy().bucket(&bucket).send().await.ok()?;
        policy
            .policy()?
            .contains("DenyInsecureTransport")
            .then_some(())
    })
    .await;
    // No role left to replicate with.
    let role_name = replica.replication_role_arn.expect("role");
    let role_name = role_name.rsplit('/').next().expect("name");
    let role = aws.iam().get_role().role_name(role_name).send().await;
    assert!(role.is_err(), "the replication role is deleted: {role:?}");
}

#[tokio::test]
async fn a_replica_name_held_by_another_account_is_never_touched() {
    let s = Scenario::new("replconf").await;
    let policy = s.policy(replicated_spec()).await;
    let name = tenant_storage_operator::plan::naming::replica_bucket_name(
        &s.prefix,
        &s.cluster_id,
        &s.ns,
        "data",
        REPLICA,
    );
    let other = Aws::account_root("222233334444").await.s3(REPLICA);
    other
        .create_bucket()
        .bucket(&name)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(REPLICA))
                .build(),
        )
        .send()
        .await
        .expect("another account takes the name");
    let _op = s.operator(&[]).await;
    s.create(&tenant("data", &policy, json!({})))
        .await
        .expect("create");
    let ts = s.wait_reason("data", "Replicated", "BucketConflict").await;
    assert_eq!(
        condition(&ts, "Ready").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    let primary = ts.status.and_then(|st| st.bucket_name).expect("primary");
    let rule = Aws::root()
        .await
        .s3(PRIMARY)
        .get_bucket_replication()
        .bucket(&primary)
        .send()
        .await;
    assert!(
        rule.is_err(),
        "nothing replicates into a bucket that is not ours"
    );
    let tags = other.get_bucket_tagging().bucket(&name).send().await;
    assert!(
        tags.map(|t| t.tag_set().is_empty()).unwrap_or(true),
        "the other account's bucket is untouched"
    );
}

/// A replicated tenant's no-op resync: no write, and the replica costs at most what the primary
/// does again (its key, its bucket's settings; the rule is read with the primary's).
#[tokio::test]
async fn a_no_op_resync_of_a_replicated_tenant_writes_nothing() {
    let s = Scenario::new("replnoop").await;
    let mut spec = replicated_spec();
    spec.access_logging.enabled = false;
    let policy = s.policy(spec).await;
    let op = s
        .operator(&["--resync-period", "1s", "--drift-events", "off"])
        .await;
    replicated_tenant(&s, "data", &policy).await;
    let writes = op.counter(CALLS, &["mutating=\"true\""]).await;
    let reads = op.counter(CALLS, &["mutating=\"false\""]).await;
    println!(
        "replnoop: AWS calls to converge one replicated tenant: {writes} mutating, {reads} reads"
    );
    let (written, per_resync) = op.calls_over_reconciles(3.0).await;
    println!("replnoop: AWS read calls per no-op resync of a replicated tenant: {per_resync}");
    assert_eq!(written, 0.0, "no-op resyncs must not mutate anything");
    assert!(
        per_resync <= 16.0,
        "{per_resync} reads per resync (a primary alone: 8)"
    );
}

/// A kill right after each mutating AWS call of a replica's provisioning (the replica's key and
/// bucket calls are the second of their kind, after the primary's), then a restart: every
/// tenant ends with one replica bucket, one key with its alias in the replica's region, one
/// replication role and its rule; nothing duplicated, nothing orphaned.
#[tokio::test]
async fn a_kill_after_each_replica_write_converges_without_duplicates() {
    const AFTER: [&str; 13] = [
        "CreateKey:2",
        "CreateAlias:2",
        "EnableKeyRotation:2",
        "CreateBucket:2",
        "PutBucketTagging:2",
        "PutPublicAccessBlock:2",
        "PutBucketOwnershipControls:2",
        "PutBucketEncryption:2",
        "PutBucketVersioning:2",
        "PutBucketPolicy:2",
        "CreateRole",
        "PutRolePolicy",
        "PutBucketReplication",
    ];
    let s = Scenario::new("replkill").await;
    let mut spec = replicated_spec();
    spec.access_logging.enabled = false;
    let policy = s.policy(spec).await;
    let mut names = Vec::new();
    for (i, operation) in AFTER.iter().enumerate() {
        let name = format!("t{i:02}");
        let mut crashing = Operator::start_with_env(
            &s.cluster_id,
            &s.prefix,
            &[s.ns.as_str()],
            &[],
            &[(failpoint::VARIABLE, operation)],
        )
        .await;
        s.create(&tenant(&name, &policy, json!({})))
            .await
            .expect("create");
        let exit = crashing.exited().await;
        assert_eq!(
            exit.code(),
            Some(failpoint::EXIT),
            "killed right after {operation}"
        );
        names.push(name);
        let op = Operator::start(&s.cluster_id, &s.prefix, &[s.ns.as_str()], &[]).await;
        for name in &names {
            s.wait_condition(name, "Replicated", ConditionStatus::True)
                .await;
        }
        drop(op);
    }

    let aws = Aws::root().await;
    let kms = aws.kms(REPLICA);
    let alias_prefix = format!("alias/tenant-storage/{}/{}/", s.cluster_id, s.ns);
    let (aliased, aliases) = aliased_keys(&kms, &alias_prefix).await;
    assert_eq!(
        (aliases, aliased.len()),
        (names.len(), names.len()),
        "one alias and key per replica"
    );
    assert_eq!(
        keys_of_namespace(&kms, &s.ns).await,
        aliased,
        "no key without its alias"
    );
    let listed = aws
        .s3(REPLICA)
        .list_buckets()
        .send()
        .await
        .expect("buckets");
    let replicas: Vec<&str> = listed
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .filter(|n| n.starts_with(&format!("{}-r-{}-", s.prefix, s.ns)))
        .collect();
    assert_eq!(
        replicas.len(),
        names.len(),
        "one replica bucket per tenant: {replicas:?}"
    );
    let roles = aws
        .iam()
        .list_roles()
        .path_prefix(format!("/tenant-storage-operator/{}/", s.cluster_id))
        .send()
        .await
        .expect("roles");
    assert_eq!(
        roles.roles().len(),
        names.len(),
        "one replication role per tenant"
    );
}
