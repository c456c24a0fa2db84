//! The selectors of the objects that group pods (Services, ReplicationControllers,
//! ReplicaSets, StatefulSets), from which default topology spreading learns which pods
//! belong together (upstream's `helper.DefaultSelector`).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use crate::selectors::{Labels, Selector};

/// A controller kind whose selector default spreading uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerKind {
    /// core/v1 ReplicationController.
    ReplicationController,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

impl ControllerKind {
    /// The kind of an owner reference, matched on exact group/version and kind as
    /// upstream compares GroupVersionKinds.
    fn of(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("v1", "ReplicationController") => Some(Self::ReplicationController),
            ("apps/v1", "ReplicaSet") => Some(Self::ReplicaSet),
            ("apps/v1", "StatefulSet") => Some(Self::StatefulSet),
            _ => None,
        }
    }
}

/// Service selectors per namespace and controller selectors per kind, namespace and name.
#[derive(Clone, Debug, Default)]
pub struct PodSelectors {
    /// Namespace → Service name → `spec.selector` (Services without one are not kept:
    /// they select nothing).
    services: HashMap<String, BTreeMap<String, Labels>>,
    /// (kind, namespace, name) → the controller's pod selector.
    controllers: HashMap<(ControllerKind, String, String), Selector>,
}

impl PodSelectors {
    /// Sets (or, with `None`, removes) the selector of Service `namespace/name`; returns
    /// whether anything changed.
    pub fn set_service(&mut self, namespace: &str, name: &str, selector: Option<Labels>) -> bool {
        match selector {
            Some(selector) => {
                let services = self.services.entry(namespace.to_owned()).or_default();
                if services.get(name) == Some(&selector) {
                    return false;
                }
                services.insert(name.to_owned(), selector);
                true
            }
            None => {
                let Some(services) = self.services.get_mut(namespace) else {
                    return false;
                };
                let removed = services.remove(name).is_some();
                if services.is_empty() {
                    self.services.remove(namespace);
                }
                removed
            }
        }
    }

    /// Sets (or removes) the selector of a controller; returns whether anything changed.
    pub fn set_controller(
        &mut self,
        kind: ControllerKind,
        namespace: &str,
        name: &str,
        selector: Option<Selector>,
    ) -> bool {
        let key = (kind, namespace.to_owned(), name.to_owned());
        match selector {
            Some(selector) if self.controllers.get(&key) == Some(&selector) => false,
            Some(selector) => {
                self.controllers.insert(key, selector);
                true
            }
            None => self.controllers.remove(&key).is_some(),
        }
    }

