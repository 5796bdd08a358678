//! The operator across control-plane faults: the API server it talks to killed and restarted
//! while it works (etcd keeping every object), watches cut mid-stream, status writes answered
//! 409 Conflict. Nothing may be lost (every change made meanwhile is acted on), duplicated (one
//! key, alias and bucket per tenant) or left behind (a tenant deleted meanwhile is cleaned up).

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;

use crate::harness::{
    ApiServer, Aws, KubeFaultProxy, Operator, Scenario, eu_spec, eventually, tenant,
};

/// The operators' lease: renewed every third of it, and held (acting) until two thirds have
/// passed without a renewal.
const LEASE: &str = "45s";
/// How long the API server stays down: as long as a renewal period, so a renewal always falls
/// into the outage, and a whole period short of the fence, so a loaded machine may take that
/// long to restart the server and a retry still renews in time (with a 20 s lease and a 7 s
/// outage, a leader lost its lease in a full run on a loaded machine).
const OUTAGE: Duration = Duration::from_secs(15);

async fn operator_through(s: &Scenario, kubeconfig: &std::path::Path) -> Operator {
    let kubeconfig = kubeconfig.display().to_string();
    let lease = format!("tso-{}", s.ns);
    Operator::start_with_env(
        &s.cluster_id,
        &s.prefix,
        &[s.ns.as_str()],
        &[
            "--resync-period",
            "20s",
            "--drift-events",
            "off",
            "--leader-election",
            "--lease-name",
            &lease,
            "--lease-duration",
            LEASE,
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .await
}

async fn create_all(s: &Scenario, policy: &str, names: &[String]) {
    for name in names {
        s.create(&tenant(name, policy, json!({"deletionPolicy": "Delete"})))
            .await
            .expect("create");
    }
}

/// Waits until tenant `name` is gone, then checks its bucket is gone too (its key is scheduled
/// for deletion, which `assert_one_of_each` does not count).
async fn assert_cleaned_up(s: &Scenario, name: &str) {
    eventually(&format!("tenant {name} deleted"), || async {
        s.tenants()
            .get_opt(name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let s3 = Aws::root().await.s3("eu-central-1");
    let gone = s3.head_bucket().bucket(s.bucket_for(name)).send().await;
    assert!(gone.is_err(), "the deleted tenant's bucket is gone");
}

/// The operator's API server is killed twice and comes back after [`OUTAGE`]: once while ten
/// tenants converge, once when all are Ready. While it is down, one tenant is deleted and two
/// are created (through the suite's other API server). After each restart the operator catches up
/// on everything (its watches resume; nothing that happened meanwhile is missed), keeps its
/// lease, and leaves exactly one key, alias and bucket per tenant; converged, a resync changes
/// nothing.
#[tokio::test]
async fn tenants_converge_across_api_server_restarts() {
    let s = Scenario::new("apirestart").await;
    let policy = s.policy(eu_spec()).await;
    let mut server = ApiServer::start().await;
    let op = operator_through(&s, &server.kubeconfig("operator")).await;
    let mut names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    create_all(&s, &policy, &names).await;
    s.wait_ready("t0").await;

    server.kill().await;
    s.tenants()
        .delete("t0", &DeleteParams::default())
        .await
        .expect("delete t0");
    let created = vec!["t10".to_owned(), "t11".to_owned()];
    create_all(&s, &policy, &created).await;
    tokio::time::sleep(OUTAGE).await;
    server.start_again().await;
    let back = std::time::Instant::now();

    names.retain(|n| n != "t0");
    names.extend(created);
    for name in &names {
        s.wait_ready(name).await;
    }
    assert_cleaned_up(&s, "t0").await;
    println!(
        "caught up {:?} after the API server came back",
        back.elapsed()
    );
    s.assert_one_of_each(&names).await;

    // Idle this time: the next change is still seen.
    server.kill().await;
    tokio::time::sleep(OUTAGE).await;
    server.start_again().await;
    let back = std::time::Instant::now();
    names.push("t12".to_owned());
    create_all(&s, &policy, &names[names.len() - 1..]).await;
    s.wait_ready("t12").await;
    println!(
        "a new tenant Ready {:?} after the API server came back",
        back.elapsed()
    );
    s.assert_one_of_each(&names).await;

    let (writes, _) = op.calls_over_reconciles(names.len() as f64).await;
    assert_eq!(writes, 0.0, "no mutating call once converged");
    let logs = op.logs();
    assert!(
        logs.contains("leader election: renewal failed"),
        "a renewal fell into an outage"
    );
    assert!(
        !logs.contains("lost the lease"),
        "the leader kept its lease"
    );
}

/// Through a proxy that answers 30% of status writes 409 Conflict and cuts every watch 1 to 4 s
/// after it began, twenty tenants converge with one key, alias and bucket each; then a tenant is
/// deleted and another created, and both are acted on through the cut watches. Converged, a
/// resync changes nothing.
#[tokio::test]
async fn conflicts_and_cut_watches_lose_nothing() {
    let s = Scenario::new("kubefaults").await;
    let policy = s.policy(eu_spec()).await;
    let proxy = KubeFaultProxy::start(0.3, (1, 4), 3).await;
    let op = operator_through(&s, &proxy.kubeconfig("operator")).await;
    let mut names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    create_all(&s, &policy, &names).await;
    for name in &names {
        s.wait_ready(name).await;
    }
    s.assert_one_of_each(&names).await;

    s.tenants()
        .delete("t00", &DeleteParams::default())
        .await
        .expect("delete t00");
    names.retain(|n| n != "t00");
    names.push("t20".to_owned());
    create_all(&s, &policy, &names[names.len() - 1..]).await;
    s.wait_ready("t20").await;
    assert_cleaned_up(&s, "t00").await;
    s.assert_one_of_each(&names).await;

    let (writes, _) = op.calls_over_reconciles(names.len() as f64).await;
    assert_eq!(writes, 0.0, "no mutating call once converged");
    let calls = proxy.calls();
    let count = |fault: &str| calls.iter().filter(|c| c[2] == fault).count();
    println!(
        "through the proxy: {} requests, {} conflicts, {} watches cut",
        calls.len(),
        count("conflict"),
        count("cut")
    );
    assert!(count("conflict") > 0, "status writes were refused");
    assert!(count("cut") > 0, "watches were cut");
}
