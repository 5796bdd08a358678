//! Command line: parses the arguments of each subcommand (`run`, `report`, `purge`,
//! `iam-policy`, `verify-certificate`, `crds`) and starts it. The rules behind the arguments
//! (names, ARNs, principals) live in the modules they belong to.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::TryFutureExt;
use thiserror::Error;
use tracing::{info, warn};

use crate::cloud::{AwsSettings, Cloud, CloudError, Pacing};
use crate::controllers::{
    self, AccessSettings, CaBundleSource, JobSettings, MountedCaBundle, Settings,
};
use crate::fence::Fence;
use crate::leader::{Elector, LeaderError, LeaseSettings};
use crate::plan::access::OidcProvider;
use crate::plan::naming::{self, NamingError};
use crate::plan::parse_account_id;
use crate::plan::principal::{OperatorPrincipals, parse_principal_arn};
use crate::report::Format;
use crate::telemetry::{self, Health, LogFormat, Metrics};

#[derive(Debug, Parser)]
#[command(
    name = "tenant-storage-operator",
    version,
    about = "Residency policy in the cluster; region-pinned, encrypted, locked-down tenant storage in AWS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers against the cluster in KUBECONFIG (or in-cluster config).
    Run(Box<RunArgs>),
    /// Compliance report of every tenant, with evidence read from AWS now (not from status).
    Report(ReportArgs),
    /// Carry out one DataDeletionRequest (what its Job runs): purge, verify, crypto-shred,
    /// certificate. Resumes from its checkpoint. Exits 0 when it succeeded, 3 when versions
    /// under Object Lock remain (Blocked), 1 on failure.
    Purge(PurgeArgs),
    /// Carry out one DataExportRequest (what its Job runs): the archive, the manifest, the
    /// signed export record and the download link; resumes from its checkpoint. With
    /// --refresh, only signs a fresh link for a finished export.
    Export(ExportArgs),
    /// Print the IAM policy an identity of this project needs, as JSON to attach to its role.
    IamPolicy(IamPolicyArgs),
    /// Check a deletion certificate from its evidence in S3, without the cluster: signature,
    /// manifest digests and counts, Object Lock retention of the evidence, and (with
    /// --check-scope) that nothing in scope remains today. Exits 0 when verified, 1 otherwise.
    VerifyCertificate(VerifyArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crds {
        /// Write `<plural>.<group>.yaml` files here instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stable id of this cluster, written into every resource's ownership tags and part of
    /// bucket names. Never change it for a running cluster.
    #[arg(long, env = "TSO_CLUSTER_ID")]
    pub cluster_id: String,
    /// Prefix of every bucket name (1-20 lowercase letters, digits, '-').
    #[arg(long, env = "TSO_BUCKET_PREFIX", default_value = "tenant")]
    pub bucket_prefix: String,
    /// How often every tenant is re-read from AWS and drift is corrected, e.g. `10m`, `30s`.
    #[arg(long, env = "TSO_RESYNC_PERIOD", default_value = "10m", value_parser = parse_duration)]
    pub resync_period: Duration,
    /// Tenants resynced per second at most, about what AWS sustains for this operator: when
    /// all tenants' resyncs need more, the period stretches (N tenants take N / rate seconds)
    /// instead of new and changed tenants waiting behind them. The default keeps 10,000
    /// tenants on a 10-minute period.
    #[arg(long, env = "TSO_RESYNC_RATE", default_value_t = 20.0, value_parser = parse_rate)]
    pub resync_rate: f64,
    /// Where the operator learns of changes made in AWS by others: `cloudtrail` polls each
    /// tenant region's CloudTrail management events (`LookupEvents`) and re-checks only the
    /// tenants concerned; `off` relies on the resync alone.
    #[arg(
        long,
        env = "TSO_DRIFT_EVENTS",
        value_enum,
        default_value = "cloudtrail"
    )]
    pub drift_events: DriftEvents,
    /// Between two polls of CloudTrail in a region.
    #[arg(long, env = "TSO_DRIFT_EVENTS_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub drift_events_interval: Duration,
    /// How far back each poll looks: at least CloudTrail's delivery delay (about 5 minutes on
    /// AWS, not guaranteed), or late events are missed until the audit resync.
    #[arg(long, env = "TSO_DRIFT_EVENTS_LOOKBACK", default_value = "15m", value_parser = parse_duration)]
    pub drift_events_lookback: Duration,
    /// The resync period while drift events arrive in every tenant region: the safety net
    /// behind them. When they stop, `--resync-period` applies again. Also, drift events or
    /// not, how often a bucket's identity tags and its key's rotation are read.
    #[arg(long, env = "TSO_AUDIT_PERIOD", default_value = "6h", value_parser = parse_duration)]
    pub audit_period: Duration,
    /// Only manage TenantStorages in these namespaces, comma-separated or repeated (default:
    /// all namespaces).
    #[arg(long = "namespace", env = "TSO_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, env = "TSO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "TSO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Reconciles running at once (per watched namespace); paces bursts of new tenants.
    #[arg(long, env = "TSO_MAX_CONCURRENT_RECONCILES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
    /// Namespace where deletion Jobs run (the operator's own).
    #[arg(long, env = "TSO_PURGE_NAMESPACE", default_value = "default")]
    pub purge_namespace: String,
    /// Service account of deletion Jobs: the identity that holds the purge permissions.
    #[arg(
        long,
        env = "TSO_PURGE_SERVICE_ACCOUNT",
        default_value = "tenant-storage-purge"
    )]
    pub purge_service_account: String,
    /// Service account of export Jobs: the identity that holds the export permissions.
    #[arg(
        long,
        env = "TSO_EXPORT_SERVICE_ACCOUNT",
        default_value = "tenant-storage-export"
    )]
    pub export_service_account: String,
    /// The export Jobs' IAM principal (Helm `export.irsaRoleArn`): the only one, besides the
    /// admin principals, the export buckets let read exports. Without it, export requests wait.
    #[arg(long, env = "TSO_EXPORT_PRINCIPAL_ARN")]
    pub export_principal_arn: Option<String>,
    /// Image of deletion Jobs (this operator's image; they run `tenant-storage-operator purge`).
    #[arg(
        long,
        env = "TSO_PURGE_IMAGE",
        default_value = "tenant-storage-operator:0.1.0"
    )]
    pub purge_image: String,
    /// ConfigMap in the Jobs' namespace holding the `--ca-bundle` file: deletion Jobs mount it
    /// where the operator has it, so they trust the same CAs.
    #[arg(
        long,
        env = "TSO_CA_BUNDLE_CONFIG_MAP",
        conflicts_with = "ca_bundle_secret"
    )]
    pub ca_bundle_config_map: Option<String>,
    /// Secret in the Jobs' namespace holding the `--ca-bundle` file (instead of a ConfigMap).
    #[arg(long, env = "TSO_CA_BUNDLE_SECRET")]
    pub ca_bundle_secret: Option<String>,
    /// Elect a leader through a Lease so several replicas can run; only the leader reconciles.
    #[arg(long, env = "TSO_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the leader election Lease (in a cluster: the operator's own).
    #[arg(long, env = "TSO_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "TSO_LEASE_NAME",
        default_value = "tenant-storage-operator"
    )]
    pub lease_name: String,
    /// How long a leader's lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "TSO_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (defaults to the pod name, then the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// IAM OIDC identity provider of this cluster (EKS IRSA), e.g.
    /// `arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC`:
    /// tenant roles trust it for `spec.access.serviceAccounts`.
    #[arg(long, env = "TSO_OIDC_PROVIDER_ARN", value_parser = OidcProvider::parse_arn)]
    pub oidc_provider_arn: Option<String>,
    /// Audience of the service-account tokens presented to STS.
    #[arg(long, env = "TSO_OIDC_AUDIENCE", default_value = "sts.amazonaws.com")]
    pub oidc_audience: String,
    /// Principals (ARNs, `*` allowed) that may always reach tenant buckets besides the tenant's
    /// role and the operator: the deletion jobs' role and break-glass admins. Everyone else is
    /// denied by the bucket policy.
    #[arg(
        long = "admin-principal-arn",
        env = "TSO_ADMIN_PRINCIPAL_ARNS",
        value_delimiter = ',',
        value_parser = parse_principal_arn
    )]
    pub admin_principal_arns: Vec<String>,
    /// The operator's own role ARN with its IAM path, as customers must name it in a delegated
    /// role's trust policy. Default: derived from the caller identity (correct for roles without
    /// a path).
    #[arg(long, env = "TSO_OPERATOR_ROLE_ARN", value_parser = parse_principal_arn)]
    pub operator_role_arn: Option<String>,
}

