//! What the TenantStorage stages keep in status, and the write-ahead marks that store it
//! before the cloud is changed.

use crate::api::{AccessStatus, EncryptionMode, ReplicaStatus, TenantStorageStatus};
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
    /// The replica, recorded before its bucket or key is created.
    pub replica: Option<ReplicaStatus>,
}

/// Which of the tenant's copies a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Copy {
    Primary,
    Replica,
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
            replica: status.replica.clone(),
        }
    }

    /// The key ARN recorded for `copy`.
    pub fn key_arn(&self, copy: Copy) -> Option<&str> {
        match copy {
            Copy::Primary => self.kms_key_arn.as_deref(),
            Copy::Replica => self.replica.as_ref()?.kms_key_arn.as_deref(),
        }
    }

    /// When the creation of `copy`'s key was started and not yet confirmed.
    pub fn key_creation_started(&self, copy: Copy) -> Option<&str> {
        match copy {
            Copy::Primary => self.key_creation_started.as_deref(),
            Copy::Replica => self.replica.as_ref()?.key_creation_started.as_deref(),
        }
    }

    /// Records `copy`'s key: its ARN once known, the start of its creation until then. A
    /// replica's fields exist once it is claimed.
    pub fn set_key(&mut self, copy: Copy, arn: Option<String>, started: Option<String>) {
        let fields = match copy {
            Copy::Primary => Some((&mut self.kms_key_arn, &mut self.key_creation_started)),
            Copy::Replica => self
                .replica
                .as_mut()
                .map(|r| (&mut r.kms_key_arn, &mut r.key_creation_started)),
        };
        if let Some((recorded, creation)) = fields {
            if arn.is_some() {
                *recorded = arn;
            }
            *creation = started;
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
        status.replica.clone_from(&self.replica);
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
    /// The replica's bucket name and region are this tenant's, before anything is created.
    ReplicaClaimed,
}

/// Where the record is stored (the TenantStorage status).
pub(super) trait Ledger: Send {
    fn write(
        &mut self,
        record: &Record,
        mark: Mark<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}
