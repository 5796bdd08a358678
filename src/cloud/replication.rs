//! S3 replication configuration of a primary bucket, in the plan's words
//! ([`crate::plan::replication`]).

use aws_sdk_s3::types::{
    DeleteMarkerReplication, DeleteMarkerReplicationStatus, Destination, EncryptionConfiguration,
    ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter, ReplicationRuleStatus,
    SourceSelectionCriteria, SseKmsEncryptedObjects, SseKmsEncryptedObjectsStatus,
};

use super::error::{OperationError, SdkFailure};
use super::{CloudError, Regional};
use crate::plan::replication::{ObservedReplication, RULE_ID, Replication, ReplicationChange};

fn err<E: OperationError>(op: &'static str) -> impl FnOnce(SdkFailure<E>) -> CloudError {
    move |e| CloudError::from_sdk("s3", op, e)
}

fn build(op: &'static str) -> impl FnOnce(aws_sdk_s3::error::BuildError) -> CloudError {
    move |e| CloudError::Build(op, e.to_string())
}

impl Regional {
    /// The bucket's replication configuration.
    pub async fn replication(&self, bucket: &str) -> Result<ObservedReplication, CloudError> {
        let out = match self
            .s3
            .get_bucket_replication()
            .bucket(bucket)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
            .map_err(err("GetBucketReplication"))
        {
            Ok(out) => out,
            Err(e) if e.is_not_found(&["ReplicationConfigurationNotFoundError"]) => {
                return Ok(ObservedReplication::None);
            }
            Err(e) => return Err(e),
        };
        Ok(match out.replication_configuration() {
            Some(config) => observed(config),
            None => ObservedReplication::None,
        })
    }

    pub async fn change_replication(
        &self,
        bucket: &str,
        change: &ReplicationChange,
    ) -> Result<(), CloudError> {
        match change {
            ReplicationChange::Put(replication) => {
                self.s3
                    .put_bucket_replication()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .replication_configuration(configuration(replication)?)
                    .send()
                    .await
                    .map_err(err("PutBucketReplication"))?;
            }
            ReplicationChange::Remove => {
                self.s3
                    .delete_bucket_replication()
                    .bucket(bucket)
                    .set_expected_bucket_owner(self.bucket_owner.clone())
                    .send()
                    .await
                    .map_err(err("DeleteBucketReplication"))?;
            }
        }
        Ok(())
    }
}

/// One rule for every key (an empty prefix filter, so V2 with delete-marker replication),
/// SSE-KMS objects re-encrypted with the replica's key.
fn configuration(want: &Replication) -> Result<ReplicationConfiguration, CloudError> {
    const OP: &str = "PutBucketReplication";
    let mut destination = Destination::builder().bucket(&want.destination_bucket_arn);
    let mut rule = ReplicationRule::builder()
        .id(RULE_ID)
        .priority(1)
        .status(ReplicationRuleStatus::Enabled)
        .filter(ReplicationRuleFilter::builder().prefix("").build())
        .delete_marker_replication(
            DeleteMarkerReplication::builder()
                .status(DeleteMarkerReplicationStatus::Enabled)
                .build(),
        );
    if let Some(key) = &want.replica_key_arn {
        destination = destination.encryption_configuration(
            EncryptionConfiguration::builder()
                .replica_kms_key_id(key)
                .build(),
        );
        rule = rule.source_selection_criteria(
            SourceSelectionCriteria::builder()
                .sse_kms_encrypted_objects(
                    SseKmsEncryptedObjects::builder()
                        .status(SseKmsEncryptedObjectsStatus::Enabled)
                        .build()
                        .map_err(build(OP))?,
                )
                .build(),
        );
    }
    let rule = rule
        .destination(destination.build().map_err(build(OP))?)
        .build()
        .map_err(build(OP))?;
    ReplicationConfiguration::builder()
        .role(&want.role_arn)
        .rules(rule)
        .build()
        .map_err(build(OP))
}

/// The configuration as the operator compares it: its own single rule, or something else.
fn observed(config: &ReplicationConfiguration) -> ObservedReplication {
    let destinations = || {
        let all = config.rules().iter().filter_map(|r| r.destination());
        all.map(|d| d.bucket().to_owned()).collect()
    };
    let [rule] = config.rules() else {
        return ObservedReplication::Other {
            destinations: destinations(),
        };
    };
    let ours = rule.id() == Some(RULE_ID)
        && rule.status() == &ReplicationRuleStatus::Enabled
        && rule.filter().is_some_and(|f| {
            f.prefix().unwrap_or("").is_empty() && f.tag().is_none() && f.and().is_none()
        })
        && rule.delete_marker_replication().and_then(|d| d.status())
            == Some(&DeleteMarkerReplicationStatus::Enabled);
    let replica_key = rule
        .destination()
        .and_then(|d| d.encryption_configuration())
        .and_then(|e| e.replica_kms_key_id())
        .map(str::to_owned);
    let kms_objects = rule
        .source_selection_criteria()
        .and_then(|c| c.sse_kms_encrypted_objects())
        .map(|o| o.status() == &SseKmsEncryptedObjectsStatus::Enabled);
    // Objects under the tenant key replicate only when SSE-KMS objects are selected.
    let kms_consistent = kms_objects.unwrap_or(false) == replica_key.is_some();
    match rule.destination() {
        Some(destination) if ours && kms_consistent => ObservedReplication::Ours(Replication {
            role_arn: config.role().to_owned(),
            destination_bucket_arn: destination.bucket().to_owned(),
            replica_key_arn: replica_key,
        }),
        _ => ObservedReplication::Other {
            destinations: destinations(),
        },
    }
}
