//! AWS Backup vaults, plans and selections of one region, and the role AWS Backup runs as: the
//! SDK's shapes to the plan's and back, nothing decided here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_backup::types::{
    BackupRuleInput, Condition, ConditionParameter, Conditions, CopyAction as SdkCopyAction,
    Lifecycle,
};

use super::error::{OperationError, SdkFailure};
use super::port::{BackupRoles, Backups};
use super::{CloudError, Iam, Regional};
use crate::plan::access::ObservedRole;
use crate::plan::backup::{
    BackupRoleChange, BackupRule, BackupSelection, CopyAction, DesiredBackupRole, DesiredVault,
    ObservedPlan, ObservedSelection, ObservedVault, STRING_EQUALS,
};

const BACKUP: &str = "backup";

fn err<E: OperationError>(op: &'static str) -> impl FnOnce(SdkFailure<E>) -> CloudError {
    move |e| CloudError::from_sdk(BACKUP, op, e)
}

fn build(op: &'static str) -> impl FnOnce(aws_sdk_backup::error::BuildError) -> CloudError {
    move |e| CloudError::Build(op, e.to_string())
}

fn incomplete(operation: &'static str, field: &'static str) -> CloudError {
    CloudError::Incomplete {
        service: BACKUP,
        operation,
        field,
    }
}

/// `Ok(None)` for AWS Backup's "no such thing".
fn absent<T>(result: Result<T, CloudError>) -> Result<Option<T>, CloudError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.is_not_found(&["ResourceNotFoundException"]) => Ok(None),
        Err(e) => Err(e),
    }
}

fn lifecycle(days: Option<i64>) -> Lifecycle {
    Lifecycle::builder().set_delete_after_days(days).build()
}

fn rule_input(rule: &BackupRule) -> Result<BackupRuleInput, CloudError> {
    const OP: &str = "BackupRuleInput";
    let copies = rule
        .copies
        .iter()
        .map(|copy| {
            SdkCopyAction::builder()
                .destination_backup_vault_arn(&copy.vault_arn)
                .lifecycle(lifecycle(copy.delete_after_days))
                .build()
                .map_err(build(OP))
        })
        .collect::<Result<Vec<_>, _>>()?;
    BackupRuleInput::builder()
        .rule_name(&rule.name)
        .target_backup_vault_name(&rule.vault)
        .schedule_expression(&rule.schedule)
        .lifecycle(lifecycle(rule.delete_after_days))
        .set_copy_actions(Some(copies))
        .build()
        .map_err(build(OP))
}

fn plan_input(
    name: &str,
    rule: &BackupRule,
) -> Result<aws_sdk_backup::types::BackupPlanInput, CloudError> {
    aws_sdk_backup::types::BackupPlanInput::builder()
        .backup_plan_name(name)
        .rules(rule_input(rule)?)
        .build()
        .map_err(build("BackupPlanInput"))
}

fn rule_from(rule: &aws_sdk_backup::types::BackupRule) -> BackupRule {
    BackupRule {
        name: rule.rule_name().to_owned(),
        vault: rule.target_backup_vault_name().to_owned(),
        schedule: rule.schedule_expression().unwrap_or_default().to_owned(),
        delete_after_days: rule.lifecycle().and_then(Lifecycle::delete_after_days),
        copies: rule
            .copy_actions()
            .iter()
            .map(|copy| CopyAction {
                vault_arn: copy.destination_backup_vault_arn().to_owned(),
                delete_after_days: copy.lifecycle().and_then(Lifecycle::delete_after_days),
            })
            .collect(),
    }
}

fn selection_input(
    selection: &BackupSelection,
) -> Result<aws_sdk_backup::types::BackupSelection, CloudError> {
    const OP: &str = "BackupSelection";
    let mut equals = Vec::new();
    for (operator, key, value) in &selection.conditions {
        if operator != STRING_EQUALS {
            return Err(CloudError::Build(
                OP,
                format!("condition operator {operator}"),
            ));
        }
        let parameter = ConditionParameter::builder()
            .condition_key(key)
            .condition_value(value);
        equals.push(parameter.build());
    }
    aws_sdk_backup::types::BackupSelection::builder()
        .selection_name(&selection.name)
        .iam_role_arn(&selection.role_arn)
        .set_resources(Some(selection.resources.iter().cloned().collect()))
        .set_not_resources(Some(selection.not_resources.iter().cloned().collect()))
        .conditions(
            Conditions::builder()
                .set_string_equals(Some(equals))
                .build(),
        )
        .build()
        .map_err(build(OP))
}

