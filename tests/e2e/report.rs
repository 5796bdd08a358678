use aws_sdk_s3::types::{
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tenant_storage_operator::api::ConditionStatus;

use crate::harness::{Aws, Scenario, eu_spec, tenant};

pub fn report(ns: &str, format: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenant-storage-operator"))
        .args(["report", "--namespace", ns, "--output", format])
        .output()
        .expect("run report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The compliance report judges each tenant from what AWS says at report time: weaken one
/// bucket's encryption behind the operator's back (with its reconciliation paused, so nothing
/// repairs it) and the report fails that tenant, with the evidence, and only that one.
#[tokio::test]
async fn report_reads_the_cloud_not_the_status() {
    let s = Scenario::new("report").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    for name in ["good", "tampered"] {
        s.create(&tenant(name, &policy, json!({})))
            .await
            .expect("create");
    }
    s.wait_ready("good").await;
    let bucket = s
        .wait_ready("tampered")
        .await
        .status
        .and_then(|st| st.bucket_name)
        .expect("bucket");

    let all_good: Value = serde_json::from_str(&report(&s.ns, "json")).expect("JSON report");
    assert_eq!(all_good["compliant"], 2, "{all_good}");

    s.tenants()
        .patch(
            "tampered",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"storage.tenancy.dev/paused": "true"}}}),
            ),
        )
        .await
        .expect("pause");
    s.wait_condition("tampered", "Paused", ConditionStatus::True)
        .await;
    let aes = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()
                        .expect("sse"),
                )
                .build(),
        )
        .build()
        .expect("sse config");
    Aws::root()
        .await
        .s3("eu-central-1")
        .put_bucket_encryption()
        .bucket(&bucket)
        .server_side_encryption_configuration(aes)
        .send()
        .await
        .expect("weaken encryption");

    let json: Value = serde_json::from_str(&report(&s.ns, "json")).expect("JSON report");
    assert_eq!(
        (json["compliant"].as_i64(), json["nonCompliant"].as_i64()),
        (Some(1), Some(1)),
        "{json}"
    );
    let tampered = json["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["tenant"] == format!("{}/tampered", s.ns))
        .expect("tampered tenant in report");
    assert_eq!(tampered["encryption"]["pass"], false);
    assert!(
        tampered["encryption"]["evidence"]
            .as_str()
            .unwrap_or_default()
            .contains("AES256"),
        "{tampered}"
    );
    for check in ["region", "tlsOnly", "publicAccess", "accessLogging"] {
        assert_eq!(tampered[check]["pass"], true, "{check}: {tampered}");
    }
    let status_says = s.get("tampered").await;
    assert_eq!(
        crate::harness::condition(&status_says, "Encrypted").map(|c| c.status),
        Some(ConditionStatus::True),
        "status still says Encrypted: the report did not rely on it"
    );

    let markdown = report(&s.ns, "markdown");
    assert!(
        markdown.starts_with("| tenant | jurisdiction |"),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!("| {}/tampered | EU |", s.ns)) && markdown.contains("**no**"),
        "{markdown}"
    );
    let table = report(&s.ns, "table");
    assert!(
        table.contains(&format!(
            "{}/tampered: encryption: default encryption AES256",
            s.ns
        )),
        "{table}"
    );
}
