//! The report's replica checks, read from AWS: where the replica bucket is (among the policy's
//! replication regions, fed by the primary's rule) and how it is encrypted (its own key in its
//! region, which the rule re-encrypts with; or S3-managed keys).

use super::Check;
use crate::api::{EncryptionMode, ReplicaStatus, ResidencyPolicySpec};
use crate::cloud::{BucketPresence, Cloud, CloudError};
use crate::plan::replication::ObservedReplication;
use crate::plan::{Arn, EncryptionRequirement, ObservedEncryption, partition_of};

/// What AWS says about a tenant's recorded replica.
#[derive(Clone, Debug)]
pub struct ReplicaEvidence {
    pub recorded: ReplicaStatus,
    /// Region of the replica bucket from HEAD (`None`: not found).
    pub region: Option<String>,
    pub encryption: Option<ObservedEncryption>,
    /// The primary's replication configuration.
    pub rule: ObservedReplication,
}

/// Reads the recorded replica bucket and the primary's replication rule.
pub async fn observe(
    cloud: &Cloud,
    (primary, primary_region): (&str, &str),
    recorded: &ReplicaStatus,
) -> Result<ReplicaEvidence, CloudError> {
    let rule = cloud.region(primary_region).replication(primary).await?;
    let s3 = cloud.region(&recorded.region);
    let bucket = &recorded.bucket_name;
    let (region, encryption) = match s3.bucket_presence(bucket).await? {
        BucketPresence::Ours { region } => {
            let encryption = cloud.region(&region).bucket_encryption(bucket).await?;
            (Some(region), encryption)
        }
        BucketPresence::Absent | BucketPresence::OtherAccount => (None, None),
    };
    Ok(ReplicaEvidence {
        recorded: recorded.clone(),
        region,
        encryption,
        rule,
    })
}

/// The replica is where the policy allows and receives every write; or none is required.
pub fn region(policy: Option<&ResidencyPolicySpec>, ev: Option<&ReplicaEvidence>) -> Check {
    let required = policy.is_some_and(|p| p.replication.required);
    let Some(ev) = ev else {
        return if required {
            Check::fail("the policy requires a replica; none is recorded")
        } else {
            Check::pass("none; not required by the policy")
        };
    };
    let bucket = &ev.recorded.bucket_name;
    let Some(region) = &ev.region else {
        return Check::fail(format!("replica bucket {bucket} not found"));
    };
    let allowed = policy.is_some_and(|p| {
        p.allowed_regions.contains(region) && p.replication.regions.contains(region)
    });
    if !allowed {
        let regions = policy.map(|p| p.replication.regions.join(", "));
        return Check::fail(format!(
            "replica {bucket} in {region}; the policy's replication regions: [{}]",
            regions.unwrap_or_default()
        ));
    }
    let arn = Arn::bucket(partition_of(region), bucket).to_string();
    match &ev.rule {
        ObservedReplication::Ours(rule) if rule.destination_bucket_arn == arn => {
            Check::pass(format!(
                "replica {bucket} in {region}, fed every write and delete marker by the primary's rule"
            ))
        }
        _ => Check::fail(format!(
            "replica {bucket} in {region}, but the primary's replication rule does not feed it"
        )),
    }
}

