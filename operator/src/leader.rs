//! Leader election over a `coordination.k8s.io/v1` Lease, with optimistic concurrency: one
//! replica works, the others wait; a leader that cannot renew in time steps down.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Election {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Election {
    fn lease(&self, current: Option<&Lease>, transitions: i32) -> Lease {
        let now = MicroTime(Timestamp::now());
        let held_by_us = current
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        let acquire_time = if held_by_us {
            current
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.acquire_time.clone())
        } else {
            Some(now.clone())
        };
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs() as i32),
                acquire_time,
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// One attempt: `Ok(true)` when this replica holds the lease afterwards.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            return match self
                .api
                .create(&PostParams::default(), &self.lease(None, 0))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let d = spec.lease_duration_seconds.unwrap_or(15).max(1);
            t.0.as_second() + i64::from(d) < Timestamp::now().as_second()
        });
        if !ours && !expired && held {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        match self
            .api
            .replace(
                &self.name,
                &PostParams::default(),
                &self.lease(Some(&current), transitions),
            )
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote it first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (an empty holder), so that a successor leads at once instead of
    /// waiting for it to expire. Best effort: on failure the lease simply expires.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("lease released"),
            Err(e) => tracing::warn!(error = %e, "releasing the lease"),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease lasts; then returns (the
    /// caller steps down).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the lease");
                    if last_ok.elapsed() > self.duration {
                        return;
                    }
                }
            }
        }
    }
}
