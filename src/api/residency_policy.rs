// Every `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// AWS region names: `eu-central-1`, `us-gov-west-1`, ...
pub const REGION_PATTERN: &str = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$";

/// Where and how the data of every tenant bound to this policy may be stored.
///
/// A `ResidencyPolicy` is the promise made to a class of customers ("EU data stays in the EU,
/// encrypted with its own key, TLS 1.2+ only"); `TenantStorage` objects reference it by name.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "storage.tenancy.dev",
    version = "v1alpha1",
    kind = "ResidencyPolicy",
    status = "ResidencyPolicyStatus",
    shortname = "rp",
    category = "tenancy",
    doc = "Residency, encryption and transport rules that every TenantStorage bound to it must satisfy.",
    printcolumn(
        name = "Jurisdiction",
        type_ = "string",
        json_path = ".spec.jurisdiction"
    ),
    printcolumn(
        name = "Default Region",
        type_ = "string",
        json_path = ".spec.defaultRegion"
    ),
    printcolumn(name = "Regions", type_ = "string", json_path = ".spec.allowedRegions"),
    printcolumn(
        name = "Tenants",
        type_ = "integer",
        json_path = ".status.boundTenants"
    ),
    printcolumn(
        name = "Non-compliant",
        type_ = "integer",
        json_path = ".status.nonCompliantTenants"
    ),
    printcolumn(
        name = "Min TLS",
        type_ = "string",
        json_path = ".spec.transport.minTlsVersion"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.allowedRegions.exists(r, r == self.defaultRegion)")
    .message("spec.defaultRegion must be one of spec.allowedRegions")
    .field_path(".defaultRegion"))]
#[x_kube(validation = Rule::new("!has(self.replication) || !has(self.replication.regions) || self.replication.regions.all(r, r in self.allowedRegions)")
    .message("spec.replication.regions must be a subset of spec.allowedRegions: a replica lives only where the policy allows data")
    .field_path(".replication.regions"))]
#[x_kube(validation = Rule::new("!has(self.backup) || !has(self.backup.copyToRegion) || self.backup.copyToRegion in self.allowedRegions")
    .message("spec.backup.copyToRegion must be one of spec.allowedRegions")
    .field_path(".backup.copyToRegion"))]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicySpec {
    /// Legal jurisdiction the data is bound to, e.g. `EU` or `US`. Recorded on every resource
    /// as a tag, so an auditor can see it in AWS without the cluster.
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9-]{1,15}$"))]
    pub jurisdiction: String,

    /// AWS regions where tenants bound to this policy may have storage. Nothing of a tenant is
    /// ever created outside this list.
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = REGION_PATTERN), length(max = 32)))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(x, x == r))")
        .message("spec.allowedRegions must not list a region twice"))]
    pub allowed_regions: Vec<String>,

    /// Region used for a TenantStorage that names none. Must be in `allowedRegions`.
    #[schemars(regex(pattern = REGION_PATTERN), length(max = 32))]
    pub default_region: String,

    /// Encryption at rest.
    #[serde(default)]
    pub encryption: EncryptionSpec,

    /// Encryption in transit and presigned URLs.
    #[serde(default)]
    pub transport: TransportSpec,

    /// Object versioning of tenant buckets.
    #[serde(default)]
    pub versioning: Versioning,

    /// Namespaces whose TenantStorages may use this policy. Absent: any namespace. Enforced at
    /// admission by the shipped ValidatingAdmissionPolicy and again at reconcile time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,

    /// Server access logging of tenant buckets, into an operator-owned log bucket in the same
    /// region.
    #[serde(default)]
    pub access_logging: AccessLoggingSpec,

    /// How data deletion requests are handled.
    #[serde(default)]
    pub deletion: DeletionSpec,

    /// Limits on the IAM roles the operator creates for tenants' workloads.
    #[serde(default)]
    pub access: AccessPolicySpec,
    /// Data export rules (DataExportRequests).
    #[serde(default)]
    pub export: ExportSpec,

    /// Copies of tenant buckets in a second allowed region (S3 replication).
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// Daily backups of tenant buckets (AWS Backup).
    #[serde(default)]
    pub backup: BackupSpec,

    /// What workloads may still do with the data of a tenant refused after it was provisioned
    /// (its region, replica region or namespace no longer allowed): `ReadOnly` (default), every
    /// copy's bucket policy refuses writes, so data outside the promise is never used to store
    /// more; `Writable`, writes go on while the data is moved. Every copy stays locked down
    /// either way. A tenant whose policy is deleted is read-only.
    #[serde(default)]
    pub refused_tenant_access: RefusedTenantAccess,
}

