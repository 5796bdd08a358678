//! An in-memory cloud behind the port ([`super::port`]), for unit tests: buckets and keys of
//! several regions and accounts, IAM roles, a log of every write, and a crash injected before
//! or after any one write (a killed process, or a lost response).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::port::{Buckets, Keys, Regions, Roles};
use super::{BucketPresence, CloudError, ObservedTags};
use crate::api::Versioning;
use crate::plan::access::{DesiredRole, INLINE_POLICY, ObservedRole, RoleChange, RoleDigest};
use crate::plan::replication::{ObservedReplication, ReplicationChange};
use crate::plan::{
    BucketChange, BucketShape, DefaultEncryption, ObservedBucket, ObservedEncryption, ObservedKey,
    PublicAccessBlock,
};

pub const ACCOUNT: &str = "111122223333";

/// A bucket as the fake stores it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    pub region: String,
    /// Another account's: HEAD is forbidden, creating it fails.
    pub foreign: bool,
    pub settings: ObservedBucket,
    pub has_data: bool,
    pub replication: ObservedReplication,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub id: String,
    pub arn: String,
    pub region: String,
    pub state: String,
    pub rotation: bool,
    pub tags: BTreeMap<String, String>,
}

/// Where a crash happens: the n-th write (counted from 0) fails before it is done, or is done
/// and its answer lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    Before(usize),
    After(usize),
}

/// Everything the fake holds.
#[derive(Debug, Default)]
pub struct World {
    pub buckets: BTreeMap<String, Bucket>,
    pub keys: Vec<Key>,
    /// `(region, alias)` → key id.
    pub aliases: BTreeMap<(String, String), String>,
    /// Every write done, in order, e.g. `CreateBucket b`.
    pub writes: Vec<String>,
    /// How many reads were made.
    pub reads: usize,
    /// IAM roles by name, with their path.
    pub roles: BTreeMap<String, (String, ObservedRole)>,
    /// ARNs of managed policies that exist (permissions boundaries).
    pub managed_policies: Vec<String>,
    /// A role someone else creates between our look and our creation: name, path, role.
    pub role_appears_on_create: Option<(String, String, ObservedRole)>,
    /// A bucket someone else creates between our look and our creation.
    pub appears_on_create: Option<(String, Bucket)>,
    crash: Option<Crash>,
    attempted: usize,
}

/// The fake cloud; clones share one world.
#[derive(Clone, Debug, Default)]
pub struct FakeCloud(Arc<Mutex<World>>);

/// The fake's view from one region.
#[derive(Clone, Debug)]
pub struct FakeRegion {
    cloud: FakeCloud,
    region: String,
}

fn api_error(operation: &'static str, code: &str) -> CloudError {
    CloudError::Api {
        service: "fake",
        operation,
        code: code.to_owned(),
        message: code.to_owned(),
        status: None,
    }
}

impl FakeCloud {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next run crashes at `crash`; writes are counted from now.
    pub fn crash(&self, crash: Option<Crash>) {
        let mut world = self.world();
        world.crash = crash;
        world.attempted = 0;
    }

    /// Does one write through the crash plan: `apply` runs unless the crash is before it.
    pub fn write<T>(
        &self,
        what: String,
        apply: impl FnOnce(&mut World) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        let mut world = self.world();
        let n = world.attempted;
        world.attempted += 1;
        if world.crash == Some(Crash::Before(n)) {
            return Err(api_error("crash", "CrashBefore"));
        }
        let done = apply(&mut world)?;
        world.writes.push(what);
        if world.crash == Some(Crash::After(n)) {
            return Err(api_error("crash", "CrashAfter"));
        }
        Ok(done)
    }

    fn read<T>(&self, look: impl FnOnce(&World) -> T) -> T {
        let mut world = self.world();
        world.reads += 1;
        look(&world)
    }
}

impl Regions for FakeCloud {
    type Region = FakeRegion;
    fn region(&self, region: &str) -> FakeRegion {
        FakeRegion {
            cloud: self.clone(),
            region: region.to_owned(),
        }
    }
}

