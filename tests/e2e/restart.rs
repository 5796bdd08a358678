use std::collections::BTreeSet;

use serde_json::json;
use tenant_storage_operator::cloud::failpoint;

use crate::harness::{Aws, Operator, Scenario, eu_spec, tenant};

/// Killing the operator mid-provisioning and starting it again converges to one bucket and one
/// key per tenant: nothing duplicated, nothing orphaned.
#[tokio::test]
async fn restart_mid_provisioning_converges_without_duplicates() {
    let s = Scenario::new("restart").await;
    let policy = s.policy(eu_spec()).await;
    let names = ["t1", "t2", "t3", "t4"];
    for name in names {
        s.create(&tenant(name, &policy, json!({})))
            .await
            .expect("create");
    }
    // Crash as soon as the first tenant has claimed its bucket, i.e. in the middle of the work.
    let op = s.operator(&[]).await;
    s.wait_for_a_claim("a tenant claimed its bucket").await;
    op.crash().await;
    let _op = Operator::start(&s.cluster_id, &s.prefix, &[s.ns.as_str()], &[]).await;
    let mut buckets = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for name in names {
        let status = s.wait_ready(name).await.status.expect("status");
        buckets.insert(status.bucket_name.expect("bucket"));
        keys.insert(status.kms_key_arn.expect("key"));
    }
    assert_eq!((buckets.len(), keys.len()), (names.len(), names.len()));

    // AWS holds exactly these: one alias and one key per tenant, no orphan key.
    let aws = Aws::root().await;
    let kms = aws.kms("eu-central-1");
    let prefix = format!("alias/tenant-storage/{}/", s.cluster_id);
    let aliases = kms
        .list_aliases()
        .limit(1000)
        .send()
        .await
        .expect("aliases");
    let ours: BTreeSet<String> = aliases
        .aliases()
        .iter()
        .filter(|a| a.alias_name().is_some_and(|n| n.starts_with(&prefix)))
        .filter_map(|a| a.target_key_id().map(str::to_owned))
        .collect();
    assert_eq!(ours.len(), names.len(), "one alias per tenant");
    let mut tagged = BTreeSet::new();
    let listed = kms.list_keys().limit(1000).send().await.expect("keys");
    for key in listed.keys() {
        let id = key.key_id().unwrap_or_default();
        let tags = kms
            .list_resource_tags()
            .key_id(id)
            .send()
            .await
            .expect("tags");
        if tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == "tenancy.dev/cluster-id" && t.tag_value() == s.cluster_id)
        {
            tagged.insert(id.to_owned());
        }
    }
    assert_eq!(
        tagged, ours,
        "every key of this cluster is a tenant's aliased key"
    );
    let s3 = aws.s3("eu-central-1");
    let listed = s3.list_buckets().send().await.expect("buckets");
    let ours: BTreeSet<String> = listed
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .filter(|n| names.iter().any(|t| *n == s.bucket_for(t)))
        .map(str::to_owned)
        .collect();
    assert_eq!(ours, buckets);
}

/// Restarting with another bucket prefix never switches a tenant to a new, empty bucket.
#[tokio::test]
async fn changed_bucket_prefix_is_refused() {
    let s = Scenario::new("prefix").await;
    let policy = s.policy(eu_spec()).await;
    let op = s.operator(&[]).await;
    s.create(&tenant("p", &policy, json!({})))
        .await
        .expect("create");
    let bucket = s
        .wait_ready("p")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    op.crash().await;

    let _op = Operator::start(&s.cluster_id, "other", &[s.ns.as_str()], &[]).await;
    let ts = s.wait_reason("p", "Ready", "BucketNameChanged").await;
    assert_eq!(
        ts.status.and_then(|st| st.bucket_name),
        Some(bucket),
        "the recorded bucket stays"
    );
    let aws = Aws::root().await;
    let other =
        tenant_storage_operator::plan::naming::bucket_name("other", &s.cluster_id, &s.ns, "p");
    assert!(
        aws.s3("eu-central-1")
            .head_bucket()
            .bucket(&other)
            .send()
            .await
            .is_err(),
        "no second bucket"
    );
}

/// A kill right after each mutating AWS call of provisioning (chosen deterministically by the
/// fail point `TSO_FAILPOINT_EXIT_AFTER`), then a restart: every tenant converges to the same
/// end state, one bucket, one key, one alias and one workload role each, nothing orphaned.
#[tokio::test]
async fn a_kill_after_each_mutating_call_converges() {
    // The access-log bucket's lifecycle is set once, with the first tenant; the rest are calls
    // of every tenant.
    const AFTER: [&str; 14] = [
        "PutBucketLifecycleConfiguration",
        "CreateBucket",
        "PutBucketTagging",
        "PutPublicAccessBlock",
        "PutBucketOwnershipControls",
        "PutBucketEncryption",
        "PutBucketVersioning",
        "PutBucketPolicy",
        "PutBucketLogging",
        "CreateKey",
        "CreateAlias",
        "EnableKeyRotation",
        "CreateRole",
        "PutRolePolicy",
    ];
    let s = Scenario::new("crashpoints").await;
    let policy = s.policy(eu_spec()).await;
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
        // Every tenant has a workload role, so the role's calls are crash points too.
        let access = json!({"access": {"serviceAccounts": ["app"], "level": "ReadWrite"}});
        s.create(&tenant(&name, &policy, access))
            .await
            .expect("create");
        let exit = crashing.exited().await;
        assert_eq!(
            exit.code(),
            Some(failpoint::EXIT),
            "killed right after {operation}"
        );
        names.push(name);
        // The next operator converges everything so far; the next tenant meets it killed.
        let op = Operator::start(&s.cluster_id, &s.prefix, &[s.ns.as_str()], &[]).await;
        for name in &names {
            s.wait_ready(name).await;
        }
        drop(op);
    }

    s.assert_one_of_each(&names).await;
    let aws = Aws::root().await;
    let roles = aws
        .iam()
        .list_roles()
        .path_prefix(format!("/tenant-storage-operator/{}/", s.cluster_id))
        .send()
        .await
        .expect("roles");
    assert_eq!(roles.roles().len(), names.len(), "one role per tenant");
}
