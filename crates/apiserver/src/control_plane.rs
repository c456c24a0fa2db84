//! A control plane: one cluster's registry of kinds (built-ins plus its CRDs) and its slice
//! of the store. The server holds a map of them; `kumo up`'s cluster is the first.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use apimachinery::kinds::{self, KindInfo};
use serde_json::Value;
use store::Backend;

use crate::storage::ObjectStore;

/// What serving a custom resource needs beyond its `KindInfo`.
#[derive(Debug, Clone)]
pub struct CustomKind {
    /// The CRD's name (`crontabs.stable.example.com`).
    pub crd_name: String,
    /// The version's `openAPIV3Schema` (empty object when none).
    pub schema: Value,
    /// The version objects are stored in.
    pub storage_version: String,
    /// The version's `additionalPrinterColumns` (JSON array, possibly empty).
    pub printer_columns: Value,
    /// The version's scale subresource (`specReplicasPath`, ...), if any.
    pub scale: Option<Value>,
}

/// The kinds a control plane serves, indexed for request routing.
#[derive(Debug, Default)]
pub struct Registry {
    kinds: Vec<Arc<KindInfo>>,
    custom: BTreeMap<(String, String, String), Arc<CustomKind>>,
}

impl Registry {
    /// A registry of the built-in kinds.
    pub fn builtin() -> Self {
        Self {
            kinds: kinds::builtin().into_iter().map(Arc::new).collect(),
            custom: BTreeMap::new(),
        }
    }

    /// The built-ins plus custom kinds (each with what serving it needs).
    pub fn with_custom(custom: Vec<(KindInfo, CustomKind)>) -> Self {
        let mut registry = Self::builtin();
        for (info, extra) in custom {
            let key = (
                info.group.clone(),
                info.version.clone(),
                info.plural.clone(),
            );
            if registry
                .lookup(&info.group, &info.version, &info.plural)
                .is_some()
            {
                continue;
            }
            registry.custom.insert(key, Arc::new(extra));
            registry.kinds.push(Arc::new(info));
        }
        registry
    }

    /// The kind served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<KindInfo>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
    }

    /// The custom-resource details of a kind, `None` for built-ins.
    pub fn custom(&self, kind: &KindInfo) -> Option<Arc<CustomKind>> {
        self.custom
            .get(&(
                kind.group.clone(),
                kind.version.clone(),
                kind.plural.clone(),
            ))
            .cloned()
    }

    /// The kind with this group and kind name, in its preferred (first listed) version.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<KindInfo>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)
            .cloned()
    }

    /// Every kind, in discovery order.
    pub fn kinds(&self) -> &[Arc<KindInfo>] {
        &self.kinds
    }

    /// Groups in discovery order, each with its versions in preference order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for k in &self.kinds {
            match out.iter_mut().find(|(g, _)| *g == k.group) {
                Some((_, versions)) => {
                    if !versions.contains(&k.version) {
                        versions.push(k.version.clone());
                    }
                }
                None => out.push((k.group.clone(), vec![k.version.clone()])),
            }
        }
        out
    }

    /// The kinds of one group version.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<Arc<KindInfo>> {
        self.kinds
            .iter()
            .filter(|k| k.group == group && k.version == version)
            .cloned()
            .collect()
    }
}

/// One cluster.
pub struct ControlPlane {
    /// The cluster id; it prefixes every store key.
    pub id: String,
    /// The cluster's objects.
    pub store: ObjectStore,
    registry: RwLock<Arc<Registry>>,
    caches: std::sync::Mutex<std::collections::HashMap<String, Arc<crate::watch_cache::Cache>>>,
    rbac: crate::rbac::Rbac,
    tokens: crate::authn::service_account::TokenAuthority,
    /// The CA that clients verify the server with (PEM), handed to pods.
    ca_pem: RwLock<Option<String>>,
    services: crate::service_alloc::Allocators,
    tunnels: crate::node_tunnel::Tunnels,
}

impl ControlPlane {
    /// A control plane for `id` on `backend`, serving the built-in kinds.
    pub fn new(id: &str, backend: Arc<dyn Backend>) -> Self {
        Self::with_service_network(id, backend, Default::default())
    }

    /// A control plane whose Services get their addresses from `network`.
    pub fn with_service_network(
        id: &str,
        backend: Arc<dyn Backend>,
        network: crate::service_alloc::ServiceNetwork,
    ) -> Self {
        Self {
            id: id.to_owned(),
            services: crate::service_alloc::Allocators::new(backend.clone(), id, network),
            tokens: crate::authn::service_account::TokenAuthority::new(backend.clone(), id),
            ca_pem: RwLock::new(None),
            store: ObjectStore::new(backend, id),
            registry: RwLock::new(Arc::new(Registry::builtin())),
            caches: Default::default(),
            rbac: Default::default(),
            tunnels: Default::default(),
        }
    }

    /// The tunnels of the cluster's connected node agents.
    pub fn tunnels(&self) -> &crate::node_tunnel::Tunnels {
        &self.tunnels
    }

    /// The cluster's ClusterIP and NodePort allocators.
    pub fn services(&self) -> &crate::service_alloc::Allocators {
        &self.services
    }

    /// The cluster's RBAC policy (its index starts on the first authorization).
    pub fn rbac(&self) -> &crate::rbac::Rbac {
        &self.rbac
    }

    /// The cluster's service-account token authority.
    pub fn tokens(&self) -> &crate::authn::service_account::TokenAuthority {
        &self.tokens
    }

    /// Sets the CA certificate (PEM) clients verify this cluster's server with.
    pub fn set_ca_pem(&self, pem: &str) {
        *self.ca_pem.write().unwrap_or_else(|e| e.into_inner()) = Some(pem.to_owned());
    }

    /// The CA certificate (PEM) clients verify this cluster's server with, once set.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kinds served now (a snapshot; CRDs change it).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The watch cache of `kind`'s whole collection, started on first use.
    pub fn cache(&self, kind: &KindInfo) -> Arc<crate::watch_cache::Cache> {
        let prefix = self.store.prefix(kind, None);
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches
            .entry(prefix.clone())
            .or_insert_with(|| {
                crate::watch_cache::Cache::start(self.store.backend().clone(), prefix)
            })
            .clone()
    }

    /// Replaces the served kinds.
    pub fn set_registry(&self, registry: Registry) {
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(registry);
    }
}
