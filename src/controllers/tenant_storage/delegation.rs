//! Delegated mode: the customer hosts the bucket and grants a role. The operator publishes what
//! the customer must create, verifies it by assuming that role with the tenant's ExternalId,
//! reads (never writes) the bucket's configuration, and gives the tenant's workloads a role
//! that may only assume the customer's role.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::access::{self, Refusal};
use super::{Report, publish, refuse};
use crate::api::{
    ConditionStatus, DelegatedSpec, DelegationStatus, ResidencyPolicySpec, TenantStorage,
};
use crate::cloud::{BucketPresence, CloudError};
use crate::controllers::conditions::{
    ENCRYPTED, PUBLIC_ACCESS_BLOCKED, READY, RESIDENCY_COMPLIANT,
};
use crate::controllers::{Context, Error};
use crate::plan::access::{
    RoleName, chaining_policy, customer_permissions_policy, customer_trust_policy,
};
use crate::plan::{
    Arn, ArnError, PublicAccessBlock, TenantIdentity, naming, partition_of, tags, tenant_tags,
};
use crate::policy;

/// Key of the ExternalId in the tenant's ExternalId Secret.
const EXTERNAL_ID_KEY: &str = "externalId";
const DELEGATION_VERIFIED: &str = "DelegationVerified";

/// The Secret holding a tenant's ExternalId lives in the operator's namespace, not the
/// tenant's: a tenant must never choose or change its ExternalId, or it could present another
/// customer's and make the operator act for that customer (the confused deputy the ExternalId
/// exists to prevent).
fn secret_name(id: &TenantIdentity) -> String {
    format!(
        "{}-external-id",
        naming::role_name(&id.cluster_id, &id.namespace, &id.name)
    )
}

/// The bucket name and, when given as an ARN, its partition.
fn parse_bucket(bucket: &str) -> Result<(String, Option<String>), ArnError> {
    if !bucket.starts_with("arn:") {
        return Ok((bucket.to_owned(), None));
    }
    let arn: Arn = bucket.parse()?;
    Ok((arn.resource, Some(arn.partition)))
}

/// A new ExternalId: 128 random bits from the kernel, hex.
fn new_external_id() -> Result<String, Error> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the tenant's ExternalId, creating its Secret the first time. Never logged.
async fn external_id(ctx: &Context, id: &TenantIdentity) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.purge.namespace);
    let name = secret_name(id);
    if let Some(secret) = secrets.get_opt(&name).await? {
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(EXTERNAL_ID_KEY))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .filter(|v| v.len() >= 2 && !v.contains(char::is_whitespace));
        return value.ok_or(Error::ExternalIdSecret {
            secret: format!("{}/{name}", ctx.settings.purge.namespace),
            why: format!("it has no usable {EXTERNAL_ID_KEY} key; delete the Secret to have a new ExternalId generated (the customer's trust policy must then be updated)"),
        });
    }
    let external_id = new_external_id()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ctx.settings.purge.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "tenant-storage-operator".to_owned(),
            )])),
            // Annotations, not labels: a TenantStorage name may be longer than a label value.
            annotations: Some(BTreeMap::from([
                (tags::NAMESPACE.to_owned(), id.namespace.clone()),
                (tags::NAME.to_owned(), id.name.clone()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            EXTERNAL_ID_KEY.to_owned(),
            ByteString(external_id.clone().into_bytes()),
        )])),
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;
    Ok(external_id)
}

