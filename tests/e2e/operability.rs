use std::time::{Duration, Instant};

use aws_sdk_s3::types::PublicAccessBlockConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{
    Aws, FaultProxy, Operator, RECONCILES, Scenario, aliased_keys, condition, eu_spec, eventually,
    keys_of_namespace, kubectl, system_namespace, tenant,
};

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

/// Two replicas: only the lease holder reconciles; when it is killed, the other takes over
/// within the lease duration; a replica stopped with SIGTERM hands the lease over at once.
#[tokio::test]
async fn leader_election_fails_over() {
    let s = Scenario::new("ha").await;
    let policy = s.policy(eu_spec()).await;
    let lease = format!("tso-{}", s.ns);
    let args = |id: &'static str| {
        vec![
            "--leader-election".to_owned(),
            "--lease-name".to_owned(),
            lease.clone(),
            "--lease-duration".to_owned(),
            "4s".to_owned(),
            "--identity".to_owned(),
            id.to_owned(),
        ]
    };
    let start = |id: &'static str| {
        let args = args(id);
        let s = &s;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Operator::start(&s.cluster_id, &s.prefix, &[s.ns.as_str()], &args).await
        }
    };
    let a = start("replica-a").await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &system_namespace());
    eventually("replica-a leads", || async {
        (holder(&leases, &lease).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = start("replica-b").await;

    s.create(&tenant("first", &policy, json!({})))
        .await
        .expect("create");
    s.wait_ready("first").await;
    assert_eq!(
        b.counter(RECONCILES, &[]).await,
        0.0,
        "a standby never reconciles"
    );
    assert!(a.counter(RECONCILES, &[]).await > 0.0);

    // Crash the leader: the standby takes over once the lease expires.
    a.crash().await;
    let crashed = Instant::now();
    eventually("replica-b leads", || async {
        (holder(&leases, &lease).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let takeover = crashed.elapsed();
    // Lease duration, plus the standby's retry period (a quarter of it), plus slack for a
    // loaded 2-core CI machine running every test at once.
    println!("leader takeover after a crash: {takeover:?} (lease 4s)");
    assert!(
        takeover <= Duration::from_secs(4 + 1 + 5),
        "takeover took {takeover:?}"
    );
    s.create(&tenant("second", &policy, json!({})))
        .await
        .expect("create");
    s.wait_ready("second").await;

    // A graceful stop releases the lease, so a new replica leads without waiting for expiry.
    assert!(b.terminate().await, "SIGTERM ends the operator cleanly");
    let released = holder(&leases, &lease).await;
    assert_eq!(released, None, "the lease is released on SIGTERM");
    let _c = start("replica-c").await;
    eventually("replica-c leads", || async {
        (holder(&leases, &lease).await.as_deref() == Some("replica-c")).then_some(())
    })
    .await;
}

/// A leader paused (SIGSTOP, as a frozen VM) past its lease while the standby takes over
/// starts no mutating AWS call once it resumes: every call it checks after the resume is held
/// back by its own clocks (its log shows no call sent under the lease after the resume), and it
/// exits. It is paused in the middle of provisioning, so it resumes with work under way; the old
/// leader reaches AWS through a logging proxy, which shows what it still transmitted (calls it
/// had checked before the pause: what the fence cannot stop, see `src/fence.rs`).
#[tokio::test]
async fn a_paused_leader_resumes_without_acting() {
    let s = Scenario::new("fenced").await;
    let policy = s.policy(eu_spec()).await;
    let lease = format!("tso-{}", s.ns);
    // The old leader's window to the cloud: no faults, only a log of what it sends.
    let seen = FaultProxy::start(0.0, 1).await;
    let start = |id: &'static str, endpoint: Option<&str>| {
        let s = &s;
        let lease = lease.clone();
        let vars: Vec<(&str, String)> = endpoint
            .map(|url| ("TSO_AWS_ENDPOINT_URL", url.to_owned()))
            .into_iter()
            .collect();
        async move {
            let args = [
                "--leader-election",
                "--lease-name",
                &lease,
                "--lease-duration",
                "8s",
                "--identity",
                id,
            ];
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Operator::start_with_env(&s.cluster_id, &s.prefix, &[s.ns.as_str()], &args, &vars).await
        }
    };
    let mut a = start("replica-a", Some(&seen.url)).await;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &system_namespace());
    let leads = |id: &'static str| {
        let leases = leases.clone();
        let lease = lease.clone();
        async move { (holder(&leases, &lease).await.as_deref() == Some(id)).then_some(()) }
    };
    eventually("replica-a leads", || leads("replica-a")).await;
    let _b = start("replica-b", None).await;
    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    for name in &names {
        s.create(&tenant(name, &policy, json!({})))
            .await
            .expect("create");
    }
    s.wait_for_a_claim("the leader is at work").await;
    a.signal("STOP");
    let paused = Instant::now();
    assert!(
        leads("replica-a").await.is_some(),
        "replica-a still held the lease when paused"
    );
    eventually("replica-b leads", || leads("replica-b")).await;
    println!(
        "takeover from a paused leader: {:?} (lease 8s)",
        paused.elapsed()
    );
    for name in &names {
        s.wait_ready(name).await;
    }
    let sent_before = seen.calls().len();
    let logged_before = a.logs().len();
    a.signal("CONT");
    let exit = a.exited().await;
    assert!(!exit.success(), "the old leader stops: {exit:?}");
    let resumed = a.logs().split_off(logged_before);
    assert!(resumed.contains("lost the lease"), "{resumed}");
    assert!(
        !resumed.contains("sending under the lease"),
        "a mutating call was checked and sent after the resume: {resumed}"
    );
    let in_flight: Vec<String> = seen
        .calls()
        .split_off(sent_before)
        .into_iter()
        .filter(|[service, operation, method, ..]| match service.as_str() {
            "s3" => !matches!(method.as_str(), "GET" | "HEAD"),
            _ => !["Get", "List", "Describe"]
                .iter()
                .any(|read| operation.starts_with(read)),
        })
        .map(|[service, operation, ..]| format!("{service} {operation}"))
        .collect();
    println!(
        "after the resume: {} mutating calls held back, {} transmitted that were checked before the pause: {in_flight:?}",
        resumed.matches("lease has run out").count(),
        in_flight.len()
    );

    let kms = Aws::root().await.kms("eu-central-1");
    let prefix = format!("alias/tenant-storage/{}/{}/", s.cluster_id, s.ns);
    let (aliased, aliases) = aliased_keys(&kms, &prefix).await;
    assert_eq!(aliases, names.len(), "one alias per tenant");
    let keys = keys_of_namespace(&kms, &s.ns).await;
    assert_eq!(
        aliased.len(),
        names.len(),
        "each tenant's alias on its own key"
    );
    assert!(
        aliased.is_subset(&keys),
        "every alias on a key of this namespace"
    );
    // A key without an alias can be left by a takeover in the middle of a key's creation (seen
    // once in CI: the open part of issue 13); counted, not hidden.
    println!(
        "keys without an alias after the takeover: {}",
        keys.len() - aliased.len()
    );
}

/// The recheck annotation forces an immediate drift check; the pause annotation stops all
/// reconciliation of one object and says so in status.
#[tokio::test]
async fn recheck_and_pause_annotations() {
    let s = Scenario::new("annot").await;
    let policy = s.policy(eu_spec()).await;
    // Default 10-minute resync: only the annotation can explain a prompt correction.
    let op = s.operator(&[]).await;
    s.create(&tenant("t", &policy, json!({})))
        .await
        .expect("create");
    let bucket = s
        .wait_ready("t")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");
    let s3 = Aws::root().await.s3("eu-central-1");
    let api = s.tenants();
    let annotate = |key: &'static str, value: &'static str| {
        let api = api.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {key: value}}});
            api.patch("t", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("annotate");
        }
    };

    s3.delete_bucket_policy()
        .bucket(&bucket)
        .send()
        .await
        .expect("drop policy");
    annotate("storage.tenancy.dev/recheck", "r1").await;
    eventually("policy restored on recheck", || async {
        s3.get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    eventually("recheck acknowledged", || async {
        let ts = api.get("t").await.ok()?;
        (ts.status?.last_recheck.as_deref() == Some("r1")).then_some(())
    })
    .await;

    annotate("storage.tenancy.dev/paused", "true").await;
    let ts = s.wait_condition("t", "Paused", ConditionStatus::True).await;
    assert!(condition(&ts, "Paused").is_some_and(|c| c.message.contains("remove the annotation")));
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
    let before = op.counter(RECONCILES, &[]).await;
    annotate("storage.tenancy.dev/recheck", "r2").await;
    eventually("the paused object was reconciled", || async {
        (op.counter(RECONCILES, &[]).await > before).then_some(())
    })
    .await;
    let pab = s3
        .get_public_access_block()
        .bucket(&bucket)
        .send()
        .await
        .expect("pab");
    assert_eq!(
        pab.public_access_block_configuration()
            .and_then(|c| c.block_public_acls()),
        Some(false),
        "a paused object is not touched"
    );
    assert_eq!(
        api.get("t")
            .await
            .expect("get")
            .status
            .and_then(|st| st.last_recheck)
            .as_deref(),
        Some("r1")
    );

    annotate("storage.tenancy.dev/paused", "false").await;
    s.wait_condition("t", "Paused", ConditionStatus::False)
        .await;
    eventually("public access blocked after resuming", || async {
        let pab = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .ok()?;
        (pab.public_access_block_configuration()?.block_public_acls() == Some(true)).then_some(())
    })
    .await;
}

/// JSON logs carry the tenant (`namespace`, `tenant`) on every line about it, and never a
/// credential.
#[tokio::test]
async fn json_logs_name_the_tenant_and_hold_no_secrets() {
    let s = Scenario::new("logs").await;
    let policy = s.policy(eu_spec()).await;
    let op = Operator::start_with_env(
        &s.cluster_id,
        &s.prefix,
        &[s.ns.as_str()],
        &["--log-format", "json"],
        &[("RUST_LOG", "debug")],
    )
    .await;
    // The secret access key of the IAM user the operator runs as.
    let (_, secret) = crate::harness::operator_keys(&s.cluster_id, &s.prefix).await;
    s.create(&tenant("quiet", &policy, json!({})))
        .await
        .expect("create");
    s.wait_ready("quiet").await;
    s.wait_event("quiet", "Provisioned").await;

    let logs = op.logs();
    assert!(!logs.is_empty());
    assert!(
        !logs.contains(&secret),
        "the AWS secret key appears in the logs"
    );
    // The operator's own credential: its service account token.
    let kubeconfig = std::fs::read_to_string(crate::harness::env("TSO_KUBECONFIG_OPERATOR"))
        .expect("kubeconfig");
    let token = kubeconfig
        .split("token: ")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("a token in the operator's kubeconfig");
    assert!(token.len() >= 32, "{token}");
    assert!(
        !logs.contains(token),
        "the service account token appears in the logs"
    );
    let mut about_tenant = 0;
    for line in logs.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if record["message"] == "provisioned" {
            let span = &record["span"];
            assert!(
                span["namespace"] == s.ns.as_str() && span["tenant"] == "quiet",
                "a line about the tenant lacks namespace/tenant: {line}"
            );
            about_tenant += 1;
        }
    }
    assert_eq!(about_tenant, 1, "one 'provisioned' line");
}

/// `kubectl get tenancy` lists every kind of the operator.
#[tokio::test]
async fn tenancy_category_lists_all_kinds() {
    let s = Scenario::new("category").await;
    let policy = s.policy(eu_spec()).await;
    s.create(&tenant("listed", &policy, json!({})))
        .await
        .expect("create");
    let (ok, out, err) = kubectl(&["get", "tenancy", "-A"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("tenantstorage.storage.tenancy.dev/listed"),
        "{out}"
    );
    assert!(
        out.contains(&format!("residencypolicy.storage.tenancy.dev/{policy}")),
        "{out}"
    );
}
