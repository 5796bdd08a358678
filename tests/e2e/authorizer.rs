//! The test API server's authorizer is Kubernetes RBAC (testenv/k8s/main.go): what the chart's
//! RBAC allows the operator is what a real cluster would allow it. Each rule feature is checked
//! with one request inside the rules (allowed) and one just outside (403), as an identity that
//! is not the admin: the static token of user `rbac-probe` (group `rbac-probers`) that
//! `testenv_up` adds, or the admin impersonating someone (a service account, a user of its own).
//! Grants take effect through the server's informers, so an allowed request is awaited; a
//! refusal is checked once a grant of the same binding has been seen to work.

use std::future::Future;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, LimitRange, Namespace, PersistentVolume, Pod, PodTemplate,
    ReplicationController, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::harness::{Scenario, env, eventually, kubectl};

/// The probe identity's user and group, as in `testenv_tokens` (scripts/testenv.sh).
const PROBE_USER: &str = "rbac-probe";
const PROBE_GROUP: &str = "rbac-probers";
/// Every cluster-scoped object (and extra namespace) a test here creates carries this label,
/// valued with the test's namespace, and is deleted by it when the test ends.
const CLEANUP_LABEL: &str = "tso.test/authorizer-test";

/// The token of [`PROBE_USER`], from the extra tokens `testenv_up` gave the API server.
fn probe_token() -> String {
    let path = PathBuf::from(env("TSO_RUN")).join("k8s/extra-tokens.csv");
    let tokens = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (written by testenv_up)", path.display()));
    tokens
        .lines()
        .find_map(|line| {
            let mut fields = line.split(',');
            let token = fields.next()?;
            (fields.next()? == PROBE_USER).then(|| token.to_owned())
        })
        .unwrap_or_else(|| panic!("no token of user {PROBE_USER} in {}", path.display()))
}

/// The admin's kubeconfig (`KUBECONFIG`) with the probe's token instead of the admin's
/// credentials.
async fn probe_client() -> Client {
    let mut config = kube::Config::infer().await.expect("kube config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(probe_token().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("kube client")
}

/// The admin impersonating `user` (a service account's username gets the service account's
/// groups from the API server, as with its token).
async fn impersonating(user: &str) -> Client {
    let mut config = kube::Config::infer().await.expect("kube config");
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("kube client")
}

/// A GET (or another method) of a path outside the resource API. kube re-exports no `http`:
/// its request builder makes the request, retargeted here.
async fn raw(client: &Client, method: &str, path: &str) -> Result<String, kube::Error> {
    let mut request = kube::core::Request::new("")
        .get("raw", &Default::default())
        .expect("request");
    *request.uri_mut() = path.parse().expect("path");
    *request.method_mut() = method.parse().expect("method");
    client.request_text(request).await
}

/// Waits until `request` succeeds: a 403 is retried (the grant may not have reached the
/// authorizer yet), any other error fails the test.
async fn allowed<T, F, Fut>(what: &str, mut request: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    eventually(&format!("{what} to be allowed"), || {
        let response = request();
        async move {
            match response.await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.code == 403 => None,
                Err(e) => panic!("{what}: {e}"),
            }
        }
    })
    .await;
}

/// Asserts that a request was refused with 403 Forbidden.
fn refused<T>(what: &str, response: Result<T, kube::Error>) {
    match response {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        Ok(_) => panic!("{what}: allowed, expected 403"),
        Err(e) => panic!("{what}: {e}, expected 403"),
    }
}

fn object<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn rule(api_group: &str, resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": [api_group], "resources": resources, "verbs": verbs})
}

fn policy_rule(api_group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    object(rule(api_group, resources, verbs))
}

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = object(value);
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| {
            let name = obj.meta().name.as_deref().unwrap_or_default();
            panic!("create {} {name}: {e}", K::kind(&Default::default()))
        })
}

/// The test's cluster-scoped objects, deleted by label when the test ends, failed or not.
struct Cleanup(String);

