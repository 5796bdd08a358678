//! Who may touch a tenant's data: the tenant's workload role (trust policy, permissions,
//! boundary), the bucket-policy statement that keeps every other principal out, and, for a
//! customer-hosted bucket, the policies the customer must create. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use thiserror::Error;

use crate::api::AccessLevel;

use super::arn::Arn;
use super::identity::TenantIdentity;
use super::naming;
use super::policy_document::{PolicyDocument, Principal, Statement, normalize_policy};

/// Name of the one inline policy the operator keeps on a tenant role.
pub const INLINE_POLICY: &str = "tenant-storage-access";
/// Service-account annotation of EKS IRSA.
pub const IRSA_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// The cluster's OIDC identity provider, as registered in IAM (EKS IRSA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcProvider {
    /// `arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC`
    pub arn: String,
    /// Audience of the projected service-account tokens (`sts.amazonaws.com` on EKS).
    pub audience: String,
}

/// Why a flag does not name an IAM OIDC identity provider.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "{0:?}: expected an IAM OIDC provider ARN, e.g. arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC (aws eks describe-cluster --query cluster.identity.oidc.issuer gives the part after oidc-provider/)"
)]
pub struct NotAnOidcProvider(String);

impl OidcProvider {
    /// The issuer host and path, which prefixes the provider's condition keys (`<issuer>:sub`).
    pub fn issuer(&self) -> Option<&str> {
        self.arn
            .split_once(":oidc-provider/")
            .map(|(_, issuer)| issuer)
            .filter(|i| !i.is_empty())
    }

    /// Checks a provider ARN a human gives (`--oidc-provider-arn`): an IAM ARN in an AWS
    /// partition that names an issuer.
    pub fn parse_arn(text: &str) -> Result<String, NotAnOidcProvider> {
        let named = text.parse::<Arn>().is_ok_and(|arn| {
            arn.partition.starts_with("aws")
                && arn.service == "iam"
                && arn
                    .resource
                    .strip_prefix("oidc-provider/")
                    .is_some_and(|issuer| !issuer.is_empty())
        });
        named
            .then(|| text.to_owned())
            .ok_or_else(|| NotAnOidcProvider(text.to_owned()))
    }
}

/// The IAM role of a tenant's workloads.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredRole {
    pub name: String,
    pub path: String,
    pub arn: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub trust_policy: PolicyDocument,
    /// The inline policy; `None` while the role may do nothing yet (a delegated tenant whose
    /// customer setup is not verified).
    pub inline_policy: Option<PolicyDocument>,
    pub permissions_boundary: Option<String>,
}

/// Where a tenant's role lives and what it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleName {
    pub name: String,
    pub path: String,
    pub arn: String,
}

impl RoleName {
    pub fn of(partition: &str, account_id: &str, id: &TenantIdentity) -> Self {
        let path = naming::role_path(&id.cluster_id);
        let name = naming::role_name(&id.cluster_id, &id.namespace, &id.name);
        RoleName {
            arn: Arn::role(partition, account_id, &path, &name).to_string(),
            path,
            name,
        }
    }
}

/// Trust policy admitting exactly `service_accounts` of `namespace` through the cluster's OIDC
/// provider, with the token audience pinned.
pub fn irsa_trust_policy(
    oidc: &OidcProvider,
    issuer: &str,
    namespace: &str,
    service_accounts: &[String],
) -> PolicyDocument {
    let subjects = service_accounts
        .iter()
        .map(|sa| format!("system:serviceaccount:{namespace}:{sa}"));
    PolicyDocument::new(vec![
        Statement::allow("TenantServiceAccounts")
            .principal(Principal::federated(&oidc.arn))
            .action("sts:AssumeRoleWithWebIdentity")
            .condition("StringEquals", format!("{issuer}:aud"), &oidc.audience)
            .condition_any("StringEquals", format!("{issuer}:sub"), subjects),
    ])
}

/// The `kms:ViaService` value of S3 in `region` (China regions have their own domain).
pub(crate) fn s3_via(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("s3.{region}.{domain}")
}

