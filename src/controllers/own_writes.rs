//! Status writes the operator made itself. Each one comes back as a watch event; reconciling on
//! it would re-read the bucket, key and role to learn nothing new (the reconcile that wrote it
//! already knew), which made converging cost about twice the reads it needs. The TenantStorage
//! trigger stream drops an event whose object is exactly what one of our last few status writes
//! produced (same resourceVersion): a reconcile writes status more than once (the name claim,
//! the key's write-ahead marker, the result). The API server may deliver a write's watch event
//! before the write's own response, so an event for a tenant with a write in flight waits
//! (briefly) for that write's answer before it is judged. Any other change (spec, metadata,
//! someone else's status write) still triggers at once, and related objects (policies,
//! deletion requests) and the resync trigger as before.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use tokio::sync::Notify;

use super::tenant_storage::tenant_key;
use crate::api::TenantStorage;

/// Status writes remembered per tenant: one reconcile writes several.
const REMEMBERED: usize = 4;
/// The longest an event waits for the answer to a write in flight: it holds up the trigger
/// stream of every tenant meanwhile.
const WAIT_FOR_ANSWER: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default)]
pub struct OwnWrites {
    inner: Arc<Mutex<Inner>>,
    answered: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `namespace/name` to the resourceVersions our last status writes produced, newest last.
    versions: HashMap<String, VecDeque<String>>,
    /// `namespace/name` to the number of our status writes not answered yet.
    in_flight: HashMap<String, usize>,
}

/// A status write in flight; dropped unanswered (the write failed) it only stops counting.
pub struct Write {
    own: OwnWrites,
    key: String,
}

impl Write {
    /// The write was answered with `resource_version`.
    pub fn answered(self, resource_version: Option<String>) {
        if let Some(rv) = resource_version {
            let mut inner = self.own.lock();
            let recent = inner.versions.entry(self.key.clone()).or_default();
            if recent.len() == REMEMBERED {
                recent.pop_front();
            }
            recent.push_back(rv);
        }
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        let mut inner = self.own.lock();
        if let Some(n) = inner.in_flight.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                inner.in_flight.remove(&self.key);
            }
        }
        drop(inner);
        self.own.answered.notify_waiters();
    }
}

impl OwnWrites {
    /// Right before a status write of `ts`.
    pub fn begin(&self, ts: &TenantStorage) -> Write {
        let key = tenant_key(ts);
        *self.lock().in_flight.entry(key.clone()).or_default() += 1;
        Write {
            own: self.clone(),
            key,
        }
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, ts: &TenantStorage) {
        self.lock().versions.remove(&tenant_key(ts));
    }

    /// Whether this version of the object is one that our own recent writes produced, once the
    /// writes in flight for it have been answered (or [`WAIT_FOR_ANSWER`] has passed).
    pub fn produced(&self, ts: &TenantStorage) -> impl Future<Output = bool> + Send + use<> {
        let own = self.clone();
        let key = tenant_key(ts);
        let rv = ts.resource_version();
        async move {
            let Some(rv) = rv else {
                return false;
            };
            let deadline = tokio::time::Instant::now() + WAIT_FOR_ANSWER;
            loop {
                let answered = own.answered.notified();
                {
                    let inner = own.lock();
                    if inner.versions.get(&key).is_some_and(|r| r.contains(&rv)) {
                        return true;
                    }
                    if !inner.in_flight.contains_key(&key) {
                        return false;
                    }
                }
                if tokio::time::timeout_at(deadline, answered).await.is_err() {
                    return false;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(rv: &str) -> TenantStorage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "storage.tenancy.dev/v1alpha1",
            "kind": "TenantStorage",
            "metadata": {"name": "t", "namespace": "ns", "resourceVersion": rv},
            "spec": {"policyRef": "p"},
        }))
        .expect("a tenant")
    }

    fn write(own: &OwnWrites, rv: &str) {
        own.begin(&tenant("1")).answered(Some(rv.into()));
    }

    #[tokio::test]
    async fn only_the_versions_our_writes_produced_are_ours() {
        let own = OwnWrites::default();
        assert!(!own.produced(&tenant("5")).await, "nothing written yet");
        write(&own, "5");
        assert!(own.produced(&tenant("5")).await);
        assert!(
            !own.produced(&tenant("6")).await,
            "a later change by anyone else"
        );
        write(&own, "7");
        assert!(
            own.produced(&tenant("5")).await,
            "its event came after the second write"
        );
        for rv in ["8", "9", "10", "11"] {
            write(&own, rv);
        }
        assert!(
            !own.produced(&tenant("5")).await,
            "only the last few are kept"
        );
        own.forget(&tenant("11"));
        assert!(!own.produced(&tenant("11")).await);
    }

    #[tokio::test]
    async fn an_event_before_its_writes_answer_waits_for_it() {
        let own = OwnWrites::default();
        let pending = own.begin(&tenant("4"));
        let judged = tokio::spawn({
            let own = own.clone();
            async move { own.produced(&tenant("5")).await }
        });
        tokio::task::yield_now().await;
        assert!(!judged.is_finished(), "waits while the write is in flight");
        pending.answered(Some("5".into()));
        assert!(judged.await.expect("judged"), "then knows it as ours");
    }

    #[tokio::test]
    async fn a_failed_or_slow_write_does_not_hold_events_back() {
        let own = OwnWrites::default();
        drop(own.begin(&tenant("4")));
        assert!(
            !own.produced(&tenant("5")).await,
            "a failed write: judged at once"
        );
        let _slow = own.begin(&tenant("4"));
        assert!(!own.produced(&tenant("5")).await, "given up after the wait");
    }
}
