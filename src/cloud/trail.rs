//! CloudTrail management events of a region: what changed, by whom, naming which resources.

use std::collections::HashSet;

use aws_sdk_cloudtrail::primitives::DateTime;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use serde::Deserialize;

use super::{CloudError, Regional};

const CLOUDTRAIL: &str = "cloudtrail";
const OP: &str = "LookupEvents";
/// Events a `LookupEvents` page holds at most.
const PAGE: i32 = 50;

/// One mutating call recorded by CloudTrail.
#[derive(Clone, Debug, PartialEq)]
pub struct TrailEvent {
    pub id: String,
    /// Seconds since the epoch.
    pub time: f64,
    /// Who made the call, and with which access key.
    pub caller_arn: Option<String>,
    pub access_key_id: Option<String>,
    /// Every resource the event names: its resources, and the bucket, key and role in its
    /// request parameters.
    pub resources: Vec<String>,
}

/// What is read of an event's `CloudTrailEvent` document.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    user_identity: Identity,
    #[serde(default)]
    request_parameters: Option<Parameters>,
}

#[derive(Default, Deserialize)]
struct Identity {
    arn: Option<String>,
}

/// AWS writes the request's parameters in camelCase; an emulator may record the request's own
/// field names (`KeyId`, `RoleName`).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parameters {
    #[serde(alias = "BucketName", alias = "Bucket")]
    bucket_name: Option<String>,
    #[serde(alias = "KeyId")]
    key_id: Option<String>,
    #[serde(alias = "RoleName")]
    role_name: Option<String>,
}

impl Regional {
    /// Every mutating call recorded between `start` and `end` (seconds since the epoch), newest
    /// first. Follows `NextToken`; a page that is full without one (an endpoint that does not
    /// paginate) is continued by narrowing the window to before its oldest event.
    pub async fn mutating_events(
        &self,
        start: f64,
        end: f64,
    ) -> Result<Vec<TrailEvent>, CloudError> {
        let mut events: Vec<TrailEvent> = Vec::new();
        let mut ids = HashSet::new();
        let mut end = end;
        let mut token = None;
        loop {
            let out = self
                .trail
                .lookup_events()
                .lookup_attributes(
                    LookupAttribute::builder()
                        .attribute_key(LookupAttributeKey::ReadOnly)
                        .attribute_value("false")
                        .build()
                        .map_err(|e| CloudError::Api {
                            service: CLOUDTRAIL,
                            operation: OP,
                            code: "Build".into(),
                            message: e.to_string(),
                            status: None,
                        })?,
                )
                .start_time(DateTime::from_secs_f64(start))
                .end_time(DateTime::from_secs_f64(end))
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| CloudError::from_sdk(CLOUDTRAIL, OP, e))?;
            let page: Vec<TrailEvent> = out.events().iter().filter_map(event).collect();
            let full = page.len() >= PAGE as usize;
            let oldest = page.iter().map(|e| e.time).reduce(f64::min);
            // A narrowed window starts at its oldest event again.
            for e in page {
                if ids.insert(e.id.clone()) {
                    events.push(e);
                }
            }
            match (out.next_token(), oldest) {
                (Some(next), _) => token = Some(next.to_owned()),
                (None, Some(oldest)) if full && oldest > start && oldest < end => end = oldest,
                _ => return Ok(events),
            }
        }
    }
}

fn event(e: &aws_sdk_cloudtrail::types::Event) -> Option<TrailEvent> {
    let doc: Document = e
        .cloud_trail_event()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let mut resources: Vec<String> = e
        .resources()
        .iter()
        .filter_map(|r| r.resource_name().map(str::to_owned))
        .collect();
    if let Some(p) = doc.request_parameters {
        resources.extend([p.bucket_name, p.key_id, p.role_name].into_iter().flatten());
    }
    Some(TrailEvent {
        id: e.event_id()?.to_owned(),
        time: e.event_time()?.as_secs_f64(),
        caller_arn: doc.user_identity.arn,
        access_key_id: e.access_key_id().map(str::to_owned),
        resources,
    })
}
