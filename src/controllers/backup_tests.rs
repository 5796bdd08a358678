//! The backup stage on the fake cloud: what it creates, that a second run writes nothing, that
//! a retention change rewrites only the plan, and that it neither uses what is not its own nor
//! duplicates a key after a lost answer.

use super::*;
use crate::api::ResidencyPolicySpec;
use crate::cloud::fake::{Crash, FakeCloud};
use crate::cloud::fake_backup::FakeBackups;
use crate::plan::backup::fixtures::{self, policy};
use crate::plan::backup::{ObservedVault, VAULT_ROLE};
use crate::plan::tags;

const HOME: &str = "eu-central-1";
const COPY: &str = "eu-west-1";

fn desired(policy: &ResidencyPolicySpec) -> DesiredBackup {
    fixtures::desired(policy, HOME)
}

struct World {
    cloud: FakeCloud,
    backups: FakeBackups,
}

impl World {
    fn new() -> Self {
        let cloud = FakeCloud::default();
        let backups = FakeBackups::new(&cloud);
        World { cloud, backups }
    }

    async fn run(&self, desired: &DesiredBackup) -> Result<String, Error> {
        let home = self.backups.region(HOME);
        let copy = desired
            .copy_vault
            .as_ref()
            .map(|v| self.backups.region(&v.region));
        converge(&home, copy.as_ref(), &self.cloud, desired).await
    }

    /// Writes since the last call.
    fn writes(&self) -> Vec<String> {
        std::mem::take(&mut self.cloud.world().writes)
    }
}

#[tokio::test]
async fn creates_role_vaults_with_their_keys_plan_and_selection_once() {
    let world = World::new();
    let wanted = desired(&policy(Some(COPY), 35));
    let plan_id = world.run(&wanted).await.expect("converged");
    let writes = world.writes();
    for op in [
        "AttachRolePolicy",
        "CreateBackupPlan",
        "CreateBackupSelection",
    ] {
        assert_eq!(
            writes.iter().filter(|w| w.starts_with(op)).count(),
            1,
            "{writes:?}"
        );
    }
    assert_eq!(
        writes.iter().filter(|w| *w == "CreateKey").count(),
        2,
        "{writes:?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.starts_with("CreateBackupVault"))
            .count(),
        2
    );
    {
        let kms = world.cloud.world();
        let backups = world.backups.world();
        for vault in [
            &wanted.vault,
            wanted.copy_vault.as_ref().expect("copy vault"),
        ] {
            let seen = &backups.vaults[&(vault.region.clone(), vault.name.clone())];
            let key = kms
                .keys
                .iter()
                .find(|k| Some(&k.arn) == seen.key_arn.as_ref());
            let key = key.expect("the vault's key");
            assert_eq!(key.region, vault.region, "a vault's key is in its region");
            assert!(key.rotation);
            assert_eq!(key.tags[tags::ROLE], VAULT_ROLE);
        }
        let (_, plan) = &backups.plans[&(HOME.to_owned(), plan_id.clone())];
        assert_eq!(plan.rules, std::slice::from_ref(&wanted.rule));
        let role = &kms.roles[&wanted.role.role.name].1;
        assert_eq!(role.attached_policies, wanted.role.attached);
    }
    assert_eq!(world.run(&wanted).await.expect("again"), plan_id);
    assert_eq!(
        world.writes(),
        Vec::<String>::new(),
        "a second run writes nothing"
    );
}

#[tokio::test]
async fn a_retention_change_rewrites_only_the_plan() {
    let world = World::new();
    let plan_id = world
        .run(&desired(&policy(None, 35)))
        .await
        .expect("converged");
    world.writes();
    let longer = desired(&policy(None, 90));
    assert_eq!(world.run(&longer).await.expect("changed"), plan_id);
    assert_eq!(world.writes(), [format!("UpdateBackupPlan {plan_id}")]);
    let backups = world.backups.world();
    let (_, plan) = &backups.plans[&(HOME.to_owned(), plan_id)];
    assert_eq!(plan.rules[0].delete_after_days, Some(90));
    assert!(plan.rules[0].copies.is_empty());
}

#[tokio::test]
async fn a_changed_selection_is_replaced() {
    let world = World::new();
    let wanted = desired(&policy(None, 35));
    let plan_id = world.run(&wanted).await.expect("converged");
    let key = (HOME.to_owned(), plan_id.clone());
    world
        .backups
        .world()
        .selections
        .get_mut(&key)
        .expect("selections")[0]
        .selection
        .conditions
        .clear();
    world.writes();
    world.run(&wanted).await.expect("corrected");
    let writes = world.writes();
    assert!(writes[0].starts_with("DeleteBackupSelection"), "{writes:?}");
    assert_eq!(writes[1], format!("CreateBackupSelection {plan_id}"));
    let backups = world.backups.world();
    assert_eq!(backups.selections[&key].len(), 1);
    assert_eq!(backups.selections[&key][0].selection, wanted.selection);
}

#[tokio::test]
async fn a_vault_of_our_name_with_another_key_is_refused_before_any_plan() {
    let world = World::new();
    let wanted = desired(&policy(None, 35));
    let taken = ObservedVault {
        arn: wanted.vault.arn.clone(),
        key_arn: Some("arn:aws:kms:eu-central-1:999999999999:key/theirs".into()),
        tags: wanted.vault.tags.clone(),
    };
    let at = (HOME.to_owned(), wanted.vault.name.clone());
    world.backups.world().vaults.insert(at, taken);
    let refused = world.run(&wanted).await.expect_err("refused");
    assert_eq!(refused.reason(), "BackupConflict");
    assert!(refused.to_string().contains("key/theirs"), "{refused}");
    assert!(world.backups.world().plans.is_empty());
}

#[tokio::test]
async fn a_lost_create_key_answer_leaves_one_key() {
    let world = World::new();
    let wanted = desired(&policy(None, 35));
    // Write 0: CreateRole, 1: AttachRolePolicy, 2: CreateKey.
    world.cloud.crash(Some(Crash::After(2)));
    world.run(&wanted).await.expect_err("crashed");
    world.cloud.crash(None);
    world.run(&wanted).await.expect("converged");
    let kms = world.cloud.world();
    assert_eq!(kms.keys.len(), 1, "{:?}", kms.keys);
    assert_eq!(kms.writes.iter().filter(|w| *w == "CreateKey").count(), 1);
}
