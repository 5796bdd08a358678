//! Status writes the operator made itself. Each one comes back as a watch event; reconciling on
//! it would re-read the bucket, key and role to learn nothing new (the reconcile that wrote it
//! already knew), which made converging cost about twice the reads it needs. The TenantStorage
//! trigger stream drops an event whose object is exactly what our last status write produced
//! (same resourceVersion); any other change (spec, metadata, someone else's status write) still
//! triggers at once, and related objects (policies, deletion requests) and the resync trigger
//! as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use crate::api::TenantStorage;

#[derive(Clone, Debug, Default)]
pub struct OwnWrites {
    /// `namespace/name` to the resourceVersion our last status write produced.
    versions: Arc<Mutex<HashMap<String, String>>>,
}

fn key(ts: &TenantStorage) -> String {
    format!("{}/{}", ts.namespace().unwrap_or_default(), ts.name_any())
}

impl OwnWrites {
    /// After a status write of `ts` answered with `resource_version`.
    pub fn record(&self, ts: &TenantStorage, resource_version: Option<String>) {
        let mut versions = self.lock();
        match resource_version {
            Some(rv) => versions.insert(key(ts), rv),
            None => versions.remove(&key(ts)),
        };
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, ts: &TenantStorage) {
        self.lock().remove(&key(ts));
    }

    /// Whether this version of the object is the one our own last write produced.
    pub fn produced(&self, ts: &TenantStorage) -> bool {
        let Some(rv) = ts.resource_version() else {
            return false;
        };
        self.lock().get(&key(ts)) == Some(&rv)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
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
}
