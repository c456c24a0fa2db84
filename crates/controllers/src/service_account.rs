//! Per-namespace defaults: the `default` ServiceAccount (upstream's serviceaccount-controller)
//! and the `kube-root-ca.crt` ConfigMap with the cluster CA (upstream's root-ca-cert-publisher).
//!
//! One loop keyed by namespace, triggered by namespaces and by changes to either object: a
//! deleted ServiceAccount is created again, a deleted or edited ConfigMap is restored.
//! Terminating namespaces are left alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::{Context, FIELD_MANAGER};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap that publishes the cluster CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The annotation upstream's publisher sets on the ConfigMap.
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct State {
    client: Client,
    root_ca_pem: Arc<str>,
    service_accounts: Store<ServiceAccount>,
    config_maps: Store<ConfigMap>,
}

/// Runs the loop until the future is dropped.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (namespaces, ns_writer) = reflector::store();
    let (service_accounts, sa_writer) = reflector::store();
    let (config_maps, cm_writer) = reflector::store();
    let ns_events = reflector::reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map_ok(|ns| ObjectRef::<Namespace>::new(&ns.name_any()));
    let sa_events = reflector::reflector(
        sa_writer,
        watcher(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map_ok(|sa| ObjectRef::<Namespace>::new(&sa.namespace().unwrap_or_default()));
    let cm_events = reflector::reflector(
        cm_writer,
        watcher(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIG_MAP}")),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map_ok(|cm| ObjectRef::<Namespace>::new(&cm.namespace().unwrap_or_default()));
    let state = Arc::new(State {
        client,
        root_ca_pem: ctx.root_ca_pem.clone(),
        service_accounts,
        config_maps,
    });
    let queue =
        futures::stream::select_all([ns_events.boxed(), sa_events.boxed(), cm_events.boxed()]);
    applier(
        |ns, state: Arc<State>| Box::pin(async move { reconcile(ns, &state).await }),
        |_, _, _| Action::requeue(Duration::from_secs(5)),
        state,
        namespaces,
        queue,
        controller::Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "serviceaccount: reconcile failed");
        }
    })
    .await;
    Ok(())
}

async fn reconcile(ns: Arc<Namespace>, state: &State) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let namespace = ns.name_any();
    // The caches must have listed once, or every namespace would look empty.
    let _ = state.service_accounts.wait_until_ready().await;
    let _ = state.config_maps.wait_until_ready().await;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };

    let sa_ref = ObjectRef::new(DEFAULT_SERVICE_ACCOUNT).within(&namespace);
    if state.service_accounts.get(&sa_ref).is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api = Api::<ServiceAccount>::namespaced(state.client.clone(), &namespace);
        ignore_gone_or_existing(api.create(&params, &sa).await.map(drop))?;
    }

    let want: BTreeMap<String, String> =
        [("ca.crt".to_owned(), state.root_ca_pem.to_string())].into();
    let api = Api::<ConfigMap>::namespaced(state.client.clone(), &namespace);
    let cm_ref = ObjectRef::new(ROOT_CA_CONFIG_MAP).within(&namespace);
    match state.config_maps.get(&cm_ref) {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIG_MAP.to_owned()),
                    annotations: Some(
                        [(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned())].into(),
                    ),
                    ..Default::default()
                },
                data: Some(want),
                ..Default::default()
            };
            ignore_gone_or_existing(api.create(&params, &cm).await.map(drop))?;
        }
        Some(cm) => {
            let described = cm
                .annotations()
                .get(DESCRIPTION_ANNOTATION)
                .is_some_and(|d| !d.is_empty());
            if cm.data.as_ref() != Some(&want) || cm.binary_data.is_some() || !described {
                let mut fixed = (*cm).clone();
                fixed.data = Some(want);
                fixed.binary_data = None;
                fixed
                    .annotations_mut()
                    .insert(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned());
                // The cached resourceVersion makes this a compare-and-swap; a conflict
                // retries once the cache has the newer object.
                match api.replace(ROOT_CA_CONFIG_MAP, &params, &fixed).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(Action::await_change())
}

/// A create that found the object already there, or the namespace gone or terminating,
/// has nothing left to do.
fn ignore_gone_or_existing(result: Result<(), kube::Error>) -> Result<(), Error> {
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
