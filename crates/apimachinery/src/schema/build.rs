//! Builds the built-in definitions from k8s-openapi's `schemars` output, adds the list and
//! watch-event definitions it lacks, normalises special types to upstream's v3 form, and applies
//! the extensions table.

use std::collections::BTreeSet;

use k8s_openapi::{ListableResource, Resource};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::{REF_PREFIX, Schemas, extensions};
use crate::kinds::GroupVersion;

/// Definition names that get special treatment.
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const JSON_VALUE: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Collects definitions and the GVKs to stamp on them.
struct Builder {
    generator: SchemaGenerator,
    /// (definition name, group, version, kind) for kind schemas.
    gvks: Vec<(String, String, String, String)>,
    /// Synthesised list definitions: (list name, item name, group, version, list kind).
    lists: Vec<(String, String, String, String, String)>,
}

impl Builder {
    /// Registers a kind that has no list type.
    fn kind<T: JsonSchema + Resource>(&mut self) {
        self.generator.subschema_for::<T>();
        self.gvks.push((
            T::schema_name().into_owned(),
            T::GROUP.into(),
            T::VERSION.into(),
            T::KIND.into(),
        ));
    }

    /// Registers a kind and its list type.
    fn listable<T: JsonSchema + ListableResource>(&mut self) {
        self.kind::<T>();
        let item = T::schema_name().into_owned();
        let prefix = item.strip_suffix(T::KIND).unwrap_or(&item);
        let list = format!("{prefix}{}", T::LIST_KIND);
        self.lists.push((
            list,
            item,
            T::GROUP.into(),
            T::VERSION.into(),
            T::LIST_KIND.into(),
        ));
    }

    /// Registers a type referenced by the API's operations but not a kind.
    fn plain<T: JsonSchema>(&mut self) {
        self.generator.subschema_for::<T>();
    }
}

/// Builds the built-in definitions.
pub(super) fn builtin() -> Schemas {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut b = Builder {
        generator: settings.into_generator(),
        gvks: Vec::new(),
        lists: Vec::new(),
    };
    register_all(&mut b);

    let mut definitions = b.generator.take_definitions(false);
    for (list, item, group, version, list_kind) in &b.lists {
        definitions.insert(list.clone(), list_definition(item, list_kind));
        b.gvks.push((
            list.clone(),
            group.clone(),
            version.clone(),
            list_kind.clone(),
        ));
    }
    definitions.insert(WATCH_EVENT.to_owned(), watch_event_definition());

    for schema in definitions.values_mut() {
        normalise(schema);
    }
    special_types(&mut definitions);
    extensions::apply(&mut definitions);

    // Every group version served gets DeleteOptions and WatchEvent, as upstream does.
    let group_versions: BTreeSet<GroupVersion> = b
        .gvks
        .iter()
        .map(|(_, g, v, _)| GroupVersion::new(g, v))
        .collect();
    for name in [DELETE_OPTIONS, WATCH_EVENT] {
        let kind = name.rsplit('.').next().unwrap_or(name);
        for gv in &group_versions {
            b.gvks.push((
                name.to_owned(),
                gv.group.clone(),
                gv.version.clone(),
                kind.to_owned(),
            ));
        }
    }
    for (name, group, version, kind) in &b.gvks {
        if let Some(Value::Object(schema)) = definitions.get_mut(name) {
            add_gvk(schema, group, version, kind);
            // k8s-openapi's structs make `metadata` required; upstream's ObjectMeta is
            // optional (omitempty), and kubectl validates manifests against this list.
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|field| field != "metadata");
                if required.is_empty() {
                    schema.shift_remove("required");
                }
            }
        }
    }
    Schemas::from_definitions(definitions)
}

/// Appends one GVK to a schema's `x-kubernetes-group-version-kind`, once.
pub fn add_gvk(schema: &mut Map<String, Value>, group: &str, version: &str, kind: &str) {
    let entry = json!({ "group": group, "kind": kind, "version": version });
    let list = schema
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list
        && !list.contains(&entry)
    {
        list.push(entry);
    }
}

