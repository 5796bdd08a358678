use std::io::Write;

use serde_json::json;
use tenant_storage_operator::api::NamespaceSelector;

use crate::harness::{Scenario, env, eu_spec, eventually, kubectl};

/// `kubectl <verb> -f -` of a manifest given as text; returns (success, stderr).
fn kubectl_stdin(verb: &str, manifest: &str) -> (bool, String) {
    let mut child = std::process::Command::new("kubectl")
        .args([verb, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tenant_yaml(ns: &str, name: &str, policy: &str, region: Option<&str>) -> String {
    let region = region
        .map(|r| format!("\n  region: {r}"))
        .unwrap_or_default();
    format!(
        "apiVersion: storage.tenancy.dev/v1alpha1\nkind: TenantStorage\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  policyRef: {policy}{region}\n"
    )
}

/// With the shipped ValidatingAdmissionPolicy installed, the API server itself refuses a region
/// the policy does not allow (on create and on update) and a namespace the policy does not
/// select, with a message naming the field, the policy and the allowed values.
#[tokio::test]
async fn api_server_refuses_what_the_residency_policy_forbids() {
    let s = Scenario::new("admission").await;
    let scope = format!("tso-admission={}", s.ns);
    let jurisdiction = format!("tso-jurisdiction=eu-{}", s.ns);
    let other = format!("{}-other", s.ns);
    let (ok, _, err) = kubectl(&["create", "namespace", &other]);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(&["label", "namespace", &s.ns, &scope, &jurisdiction]);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(&["label", "namespace", &other, &scope]);
    assert!(ok, "{err}");
    let mut spec = eu_spec();
    spec.namespace_selector = Some(NamespaceSelector {
        match_labels: [("tso-jurisdiction".to_owned(), format!("eu-{}", s.ns))].into(),
    });
    let policy = s.policy(spec).await;

    // The chart's admission policy, bound to this test's namespaces only.
    let release = format!("adm-{}", s.ns);
    let rendered = std::process::Command::new(env("TSO_HELM"))
        .args([
            "template",
            &release,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/charts/tenant-storage-operator"
            ),
        ])
        .args([
            "--show-only",
            "templates/admission-policy.yaml",
            "--set",
            "clusterId=test",
        ])
        .args([
            "--set",
            &format!(
                "admissionPolicy.namespaceSelector.matchLabels.tso-admission={}",
                s.ns
            ),
        ])
        .output()
        .expect("helm template");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let (ok, err) = kubectl_stdin("apply", &String::from_utf8_lossy(&rendered.stdout));
    assert!(ok, "{err}");

    // Admission policies take effect once the API server's informers see them; each attempt
    // creates a new object, since an attempt admitted too early leaves its object behind.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let err = eventually("the admission policy refuses a foreign region", || async {
        let name = format!(
            "us-{}",
            attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (ok, err) = kubectl_stdin(
            "create",
            &tenant_yaml(&s.ns, &name, &policy, Some("us-east-1")),
        );
        (!ok && err.contains("ValidatingAdmissionPolicy")).then_some(err)
    })
    .await;
    assert!(
        err.contains(&format!(
            "spec.region us-east-1 is not allowed by ResidencyPolicy {policy}"
        )) && err.contains("eu-central-1, eu-west-1"),
        "{err}"
    );

    let (ok, err) = kubectl_stdin("create", &tenant_yaml(&other, "elsewhere", &policy, None));
    assert!(
        !ok,
        "a namespace the policy does not select must be refused"
    );
    assert!(
        err.contains(&format!(
            "spec.policyRef: namespace {other} may not use ResidencyPolicy {policy}"
        )) && err.contains(&jurisdiction),
        "{err}"
    );

    // A replica region outside spec.replication.regions (none here), and one equal to the
    // bucket's own region.
    let replica = |region: &str| {
        tenant_yaml(&s.ns, "copy", &policy, None) + &format!("  replicaRegion: {region}\n")
    };
    let (ok, err) = kubectl_stdin("create", &replica("eu-west-1"));
    assert!(
        !ok && err.contains(&format!(
            "spec.replicaRegion eu-west-1 is not allowed by ResidencyPolicy {policy}: its spec.replication.regions are []"
        )),
        "{err}"
    );
    let (ok, err) = kubectl_stdin(
        "create",
        &(tenant_yaml(&s.ns, "copy", &policy, Some("eu-west-1")) + "  replicaRegion: eu-west-1\n"),
    );
    assert!(
        !ok && err.contains("spec.replicaRegion must differ from spec.region"),
        "{err}"
    );

    let (ok, err) = kubectl_stdin("create", &tenant_yaml(&s.ns, "fine", &policy, None));
    assert!(ok, "an allowed tenant is admitted: {err}");
    let patch = json!({"spec": {"region": "us-west-2"}}).to_string();
    let (ok, _, err) = kubectl(&[
        "patch", "ts", "fine", "-n", &s.ns, "--type", "merge", "-p", &patch,
    ]);
    assert!(
        !ok && err.contains("spec.region us-west-2 is not allowed"),
        "an update into a foreign region is refused: {err}"
    );

    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        let name = format!("{release}-tenant-storage-operator-residency");
        let (ok, _, err) = kubectl(&["delete", kind, &name]);
        assert!(ok, "{err}");
    }
}
