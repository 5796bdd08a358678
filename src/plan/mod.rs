//! The pure core: from spec + policy + observed cloud state to the list of changes, and the
//! vocabulary they share (tenant identity and its tags, ARNs, names, IAM policies).
//!
//! Nothing here does I/O, so the whole decision logic is unit tested without a server.

pub mod access;
mod arn;
pub mod backup;
mod desired;
mod diff;
pub mod iam_policy;
mod identity;
pub mod naming;
pub mod policy_document;
pub mod principal;
pub mod replication;

pub use arn::{Arn, ArnError, NotAnAccountId, parse_account_id, partition_of};
pub use desired::{Desired, DesiredEvidence, DesiredExports, DesiredLogBucket};
pub use diff::{
    BucketChange, BucketShape, DefaultEncryption, EncryptionRequirement, KeyChange, KeyNotUsable,
    LoggingTarget, ObservedBucket, ObservedEncryption, ObservedKey, Ownership, PublicAccessBlock,
    bucket_changes, key_changes, ownership, released_under_another_policy,
};
pub use identity::{TenantIdentity, operator_tags, same_operator_resource, tags, tenant_tags};
pub use policy_document::PolicyDocument;
