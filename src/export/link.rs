//! The download link: presigned GETs of the archive and the manifest, signed by the export
//! identity (the only one, besides the configured admins, that the export bucket lets read),
//! handed to the operator through a Secret in the operator's namespace. The operator copies it
//! into a Secret in the tenant's namespace; the link is never in status, events or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

use super::engine::Layout;
use super::request::RunError;
use super::state::State;
use crate::cloud::Regional;
use crate::purge::persist;

/// Label on a link handoff Secret: the uid of the request it serves.
pub const UID_LABEL: &str = "storage.tenancy.dev/export-request-uid";
/// Keys of a link Secret.
pub const ARCHIVE_URL: &str = "archiveUrl";
pub const MANIFEST_URL: &str = "manifestUrl";
pub const EXPIRES_AT: &str = "expiresAt";
pub const REFRESH: &str = "refresh";

/// When the lifecycle rule removes the export: `retention_days` after it was completed.
pub fn expiry(state: &State, retention_days: i32) -> Result<Timestamp, RunError> {
    let completed: Timestamp = state
        .finished
        .as_ref()
        .ok_or_else(|| RunError::Refused("the export has not finished".into()))?
        .completed
        .parse()
        .map_err(|e| RunError::Refused(format!("the checkpoint's completion time: {e}")))?;
    completed
        .checked_add(SignedDuration::from_hours(24 * i64::from(retention_days)))
        .map_err(|e| RunError::Refused(format!("export retention of {retention_days} days: {e}")))
}

/// How long a link signed now may work: the policy's presigned-URL maximum age, and never past
/// the export's removal.
pub fn lifetime(now: Timestamp, expires_at: Timestamp, max_age_seconds: i64) -> Option<Duration> {
    let left = expires_at.duration_since(now).as_secs();
    let secs = left.min(max_age_seconds);
    (secs > 0).then(|| Duration::from_secs(secs.unsigned_abs()))
}

/// Where and for whom a link is handed over.
pub struct Handoff<'a> {
    pub client: &'a kube::Client,
    pub records_namespace: &'a str,
    pub namespace: &'a str,
    pub request: &'a str,
    pub uid: &'a str,
    pub refresh: Option<&'a str>,
}

impl Handoff<'_> {
    /// Signs the links and creates the handoff Secret (create only: the Job can neither read
    /// nor overwrite a Secret; a rerun that finds its own already there leaves it).
    pub async fn sign_and_hand_over(
        &self,
        regional: &Regional,
        bucket: &str,
        layout: &Layout,
        expires_at: Timestamp,
        max_age_seconds: i64,
    ) -> Result<(), RunError> {
        let now = Timestamp::now();
        let lifetime = lifetime(now, expires_at, max_age_seconds).ok_or_else(|| {
            RunError::Refused(format!(
                "the export expired at {expires_at}: the lifecycle rule removes it; file a new request"
            ))
        })?;
        let archive = regional
            .presign_get(bucket, &layout.archive, lifetime)
            .await?;
        let manifest = regional
            .presign_get(bucket, &layout.manifest, lifetime)
            .await?;
        let until = now
            .checked_add(SignedDuration::from_secs(lifetime.as_secs() as i64))
            .unwrap_or(expires_at);
        let until = Timestamp::from_second(until.as_second()).unwrap_or(until);
        let mut data = BTreeMap::from([
            (ARCHIVE_URL.to_owned(), archive),
            (MANIFEST_URL.to_owned(), manifest),
            (EXPIRES_AT.to_owned(), until.to_string()),
        ]);
        if let Some(refresh) = self.refresh {
            data.insert(REFRESH.to_owned(), refresh.to_owned());
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(crate::plan::naming::export_link_handoff_name(
                    self.uid,
                    self.refresh,
                )),
                namespace: Some(self.records_namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    UID_LABEL.to_owned(),
                    self.uid.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), self.records_namespace);
        let created = persist("handing the download link over", || async {
            match secrets.create(&PostParams::default(), &secret).await {
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
        created.map_err(RunError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_lives_the_policy_maximum_and_never_past_the_export() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let in_a_week: Timestamp = "2026-01-08T00:00:00Z".parse().expect("time");
        let in_an_hour: Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
        assert_eq!(
            lifetime(now, in_a_week, 86_400),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            lifetime(now, in_an_hour, 86_400),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(lifetime(in_a_week, in_an_hour, 86_400), None);
    }
}
