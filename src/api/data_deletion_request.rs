// Every `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, DataScope};

/// A request to delete a tenant's data (GDPR art. 17, a customer leaving): all of it or some
/// prefixes, by purging every object version, by crypto-shredding the tenant key, or both. It
/// runs as a Job and ends with a deletion certificate.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "storage.tenancy.dev",
    version = "v1alpha1",
    kind = "DataDeletionRequest",
    namespaced,
    status = "DataDeletionRequestStatus",
    shortname = "ddr",
    category = "tenancy",
    doc = "Deletes a tenant's data (all of it or some prefixes) as a resumable, verified Job that leaves a deletion certificate.",
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenantStorageRef.name"
    ),
    printcolumn(name = "Method", type_ = "string", json_path = ".spec.method"),
    printcolumn(name = "Dry Run", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Deleted",
        type_ = "integer",
        json_path = ".status.progress.versionsDeleted"
    ),
    printcolumn(
        name = "Markers",
        type_ = "integer",
        json_path = ".status.progress.deleteMarkersDeleted"
    ),
    printcolumn(name = "Deadline", type_ = "date", json_path = ".status.deadline"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("a DataDeletionRequest's spec is immutable once accepted: create a new request"))]
#[x_kube(validation = Rule::new("self.method == 'Purge' || (has(self.scope.wholeTenant) && self.scope.wholeTenant)")
    .message("spec.method CryptoShred destroys the tenant key, so it needs spec.scope.wholeTenant: true")
    .field_path(".method"))]
#[serde(rename_all = "camelCase")]
pub struct DataDeletionRequestSpec {
    /// The TenantStorage whose data is deleted; it must be in this request's namespace.
    pub tenant_storage_ref: TenantStorageRef,
    /// What to delete.
    pub scope: DataScope,
    /// `Purge` deletes every object version and delete marker in scope; `CryptoShred` disables
    /// the tenant key and schedules its deletion (whole tenant only); `PurgeAndCryptoShred` both.
    pub method: DeletionMethod,
    /// Who asked (a person, a system), for the certificate.
    #[schemars(length(min = 1, max = 256))]
    pub requested_by: String,
    /// Why, e.g. a ticket reference, for the certificate.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Count what would be deleted; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Reference to a TenantStorage.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStorageRef {
    /// Name of the TenantStorage.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the TenantStorage; if given, it must be this request's own (a request never
    /// reaches another namespace's data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How data is deleted.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionMethod {
    Purge,
    CryptoShred,
    PurgeAndCryptoShred,
}

impl DeletionMethod {
    pub fn purges(self) -> bool {
        matches!(
            self,
            DeletionMethod::Purge | DeletionMethod::PurgeAndCryptoShred
        )
    }

    pub fn shreds(self) -> bool {
        matches!(
            self,
            DeletionMethod::CryptoShred | DeletionMethod::PurgeAndCryptoShred
        )
    }
}

/// Phase of a request.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionPhase {
    Pending,
    Running,
    Succeeded,
    /// Objects under Object Lock retention or legal hold remain; the certificate's evidence lists
    /// them (`evidence.locked`).
    Blocked,
    Failed,
    /// The request was refused (see the `Accepted` condition).
    Rejected,
}

/// Progress of the purge, written by the deletion Job at each checkpoint. Counts are `u64` in
/// Rust and `int64` in the schema (the format Kubernetes knows).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeletionProgress {
    /// Object versions deleted (or, for a dry run, that would be).
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub versions_deleted: u64,
    /// Delete markers deleted (or that would be).
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub delete_markers_deleted: u64,
    /// Bytes of the deleted versions.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub bytes_deleted: u64,
    /// Versions kept by Object Lock (retention or legal hold).
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub locked_versions: u64,
    /// Incomplete multipart uploads aborted, which deletes their parts (or, for a dry run, that
    /// would be).
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub multipart_uploads_aborted: u64,
    /// When the purge started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The last checkpoint: the prefix and key the listing had reached, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<String>,
}

/// A version Object Lock keeps.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LockedVersion {
    /// Object key.
    pub key: String,
    /// Version id.
    pub version_id: String,
    /// `GOVERNANCE`, `COMPLIANCE` or `LegalHold`.
    pub mode: String,
    /// Retention end (RFC 3339), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<String>,
}

/// Summary of the deletion certificate.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSummary {
    /// ConfigMap holding the full certificate.
    pub config_map: String,
    /// Namespace of that ConfigMap and of the manifest's: the operator's, where no tenant can
    /// write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// SHA-256 (hex) of the sorted `key<TAB>versionId` lines of every deleted version and marker.
    pub sha256: String,
    /// Entries covered by the hash.
    #[schemars(extend("format" = "int64"))]
    pub entries: u64,
    /// Whether the verification listing found nothing left in scope.
    pub verified: bool,
    /// The signed certificate in the evidence bucket, where an auditor verifies it
    /// (`tenant-storage-operator verify-certificate s3://<bucket>/<key>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceLocation>,
}

