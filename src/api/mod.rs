//! Custom resource types of the `storage.tenancy.dev/v1alpha1` API.
//!
//! Admission-checkable rules live here as CEL `x-kubernetes-validations`, so the API server
//! rejects bad objects before the operator ever sees them.

mod condition;
mod data_deletion_request;
mod data_export_request;
mod residency_policy;
mod scope;
mod tenant_storage;

pub use condition::{Condition, ConditionStatus};
pub use data_deletion_request::{
    CertificateSummary, DataDeletionRequest, DataDeletionRequestSpec, DataDeletionRequestStatus,
    DeletionMethod, DeletionPhase, DeletionProgress, EvidenceLocation, LockedVersion,
    TenantStorageRef,
};
pub use data_export_request::{
    DataExportRequest, DataExportRequestSpec, DataExportRequestStatus, ExportFormat, ExportLink,
    ExportPhase, ExportProgress, ExportResult, ExportVersions,
};
pub use residency_policy::{
    AccessLoggingSpec, AccessPolicySpec, BackupSpec, DeletionSpec, EncryptionMode, EncryptionSpec,
    ExportSpec, NamespaceSelector, RefusedTenantAccess, ReplicationSpec, ResidencyPolicy,
    ResidencyPolicySpec, ResidencyPolicyStatus, TlsVersion, TransportSpec, Versioning,
};
pub use scope::{DataScope, normalize_prefixes};
pub use tenant_storage::{
    AccessLevel, AccessSpec, AccessStatus, BackupStatus, DelegatedSpec, DelegationStatus,
    DeletionPolicy, ReplicaStatus, StorageMode, TenantStorage, TenantStorageSpec,
    TenantStorageStatus,
};

use kube::CustomResourceExt;

/// API group of every kind this operator serves.
pub const GROUP: &str = "storage.tenancy.dev";

/// All CRDs as one multi-document YAML stream, in a stable order (what `crds` prints and `crds/`
/// holds).
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    [
        ResidencyPolicy::crd(),
        TenantStorage::crd(),
        DataDeletionRequest::crd(),
        DataExportRequest::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let name = crd.spec.names.plural.clone();
        serde_yaml::to_string(&crd).map(|yaml| (name, yaml))
    })
    .collect()
}
