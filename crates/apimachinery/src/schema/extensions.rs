//! The table of Kubernetes schema extensions (`x-kubernetes-*`) applied to the built-in
//! definitions, keyed by (definition name, property name).
//!
//! Two sources feed it: `extensions_table.rs`, generated from k8s-openapi's merge strategies by
//! `examples/gen_extensions.rs`, and the hand-written [`MANUAL`] table below, which holds what
//! k8s-openapi does not encode (patch strategies and merge keys, definition-level map types,
//! unions) and overrides the generated list facts where upstream differs.

use serde_json::{Map, Value, json};

use super::extensions_table::GENERATED;

/// One extension fact about a property (or, with an empty property name, a definition).
#[derive(Clone, Copy, Debug)]
pub(super) enum Ext {
    /// `x-kubernetes-list-type` (`atomic` or `set`); removes any list map keys.
    ListType(&'static str),
    /// No list type: upstream leaves the list unannotated (k8s-openapi merges it atomically).
    NoListType,
    /// `x-kubernetes-list-type: map` with these `x-kubernetes-list-map-keys`.
    ListMap(&'static [&'static str]),
    /// `x-kubernetes-map-type`.
    MapType(&'static str),
    /// `x-kubernetes-patch-strategy`.
    PatchStrategy(&'static str),
    /// `x-kubernetes-patch-merge-key`.
    PatchMergeKey(&'static str),
    /// `x-kubernetes-unions` with one union: its discriminator and (field, discriminator value) pairs.
    Union(&'static str, &'static [(&'static str, &'static str)]),
    /// A string `default`, as upstream's `+default` markers publish for list map keys, so
    /// server-side apply can key an item that leaves the field out.
    Default(&'static str),
}

/// Hand-written facts; applied after [`GENERATED`], so list facts here win.
#[rustfmt::skip]
const MANUAL: &[(&str, &str, Ext)] = &[
    // List types where upstream differs from k8s-openapi's merge strategies.
    ("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates", Ext::ListType("atomic")),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", Ext::ListType("atomic")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", Ext::ListType("atomic")),
    ("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", "request", Ext::ListType("atomic")),
    ("io.k8s.api.certificates.v1.CertificateSigningRequestStatus", "certificate", Ext::ListType("atomic")),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Status", "details", Ext::ListType("atomic")),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.APIResource", "verbs", Ext::NoListType),
    ("io.k8s.api.core.v1.Container", "ports", Ext::ListMap(&["containerPort", "protocol"])),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", Ext::ListMap(&["containerPort", "protocol"])),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", Ext::ListMap(&["port", "protocol"])),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", Ext::ListMap(&["topologyKey", "whenUnsatisfiable"])),
    // Defaults of list map keys (applied ports often leave the protocol out).
    ("io.k8s.api.core.v1.ContainerPort", "protocol", Ext::Default("TCP")),
    ("io.k8s.api.core.v1.ServicePort", "protocol", Ext::Default("TCP")),
    // Map types on properties.
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "allocatedResourceStatuses", Ext::MapType("granular")),
    ("io.k8s.api.core.v1.PersistentVolumeSpec", "claimRef", Ext::MapType("granular")),
    // Map types on definitions (structs replaced as a whole).
    ("io.k8s.api.admissionregistration.v1.MatchResources", "", Ext::MapType("atomic")),
    ("io.k8s.api.admissionregistration.v1.NamedRuleWithOperations", "", Ext::MapType("atomic")),
    ("io.k8s.api.admissionregistration.v1.ParamKind", "", Ext::MapType("atomic")),
    ("io.k8s.api.admissionregistration.v1.ParamRef", "", Ext::MapType("atomic")),
    ("io.k8s.api.admissionregistration.v1.Variable", "", Ext::MapType("atomic")),
    ("io.k8s.api.autoscaling.v1.CrossVersionObjectReference", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.ConfigMapKeySelector", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.EndpointAddress", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.EndpointPort", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.LocalObjectReference", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.NodeSelector", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.NodeSelectorTerm", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.ObjectFieldSelector", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.ObjectReference", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.ResourceFieldSelector", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.ScopeSelector", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.SecretKeySelector", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.SecretReference", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.TopologySelectorTerm", "", Ext::MapType("atomic")),
    ("io.k8s.api.core.v1.TypedLocalObjectReference", "", Ext::MapType("atomic")),
    ("io.k8s.api.discovery.v1.EndpointPort", "", Ext::MapType("atomic")),
    ("io.k8s.api.networking.v1.ServiceBackendPort", "", Ext::MapType("atomic")),
    ("io.k8s.api.rbac.v1.RoleRef", "", Ext::MapType("atomic")),
    ("io.k8s.api.rbac.v1.Subject", "", Ext::MapType("atomic")),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", "", Ext::MapType("atomic")),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference", "", Ext::MapType("atomic")),
    // Unions.
    ("io.k8s.api.core.v1.AppArmorProfile", "", Ext::Union("type", &[("localhostProfile", "LocalhostProfile")])),
    ("io.k8s.api.core.v1.SeccompProfile", "", Ext::Union("type", &[("localhostProfile", "LocalhostProfile")])),
    // Strategic merge patch: strategies without a merge key.
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", Ext::PatchStrategy("retainKeys")),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", Ext::PatchStrategy("replace")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", Ext::PatchStrategy("merge")),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", Ext::PatchStrategy("merge")),
];

