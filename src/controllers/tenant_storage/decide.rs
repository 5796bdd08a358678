//! The decisions of a managed tenant's reconcile, pure: spec + policy + what was observed in,
//! the next step or a [`Refusal`] out.

use std::collections::BTreeMap;

use super::record::Record;
use super::refusal::Refusal;
use super::storage::Tenant;
use crate::api::{EncryptionMode, ResidencyPolicySpec};
use crate::plan::{self, Desired, KeyChange, ObservedKey, Ownership, TenantIdentity, tags};
use crate::policy;

/// Where the tenant's data goes, before the cloud is asked.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Placement {
    pub desired: Desired,
    /// The bucket's name is already this tenant's (recorded in its status).
    pub claimed: bool,
    /// Claimed, and in the region recorded with it: nothing needs looking up.
    pub known_here: bool,
}

/// The policy a tenant names, or why it cannot be used.
pub(super) fn policy<T>(name: &str, found: Option<T>) -> Result<T, Refusal> {
    found.ok_or_else(|| Refusal::PolicyNotFound {
        policy: name.to_owned(),
    })
}

/// Whether a namespace with `labels` may use the policy.
pub(super) fn namespace(
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    Ok(policy::check_namespace(
        policy_name,
        policy,
        namespace,
        labels,
    )?)
}

/// The region and bucket: what the spec asks, else where the tenant lives, else the policy's
/// default. The bucket's name comes from the operator's settings, which must not have changed
/// under a tenant that has data.
pub(super) fn placement(tenant: &Tenant<'_>, record: &Record) -> Result<Placement, Refusal> {
    let region = policy::resolve_region(
        tenant.policy_name,
        tenant.policy,
        tenant.requested_region,
        record.region.as_deref(),
    )?;
    let desired = desired_in(tenant, region);
    let claimed = record.bucket_name.as_deref() == Some(desired.bucket.as_str());
    if let Some(recorded) = record.bucket_name.clone().filter(|_| !claimed) {
        return Err(Refusal::BucketNameChanged {
            recorded,
            now: desired.bucket,
        });
    }
    encryption_kept(tenant, record, &desired)?;
    let known_here = claimed && record.region.as_deref() == Some(desired.region.as_str());
    Ok(Placement {
        desired,
        claimed,
        known_here,
    })
}

/// A tenant keeps the encryption it was provisioned with: its data is encrypted that way, and
/// the operator neither re-encrypts it nor drops a key that protects it. A tenant that claimed
/// its bucket before the mode was recorded is a tenant-key one (the mode is recorded with every
/// claim now).
fn encryption_kept(tenant: &Tenant<'_>, record: &Record, desired: &Desired) -> Result<(), Refusal> {
    let legacy = record.bucket_name.is_some() || record.kms_key_arn.is_some();
    match record
        .encryption_mode
        .or(legacy.then_some(EncryptionMode::TenantKey))
    {
        Some(recorded) => same_mode(recorded, tenant, desired),
        None => Ok(()),
    }
}

/// Data encrypted with `found` stays so: the policy must ask for that mode.
fn same_mode(found: EncryptionMode, tenant: &Tenant<'_>, desired: &Desired) -> Result<(), Refusal> {
    if found == desired.encryption {
        return Ok(());
    }
    Err(Refusal::EncryptionModeChange {
        policy: tenant.policy_name.to_owned(),
        recorded: found,
        wanted: desired.encryption,
    })
}

fn desired_in(tenant: &Tenant<'_>, region: String) -> Desired {
    Desired::new(
        tenant.bucket_prefix,
        tenant.id,
        tenant.policy_name,
        tenant.policy,
        region,
    )
}

/// The bucket already exists in `actual`: it is used there if the policy allows that region
/// and the spec did not ask for another one (data is never moved).
pub(super) fn relocate(
    placement: &mut Placement,
    tenant: &Tenant<'_>,
    actual: &str,
) -> Result<(), Refusal> {
    policy::check_actual_region(tenant.policy_name, tenant.policy, actual)?;
    if actual == placement.desired.region {
        return Ok(());
    }
    if let Some(requested) = tenant.requested_region {
        return Err(Refusal::RegionMismatch {
            bucket: placement.desired.bucket.clone(),
            actual: actual.to_owned(),
            requested: requested.to_owned(),
        });
    }
    placement.desired = desired_in(tenant, actual.to_owned());
    Ok(())
}