impl Cleanup {
    fn labels(&self) -> Value {
        json!({ CLEANUP_LABEL: self.0 })
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let selector = format!("{CLEANUP_LABEL}={}", self.0);
        let (ok, _, err) = kubectl(&[
            "delete",
            "clusterroles,clusterrolebindings,namespaces",
            "-l",
            &selector,
            "--wait=false",
        ]);
        if !ok {
            eprintln!("cleanup of {selector}: {err}");
        }
    }
}

/// The decision log of the API server: one JSON object per decision for a request not by a
/// member of system:masters.
fn decisions() -> Vec<Value> {
    let path = PathBuf::from(env("TSO_RUN")).join("k8s/authz.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits for a logged decision with all the fields of `want`, and returns it.
async fn logged(want: Value) -> Value {
    let want = want.as_object().expect("an object").clone();
    let want = &want;
    eventually(&format!("decision {want:?} in authz.log"), || async move {
        decisions()
            .into_iter()
            .find(|d| want.iter().all(|(k, v)| d.get(k) == Some(v)))
    })
    .await
}

/// The rules of a Role, and the bindings, ClusterRoles and ClusterRoleBindings that grant the
/// probe user (or its group) what each check below needs; then the checks, each a request
/// allowed and one just outside the rule, refused.
#[tokio::test]
async fn rbac_rules_bound_to_a_token_user() {
    let s = Scenario::new("authz").await;
    let lp = ListParams::default();
    let admin = s.client.clone();
    let ns = s.ns.as_str();
    let cleanup = Cleanup(s.ns.clone());
    let other_ns = format!("{ns}-b");
    create(
        &Api::<Namespace>::all(admin.clone()),
        json!({"metadata": {"name": other_ns, "labels": cleanup.labels()}}),
    )
    .await;
    let probe = probe_client().await;

    // Objects the checks read, made by the admin.
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    create(&configmaps, json!({"metadata": {"name": "probe"}})).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    create(&secrets, json!({"metadata": {"name": "probe-allowed"}})).await;
    create(&secrets, json!({"metadata": {"name": "probe-other"}})).await;
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    create(&services, json!({"metadata": {"name": "probe"}})).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    create(&deployments, json!({"metadata": {"name": "probe"}})).await;

    // Before any grant: nothing but the bootstrap policy's health, version and discovery
    // endpoints (system:public-info-viewer, system:discovery).
    let probe_configmaps: Api<ConfigMap> = Api::namespaced(probe.clone(), ns);
    refused(
        "get configmap, no grant",
        probe_configmaps.get("probe").await,
    );
    refused(
        "GET /metrics, no grant",
        raw(&probe, "GET", "/metrics").await,
    );
    for path in ["/version", "/api", "/apis", "/readyz", "/livez"] {
        raw(&probe, "GET", path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    }
    refused("GET /readyz/ping", raw(&probe, "GET", "/readyz/ping").await);
    let refused_before = logged(json!({
        "user": PROBE_USER, "verb": "get", "resource": "configmaps", "namespace": ns,
        "name": "probe", "allowed": false,
    }))
    .await;
    assert!(refused_before.get("by").is_none(), "{refused_before}");
    logged(json!({
        "user": PROBE_USER, "verb": "get", "path": "/version", "allowed": true,
        "by": {"binding": "ClusterRoleBinding/system:discovery",
               "role": "ClusterRole/system:discovery", "rule": 0},
    }))
    .await;

    // A Role bound to the user in this namespace.
    let roles: Api<Role> = Api::namespaced(admin.clone(), ns);
    create(
        &roles,
        json!({"metadata": {"name": "probe"}, "rules": [
            rule("", &["configmaps"], &["get", "list"]),
            rule("events.k8s.io", &["events"], &["list"]),
            rule("", &["services/status"], &["get"]),
            rule("apps", &["*/status"], &["get"]),
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["probe-allowed"],
             "verbs": ["get"]},
        ]}),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), ns);
    create(
        &bindings,
        json!({"metadata": {"name": "probe-user"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": PROBE_USER}]}),
    )
    .await;

    // verbs
    allowed("get configmap", || probe_configmaps.get("probe")).await;
    refused(
        "create configmap (verb)",
        probe_configmaps
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "new"}})),
            )
            .await,
    );
    refused(
        "delete configmap (verb)",
        probe_configmaps
            .delete("probe", &DeleteParams::default())
            .await,
    );
    // resources
    probe_configmaps.list(&lp).await.expect("list configmaps");
    refused(
        "list serviceaccounts (resource)",
        Api::<ServiceAccount>::namespaced(probe.clone(), ns)
            .list(&lp)
            .await,
    );
    // apiGroups: events.k8s.io events, not the core group's
    Api::<Event>::namespaced(probe.clone(), ns)
        .list(&lp)
        .await
        .expect("list events.k8s.io events");
    refused(
        "list core events (apiGroup)",
        Api::<CoreEvent>::namespaced(probe.clone(), ns)
            .list(&lp)
            .await,
    );
    // resource/subresource: the status of services, not the services
    let probe_services: Api<Service> = Api::namespaced(probe.clone(), ns);
    probe_services
        .get_status("probe")
        .await
        .expect("get services/status");
    refused(
        "get service (subresource only)",
        probe_services.get("probe").await,
    );
    // */subresource: the status of anything in apps, not the objects, nor another group's
    let probe_deployments: Api<Deployment> = Api::namespaced(probe.clone(), ns);
    probe_deployments
        .get_status("probe")
        .await
        .expect("get deployments/status");
    refused(
        "get deployment (*/status only)",
        probe_deployments.get("probe").await,
    );
    refused(
        "get pods/status (another group)",
        Api::<Pod>::namespaced(probe.clone(), ns)
            .get_status("probe")
            .await,
    );
    // resourceNames: that Secret only, and no list
    let probe_secrets: Api<Secret> = Api::namespaced(probe.clone(), ns);
    probe_secrets
        .get("probe-allowed")
        .await
        .expect("get the named secret");
    refused(
        "get another secret (resourceNames)",
        probe_secrets.get("probe-other").await,
    );
    refused(
        "list secrets (resourceNames)",
        probe_secrets.list(&lp).await,
    );

    // The decision log names the binding, the role and the index of the rule that allowed.
    let role_rule = |rule: usize| {
        json!({"binding": format!("RoleBinding/{ns}/probe-user"),
               "role": format!("Role/{ns}/probe"), "rule": rule})
    };
    logged(json!({"user": PROBE_USER, "groups": [PROBE_GROUP, "system:authenticated"],
        "verb": "get", "apiGroup": "", "resource": "configmaps", "subresource": "",
        "namespace": ns, "name": "probe", "path": format!("/api/v1/namespaces/{ns}/configmaps/probe"),
        "allowed": true, "by": role_rule(0)}))
    .await;
    logged(
        json!({"user": PROBE_USER, "verb": "get", "apiGroup": "apps", "resource": "deployments",
        "subresource": "status", "namespace": ns, "allowed": true, "by": role_rule(3)}),
    )
    .await;
    logged(
        json!({"user": PROBE_USER, "verb": "get", "resource": "secrets", "name": "probe-allowed",
        "allowed": true, "by": role_rule(4)}),
    )
    .await;
    let create_refused = logged(json!({"user": PROBE_USER, "verb": "create",
        "resource": "configmaps", "namespace": ns, "allowed": false}))
    .await;
    assert!(create_refused.get("by").is_none(), "{create_refused}");

    // A ClusterRole bound by a RoleBinding grants in that namespace only, and nothing
    // cluster-scoped.
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    let namespaced_role = format!("{ns}-namespaced");
    create(
        &cluster_roles,
        json!({"metadata": {"name": namespaced_role, "labels": cleanup.labels()}, "rules": [
            rule("", &["limitranges"], &["list"]),
            rule("", &["persistentvolumes"], &["list"]),
        ]}),
    )
    .await;
    create(
        &bindings,
        json!({"metadata": {"name": "probe-clusterrole"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": namespaced_role},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": PROBE_USER}]}),
    )
    .await;
    let probe_limitranges: Api<LimitRange> = Api::namespaced(probe.clone(), ns);
    allowed("list limitranges in the binding's namespace", || {
        probe_limitranges.list(&lp)
    })
    .await;
    refused(
        "list limitranges in another namespace",
        Api::<LimitRange>::namespaced(probe.clone(), &other_ns)
            .list(&lp)
            .await,
    );
    refused(
        "list limitranges in all namespaces",
        Api::<LimitRange>::all(probe.clone()).list(&lp).await,
    );
    refused(
        "list persistentvolumes (cluster-scoped, through a RoleBinding)",
        Api::<PersistentVolume>::all(probe.clone()).list(&lp).await,
    );

    // A ClusterRoleBinding grants everywhere, and non-resource URLs (exact, or a prefix ending
    // in *), for the verbs given.
    let cluster_wide = format!("{ns}-cluster");
    create(
        &cluster_roles,
        json!({"metadata": {"name": cluster_wide, "labels": cleanup.labels()}, "rules": [
            rule("", &["resourcequotas"], &["list"]),
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            {"nonResourceURLs": ["/livez/*"], "verbs": ["get"]},
        ]}),
    )
    .await;
    create(
        &Api::<ClusterRoleBinding>::all(admin.clone()),
        json!({"metadata": {"name": cluster_wide, "labels": cleanup.labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_wide},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": PROBE_USER}]}),
    )
    .await;
    let all_quotas: Api<ResourceQuota> = Api::all(probe.clone());
    allowed("list resourcequotas in all namespaces", || {
        all_quotas.list(&lp)
    })
    .await;
    for namespace in [ns, other_ns.as_str()] {
        Api::<ResourceQuota>::namespaced(probe.clone(), namespace)
            .list(&lp)
            .await
            .unwrap_or_else(|e| panic!("list resourcequotas in {namespace}: {e}"));
    }
    raw(&probe, "GET", "/metrics").await.expect("GET /metrics");
    refused(
        "POST /metrics (verb)",
        raw(&probe, "POST", "/metrics").await,
    );
    raw(&probe, "GET", "/livez/ping")
        .await
        .expect("GET /livez/ping (/livez/*)");
    refused(
        "GET /readyz/ping (outside /livez/*)",
        raw(&probe, "GET", "/readyz/ping").await,
    );
    logged(
        json!({"user": PROBE_USER, "verb": "list", "resource": "resourcequotas",
        "namespace": other_ns, "allowed": true,
        "by": {"binding": format!("ClusterRoleBinding/{cluster_wide}"),
               "role": format!("ClusterRole/{cluster_wide}"), "rule": 0}}),
    )
    .await;
    logged(
        json!({"user": PROBE_USER, "verb": "get", "path": "/livez/ping", "allowed": true,
        "by": {"binding": format!("ClusterRoleBinding/{cluster_wide}"),
               "role": format!("ClusterRole/{cluster_wide}"), "rule": 2}}),
    )
    .await;

    // Group subjects: the probe's group, not another one (nor another user in the same binding).
    // The refused grant is made first: the informers see objects of a kind in the order they
    // were written, so once the allowed one works, the refused one is known to the authorizer.
    create(
        &roles,
        json!({"metadata": {"name": "probe-others"},
               "rules": [rule("", &["replicationcontrollers"], &["list"])]}),
    )
    .await;
    create(
        &bindings,
        json!({"metadata": {"name": "probe-others"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe-others"},
               "subjects": [
                   {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("{PROBE_GROUP}-other")},
                   {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": format!("{PROBE_USER}-other")},
               ]}),
    )
    .await;
    create(
        &roles,
        json!({"metadata": {"name": "probe-group"}, "rules": [rule("", &["podtemplates"], &["list"])]}),
    )
    .await;
    create(
        &bindings,
        json!({"metadata": {"name": "probe-group"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe-group"},
               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": PROBE_GROUP}]}),
    )
    .await;
    let probe_templates: Api<PodTemplate> = Api::namespaced(probe.clone(), ns);
    allowed("list podtemplates (group subject)", || {
        probe_templates.list(&lp)
    })
    .await;
    refused(
        "list replicationcontrollers (another group and user)",
        Api::<ReplicationController>::namespaced(probe.clone(), ns)
            .list(&lp)
            .await,
    );

    // The admin (system:masters) is allowed everything and never logged.
    assert!(
        decisions().iter().all(|d| !d["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("system:masters")))),
        "a system:masters request was logged"
    );
}

/// ServiceAccount subjects match the service account's username in the subject's namespace
/// (the binding's own when the subject names none), not a namesake elsewhere nor a user.
#[tokio::test]
async fn service_account_subjects() {
    let s = Scenario::new("authz-sa").await;
    let lp = ListParams::default();
    let ns = s.ns.as_str();
    let admin = s.client.clone();
    let other_ns = format!("{ns}-b");
    // The grant checked as refused is made first: once the other works, it is known (the
    // informers see objects of a kind in the order they were written).
    create(
        &Api::<Role>::namespaced(admin.clone(), ns),
        json!({"metadata": {"name": "secrets"}, "rules": [rule("", &["secrets"], &["list"])]}),
    )
    .await;
    create(
        &Api::<Role>::namespaced(admin.clone(), ns),
        json!({"metadata": {"name": "configmaps"}, "rules": [rule("", &["configmaps"], &["list"])]}),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), ns);
    create(
        &bindings,
        json!({"metadata": {"name": "local"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets"},
               "subjects": [{"kind": "ServiceAccount", "name": "local"}]}),
    )
    .await;
    create(
        &bindings,
        json!({"metadata": {"name": "probe"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
               "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": ns}]}),
    )
    .await;
    let sa = |namespace: &str, name: &str| format!("system:serviceaccount:{namespace}:{name}");
    let probe = impersonating(&sa(ns, "probe")).await;
    let probe_configmaps: Api<ConfigMap> = Api::namespaced(probe.clone(), ns);
    allowed("the service account lists configmaps", || {
        probe_configmaps.list(&lp)
    })
    .await;
    refused(
        "the service account lists secrets",
        Api::<Secret>::namespaced(probe.clone(), ns).list(&lp).await,
    );
    refused(
        "the service account lists configmaps in another namespace",
        Api::<ConfigMap>::namespaced(probe, &other_ns)
            .list(&lp)
            .await,
    );
    for (who, user) in [
        ("a namesake in another namespace", sa(&other_ns, "probe")),
        ("another service account", sa(ns, "other")),
        ("a user named like it", "probe".to_owned()),
    ] {
        refused(
            &format!("{who} lists configmaps"),
            Api::<ConfigMap>::namespaced(impersonating(&user).await, ns)
                .list(&lp)
                .await,
        );
    }
    let local = impersonating(&sa(ns, "local")).await;
    let local_secrets: Api<Secret> = Api::namespaced(local, ns);
    allowed(
        "a service account of the binding's namespace (subject without one)",
        || local_secrets.list(&lp),
    )
    .await;
    let decision = logged(
        json!({"user": sa(ns, "probe"), "verb": "list", "resource": "configmaps",
        "namespace": ns, "allowed": true}),
    )
    .await;
    assert_eq!(
        decision["groups"],
        json!([
            "system:serviceaccounts",
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated"
        ]),
    );
    assert_eq!(
        decision["by"],
        json!({"binding": format!("RoleBinding/{ns}/probe"), "role": format!("Role/{ns}/configmaps"), "rule": 0})
    );
}

/// A ClusterRole with an aggregationRule gets the rules of the ClusterRoles its selectors
/// match (in selector order, by name, without duplicates) and keeps them up to date as labels
/// and rules change, as kube-controller-manager does; what it grants follows.
#[tokio::test]
async fn cluster_role_aggregation() {
    let s = Scenario::new("authz-agg").await;
    let lp = ListParams::default();
    let ns = s.ns.as_str();
    let admin = s.client.clone();
    let cleanup = Cleanup(s.ns.clone());
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    let key = "tso.test/aggregate-to";
    let labels = |value: Option<&str>| {
        let mut labels = cleanup.labels();
        if let Some(value) = value {
            labels[key] = json!(value);
        }
        labels
    };
    let (aggregated, part_a, part_b, part_c) = (
        format!("{ns}-aggregated"),
        format!("{ns}-part-a"),
        format!("{ns}-part-b"),
        format!("{ns}-part-c"),
    );
    create(
        &cluster_roles,
        json!({"metadata": {"name": aggregated, "labels": labels(None)},
               "aggregationRule": {"clusterRoleSelectors": [
                   {"matchLabels": {key: format!("{ns}-a")}},
                   {"matchExpressions": [{"key": key, "operator": "In", "values": [format!("{ns}-b")]}]},
               ]},
               "rules": []}),
    )
    .await;
    create(
        &cluster_roles,
        json!({"metadata": {"name": part_a, "labels": labels(Some(&format!("{ns}-a")))},
               "rules": [rule("", &["podtemplates"], &["list"])]}),
    )
    .await;
    create(
        &cluster_roles,
        json!({"metadata": {"name": part_b, "labels": labels(Some(&format!("{ns}-b")))},
               "rules": [rule("", &["limitranges"], &["list"]), rule("", &["podtemplates"], &["list"])]}),
    )
    .await;
    create(
        &cluster_roles,
        json!({"metadata": {"name": part_c, "labels": labels(None)},
               "rules": [rule("", &["secrets"], &["list"])]}),
    )
    .await;
    let rules_become = |want: Vec<PolicyRule>| {
        let cluster_roles = cluster_roles.clone();
        let aggregated = aggregated.clone();
        async move {
            eventually(&format!("{aggregated} rules {want:?}"), || async {
                let role = cluster_roles.get(&aggregated).await.ok()?;
                (role.rules.unwrap_or_default() == want).then_some(())
            })
            .await
        }
    };
    rules_become(vec![
        policy_rule("", &["podtemplates"], &["list"]),
        policy_rule("", &["limitranges"], &["list"]),
    ])
    .await;

    // What it grants, to a user of this test's own.
    let user = format!("{ns}-user");
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), ns),
        json!({"metadata": {"name": "aggregated"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": aggregated},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]}),
    )
    .await;
    let client = impersonating(&user).await;
    let limitranges: Api<LimitRange> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    allowed("list limitranges (aggregated)", || limitranges.list(&lp)).await;
    logged(
        json!({"user": user, "verb": "list", "resource": "limitranges", "allowed": true,
        "by": {"binding": format!("RoleBinding/{ns}/aggregated"),
               "role": format!("ClusterRole/{aggregated}"), "rule": 1}}),
    )
    .await;
    refused("list secrets (not aggregated)", secrets.list(&lp).await);

    // A matching role's rules change; a role starts matching; one stops.
    let patch = |value: Value| Patch::Merge(value);
    cluster_roles
        .patch(
            &part_a,
            &PatchParams::default(),
            &patch(json!({"rules": [rule("", &["podtemplates"], &["list"]), rule("", &["endpoints"], &["list"])]})),
        )
        .await
        .expect("change the rules of part a");
    cluster_roles
        .patch(
            &part_c,
            &PatchParams::default(),
            &patch(json!({"metadata": {"labels": {key: format!("{ns}-a")}}})),
        )
        .await
        .expect("label part c");
    cluster_roles
        .patch(
            &part_b,
            &PatchParams::default(),
            &patch(json!({"metadata": {"labels": {key: null}}})),
        )
        .await
        .expect("unlabel part b");
    rules_become(vec![
        policy_rule("", &["podtemplates"], &["list"]),
        policy_rule("", &["endpoints"], &["list"]),
        policy_rule("", &["secrets"], &["list"]),
    ])
    .await;
    allowed("list secrets (aggregated now)", || secrets.list(&lp)).await;
    eventually(
        "list limitranges refused (no longer aggregated)",
        || async {
            match limitranges.list(&lp).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
                Ok(_) => None,
                Err(e) => panic!("list limitranges: {e}"),
            }
        },
    )
    .await;
}