/// Workloads' access to the data of a tenant refused after the fact.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RefusedTenantAccess {
    #[default]
    ReadOnly,
    Writable,
}

/// Where tenants' replicas may live and whether every tenant has one.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("!has(self.defaultRegion) || (has(self.regions) && self.defaultRegion in self.regions)")
    .message("spec.replication.defaultRegion must be one of spec.replication.regions")
    .field_path(".defaultRegion"))]
#[x_kube(validation = Rule::new("!has(self.required) || !self.required || has(self.defaultRegion)")
    .message("spec.replication.required needs spec.replication.defaultRegion: the replica region of tenants that name none")
    .field_path(".defaultRegion"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Regions a tenant's replica may live in: a subset of `allowedRegions`. Empty (default):
    /// no replicas. Removing a region stops replication into it; the data there is kept, still
    /// locked down, and reported as a `ResidencyViolation`, never moved or deleted silently.
    #[serde(default)]
    #[schemars(length(max = 32), inner(regex(pattern = REGION_PATTERN), length(max = 32)))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(x, x == r))")
        .message("spec.replication.regions must not list a region twice"))]
    pub regions: Vec<String>,
    /// Replica region of tenants that name none in `spec.replicaRegion`. Absent: only tenants
    /// that name one get a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN), length(max = 32))]
    pub default_region: Option<String>,
    /// Every tenant has a replica (in `defaultRegion` unless it names another).
    #[serde(default)]
    pub required: bool,
}

impl ReplicationSpec {
    /// The replica region a tenant gets: the one it names, else the policy's default.
    pub fn region_for<'a>(&'a self, named: Option<&'a str>) -> Option<&'a str> {
        named.or(self.default_region.as_deref())
    }
}

/// Daily backups of tenant buckets with AWS Backup.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Back up every tenant bucket of this policy daily, into a vault in the bucket's region.
    #[serde(default)]
    pub enabled: bool,
    /// Days a recovery point is kept.
    #[serde(default = "default_backup_retention_days")]
    #[schemars(range(min = 1, max = 36500))]
    pub retention_days: i32,
    /// Also copy each recovery point to a vault in this region (one of `allowedRegions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN), length(max = 32))]
    pub copy_to_region: Option<String>,
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            retention_days: default_backup_retention_days(),
            copy_to_region: None,
        }
    }
}

fn default_backup_retention_days() -> i32 {
    35
}

/// Limits on tenants' workload roles.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Managed policy set as the permissions boundary of every tenant role of this policy, e.g.
    /// `arn:aws:iam::123456789012:policy/tenant-boundary`: the role can never get more than it
    /// allows, whatever is attached to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^arn:aws(-[a-z]+)*:iam::([0-9]{12}|aws):policy/([\x21-\x7E]{0,510}/)?[A-Za-z0-9+=,.@_-]{1,128}$"
        ),
        length(max = 700)
    )]
    pub permissions_boundary_arn: Option<String>,
}

/// Data deletion rules.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeletionSpec {
    /// Days within which a DataDeletionRequest must complete (e.g. 30 for GDPR art. 17); the
    /// request turns `Overdue` after that.
    #[serde(default = "default_deadline_days")]
    #[schemars(range(min = 1, max = 365))]
    pub deadline_days: i32,
    /// While a whole-tenant purge runs, the bucket policy refuses new writes, so the purge
    /// cannot race new data.
    #[serde(default = "default_true")]
    pub deny_writes_during_purge: bool,
    /// Days a deletion's evidence (certificate, signature, manifest) is kept under S3 Object
    /// Lock in COMPLIANCE mode: until then nobody, not even the operator or the account root,
    /// can delete or overwrite it. 2190 (six years) by default, a common retention for records
    /// of processing; it cannot be shortened for evidence already written.
    #[serde(default = "default_evidence_retention_days")]
    #[schemars(range(min = 1, max = 36500))]
    pub evidence_retention_days: i32,
}

impl Default for DeletionSpec {
    fn default() -> Self {
        Self {
            deadline_days: default_deadline_days(),
            deny_writes_during_purge: true,
            evidence_retention_days: default_evidence_retention_days(),
        }
    }
}