/// Deletes the tenant's ExternalId Secret (it is in another namespace than the TenantStorage,
/// so garbage collection cannot).
pub(super) async fn forget_external_id(ctx: &Context, id: &TenantIdentity) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.purge.namespace);
    match secrets.delete(&secret_name(id), &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What the verification of the customer's side found.
enum Verified {
    /// The role could not be assumed or the bucket not reached: the reason and what to do.
    Unreachable(&'static str, String),
    Reached {
        region: String,
        kms_encrypted: Option<String>,
        public_access: Option<PublicAccessBlock>,
    },
}

async fn verify(
    ctx: &Context,
    spec: &DelegatedSpec,
    customer_account: &str,
    bucket: &str,
    external_id: &str,
    start_region: &str,
) -> Result<Verified, Error> {
    let iam = ctx.cloud.iam();
    let creds = match iam
        .assume_role(
            &spec.role_arn,
            Some(external_id),
            "tenant-storage-operator-verify",
        )
        .await
    {
        Ok(creds) => creds,
        Err(e) if e.is_denied() => {
            return Ok(Verified::Unreachable(
                "AssumeRoleDenied",
                format!(
                    "cannot assume {} with this tenant's ExternalId ({}): the customer's role must have the trust policy in status.delegation.trustPolicy, which admits the operator only with this tenant's ExternalId",
                    spec.role_arn,
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
            .assume_role(&spec.role_arn, probe, "tenant-storage-operator-verify")
            .await
        {
            Ok(_) => {
                return Ok(Verified::Unreachable(
                    "ExternalIdNotEnforced",
                    format!(
                        "the trust policy of {} lets the operator assume it without this tenant's ExternalId; the customer must require it (the sts:ExternalId condition of status.delegation.trustPolicy). Nothing is granted until then",
                        spec.role_arn
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
                    spec.role_arn
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
                spec.role_arn,
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
            .filter(|e| e.algorithm == "aws:kms" || e.algorithm == "aws:kms:dsse")
            .map(|e| e.key_id.unwrap_or_else(|| "the AWS managed key".into())),
        public_access,
    })
}

/// The delegated pipeline: validate, ExternalId, publish, verify, role, status.
pub(super) async fn provision(
    ts: &TenantStorage,
    ctx: &Context,
    api: &Api<TenantStorage>,
    report: &mut Report<'_>,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    id: &TenantIdentity,
) -> Result<Action, Error> {
    let spec = ts
        .spec
        .delegated
        .as_ref()
        .ok_or(Error::MissingField("spec.delegated"))?;
    let partition = partition_of(&policy.default_region);
    // The API server's schema admits only ARNs here; an object from before it is refused.
    let (role_arn, (bucket, bucket_partition)) =
        match (spec.role_arn.parse::<Arn>(), parse_bucket(&spec.bucket)) {
            (Ok(role_arn), Ok(bucket)) => (role_arn, bucket),
            (Err(e), _) | (_, Err(e)) => {
                return refuse(report, ctx, api, None, "InvalidArn", e.to_string()).await;
            }
        };
    for (field, given) in [
        ("spec.delegated.roleArn", Some(role_arn.partition.as_str())),
        ("spec.delegated.bucket", bucket_partition.as_deref()),
    ] {
        if let Some(given) = given.filter(|p| *p != partition) {
            let message = format!(
                "{field} is in AWS partition {given}, but ResidencyPolicy {policy_name} places data in {partition} regions: name a role and bucket in {partition}"
            );
            return refuse(report, ctx, api, None, "PartitionMismatch", message).await;
        }
    }
    let customer_account = role_arn.account.as_str();
    if customer_account == ctx.settings.access.account_id {
        let message = format!(
            "spec.delegated.roleArn {} is in the operator's own AWS account; delegated mode reaches a bucket in the customer's account through a role the customer grants. Use mode Managed for buckets in this account",
            spec.role_arn
        );
        return refuse(report, ctx, api, None, "RoleInOwnAccount", message).await;
    }
    if let Some(region) = &ts.spec.region
        && let Err(e) = policy::check_actual_region(policy_name, policy, region)
    {
        return refuse(report, ctx, api, Some(false), e.reason(), e.to_string()).await;
    }

    let external_id = external_id(ctx, id).await?;
    let role_name = RoleName::of(partition, &ctx.settings.access.account_id, id);
    let workloads = ts.spec.access.as_ref().map(|_| role_name.arn.as_str());
    let trust = customer_trust_policy(&ctx.settings.access.operator_arn, &external_id, workloads);

    let start_region = ts
        .spec
        .region
        .clone()
        .or_else(|| {
            report
                .status
                .delegation
                .as_ref()
                .and_then(|d| d.bucket_region.clone())
        })
        .unwrap_or_else(|| policy.default_region.clone());
    let verified = verify(
        ctx,
        spec,
        customer_account,
        &bucket,
        &external_id,
        &start_region,
    )
    .await?;
    let bucket_arn = Arn::bucket(partition, &bucket).to_string();
    let level = ts.spec.access.as_ref().map(|a| a.level).unwrap_or_default();

    let mut usable = false;
    let mut failure: Option<(&'static str, String)> = None;
    let mut bucket_region = None;
    match verified {
        Verified::Unreachable(reason, message) => {
            report.set(
                DELEGATION_VERIFIED,
                ConditionStatus::False,
                reason,
                message.clone(),
            );
            failure = Some((reason, message));
        }
        Verified::Reached {
            region,
            kms_encrypted,
            public_access,
        } => {
            report.set(
                DELEGATION_VERIFIED,
                ConditionStatus::True,
                "RoleAssumed",
                format!("assumed {} with the tenant's ExternalId and reached bucket {bucket} in {region}", spec.role_arn),
            );
            let residency =
                policy::check_actual_region(policy_name, policy, &region).and_then(|()| match &ts
                    .spec
                    .region
                {
                    Some(want) if *want != region => Err(policy::ResidencyError::RegionChange {
                        requested: want.clone(),
                        recorded: region.clone(),
                    }),
                    _ => Ok(()),
                });
            match residency {
                Ok(()) => report.set(
                    RESIDENCY_COMPLIANT,
                    ConditionStatus::True,
                    "RegionAllowed",
                    format!(
                        "bucket {bucket} is in {region}, allowed by ResidencyPolicy {policy_name}"
                    ),
                ),
                Err(e) => {
                    let message = format!(
                        "customer bucket {bucket} is in {region}: {e}. The operator does not use it and the tenant's role may not assume the customer's role; the customer must provide a bucket in one of: {}",
                        policy.allowed_regions.join(", ")
                    );
                    if report.previous_ready_reason() != Some("ResidencyViolation") {
                        publish(
                            ctx,
                            ts,
                            EventType::Warning,
                            "ResidencyViolation",
                            "Verify",
                            message.clone(),
                        )
                        .await;
                    }
                    report.set(
                        RESIDENCY_COMPLIANT,
                        ConditionStatus::False,
                        "ResidencyViolation",
                        message.clone(),
                    );
                    failure = Some(("ResidencyViolation", message));
                }
            }
            match kms_encrypted {
                Some(key) => report.set(
                    ENCRYPTED,
                    ConditionStatus::True,
                    "CustomerKmsEncryption",
                    format!("default encryption of bucket {bucket} is SSE-KMS with {key}"),
                ),
                None => {
                    let message = format!(
                        "bucket {bucket} is not encrypted with SSE-KMS by default; the customer must set it: aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration '{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":{{\"SSEAlgorithm\":\"aws:kms\",\"KMSMasterKeyID\":\"<key arn>\"}},\"BucketKeyEnabled\":true}}]}}'"
                    );
                    report.set(
                        ENCRYPTED,
                        ConditionStatus::False,
                        "NotEncryptedWithKms",
                        message.clone(),
                    );
                    failure = failure.or(Some(("NotEncryptedWithKms", message)));
                }
            }
            if public_access == Some(PublicAccessBlock::ALL_ON) {
                report.set(
                    PUBLIC_ACCESS_BLOCKED,
                    ConditionStatus::True,
                    "AllBlocked",
                    format!("all four Block Public Access settings of bucket {bucket} are on"),
                );
            } else {
                let message = format!(
                    "Block Public Access of bucket {bucket} is not fully on; the customer must turn on all four settings: aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
                );
                report.set(
                    PUBLIC_ACCESS_BLOCKED,
                    ConditionStatus::False,
                    "PublicAccessNotBlocked",
                    message.clone(),
                );
                failure = failure.or(Some(("PublicAccessNotBlocked", message)));
            }
            usable = failure.is_none();
            bucket_region = Some(region);
        }
    }

    report.status.delegation = Some(DelegationStatus {
        external_id_secret: format!("{}/{}", ctx.settings.purge.namespace, secret_name(id)),
        trust_policy: trust.to_string(),
        permissions_policy: customer_permissions_policy(
            level,
            &bucket_arn,
            customer_account,
            &policy.allowed_regions,
            partition,
        )
        .to_string(),
        bucket_region,
    });

    // The workload role may assume the customer's role only once the bucket is verified.
    let (role, observed_role) = match &ts.spec.access {
        Some(spec_access) => match access::wanted_role(
            ctx,
            id,
            partition,
            &tenant_tags(id, policy_name, &policy.jurisdiction),
            spec_access,
            usable.then(|| chaining_policy(&spec.role_arn)),
            policy.access.permissions_boundary_arn.clone(),
            super::reads_fresh(ts),
        )
        .await?
        {
            Ok((role, seen)) => (Some(role), seen),
            Err(Refusal { reason, message }) => {
                return refuse(report, ctx, api, None, reason, message).await;
            }
        },
        None => (None, None),
    };
    if let Some(Refusal { reason, message }) = access::reconcile_role(
        ctx,
        ts,
        report,
        api,
        id,
        role.as_ref(),
        observed_role,
        ts.spec.access.as_ref(),
    )
    .await?
    {
        return refuse(report, ctx, api, None, reason, message).await;
    }

    match failure {
        Some((reason, message)) => {
            report.not_ready(reason, &message);
        }
        None => report.set(
            READY,
            ConditionStatus::True,
            "Verified",
            format!("customer bucket {bucket} verified: reachable through {}, region allowed, SSE-KMS, public access blocked", spec.role_arn),
        ),
    }
    report.status.last_recheck = ts.annotations().get(super::RECHECK).cloned();
    report.save(api).await?;
    // The customer's bucket and role are in their account, where our drift events do not look.
    Ok(ctx.schedule.resync_polled(&super::tenant_key(ts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_names_or_arns() {
        assert_eq!(parse_bucket("acme-data"), Ok(("acme-data".into(), None)));
        assert_eq!(
            parse_bucket("arn:aws-cn:s3:::acme-data"),
            Ok(("acme-data".into(), Some("aws-cn".into())))
        );
        assert!(parse_bucket("arn:aws-cn:s3").is_err());
    }

    #[test]
    fn external_ids_are_random_hex() {
        let (a, b) = (new_external_id().ok(), new_external_id().ok());
        assert_ne!(a, b);
        assert!(a.is_some_and(|a| a.len() == 32 && a.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
