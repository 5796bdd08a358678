//! A tenant refused after it was provisioned (its policy deleted, its region or namespace no
//! longer allowed, its encryption mode changed under it) keeps its data where it is, and every
//! copy of that data stays locked down: Block Public Access, object ownership, its encryption
//! and the bucket policy are still corrected, and unless the policy says `Writable` the bucket
//! policy refuses workloads' writes. Nothing is created, and a bucket that is not provably this
//! tenant's is never touched.

use std::collections::BTreeMap;

use super::record::Record;
use crate::api::{EncryptionMode, RefusedTenantAccess, ResidencyPolicySpec};
use crate::cloud::port::{Buckets, Regions};
use crate::cloud::{BucketPresence, ObservedTags};
use crate::controllers::Error;
use crate::plan::{
    self, BucketChange, DefaultEncryption, Desired, Ownership, TenantIdentity, bucket_changes,
};

/// The tenant as this stage needs it.
pub(super) struct Refused<'a> {
    pub id: &'a TenantIdentity,
    pub bucket_prefix: &'a str,
    /// The tenant's policy, if it still exists.
    pub policy: Option<(&'a str, &'a ResidencyPolicySpec)>,
    /// The jurisdiction recorded in status, for a tenant whose policy is gone.
    pub jurisdiction: &'a str,
    /// Principals the bucket policy admits (the operator's, the admins', the tenant's roles).
    pub allowed_principals: Vec<String>,
}

/// One copy the record names.
struct Copy {
    bucket: String,
    region: String,
    encryption: DefaultEncryption,
    replica: bool,
}

/// What was corrected, per bucket.
pub(super) type Corrected = Vec<(String, Vec<BucketChange>)>;

/// Locks down every copy the record names; returns what had to be corrected.
pub(super) async fn lock_down<C: Regions>(
    cloud: &C,
    tenant: &Refused<'_>,
    record: &Record,
) -> Result<Corrected, Error> {
    let fallback;
    let (policy_name, policy) = match tenant.policy {
        Some(found) => found,
        None => {
            fallback = policy_gone(tenant.jurisdiction, record);
            ("", &fallback)
        }
    };
    let read_only = tenant
        .policy
        .is_none_or(|(_, p)| p.refused_tenant_access == RefusedTenantAccess::ReadOnly);
    let mut corrected = Vec::new();
    for copy in copies(record) {
        let region = cloud.region(&copy.region);
        let Some(tags) = ours(&region, tenant.id, &copy.bucket).await? else {
            continue;
        };
        let mut desired = Desired::new(
            tenant.bucket_prefix,
            tenant.id,
            policy_name,
            policy,
            copy.region.clone(),
        );
        desired.bucket = copy.bucket.clone();
        desired.replica = copy.replica;
        desired.read_only = read_only && !copy.replica;
        desired.allowed_principals = tenant.allowed_principals.clone();
        let shape = desired.lockdown_shape(&copy.encryption);
        let observed = region.observe(&copy.bucket, tags, &shape).await?;
        let changes = bucket_changes(&shape, Some(&observed));
        for change in &changes {
            region.change(&copy.bucket, change).await?;
        }
        if !changes.is_empty() {
            corrected.push((copy.bucket, changes));
        }
    }
    Ok(corrected)
}

/// The copies the record names, with the encryption each was given.
fn copies(record: &Record) -> Vec<Copy> {
    let mode = record.encryption_mode.unwrap_or_default();
    let encryption = |key: Option<&String>| match (mode, key) {
        (EncryptionMode::S3Managed, _) => Some(DefaultEncryption::S3Managed),
        (EncryptionMode::TenantKey, Some(arn)) => Some(DefaultEncryption::Kms(arn.clone())),
        // A key never recorded: the bucket was never given one to keep.
        (EncryptionMode::TenantKey, None) => None,
    };
    let primary = record.claimed().and_then(|(bucket, region)| {
        Some(Copy {
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            encryption: encryption(record.kms_key_arn.as_ref())?,
            replica: false,
        })
    });
    let replica = record.replica.as_ref().and_then(|r| {
        Some(Copy {
            bucket: r.bucket_name.clone(),
            region: r.region.clone(),
            encryption: encryption(r.kms_key_arn.as_ref())?,
            replica: true,
        })
    });
    primary.into_iter().chain(replica).collect()
}

/// The bucket's tags if it exists and is provably this tenant's.
async fn ours<B: Buckets>(
    region: &B,
    id: &TenantIdentity,
    bucket: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    if !matches!(region.presence(bucket).await?, BucketPresence::Ours { .. }) {
        return Ok(None);
    }
    Ok(match region.tags(bucket).await? {
        ObservedTags::Tags(tags) if plan::ownership(&tags, id, false) == Ownership::Ours => {
            Some(tags)
        }
        _ => None,
    })
}

/// The rules a tenant whose policy is gone is still held to: its recorded jurisdiction and
/// region, every default (TLS 1.2, presigned URLs at most a day old).
fn policy_gone(jurisdiction: &str, record: &Record) -> ResidencyPolicySpec {
    let region = record.region.clone().unwrap_or_default();
    ResidencyPolicySpec {
        jurisdiction: jurisdiction.to_owned(),
        allowed_regions: vec![region.clone()],
        default_region: region,
        encryption: Default::default(),
        transport: Default::default(),
        versioning: Default::default(),
        namespace_selector: None,
        access_logging: Default::default(),
        deletion: Default::default(),
        access: Default::default(),
        export: Default::default(),
        replication: Default::default(),
        backup: Default::default(),
        refused_tenant_access: RefusedTenantAccess::ReadOnly,
    }
}
