//! When each tenant is looked at again: resyncs spread over the period and paced to a rate AWS
//! sustains, failures backed off per tenant.
//!
//! Every resync takes a slot in a one-second window that holds at most `rate` of them (the
//! first window at or after the time it wants with room left), so however many tenants finish
//! at once, their next resyncs arrive at most `rate` a second: when the fleet's resync work
//! exceeds that, the resync period stretches instead of the work queue growing without bound,
//! and a new or changed tenant (triggered by its watch event, not by a slot) finds a free
//! reconcile slot instead of waiting behind a backlog that never drains.
//!
//! The resyncs wait here, not in kube's scheduler: a reconcile returns `await_change` and
//! [`Due`] holds the time of the tenant's next resync, some hundred bytes a tenant, where
//! kube's scheduler held two copies of each request (near a kilobyte: 10 MB at 10,000
//! tenants). Retries after a failure stay with kube's scheduler: few tenants fail at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use tokio::sync::Notify;

/// How a failure is retried: the first retry, doubled per consecutive failure up to the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

/// AWS failures (throttling, an outage): back off far, so a struggling service is not pressed.
pub const CLOUD_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(5),
    cap: Duration::from_secs(300),
};
/// Kubernetes API failures (a conflicting write, a restarting API server): they pass in
/// seconds, and the next attempt is cheap.
pub const KUBE_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    cap: Duration::from_secs(5),
};

pub struct Schedule {
    period: Duration,
    /// The period while AWS's own events tell of drift (the audit's safety net).
    audit_period: Duration,
    events_healthy: AtomicBool,
    slots: Mutex<Slots>,
    /// Consecutive failures, by tenant (only those failing now).
    failures: Mutex<HashMap<String, u32>>,
    /// When each tenant is resynced.
    pub due: Due,
}

/// The next resync of each tenant (by `namespace/name`).
#[derive(Default)]
pub struct Due {
    times: Mutex<DueTimes>,
    /// Told when a resync is set, which may be sooner than the one waited for.
    pub set: Notify,
}

#[derive(Default)]
struct DueTimes {
    by_time: BTreeSet<(Instant, Arc<str>)>,
    by_tenant: HashMap<Arc<str>, Instant>,
}

impl Due {
    /// The next resync of `tenant` is at `at` (and no other).
    pub fn set(&self, tenant: &str, at: Instant) {
        let mut times = self.lock();
        let tenant: Arc<str> = match times.by_tenant.remove_entry(tenant) {
            Some((tenant, before)) => {
                times.by_time.remove(&(before, tenant.clone()));
                tenant
            }
            None => tenant.into(),
        };
        times.by_time.insert((at, tenant.clone()));
        times.by_tenant.insert(tenant, at);
        drop(times);
        self.set.notify_one();
    }

    /// No more resyncs of `tenant` (it is gone).
    pub fn forget(&self, tenant: &str) {
        let mut times = self.lock();
        if let Some((tenant, at)) = times.by_tenant.remove_entry(tenant) {
            times.by_time.remove(&(at, tenant));
        }
    }

