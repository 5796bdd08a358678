//! The export engine behind `tenant-storage-operator export`: packages the versions in a
//! DataExportRequest's scope as one tar archive and a manifest in the export bucket of the
//! tenant's region, resumably, and publishes the signed export record and the download link.
//!
//! Layout in the export bucket of the tenant's policy and region:
//! - `exports/<namespace>/<tenant>/<request>/<uid>/archive.tar`: the archive;
//! - `.../manifest.jsonl`: a header line (request, scope, counts, the archive's SHA-256), then
//!   one line per archived version (`path`, `key`, `versionId`, `size`, `lastModified`,
//!   `sha256`) and, for `All` exports, per delete marker;
//! - `journal/<namespace>/<tenant>/<request>/<uid>/`: the Job's checkpoint and manifest chunks.
//!
//! A lifecycle rule removes both after the policy's `export.retentionDays`; a deletion request
//! of the tenant removes both at once (everything under `exports/<namespace>/<tenant>/` and
//! `journal/<namespace>/<tenant>/`, see [`tenant_prefixes`]).

/// Where a tenant's exports and their journals are in the export bucket.
pub fn tenant_prefixes(namespace: &str, tenant: &str) -> [String; 2] {
    [
        format!("exports/{namespace}/{tenant}/"),
        format!("journal/{namespace}/{tenant}/"),
    ]
}

mod archive;
mod engine;
#[cfg(test)]
mod engine_tests;
pub mod link;
mod request;
mod state;

pub use engine::{Chunks, Engine, ExportError, Journal, Layout, PAGE, PART_BYTES, Source, Target};
pub use request::{Options, RunError, layout, run};
pub use state::State;

/// Now, RFC 3339 to the second.
fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
