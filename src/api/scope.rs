//! The scope shared by deletion and export requests: the whole tenant or literal key prefixes.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a request covers (deletes or exports): the whole tenant, or key prefixes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("(has(self.wholeTenant) && self.wholeTenant) != ((has(self.prefixes) && size(self.prefixes) > 0) || (has(self.rawPrefixes) && size(self.rawPrefixes) > 0))")
    .message("spec.scope needs exactly one of wholeTenant: true or a non-empty prefixes (or rawPrefixes) list"))]
#[serde(rename_all = "camelCase")]
pub struct DataScope {
    /// Every object of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_tenant: Option<bool>,
    /// Folders, each ending in `/`, e.g. one end user's `users/42/`: every key under
    /// it. S3 prefixes are literal, so `users/4` (which would also match `users/40/...`) and
    /// wildcards (`users/*/tmp/`, which would match nothing) are refused; list each folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<FolderPrefix>>", length(max = 100))]
    pub prefixes: Option<Vec<String>>,
    /// Raw S3 key prefixes, for when a folder is not what is meant: a raw prefix matches every
    /// key that starts with it, so `users/4` matches `users/4/...` and also `users/40/...` and
    /// `users/4.json`. Every character is literal (`*` and `?` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 1024)))]
    pub raw_prefixes: Option<Vec<String>>,
}

/// The schema of one `spec.scope.prefixes` item (the Rust field stays a `String`). The rules sit
/// on the item so the API server names the offending index; `maxLength` and the list's
/// `maxItems` bound the rules' cost within the API server's CEL budget. (`KubeSchema` derives
/// only for structs with named fields, hence the schema by hand.)
enum FolderPrefix {}

impl JsonSchema for FolderPrefix {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FolderPrefix".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "x-kubernetes-validations": [
                {
                    "rule": "self.endsWith('/')",
                    "message": "a prefix must end with '/': S3 prefixes are literal, so 'users/4' would also cover 'users/40/...' and 'users/4.json'; end it with '/' to mean a folder ('users/4/'), or list it in spec.scope.rawPrefixes to cover every key that starts with it"
                },
                {
                    "rule": "!self.contains('*') && !self.contains('?')",
                    "message": "a prefix cannot contain '*' or '?': S3 has no wildcards (prefixes are literal), so 'users/*/tmp/' would cover nothing; list each prefix ('users/1/tmp/', 'users/2/tmp/', ...), and put a prefix whose keys really contain '*' or '?' in spec.scope.rawPrefixes"
                }
            ]
        })
    }
}

impl DataScope {
    pub fn is_whole_tenant(&self) -> bool {
        self.whole_tenant == Some(true)
    }

    /// Prefixes to list: folders and raw prefixes alike (the purge and the export drop any inside another);
    /// the empty prefix for the whole tenant.
    pub fn listing_prefixes(&self) -> Vec<String> {
        if self.is_whole_tenant() {
            return vec![String::new()];
        }
        let folders = self.prefixes.iter().flatten();
        folders
            .chain(self.raw_prefixes.iter().flatten())
            .cloned()
            .collect()
    }

    /// The scope in words, for conditions and Events; raw prefixes are marked as such.
    pub fn describe(&self) -> String {
        if self.is_whole_tenant() {
            return "all data".to_owned();
        }
        let mut parts = Vec::new();
        if let Some(p) = self.prefixes.as_ref().filter(|p| !p.is_empty()) {
            parts.push(format!("prefixes {}", p.join(", ")));
        }
        if let Some(p) = self.raw_prefixes.as_ref().filter(|p| !p.is_empty()) {
            parts.push(format!("raw prefixes {}", p.join(", ")));
        }
        parts.join("; ")
    }
}

/// Sorted, deduplicated prefixes without any that another one covers: overlapping prefixes
/// would list (and count) the same version twice.
pub fn normalize_prefixes(prefixes: &[String]) -> Vec<String> {
    let mut sorted: Vec<String> = prefixes.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut kept: Vec<String> = Vec::with_capacity(sorted.len());
    for p in sorted {
        // Sorted order puts a covering prefix right before everything it covers.
        if kept.last().is_some_and(|k| p.starts_with(k.as_str())) {
            continue;
        }
        kept.push(p);
    }
    kept
}
