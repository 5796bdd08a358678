use aws_sdk_s3::types::{BucketVersioningStatus, ObjectOwnership, ServerSideEncryption};
use kube::Client;
use tenant_storage_operator::api::TenantStorage;

use crate::harness::{Aws, Operator, bucket_tags, install_crds, kubectl};

/// The README's promise end to end: apply the examples, get an EU and a US tenant whose buckets
/// and keys are where the policy says, encrypted with their own key, locked down.
#[tokio::test]
async fn examples_become_region_pinned_encrypted_locked_down_buckets() {
    let client = Client::try_default().await.expect("kube client");
    install_crds(&client).await;
    let (ok, _, err) = kubectl(&["apply", "-f", "examples/"]);
    assert!(ok, "examples must apply cleanly: {err}");
    let cluster_id = format!("ex{}", std::process::id());
    let _op = Operator::start(&cluster_id, "tso", &["acme-eu", "globex-us"], &[]).await;
    let aws = Aws::root().await;

    for (ns, name, region, jurisdiction) in [
        ("acme-eu", "acme", "eu-central-1", "EU"),
        ("globex-us", "globex", "us-west-2", "US"),
    ] {
        let api: kube::Api<TenantStorage> = kube::Api::namespaced(client.clone(), ns);
        let ts = crate::harness::eventually(&format!("{ns}/{name} Ready"), || async {
            let ts = api.get(name).await.ok()?;
            let ready = crate::harness::condition(&ts, "Ready")?;
            (ready.status == tenant_storage_operator::api::ConditionStatus::True).then_some(ts)
        })
        .await;
        let status = ts.status.clone().unwrap_or_default();
        assert_eq!(status.region.as_deref(), Some(region));
        assert_eq!(status.jurisdiction.as_deref(), Some(jurisdiction));
        for c in [
            "Ready",
            "ResidencyCompliant",
            "Encrypted",
            "PublicAccessBlocked",
        ] {
            let cond = crate::harness::condition(&ts, c).unwrap_or_else(|| panic!("{c} missing"));
            assert_eq!(
                cond.status,
                tenant_storage_operator::api::ConditionStatus::True,
                "{c}: {}",
                cond.message
            );
        }
        let bucket = status.bucket_name.clone().expect("bucket name in status");
        assert!(bucket.len() <= 63 && bucket.starts_with("tso-"), "{bucket}");
        let key_arn = status.kms_key_arn.clone().expect("key ARN in status");

        // Where it is.
        let s3 = aws.s3(region);
        let head = s3
            .head_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("bucket exists");
        assert_eq!(head.bucket_region(), Some(region));
        assert!(
            key_arn.starts_with(&format!("arn:aws:kms:{region}:")),
            "{key_arn}"
        );

        // Whose it is.
        let tags = bucket_tags(&s3, &bucket).await;
        assert_eq!(tags.get("tenancy.dev/cluster-id"), Some(&cluster_id));
        assert_eq!(
            tags.get("tenancy.dev/namespace").map(String::as_str),
            Some(ns)
        );
        assert_eq!(tags.get("tenancy.dev/name").map(String::as_str), Some(name));
        assert_eq!(
            tags.get("tenancy.dev/jurisdiction").map(String::as_str),
            Some(jurisdiction)
        );

        // Encrypted with its own rotating key.
        let enc = s3
            .get_bucket_encryption()
            .bucket(&bucket)
            .send()
            .await
            .expect("encryption");
        let rule = &enc
            .server_side_encryption_configuration()
            .expect("config")
            .rules()[0];
        let default = rule
            .apply_server_side_encryption_by_default()
            .expect("default encryption");
        assert_eq!(default.sse_algorithm(), &ServerSideEncryption::AwsKms);
        assert_eq!(default.kms_master_key_id(), Some(key_arn.as_str()));
        assert_eq!(rule.bucket_key_enabled(), Some(true));
        let kms = aws.kms(region);
        let alias = status.kms_key_alias.clone().expect("alias in status");
        let key = kms
            .describe_key()
            .key_id(&alias)
            .send()
            .await
            .expect("key by alias");
        assert_eq!(
            key.key_metadata().and_then(|m| m.arn()),
            Some(key_arn.as_str())
        );
        let rotation = kms
            .get_key_rotation_status()
            .key_id(&key_arn)
            .send()
            .await
            .expect("rotation status");
        assert!(rotation.key_rotation_enabled());

        // Locked down.
        let pab = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .expect("public access block");
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
        let own = s3
            .get_bucket_ownership_controls()
            .bucket(&bucket)
            .send()
            .await
            .expect("ownership");
        assert_eq!(
            own.ownership_controls()
                .map(|c| c.rules()[0].object_ownership()),
            Some(&ObjectOwnership::BucketOwnerEnforced)
        );
        let ver = s3
            .get_bucket_versioning()
            .bucket(&bucket)
            .send()
            .await
            .expect("versioning");
        assert_eq!(ver.status(), Some(&BucketVersioningStatus::Enabled));
        let policy = s3
            .get_bucket_policy()
            .bucket(&bucket)
            .send()
            .await
            .expect("bucket policy");
        let policy: serde_json::Value =
            serde_json::from_str(policy.policy().unwrap_or_default()).expect("policy JSON");
        let sids: Vec<&str> = policy["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["Sid"].as_str())
            .collect();
        for sid in [
            "DenyInsecureTransport",
            "DenyOutdatedTls",
            "DenyOtherKmsKeys",
            "DenyWeakerEncryption",
            "DenyStalePresignedUrls",
        ] {
            assert!(sids.contains(&sid), "{sid} missing from {policy}");
        }

        // What the user sees.
        let (ok, out, err) = kubectl(&["get", "ts", "-n", ns]);
        assert!(ok, "{err}");
        let header = out.lines().next().unwrap_or_default();
        for col in [
            "NAME",
            "POLICY",
            "JURISDICTION",
            "REGION",
            "BUCKET",
            "READY",
            "REASON",
            "AGE",
        ] {
            assert!(header.contains(col), "column {col} missing: {out}");
        }
        let row = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        for cell in [jurisdiction, region, bucket.as_str(), "True", "Provisioned"] {
            assert!(
                row.contains(cell),
                "{cell} missing from `kubectl get ts`: {out}"
            );
        }
    }

    let (ok, out, err) = kubectl(&["get", "rp", "eu", "us"]);
    assert!(
        ok && out.contains("eu-central-1") && out.contains("us-east-1"),
        "{out}{err}"
    );

    // Leave the shared example namespaces empty for the next run (the test API server runs no
    // namespace controller, so the namespaces themselves stay).
    for (ns, name) in [("acme-eu", "acme"), ("globex-us", "globex")] {
        let (ok, _, err) = kubectl(&[
            "delete",
            "ts",
            name,
            "-n",
            ns,
            "--wait=true",
            "--timeout=60s",
        ]);
        assert!(ok, "example tenants must delete cleanly: {err}");
    }
}