/// Where a request's signed certificate is kept, under S3 Object Lock.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceLocation {
    pub bucket: String,
    pub region: String,
    /// Key of `certificate.json`; the signature is `<key>.sig`, the manifest beside them.
    pub key: String,
    pub version_id: String,
    /// The KMS key that signed it.
    pub signing_key_arn: String,
    /// Until when nobody can delete or overwrite it (COMPLIANCE mode).
    pub retain_until: String,
}

/// What the operator observes about a request.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataDeletionRequestStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Running`, `Succeeded`, `Blocked`, `Failed` or `Rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeletionPhase>,
    /// When the policy's deletion deadline passes (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// The Job running the deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Purge progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DeletionProgress>,
    /// The deletion certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSummary>,
    /// `Accepted`, `Complete`, `Overdue`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    fn scope(v: Value) -> DataScope {
        serde_json::from_value(v).expect("a scope")
    }

    #[test]
    fn listing_covers_folders_and_raw_prefixes() {
        let s = scope(json!({"prefixes": ["users/4/"], "rawPrefixes": ["logs/2024-01"]}));
        assert_eq!(s.listing_prefixes(), ["users/4/", "logs/2024-01"]);
        assert_eq!(
            scope(json!({"rawPrefixes": ["users/4"]})).listing_prefixes(),
            ["users/4"]
        );
        let whole = scope(json!({"wholeTenant": true, "rawPrefixes": ["x"]}));
        assert_eq!(whole.listing_prefixes(), [""]);
    }

    /// The purge's normalisation spans both lists: a folder inside a raw prefix (or the same
    /// prefix in both) is listed once, so no version is counted twice.
    #[test]
    fn purge_scope_has_no_prefix_inside_another_across_lists() {
        let s = scope(json!({
            "prefixes": ["users/40/", "logs/", "users/5/"],
            "rawPrefixes": ["users/4", "logs/"]
        }));
        let state = crate::purge::State::new("uid", &s.listing_prefixes(), false, "t0".into());
        assert_eq!(state.prefixes, ["logs/", "users/4", "users/5/"]);
    }

    /// The certificate records the scope as the request gave it: raw prefixes stay marked raw.
    #[test]
    fn raw_prefixes_round_trip_under_their_own_name() {
        let v = json!({"prefixes": ["a/"], "rawPrefixes": ["users/4"]});
        assert_eq!(serde_json::to_value(scope(v.clone())).expect("JSON"), v);
        let folders_only = json!({"prefixes": ["a/"]});
        assert_eq!(
            serde_json::to_value(scope(folders_only.clone())).expect("JSON"),
            folders_only
        );
    }

    #[test]
    fn description_marks_raw_prefixes() {
        let s = scope(json!({"prefixes": ["a/", "b/"], "rawPrefixes": ["users/4"]}));
        assert_eq!(s.describe(), "prefixes a/, b/; raw prefixes users/4");
        assert_eq!(
            scope(json!({"rawPrefixes": ["users/4"]})).describe(),
            "raw prefixes users/4"
        );
        assert_eq!(scope(json!({"wholeTenant": true})).describe(), "all data");
    }

    /// The CEL rules as the API server gets them: on each folder prefix (so the error names its
    /// index), with `maxItems` and `maxLength` bounding their cost; raw prefixes have none.
    #[test]
    fn schema_refuses_ambiguous_prefixes_within_the_cel_budget() {
        let crd = serde_json::to_value(DataDeletionRequest::crd()).expect("crd as JSON");
        let scope = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["scope"];
        let folders = &scope["properties"]["prefixes"];
        let raw = &scope["properties"]["rawPrefixes"];
        for list in [folders, raw] {
            assert_eq!(list["maxItems"], 100, "{list}");
            assert_eq!(list["items"]["maxLength"], 1024, "{list}");
            assert_eq!(list["items"]["minLength"], 1, "{list}");
            assert_eq!(list["items"]["type"], "string", "{list}");
        }
        let rules: Vec<&str> = folders["items"]["x-kubernetes-validations"]
            .as_array()
            .expect("rules on each folder prefix")
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .collect();
        assert_eq!(
            rules,
            [
                "self.endsWith('/')",
                "!self.contains('*') && !self.contains('?')"
            ]
        );
        assert!(raw["items"].get("x-kubernetes-validations").is_none());
        let scope_rule = scope["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .expect("scope rule");
        assert!(scope_rule.contains("self.rawPrefixes"), "{scope_rule}");
    }
}