/// Data export rules.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportSpec {
    /// Days within which a DataExportRequest must complete (30 by default: GDPR art. 12(3)
    /// gives a month); the request turns `Overdue` after that.
    #[serde(default = "default_deadline_days")]
    #[schemars(range(min = 1, max = 365))]
    pub deadline_days: i32,
    /// Days an export (archive and manifest) is kept in the export bucket before a lifecycle
    /// rule removes it; a fresh download link can be asked for until then.
    #[serde(default = "default_export_retention_days")]
    #[schemars(range(min = 1, max = 365))]
    pub retention_days: i32,
}

impl Default for ExportSpec {
    fn default() -> Self {
        Self {
            deadline_days: default_deadline_days(),
            retention_days: default_export_retention_days(),
        }
    }
}

fn default_export_retention_days() -> i32 {
    7
}

fn default_evidence_retention_days() -> i32 {
    2190
}

fn default_deadline_days() -> i32 {
    30
}

/// Selects namespaces by their labels (all must match).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels a namespace must carry, with these values, to use the policy.
    #[schemars(length(min = 1))]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

impl NamespaceSelector {
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Where access logs go and how long they are kept.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLoggingSpec {
    /// Log every request to tenant buckets (S3 server access logging).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Days access logs are kept before the log bucket's lifecycle rule expires them.
    #[serde(default = "default_log_retention_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: i32,
}

impl Default for AccessLoggingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: default_log_retention_days(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_log_retention_days() -> i32 {
    90
}

/// What the operator observes about a policy: the tenants bound to it and their compliance.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicyStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// TenantStorages referencing this policy.
    #[serde(default)]
    pub bound_tenants: i32,
    /// Bound TenantStorages whose `ResidencyCompliant` condition is `False`.
    #[serde(default)]
    pub non_compliant_tenants: i32,
    /// `Ready` (the policy is valid and evaluated) and `Compliant` (every bound tenant is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<super::Condition>,
}

/// Encryption at rest of tenant buckets.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// `TenantKey` (default): SSE-KMS with a per-tenant customer-managed key, S3 Bucket Keys on,
    /// automatic rotation on; a `CryptoShred` deletion can destroy the key. `S3Managed`: SSE-S3,
    /// AES-256 with keys AWS manages; no tenant key, so no crypto-shredding. A tenant keeps the
    /// mode it was provisioned with: changing it here is refused for existing tenants.
    #[serde(default)]
    pub mode: EncryptionMode,
    /// Waiting period, in days (7-30), before a tenant key scheduled for deletion is destroyed.
    #[serde(default = "default_key_deletion_window_days")]
    #[schemars(range(min = 7, max = 30))]
    pub key_deletion_window_days: i32,
}

impl Default for EncryptionSpec {
    fn default() -> Self {
        Self {
            mode: EncryptionMode::default(),
            key_deletion_window_days: default_key_deletion_window_days(),
        }
    }
}

/// How a tenant bucket is encrypted at rest.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EncryptionMode {
    /// SSE-KMS with the tenant's own KMS key.
    #[default]
    TenantKey,
    /// SSE-S3: AES-256 with keys managed by AWS.
    S3Managed,
}

fn default_key_deletion_window_days() -> i32 {
    30
}

/// Minimum TLS version accepted by tenant buckets.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// The value of the `s3:TlsVersion` condition key.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// Transport rules enforced by every tenant bucket's policy.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransportSpec {
    /// Requests over TLS older than this are denied (`s3:TlsVersion`). Plain HTTP is always
    /// denied.
    #[serde(default)]
    pub min_tls_version: TlsVersion,

    /// Presigned URLs older than this many seconds are refused (`s3:signatureAge`). At most
    /// 604800 (7 days, the SigV4 limit).
    #[serde(default = "default_presigned_max_age")]
    #[schemars(range(min = 1, max = 604_800))]
    pub presigned_url_max_age_seconds: i64,
}

impl Default for TransportSpec {
    fn default() -> Self {
        Self {
            min_tls_version: TlsVersion::default(),
            presigned_url_max_age_seconds: default_presigned_max_age(),
        }
    }
}

fn default_presigned_max_age() -> i64 {
    86_400
}

/// Object versioning. S3 cannot return a bucket to "never versioned", only suspend it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Versioning {
    #[default]
    Enabled,
    Suspended,
}
