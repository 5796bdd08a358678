//! The decisions of a delegated tenant's reconcile, pure: whether the customer's role and bucket
//! may be used at all, and what the verification of the customer's side means for each
//! condition.

use crate::api::{ConditionStatus, DelegatedSpec, ResidencyPolicySpec};
use crate::controllers::conditions::{ENCRYPTED, PUBLIC_ACCESS_BLOCKED, RESIDENCY_COMPLIANT};
use crate::controllers::tenant_storage::refusal::Refusal;
use crate::plan::{Arn, ArnError, PublicAccessBlock, partition_of};
use crate::policy::{self, ResidencyError};

pub(super) const DELEGATION_VERIFIED: &str = "DelegationVerified";

/// The customer's side as the spec names it, checked before any call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Customer {
    pub role_arn: Arn,
    pub bucket: String,
    /// The partition the policy places data in.
    pub partition: &'static str,
}

/// The bucket name and, when given as an ARN, its partition.
pub(super) fn parse_bucket(bucket: &str) -> Result<(String, Option<String>), ArnError> {
    if !bucket.starts_with("arn:") {
        return Ok((bucket.to_owned(), None));
    }
    let arn: Arn = bucket.parse()?;
    Ok((arn.resource, Some(arn.partition)))
}

/// Whether the spec's role and bucket may be used: valid ARNs, in the policy's partition, in
/// another account than the operator's, and a requested region the policy allows.
pub(super) fn customer(
    spec: &DelegatedSpec,
    requested_region: Option<&str>,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
    own_account: &str,
) -> Result<Customer, Refusal> {
    let invalid = |field, e: ArnError| Refusal::InvalidArn {
        field,
        error: e.to_string(),
    };
    // The API server's schema admits only ARNs here; an object from before it is refused.
    let role_arn: Arn =
        (spec.role_arn.parse()).map_err(|e| invalid("spec.delegated.roleArn", e))?;
    let (bucket, bucket_partition) =
        parse_bucket(&spec.bucket).map_err(|e| invalid("spec.delegated.bucket", e))?;
    let partition = partition_of(&policy.default_region);
    for (field, given) in [
        ("spec.delegated.roleArn", Some(role_arn.partition.as_str())),
        ("spec.delegated.bucket", bucket_partition.as_deref()),
    ] {
        if let Some(given) = given.filter(|p| *p != partition) {
            return Err(Refusal::PartitionMismatch {
                field,
                given: given.to_owned(),
                policy: policy_name.to_owned(),
                partition: partition.to_owned(),
            });
        }
    }
    if role_arn.account == own_account {
        return Err(Refusal::RoleInOwnAccount {
            role: spec.role_arn.clone(),
        });
    }
    if let Some(region) = requested_region {
        policy::check_actual_region(policy_name, policy, region)?;
    }
    Ok(Customer {
        role_arn,
        bucket,
        partition,
    })
}

/// What the verification of the customer's side found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verified {
    /// The role could not be assumed or the bucket not reached: the reason and what to do.
    Unreachable(&'static str, String),
    Reached {
        region: String,
        kms_encrypted: Option<String>,
        public_access: Option<PublicAccessBlock>,
    },
}

/// One condition as the assessment sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Finding {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

/// The conditions a verification sets, and the first failure (Ready's reason), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Assessment {
    pub findings: Vec<Finding>,
    pub failure: Option<Finding>,
    /// Where the customer's bucket is, once reached.
    pub bucket_region: Option<String>,
}

impl Assessment {
    /// The bucket is reached and in shape: the workload role may assume the customer's role.
    pub fn usable(&self) -> bool {
        self.failure.is_none() && self.bucket_region.is_some()
    }

    fn found(
        &mut self,
        status: ConditionStatus,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let finding = Finding {
            type_,
            status,
            reason,
            message,
        };
        if status == ConditionStatus::False && self.failure.is_none() {
            self.failure = Some(finding.clone());
        }
        self.findings.push(finding);
    }
}

