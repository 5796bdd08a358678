//! Verification of a delegated tenant's customer side: assume the customer's role with the
//! tenant's ExternalId (and make sure it is refused without), then read, never write, the
//! bucket's region, encryption and public access block.

use super::decide::{Customer, Verified};
use super::external_id::new_external_id;
use crate::cloud::{BucketPresence, CloudError};
use crate::controllers::{Context, Error};
use crate::plan::EncryptionRequirement;

/// The key of a customer's bucket is the customer's choice; its data must be under KMS, by
/// SSE-KMS or DSSE-KMS.
const CUSTOMER_ENCRYPTION: EncryptionRequirement<'static> = EncryptionRequirement::Kms {
    key: None,
    dsse: true,
};

pub(super) async fn verify(
    ctx: &Context,
    customer: &Customer,
    external_id: &str,
    start_region: &str,
) -> Result<Verified, Error> {
    let role = customer.role_arn.to_string();
    let (customer_account, bucket) = (customer.role_arn.account.as_str(), &customer.bucket);
    let iam = ctx.cloud.iam();
    let creds = match iam
        .assume_role(&role, Some(external_id), "tenant-storage-operator-verify")
        .await
    {
        Ok(creds) => creds,
        Err(e) if e.is_denied() => {
            return Ok(Verified::Unreachable(
                "AssumeRoleDenied",
                format!(
                    "cannot assume {} with this tenant's ExternalId ({}): the customer's role must have the trust policy in status.delegation.trustPolicy, which admits the operator only with this tenant's ExternalId",
                    role,
                    e.code()
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // The role must refuse the operator without this ExternalId: otherwise any tenant could name
    // it and the operator would act for whoever it belongs to (the confused deputy).
    let wrong = new_external_id()?;
    for probe in [Some(wrong.as_str()), None] {
        match iam
            .assume_role(&role, probe, "tenant-storage-operator-verify")
            .await
        {
            Ok(_) => {
                return Ok(Verified::Unreachable(
                    "ExternalIdNotEnforced",
                    format!(
                        "the trust policy of {} lets the operator assume it without this tenant's ExternalId; the customer must require it (the sts:ExternalId condition of status.delegation.trustPolicy). Nothing is granted until then",
                        role
                    ),
                ));
            }
            Err(e) if e.is_denied() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let s3 = ctx.cloud.s3_as(start_region, &creds, customer_account);
    let region = match s3.bucket_presence(bucket).await? {
        BucketPresence::Ours { region } => region,
        BucketPresence::Absent => {
            return Ok(Verified::Unreachable(
                "BucketNotFound",
                format!("bucket {bucket} (spec.delegated.bucket) does not exist"),
            ));
        }
        BucketPresence::OtherAccount => {
            return Ok(Verified::Unreachable(
                "BucketNotReachable",
                format!(
                    "the customer's role {} may not reach bucket {bucket}: give it the permissions policy in status.delegation.permissionsPolicy",
                    role
                ),
            ));
        }
    };
    let s3 = ctx.cloud.s3_as(&region, &creds, customer_account);
    let denied = |e: &CloudError, what: &str| {
        Verified::Unreachable(
            "BucketNotReachable",
            format!(
                "the customer's role {} cannot read the {what} of bucket {bucket} ({}): give it the permissions policy in status.delegation.permissionsPolicy",
                role,
                e.code()
            ),
        )
    };
    let encryption = match s3.bucket_encryption(bucket).await {
        Ok(enc) => enc,
        Err(e) if e.is_denied() => return Ok(denied(&e, "encryption")),
        Err(e) => return Err(e.into()),
    };
    let public_access = match s3.public_access_block(bucket).await {
        Ok(pab) => pab,
        Err(e) if e.is_denied() => return Ok(denied(&e, "public access block")),
        Err(e) => return Err(e.into()),
    };
    Ok(Verified::Reached {
        region,
        kms_encrypted: encryption
            .filter(|e| e.meets(CUSTOMER_ENCRYPTION))
            .map(|e| e.key_id.unwrap_or_else(|| "the AWS managed key".into())),
        public_access,
    })
}
