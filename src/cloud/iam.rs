//! IAM roles of tenants' workloads, and the STS calls of delegated access.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_iam::types::{EntityType, RoleDetail, Tag};
use aws_sdk_sts::config::Credentials;
use serde_json::Value;

use super::CloudError;
use super::error::{OperationError, SdkFailure};
use crate::plan::access::{DesiredRole, INLINE_POLICY, ObservedRole, RoleChange, RoleDigest};

const IAM: &str = "iam";
const STS: &str = "sts";

fn err<E: OperationError>(op: &'static str) -> impl FnOnce(SdkFailure<E>) -> CloudError {
    move |e| CloudError::from_sdk(IAM, op, e)
}

/// IAM returns policy documents URL-encoded (RFC 3986); some endpoints return them plain.
fn decode_policy(op: &'static str, text: &str) -> Result<Value, CloudError> {
    let plain = crate::plan::policy_document::iam_document_text(text);
    serde_json::from_str(&plain).map_err(|e| CloudError::Api {
        service: IAM,
        operation: op,
        code: "MalformedPolicyDocument".into(),
        message: e.to_string(),
        status: None,
    })
}

/// A role's tags as a map.
fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

/// A role as `GetAccountAuthorizationDetails` describes it.
fn role_from_details(role: &RoleDetail) -> Result<ObservedRole, CloudError> {
    const OP: &str = "GetAccountAuthorizationDetails";
    let mut inline_policies = BTreeMap::new();
    for policy in role.role_policy_list() {
        if let (Some(name), Some(doc)) = (policy.policy_name(), policy.policy_document()) {
            inline_policies.insert(name.to_owned(), decode_policy(OP, doc)?);
        }
    }
    Ok(ObservedRole {
        tags: tag_map(role.tags()),
        trust_policy: match role.assume_role_policy_document() {
            Some(doc) => decode_policy(OP, doc)?,
            None => Value::Null,
        },
        permissions_boundary: role
            .permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn())
            .map(str::to_owned),
        inline_policies,
        attached_policies: role
            .attached_managed_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_owned))
            .collect(),
    })
}

/// IAM (a global service) and STS, for tenant roles.
#[derive(Clone, Debug)]
pub struct Iam {
    pub(super) iam: aws_sdk_iam::Client,
    pub(super) sts: aws_sdk_sts::Client,
}