/// What the customer's side, as verified, means for each condition.
pub(super) fn assess(
    verified: Verified,
    customer: &Customer,
    requested_region: Option<&str>,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
) -> Assessment {
    let mut assessment = Assessment {
        findings: Vec::new(),
        failure: None,
        bucket_region: None,
    };
    let (region, kms_encrypted, public_access) = match verified {
        Verified::Unreachable(reason, message) => {
            assessment.found(ConditionStatus::False, DELEGATION_VERIFIED, reason, message);
            return assessment;
        }
        Verified::Reached {
            region,
            kms_encrypted,
            public_access,
        } => (region, kms_encrypted, public_access),
    };
    let (role, bucket) = (&customer.role_arn, &customer.bucket);
    assessment.found(
        ConditionStatus::True,
        DELEGATION_VERIFIED,
        "RoleAssumed",
        format!(
            "assumed {role} with the tenant's ExternalId and reached bucket {bucket} in {region}"
        ),
    );
    residency(
        &mut assessment,
        bucket,
        &region,
        requested_region,
        policy_name,
        policy,
    );
    encryption(&mut assessment, bucket, kms_encrypted);
    public_access_block(&mut assessment, bucket, public_access);
    assessment.bucket_region = Some(region);
    assessment
}

fn residency(
    assessment: &mut Assessment,
    bucket: &str,
    region: &str,
    requested_region: Option<&str>,
    policy_name: &str,
    policy: &ResidencyPolicySpec,
) {
    let allowed = policy::check_actual_region(policy_name, policy, region).and_then(|()| {
        match requested_region {
            Some(want) if want != region => Err(ResidencyError::RegionChange {
                requested: want.to_owned(),
                recorded: region.to_owned(),
            }),
            _ => Ok(()),
        }
    });
    match allowed {
        Ok(()) => assessment.found(
            ConditionStatus::True,
            RESIDENCY_COMPLIANT,
            "RegionAllowed",
            format!("bucket {bucket} is in {region}, allowed by ResidencyPolicy {policy_name}"),
        ),
        Err(e) => assessment.found(
            ConditionStatus::False,
            RESIDENCY_COMPLIANT,
            "ResidencyViolation",
            format!(
                "customer bucket {bucket} is in {region}: {e}. The operator does not use it and the tenant's role may not assume the customer's role; the customer must provide a bucket in one of: {}",
                policy.allowed_regions.join(", ")
            ),
        ),
    }
}

