//! A control plane: one cluster's registry of kinds, its slice of the store and its
//! cached documents. The server holds a map of them; `kumo up`'s cluster is the first.

use std::sync::Arc;

use apimachinery::kinds::{self, KindInfo};
use store::Backend;

use crate::storage::ObjectStore;

/// The kinds a control plane serves, indexed for request routing.
#[derive(Debug, Default)]
pub struct Registry {
    kinds: Vec<Arc<KindInfo>>,
}

impl Registry {
    /// A registry of the built-in kinds.
    pub fn builtin() -> Self {
        Self {
            kinds: kinds::builtin().into_iter().map(Arc::new).collect(),
        }
    }

    /// The kind served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<KindInfo>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
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
    /// The kinds served.
    pub registry: Registry,
}

impl ControlPlane {
    /// A control plane for `id` on `backend`.
    pub fn new(id: &str, backend: Arc<dyn Backend>) -> Self {
        Self {
            id: id.to_owned(),
            store: ObjectStore::new(backend, id),
            registry: Registry::builtin(),
        }
    }
}
