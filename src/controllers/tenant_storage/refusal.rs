//! Why a tenant is not provisioned: each refusal names what is wrong and what fixes it, and its
//! reason becomes the Ready condition's.

use thiserror::Error;

use crate::api::EncryptionMode;
use crate::policy::ResidencyError;

/// A decision not to provision (or not to go on), as opposed to a failure to retry.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub(crate) enum Refusal {
    #[error(
        "ResidencyPolicy {policy:?} (spec.policyRef) does not exist: create it or point spec.policyRef at an existing policy (kubectl get rp)"
    )]
    PolicyNotFound { policy: String },
    #[error(transparent)]
    Residency(#[from] ResidencyError),
    #[error(
        "bucket {bucket} already exists in {actual}, but spec.region is {requested}; data is never moved: set spec.region to {actual} or remove it"
    )]
    RegionMismatch {
        bucket: String,
        actual: String,
        requested: String,
    },
    #[error(
        "this tenant's data is in bucket {recorded}, but the operator's settings now name it {now}: --bucket-prefix or --cluster-id changed. Restore the previous settings; the operator never switches a tenant to another bucket"
    )]
    BucketNameChanged { recorded: String, now: String },
    #[error(
        "bucket {bucket} exists but HEAD is forbidden: it belongs to another AWS account (choose another --bucket-prefix or TenantStorage name), or the operator lacks s3:ListBucket on it. It is not touched"
    )]
    BucketInOtherAccount { bucket: String },
    #[error(
        "bucket {bucket} already exists and is not this tenant's: {why}. The operator never modifies or deletes it; delete this TenantStorage or use another name"
    )]
    BucketNotOurs { bucket: String, why: String },
    #[error(
        "bucket {bucket} appeared while it was being created and is not this tenant's: {why}. It is not touched"
    )]
    BucketTakenMeanwhile { bucket: String, why: String },
    #[error(
        "bucket {bucket} is not adopted: {why}. Use that policy, or another TenantStorage name"
    )]
    ReleasedUnderAnotherPolicy { bucket: String, why: String },
    #[error(
        "KMS alias {alias} points at key {arn}, which is not this tenant's: {why}. The operator does not use or delete it; point the alias back at the tenant's key or delete the alias"
    )]
    KeyConflict {
        alias: String,
        arn: String,
        why: String,
    },
    #[error(
        "KMS key {alias} is {state}; the operator does not re-enable a key someone disabled or scheduled for deletion. Enable it (or cancel its deletion) in KMS if that was a mistake"
    )]
    KeyNotUsable { alias: String, state: String },
    #[error(
        "spec.access needs the cluster's IAM OIDC provider, which the operator was not given: set --oidc-provider-arn (Helm value access.oidcProviderArn), or remove spec.access"
    )]
    OidcProviderNotConfigured,
    #[error(
        "IAM role {role} already exists and is not this tenant's: {why}. The operator neither uses nor modifies it; delete it or rename this TenantStorage"
    )]
    RoleConflict { role: String, why: String },
    #[error(
        "the ResidencyPolicy's spec.access.permissionsBoundaryArn {boundary} does not exist or cannot be attached ({error}); create that managed policy in this account or correct the ARN"
    )]
    PermissionsBoundaryNotFound { boundary: String, error: String },
    #[error(
        "{field} is in AWS partition {given}, but ResidencyPolicy {policy} places data in {partition} regions: name a role and bucket in {partition}"
    )]
    PartitionMismatch {
        field: &'static str,
        given: String,
        policy: String,
        partition: String,
    },
    #[error(
        "spec.delegated.roleArn {role} is in the operator's own AWS account; delegated mode reaches a bucket in the customer's account through a role the customer grants. Use mode Managed for buckets in this account"
    )]
    RoleInOwnAccount { role: String },
    #[error(
        "this tenant's data is encrypted with {recorded:?}, but ResidencyPolicy {policy} now says encryption.mode {wanted:?}: the operator neither re-encrypts data nor drops a key that protects it. Restore encryption.mode {recorded:?} in the policy, or move the data deliberately to a new TenantStorage"
    )]
    EncryptionModeChange {
        policy: String,
        recorded: EncryptionMode,
        wanted: EncryptionMode,
    },
    #[error("{field} is not a valid ARN: {error}; correct it")]
    InvalidArn { field: &'static str, error: String },
}

/// What a refusal says about a status condition besides Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// ResidencyCompliant=False with the refusal's reason.
    Residency,
    /// Encrypted=False with the refusal's reason.
    Encryption,
    /// Nothing but Ready.
    None,
}

impl Refusal {
    /// The condition reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::PolicyNotFound { .. } => "PolicyNotFound",
            Refusal::Residency(e) => e.reason(),
            Refusal::RegionMismatch { .. } => "RegionMismatch",
            Refusal::BucketNameChanged { .. } => "BucketNameChanged",
            Refusal::BucketInOtherAccount { .. }
            | Refusal::BucketNotOurs { .. }
            | Refusal::BucketTakenMeanwhile { .. } => "BucketConflict",
            Refusal::ReleasedUnderAnotherPolicy { .. } => "ReleasedUnderAnotherPolicy",
            Refusal::KeyConflict { .. } => "KeyConflict",
            Refusal::KeyNotUsable { .. } => "KeyNotUsable",
            Refusal::OidcProviderNotConfigured => "OidcProviderNotConfigured",
            Refusal::RoleConflict { .. } => "RoleConflict",
            Refusal::PermissionsBoundaryNotFound { .. } => "PermissionsBoundaryNotFound",
            Refusal::PartitionMismatch { .. } => "PartitionMismatch",
            Refusal::RoleInOwnAccount { .. } => "RoleInOwnAccount",
            Refusal::InvalidArn { .. } => "InvalidArn",
            Refusal::EncryptionModeChange { .. } => "EncryptionModeChangeRefused",
        }
    }

    /// Whether this refusal can come after the tenant was provisioned, its data in place: the
    /// policy changed or went away under it (not a conflict over a bucket that is not ours).
    pub(crate) fn after_the_fact(&self) -> bool {
        matches!(
            self,
            Refusal::PolicyNotFound { .. }
                | Refusal::Residency(_)
                | Refusal::EncryptionModeChange { .. }
        )
    }

    pub(crate) fn verdict(&self) -> Verdict {
        match self {
            Refusal::Residency(_) | Refusal::RegionMismatch { .. } => Verdict::Residency,
            Refusal::KeyConflict { .. } | Refusal::KeyNotUsable { .. } => Verdict::Encryption,
            _ => Verdict::None,
        }
    }
}
