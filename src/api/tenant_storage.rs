// Every `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::residency_policy::{EncryptionMode, REGION_PATTERN};

/// One tenant's storage: a region-pinned, encrypted, locked-down bucket (with its own KMS key,
/// or S3-managed keys, as the policy's `encryption.mode` says), kept compliant with the
/// referenced `ResidencyPolicy`.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "storage.tenancy.dev",
    version = "v1alpha1",
    kind = "TenantStorage",
    namespaced,
    status = "TenantStorageStatus",
    shortname = "ts",
    category = "tenancy",
    doc = "A tenant's region-pinned, encrypted, locked-down S3 bucket and per-tenant KMS key.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyRef"),
    printcolumn(
        name = "Jurisdiction",
        type_ = "string",
        json_path = ".status.jurisdiction"
    ),
    printcolumn(name = "Region", type_ = "string", json_path = ".status.region"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".status.bucketName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(oldSelf.region) || (has(self.region) && self.region == oldSelf.region)")
    .message("spec.region is immutable once set: data is never moved between regions; create a new TenantStorage in the other region and migrate")
    .field_path(".region"))]
#[x_kube(validation = Rule::new("(self.mode == 'Delegated') == has(self.delegated)")
    .message("spec.delegated (the customer's bucket and role) is required with mode Delegated and not allowed with mode Managed")
    .field_path(".delegated"))]
#[x_kube(validation = Rule::new("!has(self.replicaRegion) || !has(self.region) || self.replicaRegion != self.region")
    .message("spec.replicaRegion must differ from spec.region: a replica in the same region is no second location")
    .field_path(".replicaRegion"))]
#[x_kube(validation = Rule::new("!has(oldSelf.replicaRegion) || (has(self.replicaRegion) && self.replicaRegion == oldSelf.replicaRegion)")
    .message("spec.replicaRegion is immutable once set: a replica's data is never moved; delete the TenantStorage's data deliberately before choosing another region")
    .field_path(".replicaRegion"))]
#[x_kube(validation = Rule::new("!has(self.replicaRegion) || self.mode == 'Managed'")
    .message("spec.replicaRegion needs mode Managed: a delegated bucket's copies are the customer's to configure")
    .field_path(".replicaRegion"))]
#[serde(rename_all = "camelCase")]
pub struct TenantStorageSpec {
    /// Name of the cluster-scoped `ResidencyPolicy` this storage must satisfy. Immutable: a
    /// tenant's data does not change jurisdiction in place.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.policyRef is immutable: create a new TenantStorage to change jurisdiction"))]
    pub policy_ref: String,

    /// AWS region of the bucket and key; must be allowed by the policy. Defaults to the
    /// policy's `defaultRegion`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN), length(max = 32))]
    pub region: Option<String>,

    /// Region of the tenant's replica: one of the policy's `replication.regions`, not `region`.
    /// Defaults to the policy's `replication.defaultRegion` (none if it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REGION_PATTERN), length(max = 32))]
    pub replica_region: Option<String>,
    /// What happens to the bucket and key when this object is deleted. `Retain` (default)
    /// leaves them untouched and tags them as released; `Delete` removes an empty bucket and
    /// schedules the key's deletion, and refuses while the bucket still holds data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Who hosts the bucket: `Managed` (default), the operator creates and keeps it; `Delegated`,
    /// the customer's own bucket, reached through a role the customer grants. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.mode is immutable: create a new TenantStorage to change who hosts the data"))]
    pub mode: StorageMode,

    /// Which of this namespace's service accounts may use the storage, and how. Their pods get
    /// an IAM role of this tenant (EKS IRSA); no other workload can reach the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,

    /// The customer's bucket and role, with `mode: Delegated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated: Option<DelegatedSpec>,
}

/// Who hosts a tenant's bucket.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StorageMode {
    #[default]
    Managed,
    Delegated,
}

/// Kubernetes name of a service account: a DNS-1123 subdomain.
pub const SERVICE_ACCOUNT_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// An IAM role ARN in any partition.
pub const ROLE_ARN_PATTERN: &str =
    r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/([\x21-\x7E]{0,510}/)?[A-Za-z0-9+=,.@_-]{1,64}$";
/// A bucket name, or a bucket ARN (which names the partition).
pub const BUCKET_PATTERN: &str = r"^(arn:aws(-[a-z]+)*:s3:::)?[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";

/// Workload access to a tenant's storage.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// Names of service accounts in this TenantStorage's namespace whose pods may use the
    /// storage. The tenant role's trust policy admits exactly these.
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = SERVICE_ACCOUNT_PATTERN), length(max = 253)))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(x, x == a))")
        .message("spec.access.serviceAccounts must not list a service account twice"))]
    pub service_accounts: Vec<String>,
    /// `ReadWrite` (default): read, write and delete objects (a delete on a versioned bucket
    /// adds a delete marker; data is only destroyed through a DataDeletionRequest). `ReadOnly`:
    /// read and list only.
    #[serde(default)]
    pub level: AccessLevel,
}