/// How to reach AWS; shared by `run` and `report`.
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// Endpoint URL for all AWS services (an emulator, a VPC endpoint). The SDK's standard
    /// `AWS_ENDPOINT_URL` is honoured as well.
    #[arg(long, env = "TSO_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Use path-style S3 addressing (for endpoints without wildcard DNS and certificates).
    #[arg(long, env = "TSO_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,
    /// PEM file of extra CA certificates to trust for AWS endpoints (TLS-inspecting proxies,
    /// emulators). Same variable as the AWS CLI.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

impl AwsArgs {
    fn settings(self) -> AwsSettings {
        AwsSettings {
            endpoint_url: self.aws_endpoint_url,
            force_path_style: self.s3_force_path_style,
            ca_bundle: self.ca_bundle,
            fence: None,
            pacing: Pacing::default(),
        }
    }
}

/// Arguments of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Output: a table for humans, JSON or Markdown for auditors.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Format,
    /// Only TenantStorages in these namespaces (default: all).
    #[arg(long = "namespace", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Where drift events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriftEvents {
    Cloudtrail,
    Off,
}

/// Arguments of `purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Namespace of the DataDeletionRequest (and of its TenantStorage).
    #[arg(long)]
    pub namespace: String,
    /// Name of the DataDeletionRequest.
    #[arg(long)]
    pub request: String,
    /// Namespace of the request's checkpoint, manifest and certificate: the operator's own (the
    /// Job's), where no tenant can write.
    #[arg(long, env = "POD_NAMESPACE")]
    pub records_namespace: String,
    /// The operator's cluster id: only a bucket and key tagged as the tenant's by this cluster
    /// are purged or shredded.
    #[arg(long, env = "TSO_CLUSTER_ID")]
    pub cluster_id: String,
    /// This pod's identity in the request's fence Lease (the pod name; default: host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The evidence bucket of the tenant's policy and region (the operator prepares it).
    #[arg(long)]
    pub evidence_bucket: String,
    /// Region of the evidence bucket: the tenant's.
    #[arg(long)]
    pub evidence_region: String,
    /// ARN of the operator's KMS key that signs certificates, in the tenant's region.
    #[arg(long)]
    pub signing_key: String,
    /// The export bucket of the tenant's policy and region: the tenant's exports there are
    /// deleted with its data.
    #[arg(long)]
    pub export_bucket: Option<String>,
    /// Days the evidence stays under Object Lock (the policy's `deletion.evidenceRetentionDays`).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=36500))]
    pub evidence_retention_days: i32,
    /// `DeleteObjects` batches (of up to 1000 versions) in flight at once.
    #[arg(long, env = "TSO_PURGE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Manifest bytes (before compression) per part of the published manifest: the Job holds
    /// about one part, compressed, in memory; a manifest of N bytes is N / this many objects.
    #[arg(long, env = "TSO_MANIFEST_PART_BYTES", default_value_t = crate::purge::PART_BYTES, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub manifest_part_bytes: u64,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Log format.
    #[arg(long, env = "TSO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Namespace of the DataExportRequest (and of its TenantStorage).
    #[arg(long)]
    pub namespace: String,
    /// Name of the DataExportRequest.
    #[arg(long)]
    pub request: String,
    /// The operator's namespace (the Job's): where the download link is handed over.
    #[arg(long, env = "POD_NAMESPACE")]
    pub records_namespace: String,
    /// The operator's cluster id: only a bucket and key tagged as the tenant's by this cluster
    /// are exported.
    #[arg(long, env = "TSO_CLUSTER_ID")]
    pub cluster_id: String,
    /// This pod's identity in the request's fence Lease (the pod name; default: host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The export bucket of the tenant's policy and region (the operator prepares it).
    #[arg(long)]
    pub export_bucket: String,
    /// The tenant's region, where the export bucket is.
    #[arg(long)]
    pub region: String,
    /// The evidence bucket of the tenant's policy and region: the export record goes there.
    #[arg(long)]
    pub evidence_bucket: String,
    /// ARN of the operator's KMS key that signs records, in the tenant's region.
    #[arg(long)]
    pub signing_key: String,
    /// Days the record stays under Object Lock (the policy's `deletion.evidenceRetentionDays`).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=36500))]
    pub evidence_retention_days: i32,
    /// Sign a fresh link for the finished export, answering this value of the request's
    /// `storage.tenancy.dev/refresh-link` annotation.
    #[arg(long)]
    pub refresh: Option<String>,
    /// Bytes per archive part (S3's minimum is 5 MiB): the Job holds about one in memory.
    #[arg(long, env = "TSO_EXPORT_PART_BYTES", default_value_t = crate::export::PART_BYTES as u64, value_parser = clap::value_parser!(u64).range(5 * 1024 * 1024..=1 << 30))]
    pub part_bytes: u64,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Log format.
    #[arg(long, env = "TSO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Arguments of `verify-certificate`. Needs only read access to the evidence:
