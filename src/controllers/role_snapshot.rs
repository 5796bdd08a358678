//! One sweep of every tenant role, shared by the resyncs of all tenants: IAM reads per resync
//! grow with pages of roles, not with tenants, and stay far from IAM's account-wide throttling.
//!
//! The snapshot only ever saves reads, and only for the resync of a tenant whose spec has not
//! changed since it was last in shape: a role it shows in shape is taken as it is; a role it
//! shows missing or different, or one the operator changed since the sweep began, is read from
//! IAM directly before anything is written. A changed spec or a recheck always reads IAM, so a
//! sweep that IAM's eventual consistency left a step behind cannot stand for a role that was
//! just changed back. A stale snapshot delays the detection of others' drift by at most its
//! age, and never causes a write. It keeps a digest of each role, not its documents: a few
//! bytes per role whatever the policies' size.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::cloud::CloudError;
use crate::plan::access::RoleDigest;

/// Every role under a path, by name (`Iam::roles_under`).
pub type Roles = HashMap<String, RoleDigest>;

/// A sweep: when it started, and the roles it found (`None` if it failed).
struct Sweep {
    started: Instant,
    roles: Option<Roles>,
}

pub struct RoleSnapshot {
    path_prefix: String,
    max_age: Duration,
    /// The last sweep; the lock is held while a sweep runs, so only one runs at a time.
    sweep: tokio::sync::Mutex<Option<Sweep>>,
    /// Roles the operator changed, and when.
    changed: Mutex<HashMap<String, Instant>>,
}

/// What the snapshot says of a role.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// As the last sweep found it (`None`: absent).
    Swept(Option<RoleDigest>),
    /// Unknown: no fresh sweep, or the operator changed the role since. Read it from IAM.
    Unknown,
}

impl RoleSnapshot {
    /// Roles under `path_prefix`, swept at most every `max_age`.
    pub fn new(path_prefix: String, max_age: Duration) -> Self {
        RoleSnapshot {
            path_prefix,
            max_age,
            sweep: tokio::sync::Mutex::new(None),
            changed: Mutex::new(HashMap::new()),
        }
    }

    /// The role `name` as the current sweep saw it, sweeping (with `sweep`, given the path)
    /// first if the last sweep is older than the snapshot's age.
    pub async fn role<F, Fut>(&self, name: &str, sweep: F) -> Seen
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<Roles, CloudError>>,
    {
        let mut last = self.sweep.lock().await;
        let stale = last
            .as_ref()
            .is_none_or(|s| s.started.elapsed() >= self.max_age);
        if stale {
            *last = Some(Self::take(sweep(self.path_prefix.clone())).await);
        }
        let Some(Sweep {
            started,
            roles: Some(roles),
        }) = last.as_ref()
        else {
            return Seen::Unknown;
        };
        let changed_since = self
            .changed
            .lock()
            .ok()
            .and_then(|c| c.get(name).copied())
            .is_some_and(|at| at >= *started);
        if changed_since {
            Seen::Unknown
        } else {
            Seen::Swept(roles.get(name).copied())
        }
    }

    /// Notes that the operator is changing `name` (called before its first write and after
    /// its last): no sweep that may have seen it before the change speaks for it.
    pub fn changing(&self, name: &str) {
        if let Ok(mut changed) = self.changed.lock() {
            let now = Instant::now();
            changed.retain(|_, at| now.duration_since(*at) < self.max_age);
            changed.insert(name.to_owned(), now);
        }
    }

    async fn take(sweep: impl Future<Output = Result<Roles, CloudError>>) -> Sweep {
        let started = Instant::now();
        let roles = match sweep.await {
            Ok(roles) => {
                info!(
                    roles = roles.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "swept tenant roles"
                );
                Some(roles)
            }
            Err(e) => {
                warn!(error = %e, "cannot sweep tenant roles with GetAccountAuthorizationDetails; reading each role until the next sweep");
                None
            }
        };
        Sweep { started, roles }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::plan::access::ObservedRole;

    fn role(tag: &str) -> RoleDigest {
        ObservedRole {
            tags: [("t".to_owned(), tag.to_owned())].into(),
            ..ObservedRole::default()
        }
        .digest()
    }

    /// A sweep finding `a` (and counting its calls), or failing.
    fn sweeper(
        calls: &AtomicUsize,
        ok: bool,
    ) -> impl FnOnce(String) -> std::future::Ready<Result<Roles, CloudError>> + '_ {
        move |path| {
            assert_eq!(path, "/tso/c1/");
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if ok {
                Ok([("a".to_owned(), role("1"))].into())
            } else {
                Err(CloudError::Incomplete {
                    service: "iam",
                    operation: "GetAccountAuthorizationDetails",
                    field: "RoleDetailList",
                })
            })
        }
    }

    #[tokio::test]
    async fn one_sweep_answers_for_every_role_until_it_is_old() {
        let calls = AtomicUsize::new(0);
        let snapshot = RoleSnapshot::new("/tso/c1/".into(), Duration::from_secs(60));
        assert_eq!(
            snapshot.role("a", sweeper(&calls, true)).await,
            Seen::Swept(Some(role("1")))
        );
        assert_eq!(
            snapshot.role("b", sweeper(&calls, true)).await,
            Seen::Swept(None)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one sweep for both");
        let always = RoleSnapshot::new("/tso/c1/".into(), Duration::ZERO);
        always.role("a", sweeper(&calls, true)).await;
        always.role("a", sweeper(&calls, true)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "a sweep of age zero is always old"
        );
    }

    #[tokio::test]
    async fn a_role_the_operator_changes_is_read_again() {
        let calls = AtomicUsize::new(0);
        let snapshot = RoleSnapshot::new("/tso/c1/".into(), Duration::from_secs(60));
        snapshot.role("a", sweeper(&calls, true)).await;
        snapshot.changing("a");
        assert_eq!(
            snapshot.role("a", sweeper(&calls, true)).await,
            Seen::Unknown
        );
        assert_eq!(
            snapshot.role("b", sweeper(&calls, true)).await,
            Seen::Swept(None),
            "the others still come from the sweep"
        );
        // A change before the sweep is in it.
        let fresh = RoleSnapshot::new("/tso/c1/".into(), Duration::from_secs(60));
        fresh.changing("a");
        assert_eq!(
            fresh.role("a", sweeper(&calls, true)).await,
            Seen::Swept(Some(role("1")))
        );
    }

    #[tokio::test]
    async fn a_failed_sweep_means_reading_each_role_until_the_next() {
        let calls = AtomicUsize::new(0);
        let snapshot = RoleSnapshot::new("/tso/c1/".into(), Duration::from_secs(60));
        assert_eq!(
            snapshot.role("a", sweeper(&calls, false)).await,
            Seen::Unknown
        );
        assert_eq!(
            snapshot.role("a", sweeper(&calls, true)).await,
            Seen::Unknown
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not retried at every lookup"
        );
    }
}