/// Object-level actions of an access level.
fn object_actions(level: AccessLevel) -> Vec<&'static str> {
    let mut actions = vec!["s3:GetObject", "s3:GetObjectVersion"];
    if level == AccessLevel::ReadWrite {
        // DeleteObject only adds a delete marker on a versioned bucket; versions are destroyed
        // only by a DataDeletionRequest, so DeleteObjectVersion is never granted.
        actions.extend([
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        ]);
    }
    actions
}

/// Bucket-level actions of an access level.
fn bucket_actions(level: AccessLevel) -> Vec<&'static str> {
    let mut actions = vec!["s3:ListBucket", "s3:GetBucketLocation"];
    if level == AccessLevel::ReadWrite {
        actions.push("s3:ListBucketMultipartUploads");
    }
    actions
}

/// The tenant role's permissions on a bucket the operator manages: the access level's actions
/// on this bucket and its objects only, and the tenant key only through S3 in the bucket's
/// region (`kms:ViaService`), so the key cannot be used directly; no key for a bucket
/// encrypted with S3-managed keys.
pub fn managed_access_policy(
    level: AccessLevel,
    bucket_arn: &str,
    key_arn: Option<&str>,
    region: &str,
) -> PolicyDocument {
    let mut statements = vec![
        Statement::allow("TenantBucket")
            .actions(bucket_actions(level))
            .resource(bucket_arn),
        Statement::allow("TenantObjects")
            .actions(object_actions(level))
            .resource(format!("{bucket_arn}/*")),
    ];
    // A bucket with S3-managed keys needs no KMS permission at all.
    statements.extend(key_arn.map(|key| {
        Statement::allow("TenantKeyThroughS3")
            .actions(key_actions(level))
            .resource(key)
            .condition("StringEquals", "kms:ViaService", s3_via(region))
    }));
    PolicyDocument::new(statements)
}

/// KMS actions of an access level: decrypt to read, a data key to write.
fn key_actions(level: AccessLevel) -> Vec<&'static str> {
    let mut actions = vec!["kms:Decrypt"];
    if level == AccessLevel::ReadWrite {
        actions.push("kms:GenerateDataKey");
    }
    actions
}

/// The workload role of a delegated tenant may only assume the customer's role (role
/// chaining), so pods never hold the customer's credentials themselves.
pub fn chaining_policy(customer_role_arn: &str) -> PolicyDocument {
    PolicyDocument::new(vec![
        Statement::allow("AssumeCustomerRole")
            .action("sts:AssumeRole")
            .resource(customer_role_arn),
    ])
}

/// Bucket-policy statement denying everyone but `allowed` principal ARNs (the tenant role, the
/// operator, the deletion jobs, break-glass admins). Patterns may use `*`.
pub fn deny_other_principals(bucket_arn: &str, allowed: &[String]) -> Statement {
    let mut allowed = allowed.to_vec();
    allowed.sort();
    allowed.dedup();
    Statement::deny("DenyOtherPrincipals")
        .principal(Principal::Everyone)
        .action("s3:*")
        .resources([bucket_arn.to_owned(), format!("{bucket_arn}/*")])
        .condition_any("ArnNotLike", "aws:PrincipalArn", allowed)
}

/// The trust policy the customer's role must have. The operator (which serves every tenant,
/// so could be a confused deputy) may assume it only with this tenant's ExternalId; the
/// tenant's own workload role, which exists for this tenant alone, may assume it (role
/// chaining) without it, so pods never need the ExternalId.
pub fn customer_trust_policy(
    operator: &str,
    external_id: &str,
    tenant_role: Option<&str>,
) -> PolicyDocument {
    let verifies = Statement::allow("TenantStorageOperatorVerifies")
        .principal(Principal::aws(operator))
        .action("sts:AssumeRole")
        .condition("StringEquals", "sts:ExternalId", external_id);
    let workloads = tenant_role.map(|role| {
        Statement::allow("TenantWorkloads")
            .principal(Principal::aws(role))
            .action("sts:AssumeRole")
    });
    PolicyDocument::new([verifies].into_iter().chain(workloads).collect())
}

