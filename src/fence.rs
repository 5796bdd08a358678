//! How long this process may still act as the holder of a lease, by the local monotonic clock.
//! The elector extends it after every renewal; the AWS clients refuse mutating calls once it has
//! passed. A holder that was paused (SIGSTOP, a frozen VM) or cut off from the API server stops
//! changing the cloud when its lease runs out, even before its renewal loop notices, so two
//! holders never act at once.

use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct Fence {
    valid_until: Arc<Mutex<Option<Instant>>>,
}

impl Fence {
    /// Holding until `until` (never shortened by a late answer to an earlier renewal).
    pub fn extend_to(&self, until: Instant) {
        let mut valid = self.lock();
        if valid.is_none_or(|v| v < until) {
            *valid = Some(until);
        }
    }

    /// No longer holding.
    pub fn revoke(&self) {
        *self.lock() = None;
    }

    /// Whether the lease is still held now.
    pub fn holds(&self) -> bool {
        self.lock().is_some_and(|until| Instant::now() < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.valid_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn holds_only_until_the_deadline_and_never_shortens() {
        let fence = Fence::default();
        assert!(!fence.holds(), "not held before the first acquisition");
        let now = Instant::now();
        fence.extend_to(now + Duration::from_secs(60));
        assert!(fence.holds());
        fence.extend_to(now + Duration::from_secs(1));
        assert!(fence.holds(), "a late renewal does not shorten it");
        fence.extend_to(now);
        fence.revoke();
        assert!(!fence.holds());
        fence.extend_to(now);
        assert!(!fence.holds(), "a deadline already past holds nothing");
    }
}
