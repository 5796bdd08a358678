//! Settings read at the audit period rather than at every resync: a bucket's identity tags and
//! its key's rotation. Neither decides who can reach data, and neither drifts into harm within
//! hours: the tags only prove ownership, which the name claimed in status pins (and a bucket
//! cannot change hands without being deleted first, which the other reads see), and a key
//! rotates once a year. They are read when the spec changed or a recheck was asked, when a
//! resync finds anything else to change (before the first write, so no write ever rests on a
//! tag not read), after a failed reconcile, and at least every audit period. A no-op resync
//! is then 7 reads (encryption, public access block, ownership controls, versioning, policy and
//! logging of the bucket, and the key) instead of 9. With drift events on, a change to either
//! is re-checked when CloudTrail reports it, like any other.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct SlowSettings {
    every: Duration,
    hasher: RandomState,
    /// When each tenant's slow settings were last read, by a hash of the tenant's key (8
    /// bytes a tenant instead of its name: a collision only moves a read).
    read: Mutex<HashMap<u64, Instant>>,
}

impl SlowSettings {
    pub fn new(every: Duration) -> Self {
        SlowSettings {
            every,
            hasher: RandomState::new(),
            read: Mutex::default(),
        }
    }

    /// Whether this reconcile of `tenant` reads the slow settings: always if `fresh` (a
    /// changed spec, a recheck), else once they are most of an audit period old. Resyncs come
    /// a tenth of their period early or late: at a whole period, a resync a little early would
    /// find them not due and the next read would come near two periods after the last.
    pub fn due(&self, tenant: &str, fresh: bool) -> bool {
        let every = self.every.mul_f64(0.8);
        fresh
            || self
                .lock()
                .get(&self.hasher.hash_one(tenant))
                .is_none_or(|at| at.elapsed() >= every)
    }

    /// The slow settings of `tenant` were just read.
    pub fn read(&self, tenant: &str) {
        self.lock()
            .insert(self.hasher.hash_one(tenant), Instant::now());
    }

    /// The next reconcile of `tenant` reads everything: something is to change, something
    /// failed, or the tenant is gone.
    pub fn forget(&self, tenant: &str) {
        self.lock().remove(&self.hasher.hash_one(tenant));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_first_then_at_the_audit_period_or_when_asked() {
        let slow = SlowSettings::new(Duration::from_secs(3600));
        assert!(slow.due("a/t", false), "never read yet");
        slow.read("a/t");
        assert!(!slow.due("a/t", false), "read an hour ago at most");
        assert!(
            slow.due("a/t", true),
            "a changed spec or a recheck reads them"
        );
        assert!(slow.due("a/u", false), "per tenant");
        slow.forget("a/t");
        assert!(
            slow.due("a/t", false),
            "after a failure or a planned change"
        );
        let always = SlowSettings::new(Duration::ZERO);
        always.read("a/t");
        assert!(
            always.due("a/t", false),
            "an audit period of zero reads every time"
        );
    }
}