/// s3:GetObject, s3:GetObjectVersion and s3:GetObjectRetention on the evidence bucket,
/// kms:GetPublicKey on the signing key.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The certificate: s3://<evidence-bucket>/<key of certificate.json> (a key ending in `/`
    /// means that folder's certificate.json). Its signature is read from `<key>.sig`, the
    /// manifest from where the certificate says.
    #[arg(value_name = "S3_URI", value_parser = crate::evidence::ObjectUri::parse)]
    pub certificate: crate::evidence::ObjectUri,
    /// Region of the evidence bucket (default: asked from S3, HeadBucket's
    /// x-amz-bucket-region, then GetBucketLocation).
    #[arg(long)]
    pub region: Option<String>,
    /// Also list the tenant's bucket under every prefix of the certificate's scope (the whole
    /// bucket for a whole-tenant request) and fail if any version, delete marker or incomplete
    /// multipart upload remains. Needs read access to the tenant bucket
    /// (s3:ListBucketVersions, s3:ListBucketMultipartUploads), whose policy admits only the
    /// tenant's role, the operator and the operator's --admin-principal-arn principals.
    #[arg(long)]
    pub check_scope: bool,
    /// The operator's signing key ARN: fail unless the certificate is signed by this key.
    /// Without it, the signature is checked against the key the certificate names.
    #[arg(long)]
    pub signing_key_arn: Option<String>,
    /// Output: one line per check then VERIFIED or NOT VERIFIED, or JSON.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: crate::evidence::OutputFormat,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Whose IAM policy to print.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IamIdentity {
    /// The operator's role (Helm `serviceAccount` IRSA annotation).
    Operator,
    /// The deletion Jobs' role (Helm `purge.irsaRoleArn`).
    Purge,
    /// The export Jobs' role (Helm `export.irsaRoleArn`).
    Export,
}

