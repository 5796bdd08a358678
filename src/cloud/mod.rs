//! Thin adapters over the AWS SDK (S3, KMS, IAM, STS, CloudTrail, AWS Backup): calls and their
//! answers, nothing decided here.

mod backup;
mod counter;
mod error;
pub mod evidence;
mod export;
pub mod failpoint;
#[cfg(test)]
pub mod fake;
#[cfg(test)]
pub mod fake_backup;
mod fence;
mod iam;
mod journal;
mod kms;
mod locked;
pub mod port;
mod replication;
mod s3;
mod trail;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::Credentials;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetrySpec;

pub use counter::CallCounter;
pub use error::CloudError;
pub use export::{ByteChunks, Sealing};
pub use iam::Iam;
pub use kms::KeyState;
pub use s3::{
    BucketPresence, DeleteFailure, DeleteReport, ListedVersion, ObservedTags, VersionLock,
    VersionPage,
};
pub use trail::TrailEvent;

use crate::telemetry::Metrics;

/// How to reach AWS (or an S3-compatible endpoint).
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// Endpoint for every service, e.g. an emulator or a VPC endpoint. `AWS_ENDPOINT_URL` is
    /// honoured too (by the SDK's own configuration loader).
    pub endpoint_url: Option<String>,
    /// Path-style S3 addressing (`https://host/bucket/key`), for endpoints without wildcard DNS.
    pub force_path_style: bool,
    /// Extra PEM CA certificates to trust, e.g. a TLS-inspecting proxy or an emulator.
    pub ca_bundle: Option<PathBuf>,
    /// The lease this process acts under, if it is elected: mutating calls are refused once it
    /// has run out.
    pub fence: Option<crate::fence::Fence>,
    /// How the clients slow down when AWS throttles.
    pub pacing: Pacing,
}

/// How the clients slow down when AWS throttles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pacing {
    /// The operator: many tenants share the account's request limits, so after a throttle
    /// the client rate-limits all its calls (adaptive retry) and a burst of new tenants slows
    /// down instead of failing.
    #[default]
    Adaptive,
    /// A deletion Job: one stream of calls, bounded by its own concurrency, each backing off
    /// on its own. The adaptive limiter takes a short job's first seconds as its rate: after
    /// one throttle there it held a purge near one call a second.
    PerCall,
}

/// The HTTPS client for every AWS call: rustls (TLS 1.2+ only) trusting the system roots plus
/// an optional PEM bundle.
pub fn https_client(ca_bundle: Option<&Path>) -> Result<SharedHttpClient, CloudError> {
    let mut trust = TrustStore::empty().with_native_roots(true);
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|source| CloudError::CaBundle {
            path: path.to_owned(),
            source,
        })?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| CloudError::Tls(e.to_string()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https())
}

/// Retry behaviour 2.1 retries a transient error (a reset, a lost answer, a 500) after about
/// 50 ms instead of 1 s. Throttling backs off exponentially (jittered) from 1 s, or from
/// 100 ms for a Job: its journal writes are sequential, so each throttled one holds up the
/// whole purge, and its few writes a second are not what S3 throttles (deletions throttled
/// key by key are retried by the engine, with its own backoff).
fn retry_config(pacing: Pacing) -> RetryConfig {
    let config = match pacing {
        Pacing::Adaptive => RetryConfig::adaptive(),
        Pacing::PerCall => RetryConfig::standard().with_initial_backoff(Duration::from_millis(100)),
    };
    config
        .with_max_attempts(8)
        .with_retry_spec(RetrySpec::v2_1())
}

/// S3 and KMS clients pinned to one region.
#[derive(Clone, Debug)]
pub struct Regional {
    pub region: String,
    s3: aws_sdk_s3::Client,
    kms: aws_sdk_kms::Client,
    trail: aws_sdk_cloudtrail::Client,
    backup: aws_sdk_backup::Client,
    /// Keys' tags seen by searches for the key of an interrupted creation.
    key_tags: std::sync::Arc<kms::KeyTagIndex>,
    /// Sent as `ExpectedBucketOwner` with every S3 call that names a bucket: S3 refuses the
    /// call if the bucket is in another account, so a bucket someone else created under a name
    /// we expected is never written to or read as ours.
    bucket_owner: Option<String>,
    /// What the clients sign with: presigned links live no longer than it.
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
}

/// Entry point to the cloud: one client pair per region, created on first use.
#[derive(Clone)]
pub struct Cloud {
    base: SdkConfig,
    force_path_style: bool,
    counter: CallCounter,
    guard: Option<fence::LeaseGuard>,
    crash: Option<failpoint::ExitAfter>,
    regions: Arc<Mutex<HashMap<String, Regional>>>,
    iam: Iam,
    bucket_owner: Option<String>,
}

