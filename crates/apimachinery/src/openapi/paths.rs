//! The REST operations of a kind, in a neutral form that the v3 and v2 renderers share.

use crate::kinds::{GroupVersionKind, KindInfo};
use crate::schema::Schemas;

/// Definition names the operations refer to.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(super) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(super) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

/// The media types of PATCH bodies; strategic merge patch only for built-in kinds.
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// A parameter (path or query).
#[derive(Clone, Debug)]
pub(super) struct Param {
    pub name: &'static str,
    pub location: &'static str,
    pub ty: &'static str,
    pub description: &'static str,
    pub required: bool,
}

/// An operation's request body.
#[derive(Clone, Debug)]
pub(super) struct Body {
    /// Definition name of the body's schema.
    pub schema: String,
    /// Media types accepted.
    pub media_types: Vec<&'static str>,
    pub required: bool,
}

/// One operation on a path.
#[derive(Clone, Debug)]
pub(super) struct Operation {
    /// Lower-case HTTP method.
    pub method: &'static str,
    pub operation_id: String,
    pub description: String,
    pub action: &'static str,
    pub gvk: GroupVersionKind,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    /// (status code, description, definition name of the response schema).
    pub responses: Vec<(u16, &'static str, Option<String>)>,
    /// True for watch operations (streamed responses).
    pub watch: bool,
}

/// A path with its operations.
#[derive(Clone, Debug)]
pub(super) struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description,
        required: false,
    }
}

const fn path_param(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "path",
        ty: "string",
        description,
        required: true,
    }
}

const PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed.",
);
const NAMESPACE: Param = path_param(
    "namespace",
    "object name and auth scope, such as for teams and projects",
);
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. Valid values are: All (process every stage of the request without persisting it).",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "A name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "How the server handles unknown or duplicate fields in the request body: Ignore (drop them), Warn (drop them and send a warning header per field; the default) or Strict (fail the request with BadRequest).",
);
const FORCE: Param = query(
    "force",
    "boolean",
    "Force apply requests to take ownership of conflicting fields. Must be unset for non-apply patch requests.",
);
const LIST_PARAMS: &[Param] = &[
    query(
        "allowWatchBookmarks",
        "boolean",
        "Requests watch events of type BOOKMARK; servers may ignore it.",
    ),
    query(
        "continue",
        "string",
        "The continue token returned by a previous paged list call, to fetch the next page.",
    ),
    query(
        "fieldSelector",
        "string",
        "A selector restricting the returned objects by their fields.",
    ),
    query(
        "labelSelector",
        "string",
        "A selector restricting the returned objects by their labels.",
    ),
    query(
        "limit",
        "integer",
        "The maximum number of objects to return in one page.",
    ),
    query(
        "resourceVersion",
        "string",
        "Constrains which resource versions the request may be served from.",
    ),
    query(
        "resourceVersionMatch",
        "string",
        "How resourceVersion is applied to list calls: Exact or NotOlderThan.",
    ),
    query(
        "sendInitialEvents",
        "boolean",
        "With watch=true, starts the stream with synthetic events for the current state.",
    ),
    query(
        "timeoutSeconds",
        "integer",
        "Timeout for the list or watch call, regardless of activity.",
    ),
    query(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of events.",
    ),
];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    query(
        "gracePeriodSeconds",
        "integer",
        "The duration in seconds before the object should be deleted.",
    ),
    query(
        "ignoreStoreReadErrorWithClusterBreakingPotential",
        "boolean",
        "Deletes a corrupt object that cannot be read from storage; use with care.",
    ),
    query(
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy. Orphans the dependent objects when true.",
    ),
    query(
        "propagationPolicy",
        "string",
        "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
    ),
];

/// Turns an API group into the camel-case prefix used in operation ids: `apps` → `Apps`,
/// `rbac.authorization.k8s.io` → `RbacAuthorization`, core → `Core`.
pub(super) fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_owned();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed.split(['.', '-']).map(capitalise).collect()
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The URL prefix of a group version: `/api/v1` or `/apis/<group>/<version>`.
pub(super) fn gv_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// True when the kind's schema is a built-in one (strategic merge patch applies).
fn is_builtin_schema(name: &str) -> bool {
    name.starts_with("io.k8s.")
}

/// The list definition name of a kind's schema: `…Deployment` → `…DeploymentList`.
pub(super) fn list_schema_name(kind: &KindInfo) -> Option<String> {
    let item = kind.schema_name.as_deref()?;
    let prefix = item.strip_suffix(kind.kind.as_str())?;
    Some(format!("{prefix}{}", kind.list_kind))
}

