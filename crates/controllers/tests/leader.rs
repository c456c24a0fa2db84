//! Leader election on a Lease: one candidate works at a time, a restarted holder resumes at
//! once, and a candidate takes over only after the holder stops renewing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use controllers::leader::{LeaseLock, run_as_leader};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

mod common;

fn lock(holder: &str) -> LeaseLock {
    LeaseLock {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaseLock::new("test-leader", holder)
    }
}

/// Spawns a candidate whose work marks itself active in `active` while it runs.
fn candidate(
    client: kube::Client,
    holder: &str,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let lock = lock(holder);
    tokio::spawn(async move {
        run_as_leader(client, lock, move || {
            let active = active.clone();
            let max_active = max_active.clone();
            async move {
                struct Guard(Arc<AtomicUsize>);
                impl Drop for Guard {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                max_active.fetch_max(now, Ordering::SeqCst);
                let _guard = Guard(active);
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .await
    })
}

async fn holder(api: &Api<Lease>) -> String {
    api.get("test-leader")
        .await
        .ok()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_failover() {
    let cluster = common::Cluster::start().await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-system");
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let a = candidate(
        cluster.client.clone(),
        "a",
        active.clone(),
        max_active.clone(),
    );
    common::wait_for(Duration::from_secs(5), "a to lead", || async {
        (holder(&leases).await == "a" && active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let b = candidate(
        cluster.client.clone(),
        "b",
        active.clone(),
        max_active.clone(),
    );
    // While a renews, b waits: several lease durations pass with a still the holder.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(holder(&leases).await, "a");
    assert_eq!(max_active.load(Ordering::SeqCst), 1, "never two leaders");

    // a dies without releasing; b takes over once the lease has gone unrenewed.
    a.abort();
    let _ = a.await;
    common::wait_for(Duration::from_secs(10), "b to take over", || async {
        (holder(&leases).await == "b" && active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let lease = leases.get("test-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
    assert_eq!(max_active.load(Ordering::SeqCst), 1, "never two leaders");
    b.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_holder_resumes_at_once() {
    let cluster = common::Cluster::start().await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-system");
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let first = candidate(
        cluster.client.clone(),
        "server-1",
        active.clone(),
        max_active.clone(),
    );
    common::wait_for(Duration::from_secs(5), "first run to lead", || async {
        (active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;
    // Same identity (a restarted server): it leads again without waiting out the lease.
    let again = candidate(
        cluster.client.clone(),
        "server-1",
        active.clone(),
        max_active.clone(),
    );
    common::wait_for(
        Duration::from_millis(1000),
        "the restarted holder to lead",
        || async { (active.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    assert_eq!(holder(&leases).await, "server-1");
    again.abort();
}
