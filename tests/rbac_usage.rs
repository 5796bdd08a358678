//! Every right the chart grants is used. The test API server records each authorization
//! decision it makes for a non-admin identity (which binding, role and rule allowed it); after
//! the whole suite has run as the chart's service accounts and a tenant editor,
//! `scripts/test.sh` runs this test, which fails for any (rule, resource, verb) of the chart's
//! roles that no request needed: such a right is to be removed. The roles the chart aggregates
//! into the built-in `edit` and `view` are left out: they give people the usual verbs of those
//! roles on this project's kinds, and tests/e2e/hostile.rs shows what they do not give.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh"))
}

/// The chart's objects as the test environment applied them.
fn chart() -> Vec<Value> {
    let path = format!("{}/k8s/chart.yaml", env("TSO_RUN"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

/// Rules of every role in the cluster now, by `Kind/name` (aggregated roles included).
fn cluster_roles() -> BTreeMap<String, Vec<Value>> {
    let mut roles = BTreeMap::new();
    for kind in ["clusterroles", "roles"] {
        let out = std::process::Command::new("kubectl")
            .args(["get", kind, "-A", "-o", "json"])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let kind = item["kind"].as_str().unwrap_or_default();
            let rules = item["rules"].as_array().cloned().unwrap_or_default();
            let key = match item["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{kind}/{ns}/{name}"),
                None => format!("{kind}/{name}"),
            };
            roles.insert(key, rules);
        }
    }
    roles
}

#[test]
#[ignore = "run by scripts/test.sh after the whole suite, whose decisions it reads"]
fn every_rule_the_chart_grants_is_used() {
    let roles = cluster_roles();
    // (role, rule content, resource, verb) of every allowed decision, resolved through the role
    // that allowed it: two roles with the same rule are each shown used on their own.
    let mut used = BTreeSet::new();
    let log = format!("{}/k8s/authz.log", env("TSO_RUN"));
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log}: {e}"));
    let mut decisions = 0;
    for line in text.lines() {
        let d: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if d["allowed"] != Value::Bool(true) || d["by"].is_null() {
            continue;
        }
        decisions += 1;
        // `ClusterRole/<name>` or `Role/<namespace>/<name>`, and the rule's index in it.
        let role = d["by"]["role"].as_str().unwrap_or_default();
        let index = d["by"]["rule"].as_u64().unwrap_or(u64::MAX) as usize;
        let Some(rule) = roles.get(role).and_then(|rules| rules.get(index)) else {
            continue;
        };
        let resource = match d["subresource"].as_str().filter(|s| !s.is_empty()) {
            Some(sub) => format!("{}/{sub}", d["resource"].as_str().unwrap_or_default()),
            None => d["resource"].as_str().unwrap_or_default().to_owned(),
        };
        let verb = d["verb"].as_str().unwrap_or_default().to_owned();
        used.insert((role.to_owned(), rule.to_string(), resource, verb));
    }
    assert!(decisions > 0, "no decision recorded in {log}");

    let mut unused = Vec::new();
    for doc in chart() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let aggregated = doc["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        });
        if (kind != "Role" && kind != "ClusterRole") || aggregated {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let role = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{kind}/{ns}/{name}"),
            None => format!("{kind}/{name}"),
        };
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    let (resource, verb) = (
                        resource.as_str().unwrap_or_default().to_owned(),
                        verb.as_str().unwrap_or_default().to_owned(),
                    );
                    let key = (
                        role.clone(),
                        rule.to_string(),
                        resource.clone(),
                        verb.clone(),
                    );
                    if !used.contains(&key) {
                        unused.push(format!("{kind} {name}: {verb} {resource}"));
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "rights the chart grants that no request of the suite used (remove them, or test what needs them):\n{}",
        unused.join("\n")
    );
}