impl Cloud {
    pub async fn connect(settings: &AwsSettings, metrics: &Metrics) -> Result<Self, CloudError> {
        let http = https_client(settings.ca_bundle.as_deref())?;
        // Bounded time for every call: a hung connection must fail and be retried, never hold
        // a reconcile (and its concurrency slot) forever.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(90))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(retry_config(settings.pacing));
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let base = loader.load().await;
        let counter = CallCounter::new(metrics.clone());
        let guard = settings.fence.clone().map(fence::LeaseGuard::new);
        let crash = failpoint::ExitAfter::from_env();
        // IAM is global; its endpoint (and STS's global one) answers in us-east-1 of the
        // partition.
        let global = Region::new(base.region().map_or("us-east-1", |r| r.as_ref()).to_owned());
        let mut iam = aws_sdk_iam::config::Builder::from(&base)
            .region(global.clone())
            .interceptor(counter.clone());
        let mut sts = aws_sdk_sts::config::Builder::from(&base)
            .region(global)
            .interceptor(counter.clone());
        if let Some(guard) = &guard {
            iam = iam.interceptor(guard.clone());
            sts = sts.interceptor(guard.clone());
        }
        if let Some(crash) = &crash {
            iam = iam.interceptor(crash.clone());
            sts = sts.interceptor(crash.clone());
        }
        let iam = Iam {
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
        };
        Ok(Cloud {
            base,
            force_path_style: settings.force_path_style,
            counter,
            guard,
            crash,
            regions: Arc::default(),
            iam,
            bucket_owner: None,
        })
    }

    /// The same clients, expecting every bucket they name to be owned by `account` (ours).
    pub fn owning_buckets_of(self, account: String) -> Self {
        Cloud {
            bucket_owner: Some(account),
            regions: Arc::default(),
            ..self
        }
    }

    /// The access key the operator signs with now (with IRSA it changes as credentials are
    /// refreshed); `None` if there are no credentials.
    pub async fn access_key_id(&self) -> Option<String> {
        use aws_sdk_sts::config::ProvideCredentials;
        let provider = self.base.credentials_provider()?;
        let credentials = provider.provide_credentials().await.ok()?;
        Some(credentials.access_key_id().to_owned())
    }

    /// IAM and STS.
    pub fn iam(&self) -> &Iam {
        &self.iam
    }

    /// S3 (and KMS) in `region` with an assumed role's credentials (a customer's role, in
    /// `account`): used only to read, never to change, the customer's bucket.
    pub fn s3_as(&self, region: &str, credentials: &Credentials, account: &str) -> Regional {
        Regional {
            bucket_owner: Some(account.to_owned()),
            ..self.regional(region, Some(credentials))
        }
    }

    /// Clients for `region`.
    pub fn region(&self, region: &str) -> Regional {
        let mut regions = self
            .regions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        regions
            .entry(region.to_owned())
            .or_insert_with(|| self.regional(region, None))
            .clone()
    }

    /// S3 and KMS clients for `region`, with other credentials than the operator's if given.
    fn regional(&self, region: &str, credentials: Option<&Credentials>) -> Regional {
        let mut s3 = aws_sdk_s3::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .force_path_style(self.force_path_style)
            .interceptor(self.counter.clone());
        let mut kms = aws_sdk_kms::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .interceptor(self.counter.clone());
        let mut backup = aws_sdk_backup::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .interceptor(self.counter.clone());
        if let Some(credentials) = credentials {
            s3 = s3.credentials_provider(credentials.clone());
            kms = kms.credentials_provider(credentials.clone());
            backup = backup.credentials_provider(credentials.clone());
        }
        if let Some(guard) = &self.guard {
            s3 = s3.interceptor(guard.clone());
            kms = kms.interceptor(guard.clone());
            backup = backup.interceptor(guard.clone());
        }
        if let Some(crash) = &self.crash {
            s3 = s3.interceptor(crash.clone());
            kms = kms.interceptor(crash.clone());
            backup = backup.interceptor(crash.clone());
        }
        // Only read (the operator's drift events), so no fence or fail point applies.
        let trail = aws_sdk_cloudtrail::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .interceptor(self.counter.clone());
        Regional {
            region: region.to_owned(),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            kms: aws_sdk_kms::Client::from_conf(kms.build()),
            trail: aws_sdk_cloudtrail::Client::from_conf(trail.build()),
            backup: aws_sdk_backup::Client::from_conf(backup.build()),
            key_tags: std::sync::Arc::default(),
            bucket_owner: self.bucket_owner.clone(),
            credentials: match credentials {
                Some(given) => Some(aws_sdk_s3::config::SharedCredentialsProvider::new(
                    given.clone(),
                )),
                None => self.base.credentials_provider(),
            },
        }
    }
}