/// The permissions the customer's role needs: read the bucket's configuration (for
/// verification; never write it) and the access level's data actions, and use of the bucket's
/// KMS keys only through S3. The bucket must be in one of `regions` (the policy's), so the KMS
/// statement names those and does not change once the bucket's region is known.
pub fn customer_permissions_policy(
    level: AccessLevel,
    bucket_arn: &str,
    customer_account: &str,
    regions: &[String],
    partition: &str,
) -> PolicyDocument {
    let mut bucket = bucket_actions(level);
    bucket.extend([
        "s3:GetEncryptionConfiguration",
        "s3:GetBucketPublicAccessBlock",
    ]);
    let keys = regions
        .iter()
        .map(|r| Arn::kms_key(partition, r, customer_account, "*"));
    PolicyDocument::new(vec![
        Statement::allow("Bucket")
            .actions(bucket)
            .resource(bucket_arn),
        Statement::allow("Objects")
            .actions(object_actions(level))
            .resource(format!("{bucket_arn}/*")),
        Statement::allow("BucketKeysThroughS3")
            .actions(key_actions(level))
            .resources(keys)
            .condition_any(
                "StringEquals",
                "kms:ViaService",
                regions.iter().map(|r| s3_via(r)),
            ),
    ])
}

/// A tenant role as observed in IAM.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObservedRole {
    pub tags: BTreeMap<String, String>,
    pub trust_policy: Value,
    pub permissions_boundary: Option<String>,
    /// Inline policies by name.
    pub inline_policies: BTreeMap<String, Value>,
    /// ARNs of attached managed policies.
    pub attached_policies: Vec<String>,
}

/// A digest of everything the operator compares in a role (tags, trust, boundary, inline and
/// attached policies, policies normalised): roles with equal digests need the same changes. A
/// sweep of every tenant role keeps these instead of the documents, a few bytes per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleDigest([u8; 32]);

impl ObservedRole {
    pub fn digest(&self) -> RoleDigest {
        use sha2::{Digest, Sha256};
        let inline: BTreeMap<&String, Value> = self
            .inline_policies
            .iter()
            .map(|(name, policy)| (name, normalize_policy(policy)))
            .collect();
        let mut attached: Vec<&String> = self.attached_policies.iter().collect();
        attached.sort();
        // serde_json writes maps in key order, so equal roles serialise to equal bytes.
        let canonical = json!([
            self.tags,
            normalize_policy(&self.trust_policy),
            self.permissions_boundary,
            inline,
            attached
        ]);
        RoleDigest(Sha256::digest(canonical.to_string().as_bytes()).into())
    }
}

impl DesiredRole {
    /// The role as IAM shows it when it is in shape: nothing in [`role_changes`] to do.
    pub fn in_shape(&self) -> ObservedRole {
        ObservedRole {
            tags: self.tags.clone(),
            trust_policy: self.trust_policy.to_json(),
            permissions_boundary: self.permissions_boundary.clone(),
            inline_policies: self
                .inline_policy
                .iter()
                .map(|policy| (INLINE_POLICY.to_owned(), policy.to_json()))
                .collect(),
            attached_policies: Vec::new(),
        }
    }
}

/// One step that brings the role to its desired state.
#[derive(Clone, Debug, PartialEq)]
pub enum RoleChange {
    /// Create the role with its trust policy, tags and boundary.
    Create,
    UpdateTrust,
    PutInlinePolicy,
    DeleteInlinePolicy(String),
    DetachPolicy(String),
    SetBoundary(String),
    RemoveBoundary,
}

impl RoleChange {
    /// What the change restores, for drift events.
    pub fn setting(&self) -> &'static str {
        match self {
            RoleChange::Create => "role",
            RoleChange::UpdateTrust => "roleTrustPolicy",
            RoleChange::PutInlinePolicy | RoleChange::DeleteInlinePolicy(_) => "rolePolicy",
            RoleChange::DetachPolicy(_) => "roleAttachedPolicies",
            RoleChange::SetBoundary(_) | RoleChange::RemoveBoundary => "rolePermissionsBoundary",
        }
    }
}

