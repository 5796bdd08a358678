use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde_json::json;

use crate::harness::{Aws, Scenario, eu_spec, tenant};

fn access_denied<E: std::fmt::Debug>(result: Result<impl std::fmt::Debug, E>) -> bool {
    matches!(&result, Err(e) if format!("{e:?}").contains("AccessDenied"))
}

/// The bucket policy is enforced by the emulator for an ordinary IAM principal (whose own
/// policy allows s3:*): weaker encryption and plain HTTP are refused, and an upload that names
/// no encryption is stored with the tenant's key.
#[tokio::test]
async fn bucket_policy_is_enforced() {
    let s = Scenario::new("enforce").await;
    let policy = s.policy(eu_spec()).await;
    let _op = s.operator(&[]).await;
    s.create(&tenant("locked", &policy, json!({})))
        .await
        .expect("create");
    let status = s.wait_ready("locked").await.status.expect("status");
    let bucket = status.bucket_name.expect("bucket");
    let key_arn = status.kms_key_arn.expect("key");
    let user = Aws::user().await.s3("eu-central-1");

    user.put_object()
        .bucket(&bucket)
        .key("plain")
        .body(ByteStream::from_static(b"no header"))
        .send()
        .await
        .expect("an upload naming no encryption is allowed");
    let head = user
        .head_object()
        .bucket(&bucket)
        .key("plain")
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    assert_eq!(
        head.ssekms_key_id(),
        Some(key_arn.as_str()),
        "stored with the tenant key"
    );

    let weaker = user
        .put_object()
        .bucket(&bucket)
        .key("aes")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(
        access_denied(weaker),
        "SSE-S3 is weaker than the policy requires"
    );

    // aws:SecureTransport is derived from X-Forwarded-Proto by the emulator, which serves only
    // HTTPS on its port: this is how a plain-HTTP request reaches it.
    let insecure = user
        .get_object()
        .bucket(&bucket)
        .key("plain")
        .customize()
        .mutate_request(|req| {
            req.headers_mut().insert("X-Forwarded-Proto", "http");
        })
        .send()
        .await;
    assert!(access_denied(insecure), "plain HTTP is refused");
    let secure = user.get_object().bucket(&bucket).key("plain").send().await;
    assert!(
        secure.is_ok(),
        "the same request over TLS works: {secure:?}"
    );
}
