//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run and only one
//! reconciles. Same protocol as client-go: the holder renews `renewTime`; anyone may take a lease
//! whose `renewTime + leaseDurationSeconds` has passed; optimistic concurrency on
//! `resourceVersion` decides races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use thiserror::Error;
use tracing::{info, warn};

use crate::fence::Fence;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    pub duration: Duration,
}

#[derive(Debug, Error)]
pub enum LeaderError {
    #[error(
        "lost the lease {name}: could not renew it within {duration:?}; stopping so another replica takes over"
    )]
    Lost { name: String, duration: Duration },
}

/// What a lease says about who leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    Me,
    Other,
    Expired,
}

/// Decides from a lease's spec whether `identity` holds it, someone else does, or nobody validly
/// does. Pure, so the protocol is unit tested.
pub fn holder(spec: &LeaseSpec, identity: &str, now: Timestamp) -> Holder {
    match spec.holder_identity.as_deref() {
        None | Some("") => Holder::Expired,
        Some(h) if h == identity => Holder::Me,
        Some(_) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
            match &spec.renew_time {
                Some(MicroTime(renewed))
                    if renewed.checked_add(duration).is_ok_and(|until| until > now) =>
                {
                    Holder::Other
                }
                _ => Holder::Expired,
            }
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// Extended after every acquisition or renewal, for as long as this holder may act.
    fence: Fence,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings, fence: Fence) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            fence,
        }
    }

    /// How often the holder renews: a third of the lease.
    fn period(&self) -> Duration {
        self.settings.duration / 3
    }

    /// After a renewal sent at `sent`: this holder acts until one period before another may
    /// take the lease over, as `hold` does.
    fn held_from(&self, sent: tokio::time::Instant) {
        self.fence
            .extend(sent.into_std(), self.settings.duration - self.period());
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round of the protocol: `Ok(true)` when we hold the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        let transitions = current.lease_transitions.unwrap_or(0);
        lease.spec = Some(match holder(&current, &self.settings.identity, now) {
            Holder::Other => return Ok(false),
            Holder::Me => self.spec(now, current.acquire_time, transitions),
            Holder::Expired => self.spec(now, None, transitions + 1),
        });
        // `replace` carries the resourceVersion we read: a concurrent writer makes it fail (409).
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        let retry = self.settings.duration / 4;
        loop {
            let sent = tokio::time::Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.held_from(sent);
                    info!(lease = %self.settings.name, identity = %self.settings.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: cannot read or write the lease"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the lease until it cannot be renewed in time; then returns the error, and the
    /// caller must stop reconciling. A failed renewal is retried every fifth of a period (as
    /// client-go's retry period), so an API server restarting for a few seconds costs nothing;
    /// the holder gives up once it could no longer renew before its fence runs out.
    pub async fn hold(&self) -> LeaderError {
        let period = self.period();
        let mut renewed = tokio::time::Instant::now();
        let mut wait = period;
        loop {
            tokio::time::sleep(wait).await;
            // A renewal counts from when it was sent (the lease's renewTime is no later), and
            // may not outlast the fence: an API server that stops answering must not keep this
            // holder acting while another takes over.
            let sent = tokio::time::Instant::now();
            let deadline = renewed + (self.settings.duration - period);
            let Some(left) = deadline
                .checked_duration_since(sent)
                .filter(|l| !l.is_zero())
            else {
                break;
            };
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    renewed = sent;
                    self.held_from(sent);
                    wait = period;
                    continue;
                }
                Ok(Ok(false)) => break,
                Ok(Err(e)) => warn!(error = %e, "leader election: renewal failed; retrying"),
                Err(_) => warn!(lease = %self.settings.name, "leader election: renewal timed out"),
            }
            wait = period / 5;
        }
        self.fence.revoke();
        LeaderError::Lost {
            name: self.settings.name.clone(),
            duration: self.settings.duration,
        }
    }

    /// Gives the lease up on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        self.fence.revoke();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "could not release the lease");
        } else {
            info!(lease = %self.settings.name, "released leadership");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            renew_time: Timestamp::now()
                .checked_sub(SignedDuration::from_secs(renewed_secs_ago))
                .ok()
                .map(MicroTime),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_protocol() {
        let now = Timestamp::now();
        assert_eq!(holder(&spec(Some("a"), 1, 15), "a", now), Holder::Me);
        assert_eq!(holder(&spec(Some("b"), 1, 15), "a", now), Holder::Other);
        assert_eq!(holder(&spec(Some("b"), 20, 15), "a", now), Holder::Expired);
        assert_eq!(holder(&spec(None, 1, 15), "a", now), Holder::Expired);
        assert_eq!(holder(&spec(Some(""), 1, 15), "a", now), Holder::Expired);
        let mut no_renewal = spec(Some("b"), 0, 15);
        no_renewal.renew_time = None;
        assert_eq!(holder(&no_renewal, "a", now), Holder::Expired);
    }
}