/// Arguments of `iam-policy`.
#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    pub identity: IamIdentity,
    /// The operator's `--bucket-prefix`: tenant buckets are `<prefix>-*`.
    #[arg(long, env = "TSO_BUCKET_PREFIX", default_value = "tenant")]
    pub bucket_prefix: String,
    /// The AWS account of the tenant keys (12 digits).
    #[arg(long, value_parser = parse_account_id)]
    pub account_id: String,
    /// AWS partition: aws, aws-cn, aws-us-gov.
    #[arg(long, default_value = "aws")]
    pub partition: String,
    /// The operator's `--cluster-id` (for `operator`: workload roles are under its role path).
    #[arg(long, env = "TSO_CLUSTER_ID")]
    pub cluster_id: Option<String>,
}

/// Exit status of `purge` when versions under Object Lock remain.
pub const EXIT_BLOCKED: u8 = 3;

#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Naming(#[from] NamingError),
    #[error("AWS: {0}")]
    Cloud(#[from] CloudError),
    #[error("Kubernetes client: {0} (set KUBECONFIG or run in a cluster)")]
    Kube(#[from] kube::Error),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Output(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    #[error("purge: {0}")]
    Purge(#[from] crate::purge::RequestError),
    #[error("export: {0}")]
    Export(#[from] crate::export::RunError),
}

/// Runs a command; returns the process exit status.
pub async fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Report(args) => report(args).await.map(|()| ExitCode::SUCCESS),
        Command::Purge(args) => purge(args).await,
        Command::Export(args) => export(args).await,
        Command::IamPolicy(args) => iam_policy(&args).map(|()| ExitCode::SUCCESS),
        Command::VerifyCertificate(args) => verify_certificate(args).await,
    }
}

/// Prints the verdict on one certificate; exit status 0 only when every check passed.
async fn verify_certificate(args: VerifyArgs) -> Result<ExitCode, CliError> {
    use crate::cloud::evidence::{self, EvidenceReader, VerifyOptions};
    let reader = EvidenceReader::connect(&args.aws.settings()).await?;
    let options = VerifyOptions {
        certificate: args.certificate,
        region: args.region,
        check_scope: args.check_scope,
        signing_key_arn: args.signing_key_arn,
    };
    let verdict = evidence::verify_certificate(&reader, &options).await;
    print!("{}", verdict.render(args.output));
    Ok(if verdict.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn iam_policy(args: &IamPolicyArgs) -> Result<(), CliError> {
    naming::validate_prefix(&args.bucket_prefix)?;
    let document = match args.identity {
        IamIdentity::Operator => {
            let cluster_id = args.cluster_id.as_deref().ok_or_else(|| {
                CliError::Usage(
                    "iam-policy operator needs --cluster-id (the operator's): its workload roles are under /tenant-storage-operator/<cluster-id>/".into(),
                )
            })?;
            crate::plan::iam_policy::operator(
                &args.partition,
                &args.account_id,
                &args.bucket_prefix,
                cluster_id,
            )
        }
        IamIdentity::Purge => {
            crate::plan::iam_policy::purge(&args.partition, &args.account_id, &args.bucket_prefix)
        }
        IamIdentity::Export => {
            crate::plan::iam_policy::export(&args.partition, &args.account_id, &args.bucket_prefix)
        }
    };
    let text =
        serde_json::to_string_pretty(&document).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// How long a request Job's pod may go without renewing its fence before another may take
/// over.
const JOB_FENCE: Duration = Duration::from_secs(30);

/// What a request's Job works with: AWS clients that refuse writes once its fence lapses, the
/// API client, and the request's fence Lease. Two pods of one request (a replacement started
/// while the first still runs, a paused node coming back) must never work at once: each holds
/// the Lease while it works, and stops if it cannot renew it in time.
struct FencedJob {
    /// `purge` or `export`, for logs.
    kind: &'static str,
    cloud: Cloud,
    client: kube::Client,
    fence: Elector,
}

impl FencedJob {
    /// Connects and waits for the request's fence, `<job name>-fence` in `namespace`.
    async fn start(
        kind: &'static str,
        aws: AwsArgs,
        namespace: &str,
        job_name: &str,
        identity: Option<String>,
    ) -> Result<FencedJob, CliError> {
        let held = Fence::default();
        let cloud = connect_as_owner(&AwsSettings {
            fence: Some(held.clone()),
            pacing: Pacing::PerCall,
            ..aws.settings()
        })
        .await?;
        let client = kube::Client::try_default().await?;
        let fence = Elector::new(
            client.clone(),
            LeaseSettings {
                namespace: namespace.to_owned(),
                name: format!("{job_name}-fence"),
                identity: identity
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| format!("{kind}-{}", std::process::id())),
                duration: JOB_FENCE,
            },
            held,
        );
        info!("waiting for the request's fence (no other pod of this request may run)");
        fence.acquire().await;
        Ok(FencedJob {
            kind,
            cloud,
            client,
            fence,
        })
    }

    /// Runs `work` while the fence holds (a lost fence stops it), then releases the fence. A
    /// failure is logged as well as returned, so it reaches the Job's log collector in JSON.
    async fn run<T>(&self, work: impl Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
        let outcome = tokio::select! {
            outcome = work => outcome,
            lost = self.fence.hold() => Err(lost.into()),
        };
        self.fence.release().await;
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "{} failed", self.kind);
        }
        outcome
    }
}

async fn purge(args: PurgeArgs) -> Result<ExitCode, CliError> {
    telemetry::init_logging(args.log_format);
    let job_name = naming::deletion_job_name(&args.namespace, &args.request);
    let job = FencedJob::start(
        "purge",
        args.aws,
        &args.records_namespace,
        &job_name,
        args.identity,
    )
    .await?;
    let options = crate::purge::Options {
        namespace: args.namespace,
        request: args.request,
        records_namespace: args.records_namespace,
        cluster_id: args.cluster_id,
        evidence: crate::purge::EvidenceTarget {
            bucket: args.evidence_bucket,
            region: args.evidence_region,
            signing_key: args.signing_key,
            retention_days: args.evidence_retention_days,
            part_bytes: args.manifest_part_bytes,
        },
        concurrency: usize::from(args.concurrency),
        export_bucket: args.export_bucket,
    };
    let work = crate::purge::run(job.client.clone(), &job.cloud, &options);
    match job.run(work.map_err(CliError::from)).await? {
        crate::purge::Outcome::Succeeded => Ok(ExitCode::SUCCESS),
        crate::purge::Outcome::Blocked => {
            warn!("versions under Object Lock remain: the request is Blocked");
            Ok(ExitCode::from(EXIT_BLOCKED))
        }
    }
}

async fn export(args: ExportArgs) -> Result<ExitCode, CliError> {
    telemetry::init_logging(args.log_format);
    let job_name = naming::export_job_name(&args.namespace, &args.request);
    let job = FencedJob::start(
        "export",
        args.aws,
        &args.records_namespace,
        &job_name,
        args.identity,
    )
    .await?;
    // The record is kept beside the deletion evidence, in the tenant's region.
    let evidence = crate::purge::EvidenceTarget {
        bucket: args.evidence_bucket,
        region: args.region.clone(),
        signing_key: args.signing_key,
        retention_days: args.evidence_retention_days,
        part_bytes: crate::purge::PART_BYTES,
    };
    let options = crate::export::Options {
        namespace: args.namespace,
        request: args.request,
        records_namespace: args.records_namespace,
        cluster_id: args.cluster_id,
        export_bucket: args.export_bucket,
        region: args.region,
        evidence,
        refresh: args.refresh,
        part_bytes: usize::try_from(args.part_bytes).unwrap_or(crate::export::PART_BYTES),
    };
    let work = crate::export::run(job.client.clone(), &job.cloud, &options);
    job.run(work.map_err(CliError::from)).await?;
    Ok(ExitCode::SUCCESS)
}

fn print_crds(out_dir: Option<PathBuf>) -> Result<(), CliError> {
    let crds = crate::api::crds_yaml().map_err(|e| CliError::Output(e.to_string()))?;
    match out_dir {
        None => {
            for (_, yaml) in crds {
                print!("---\n{yaml}");
            }
        }
        Some(dir) => {
            for (plural, yaml) in crds {
                let path = dir.join(format!("{plural}.{}.yaml", crate::api::GROUP));
                std::fs::write(&path, yaml)
                    .map_err(|e| CliError::Output(format!("{}: {e}", path.display())))?;
            }
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), CliError> {
    telemetry::init_logging(args.log_format);
    let purge_env = purge_env(&args.aws, args.log_format);
    let purge_ca_bundle = purge_ca_bundle(
        args.aws.ca_bundle.as_deref(),
        args.ca_bundle_config_map.clone(),
        args.ca_bundle_secret.clone(),
    )?;
    naming::validate_prefix(&args.bucket_prefix)?;
    naming::validate_cluster_id(&args.cluster_id)?;
    let metrics = Metrics::default();
    let health = Health::default();
    let (addr, _server) = telemetry::serve(args.metrics_addr, metrics.clone(), health.clone())
        .await
        .map_err(|source| CliError::Metrics {
            addr: args.metrics_addr,
            source,
        })?;
    info!(%addr, "serving /metrics, /healthz, /readyz");
    // With leader election, only the leader may change the cloud, and only while its lease
    // lasts by its own clock.
    let held = Fence::default();
    let aws = AwsSettings {
        fence: args.leader_election.then(|| held.clone()),
        ..args.aws.settings()
    };
    let cloud = Cloud::connect(&aws, &metrics).await?;
    let (caller, account_id) = cloud.iam().caller_identity().await?;
    let cloud = cloud.owning_buckets_of(account_id.clone());
    let principals = OperatorPrincipals::new(
        &caller,
        args.operator_role_arn.as_deref(),
        &args.admin_principal_arns,
    );
    info!(operator = %principals.operator, "AWS identity");
    let client = kube::Client::try_default().await?;
    let settings = Settings {
        access: AccessSettings {
            oidc: args.oidc_provider_arn.map(|arn| OidcProvider {
                arn,
                audience: args.oidc_audience,
            }),
            account_id,
            operator_arn: principals.operator,
            allowed_principals: principals.allowed,
        },
        cluster_id: args.cluster_id,
        bucket_prefix: args.bucket_prefix,
        resync_period: args.resync_period,
        resync_rate: args.resync_rate,
        audit_period: args.audit_period.max(args.resync_period),
        drift_events: match args.drift_events {
            DriftEvents::Cloudtrail => Some(crate::controllers::EventSettings::new(
                args.drift_events_interval,
                args.drift_events_lookback,
            )),
            DriftEvents::Off => None,
        },
        namespaces: args.namespaces,
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        jobs: JobSettings {
            namespace: args.purge_namespace,
            service_account: args.purge_service_account,
            image: args.purge_image,
            ca_bundle: purge_ca_bundle,
            env: purge_env,
            export_service_account: args.export_service_account,
            export_principal_arn: args.export_principal_arn,
        },
    };
    info!(cluster_id = %settings.cluster_id, resync = ?settings.resync_period, namespaces = ?settings.namespaces, "starting");
    controllers::wait_for_api(&client, &settings).await;
    health.set_api_reachable();

    let elector = args.leader_election.then(|| {
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("tenant-storage-operator-{}", std::process::id()));
        Elector::new(
            client.clone(),
            LeaseSettings {
                namespace: args.lease_namespace.clone(),
                name: args.lease_name.clone(),
                identity,
                duration: args.lease_duration,
            },
            held,
        )
    });
    if let Some(elector) = &elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown_signal() => {
                info!("stopping before becoming leader");
                return Ok(());
            }
        }
    }
    health.set_leading();
    let probe = cloud.region(&std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()));
    tokio::spawn(async move {
        while let Err(e) = probe.reachable().await {
            warn!(error = %e, "AWS not reachable yet");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        health.set_aws_reachable();
    });
    let controllers = controllers::run(client, cloud, metrics, settings);
    match &elector {
        None => controllers.await,
        Some(elector) => {
            tokio::select! {
                () = controllers => elector.release().await,
                lost = elector.hold() => return Err(lost.into()),
            }
        }
    }
    Ok(())
}

