//! AWS Backup in memory, for unit tests: vaults, plans and selections of several regions, and
//! the backup role's attached policies on the fake IAM. Writes go through [`FakeCloud::write`],
//! so they are logged and crash injection reaches them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::CloudError;
use super::fake::{ACCOUNT, FakeCloud, FakeRegion};
use super::port::{BackupRoles, Backups, Keys, Regions, Roles};
use crate::plan::ObservedKey;
use crate::plan::access::ObservedRole;
use crate::plan::backup::{
    BackupRoleChange, BackupRule, BackupSelection, DesiredBackupRole, DesiredVault, ObservedPlan,
    ObservedSelection, ObservedVault,
};

/// What the fake holds, by region.
#[derive(Debug, Default)]
pub struct BackupWorld {
    /// `(region, name)` → vault.
    pub vaults: BTreeMap<(String, String), ObservedVault>,
    /// `(region, id)` → (name, plan).
    pub plans: BTreeMap<(String, String), (String, ObservedPlan)>,
    /// `(region, plan id)` → selections.
    pub selections: BTreeMap<(String, String), Vec<ObservedSelection>>,
    next_id: usize,
}

/// AWS Backup of every region; clones share one world.
#[derive(Clone, Debug, Default)]
pub struct FakeBackups {
    cloud: FakeCloud,
    world: Arc<Mutex<BackupWorld>>,
}

/// One region's keys (the fake KMS) and backups.
#[derive(Clone, Debug)]
pub struct FakeBackupRegion {
    backups: FakeBackups,
    keys: FakeRegion,
    region: String,
}

fn not_found(operation: &'static str) -> CloudError {
    CloudError::Api {
        service: "fake",
        operation,
        code: "ResourceNotFoundException".into(),
        message: "not found".into(),
        status: Some(404),
    }
}

impl FakeBackups {
    /// Backups beside `cloud`'s KMS and IAM.
    pub fn new(cloud: &FakeCloud) -> Self {
        FakeBackups {
            cloud: cloud.clone(),
            world: Arc::default(),
        }
    }

    pub fn world(&self) -> MutexGuard<'_, BackupWorld> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn region(&self, region: &str) -> FakeBackupRegion {
        FakeBackupRegion {
            backups: self.clone(),
            keys: self.cloud.region(region),
            region: region.to_owned(),
        }
    }

    /// A write: logged and crashed as the fake cloud's, applied to this world.
    fn write<T>(
        &self,
        what: String,
        apply: impl FnOnce(&mut BackupWorld) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        self.cloud.write(what, |_| apply(&mut self.world()))
    }
}

impl FakeBackupRegion {
    fn key(&self, name: &str) -> (String, String) {
        (self.region.clone(), name.to_owned())
    }
}

impl Backups for FakeBackupRegion {
    async fn vault(&self, name: &str) -> Result<Option<ObservedVault>, CloudError> {
        Ok(self.backups.world().vaults.get(&self.key(name)).cloned())
    }

    async fn create_vault(&self, vault: &DesiredVault, key_arn: &str) -> Result<(), CloudError> {
        let key = self.key(&vault.name);
        let seen = ObservedVault {
            arn: vault.arn.clone(),
            key_arn: Some(key_arn.to_owned()),
            tags: vault.tags.clone(),
        };
        self.backups
            .write(format!("CreateBackupVault {}", vault.name), |w| {
                w.vaults.entry(key).or_insert(seen);
                Ok(())
            })
    }

    async fn plan(&self, name: &str) -> Result<Option<ObservedPlan>, CloudError> {
        let world = self.backups.world();
        let mut plans = world.plans.iter();
        let found = plans.find(|((region, _), (n, _))| *region == self.region && n == name);
        Ok(found.map(|(_, (_, plan))| plan.clone()))
    }