/// Every top-level type of the served groups.
fn register_all(b: &mut Builder) {
    use k8s_openapi::api::{
        admissionregistration::v1 as admreg, apps::v1 as apps, authentication::v1 as authn,
        authorization::v1 as authz, autoscaling::v1 as as1, autoscaling::v2 as as2,
        batch::v1 as batch, certificates::v1 as certs, coordination::v1 as coord, core::v1 as core,
        discovery::v1 as disc, events::v1 as events, networking::v1 as net, node::v1 as node,
        policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as sched, storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

    b.listable::<core::ComponentStatus>();
    b.listable::<core::ConfigMap>();
    b.listable::<core::Endpoints>();
    b.listable::<core::Event>();
    b.listable::<core::LimitRange>();
    b.listable::<core::Namespace>();
    b.listable::<core::Node>();
    b.listable::<core::PersistentVolume>();
    b.listable::<core::PersistentVolumeClaim>();
    b.listable::<core::Pod>();
    b.listable::<core::PodTemplate>();
    b.listable::<core::ReplicationController>();
    b.listable::<core::ResourceQuota>();
    b.listable::<core::Secret>();
    b.listable::<core::Service>();
    b.listable::<core::ServiceAccount>();
    b.kind::<core::Binding>();
    b.listable::<apps::ControllerRevision>();
    b.listable::<apps::DaemonSet>();
    b.listable::<apps::Deployment>();
    b.listable::<apps::ReplicaSet>();
    b.listable::<apps::StatefulSet>();
    b.listable::<batch::CronJob>();
    b.listable::<batch::Job>();
    b.listable::<rbac::ClusterRole>();
    b.listable::<rbac::ClusterRoleBinding>();
    b.listable::<rbac::Role>();
    b.listable::<rbac::RoleBinding>();
    b.listable::<coord::Lease>();
    b.listable::<disc::EndpointSlice>();
    b.listable::<events::Event>();
    b.listable::<policy::PodDisruptionBudget>();
    b.kind::<policy::Eviction>();
    b.listable::<net::Ingress>();
    b.listable::<net::IngressClass>();
    b.listable::<net::IPAddress>();
    b.listable::<net::NetworkPolicy>();
    b.listable::<net::ServiceCIDR>();
    b.listable::<storage::CSIDriver>();
    b.listable::<storage::CSINode>();
    b.listable::<storage::CSIStorageCapacity>();
    b.listable::<storage::StorageClass>();
    b.listable::<storage::VolumeAttachment>();
    b.listable::<sched::PriorityClass>();
    b.listable::<as1::HorizontalPodAutoscaler>();
    b.kind::<as1::Scale>();
    b.listable::<as2::HorizontalPodAutoscaler>();
    b.listable::<node::RuntimeClass>();
    b.listable::<certs::CertificateSigningRequest>();
    b.listable::<admreg::MutatingWebhookConfiguration>();
    b.listable::<admreg::ValidatingAdmissionPolicy>();
    b.listable::<admreg::ValidatingAdmissionPolicyBinding>();
    b.listable::<admreg::ValidatingWebhookConfiguration>();
    b.kind::<authz::LocalSubjectAccessReview>();
    b.kind::<authz::SelfSubjectAccessReview>();
    b.kind::<authz::SelfSubjectRulesReview>();
    b.kind::<authz::SubjectAccessReview>();
    b.kind::<authn::SelfSubjectReview>();
    b.kind::<authn::TokenRequest>();
    b.kind::<authn::TokenReview>();
    b.listable::<apiext::CustomResourceDefinition>();
    b.kind::<meta::APIGroup>();
    b.kind::<meta::APIGroupList>();
    b.kind::<meta::APIResourceList>();
    b.kind::<meta::APIVersions>();
    b.kind::<meta::Status>();
    b.plain::<meta::DeleteOptions>();
    b.plain::<meta::Patch>();
    b.plain::<meta::ListMeta>();
    b.plain::<meta::ObjectMeta>();
    b.plain::<k8s_openapi::apimachinery::pkg::runtime::RawExtension>();
}

/// The definition of a list kind whose items are `item`.
fn list_definition(item: &str, list_kind: &str) -> Value {
    let item_kind = item.rsplit('.').next().unwrap_or(item);
    json!({
        "description": format!("{list_kind} is a list of {item_kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("The {item_kind} objects of the list."),
                "type": "array",
                "items": { "$ref": format!("{REF_PREFIX}{item}") },
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "$ref": format!("{REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
        },
        "required": ["items"],
    })
}

/// The definition of a watch event (k8s-openapi's `WatchEvent` is generic and has no schema).
fn watch_event_definition() -> Value {
    json!({
        "description": "Event represents a single event to a watched resource.",
        "type": "object",
        "properties": {
            "object": {
                "$ref": format!("{REF_PREFIX}{RAW_EXTENSION}"),
                "description": "Object is: * If Type is Added or Modified: the new state of the object. * If Type is Deleted: the state of the object immediately before deletion. * If Type is Error: *Status is recommended; other types may make sense depending on context.",
            },
            "type": { "type": "string" },
        },
        "required": ["type", "object"],
    })
}

/// Rewrites references that carry siblings into the `allOf` form (recursively).
fn normalise(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.len() > 1
                && let Some(Value::String(reference)) = map.get("$ref")
            {
                let reference = reference.clone();
                map.shift_remove("$ref");
                let mut wrapped = Map::new();
                wrapped.insert("allOf".into(), json!([{ "$ref": reference }]));
                wrapped.extend(std::mem::take(map));
                *map = wrapped;
            }
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Gives IntOrString, Quantity and JSON upstream's v3 shapes.
fn special_types(definitions: &mut Map<String, Value>) {
    let description = |definitions: &Map<String, Value>, name: &str| {
        definitions
            .get(name)
            .and_then(|d| d.get("description"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let int_or_string = json!({
        "description": description(definitions, INT_OR_STRING),
        "format": "int-or-string",
        "oneOf": [{ "type": "integer" }, { "type": "string" }],
    });
    definitions.insert(INT_OR_STRING.to_owned(), int_or_string);
    let quantity = json!({
        "description": description(definitions, QUANTITY),
        "oneOf": [{ "type": "string" }, { "type": "number" }],
    });
    definitions.insert(QUANTITY.to_owned(), quantity);
    if let Some(Value::Object(json_value)) = definitions.get_mut(JSON_VALUE) {
        json_value.shift_remove("type");
    }
}
