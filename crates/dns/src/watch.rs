//! Keeps the zone current: kube-rs reflectors over Services, EndpointSlices and (in
//! verified mode) pods; every change schedules a rebuild, debounced so a burst of endpoint
//! updates costs one rebuild, and the new zone is published to the handler.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};

use crate::records::{Objects, PodRecords, Zone};
use crate::{Config, Error};

/// How long a rebuild waits for more changes to arrive.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Starts the watches; returns the published zones once the first lists are in (or the
/// sync timeout passed), and the task that keeps them current.
pub(crate) async fn start(
    client: kube::Client,
    origin: Name,
    config: &Config,
) -> Result<(watch::Receiver<Arc<Zone>>, tokio::task::JoinHandle<()>), Error> {
    let changed = Arc::new(Notify::new());
    let (services, services_feed) = reflect::<Service>(Api::all(client.clone()), &changed);
    let (slices, slices_feed) = reflect::<EndpointSlice>(Api::all(client.clone()), &changed);
    let verified = config.pods == PodRecords::Verified;
    let (pods, pods_feed) = reflect::<Pod>(Api::all(client), &changed);
    let pods_feed = if verified {
        pods_feed.boxed()
    } else {
        futures::future::pending().boxed()
    };
    let (publish, zones) = watch::channel(Arc::new(Zone::empty(
        origin.clone(),
        config.ttl,
        config.pods,
    )));
    let publish = Arc::new(publish);
    let (ttl, mode) = (config.ttl, config.pods);
    let build = {
        let (services, slices, pods) = (services.clone(), slices.clone(), pods.clone());
        move || {
            let (services, slices, pods) = (services.state(), slices.state(), pods.state());
            let objects = Objects {
                services: services.iter().map(AsRef::as_ref).collect(),
                slices: slices.iter().map(AsRef::as_ref).collect(),
                pods: pods.iter().map(AsRef::as_ref).collect(),
            };
            Arc::new(Zone::build(origin.clone(), ttl, mode, &objects))
        }
    };
    let rebuild = {
        let changed = changed.clone();
        let build = build.clone();
        let publish = publish.clone();
        async move {
            while !publish.is_closed() {
                changed.notified().await;
                tokio::time::sleep(DEBOUNCE).await;
                publish.send_replace(build());
            }
        }
    };
    let task = tokio::spawn(async move {
        futures::join!(services_feed, slices_feed, pods_feed, rebuild);
    });
    let ready = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
        if verified {
            let _ = pods.wait_until_ready().await;
        }
    };
    if tokio::time::timeout(config.sync_timeout, ready)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?config.sync_timeout, "cluster DNS serves before its first lists arrived");
    }
    // The first zone at once, so the first questions do not wait for a debounce.
    publish.send_replace(build());
    Ok((zones, task))
}

/// A reflector over `api`: its store, and the future that feeds it (notifying `changed`
/// on every event).
fn reflect<K>(
    api: Api<K>,
    changed: &Arc<Notify>,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let feed = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |event| {
            if let Err(e) = &event {
                tracing::warn!(error = %e, "cluster DNS watch failed; retrying");
            }
            changed.notify_one();
            futures::future::ready(())
        })
        .boxed();
    (reader, feed)
}
