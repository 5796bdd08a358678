//! Where a tenant's replica may live: the region it names or the policy's default, among the
//! policy's replication regions, never the primary's region. A replica already recorded stays
//! where it is; if the policy stops allowing that region it is kept, outside the policy.

use thiserror::Error;

use crate::api::ResidencyPolicySpec;

/// What the policy says about the tenant's replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaPlan {
    /// No replica wanted and none recorded.
    None,
    /// A replica in this region, which the policy allows.
    In(String),
    /// A replica recorded in a region the policy no longer allows for replicas: replication
    /// into it stops, its data is kept (still locked down) and reported, never moved.
    OutsidePolicy { region: String, why: String },
}

/// A replica region the policy refuses.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReplicaRefusal {
    #[error(
        "spec.replicaRegion {region:?} is not allowed by ResidencyPolicy {policy:?}: its spec.replication.regions are [{allowed}]; use one of them or leave spec.replicaRegion unset"
    )]
    NotAllowed {
        region: String,
        policy: String,
        allowed: String,
    },
    #[error(
        "the replica region {region} is the bucket's own region: a replica must be in another region; set spec.replicaRegion to another of ResidencyPolicy {policy:?}'s spec.replication.regions"
    )]
    SameAsPrimary { region: String, policy: String },
}

impl ReplicaRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            ReplicaRefusal::NotAllowed { .. } => "ReplicaRegionNotAllowed",
            ReplicaRefusal::SameAsPrimary { .. } => "ReplicaRegionIsPrimary",
        }
    }
}

/// The replica the tenant gets, given the region it names, where its primary is and the
/// replica already recorded.
pub fn replica_plan(
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    primary_region: &str,
    named: Option<&str>,
    recorded: Option<&str>,
) -> Result<ReplicaPlan, ReplicaRefusal> {
    let allowed = |region: &str| {
        region != primary_region
            && policy.allowed_regions.iter().any(|r| r == region)
            && policy.replication.regions.iter().any(|r| r == region)
    };
    if let Some(region) = recorded {
        return Ok(if allowed(region) {
            ReplicaPlan::In(region.to_owned())
        } else {
            ReplicaPlan::OutsidePolicy {
                region: region.to_owned(),
                why: format!(
                    "ResidencyPolicy {policy_name:?} no longer allows replicas in {region} (spec.replication.regions: [{}]); replication into it stopped, its data is kept and locked down until a DataDeletionRequest removes it or the region is allowed again",
                    policy.replication.regions.join(", ")
                ),
            }
        });
    }
    let Some(region) = policy.replication.region_for(named) else {
        return Ok(ReplicaPlan::None);
    };
    if region == primary_region {
        return Err(ReplicaRefusal::SameAsPrimary {
            region: region.to_owned(),
            policy: policy_name.to_owned(),
        });
    }
    if !allowed(region) {
        return Err(ReplicaRefusal::NotAllowed {
            region: region.to_owned(),
            policy: policy_name.to_owned(),
            allowed: policy.replication.regions.join(", "),
        });
    }
    Ok(ReplicaPlan::In(region.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(regions: &[&str], default: Option<&str>) -> ResidencyPolicySpec {
        serde_json::from_value(serde_json::json!({
            "jurisdiction": "EU",
            "allowedRegions": ["eu-central-1", "eu-west-1", "eu-north-1"],
            "defaultRegion": "eu-central-1",
            "replication": {"regions": regions, "defaultRegion": default},
        }))
        .expect("policy")
    }

    #[test]
    fn a_tenant_gets_the_region_it_names_or_the_policys_default() {
        let p = policy(&["eu-west-1", "eu-north-1"], Some("eu-west-1"));
        let plan = |named| replica_plan("eu", &p, "eu-central-1", named, None);
        assert_eq!(plan(None), Ok(ReplicaPlan::In("eu-west-1".into())));
        assert_eq!(
            plan(Some("eu-north-1")),
            Ok(ReplicaPlan::In("eu-north-1".into()))
        );
        let none = policy(&["eu-west-1"], None);
        assert_eq!(
            replica_plan("eu", &none, "eu-central-1", None, None),
            Ok(ReplicaPlan::None)
        );
    }

    #[test]
    fn a_region_outside_the_replication_regions_or_the_primarys_is_refused() {
        let p = policy(&["eu-west-1"], None);
        let refused = replica_plan("eu", &p, "eu-central-1", Some("eu-north-1"), None);
        let e = refused.expect_err("refused");
        assert_eq!(e.reason(), "ReplicaRegionNotAllowed");
        assert!(e.to_string().contains("spec.replicaRegion"), "{e}");
        let same = replica_plan("eu", &p, "eu-west-1", Some("eu-west-1"), None);
        assert_eq!(
            same.expect_err("refused").reason(),
            "ReplicaRegionIsPrimary"
        );
    }

    #[test]
    fn a_recorded_replica_stays_and_is_kept_outside_the_policy() {
        let p = policy(&["eu-north-1"], Some("eu-north-1"));
        let plan = replica_plan("eu", &p, "eu-central-1", None, Some("eu-west-1"));
        let Ok(ReplicaPlan::OutsidePolicy { region, why }) = plan else {
            panic!("{plan:?}");
        };
        assert_eq!(region, "eu-west-1");
        assert!(why.contains("data is kept"), "{why}");
        let p = policy(&["eu-west-1"], None);
        assert_eq!(
            replica_plan("eu", &p, "eu-central-1", None, Some("eu-west-1")),
            Ok(ReplicaPlan::In("eu-west-1".into()))
        );
    }
}
