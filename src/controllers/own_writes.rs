//! Status writes the operator made itself. Each one comes back as a watch event; reconciling on
//! it would re-read the bucket, key and role to learn nothing new (the reconcile that wrote it
//! already knew), which made converging cost about twice the reads it needs. The TenantStorage
//! trigger stream drops an event whose object is exactly what one of our last few status writes
//! produced (same resourceVersion): a reconcile writes status more than once (the name claim,
//! the key's write-ahead marker, the result), and the watch may deliver the first write's event
//! only after the last write returned. Any other change (spec, metadata, someone else's status
//! write) still triggers at once, and related objects (policies, deletion requests) and the
//! resync trigger as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use crate::api::TenantStorage;

#[derive(Clone, Debug, Default)]
pub struct OwnWrites {
    /// `namespace/name` to the resourceVersions our last status writes produced, newest last.
    versions: Arc<Mutex<HashMap<String, VecDeque<String>>>>,
}

/// Status writes remembered per object: more than one reconcile writes.
const REMEMBERED: usize = 4;

fn key(ts: &TenantStorage) -> String {
    format!("{}/{}", ts.namespace().unwrap_or_default(), ts.name_any())
}

impl OwnWrites {
    /// After a status write of `ts` answered with `resource_version`.
    pub fn record(&self, ts: &TenantStorage, resource_version: Option<String>) {
        let mut versions = self.lock();
        match resource_version {
            Some(rv) => {
                let recent = versions.entry(key(ts)).or_default();
                if recent.len() == REMEMBERED {
                    recent.pop_front();
                }
                recent.push_back(rv);
            }
            None => {
                versions.remove(&key(ts));
            }
        }
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, ts: &TenantStorage) {
        self.lock().remove(&key(ts));
    }

    /// Whether this version of the object is one that our own recent writes produced.
    pub fn produced(&self, ts: &TenantStorage) -> bool {
        let Some(rv) = ts.resource_version() else {
            return false;
        };
        self.lock()
            .get(&key(ts))
            .is_some_and(|recent| recent.contains(&rv))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<String>>> {
        self.versions
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

    #[test]
    fn only_the_version_our_write_produced_is_ours() {
        let own = OwnWrites::default();
        assert!(!own.produced(&tenant("5")), "nothing written yet");
        own.record(&tenant("4"), Some("5".into()));
        assert!(own.produced(&tenant("5")));
        assert!(!own.produced(&tenant("6")), "a later change by anyone else");
        own.forget(&tenant("5"));
        assert!(!own.produced(&tenant("5")));
    }

    #[test]
    fn an_earlier_write_of_the_same_reconcile_is_ours_too() {
        let own = OwnWrites::default();
        own.record(&tenant("4"), Some("5".into()));
        own.record(&tenant("5"), Some("7".into()));
        assert!(own.produced(&tenant("5")), "its event came after the second write");
        assert!(own.produced(&tenant("7")));
        assert!(!own.produced(&tenant("6")), "someone else's change in between");
        for rv in ["8", "9", "10", "11"] {
            own.record(&tenant("7"), Some(rv.into()));
        }
        assert!(!own.produced(&tenant("5")), "only the last few are kept");
    }
}