/// Whether an existing bucket (its `tags`) may be used: it must be this tenant's, and a bucket
/// released under another policy is not re-adopted. `Ok(true)`: it exists unclaimed, left by
/// an earlier run, and is adopted.
pub(super) fn bucket_owner(
    tags: Option<&BTreeMap<String, String>>,
    tenant: &Tenant<'_>,
    desired: &Desired,
    claimed: bool,
) -> Result<bool, Refusal> {
    let Some(seen) = tags else { return Ok(false) };
    if let Ownership::Foreign(why) = plan::ownership(seen, tenant.id, claimed) {
        return Err(Refusal::BucketNotOurs {
            bucket: desired.bucket.clone(),
            why,
        });
    }
    if let Some(why) = plan::released_under_another_policy(seen, tenant.policy_name) {
        return Err(Refusal::ReleasedUnderAnotherPolicy {
            bucket: desired.bucket.clone(),
            why,
        });
    }
    if !claimed {
        adopted_encryption(seen, tenant, desired)?;
    }
    Ok(!claimed)
}

/// A bucket adopted (left by an earlier run, or released and taken back) must already be
/// encrypted the way the policy now asks: its objects are, and the operator does not re-encrypt
/// them. Adopting an SSE-S3 bucket as a tenant-key one would let a crypto-shred certify data the
/// key never protected; the reverse would leave data under a key no longer tracked. The tag
/// tells (S3 gives every new bucket SSE-S3, so its default encryption cannot): our tags without
/// the S3-managed mark are a tenant-key bucket's.
fn adopted_encryption(
    seen: &BTreeMap<String, String>,
    tenant: &Tenant<'_>,
    desired: &Desired,
) -> Result<(), Refusal> {
    let found = match seen.get(tags::ENCRYPTION).map(String::as_str) {
        Some("S3Managed") => EncryptionMode::S3Managed,
        _ => EncryptionMode::TenantKey,
    };
    same_mode(found, tenant, desired)
}

/// A bucket that turned out to exist when it was created: used only if it is this tenant's.
pub(super) fn created_bucket_owner(
    tags: &BTreeMap<String, String>,
    id: &TenantIdentity,
    bucket: &str,
) -> Result<(), Refusal> {
    match plan::ownership(tags, id, true) {
        Ownership::Ours => Ok(()),
        Ownership::Foreign(why) => Err(Refusal::BucketTakenMeanwhile {
            bucket: bucket.to_owned(),
            why,
        }),
    }
}

/// What the tenant key needs. `key_tags` are read when the key is seen for the first time
/// (or its alias was repointed): it must be this tenant's.
pub(super) fn key_changes(
    key: Option<&ObservedKey>,
    key_tags: Option<&BTreeMap<String, String>>,
    id: &TenantIdentity,
    desired: &Desired,
) -> Result<Vec<KeyChange>, Refusal> {
    if let (Some(key), Some(tags)) = (key, key_tags)
        && let Ownership::Foreign(why) = plan::ownership(tags, id, false)
    {
        return Err(Refusal::KeyConflict {
            alias: desired.key_alias.clone(),
            arn: key.arn.clone(),
            why,
        });
    }
    plan::key_changes(key).map_err(|unusable| Refusal::KeyNotUsable {
        alias: desired.key_alias.clone(),
        state: unusable.state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NamespaceSelector;

    #[test]
    fn a_missing_policy_or_an_unselected_namespace_is_refused_with_the_fix() {
        let missing = policy::<()>("eu", None).err();
        assert_eq!(
            missing.as_ref().map(Refusal::reason),
            Some("PolicyNotFound")
        );
        assert!(missing.is_some_and(|r| r.to_string().contains("spec.policyRef")));

        let mut spec = super::super::storage_tests::policy();
        let eu = BTreeMap::from([("jurisdiction".to_owned(), "eu".to_owned())]);
        spec.namespace_selector = Some(NamespaceSelector {
            match_labels: eu.clone(),
        });
        let refused = namespace("eu", &spec, "acme", &BTreeMap::new()).err();
        assert_eq!(
            refused.as_ref().map(Refusal::reason),
            Some("NamespaceNotAllowed")
        );
        assert!(refused.is_some_and(|r| r.to_string().contains("jurisdiction=eu")));
        assert_eq!(namespace("eu", &spec, "acme", &eu), Ok(()));
    }
}