/// The changes that make `observed` match `desired`. Anything that widens the role (another
/// inline policy, an attached managed policy) is removed: the role grants exactly what the
/// operator computed.
pub fn role_changes(desired: &DesiredRole, observed: Option<&ObservedRole>) -> Vec<RoleChange> {
    let Some(observed) = observed else {
        let mut changes = vec![RoleChange::Create];
        if desired.inline_policy.is_some() {
            changes.push(RoleChange::PutInlinePolicy);
        }
        return changes;
    };
    let mut changes = Vec::new();
    if !desired.trust_policy.same_as(&observed.trust_policy) {
        changes.push(RoleChange::UpdateTrust);
    }
    match (
        &desired.permissions_boundary,
        &observed.permissions_boundary,
    ) {
        (Some(want), have) if have.as_ref() != Some(want) => {
            changes.push(RoleChange::SetBoundary(want.clone()))
        }
        (None, Some(_)) => changes.push(RoleChange::RemoveBoundary),
        _ => {}
    }
    for (name, _) in observed
        .inline_policies
        .iter()
        .filter(|(name, _)| name.as_str() != INLINE_POLICY || desired.inline_policy.is_none())
    {
        changes.push(RoleChange::DeleteInlinePolicy(name.clone()));
    }
    if let Some(want) = &desired.inline_policy
        && observed
            .inline_policies
            .get(INLINE_POLICY)
            .is_none_or(|have| !want.same_as(have))
    {
        changes.push(RoleChange::PutInlinePolicy);
    }
    for arn in &observed.attached_policies {
        changes.push(RoleChange::DetachPolicy(arn.clone()));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::policy_document::Effect;

    const BUCKET: &str = "arn:aws:s3:::tso-acme-data-0123456789ab";
    const KEY: &str = "arn:aws:kms:eu-central-1:000000000000:key/1234";

    fn oidc() -> OidcProvider {
        OidcProvider {
            arn:
                "arn:aws:iam::000000000000:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC"
                    .into(),
            audience: "sts.amazonaws.com".into(),
        }
    }

    fn role(level: AccessLevel, boundary: Option<&str>) -> DesiredRole {
        let oidc = oidc();
        let issuer = oidc.issuer().unwrap_or_default().to_owned();
        DesiredRole {
            name: "tenant-acme-data-0123456789ab".into(),
            path: "/tenant-storage-operator/c1/".into(),
            arn: "arn:aws:iam::000000000000:role/tenant-storage-operator/c1/tenant-acme-data-0123456789ab".into(),
            description: "d".into(),
            tags: BTreeMap::new(),
            trust_policy: irsa_trust_policy(&oidc, &issuer, "acme", &["app".into()]),
            inline_policy: Some(managed_access_policy(level, BUCKET, Some(KEY), "eu-central-1")),
            permissions_boundary: boundary.map(str::to_owned),
        }
    }

    #[test]
    fn a_role_in_shape_needs_nothing_and_its_digest_ignores_how_iam_writes_policies() {
        let desired = role(
            AccessLevel::ReadWrite,
            Some("arn:aws:iam::000000000000:policy/b"),
        );
        let in_shape = desired.in_shape();
        assert_eq!(role_changes(&desired, Some(&in_shape)), vec![]);
        // As IAM may return it: keys reordered, one-element arrays as scalars.
        let mut rewritten = in_shape.clone();
        let reordered: serde_json::Map<String, Value> = match &in_shape.trust_policy {
            Value::Object(map) => map
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => panic!("the trust policy is an object"),
        };
        rewritten.trust_policy = normalize_policy(&Value::Object(reordered));
        assert_eq!(rewritten.digest(), in_shape.digest());
        let changes: [fn(&mut ObservedRole); 5] = [
            |r| {
                r.tags.insert("extra".into(), "x".into());
            },
            |r| r.trust_policy = json!({}),
            |r| r.permissions_boundary = None,
            |r| {
                r.inline_policies.insert("other".into(), json!({}));
            },
            |r| {
                r.attached_policies
                    .push("arn:aws:iam::aws:policy/AdministratorAccess".into())
            },
        ];
        for change in changes {
            let mut drifted = in_shape.clone();
            change(&mut drifted);
            assert_ne!(drifted.digest(), in_shape.digest(), "{drifted:?}");
        }
    }

    #[test]
    fn issuer_comes_from_the_provider_arn() {
        assert_eq!(
            oidc().issuer(),
            Some("oidc.eks.eu-central-1.amazonaws.com/id/ABC")
        );
        let bad = OidcProvider {
            arn: "arn:aws:iam::000000000000:role/x".into(),
            audience: "sts.amazonaws.com".into(),
        };
        assert_eq!(bad.issuer(), None);
    }

    #[test]
    fn provider_arns_given_by_humans() {
        let good = "arn:aws:iam::1:oidc-provider/oidc.example/id/A";
        assert_eq!(OidcProvider::parse_arn(good).as_deref(), Ok(good));
        for bad in [
            "https://oidc.example/id/A",
            "arn:aws:iam::1:oidc-provider/",
            "arn:aws:iam::1:role/x",
            "arn:aws:s3:::oidc-provider/x",
        ] {
            let err = OidcProvider::parse_arn(bad).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains("oidc-provider/"), "{bad}: {err}");
        }
    }

    #[test]
    fn trust_admits_exactly_the_listed_service_accounts_with_the_audience() {
        let trust = irsa_trust_policy(
            &oidc(),
            "oidc.example/id/ABC",
            "acme",
            &["app".into(), "etl".into()],
        );
        let [statement] = trust.statements.as_slice() else {
            panic!("one statement: {trust}");
        };
        assert_eq!(statement.actions_named(), ["sts:AssumeRoleWithWebIdentity"]);
        assert_eq!(statement.principal, Some(Principal::federated(oidc().arn)));
        let values = |key| statement.condition_values("StringEquals", key);
        assert_eq!(
            values("oidc.example/id/ABC:sub"),
            [
                "system:serviceaccount:acme:app",
                "system:serviceaccount:acme:etl"
            ]
        );
        assert_eq!(values("oidc.example/id/ABC:aud"), ["sts.amazonaws.com"]);
    }

    #[test]
    fn read_only_grants_no_write_and_no_data_key() {
        let policy =
            managed_access_policy(AccessLevel::ReadOnly, BUCKET, Some(KEY), "eu-central-1");
        let text = policy.to_string();
        for write in [
            "s3:PutObject",
            "s3:DeleteObject",
            "kms:GenerateDataKey",
            "Multipart",
        ] {
            assert!(!text.contains(write), "{write} in {text}");
        }
        assert!(text.contains("s3:GetObject"));
        let rw = managed_access_policy(AccessLevel::ReadWrite, BUCKET, Some(KEY), "eu-central-1");
        assert!(rw.to_string().contains("s3:PutObject"));
        assert!(!rw.to_string().contains("DeleteObjectVersion"));
    }

    #[test]
    fn permissions_name_only_this_bucket_and_key_and_the_key_only_through_s3() {
        let policy =
            managed_access_policy(AccessLevel::ReadWrite, BUCKET, Some(KEY), "eu-central-1");
        for statement in &policy.statements {
            let [resource] = statement.resources_named() else {
                panic!("one resource: {statement:?}");
            };
            let resource = resource.as_str();
            assert!(
                resource == BUCKET || resource == format!("{BUCKET}/*") || resource == KEY,
                "{resource}"
            );
            assert!(!resource.contains('*') || resource == format!("{BUCKET}/*"));
        }
        let key = policy
            .statement("TenantKeyThroughS3")
            .expect("the key statement");
        assert_eq!(
            key.condition_values("StringEquals", "kms:ViaService"),
            ["s3.eu-central-1.amazonaws.com"]
        );
        assert_eq!(s3_via("cn-north-1"), "s3.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn an_up_to_date_role_needs_no_change() {
        let desired = role(
            AccessLevel::ReadWrite,
            Some("arn:aws:iam::000000000000:policy/b"),
        );
        assert_eq!(role_changes(&desired, Some(&desired.in_shape())), vec![]);
    }

    #[test]
    fn a_missing_role_is_created_with_its_policy() {
        let desired = role(AccessLevel::ReadWrite, None);
        assert_eq!(
            role_changes(&desired, None),
            vec![RoleChange::Create, RoleChange::PutInlinePolicy]
        );
    }

    #[test]
    fn changed_service_accounts_and_level_update_in_place() {
        let before = role(AccessLevel::ReadWrite, None);
        let mut after = role(AccessLevel::ReadOnly, None);
        let oidc = oidc();
        after.trust_policy = irsa_trust_policy(
            &oidc,
            oidc.issuer().unwrap_or_default(),
            "acme",
            &["app".into(), "reporting".into()],
        );
        assert_eq!(
            role_changes(&after, Some(&before.in_shape())),
            vec![RoleChange::UpdateTrust, RoleChange::PutInlinePolicy]
        );
    }

    #[test]
    fn anything_that_widens_the_role_is_removed() {
        let desired = role(AccessLevel::ReadOnly, None);
        let mut seen = desired.in_shape();
        seen.inline_policies
            .insert("extra".into(), json!({"Statement": []}));
        seen.attached_policies
            .push("arn:aws:iam::aws:policy/AmazonS3FullAccess".into());
        seen.permissions_boundary = Some("arn:aws:iam::000000000000:policy/b".into());
        assert_eq!(
            role_changes(&desired, Some(&seen)),
            vec![
                RoleChange::RemoveBoundary,
                RoleChange::DeleteInlinePolicy("extra".into()),
                RoleChange::DetachPolicy("arn:aws:iam::aws:policy/AmazonS3FullAccess".into()),
            ]
        );
    }

    #[test]
    fn an_unverified_delegation_leaves_the_role_without_permissions() {
        let mut desired = role(AccessLevel::ReadWrite, None);
        let seen = desired.in_shape();
        desired.inline_policy = None;
        assert_eq!(
            role_changes(&desired, Some(&seen)),
            vec![RoleChange::DeleteInlinePolicy(INLINE_POLICY.into())]
        );
    }

    #[test]
    fn other_principals_are_denied_except_the_allowed_ones() {
        let statement = deny_other_principals(BUCKET, &["b".into(), "a".into(), "b".into()]);
        assert_eq!(statement.effect, Effect::Deny);
        assert_eq!(
            statement.condition_values("ArnNotLike", "aws:PrincipalArn"),
            ["a", "b"]
        );
    }

    #[test]
    fn the_customer_trust_requires_the_external_id_of_the_operator() {
        let trust = customer_trust_policy(
            "arn:aws:iam::000000000000:role/operator",
            "abc",
            Some("arn:aws:iam::000000000000:role/tenant"),
        );
        let [operator, workloads] = trust.statements.as_slice() else {
            panic!("two statements: {trust}");
        };
        assert_eq!(
            operator.condition_values("StringEquals", "sts:ExternalId"),
            ["abc"]
        );
        assert_eq!(
            operator.principal,
            Some(Principal::aws("arn:aws:iam::000000000000:role/operator"))
        );
        assert_eq!(
            workloads.principal,
            Some(Principal::aws("arn:aws:iam::000000000000:role/tenant"))
        );
        assert!(workloads.condition.is_empty());
        let alone = customer_trust_policy("arn:aws:iam::000000000000:role/operator", "abc", None);
        assert_eq!(alone.statements.len(), 1);
        let chaining = chaining_policy("arn:aws:iam::111111111111:role/c");
        assert_eq!(
            chaining.statements[0].resources_named(),
            ["arn:aws:iam::111111111111:role/c"]
        );
    }
}
