//! How long this process may still act as the holder of a lease. The elector extends it after
//! every renewal; the AWS clients refuse mutating calls once it has passed. A holder that was
//! paused (SIGSTOP, a frozen VM) or cut off from the API server stops changing the cloud when its
//! lease runs out, even before its renewal loop notices. Both clocks must agree: the monotonic
//! one (immune to wall-clock steps) and the wall clock (which, unlike the monotonic clock, also
//! advances across a suspended or frozen machine, as the other replicas' clocks do). What it
//! cannot stop is a call checked just before the deadline and delayed in the network past it;
//! the margin the elector leaves (a third of the lease) is there for that.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Debug, Default)]
pub struct Fence {
    valid_until: Arc<Mutex<Option<(Instant, SystemTime)>>>,
}

impl Fence {
    /// Holding for `left` from `since` (a monotonic instant; the wall-clock deadline is the same
    /// span from the wall clock's reading of `since`). Never shortened by a late answer to an
    /// earlier renewal.
    pub fn extend(&self, since: Instant, left: Duration) {
        let until = since + left;
        let wall = SystemTime::now()
            .checked_sub(since.elapsed())
            .and_then(|then| then.checked_add(left));
        let Some(wall) = wall else {
            return;
        };
        let mut valid = self.lock();
        if valid.is_none_or(|(v, _)| v < until) {
            *valid = Some((until, wall));
        }
    }

    /// No longer holding.
    pub fn revoke(&self) {
        *self.lock() = None;
    }

    /// Whether the lease is still held now, by both clocks.
    pub fn holds(&self) -> bool {
        self.lock()
            .is_some_and(|(until, wall)| Instant::now() < until && SystemTime::now() < wall)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, SystemTime)>> {
        self.valid_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_only_until_the_deadline_and_never_shortens() {
        let fence = Fence::default();
        assert!(!fence.holds(), "not held before the first acquisition");
        let now = Instant::now();
        fence.extend(now, Duration::from_secs(60));
        assert!(fence.holds());
        fence.extend(now, Duration::from_secs(1));
        assert!(fence.holds(), "a late renewal does not shorten it");
        fence.revoke();
        assert!(!fence.holds());
        fence.extend(now, Duration::ZERO);
        assert!(!fence.holds(), "a deadline already past holds nothing");
    }
}
