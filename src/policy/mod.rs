//! Residency rules: which region a tenant lives in, and whether a region is allowed.
//!
//! Pure functions over the API types; no I/O, so every rule is unit tested without a server.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::api::ResidencyPolicySpec;

mod replica;
pub use replica::{ReplicaPlan, ReplicaRefusal, replica_plan};

/// Why a tenant cannot be placed, or must not be used where it is.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResidencyError {
    #[error(
        "spec.region {region:?} is not allowed by ResidencyPolicy {policy:?} (jurisdiction {jurisdiction}); use one of: {allowed}"
    )]
    RegionNotAllowed {
        region: String,
        policy: String,
        jurisdiction: String,
        allowed: String,
    },
    #[error(
        "the bucket already lives in {actual}, which ResidencyPolicy {policy:?} (jurisdiction {jurisdiction}) does not allow; it is not used. Move the data with a migration and delete this TenantStorage, or restore {actual} to the policy's allowedRegions"
    )]
    ResidencyViolation {
        actual: String,
        policy: String,
        jurisdiction: String,
    },
    #[error(
        "namespace {namespace:?} may not use ResidencyPolicy {policy:?}: its namespaceSelector requires the labels {required}. Label the namespace (if it serves that jurisdiction) or reference a policy that selects it"
    )]
    NamespaceNotAllowed {
        namespace: String,
        policy: String,
        required: String,
    },
    #[error(
        "spec.region {requested:?} differs from the region the tenant already lives in ({recorded}); data is never moved between regions: set spec.region to {recorded} or create a new TenantStorage"
    )]
    RegionChange { requested: String, recorded: String },
}

impl ResidencyError {
    /// The condition reason users see.
    pub fn reason(&self) -> &'static str {
        match self {
            ResidencyError::RegionNotAllowed { .. } => "RegionNotAllowed",
            ResidencyError::ResidencyViolation { .. } => "ResidencyViolation",
            ResidencyError::RegionChange { .. } => "RegionChangeRefused",
            ResidencyError::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
        }
    }
}

/// Picks the tenant's region: what the spec asks for, else where it already lives, else the
/// policy default; and refuses any region the policy does not allow.
pub fn resolve_region(
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    requested: Option<&str>,
    recorded: Option<&str>,
) -> Result<String, ResidencyError> {
    let region = match (requested, recorded) {
        (Some(req), Some(rec)) if req != rec => {
            return Err(ResidencyError::RegionChange {
                requested: req.to_owned(),
                recorded: rec.to_owned(),
            });
        }
        (Some(req), _) => req,
        (None, Some(rec)) => rec,
        (None, None) => policy.default_region.as_str(),
    };
    if is_allowed(policy, region) {
        Ok(region.to_owned())
    } else {
        Err(ResidencyError::RegionNotAllowed {
            region: region.to_owned(),
            policy: policy_name.to_owned(),
            jurisdiction: policy.jurisdiction.clone(),
            allowed: policy.allowed_regions.join(", "),
        })
    }
}

/// Checks where an existing bucket actually is: a bucket in a region outside the policy is never
/// used, whatever the spec says.
pub fn check_actual_region(
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    actual: &str,
) -> Result<(), ResidencyError> {
    if is_allowed(policy, actual) {
        Ok(())
    } else {
        Err(ResidencyError::ResidencyViolation {
            actual: actual.to_owned(),
            policy: policy_name.to_owned(),
            jurisdiction: policy.jurisdiction.clone(),
        })
    }
}

/// A namespace may only use a policy whose `namespaceSelector` (if any) selects it.
pub fn check_namespace(
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ResidencyError> {
    match &policy.namespace_selector {
        Some(selector) if !selector.matches(labels) => Err(ResidencyError::NamespaceNotAllowed {
            namespace: namespace.to_owned(),
            policy: policy_name.to_owned(),
            required: selector
                .match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        _ => Ok(()),
    }
}

fn is_allowed(policy: &ResidencyPolicySpec, region: &str) -> bool {
    policy.allowed_regions.iter().any(|r| r == region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EncryptionSpec, TransportSpec, Versioning};

    fn eu() -> ResidencyPolicySpec {
        ResidencyPolicySpec {
            jurisdiction: "EU".into(),
            allowed_regions: vec!["eu-central-1".into(), "eu-west-1".into()],
            default_region: "eu-central-1".into(),
            encryption: EncryptionSpec::default(),
            transport: TransportSpec::default(),
            versioning: Versioning::Enabled,
            namespace_selector: None,
            access_logging: crate::api::AccessLoggingSpec::default(),
            deletion: crate::api::DeletionSpec::default(),
            access: crate::api::AccessPolicySpec::default(),
            export: Default::default(),
            replication: Default::default(),
            backup: Default::default(),
            refused_tenant_access: Default::default(),
        }
    }

    #[test]
    fn default_region_when_none_requested() {
        assert_eq!(
            resolve_region("eu", &eu(), None, None).as_deref(),
            Ok("eu-central-1")
        );
    }

    #[test]
    fn requested_region_must_be_allowed() {
        assert_eq!(
            resolve_region("eu", &eu(), Some("eu-west-1"), None).as_deref(),
            Ok("eu-west-1")
        );
        let err = resolve_region("eu", &eu(), Some("us-east-1"), None).unwrap_err();
        assert_eq!(err.reason(), "RegionNotAllowed");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.region") && msg.contains("eu-central-1, eu-west-1"),
            "{msg}"
        );
    }

    #[test]
    fn recorded_region_wins_over_a_changed_default() {
        let mut policy = eu();
        policy.default_region = "eu-west-1".into();
        assert_eq!(
            resolve_region("eu", &policy, None, Some("eu-central-1")).as_deref(),
            Ok("eu-central-1")
        );
    }

    #[test]
    fn a_tenant_never_moves() {
        let err = resolve_region("eu", &eu(), Some("eu-west-1"), Some("eu-central-1")).unwrap_err();
        assert_eq!(err.reason(), "RegionChangeRefused");
    }

    #[test]
    fn namespace_selector() {
        let mut policy = eu();
        let labels = BTreeMap::from([("tenancy.dev/jurisdiction".to_owned(), "eu".to_owned())]);
        assert!(
            check_namespace("eu", &policy, "acme", &BTreeMap::new()).is_ok(),
            "no selector: any namespace"
        );
        policy.namespace_selector = Some(crate::api::NamespaceSelector {
            match_labels: labels.clone(),
        });
        assert!(check_namespace("eu", &policy, "acme", &labels).is_ok());
        let err = check_namespace("eu", &policy, "globex", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.reason(), "NamespaceNotAllowed");
        assert!(
            err.to_string().contains("tenancy.dev/jurisdiction=eu"),
            "{err}"
        );
    }

    #[test]
    fn recorded_region_removed_from_policy_is_a_violation() {
        let err = resolve_region("eu", &eu(), None, Some("eu-north-1")).unwrap_err();
        assert_eq!(err.reason(), "RegionNotAllowed");
        let err = check_actual_region("eu", &eu(), "us-east-1").unwrap_err();
        assert_eq!(err.reason(), "ResidencyViolation");
        assert!(check_actual_region("eu", &eu(), "eu-west-1").is_ok());
    }
}
