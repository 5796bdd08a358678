// Every `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, DataScope, EvidenceLocation, TenantStorageRef};

/// A request to export a tenant's data (GDPR art. 15 and 20, CCPA): all of it or some prefixes,
/// packaged in the tenant's own region as one tar archive with a manifest, downloadable through
/// a link that expires as the policy says.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "storage.tenancy.dev",
    version = "v1alpha1",
    kind = "DataExportRequest",
    namespaced,
    status = "DataExportRequestStatus",
    shortname = "dxr",
    category = "tenancy",
    doc = "Exports a tenant's data (all of it or some prefixes) as a resumable Job: a tar archive and a manifest in the tenant's region, and a download link in a Secret.",
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenantStorageRef.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Objects",
        type_ = "integer",
        json_path = ".status.progress.objects"
    ),
    printcolumn(
        name = "Bytes",
        type_ = "integer",
        json_path = ".status.progress.bytes"
    ),
    printcolumn(name = "Deadline", type_ = "date", json_path = ".status.deadline"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("a DataExportRequest's spec is immutable once accepted: create a new request"))]
#[serde(rename_all = "camelCase")]
pub struct DataExportRequestSpec {
    /// The TenantStorage whose data is exported; it must be in this request's namespace.
    pub tenant_storage_ref: TenantStorageRef,
    /// What to export.
    pub scope: DataScope,
    /// `Current` (the default) exports each key's current version; `All` every version. Delete
    /// markers are not data: neither archived nor listed.
    #[serde(default)]
    pub versions: ExportVersions,
    /// Packaging of the export. `Tar` (the only one so far): one POSIX (pax) tar archive, which
    /// can be written as a stream without knowing its end (zip needs a central directory at the
    /// end), is read by every platform's tools, and keeps any S3 key exactly in its pax header.
    #[serde(default)]
    pub format: ExportFormat,
    /// Who asked (a person, a system), for the export record.
    #[schemars(length(min = 1, max = 256))]
    pub requested_by: String,
    /// Why, e.g. a ticket reference, for the export record.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// Which versions an export holds.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExportVersions {
    #[default]
    Current,
    All,
}

/// How an export is packaged.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExportFormat {
    #[default]
    Tar,
}

/// Phase of an export.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// The request was refused (see the `Accepted` condition).
    Rejected,
    /// The export's retention passed: the lifecycle rule removed it.
    Expired,
}

/// Progress of the export, written by the export Job at each checkpoint.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportProgress {
    /// Object versions archived.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub objects: u64,
    /// Bytes of the archived versions.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub bytes: u64,
    /// When the export started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// Where the export is and what proves it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportResult {
    /// The operator's export bucket, in the tenant's region.
    pub bucket: String,
    pub region: String,
    /// Key of the tar archive.
    pub archive_key: String,
    /// SHA-256 (hex) of the archive's bytes.
    pub archive_sha256: String,
    #[schemars(extend("format" = "int64"))]
    pub archive_bytes: u64,
    /// Key of the manifest (JSON Lines: a header line, then one line per object).
    pub manifest_key: String,
    /// SHA-256 (hex) of the manifest's bytes.
    pub manifest_sha256: String,
    /// The signed export record, kept with the deletion evidence under Object Lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<EvidenceLocation>,
}

/// The download link. The link itself is a bearer credential: it is only in the Secret.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportLink {
    /// Secret in this namespace holding `archiveUrl`, `manifestUrl` and `expiresAt`.
    pub secret_name: String,
    /// When the links stop working (RFC 3339).
    pub expires_at: String,
    /// The value of the `storage.tenancy.dev/refresh-link` annotation these links answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

/// What the operator observes about an export request.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataExportRequestStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Rejected` or `Expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExportPhase>,
    /// When the policy's export deadline passes (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// When the export is removed from the export bucket (RFC 3339): no link works after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The Job running the export (or, later, refreshing its link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ExportProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ExportResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<ExportLink>,
    /// `Accepted`, `Complete`, `Overdue`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// The scope's admission rules are the deletion's (one type), and `kubectl get dxr` shows
    /// phase, objects, bytes, deadline and expiry.
    #[test]
    fn schema_checks_prefixes_at_admission_and_prints_the_columns_users_need() {
        let crd = serde_json::to_value(DataExportRequest::crd()).expect("crd as JSON");
        let version = &crd["spec"]["versions"][0];
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let folders = &spec["properties"]["scope"]["properties"]["prefixes"];
        assert_eq!(folders["maxItems"], 100);
        let rules = folders["items"]["x-kubernetes-validations"]
            .as_array()
            .expect("rules on each folder prefix");
        assert_eq!(rules.len(), 2);
        assert!(spec["x-kubernetes-validations"][0]["rule"] == "self == oldSelf");
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Tenant", "Phase", "Objects", "Bytes", "Deadline", "Expires", "Age"
            ]
        );
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "dxr");
    }

    #[test]
    fn versions_and_format_default_to_current_and_tar() {
        let spec: DataExportRequestSpec = serde_json::from_value(serde_json::json!({
            "tenantStorageRef": {"name": "t"},
            "scope": {"wholeTenant": true},
            "requestedBy": "dpo",
            "reason": "SAR-1"
        }))
        .expect("spec");
        assert_eq!(
            (spec.versions, spec.format),
            (ExportVersions::Current, ExportFormat::Tar)
        );
    }
}