/// All paths of one kind, in a stable order.
pub(super) fn kind_paths(schemas: &Schemas, kind: &KindInfo) -> Vec<PathItem> {
    let Some(schema) = kind.schema_name.clone() else {
        return Vec::new();
    };
    let has = |verb: &str| kind.verbs.iter().any(|v| v == verb);
    let gvk = kind.gvk();
    let ns = if kind.namespaced { "Namespaced" } else { "" };
    let stem = format!("{}{}", group_camel(&kind.group), capitalise(&kind.version));
    let prefix = gv_prefix(&kind.group, &kind.version);
    let collection = if kind.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{prefix}/{}", kind.plural)
    };
    let scope_params = || {
        let mut params = Vec::new();
        if kind.namespaced {
            params.push(NAMESPACE);
        }
        params.push(PRETTY);
        params
    };
    let list_schema = list_schema_name(kind).filter(|l| schemas.definition(l).is_some());
    let op = |method, id: String, action, description: String| Operation {
        method,
        operation_id: id,
        description,
        action,
        gvk: gvk.clone(),
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
        watch: false,
    };
    let mut items = Vec::new();

    // The collection: list, create, deletecollection.
    let mut collection_ops = Vec::new();
    if has("list") {
        let mut list = op(
            "get",
            format!("list{stem}{ns}{}", kind.kind),
            "list",
            format!("list or watch objects of kind {}", kind.kind),
        );
        list.params.extend_from_slice(LIST_PARAMS);
        list.responses.push((200, "OK", list_schema.clone()));
        collection_ops.push(list);
    }
    if has("create") {
        let mut create = op(
            "post",
            format!("create{stem}{ns}{}", kind.kind),
            "post",
            format!("create a {}", kind.kind),
        );
        create
            .params
            .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
        create.body = Some(Body {
            schema: schema.clone(),
            media_types: vec!["*/*"],
            required: true,
        });
        create.responses = vec![
            (200, "OK", Some(schema.clone())),
            (201, "Created", Some(schema.clone())),
            (202, "Accepted", Some(schema.clone())),
        ];
        collection_ops.push(create);
    }
    if has("deletecollection") {
        let mut delete = op(
            "delete",
            format!("delete{stem}Collection{ns}{}", kind.kind),
            "deletecollection",
            format!("delete collection of {}", kind.kind),
        );
        delete.params.extend_from_slice(DELETE_PARAMS);
        delete.params.extend(
            LIST_PARAMS
                .iter()
                .filter(|p| !matches!(p.name, "allowWatchBookmarks" | "watch"))
                .cloned(),
        );
        delete.params.sort_by_key(|p| p.name);
        delete.body = Some(Body {
            schema: DELETE_OPTIONS.to_owned(),
            media_types: vec!["*/*"],
            required: false,
        });
        delete.responses.push((200, "OK", Some(STATUS.to_owned())));
        collection_ops.push(delete);
    }
    if !collection_ops.is_empty() {
        items.push(PathItem {
            path: collection.clone(),
            params: scope_params(),
            operations: collection_ops,
        });
    }

    // The item: read, replace, patch, delete.
    let mut item_ops = Vec::new();
    if has("get") {
        let mut read = op(
            "get",
            format!("read{stem}{ns}{}", kind.kind),
            "get",
            format!("read the specified {}", kind.kind),
        );
        read.responses.push((200, "OK", Some(schema.clone())));
        item_ops.push(read);
    }
    if has("update") {
        item_ops.push(replace_op(
            &op,
            format!("replace{stem}{ns}{}", kind.kind),
            &schema,
            &kind.kind,
        ));
    }
    if has("patch") {
        item_ops.push(patch_op(
            &op,
            format!("patch{stem}{ns}{}", kind.kind),
            &schema,
            &kind.kind,
        ));
    }
    if has("delete") {
        let mut delete = op(
            "delete",
            format!("delete{stem}{ns}{}", kind.kind),
            "delete",
            format!("delete a {}", kind.kind),
        );
        delete.params.extend_from_slice(DELETE_PARAMS);
        delete.body = Some(Body {
            schema: DELETE_OPTIONS.to_owned(),
            media_types: vec!["*/*"],
            required: false,
        });
        delete.responses = vec![
            (200, "OK", Some(STATUS.to_owned())),
            (202, "Accepted", Some(STATUS.to_owned())),
        ];
        item_ops.push(delete);
    }
    let mut item_params = vec![path_param("name", "name of the object")];
    item_params.extend(scope_params());
    if !item_ops.is_empty() {
        items.push(PathItem {
            path: format!("{collection}/{{name}}"),
            params: item_params.clone(),
            operations: item_ops,
        });
    }

    // Subresources with a known response schema (status, scale, eviction, ...).
    for sub in &kind.subresources {
        let sub_schema = if sub.response_kind == gvk {
            Some(schema.clone())
        } else {
            schemas.find_by_gvk(&sub.response_kind).map(str::to_owned)
        };
        let Some(sub_schema) = sub_schema else {
            continue;
        };
        let sub_kind = format!("{}{}", kind.kind, capitalise(&sub.name));
        let sub_has = |verb: &str| sub.verbs.iter().any(|v| v == verb);
        let sub_op = |method, id: String, action, description: String| Operation {
            gvk: sub.response_kind.clone(),
            ..op(method, id, action, description)
        };
        let mut ops = Vec::new();
        if sub_has("get") {
            let mut read = sub_op(
                "get",
                format!("read{stem}{ns}{sub_kind}"),
                "get",
                format!("read {} of the specified {}", sub.name, kind.kind),
            );
            read.responses.push((200, "OK", Some(sub_schema.clone())));
            ops.push(read);
        }
        if sub_has("create") {
            let mut create = sub_op(
                "post",
                format!("create{stem}{ns}{sub_kind}"),
                "post",
                format!("create {} of a {}", sub.name, kind.kind),
            );
            create
                .params
                .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
            create.body = Some(Body {
                schema: sub_schema.clone(),
                media_types: vec!["*/*"],
                required: true,
            });
            create.responses = vec![
                (200, "OK", Some(sub_schema.clone())),
                (201, "Created", Some(sub_schema.clone())),
                (202, "Accepted", Some(sub_schema.clone())),
            ];
            ops.push(create);
        }
        if sub_has("update") {
            let mut replace = replace_op(
                &op,
                format!("replace{stem}{ns}{sub_kind}"),
                &sub_schema,
                &kind.kind,
            );
            replace.gvk = sub.response_kind.clone();
            ops.push(replace);
        }
        if sub_has("patch") {
            let mut patch = patch_op(
                &op,
                format!("patch{stem}{ns}{sub_kind}"),
                &sub_schema,
                &kind.kind,
            );
            patch.gvk = sub.response_kind.clone();
            ops.push(patch);
        }
        if !ops.is_empty() {
            items.push(PathItem {
                path: format!("{collection}/{{name}}/{}", sub.name),
                params: item_params.clone(),
                operations: ops,
            });
        }
    }

    // Watch and all-namespaces paths.
    if has("watch") {
        let watch = |id: String, action, description: String| {
            let mut watch = op("get", id, action, description);
            watch.params.extend_from_slice(LIST_PARAMS);
            watch
                .responses
                .push((200, "OK", Some(WATCH_EVENT.to_owned())));
            watch.watch = true;
            watch
        };
        let watch_prefix = format!("{prefix}/watch");
        let watch_collection = collection.replacen(&prefix, &watch_prefix, 1);
        let list_watch = watch(
            format!("watch{stem}{ns}{}List", kind.kind),
            "watchlist",
            format!("watch changes to a list of {}", kind.kind),
        );
        items.push(PathItem {
            path: watch_collection.clone(),
            params: scope_params(),
            operations: vec![list_watch],
        });
        if has("get") {
            let one = watch(
                format!("watch{stem}{ns}{}", kind.kind),
                "watch",
                format!("watch changes to an object of kind {}", kind.kind),
            );
            items.push(PathItem {
                path: format!("{watch_collection}/{{name}}"),
                params: item_params.clone(),
                operations: vec![one],
            });
        }
        if kind.namespaced {
            let all = watch(
                format!("watch{stem}{}ListForAllNamespaces", kind.kind),
                "watchlist",
                format!("watch changes to a list of {}", kind.kind),
            );
            items.push(PathItem {
                path: format!("{watch_prefix}/{}", kind.plural),
                params: vec![PRETTY],
                operations: vec![all],
            });
        }
    }
    if kind.namespaced && has("list") {
        let mut list = op(
            "get",
            format!("list{stem}{}ForAllNamespaces", kind.kind),
            "list",
            format!("list or watch objects of kind {}", kind.kind),
        );
        list.params.extend_from_slice(LIST_PARAMS);
        list.responses.push((200, "OK", list_schema));
        items.push(PathItem {
            path: format!("{prefix}/{}", kind.plural),
            params: vec![PRETTY],
            operations: vec![list],
        });
    }
    items
}

