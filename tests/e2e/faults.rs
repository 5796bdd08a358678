//! The operator under injected AWS faults (`testenv/faults/proxy.py` between it and the
//! emulator): throttling and server errors, connection resets, lost answers and latency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{Aws, FaultProxy, Operator, Scenario, eu_spec, keys_of_namespace, tenant};

const TENANTS: usize = 50;

/// With a fifth of every AWS call failing (each of the four faults alike, on every service and
/// operation), fifty tenants all become Ready, with exactly one bucket, one key and one alias
/// each (a lost `CreateKey` or `CreateBucket` answer leaves nothing behind), and once converged a
/// full resync changes nothing.
#[tokio::test]
async fn fifty_tenants_converge_under_a_fifth_of_calls_failing() {
    let s = Scenario::new("faults").await;
    let policy = s.policy(eu_spec()).await;
    let proxy = FaultProxy::start(0.2, 11).await;
    let op = Operator::start_with_env(
        &s.cluster_id,
        &s.prefix,
        &[s.ns.as_str()],
        // The resync is what is measured: no drift events stretching it.
        &["--resync-period", "20s", "--drift-events", "off"],
        &[("TSO_AWS_ENDPOINT_URL", proxy.url.as_str())],
    )
    .await;
    let names: Vec<String> = (0..TENANTS).map(|i| format!("t{i:02}")).collect();
    let started = Instant::now();
    for name in &names {
        s.create(&tenant(name, &policy, json!({})))
            .await
            .expect("create");
    }
    // Faults slow convergence down; the bound is generous for a loaded 2-core machine.
    let deadline = started + Duration::from_secs(600);
    let mut ready = BTreeSet::new();
    while ready.len() < TENANTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {TENANTS} tenants Ready after {:?}",
            ready.len(),
            started.elapsed()
        );
        for t in s
            .tenants()
            .list(&Default::default())
            .await
            .expect("list")
            .items
        {
            let is_ready = t.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
            });
            if is_ready {
                ready.insert(t.metadata.name.unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{TENANTS} tenants Ready under faults in {:?}",
        started.elapsed()
    );

    // AWS holds exactly one of each per tenant: none left by a lost answer.
    s.assert_one_of_each(&names).await;

    // Converged: a full resync, under the same faults, changes nothing.
    let (writes, reads) = op.calls_over_reconciles(TENANTS as f64).await;
    assert_eq!(writes, 0.0, "no mutating call once converged");
    println!("per resync reconcile: {reads:.1} read attempts");

    // The fault matrix: what was injected where.
    let mut matrix: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for [service, operation, _, fault, _] in proxy.calls() {
        *matrix
            .entry((service, operation))
            .or_default()
            .entry(fault)
            .or_default() += 1;
    }
    let faulted: usize = matrix
        .values()
        .flat_map(|f| f.iter().filter(|(k, _)| *k != "-").map(|(_, n)| n))
        .sum();
    let total: usize = matrix.values().flat_map(|f| f.values()).sum();
    println!("faults injected: {faulted} of {total} calls");
    for ((service, operation), faults) in &matrix {
        println!("{service}\t{operation}\t{faults:?}");
    }
    assert!(
        faulted * 10 >= total,
        "the proxy injected faults: {faulted} of {total}"
    );
    drop(op);
}

/// The answer to `CreateKey` (and to `CreateAlias`, `CreateBucket`) is lost: the call reached
/// AWS and succeeded, the operator never heard. The tenant still ends with exactly one key,
/// found again by its tags (the SDK does not retry `CreateKey`, which would make a second key).
#[tokio::test]
async fn a_lost_create_key_answer_leaves_one_key() {
    let s = Scenario::new("lostkey").await;
    let policy = s.policy(eu_spec()).await;
    let proxy = FaultProxy::start_with(0.0, 1, &["CreateKey", "CreateAlias", "PUT"]).await;
    let _op = Operator::start_with_env(
        &s.cluster_id,
        &s.prefix,
        &[s.ns.as_str()],
        &[],
        &[("TSO_AWS_ENDPOINT_URL", proxy.url.as_str())],
    )
    .await;
    s.create(&tenant("t", &policy, json!({})))
        .await
        .expect("create");
    let status = s.wait_ready("t").await.status.expect("status");
    let lost: BTreeSet<String> = proxy
        .calls()
        .into_iter()
        .filter(|[_, _, _, fault, _]| fault == "lost")
        .map(|[_, operation, _, _, status]| format!("{operation} {status}"))
        .collect();
    assert_eq!(
        lost,
        BTreeSet::from(["CreateKey 200", "CreateAlias 200", "PUT 200"].map(String::from)),
        "each answer was lost after the call succeeded"
    );
    let kms = Aws::root().await.kms("eu-central-1");
    let arn = status.kms_key_arn.expect("key");
    let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
    assert_eq!(
        keys_of_namespace(&kms, &s.ns).await,
        BTreeSet::from([id]),
        "one key, the tenant's"
    );
}