impl Iam {
    /// The ARN and account of the operator's own credentials.
    pub async fn caller_identity(&self) -> Result<(String, String), CloudError> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(STS, "GetCallerIdentity", e))?;
        let incomplete = |field| CloudError::Incomplete {
            service: STS,
            operation: "GetCallerIdentity",
            field,
        };
        Ok((
            out.arn().ok_or_else(|| incomplete("Arn"))?.to_owned(),
            out.account()
                .ok_or_else(|| incomplete("Account"))?
                .to_owned(),
        ))
    }

    /// Assumes a customer's role, presenting `external_id`.
    pub async fn assume_role(
        &self,
        role_arn: &str,
        external_id: Option<&str>,
        session_name: &str,
    ) -> Result<Credentials, CloudError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .set_external_id(external_id.map(str::to_owned))
            .role_session_name(session_name)
            .duration_seconds(900)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk(STS, "AssumeRole", e))?;
        let creds = out.credentials().ok_or(CloudError::Incomplete {
            service: STS,
            operation: "AssumeRole",
            field: "Credentials",
        })?;
        // The SDK's credentials type redacts the secret and token in Debug output.
        Ok(Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            None,
            "assumed-role",
        ))
    }

    /// The role as it is now, or `None` if it does not exist.
    pub async fn observe_role(&self, name: &str) -> Result<Option<ObservedRole>, CloudError> {
        let role = match self.iam.get_role().role_name(name).send().await {
            Ok(out) => out.role,
            Err(e) => {
                let e = CloudError::from_sdk(IAM, "GetRole", e);
                return if e.code() == "NoSuchEntity" {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let Some(role) = role else {
            return Ok(None);
        };
        let trust_policy = match role.assume_role_policy_document() {
            Some(doc) => decode_policy("GetRole", doc)?,
            None => Value::Null,
        };
        let tags = tag_map(role.tags());
        let permissions_boundary = role
            .permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn())
            .map(str::to_owned);
        let names: Vec<String> = self
            .iam
            .list_role_policies()
            .role_name(name)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(err("ListRolePolicies"))?;
        let mut inline_policies = BTreeMap::new();
        for policy in names {
            let out = self
                .iam
                .get_role_policy()
                .role_name(name)
                .policy_name(&policy)
                .send()
                .await
                .map_err(err("GetRolePolicy"))?;
            inline_policies.insert(
                policy,
                decode_policy("GetRolePolicy", out.policy_document())?,
            );
        }
        let attached_policies = self
            .iam
            .list_attached_role_policies()
            .role_name(name)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(err("ListAttachedRolePolicies"))?
            .into_iter()
            .filter_map(|p| p.policy_arn)
            .collect();
        Ok(Some(ObservedRole {
            tags,
            trust_policy,
            permissions_boundary,
            inline_policies,
            attached_policies,
        }))
    }

    /// The digest of every role under `path_prefix`, by name, as
    /// [`observe_role`](Self::observe_role) would see each: one paginated
    /// `GetAccountAuthorizationDetails` (roles only), so a sweep of every tenant role costs pages
    /// of roles, not four calls per role. Pages of 200 roles: a page's documents are held
    /// whole while it is read (some 6 KB a role), and 50 calls a sweep at 10,000 roles are few.
    pub async fn roles_under(
        &self,
        path_prefix: &str,
    ) -> Result<HashMap<String, RoleDigest>, CloudError> {
        const OP: &str = "GetAccountAuthorizationDetails";
        let mut pages = self
            .iam
            .get_account_authorization_details()
            .filter(EntityType::Role)
            .max_items(200)
            .into_paginator()
            .send();
        let mut roles = HashMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err(OP))?;
            for role in page.role_detail_list() {
                let (Some(name), true) = (
                    role.role_name(),
                    role.path().is_some_and(|p| p.starts_with(path_prefix)),
                ) else {
                    continue;
                };
                roles.insert(name.to_owned(), role_from_details(role)?.digest());
            }
        }
        Ok(roles)
    }

    /// Applies one planned change to the role.
    pub async fn apply_role_change(
        &self,
        role: &DesiredRole,
        change: &RoleChange,
    ) -> Result<(), CloudError> {
        let name = role.name.as_str();
        match change {
            RoleChange::Create => {
                let tags = role
                    .tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| CloudError::Build("Tag", e.to_string()))?;
                self.iam
                    .create_role()
                    .role_name(name)
                    .path(&role.path)
                    .description(&role.description)
                    .assume_role_policy_document(role.trust_policy.to_string())
                    .max_session_duration(3600)
                    .set_permissions_boundary(role.permissions_boundary.clone())
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(err("CreateRole"))?;
            }
            RoleChange::UpdateTrust => self.update_trust(role).await?,
            RoleChange::PutInlinePolicy => {
                let Some(policy) = &role.inline_policy else {
                    return Ok(());
                };
                self.iam
                    .put_role_policy()
                    .role_name(name)
                    .policy_name(INLINE_POLICY)
                    .policy_document(policy.to_string())
                    .send()
                    .await
                    .map_err(err("PutRolePolicy"))?;
            }
            RoleChange::DeleteInlinePolicy(policy) => {
                self.delete_inline_policy(name, policy).await?
            }
            RoleChange::DetachPolicy(arn) => self.detach_policy(name, arn).await?,
            RoleChange::SetBoundary(arn) => {
                self.iam
                    .put_role_permissions_boundary()
                    .role_name(name)
                    .permissions_boundary(arn)
                    .send()
                    .await
                    .map_err(err("PutRolePermissionsBoundary"))?;
            }
            RoleChange::RemoveBoundary => {
                self.iam
                    .delete_role_permissions_boundary()
                    .role_name(name)
                    .send()
                    .await
                    .map_err(err("DeleteRolePermissionsBoundary"))?;
            }
        }
        Ok(())
    }

    async fn update_trust(&self, role: &DesiredRole) -> Result<(), CloudError> {
        self.iam
            .update_assume_role_policy()
            .role_name(&role.name)
            .policy_document(role.trust_policy.to_string())
            .send()
            .await
            .map_err(err("UpdateAssumeRolePolicy"))?;
        Ok(())
    }

    async fn delete_inline_policy(&self, role: &str, policy: &str) -> Result<(), CloudError> {
        self.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(policy)
            .send()
            .await
            .map_err(err("DeleteRolePolicy"))?;
        Ok(())
    }

    async fn detach_policy(&self, role: &str, arn: &str) -> Result<(), CloudError> {
        self.iam
            .detach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await
            .map_err(err("DetachRolePolicy"))?;
        Ok(())
    }

    /// Removes a role as `observed`, with everything attached to it; false if it was gone
    /// already.
    pub async fn delete_role(
        &self,
        name: &str,
        observed: &ObservedRole,
    ) -> Result<bool, CloudError> {
        for policy in observed.inline_policies.keys() {
            self.delete_inline_policy(name, policy).await?;
        }
        for arn in &observed.attached_policies {
            self.detach_policy(name, arn).await?;
        }
        match self.iam.delete_role().role_name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = CloudError::from_sdk(IAM, "DeleteRole", e);
                if e.code() == "NoSuchEntity" {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_decoded_whether_encoded_or_not() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let want = serde_json::json!({"Version": "2012-10-17", "Statement": []});
        assert_eq!(decode_policy("GetRole", encoded).ok(), Some(want.clone()));
        assert_eq!(decode_policy("GetRole", plain).ok(), Some(want));
        assert!(decode_policy("GetRole", "%7Bnot json").is_err());
    }
}
