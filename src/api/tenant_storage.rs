// Every `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::residency_policy::REGION_PATTERN;

/// One tenant's storage: a region-pinned, encrypted, locked-down bucket and its own KMS key,
/// kept compliant with the referenced `ResidencyPolicy`.
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

    /// What happens to the bucket and key when this object is deleted. `Retain` (default)
    /// leaves them untouched and tags them as released; `Delete` removes an empty bucket and
    /// schedules the key's deletion, and refuses while the bucket still holds data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
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
}
