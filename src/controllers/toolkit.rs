//! What the controllers share, so each writes only its own logic: a reconcile run under its
//! finalizer and counted in the metrics, a status written as the change it is, and events
//! published through the context's recorder.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

use super::{Context, Error};

/// Runs `reconcile` under the finalizer `finalizer_name` (`Apply` while the object lives,
/// `Cleanup` once it is being deleted) and counts the run in the reconcile metrics, labelled with
/// the object's kind and the outcome: `ok`, or the error's reason.
pub async fn reconcile_finalized<K, F, Fut>(
    ctx: &Context,
    api: &Api<K>,
    finalizer_name: &str,
    obj: Arc<K>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    F: FnOnce(Finalizer<K>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let result = finalizer(api, finalizer_name, obj, reconcile)
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.reason(),
    };
    ctx.metrics
        .count_reconcile(&K::kind(&()), &outcome, started.elapsed().as_secs_f64());
    result
}

/// A status write carrying only what changed: a JSON merge patch from the stored status to the
/// new one, with `null` for every field the new one leaves out (see [`super::merge_patch`]): a
/// merge patch that leaves a field out keeps it, so without the nulls a cleared field never clears.
#[derive(Debug)]
pub struct StatusPatch(Value);

impl StatusPatch {
    /// The patch from `old` to `new`; `None` when they are equal, so nothing is written.
    pub fn between<S>(old: Option<&S>, new: &S) -> Result<Option<Self>, Error>
    where
        S: Serialize + PartialEq,
    {
        if old == Some(new) {
            return Ok(None);
        }
        let status = super::merge_patch(&serde_json::to_value(old)?, &serde_json::to_value(new)?);
        Ok(Some(StatusPatch(json!({ "status": status }))))
    }

    /// Lands only on `resource_version` (409 otherwise): a status decided from what a reconcile
    /// read never overwrites a newer one written meanwhile.
    pub fn onto(mut self, resource_version: Option<String>) -> Self {
        self.0["metadata"] = json!({ "resourceVersion": resource_version });
        self
    }

    /// Writes the patch to the status of the object `name`; returns the object as saved.
    pub async fn send<K>(&self, api: &Api<K>, name: &str) -> Result<K, Error>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        let params = PatchParams::default();
        Ok(api
            .patch_status(name, &params, &Patch::Merge(&self.0))
            .await?)
    }
}

/// Publishes an event about `obj` through the context's recorder (which counts warnings into
/// series and keeps no normal event). A failure is only logged: an event is never worth failing
/// the reconcile over.
pub async fn publish<K>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, reason, "could not record event");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::StatusPatch;

    #[derive(Debug, PartialEq, serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Status {
        #[serde(skip_serializing_if = "Option::is_none")]
        job_name: Option<String>,
        phase: String,
    }

    fn status(job_name: Option<&str>, phase: &str) -> Status {
        Status {
            job_name: job_name.map(str::to_owned),
            phase: phase.to_owned(),
        }
    }

    fn body(patch: Option<StatusPatch>) -> Option<serde_json::Value> {
        patch.map(|p| p.0)
    }

    #[test]
    fn an_unchanged_status_is_not_written() {
        let same = status(Some("j"), "Running");
        let patch = StatusPatch::between(Some(&same), &status(Some("j"), "Running"));
        assert_eq!(patch.ok().and_then(body), None);
    }

    #[test]
    fn a_first_status_is_written_whole() {
        let patch = StatusPatch::between(None, &status(Some("j"), "Pending"));
        assert_eq!(
            patch.ok().and_then(body),
            Some(json!({"status": {"jobName": "j", "phase": "Pending"}}))
        );
    }

    #[test]
    fn a_cleared_field_is_sent_as_null() {
        let old = status(Some("j"), "Pending");
        let patch = StatusPatch::between(Some(&old), &status(None, "Pending"));
        assert_eq!(
            patch.ok().and_then(body),
            Some(json!({"status": {"jobName": null, "phase": "Pending"}}))
        );
    }

    #[test]
    fn a_guarded_write_names_the_version_it_was_decided_on() {
        let patch = StatusPatch::between(None, &status(None, "Failed"))
            .ok()
            .flatten()
            .map(|p| p.onto(Some("42".to_owned())));
        assert_eq!(
            body(patch),
            Some(json!({"metadata": {"resourceVersion": "42"}, "status": {"phase": "Failed"}}))
        );
    }
}