/// Every condition of a selection as `(operator, key, value)`.
fn conditions_from(
    selection: &aws_sdk_backup::types::BackupSelection,
) -> BTreeSet<(String, String, String)> {
    let parameters = |operator: &str, list: &[ConditionParameter]| {
        list.iter()
            .map(|p| {
                let key = p.condition_key().unwrap_or_default().to_owned();
                let value = p.condition_value().unwrap_or_default().to_owned();
                (operator.to_owned(), key, value)
            })
            .collect::<Vec<_>>()
    };
    let mut all: BTreeSet<_> = selection
        .list_of_tags()
        .iter()
        .map(|c: &Condition| {
            let operator = format!("ListOfTags:{}", c.condition_type().as_str());
            (
                operator,
                c.condition_key().to_owned(),
                c.condition_value().to_owned(),
            )
        })
        .collect();
    if let Some(c) = selection.conditions() {
        all.extend(parameters(STRING_EQUALS, c.string_equals()));
        all.extend(parameters("StringNotEquals", c.string_not_equals()));
        all.extend(parameters("StringLike", c.string_like()));
        all.extend(parameters("StringNotLike", c.string_not_like()));
    }
    all
}

impl Regional {
    async fn backup_tags(&self, arn: &str) -> Result<BTreeMap<String, String>, CloudError> {
        let out = self
            .backup
            .list_tags()
            .resource_arn(arn)
            .send()
            .await
            .map_err(err("ListTags"))?;
        Ok(out
            .tags()
            .map_or_else(BTreeMap::new, |tags: &HashMap<String, String>| {
                tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }))
    }

    /// The plan of this id, or `None` if it does not exist.
    pub async fn backup_plan(&self, id: &str) -> Result<Option<ObservedPlan>, CloudError> {
        absent(self.plan_by_id(id).await)
    }

    async fn plan_by_id(&self, id: &str) -> Result<ObservedPlan, CloudError> {
        const OP: &str = "GetBackupPlan";
        let out = self
            .backup
            .get_backup_plan()
            .backup_plan_id(id)
            .send()
            .await
            .map_err(err(OP))?;
        let arn = out
            .backup_plan_arn()
            .ok_or(incomplete(OP, "BackupPlanArn"))?;
        let plan = out.backup_plan().ok_or(incomplete(OP, "BackupPlan"))?;
        Ok(ObservedPlan {
            id: id.to_owned(),
            arn: arn.to_owned(),
            tags: self.backup_tags(arn).await?,
            rules: plan.rules().iter().map(rule_from).collect(),
        })
    }

    async fn selection_by_id(
        &self,
        plan_id: &str,
        id: &str,
    ) -> Result<ObservedSelection, CloudError> {
        const OP: &str = "GetBackupSelection";
        let out = self
            .backup
            .get_backup_selection()
            .backup_plan_id(plan_id)
            .selection_id(id)
            .send()
            .await
            .map_err(err(OP))?;
        let seen = out
            .backup_selection()
            .ok_or(incomplete(OP, "BackupSelection"))?;
        Ok(ObservedSelection {
            id: id.to_owned(),
            selection: BackupSelection {
                name: seen.selection_name().to_owned(),
                role_arn: seen.iam_role_arn().to_owned(),
                resources: seen.resources().iter().cloned().collect(),
                not_resources: seen.not_resources().iter().cloned().collect(),
                conditions: conditions_from(seen),
            },
        })
    }
}

impl Backups for Regional {
    async fn vault(&self, name: &str) -> Result<Option<ObservedVault>, CloudError> {
        const OP: &str = "DescribeBackupVault";
        let described = self
            .backup
            .describe_backup_vault()
            .backup_vault_name(name)
            .send()
            .await
            .map_err(err(OP));
        let Some(out) = absent(described)? else {
            return Ok(None);
        };
        let arn = out
            .backup_vault_arn()
            .ok_or(incomplete(OP, "BackupVaultArn"))?;
        Ok(Some(ObservedVault {
            arn: arn.to_owned(),
            key_arn: out.encryption_key_arn().map(str::to_owned),
            tags: self.backup_tags(arn).await?,
        }))
    }