/// Clients that expect every bucket they touch to be in the caller's own account.
async fn connect_as_owner(settings: &AwsSettings) -> Result<Cloud, CliError> {
    let cloud = Cloud::connect(settings, &Metrics::default()).await?;
    let (_, account) = cloud.iam().caller_identity().await?;
    Ok(cloud.owning_buckets_of(account))
}

async fn report(args: ReportArgs) -> Result<(), CliError> {
    let cloud = connect_as_owner(&args.aws.settings()).await?;
    let client = kube::Client::try_default().await?;
    let reports = crate::report::collect(&client, &cloud, &args.namespaces).await?;
    let text = crate::report::render(&reports, args.output)
        .map_err(|e| CliError::Output(e.to_string()))?;
    print!("{text}");
    Ok(())
}

/// Where deletion Jobs get the operator's CA bundle from, when it comes from a ConfigMap or a
/// Secret (in a test or on a node, the file is simply there).
fn purge_ca_bundle(
    path: Option<&std::path::Path>,
    config_map: Option<String>,
    secret: Option<String>,
) -> Result<Option<MountedCaBundle>, CliError> {
    let Some(source) = config_map
        .map(CaBundleSource::ConfigMap)
        .or(secret.map(CaBundleSource::Secret))
    else {
        return Ok(None);
    };
    let dir = path.and_then(std::path::Path::parent).ok_or_else(|| {
            CliError::Output(
                "--ca-bundle-config-map and --ca-bundle-secret need --ca-bundle (AWS_CA_BUNDLE): the path where the bundle is mounted".to_owned(),
            )
        })?;
    Ok(Some(source.at(dir)))
}