impl Buckets for FakeRegion {
    async fn presence(&self, bucket: &str) -> Result<BucketPresence, CloudError> {
        Ok(self.cloud.read(|w| match w.buckets.get(bucket) {
            None => BucketPresence::Absent,
            Some(b) if b.foreign => BucketPresence::OtherAccount,
            Some(b) => BucketPresence::Ours {
                region: b.region.clone(),
            },
        }))
    }

    async fn tags(&self, bucket: &str) -> Result<ObservedTags, CloudError> {
        self.cloud.read(|w| match w.buckets.get(bucket) {
            None => Ok(ObservedTags::Gone),
            Some(b) if b.foreign => Err(api_error("GetBucketTagging", "AccessDenied")),
            Some(b) => Ok(ObservedTags::Tags(b.settings.tags.clone())),
        })
    }

    async fn observe(
        &self,
        bucket: &str,
        tags: BTreeMap<String, String>,
        shape: &BucketShape,
    ) -> Result<ObservedBucket, CloudError> {
        let found = self.cloud.read(|w| w.buckets.get(bucket).cloned());
        let Some(b) = found.filter(|b| !b.foreign) else {
            return Err(api_error("GetBucketEncryption", "NoSuchBucket"));
        };
        let s = b.settings;
        // Like the adapter: what the shape does not manage is not read.
        Ok(ObservedBucket {
            tags,
            versioning: shape.versioning.and(s.versioning),
            logging: shape.logging.as_ref().and(s.logging),
            expiration_days: shape.expiration_days.and(s.expiration_days),
            ..s
        })
    }

    async fn create(&self, bucket: &str) -> Result<bool, CloudError> {
        let region = self.region.clone();
        self.cloud.write(format!("CreateBucket {bucket}"), |w| {
            if let Some((name, appeared)) = w.appears_on_create.take() {
                w.buckets.insert(name, appeared);
            }
            match w.buckets.get(bucket) {
                Some(b) if b.foreign => Err(api_error("CreateBucket", "BucketAlreadyExists")),
                Some(_) => Ok(false),
                None => {
                    let new = Bucket {
                        region,
                        ..Bucket::default()
                    };
                    w.buckets.insert(bucket.to_owned(), new);
                    Ok(true)
                }
            }
        })
    }

    async fn change(&self, bucket: &str, change: &BucketChange) -> Result<(), CloudError> {
        self.cloud.write(format!("{change} on {bucket}"), |w| {
            let b = w
                .buckets
                .get_mut(bucket)
                .filter(|b| !b.foreign)
                .ok_or_else(|| api_error("PutBucket", "NoSuchBucket"))?;
            apply(&mut b.settings, change);
            Ok(())
        })
    }

    async fn has_data(&self, bucket: &str) -> Result<bool, CloudError> {
        Ok(self
            .cloud
            .read(|w| w.buckets.get(bucket).is_some_and(|b| b.has_data)))
    }

    async fn delete(&self, bucket: &str) -> Result<(), CloudError> {
        self.cloud.write(format!("DeleteBucket {bucket}"), |w| {
            w.buckets.remove(bucket);
            Ok(())
        })
    }

    async fn replication(&self, bucket: &str) -> Result<ObservedReplication, CloudError> {
        self.cloud.read(|w| match w.buckets.get(bucket) {
            Some(b) if !b.foreign => Ok(b.replication.clone()),
            _ => Err(api_error("GetBucketReplication", "NoSuchBucket")),
        })
    }

    async fn change_replication(
        &self,
        bucket: &str,
        change: &ReplicationChange,
    ) -> Result<(), CloudError> {
        self.cloud.write(format!("{change:?} on {bucket}"), |w| {
            let b = w
                .buckets
                .get_mut(bucket)
                .filter(|b| !b.foreign)
                .ok_or_else(|| api_error("PutBucketReplication", "NoSuchBucket"))?;
            b.replication = match change {
                ReplicationChange::Put(r) => ObservedReplication::Ours(r.clone()),
                ReplicationChange::Remove => ObservedReplication::None,
            };
            Ok(())
        })
    }
}

