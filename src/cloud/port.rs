//! The cloud as the tenant reconcile sees it: buckets, keys and backups of one region and the
//! account's roles, in the domain's words. [`Regional`] and [`super::Iam`] are the AWS adapters; tests use
//! an in-memory fake (`cloud::fake`), so every decision and crash point is exercised without a
//! server. Nothing above these traits names the SDK.

use std::collections::{BTreeMap, HashMap};

use super::{BucketPresence, CloudError, ObservedTags, Regional};
use crate::plan::access::{DesiredRole, ObservedRole, RoleChange, RoleDigest};
use crate::plan::backup::{
    BackupRoleChange, BackupRule, BackupSelection, DesiredBackupRole, DesiredVault, ObservedPlan,
    ObservedSelection, ObservedVault,
};
use crate::plan::replication::{ObservedReplication, ReplicationChange};
use crate::plan::{BucketChange, BucketShape, ObservedBucket, ObservedKey};

/// Buckets of one region.
pub trait Buckets: Send + Sync {
    /// Whether the bucket exists, and whether it is ours and where.
    fn presence(
        &self,
        bucket: &str,
    ) -> impl Future<Output = Result<BucketPresence, CloudError>> + Send;
    /// Its tags, or that it is gone.
    fn tags(&self, bucket: &str) -> impl Future<Output = Result<ObservedTags, CloudError>> + Send;
    /// Every setting `shape` manages; `NoSuchBucket` if it is gone.
    fn observe(
        &self,
        bucket: &str,
        tags: BTreeMap<String, String>,
        shape: &BucketShape,
    ) -> impl Future<Output = Result<ObservedBucket, CloudError>> + Send;
    /// Creates it; `false` when it already existed in our account.
    fn create(&self, bucket: &str) -> impl Future<Output = Result<bool, CloudError>> + Send;
    /// Applies one planned change (never [`BucketChange::Create`]).
    fn change(
        &self,
        bucket: &str,
        change: &BucketChange,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Whether any object version or delete marker is left.
    fn has_data(&self, bucket: &str) -> impl Future<Output = Result<bool, CloudError>> + Send;
    fn delete(&self, bucket: &str) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Its replication configuration.
    fn replication(
        &self,
        bucket: &str,
    ) -> impl Future<Output = Result<ObservedReplication, CloudError>> + Send;
    fn change_replication(
        &self,
        bucket: &str,
        change: &ReplicationChange,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

/// Encryption keys of one region, found by alias.
pub trait Keys: Send + Sync {
    /// The key an alias points at; its rotation is read only if `rotation`.
    fn key(
        &self,
        alias: &str,
        rotation: bool,
    ) -> impl Future<Output = Result<Option<ObservedKey>, CloudError>> + Send;
    fn key_tags(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, CloudError>> + Send;
    /// An enabled key carrying every tag in `tags` (an interrupted creation's), as
    /// `(key id, arn)`.
    fn find_tagged_key(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Option<(String, String)>, CloudError>> + Send;
    /// Creates a key with `tags`; returns `(key id, arn)`.
    fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(String, String), CloudError>> + Send;
    fn create_alias(
        &self,
        alias: &str,
        key_id: &str,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    fn enable_rotation(&self, key_id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Schedules the key's deletion and frees its alias; tolerates both having been done.
    fn retire_key(
        &self,
        alias: &str,
        key_id: &str,
        window_days: i32,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

/// IAM roles of the account (global).
pub trait Roles: Send + Sync {
    /// The role as it is now, or `None` if it does not exist.
    fn role(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ObservedRole>, CloudError>> + Send;
    /// The digest of every role under `path_prefix`, by name.
    fn roles_under(
        &self,
        path_prefix: &str,
    ) -> impl Future<Output = Result<HashMap<String, RoleDigest>, CloudError>> + Send;
    /// Applies one planned change to the role.
    fn change(
        &self,
        role: &DesiredRole,
        change: &RoleChange,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Removes a role as `observed`, with everything attached to it; `false` if it was gone.
    fn delete(
        &self,
        name: &str,
        observed: &ObservedRole,
    ) -> impl Future<Output = Result<bool, CloudError>> + Send;
}

impl Roles for super::Iam {
    async fn role(&self, name: &str) -> Result<Option<ObservedRole>, CloudError> {
        self.observe_role(name).await
    }
    async fn roles_under(
        &self,
        path_prefix: &str,
    ) -> Result<HashMap<String, RoleDigest>, CloudError> {
        super::Iam::roles_under(self, path_prefix).await
    }
    async fn change(&self, role: &DesiredRole, change: &RoleChange) -> Result<(), CloudError> {
        self.apply_role_change(role, change).await
    }
    async fn delete(&self, name: &str, observed: &ObservedRole) -> Result<bool, CloudError> {
        self.delete_role(name, observed).await
    }
}

/// Buckets and keys of any region.
pub trait Regions: Send + Sync {
    type Region: Buckets + Keys;
    fn region(&self, region: &str) -> Self::Region;
}

impl Regions for super::Cloud {
    type Region = Regional;
    fn region(&self, region: &str) -> Regional {
        super::Cloud::region(self, region)
    }
}

impl Buckets for Regional {
    async fn presence(&self, bucket: &str) -> Result<BucketPresence, CloudError> {
        self.bucket_presence(bucket).await
    }
    async fn tags(&self, bucket: &str) -> Result<ObservedTags, CloudError> {
        self.bucket_tags(bucket).await
    }
    async fn observe(
        &self,
        bucket: &str,
        tags: BTreeMap<String, String>,
        shape: &BucketShape,
    ) -> Result<ObservedBucket, CloudError> {
        self.observe_bucket(bucket, tags, shape).await
    }
    async fn create(&self, bucket: &str) -> Result<bool, CloudError> {
        self.create_bucket(bucket).await
    }
    async fn change(&self, bucket: &str, change: &BucketChange) -> Result<(), CloudError> {
        self.apply_bucket_change(bucket, change).await
    }
    async fn has_data(&self, bucket: &str) -> Result<bool, CloudError> {
        self.bucket_has_data(bucket).await
    }
    async fn delete(&self, bucket: &str) -> Result<(), CloudError> {
        self.delete_bucket(bucket).await
    }
    async fn replication(&self, bucket: &str) -> Result<ObservedReplication, CloudError> {
        Regional::replication(self, bucket).await
    }
    async fn change_replication(
        &self,
        bucket: &str,
        change: &ReplicationChange,
    ) -> Result<(), CloudError> {
        Regional::change_replication(self, bucket, change).await
    }
}

impl Keys for Regional {
    async fn key(&self, alias: &str, rotation: bool) -> Result<Option<ObservedKey>, CloudError> {
        self.observe_key(alias, rotation).await
    }
    async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, CloudError> {
        Regional::key_tags(self, key_id).await
    }
    async fn find_tagged_key(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<(String, String)>, CloudError> {
        Regional::find_tagged_key(self, tags).await
    }
    async fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(String, String), CloudError> {
        Regional::create_key(self, description, tags).await
    }
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), CloudError> {
        Regional::create_alias(self, alias, key_id).await
    }
    async fn enable_rotation(&self, key_id: &str) -> Result<(), CloudError> {
        Regional::enable_rotation(self, key_id).await
    }
    async fn retire_key(
        &self,
        alias: &str,
        key_id: &str,
        window_days: i32,
    ) -> Result<(), CloudError> {
        Regional::retire_key(self, alias, key_id, window_days).await
    }
}

/// AWS Backup in one region: the vault, plan and selections of one policy there.
pub trait Backups: Send + Sync {
    /// The vault, or `None` if it does not exist.
    fn vault(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ObservedVault>, CloudError>> + Send;
    /// Creates it encrypted with `key_arn`; tolerates its having been created already.
    fn create_vault(
        &self,
        vault: &DesiredVault,
        key_arn: &str,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// The first plan named `name`, or `None`.
    fn plan(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ObservedPlan>, CloudError>> + Send;
    /// Creates the plan with its one rule; returns its id.
    fn create_plan(
        &self,
        name: &str,
        rule: &BackupRule,
        tags: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, CloudError>> + Send;
    /// Replaces the rules of plan `id` with `rule`.
    fn update_plan(
        &self,
        id: &str,
        name: &str,
        rule: &BackupRule,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    /// Every selection of the plan.
    fn selections(
        &self,
        plan_id: &str,
    ) -> impl Future<Output = Result<Vec<ObservedSelection>, CloudError>> + Send;
    fn create_selection(
        &self,
        plan_id: &str,
        selection: &BackupSelection,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    fn delete_selection(
        &self,
        plan_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

/// The IAM role AWS Backup runs as (global).
pub trait BackupRoles: Send + Sync {
    /// The role as it is now, or `None` if it does not exist.
    fn backup_role(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ObservedRole>, CloudError>> + Send;
    fn change_backup_role(
        &self,
        role: &DesiredBackupRole,
        change: &BackupRoleChange,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}
