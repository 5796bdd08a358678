//! What the TenantStorage stages keep in status, and the write-ahead marks that store it
//! before the cloud is changed.

use crate::api::{AccessStatus, EncryptionMode, TenantStorageStatus};
use crate::controllers::Error;

/// What the stages keep in the tenant's status: where the data is, with which key, and the
/// tenant role. Written before anything is created, so a restart recognises its own work.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Record {
    pub region: Option<String>,
    pub bucket_name: Option<String>,
    pub bucket_arn: Option<String>,
    /// How the bucket is encrypted, as the policy said when the bucket was claimed.
    pub encryption_mode: Option<EncryptionMode>,
    pub kms_key_alias: Option<String>,
    pub kms_key_arn: Option<String>,
    /// Set before a key is created, cleared once its alias is written: a creation interrupted
    /// in between left a key only a tag search finds.
    pub key_creation_started: Option<String>,
    /// The tenant role, recorded before it is created so that a deletion finds it.
    pub access: Option<AccessStatus>,
}

impl Record {
    pub fn of(status: &TenantStorageStatus) -> Self {
        Record {
            region: status.region.clone(),
            bucket_name: status.bucket_name.clone(),
            bucket_arn: status.bucket_arn.clone(),
            encryption_mode: status.encryption_mode,
            kms_key_alias: status.kms_key_alias.clone(),
            kms_key_arn: status.kms_key_arn.clone(),
            key_creation_started: status.key_creation_started.clone(),
            access: status.access.clone(),
        }
    }

    /// The bucket and region claimed, if any.
    pub fn claimed(&self) -> Option<(&str, &str)> {
        Some((self.bucket_name.as_deref()?, self.region.as_deref()?))
    }

    pub fn write_into(&self, status: &mut TenantStorageStatus) {
        status.region.clone_from(&self.region);
        status.bucket_name.clone_from(&self.bucket_name);
        status.bucket_arn.clone_from(&self.bucket_arn);
        status.encryption_mode = self.encryption_mode;
        status.kms_key_alias.clone_from(&self.kms_key_alias);
        status.kms_key_arn.clone_from(&self.kms_key_arn);
        status
            .key_creation_started
            .clone_from(&self.key_creation_started);
        status.access.clone_from(&self.access);
    }
}

/// A write-ahead mark: the record must be stored before the stage goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mark<'a> {
    /// The bucket's name and region are this tenant's (`first`: they were not before), as
    /// the policy allows.
    Claim {
        first: bool,
        policy: &'a str,
        jurisdiction: &'a str,
    },
    /// A key is about to be created. Stored only if nobody changed the object since it was
    /// read: a replica that just took over must not decide from a stale view.
    KeyCreationStarted,
    /// The tenant role is about to be created.
    RoleCreationStarted,
}

/// Where the record is stored (the TenantStorage status).
pub(super) trait Ledger: Send {
    fn write(
        &mut self,
        record: &Record,
        mark: Mark<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}
