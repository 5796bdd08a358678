//! Fencing of AWS calls by the lease this process holds (see `crate::fence`).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tracing::{debug, warn};

use crate::fence::Fence;
use crate::telemetry::is_mutating;

/// Refuses every mutating AWS call, right before it is sent (each attempt, retries included),
/// once this process's lease has run out.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    fence: Fence,
}

impl LeaseGuard {
    pub fn new(fence: Fence) -> Self {
        LeaseGuard { fence }
    }
}

impl Intercept for LeaseGuard {
    fn name(&self) -> &'static str {
        "LeaseGuard"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        if !is_mutating(meta.name()) {
            return Ok(());
        }
        if !self.fence.holds() {
            warn!(
                service = meta.service(),
                operation = meta.name(),
                "not sent: this replica's lease has run out"
            );
            return Err(format!(
                "{} {} not sent: this replica's lease has run out (another may hold it)",
                meta.service(),
                meta.name()
            )
            .into());
        }
        debug!(
            service = meta.service(),
            operation = meta.name(),
            "sending under the lease"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::error::DisplayErrorContext;

    use super::*;

    /// An S3 client whose every request would go to a closed port: whatever the guard lets
    /// through fails to connect, whatever it stops fails with its own message.
    fn client(fence: &Fence) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .credentials_provider(Credentials::new("key", "secret", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .force_path_style(true)
            .interceptor(LeaseGuard::new(fence.clone()))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    async fn put(client: &aws_sdk_s3::Client) -> String {
        let err = client
            .delete_bucket()
            .bucket("b")
            .send()
            .await
            .expect_err("nothing listens");
        DisplayErrorContext(&err).to_string()
    }

    #[tokio::test]
    async fn mutating_calls_are_not_sent_once_the_lease_has_run_out() {
        let fence = Fence::default();
        let s3 = client(&fence);
        assert!(put(&s3).await.contains("lease has run out"), "never held");
        fence.extend(Instant::now(), Duration::from_secs(60));
        let sent = put(&s3).await;
        assert!(!sent.contains("lease has run out"), "{sent}");
        fence.revoke();
        assert!(put(&s3).await.contains("lease has run out"), "revoked");
        // Reads are harmless: sent whether or not the lease is held.
        let read = s3
            .get_bucket_versioning()
            .bucket("b")
            .send()
            .await
            .expect_err("nothing listens");
        assert!(
            !DisplayErrorContext(&read)
                .to_string()
                .contains("lease has run out"),
            "a read was held back"
        );
    }
}