fn replace_op(
    op: &impl Fn(&'static str, String, &'static str, String) -> Operation,
    id: String,
    schema: &str,
    kind: &str,
) -> Operation {
    let mut replace = op("put", id, "put", format!("replace the specified {kind}"));
    replace
        .params
        .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
    replace.body = Some(Body {
        schema: schema.to_owned(),
        media_types: vec!["*/*"],
        required: true,
    });
    replace.responses = vec![
        (200, "OK", Some(schema.to_owned())),
        (201, "Created", Some(schema.to_owned())),
    ];
    replace
}

fn patch_op(
    op: &impl Fn(&'static str, String, &'static str, String) -> Operation,
    id: String,
    schema: &str,
    kind: &str,
) -> Operation {
    let mut patch = op(
        "patch",
        id,
        "patch",
        format!("partially update the specified {kind}"),
    );
    patch
        .params
        .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE]);
    let media_types = PATCH_TYPES
        .iter()
        .copied()
        .filter(|t| is_builtin_schema(schema) || *t != "application/strategic-merge-patch+json")
        .collect();
    patch.body = Some(Body {
        schema: PATCH.to_owned(),
        media_types,
        required: true,
    });
    patch.responses = vec![
        (200, "OK", Some(schema.to_owned())),
        (201, "Created", Some(schema.to_owned())),
    ];
    patch
}
