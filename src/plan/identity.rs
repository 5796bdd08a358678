//! Who a tenant is, and the tags that say a resource is a tenant's or the operator's: the one
//! place the identity-tag set is written out, for building tags and for proving ownership.

use std::collections::BTreeMap;

/// Tag keys that prove the operator owns a resource.
pub mod tags {
    pub const MANAGED_BY: &str = "tenancy.dev/managed-by";
    pub const CLUSTER: &str = "tenancy.dev/cluster-id";
    pub const NAMESPACE: &str = "tenancy.dev/namespace";
    pub const NAME: &str = "tenancy.dev/name";
    pub const POLICY: &str = "tenancy.dev/policy";
    pub const JURISDICTION: &str = "tenancy.dev/jurisdiction";
    /// What an operator-owned bucket is for, when it is not a tenant's (`access-logs`).
    pub const ROLE: &str = "tenancy.dev/role";
    /// `S3Managed` on the bucket of a tenant encrypted with S3-managed keys; absent with the
    /// tenant key (so buckets from before the mode existed need no new tag).
    pub const ENCRYPTION: &str = "tenancy.dev/encryption";
    /// `replica` on a tenant's replica bucket, its key and its replication role.
    pub const COPY: &str = "tenancy.dev/copy";
    /// Set when the TenantStorage was deleted with `deletionPolicy: Retain`.
    pub const RELEASED: &str = "tenancy.dev/released";
    /// Value of [`MANAGED_BY`].
    pub const OPERATOR: &str = "tenant-storage-operator";
}

/// Who a tenant is, as far as naming and ownership go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantIdentity {
    pub cluster_id: String,
    pub namespace: String,
    pub name: String,
}

impl TenantIdentity {
    /// The tags that identify this tenant's resources (not the ones that may legitimately
    /// change, like the policy), as key and expected value.
    pub fn tag_values(&self) -> [(&'static str, &str); 4] {
        [
            (tags::MANAGED_BY, tags::OPERATOR),
            (tags::CLUSTER, &self.cluster_id),
            (tags::NAMESPACE, &self.namespace),
            (tags::NAME, &self.name),
        ]
    }

    /// [`Self::tag_values`] as a tag set, e.g. to find or re-tag a resource of this tenant.
    pub fn tags(&self) -> BTreeMap<String, String> {
        owned(self.tag_values())
    }
}

/// Tags of every resource of a tenant: who owns it, and the policy it answers to.
pub fn tenant_tags(
    id: &TenantIdentity,
    policy_name: &str,
    jurisdiction: &str,
) -> BTreeMap<String, String> {
    let mut all = id.tags();
    all.extend(owned([
        (tags::POLICY, policy_name),
        (tags::JURISDICTION, jurisdiction),
    ]));
    all
}

/// The tags that identify a resource the operator itself owns in a cluster (not a tenant's):
/// whose it is and what it is for.
const OPERATOR_IDENTITY: [&str; 3] = [tags::MANAGED_BY, tags::CLUSTER, tags::ROLE];

/// Tags of a resource the operator itself owns in a cluster: what it is for goes in
/// [`tags::ROLE`].
pub fn operator_tags(cluster_id: &str, role: &str) -> BTreeMap<String, String> {
    let [managed_by, cluster, role_key] = OPERATOR_IDENTITY;
    owned([
        (managed_by, tags::OPERATOR),
        (cluster, cluster_id),
        (role_key, role),
    ])
}

/// Whether tags `seen` on a resource say it is the operator-owned resource tagged `want`.
pub fn same_operator_resource(
    seen: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> bool {
    OPERATOR_IDENTITY
        .iter()
        .all(|k| seen.get(*k) == want.get(*k))
}

fn owned<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TenantIdentity {
        TenantIdentity {
            cluster_id: "c1".into(),
            namespace: "acme".into(),
            name: "data".into(),
        }
    }

    #[test]
    fn tenant_tags_are_the_identity_and_the_policy() {
        let all = tenant_tags(&id(), "eu", "EU");
        assert_eq!(all.len(), 6);
        assert!(id().tags().iter().all(|(k, v)| all.get(k) == Some(v)));
        assert_eq!(all[tags::MANAGED_BY], "tenant-storage-operator");
        assert_eq!(all[tags::NAMESPACE], "acme");
        assert_eq!(all[tags::POLICY], "eu");
        assert_eq!(all[tags::JURISDICTION], "EU");
    }

    #[test]
    fn operator_tags_name_no_tenant() {
        let all = operator_tags("c1", "access-logs");
        assert_eq!(all[tags::CLUSTER], "c1");
        assert_eq!(all[tags::ROLE], "access-logs");
        assert!(!all.contains_key(tags::NAMESPACE));
        let mut seen = all.clone();
        seen.insert(tags::POLICY.into(), "any".into());
        assert!(same_operator_resource(&seen, &all));
        seen.insert(tags::CLUSTER.into(), "c2".into());
        assert!(!same_operator_resource(&seen, &all));
    }
}