/// What a tenant's workloads may do with its data.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccessLevel {
    ReadOnly,
    #[default]
    ReadWrite,
}

/// A bucket the customer hosts in their own AWS account, and the role they grant us.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.bucket.startsWith('arn:') || self.bucket.split(':')[1] == self.roleArn.split(':')[1]")
    .message("spec.delegated.bucket and spec.delegated.roleArn must be in the same AWS partition")
    .field_path(".bucket"))]
#[serde(rename_all = "camelCase")]
pub struct DelegatedSpec {
    /// The customer's bucket: a name (`acme-data`) or an ARN (`arn:aws:s3:::acme-data`). The
    /// operator only reads its configuration and never changes it.
    #[schemars(regex(pattern = BUCKET_PATTERN), length(max = 128))]
    pub bucket: String,
    /// The role in the customer's account that grants access to the bucket, e.g.
    /// `arn:aws:iam::111122223333:role/vendor-access`. Its trust policy must be the one this
    /// object's status publishes (it names this tenant's role and requires its ExternalId).
    #[schemars(regex(pattern = ROLE_ARN_PATTERN), length(max = 600))]
    pub role_arn: String,
}

/// What happens to cloud resources when a `TenantStorage` is deleted.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// What exists in the cloud for this tenant, as last observed by the operator.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStorageStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ResidencyCompliant`, `Encrypted`, `PublicAccessBlocked`, and `Paused` while the
    /// `storage.tenancy.dev/paused: "true"` annotation stops reconciliation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Jurisdiction of the referenced policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// Region the bucket and key live in. Once set, the tenant never leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Bucket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    /// Bucket ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_arn: Option<String>,
    /// How the bucket is encrypted at rest, recorded when it is claimed: the policy's
    /// `encryption.mode` then. Absent on tenants provisioned before the mode existed
    /// (`TenantKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_mode: Option<EncryptionMode>,
    /// ARN of the tenant's KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// Alias of the tenant's KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_alias: Option<String>,
    /// Set while a KMS key creation is in flight (write-ahead): if the operator stops before the
    /// key's alias exists, the next run finds that key by its tags instead of creating another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_creation_started: Option<String>,
    /// Value of the `storage.tenancy.dev/recheck` annotation last acted upon: set the
    /// annotation to a new value to force an immediate check of the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recheck: Option<String>,
    /// The tenant's IAM role for its workloads, when `spec.access` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessStatus>,
    /// What the customer must set up, and what was verified, with `mode: Delegated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<DelegationStatus>,
    /// The tenant's replica, recorded before it is created. Kept after the policy stops
    /// allowing it: the data there is the tenant's until a deletion removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStatus>,
    /// The daily backups of the tenant's bucket, as last ensured (policies with
    /// `backup.enabled` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// Where the tenant's bucket is backed up, as last ensured in AWS Backup.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Region of the vault and plan: the bucket's.
    pub region: String,
    /// ARN of the backup vault, encrypted with the operator's key in that region.
    pub vault_arn: String,
    /// Id of the daily backup plan.
    pub plan_id: String,
    /// Days each recovery point is kept.
    pub retention_days: i32,
    /// Region each recovery point is also copied to, if the policy asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_region: Option<String>,
}

/// A copy of the tenant's bucket in a second region, as last applied and observed.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Region of the replica bucket and its key.
    pub region: String,
    /// Name of the replica bucket.
    pub bucket_name: String,
    /// ARN of the replica's own KMS key in its region (absent with S3-managed keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// Set while the replica key's creation is in flight (write-ahead, as for the primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_creation_started: Option<String>,
    /// ARN of the role S3 replicates with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_role_arn: Option<String>,
    /// `Replicating`: in shape, receiving every write. Otherwise why not: `OutsidePolicy`
    /// (replication stopped, data kept), `BucketConflict`, or the error of the last attempt.
    #[serde(default)]
    pub state: String,
    /// What the state means for the tenant, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The tenant's workload role as last applied.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// ARN of the IAM role the tenant's pods assume.
    pub role_arn: String,
    /// The annotation to put on each listed service account, e.g.
    /// `eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/...`.
    pub service_account_annotation: String,
    /// Service accounts the role's trust policy admits.
    pub service_accounts: Vec<String>,
    /// Access level the role's policy grants.
    pub level: AccessLevel,
}

/// Delegated access: the customer's side, as published and as verified.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DelegationStatus {
    /// `<namespace>/<name>` of the Secret holding this tenant's ExternalId, in the operator's
    /// namespace: generated by the operator, never chosen or changed by the tenant.
    pub external_id_secret: String,
    /// The trust policy the customer's role must have, ready to copy: the operator may assume
    /// the role only with this tenant's ExternalId, the tenant's workload role (role chaining)
    /// as itself.
    pub trust_policy: String,
    /// The permissions policy the customer's role needs on their bucket, ready to copy.
    pub permissions_policy: String,
    /// Region of the customer's bucket, as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_region: Option<String>,
}
