//! The pure core: from spec + policy + observed cloud state to the list of changes.
//!
//! Nothing here does I/O, so the whole decision logic is unit tested without a server and the
//! change list can be shown to users as a dry run.

pub mod access;
mod desired;
mod diff;
pub mod iam_policy;
pub mod naming;

pub use desired::{
    Desired, DesiredEvidence, DesiredLogBucket, TenantIdentity, partition_of, tags, tenant_tags,
};
pub use diff::{
    BucketChange, BucketShape, DefaultEncryption, KeyChange, KeyNotUsable, LoggingTarget,
    ObservedBucket, ObservedEncryption, ObservedKey, Ownership, PublicAccessBlock, bucket_changes,
    key_changes, normalize_policy, ownership, released_under_another_policy,
};