    async fn create_vault(&self, vault: &DesiredVault, key_arn: &str) -> Result<(), CloudError> {
        let created = self
            .backup
            .create_backup_vault()
            .backup_vault_name(&vault.name)
            .encryption_key_arn(key_arn)
            .set_backup_vault_tags(Some(vault.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(err("CreateBackupVault"));
        match created {
            // A retry after a lost answer: the next check reads it.
            Err(e) if e.code() == "AlreadyExistsException" => Ok(()),
            other => other.map(drop),
        }
    }

    async fn plan(&self, name: &str) -> Result<Option<ObservedPlan>, CloudError> {
        let mut pages = self.backup.list_backup_plans().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err("ListBackupPlans"))?;
            let found = page
                .backup_plans_list()
                .iter()
                .find(|plan| {
                    plan.backup_plan_name() == Some(name) && plan.deletion_date().is_none()
                })
                .and_then(|plan| plan.backup_plan_id());
            if let Some(id) = found {
                return self.backup_plan(id).await;
            }
        }
        Ok(None)
    }

    async fn create_plan(
        &self,
        name: &str,
        rule: &BackupRule,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        const OP: &str = "CreateBackupPlan";
        let out = self
            .backup
            .create_backup_plan()
            .backup_plan(plan_input(name, rule)?)
            .set_backup_plan_tags(Some(tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(err(OP))?;
        Ok(out
            .backup_plan_id()
            .ok_or(incomplete(OP, "BackupPlanId"))?
            .to_owned())
    }

    async fn update_plan(&self, id: &str, name: &str, rule: &BackupRule) -> Result<(), CloudError> {
        self.backup
            .update_backup_plan()
            .backup_plan_id(id)
            .backup_plan(plan_input(name, rule)?)
            .send()
            .await
            .map_err(err("UpdateBackupPlan"))?;
        Ok(())
    }

    async fn selections(&self, plan_id: &str) -> Result<Vec<ObservedSelection>, CloudError> {
        let mut pages = self
            .backup
            .list_backup_selections()
            .backup_plan_id(plan_id)
            .into_paginator()
            .send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err("ListBackupSelections"))?;
            ids.extend(
                page.backup_selections_list()
                    .iter()
                    .filter_map(|s| s.selection_id().map(str::to_owned)),
            );
        }
        let mut selections = Vec::with_capacity(ids.len());
        for id in ids {
            selections.extend(absent(self.selection_by_id(plan_id, &id).await)?);
        }
        Ok(selections)
    }

    async fn create_selection(
        &self,
        plan_id: &str,
        selection: &BackupSelection,
    ) -> Result<(), CloudError> {
        self.backup
            .create_backup_selection()
            .backup_plan_id(plan_id)
            .backup_selection(selection_input(selection)?)
            .send()
            .await
            .map_err(err("CreateBackupSelection"))?;
        Ok(())
    }

    async fn delete_selection(&self, plan_id: &str, id: &str) -> Result<(), CloudError> {
        let deleted = self
            .backup
            .delete_backup_selection()
            .backup_plan_id(plan_id)
            .selection_id(id)
            .send()
            .await
            .map_err(err("DeleteBackupSelection"));
        absent(deleted).map(drop)
    }
}

impl BackupRoles for Iam {
    async fn backup_role(&self, name: &str) -> Result<Option<ObservedRole>, CloudError> {
        self.observe_role(name).await
    }

    async fn change_backup_role(
        &self,
        role: &DesiredBackupRole,
        change: &BackupRoleChange,
    ) -> Result<(), CloudError> {
        match change {
            BackupRoleChange::Role(change) => self.apply_role_change(&role.role, change).await,
            BackupRoleChange::Attach(arn) => {
                self.iam
                    .attach_role_policy()
                    .role_name(&role.role.name)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("iam", "AttachRolePolicy", e))?;
                Ok(())
            }
        }
    }
}