/// What deletion Jobs need to reach AWS the way the operator does.
fn purge_env(aws: &AwsArgs, log_format: LogFormat) -> Vec<(String, String)> {
    let mut env = vec![(
        "TSO_LOG_FORMAT".to_owned(),
        match log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
        .to_owned(),
    )];
    if let Some(url) = &aws.aws_endpoint_url {
        env.push(("TSO_AWS_ENDPOINT_URL".to_owned(), url.clone()));
    }
    if aws.s3_force_path_style {
        env.push(("TSO_S3_FORCE_PATH_STYLE".to_owned(), "true".to_owned()));
    }
    if let Some(ca) = &aws.ca_bundle {
        env.push(("AWS_CA_BUNDLE".to_owned(), ca.display().to_string()));
    }
    // The SDK's own endpoint variable too: a Job must reach AWS as the operator does.
    for passthrough in ["AWS_REGION", "AWS_ENDPOINT_URL", "RUST_LOG"] {
        if let Ok(value) = std::env::var(passthrough) {
            env.push((passthrough.to_owned(), value));
        }
    }
    env
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Longest accepted period: a day without a drift check is already too long.
const MAX_PERIOD_SECS: u64 = 86_400;

/// `90`, `90s`, `15m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 30s, 10m, 1h"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?} has unknown unit {unit:?}: use s, m or h")),
    };
    match n.checked_mul(factor) {
        Some(secs) if (1..=MAX_PERIOD_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?} is out of range: use 1s to 24h")),
    }
}

/// Resyncs a second: a positive number up to 10,000.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 10_000.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a rate: give tenants per second, a number above 0 and up to 10000 (e.g. 20, or 0.5)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20"), Ok(20.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "fast", "20000"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
