use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::{Scenario, eu_spec, tenant};

/// A JSON value as a Lua table constructor.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let escaped: String = s
                .chars()
                .flat_map(|c| match c {
                    '\\' | '"' => vec!['\\', c],
                    '\n' => vec!['\\', 'n'],
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\"")
        }
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{}] = {}", lua(&Value::String(k.clone())), lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the shipped Argo CD health check on an object; returns (status, message).
fn argocd_health(object: &Value) -> (String, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/argocd/tenantstorage-health.lua"
    );
    let program = format!(
        "obj = {}\nlocal hs = dofile({})\nprint(hs.status)\nprint(hs.message)",
        lua(object),
        lua(&Value::String(script.into()))
    );
    let out = std::process::Command::new("lua5.4")
        .args(["-e", &program])
        .output()
        .expect("lua5.4 (Debian package lua5.4, installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    (
        lines.next().unwrap_or_default().to_owned(),
        lines.next().unwrap_or_default().to_owned(),
    )
}

/// The Argo CD health check maps real TenantStorage objects, as the API server returns them,
/// to the right health.
#[tokio::test]
async fn argocd_health_check_reads_real_objects() {
    let s = Scenario::new("argocd").await;
    let policy = s.policy(eu_spec()).await;
    let fresh = s
        .create(&tenant("fresh", &policy, json!({})))
        .await
        .expect("create");
    let as_json =
        |o: &tenant_storage_operator::api::TenantStorage| serde_json::to_value(o).expect("json");
    assert_eq!(argocd_health(&as_json(&fresh)).0, "Progressing");

    let _op = s.operator(&[]).await;
    let ready = s.wait_ready("fresh").await;
    assert_eq!(argocd_health(&as_json(&ready)).0, "Healthy");

    s.create(&tenant("wrong", &policy, json!({"region": "us-east-1"})))
        .await
        .expect("create");
    let refused = s.wait_reason("wrong", "Ready", "RegionNotAllowed").await;
    let (health, message) = argocd_health(&as_json(&refused));
    assert_eq!(health, "Degraded");
    assert!(message.starts_with("RegionNotAllowed: "), "{message}");

    let paused = s
        .tenants()
        .patch(
            "fresh",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"storage.tenancy.dev/paused": "true"}}}),
            ),
        )
        .await
        .expect("pause");
    assert_eq!(argocd_health(&as_json(&paused)).0, "Suspended");

    let mut behind = as_json(&ready);
    behind["metadata"]["generation"] = json!(ready.metadata.generation.unwrap_or(1) + 1);
    assert_eq!(
        argocd_health(&behind).0,
        "Progressing",
        "a spec the operator has not seen yet"
    );
}
