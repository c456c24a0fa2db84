//! Leader election on a coordination.k8s.io Lease, with client-go's leaderelection
//! semantics: a holder renews the Lease every retry period; a candidate takes it over only
//! once the record it observed has gone unchanged for a whole lease duration (judged by its
//! own clock, so clock skew between servers does not matter); a leader that cannot renew
//! within the renew deadline stops its work.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Where the lock lives and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseLock {
    /// Namespace of the Lease (upstream uses kube-system).
    pub namespace: String,
    /// Name of the Lease, for example `kube-controller-manager`.
    pub name: String,
    /// This candidate's identity, stable across restarts of the same server so that a
    /// restarted leader resumes at once instead of waiting out its own old lease.
    pub holder: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps working while renewals fail.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseLock {
    /// A lock in kube-system with upstream's timings (15 s lease, 10 s deadline, 2 s retry).
    pub fn new(name: &str, holder: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            holder: holder.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate last saw of the Lease, and when, by its own clock.
struct Observed {
    spec: Option<LeaseSpec>,
    at: Instant,
}

/// Runs `work` whenever this candidate holds the lease; never returns. Work is stopped
/// (its future dropped) when the lease is lost, and started afresh when it is regained.
/// Work that ends on its own (an error) is restarted after a retry period while leading.
pub async fn run_as_leader<F, Fut>(client: Client, lock: LeaseLock, mut work: F) -> !
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let api: Api<Lease> = Api::namespaced(client, &lock.namespace);
    let mut observed = Observed {
        spec: None,
        at: Instant::now(),
    };
    loop {
        // Acquire.
        loop {
            match try_acquire_or_renew(&api, &lock, &mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::debug!(lease = %lock.name, error = %e, "acquiring lease"),
            }
            tokio::time::sleep(lock.retry_period).await;
        }
        tracing::info!(lease = %lock.name, holder = %lock.holder, "became leader");

        // Lead until renewal fails for longer than the deadline.
        let renew = async {
            let mut last_renewal = Instant::now();
            loop {
                tokio::time::sleep(lock.retry_period).await;
                match try_acquire_or_renew(&api, &lock, &mut observed).await {
                    Ok(true) => last_renewal = Instant::now(),
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(lease = %lock.name, error = %e, "renewing lease");
                        if last_renewal.elapsed() > lock.renew_deadline {
                            return;
                        }
                    }
                }
            }
        };
        let lead = async {
            loop {
                if let Err(e) = work().await {
                    tracing::error!(lease = %lock.name, error = %e, "leader work failed; restarting");
                }
                tokio::time::sleep(lock.retry_period).await;
            }
        };
        tokio::select! {
            _ = renew => {}
            _ = lead => {}
        }
        tracing::warn!(lease = %lock.name, holder = %lock.holder, "lost leadership");
    }
}

/// One attempt: creates the Lease, renews it if held, or takes it over once expired.
/// Returns whether this candidate holds the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    lock: &LeaseLock,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let duration_seconds = i32::try_from(lock.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&lock.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(lock.name.clone()),
                namespace: Some(lock.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(lock.holder.clone()),
                lease_duration_seconds: Some(duration_seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                *observed = Observed {
                    spec: created.spec,
                    at: Instant::now(),
                };
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if observed.spec.as_ref() != Some(&spec) {
        *observed = Observed {
            spec: Some(spec.clone()),
            at: Instant::now(),
        };
    }
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let held_by_me = holder == lock.holder;
    if !held_by_me && !holder.is_empty() {
        let lease_for = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(lock.lease_duration);
        if observed.at.elapsed() < lease_for {
            return Ok(false);
        }
    }
    let mut next = spec.clone();
    if !held_by_me {
        next.acquire_time = Some(now.clone());
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(lock.holder.clone());
    next.lease_duration_seconds = Some(duration_seconds);
    next.renew_time = Some(now);
    lease.spec = Some(next);
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(&lock.name, &PostParams::default(), &lease)
        .await
    {
        Ok(updated) => {
            *observed = Observed {
                spec: updated.spec,
                at: Instant::now(),
            };
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