    async fn create_plan(
        &self,
        name: &str,
        rule: &BackupRule,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        let region = self.region.clone();
        self.backups.write(format!("CreateBackupPlan {name}"), |w| {
            w.next_id += 1;
            let id = format!("plan-{}", w.next_id);
            let plan = ObservedPlan {
                arn: format!("arn:aws:backup:{region}:{ACCOUNT}:backup-plan:{id}"),
                id: id.clone(),
                tags: tags.clone(),
                rules: vec![rule.clone()],
            };
            w.plans
                .insert((region, id.clone()), (name.to_owned(), plan));
            Ok(id)
        })
    }

    async fn update_plan(
        &self,
        id: &str,
        _name: &str,
        rule: &BackupRule,
    ) -> Result<(), CloudError> {
        let key = self.key(id);
        self.backups.write(format!("UpdateBackupPlan {id}"), |w| {
            let (_, plan) = w.plans.get_mut(&key).ok_or(not_found("UpdateBackupPlan"))?;
            plan.rules = vec![rule.clone()];
            Ok(())
        })
    }

    async fn selections(&self, plan_id: &str) -> Result<Vec<ObservedSelection>, CloudError> {
        let world = self.backups.world();
        Ok(world
            .selections
            .get(&self.key(plan_id))
            .cloned()
            .unwrap_or_default())
    }

    async fn create_selection(
        &self,
        plan_id: &str,
        selection: &BackupSelection,
    ) -> Result<(), CloudError> {
        let key = self.key(plan_id);
        self.backups
            .write(format!("CreateBackupSelection {plan_id}"), |w| {
                w.next_id += 1;
                let seen = ObservedSelection {
                    id: format!("selection-{}", w.next_id),
                    selection: selection.clone(),
                };
                w.selections.entry(key).or_default().push(seen);
                Ok(())
            })
    }

    async fn delete_selection(&self, plan_id: &str, id: &str) -> Result<(), CloudError> {
        let key = self.key(plan_id);
        self.backups
            .write(format!("DeleteBackupSelection {id}"), |w| {
                if let Some(all) = w.selections.get_mut(&key) {
                    all.retain(|s| s.id != id);
                }
                Ok(())
            })
    }
}

impl Keys for FakeBackupRegion {
    async fn key(&self, alias: &str, rotation: bool) -> Result<Option<ObservedKey>, CloudError> {
        self.keys.key(alias, rotation).await
    }
    async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, CloudError> {
        self.keys.key_tags(key_id).await
    }
    async fn find_tagged_key(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<(String, String)>, CloudError> {
        self.keys.find_tagged_key(tags).await
    }
    async fn create_key(
        &self,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(String, String), CloudError> {
        self.keys.create_key(description, tags).await
    }
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), CloudError> {
        self.keys.create_alias(alias, key_id).await
    }
    async fn enable_rotation(&self, key_id: &str) -> Result<(), CloudError> {
        self.keys.enable_rotation(key_id).await
    }
    async fn retire_key(&self, alias: &str, key_id: &str, days: i32) -> Result<(), CloudError> {
        self.keys.retire_key(alias, key_id, days).await
    }
}

impl BackupRoles for FakeCloud {
    async fn backup_role(&self, name: &str) -> Result<Option<ObservedRole>, CloudError> {
        self.role(name).await
    }

    async fn change_backup_role(
        &self,
        role: &DesiredBackupRole,
        change: &BackupRoleChange,
    ) -> Result<(), CloudError> {
        match change {
            BackupRoleChange::Role(change) => self.change(&role.role, change).await,
            BackupRoleChange::Attach(arn) => {
                let name = role.role.name.clone();
                self.write(format!("AttachRolePolicy {name}"), |w| {
                    let (_, seen) = w
                        .roles
                        .get_mut(&name)
                        .ok_or(not_found("AttachRolePolicy"))?;
                    seen.attached_policies.push(arn.clone());
                    Ok(())
                })
            }
        }
    }
}