/// Strategic merge patch: lists merged by key, as (definition, property, strategy, merge key).
#[rustfmt::skip]
const MERGE_KEYS: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.api.admissionregistration.v1.MutatingWebhook", "matchConditions", "merge", "name"),
    ("io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration", "webhooks", "merge", "name"),
    ("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "matchConditions", "merge", "name"),
    ("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec", "variables", "merge", "name"),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhook", "matchConditions", "merge", "name"),
    ("io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration", "webhooks", "merge", "name"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ComponentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", "merge", "name"),
    ("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.networking.v1.ServiceCIDRStatus", "conditions", "merge", "type"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", "merge", "name"),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps", "x-kubernetes-validations", "merge", "rule"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
];

/// Applies the whole table to `definitions` (held in kumo's canonical, OpenAPI v3 form).
/// Facts about definitions or properties that are absent are skipped.
pub(super) fn apply(definitions: &mut Map<String, Value>) {
    let merge_key_facts = MERGE_KEYS.iter().flat_map(|&(def, prop, strategy, key)| {
        [
            (def, prop, Ext::PatchStrategy(strategy)),
            (def, prop, Ext::PatchMergeKey(key)),
        ]
    });
    let facts = GENERATED
        .iter()
        .copied()
        .chain(MANUAL.iter().copied())
        .chain(merge_key_facts);
    for (def, prop, ext) in facts {
        let Some(Value::Object(definition)) = definitions.get_mut(def) else {
            continue;
        };
        let target = if prop.is_empty() {
            definition
        } else {
            match definition
                .get_mut("properties")
                .and_then(|p| p.get_mut(prop))
            {
                Some(Value::Object(property)) => property,
                _ => continue,
            }
        };
        set(target, ext);
    }
}

/// Writes one fact into a schema object.
fn set(target: &mut Map<String, Value>, ext: Ext) {
    match ext {
        Ext::ListType(list_type) => {
            target.shift_remove("x-kubernetes-list-map-keys");
            target.insert("x-kubernetes-list-type".into(), list_type.into());
        }
        Ext::NoListType => {
            target.shift_remove("x-kubernetes-list-map-keys");
            target.shift_remove("x-kubernetes-list-type");
        }
        Ext::ListMap(keys) => {
            target.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            target.insert("x-kubernetes-list-type".into(), "map".into());
        }
        Ext::MapType(map_type) => {
            target.insert("x-kubernetes-map-type".into(), map_type.into());
        }
        Ext::PatchStrategy(strategy) => {
            target.insert("x-kubernetes-patch-strategy".into(), strategy.into());
        }
        Ext::PatchMergeKey(key) => {
            target.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
        Ext::Default(value) => {
            target.insert("default".into(), value.into());
        }
        Ext::Union(discriminator, fields) => {
            let by: Map<String, Value> = fields
                .iter()
                .map(|&(f, v)| (f.to_owned(), Value::from(v)))
                .collect();
            let union = json!([{ "discriminator": discriminator, "fields-to-discriminateBy": by }]);
            target.insert("x-kubernetes-unions".into(), union);
        }
    }
}