    /// The tenants due by `now`, taken out, and when the next one is due.
    pub fn take(&self, now: Instant) -> (Vec<Arc<str>>, Option<Instant>) {
        let mut times = self.lock();
        let mut due = Vec::new();
        while let Some((at, _)) = times.by_time.first()
            && *at <= now
        {
            if let Some((_, tenant)) = times.by_time.pop_first() {
                times.by_tenant.remove(&tenant);
                due.push(tenant);
            }
        }
        let next = times.by_time.first().map(|(at, _)| *at);
        (due, next)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DueTimes> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Resync slots taken, by window.
struct Slots {
    origin: Instant,
    /// One second, or `1 / rate` below one a second...
    width: Duration,
    /// ...holding this many resyncs.
    capacity: u32,
    /// Resyncs taken, by window index from `origin` (windows past are dropped).
    taken: BTreeMap<u64, u32>,
}

impl Slots {
    fn index(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos() / self.width.as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The first time at or after `wanted` in a window with room left; takes it.
    fn take(&mut self, wanted: Instant, now: Instant) -> Instant {
        self.taken = self.taken.split_off(&self.index(now));
        let mut window = self.index(wanted);
        loop {
            let taken = self.taken.entry(window).or_insert(0);
            if *taken < self.capacity {
                *taken += 1;
                break;
            }
            window += 1;
        }
        let start = self.origin
            + self
                .width
                .saturating_mul(u32::try_from(window).unwrap_or(u32::MAX));
        wanted.max(start)
    }
}

/// A number in [0, 1), random per call.
fn unit_random(key: &str) -> f64 {
    let bits = std::hash::RandomState::new().hash_one(key) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

impl Schedule {
    /// Resyncs every `period` (every `audit_period` while drift events arrive), at most
    /// `rate` a second.
    pub fn new(period: Duration, audit_period: Duration, rate: f64) -> Self {
        let rate = rate.max(1e-3);
        let width = Duration::from_secs_f64((1.0 / rate).max(1.0));
        Schedule {
            period,
            audit_period,
            events_healthy: AtomicBool::new(false),
            slots: Mutex::new(Slots {
                origin: Instant::now(),
                width,
                capacity: (rate * width.as_secs_f64()).floor().max(1.0) as u32,
                taken: BTreeMap::new(),
            }),
            failures: Mutex::new(HashMap::new()),
            due: Due::default(),
        }
    }

    /// After a successful reconcile of `key`: sets its resync a period away, give or take a
    /// tenth (so tenants created together do not resync together), or later when the slots
    /// around then are taken. The reconcile then waits for a change or for [`Due`].
    pub fn resync(&self, key: &str) -> Action {
        let now = Instant::now();
        self.due.set(key, now + self.resync_at(key, now));
        Action::await_change()
    }

    /// The same for a tenant whose resources drift events cannot see (a delegated tenant's
    /// bucket and role are in the customer's account): always the resync period.
    pub fn resync_polled(&self, key: &str) -> Action {
        let now = Instant::now();
        self.due
            .set(key, now + self.resync_with(key, now, self.period));
        Action::await_change()
    }

    fn resync_at(&self, key: &str, now: Instant) -> Duration {
        let period = if self.events_healthy.load(Ordering::Relaxed) {
            self.audit_period
        } else {
            self.period
        };
        self.resync_with(key, now, period)
    }

    fn resync_with(&self, key: &str, now: Instant, period: Duration) -> Duration {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
        let wanted = now + period.mul_f64(0.9 + 0.2 * unit_random(key));
        match self.slots.lock() {
            Ok(mut slots) => slots.take(wanted, now) - now,
            Err(_) => wanted - now,
        }
    }

    /// After a failed reconcile of `key`: how long until it is retried. Doubles with each
    /// consecutive failure up to the backoff's cap, with up to a fifth less at random, so
    /// tenants failing together (an AWS outage) do not retry together.
    pub fn retry(&self, key: &str, backoff: Backoff) -> Duration {
        let failures = match self.failures.lock() {
            Ok(mut failures) => {
                let n = failures.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        let delay = backoff
            .first
            .saturating_mul(1 << (failures - 1).min(16))
            .min(backoff.cap);
        delay.mul_f64(1.0 - 0.2 * unit_random(key))
    }

    /// Whether drift events arrive: resyncs scheduled from now on take the audit period then,
    /// the resync period otherwise.
    pub fn set_events_healthy(&self, healthy: bool) {
        self.events_healthy.store(healthy, Ordering::Relaxed);
    }

    /// Forgets `key` (the tenant is gone).
    pub fn forget(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
        self.due.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(600);

    #[test]
    fn resyncs_are_spread_over_a_tenth_of_the_period() {
        let schedule = Schedule::new(PERIOD, 6 * PERIOD, 1000.0);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..200)
            .map(|i| schedule.resync_at(&format!("t{i}"), now))
            .collect();
        for d in &delays {
            assert!(*d >= PERIOD.mul_f64(0.9) && *d < PERIOD.mul_f64(1.1) + Duration::from_secs(1));
        }
        let (min, max) = (delays.iter().min(), delays.iter().max());
        assert!(
            max.zip(min)
                .is_some_and(|(a, b)| *a - *b > Duration::from_secs(60)),
            "spread: {min:?}..{max:?}"
        );
    }

    #[test]
    fn a_burst_is_paced_at_the_rate_and_stretches_the_period() {
        // 10,000 tenants done at once, 5 resyncs a second: 2,000 s to go round.
        let schedule = Schedule::new(PERIOD, 6 * PERIOD, 5.0);
        let now = Instant::now();
        let origin = schedule.slots.lock().map(|s| s.origin).expect("slots");
        let mut per_second: BTreeMap<u64, u32> = BTreeMap::new();
        let mut last = Duration::ZERO;
        for i in 0..10_000 {
            let delay = schedule.resync_at(&format!("t{i}"), now);
            let second = (now + delay).duration_since(origin).as_secs();
            *per_second.entry(second).or_default() += 1;
            last = last.max(delay);
        }
        assert!(
            per_second.values().all(|n| *n <= 5),
            "at most 5 in any second"
        );
        assert!(
            last >= Duration::from_secs(2000) && last < Duration::from_secs(2600),
            "{last:?}"
        );
        // Fewer than one a second: one in each window of 1 / rate seconds.
        let slow = Schedule::new(PERIOD, 6 * PERIOD, 0.25);
        let origin = slow.slots.lock().map(|s| s.origin).expect("slots");
        let mut windows = BTreeMap::new();
        for i in 0..100 {
            let at = now + slow.resync_at(&format!("t{i}"), now);
            *windows
                .entry(at.duration_since(origin).as_secs() / 4)
                .or_insert(0) += 1;
        }
        assert!(windows.values().all(|n| *n == 1), "{windows:?}");
        assert_eq!(windows.len(), 100);
    }

    #[test]
    fn while_events_arrive_the_resync_is_the_audit_period() {
        let schedule = Schedule::new(PERIOD, 36 * PERIOD, 1000.0);
        let now = Instant::now();
        schedule.set_events_healthy(true);
        assert!(schedule.resync_at("a", now) >= (36 * PERIOD).mul_f64(0.9));
        schedule.resync_polled("b");
        let (_, next) = schedule.due.take(now);
        assert!(
            next.is_some_and(|at| at < now + PERIOD.mul_f64(1.1) + Duration::from_secs(1)),
            "what events cannot see keeps the resync period"
        );
        schedule.set_events_healthy(false);
        assert!(schedule.resync_at("a", now) < PERIOD.mul_f64(1.1) + Duration::from_secs(1));
    }

    #[test]
    fn failures_back_off_per_tenant_and_a_success_resets() {
        let schedule = Schedule::new(PERIOD, 6 * PERIOD, 10.0);
        let first = schedule.retry("a", CLOUD_BACKOFF);
        assert!(
            first > Duration::from_secs(3) && first <= Duration::from_secs(5),
            "{first:?}"
        );
        let second = schedule.retry("a", CLOUD_BACKOFF);
        assert!(
            second > Duration::from_secs(7) && second <= Duration::from_secs(10),
            "{second:?}"
        );
        assert!(
            schedule.retry("b", CLOUD_BACKOFF) <= Duration::from_secs(5),
            "another tenant starts afresh"
        );
        for _ in 0..20 {
            assert!(schedule.retry("a", CLOUD_BACKOFF) <= CLOUD_BACKOFF.cap);
        }
        assert!(schedule.retry("a", CLOUD_BACKOFF) > CLOUD_BACKOFF.cap.mul_f64(0.79));
        // A Kubernetes API failure after them is retried within its own cap.
        assert!(schedule.retry("a", KUBE_BACKOFF) <= KUBE_BACKOFF.cap);
        schedule.resync("a");
        assert!(
            schedule.retry("a", CLOUD_BACKOFF) <= Duration::from_secs(5),
            "reset by a success"
        );
        schedule.forget("a");
        assert!(schedule.failures.lock().is_ok_and(|f| !f.contains_key("a")));
        assert_eq!(schedule.due.take(Instant::now() + 2 * PERIOD).0, vec![]);
    }

    #[test]
    fn each_tenant_has_one_next_resync_and_they_come_in_time_order() {
        let due = Due::default();
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s);
        due.set("a/x", at(30));
        due.set("a/y", at(10));
        due.set("a/z", at(20));
        due.set("a/x", at(5));
        due.forget("a/z");
        assert_eq!(due.take(now), (vec![], Some(at(5))));
        let (taken, next) = due.take(at(15));
        assert_eq!(
            taken.iter().map(|t| &**t).collect::<Vec<_>>(),
            ["a/x", "a/y"],
            "the earlier resync of a/x replaced, a/z forgotten"
        );
        assert_eq!(next, None);
        due.set("a/x", at(40));
        assert_eq!(due.take(at(39)), (vec![], Some(at(40))));
    }
}