/// What S3 would store for `change`.
fn apply(s: &mut ObservedBucket, change: &BucketChange) {
    match change {
        BucketChange::Create => {}
        BucketChange::PutTags(t) => s.tags = t.clone(),
        BucketChange::PutPublicAccessBlock => {
            s.public_access_block = Some(PublicAccessBlock::ALL_ON)
        }
        BucketChange::PutOwnershipControls => {
            s.object_ownership = Some("BucketOwnerEnforced".into())
        }
        BucketChange::PutEncryption(e) => s.encryption = Some(encryption(e)),
        BucketChange::PutVersioning(v) => {
            s.versioning = Some(match v {
                Versioning::Enabled => "Enabled".into(),
                Versioning::Suspended => "Suspended".into(),
            })
        }
        BucketChange::PutPolicy(p) => s.policy = Some(p.clone()),
        BucketChange::PutLogging(t) => s.logging = t.clone(),
        BucketChange::PutExpiration(d) => s.expiration_days = Some(*d),
    }
}

fn encryption(e: &DefaultEncryption) -> ObservedEncryption {
    let (algorithm, key_id) = match e {
        DefaultEncryption::Kms(key) => ("aws:kms", Some(key.clone())),
        DefaultEncryption::S3Managed => ("AES256", None),
    };
    ObservedEncryption {
        algorithm: algorithm.into(),
        bucket_key: key_id.is_some(),
        key_id,
        sse_c_blocked: true,
    }
}

impl FakeRegion {
    fn alias(&self, alias: &str) -> (String, String) {
        (self.region.clone(), alias.to_owned())
    }
}

impl Keys for FakeRegion {
    async fn key(&self, alias: &str, rotation: bool) -> Result<Option<ObservedKey>, CloudError> {
        let alias = self.alias(alias);
        Ok(self.cloud.read(|w| {
            let id = w.aliases.get(&alias)?;
            let k = w.keys.iter().find(|k| &k.id == id)?;
            Some(ObservedKey {
                arn: k.arn.clone(),
                key_id: k.id.clone(),
                state: k.state.clone(),
                rotation_enabled: k.state != "PendingDeletion" && (!rotation || k.rotation),
            })
        }))
    }

    async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, CloudError> {
        self.cloud.read(|w| {
            w.keys
                .iter()
                .find(|k| k.id == key_id)
                .map(|k| k.tags.clone())
                .ok_or_else(|| api_error("ListResourceTags", "NotFoundException"))
        })
    }