/// The replica is encrypted as the tenant is: with its own key in its region (which the rule
/// re-encrypts replicated objects with), or with S3-managed keys.
pub fn encrypted(mode: EncryptionMode, ev: Option<&ReplicaEvidence>) -> Check {
    let Some(ev) = ev else {
        return Check::pass("no replica");
    };
    let Some(seen) = &ev.encryption else {
        return Check::fail(format!(
            "replica {} has no default encryption",
            ev.recorded.bucket_name
        ));
    };
    match (mode, ev.recorded.kms_key_arn.as_deref()) {
        (EncryptionMode::S3Managed, _) if seen.meets(EncryptionRequirement::S3Managed) => {
            Check::pass("SSE-S3 (AES-256, keys managed by AWS)")
        }
        (EncryptionMode::TenantKey, Some(key)) => {
            let in_region = key
                .parse::<Arn>()
                .is_ok_and(|arn| Some(&arn.region) == ev.region.as_ref());
            let rule_key = matches!(&ev.rule, ObservedReplication::Ours(r) if r.replica_key_arn.as_deref() == Some(key));
            let default = seen.meets(EncryptionRequirement::Kms {
                key: Some(key),
                dsse: false,
            });
            if in_region && rule_key && default {
                Check::pass(format!(
                    "SSE-KMS with its own key {key}; replicated objects re-encrypted with it"
                ))
            } else {
                Check::fail(format!(
                    "key {key}: in the replica's region {in_region}, the bucket's default {default}, the rule's replica key {rule_key}"
                ))
            }
        }
        _ => Check::fail(format!(
            "default encryption {} with key {:?}",
            seen.algorithm, seen.key_id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::replication::Replication;

    const KEY: &str = "arn:aws:kms:eu-west-1:000000000000:key/r1";

    fn policy(required: bool) -> ResidencyPolicySpec {
        serde_json::from_value(serde_json::json!({
            "jurisdiction": "EU", "allowedRegions": ["eu-central-1", "eu-west-1"],
            "defaultRegion": "eu-central-1",
            "replication": {"regions": ["eu-west-1"], "defaultRegion": "eu-west-1", "required": required},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn good() -> ReplicaEvidence {
        ReplicaEvidence {
            recorded: ReplicaStatus {
                region: "eu-west-1".into(),
                bucket_name: "tso-r-n-t".into(),
                kms_key_arn: Some(KEY.into()),
                ..ReplicaStatus::default()
            },
            region: Some("eu-west-1".into()),
            encryption: Some(ObservedEncryption {
                algorithm: "aws:kms".into(),
                key_id: Some(KEY.into()),
                bucket_key: true,
                sse_c_blocked: true,
            }),
            rule: ObservedReplication::Ours(Replication {
                role_arn: "arn:aws:iam::000000000000:role/replication".into(),
                destination_bucket_arn: "arn:aws:s3:::tso-r-n-t".into(),
                replica_key_arn: Some(KEY.into()),
            }),
        }
    }

    #[test]
    fn a_replica_in_policy_fed_by_the_rule_under_its_own_key_passes() {
        let ev = good();
        let placed = region(Some(&policy(true)), Some(&ev));
        assert!(placed.pass, "{}", placed.evidence);
        let enc = encrypted(EncryptionMode::TenantKey, Some(&ev));
        assert!(enc.pass, "{}", enc.evidence);
        assert!(region(Some(&policy(false)), None).pass);
        assert!(encrypted(EncryptionMode::TenantKey, None).pass);
    }

    #[test]
    fn each_replica_failure_is_caught_with_its_evidence() {
        let required = policy(true);
        let none = region(Some(&required), None);
        assert!(
            !none.pass && none.evidence.contains("requires a replica"),
            "{none:?}"
        );
        let mut outside = policy(true);
        outside.replication.regions = vec![];
        let c = region(Some(&outside), Some(&good()));
        assert!(
            !c.pass && c.evidence.contains("replication regions: []"),
            "{c:?}"
        );
        let mut unfed = good();
        unfed.rule = ObservedReplication::None;
        let c = region(Some(&required), Some(&unfed));
        assert!(!c.pass && c.evidence.contains("does not feed it"), "{c:?}");
        let mut gone = good();
        gone.region = None;
        assert!(!region(Some(&required), Some(&gone)).pass);
        let mut other_key = good();
        if let ObservedReplication::Ours(rule) = &mut other_key.rule {
            rule.replica_key_arn = Some("arn:aws:kms:eu-west-1:000000000000:key/other".into());
        }
        let c = encrypted(EncryptionMode::TenantKey, Some(&other_key));
        assert!(
            !c.pass && c.evidence.contains("the rule's replica key false"),
            "{c:?}"
        );
        let mut sse_s3 = good();
        sse_s3.encryption = Some(ObservedEncryption {
            algorithm: "AES256".into(),
            key_id: None,
            bucket_key: false,
            sse_c_blocked: true,
        });
        assert!(!encrypted(EncryptionMode::TenantKey, Some(&sse_s3)).pass);
        assert!(encrypted(EncryptionMode::S3Managed, Some(&sse_s3)).pass);
    }
}