fn encryption(assessment: &mut Assessment, bucket: &str, kms_encrypted: Option<String>) {
    match kms_encrypted {
        Some(key) => assessment.found(
            ConditionStatus::True,
            ENCRYPTED,
            "CustomerKmsEncryption",
            format!("default encryption of bucket {bucket} is SSE-KMS with {key}"),
        ),
        None => assessment.found(
            ConditionStatus::False,
            ENCRYPTED,
            "NotEncryptedWithKms",
            format!(
                "bucket {bucket} is not encrypted with SSE-KMS by default; the customer must set it: aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration '{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":{{\"SSEAlgorithm\":\"aws:kms\",\"KMSMasterKeyID\":\"<key arn>\"}},\"BucketKeyEnabled\":true}}]}}'"
            ),
        ),
    }
}

fn public_access_block(
    assessment: &mut Assessment,
    bucket: &str,
    public_access: Option<PublicAccessBlock>,
) {
    if public_access == Some(PublicAccessBlock::ALL_ON) {
        assessment.found(
            ConditionStatus::True,
            PUBLIC_ACCESS_BLOCKED,
            "AllBlocked",
            format!("all four Block Public Access settings of bucket {bucket} are on"),
        );
    } else {
        assessment.found(
            ConditionStatus::False,
            PUBLIC_ACCESS_BLOCKED,
            "PublicAccessNotBlocked",
            format!(
                "Block Public Access of bucket {bucket} is not fully on; the customer must turn on all four settings: aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::tenant_storage::storage_tests::policy;

    const ROLE: &str = "arn:aws:iam::444455556666:role/tenant-storage";

    fn spec(role: &str, bucket: &str) -> DelegatedSpec {
        DelegatedSpec {
            role_arn: role.into(),
            bucket: bucket.into(),
        }
    }

    fn refusal(role: &str, bucket: &str, region: Option<&str>) -> &'static str {
        match customer(&spec(role, bucket), region, "eu", &policy(), "111122223333") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(r) => r.reason(),
        }
    }

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
    fn a_customer_side_is_refused_before_any_call_for_each_reason() {
        assert_eq!(refusal("role/x", "b", None), "InvalidArn");
        assert_eq!(refusal(ROLE, "arn:aws:s3", None), "InvalidArn");
        assert_eq!(
            refusal("arn:aws-cn:iam::444455556666:role/r", "b", None),
            "PartitionMismatch"
        );
        assert_eq!(
            refusal(ROLE, "arn:aws-cn:s3:::b", None),
            "PartitionMismatch"
        );
        assert_eq!(
            refusal("arn:aws:iam::111122223333:role/r", "b", None),
            "RoleInOwnAccount"
        );
        assert_eq!(refusal(ROLE, "b", Some("us-east-1")), "ResidencyViolation");
        let ok = customer(
            &spec(ROLE, "arn:aws:s3:::b"),
            None,
            "eu",
            &policy(),
            "111122223333",
        );
        assert_eq!(ok.map(|c| c.bucket), Ok("b".to_owned()));
    }

    fn reached(region: &str, kms: bool, blocked: bool) -> Verified {
        Verified::Reached {
            region: region.into(),
            kms_encrypted: kms.then(|| "arn:aws:kms:eu-central-1:444455556666:key/k".into()),
            public_access: blocked.then_some(PublicAccessBlock::ALL_ON),
        }
    }

    fn assessed(verified: Verified, requested: Option<&str>) -> Assessment {
        let customer = customer(&spec(ROLE, "b"), None, "eu", &policy(), "111122223333");
        let customer = customer.unwrap_or_else(|r| panic!("{r}"));
        assess(verified, &customer, requested, "eu", &policy())
    }

    fn failure(a: &Assessment) -> Option<&'static str> {
        a.failure.as_ref().map(|f| f.reason)
    }

    #[test]
    fn a_verified_bucket_in_shape_is_usable() {
        let a = assessed(reached("eu-west-1", true, true), None);
        assert!(a.usable(), "{a:?}");
        assert_eq!(a.bucket_region.as_deref(), Some("eu-west-1"));
        assert!(a.findings.iter().all(|f| f.status == ConditionStatus::True));
        assert_eq!(a.findings.len(), 4);
    }

    #[test]
    fn each_failed_check_says_why_and_the_first_is_readys_reason() {
        let unreachable = Verified::Unreachable("AssumeRoleDenied", "denied".into());
        let a = assessed(unreachable, None);
        assert_eq!(failure(&a), Some("AssumeRoleDenied"));
        assert!(!a.usable() && a.bucket_region.is_none());
        let cases = [
            (reached("us-east-1", true, true), None, "ResidencyViolation"),
            (
                reached("eu-west-1", true, true),
                Some("eu-central-1"),
                "ResidencyViolation",
            ),
            (
                reached("eu-west-1", false, true),
                None,
                "NotEncryptedWithKms",
            ),
            (
                reached("eu-west-1", true, false),
                None,
                "PublicAccessNotBlocked",
            ),
            (
                reached("us-east-1", false, false),
                None,
                "ResidencyViolation",
            ),
            (
                reached("eu-west-1", false, false),
                None,
                "NotEncryptedWithKms",
            ),
        ];
        for (verified, requested, reason) in cases {
            let a = assessed(verified.clone(), requested);
            assert_eq!(failure(&a), Some(reason), "{verified:?}");
            assert!(!a.usable());
        }
    }
}