    async fn find_tagged_key(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<(String, String)>, CloudError> {
        Ok(self.cloud.read(|w| {
            w.keys
                .iter()
                .find(|k| {
                    k.region == self.region
                        && k.state == "Enabled"
                        && tags.iter().all(|(t, v)| k.tags.get(t) == Some(v))
                })
                .map(|k| (k.id.clone(), k.arn.clone()))
        }))
    }

    async fn create_key(
        &self,
        _description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(String, String), CloudError> {
        let region = self.region.clone();
        self.cloud.write("CreateKey".into(), |w| {
            let id = format!("key-{}", w.keys.len() + 1);
            let arn = format!("arn:aws:kms:{region}:{ACCOUNT}:key/{id}");
            w.keys.push(Key {
                id: id.clone(),
                arn: arn.clone(),
                region,
                state: "Enabled".into(),
                rotation: false,
                tags: tags.clone(),
            });
            Ok((id, arn))
        })
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), CloudError> {
        let alias = self.alias(alias);
        self.cloud.write(format!("CreateAlias {}", alias.1), |w| {
            if w.aliases.contains_key(&alias) {
                return Err(api_error("CreateAlias", "AlreadyExistsException"));
            }
            w.aliases.insert(alias, key_id.to_owned());
            Ok(())
        })
    }

    async fn enable_rotation(&self, key_id: &str) -> Result<(), CloudError> {
        self.cloud
            .write(format!("EnableKeyRotation {key_id}"), |w| {
                let key = w.keys.iter_mut().find(|k| k.id == key_id);
                let key = key.ok_or_else(|| api_error("EnableKeyRotation", "NotFoundException"))?;
                key.rotation = true;
                Ok(())
            })
    }

    async fn retire_key(
        &self,
        alias: &str,
        key_id: &str,
        _window_days: i32,
    ) -> Result<(), CloudError> {
        let alias = self.alias(alias);
        self.cloud.write(format!("RetireKey {key_id}"), |w| {
            if let Some(key) = w.keys.iter_mut().find(|k| k.id == key_id) {
                key.state = "PendingDeletion".into();
            }
            w.aliases.remove(&alias);
            Ok(())
        })
    }
}

impl Roles for FakeCloud {
    async fn role(&self, name: &str) -> Result<Option<ObservedRole>, CloudError> {
        Ok(self.read(|w| w.roles.get(name).map(|(_, role)| role.clone())))
    }

    async fn roles_under(
        &self,
        path_prefix: &str,
    ) -> Result<HashMap<String, RoleDigest>, CloudError> {
        Ok(self.read(|w| {
            w.roles
                .iter()
                .filter(|(_, (path, _))| path.starts_with(path_prefix))
                .map(|(name, (_, role))| (name.clone(), role.digest()))
                .collect()
        }))
    }

    async fn change(&self, role: &DesiredRole, change: &RoleChange) -> Result<(), CloudError> {
        let name = role.name.clone();
        self.write(format!("{change:?} {name}"), |w| {
            if *change == RoleChange::Create {
                if let Some((name, path, role)) = w.role_appears_on_create.take() {
                    w.roles.insert(name, (path, role));
                }
                if w.roles.contains_key(&name) {
                    return Err(api_error("CreateRole", "EntityAlreadyExists"));
                }
                if role
                    .permissions_boundary
                    .as_ref()
                    .is_some_and(|b| !w.managed_policies.contains(b))
                {
                    return Err(api_error("CreateRole", "NoSuchEntity"));
                }
                let new = ObservedRole {
                    tags: role.tags.clone(),
                    trust_policy: role.trust_policy.to_json(),
                    permissions_boundary: role.permissions_boundary.clone(),
                    inline_policies: BTreeMap::new(),
                    attached_policies: Vec::new(),
                };
                w.roles.insert(name, (role.path.clone(), new));
                return Ok(());
            }
            let (_, seen) = w
                .roles
                .get_mut(&name)
                .ok_or_else(|| api_error("UpdateRole", "NoSuchEntity"))?;
            apply_role_change(seen, role, change);
            Ok(())
        })
    }

    async fn delete(&self, name: &str, _observed: &ObservedRole) -> Result<bool, CloudError> {
        self.write(format!("DeleteRole {name}"), |w| {
            Ok(w.roles.remove(name).is_some())
        })
    }
}

/// What IAM would store for `change` (not `Create`).
fn apply_role_change(seen: &mut ObservedRole, role: &DesiredRole, change: &RoleChange) {
    match change {
        RoleChange::Create => {}
        RoleChange::UpdateTrust => seen.trust_policy = role.trust_policy.to_json(),
        RoleChange::PutInlinePolicy => {
            if let Some(policy) = &role.inline_policy {
                seen.inline_policies
                    .insert(INLINE_POLICY.to_owned(), policy.to_json());
            }
        }
        RoleChange::DeleteInlinePolicy(name) => {
            seen.inline_policies.remove(name);
        }
        RoleChange::DetachPolicy(arn) => seen.attached_policies.retain(|a| a != arn),
        RoleChange::SetBoundary(arn) => seen.permissions_boundary = Some(arn.clone()),
        RoleChange::RemoveBoundary => seen.permissions_boundary = None,
    }
}
