use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::telemetry::{AwsCallLabels, Metrics, is_mutating};

/// Counts every AWS request attempt (retries included) by service, operation and outcome, so
/// users can see what the operator costs and tests can prove a no-op reconcile mutates nothing.
#[derive(Clone, Debug)]
pub struct CallCounter {
    metrics: Metrics,
}

impl CallCounter {
    pub fn new(metrics: Metrics) -> Self {
        CallCounter { metrics }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(meta) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let ok = context.response().is_some_and(|r| r.status().is_success());
        self.metrics
            .aws_calls
            .get_or_create(&AwsCallLabels {
                service: meta.service().to_lowercase(),
                operation: meta.name().to_owned(),
                mutating: is_mutating(meta.name()).to_string(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        Ok(())
    }
}
