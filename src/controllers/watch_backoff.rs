//! How long a controller pauses its watches after one fails.
//!
//! kube-runtime's default doubles from 0.8 s up to 30 s and is shared by every watch of a
//! controller (its own kind and each `watches`). When the API server restarts, every watch fails
//! at once and then once more each (410 Expired: its resourceVersion predates the new server's
//! watch cache, so it must relist), and each failure doubles the shared pause: measured here, a
//! controller saw no change for over a minute after a seven-second outage. Capped at 5 s, the
//! same outage costs a few seconds; a server that stays down is still polled only every 5 s.

use std::time::Duration;

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(500);
const LONGEST: Duration = Duration::from_secs(5);

/// Doubling from 0.5 s to at most 5 s; back to 0.5 s after any event arrives.
#[derive(Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let pause = self.next;
        self.next = (pause * 2).min(LONGEST);
        Some(pause)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_and_resets() {
        let mut backoff = WatchBackoff::default();
        let pauses: Vec<u128> = backoff.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(FIRST));
    }
}