    /// The selector of Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Labels> {
        self.services.get(namespace)?.get(name)
    }

    /// The pod selector of a controller.
    pub fn controller(
        &self,
        kind: ControllerKind,
        namespace: &str,
        name: &str,
    ) -> Option<&Selector> {
        self.controllers
            .get(&(kind, namespace.to_owned(), name.to_owned()))
    }

    /// Keys (`namespace/name`) of the Services known.
    pub fn service_keys(&self) -> Vec<String> {
        self.services
            .iter()
            .flat_map(|(ns, names)| names.keys().map(move |n| format!("{ns}/{n}")))
            .collect()
    }

    /// Keys (`namespace/name`) of the controllers of `kind` known.
    pub fn controller_keys(&self, kind: ControllerKind) -> Vec<String> {
        self.controllers
            .keys()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, ns, n)| format!("{ns}/{n}"))
            .collect()
    }

    /// The selector of the pods that belong with `pod`: the labels of every Service in its
    /// namespace that selects it, plus the selector of its controller when that is a
    /// ReplicationController, ReplicaSet or StatefulSet the scheduler knows. `None` when
    /// nothing groups the pod (upstream then applies no default constraints).
    pub fn default_selector(&self, pod: &Pod) -> Option<Selector> {
        static EMPTY: Labels = BTreeMap::new();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&EMPTY);
        // Everything merged selects the pod, so the merged labels cannot conflict.
        let mut merged = Labels::new();
        for selector in self
            .services
            .get(namespace)
            .into_iter()
            .flat_map(|s| s.values())
        {
            if selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)) {
                merged.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .and_then(|o| {
                let kind = ControllerKind::of(&o.api_version, &o.kind)?;
                self.controllers
                    .get(&(kind, namespace.to_owned(), o.name.clone()))
            });
        // A ReplicationController's plain label map merges like the Services'; the label
        // selectors of ReplicaSets and StatefulSets add their requirements.
        let mut selector = Selector::from_labels(&merged);
        if let Some(owner) = controller {
            selector.extend(owner);
        }
        if selector.is_empty() {
            return None;
        }
        Some(selector)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: serde_json::Value, owner: Option<(&str, &str, &str)>) -> Pod {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}});
        if let Some((api_version, kind, name)) = owner {
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": true
            }]);
        }
        serde_json::from_value(pod).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn selector(value: serde_json::Value) -> Selector {
        Selector::parse(Some(&serde_json::from_value(value).unwrap()))
    }

    #[test]
    fn nothing_groups_a_bare_pod() {
        let mut s = PodSelectors::default();
        s.set_service("ns", "other", Some(labels(&[("app", "other")])));
        s.set_service("elsewhere", "web", Some(labels(&[("app", "web")])));
        assert_eq!(s.default_selector(&pod(json!({"app": "web"}), None)), None);
    }

    #[test]
    fn services_selecting_the_pod_are_merged() {
        let mut s = PodSelectors::default();
        s.set_service("ns", "web", Some(labels(&[("app", "web")])));
        s.set_service(
            "ns",
            "web-canary",
            Some(labels(&[("app", "web"), ("track", "canary")])),
        );
        s.set_service("ns", "stable", Some(labels(&[("track", "stable")])));
        let p = pod(json!({"app": "web", "track": "canary", "x": "1"}), None);
        let got = s.default_selector(&p).unwrap();
        assert!(got.matches(&labels(&[("app", "web"), ("track", "canary")])));
        assert!(!got.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn controller_selector_is_added() {
        let mut s = PodSelectors::default();
        s.set_controller(
            ControllerKind::ReplicaSet,
            "ns",
            "rs",
            Some(selector(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}))),
        );
        s.set_service("ns", "web", Some(labels(&[("app", "web")])));
        let owned = pod(
            json!({"app": "web", "tier": "a"}),
            Some(("apps/v1", "ReplicaSet", "rs")),
        );
        let got = s.default_selector(&owned).unwrap();
        assert!(got.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!got.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!got.matches(&labels(&[("tier", "a")])));
        // Another group/version or kind is not a supported controller.
        let wrong = pod(
            json!({"tier": "a"}),
            Some(("extensions/v1beta1", "ReplicaSet", "rs")),
        );
        assert_eq!(s.default_selector(&wrong), None);
        // An unknown controller adds nothing.
        let unknown = pod(
            json!({"tier": "a"}),
            Some(("apps/v1", "ReplicaSet", "gone")),
        );
        assert_eq!(s.default_selector(&unknown), None);
    }

    #[test]
    fn changes_are_reported_once() {
        let mut s = PodSelectors::default();
        assert!(s.set_service("ns", "web", Some(labels(&[("app", "web")]))));
        assert!(!s.set_service("ns", "web", Some(labels(&[("app", "web")]))));
        assert_eq!(s.service_keys(), ["ns/web"]);
        assert!(s.set_service("ns", "web", None));
        assert!(!s.set_service("ns", "web", None));
        let rc = Some(Selector::from_labels(&labels(&[("app", "db")])));
        assert!(s.set_controller(
            ControllerKind::ReplicationController,
            "ns",
            "db",
            rc.clone()
        ));
        assert!(!s.set_controller(ControllerKind::ReplicationController, "ns", "db", rc));
        assert_eq!(
            s.controller_keys(ControllerKind::ReplicationController),
            ["ns/db"]
        );
        assert!(s.controller_keys(ControllerKind::StatefulSet).is_empty());
    }
}
