//! The HTTP front: routes a request to its control plane and handler, decodes bodies,
//! negotiates the response form and turns every error into a `Status`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use apimachinery::kinds::{GroupVersion, KindInfo};
use apimachinery::status::ApiError;
use apimachinery::table::{IncludeObject, TableOptions};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use serde_json::Value;
use store::Backend;

use crate::authn::Identity;
use crate::authz;
use crate::control_plane::{ControlPlane, CustomKind};
use crate::crds;
use crate::discovery;
use crate::negotiate::{self, BodyFormat, Output};
use crate::query::Query;
use crate::request::{self, ResourcePath, Route};
use crate::resource::{Reply, Scope};
use crate::reviews;
use crate::watch;

/// Response body type: whole documents and watch streams alike.
pub type Body = BoxBody<Bytes, Infallible>;

/// Namespaces every cluster has from the start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Largest accepted request body, as upstream's 3 MiB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The API server: a map of control planes over one datastore.
pub struct ApiServer {
    backend: Arc<dyn Backend>,
    planes: RwLock<HashMap<String, Arc<ControlPlane>>>,
    service_network: crate::service_alloc::ServiceNetwork,
    audit: std::sync::OnceLock<crate::audit::AuditLog>,
}

/// The client's address, put in a request's extensions by the HTTPS listener.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl ApiServer {
    /// A server with the default cluster on `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_service_network(backend, Default::default())
    }

    /// A server whose clusters give Services addresses from `service_network`.
    pub fn with_service_network(
        backend: Arc<dyn Backend>,
        service_network: crate::service_alloc::ServiceNetwork,
    ) -> Self {
        let server = Self {
            audit: std::sync::OnceLock::new(),
            backend,
            planes: RwLock::new(HashMap::new()),
            service_network,
        };
        server.add_cluster(request::DEFAULT_CLUSTER);
        server
    }

    /// Adds (or returns) the control plane of cluster `id`.
    pub fn add_cluster(&self, id: &str) -> Arc<ControlPlane> {
        let mut planes = self.planes.write().unwrap_or_else(|e| e.into_inner());
        planes
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(ControlPlane::with_service_network(
                    id,
                    self.backend.clone(),
                    self.service_network.clone(),
                ))
            })
            .clone()
    }

    /// Creates what every cluster has from the start (the system namespaces, the system
    /// priority classes, the default `local-path` StorageClass and the default RBAC
    /// policy) through the normal request pipeline; existing namespaces and classes are
    /// left alone, the default policy is reconciled.
    pub async fn bootstrap(&self, cluster: &str) -> Result<(), ApiError> {
        let prefix = if cluster == request::DEFAULT_CLUSTER {
            String::new()
        } else {
            format!("/clusters/{cluster}")
        };
        let namespaces = SYSTEM_NAMESPACES.iter().map(|ns| {
            (
                format!("{prefix}/api/v1/namespaces"),
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
        });
        let classes = crate::priority::system_class_objects()
            .into_iter()
            .map(|class| {
                (
                    format!("{prefix}/apis/scheduling.k8s.io/v1/priorityclasses"),
                    class,
                )
            });
        let storage_classes = std::iter::once((
            format!("{prefix}/apis/storage.k8s.io/v1/storageclasses"),
            crate::storage_class::local_path_class(),
        ));
        for (path, body) in namespaces
            .chain(classes)
            .chain(storage_classes)
            .collect::<Vec<_>>()
        {
            let req = Request::post(&path)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let resp = self.handle(req, Some(Identity::loopback())).await;
            let code = resp.status().as_u16();
            if code != 201 && code != 409 {
                let body = BodyExt::collect(resp.into_body())
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                return Err(ApiError::internal(format!(
                    "bootstrap: POST {path}: {code} {}",
                    String::from_utf8_lossy(&body)
                )));
            }
        }
        // The default RBAC policy; once it is in place (each write waits until the
        // authorizer sees it), system:masters is allowed only through its binding.
        crate::rbac::bootstrap::reconcile(self, &prefix).await?;
        if let Some(cp) = self.cluster(cluster) {
            cp.rbac().enforce();
            // Service address repair, the `kubernetes` Service and its reconcile loop.
            crate::service_alloc::bootstrap(&cp).await?;
        }
        Ok(())
    }

    /// Loads every cluster's CRDs from the store, so their kinds are served after a restart.
    pub async fn load_custom_kinds(&self) -> Result<(), ApiError> {
        let planes: Vec<Arc<ControlPlane>> = self
            .planes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for cp in planes {
            crds::reload(&cp).await?;
            // Finish namespace deletions a previous run did not complete.
            let Some(ns_kind) = cp.registry().by_kind("", "Namespace") else {
                continue;
            };
            let range = cp
                .store
                .backend()
                .range(store::RangeRequest {
                    prefix: cp.store.prefix(&ns_kind, None),
                    ..Default::default()
                })
                .await
                .map_err(crate::storage::store_error)?;
            for kv in &range.kvs {
                let ns = crate::storage::decode(kv)?;
                if ns.pointer("/metadata/deletionTimestamp").is_some()
                    && let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str)
                {
                    crate::namespaces::spawn_finalizer(cp.clone(), name.to_owned());
                }
            }
        }
        Ok(())
    }

    /// The control plane of cluster `id`, if served.
    pub fn cluster(&self, id: &str) -> Option<Arc<ControlPlane>> {
        self.planes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Answers one request for an authenticated (or not: `None`) caller.
    pub async fn handle<B>(&self, req: Request<B>, identity: Option<Identity>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let received = jiff::Timestamp::now();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let source_ip = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let impersonated = self
            .audit
            .get()
            .and_then(|_| impersonation_headers(req.headers()));
        let authenticated = self
            .authenticate(req.uri().path(), req.headers(), identity)
            .await;
        let response = match &authenticated {
            Err(e) => error_response(e),
            Ok(identity) => match self.route(req, identity).await {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            },
        };
        tracing::debug!(%method, %uri, code = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        if let Some(audit) = self.audit.get() {
            let cluster = request::parse(uri.path())
                .map(|t| t.cluster)
                .unwrap_or_else(|| request::DEFAULT_CLUSTER.to_owned());
            audit.record(&crate::audit::Record {
                cluster: &cluster,
                user: authenticated.as_ref().ok(),
                impersonated,
                method: &method,
                uri: &uri,
                source_ip,
                code: response.status().as_u16(),
                received,
                latency: started.elapsed(),
            });
        }
        response
    }

    /// Records every request from now on in `log` (once; later calls are ignored).
    pub fn set_audit_log(&self, log: crate::audit::AuditLog) {
        let _ = self.audit.set(log);
    }

    /// Who makes `req`: the verified certificate's identity, else the bearer token's as
    /// the addressed cluster knows it.
    async fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
        certificate: Option<Identity>,
    ) -> Result<Identity, ApiError> {
        if let Some(identity) = certificate {
            return Ok(identity);
        }
        let cp = request::parse(path)
            .and_then(|target| self.cluster(&target.cluster))
            .ok_or_else(ApiError::unauthorized)?;
        crate::authn::authenticate(&cp, headers, None).await
    }

    async fn route<B>(
        &self,
        req: Request<B>,
        identity: &Identity,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let target = request::parse(req.uri().path()).ok_or_else(ApiError::no_route)?;
        let cp = self
            .cluster(&target.cluster)
            .ok_or_else(ApiError::no_route)?;
        let query = Query::parse(req.uri().query());
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let method = req.method().clone();
        let attrs = request_attributes(
            &target.route,
            &method,
            &query,
            req.uri().path().strip_prefix(&target.prefix).unwrap_or("/"),
        );
        // Impersonation headers are checked and applied first, as upstream's filter chain.
        let mut req = req;
        let impersonated = authz::impersonate(&cp, identity, req.headers_mut()).await?;
        let identity = impersonated.as_ref().unwrap_or(identity);
        if target.route == Route::NodeTunnel {
            return node_tunnel(cp, req, identity);
        }
        let decision = authz::authorize(&cp, identity, &attrs).await;
        if !decision.allowed {
            return Err(authz::forbidden(identity, &attrs, &decision));
        }
        if method != Method::GET
            && !matches!(target.route, Route::Resource(_) | Route::SigningKeys(_))
        {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported here"
            )));
        }
        match target.route {
            Route::Version => Ok(json_response(200, &discovery::version(), &[])),
            Route::Health => Ok(text_response(200, "ok")),
            Route::LegacyApi => match negotiate::choose(accept.as_deref(), false, true) {
                Output::AggregatedDiscovery => Ok(aggregated_response(&discovery::aggregated(
                    &cp.registry(),
                    true,
                ))),
                _ => Ok(json_response(200, &discovery::legacy_api_versions(), &[])),
            },
            Route::Groups => match negotiate::choose(accept.as_deref(), false, true) {
                Output::AggregatedDiscovery => Ok(aggregated_response(&discovery::aggregated(
                    &cp.registry(),
                    false,
                ))),
                _ => Ok(json_response(
                    200,
                    &discovery::legacy_group_list(&cp.registry()),
                    &[],
                )),
            },
            Route::Group(g) => {
                let doc =
                    discovery::legacy_group(&cp.registry(), &g).ok_or_else(ApiError::no_route)?;
                Ok(json_response(200, &doc, &[]))
            }
            Route::GroupVersion(g, v) => {
                let doc = discovery::resource_list(&cp.registry(), &g, &v)
                    .ok_or_else(ApiError::no_route)?;
                Ok(json_response(200, &doc, &[]))
            }
            Route::OpenApiV3 => Ok(crate::openapi::root(&cp, &target.prefix)),
            Route::OpenApiV3Doc(g, v) => {
                crate::openapi::group_version(&cp, &GroupVersion::new(&g, &v), req.headers())
            }
            Route::OpenApiV2 => crate::openapi::v2(&cp, req.headers()),
            Route::OidcConfiguration => Ok(json_response(200, &cp.tokens().discovery(), &[])),
            Route::Jwks => Ok(json_response(200, &cp.tokens().jwks().await?, &[])),
            Route::SigningKeys(kid) => signing_keys(&cp, &method, kid.as_deref()).await,
            Route::NodeTunnel => Err(ApiError::no_route()),
            Route::Resource(path) if is_pod_stream(&path) => {
                crate::pod_streams::serve(
                    &cp,
                    req,
                    path.namespace.as_deref().unwrap_or_default(),
                    path.name.as_deref().unwrap_or_default(),
                    path.subresource.as_deref().unwrap_or_default(),
                    &query,
                )
                .await
            }
            Route::Resource(path) => {
                let rbac_write = path.group == crate::rbac::GROUP && method != Method::GET;
                let response = if crate::node_authorizer::node_name(identity).is_some() {
                    // NodeRestriction needs the object a node's write is about.
                    let (parts, body) = req.into_parts();
                    let body = read_body(body).await?;
                    let object = node_write_object(&cp, &attrs, &body).await?;
                    crate::node_authorizer::admit(identity, &attrs, object.as_ref())?;
                    let req = Request::from_parts(parts, Full::new(body));
                    let serving = self.resource(&cp, req, identity, path, query, accept.as_deref());
                    authz::acting_as(identity.clone(), serving).await?
                } else {
                    let serving = self.resource(&cp, req, identity, path, query, accept.as_deref());
                    authz::acting_as(identity.clone(), serving).await?
                };
                if rbac_write {
                    // The writer may use what it granted as soon as it has the answer.
                    return Ok(crate::rbac::settle(&cp, response).await);
                }
                Ok(response)
            }
        }
    }

    async fn resource<B>(
        &self,
        cp: &Arc<ControlPlane>,
        req: Request<B>,
        identity: &Identity,
        path: ResourcePath,
        query: Query,
        accept: Option<&str>,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let kind = cp
            .registry()
            .lookup(&path.group, &path.version, &path.resource)
            .ok_or_else(ApiError::no_route)?;
        if path.namespace.is_some() && !kind.namespaced {
            return Err(ApiError::no_route());
        }
        if let Some(sub) = &path.subresource
            && kind.subresource(sub).is_none()
        {
            return Err(ApiError::no_route());
        }
        let kind_name = kind.kind.clone();
        let api_version = kind.api_version();
        let mut scope = Scope {
            cp,
            kind: kind.clone(),
            namespace: path.namespace.clone(),
            name: path.name.clone(),
            subresource: path.subresource.clone(),
            duplicates: Vec::new(),
            custom: cp.registry().custom(&kind),
            manager: field_manager(&query, req.headers()),
        };
        let custom = scope.custom.clone();
        let kind_for_present = kind.clone();
        let present = move |obj: Value| -> Value {
            let mut obj = crate::conversion::from_storage(&kind_for_present, obj);
            // Custom resources are served in every version (conversion `None`): only the
            // apiVersion differs.
            if custom.is_some()
                && obj.get("kind").and_then(Value::as_str) == Some(kind_name.as_str())
            {
                obj["apiVersion"] = Value::String(api_version.clone());
            }
            obj
        };
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(req.into_body()).await?;
        if matches!(method, Method::POST | Method::PUT)
            && negotiate::body_format(content_type.as_deref()) == Some(BodyFormat::Json)
        {
            scope.duplicates = crate::duplicates::duplicate_fields(&body);
        }
        let output = negotiate::choose(accept, true, false);
        if output == Output::Unacceptable {
            return Err(ApiError::not_acceptable(
                "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
            ));
        }
        if reviews::is_review(&kind) {
            if method != Method::POST || path.name.is_some() {
                return Err(ApiError::method_not_allowed(format!(
                    "{} only supports create",
                    kind.qualified_resource()
                )));
            }
            let review = decode_body(&body, content_type.as_deref())?;
            let answer =
                reviews::answer(cp, &kind, identity, path.namespace.as_deref(), review).await?;
            return Ok(json_response(201, &answer, &[]));
        }
        let binding_request = (kind.group.is_empty() && kind.kind == "Binding")
            || path.subresource.as_deref() == Some("binding");
        if binding_request {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed("bindings only support create"));
            }
            let binding = decode_body(&body, content_type.as_deref())?;
            let reply = scope.bind(&query, binding).await?;
            return Ok(json_response(reply.code, &reply.body, &reply.warnings));
        }
        if path.subresource.as_deref() == Some("eviction")
            && kind.group.is_empty()
            && kind.kind == "Pod"
        {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "evictions only support create",
                ));
            }
            let eviction = decode_body(&body, content_type.as_deref())?;
            let reply = crate::eviction::evict(&scope, &query, eviction).await?;
            return Ok(json_response(reply.code, &reply.body, &reply.warnings));
        }
        if path.subresource.as_deref() == Some("token")
            && kind.group.is_empty()
            && kind.kind == "ServiceAccount"
        {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "token requests only support create",
                ));
            }
            let request = decode_body(&body, content_type.as_deref())?;
            let dry_run = crate::resource::is_dry_run_query(&query);
            let reply = crate::authn::service_account::token_request(
                cp,
                path.namespace.as_deref().unwrap_or_default(),
                path.name.as_deref().unwrap_or_default(),
                request,
                dry_run,
            )
            .await?;
            return Ok(json_response(201, &reply, &[]));
        }
        let table = output == Output::Table;
        let metadata_only = output == Output::Metadata;
        let include = match query.get("includeObject") {
            None => IncludeObject::Metadata,
            Some(v) => IncludeObject::from_param(v)
                .ok_or_else(|| ApiError::bad_request(format!("invalid includeObject {v:?}")))?,
        };
        match path.subresource.as_deref() {
            None | Some("status" | "approval") => {}
            Some("scale") => {
                let reply = match method {
                    Method::GET => Reply {
                        code: 200,
                        body: scope.get_scale().await?,
                        warnings: vec![],
                    },
                    Method::PUT => scope.update_scale(&query, &body, None).await?,
                    Method::PATCH => {
                        let format = patch_format(content_type.as_deref())?;
                        scope.update_scale(&query, &body, Some(format)).await?
                    }
                    m => {
                        return Err(ApiError::method_not_allowed(format!(
                            "{m} is not supported on scale"
                        )));
                    }
                };
                return Ok(json_response(reply.code, &reply.body, &reply.warnings));
            }
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "the {other} subresource of {} is not served by this server yet",
                    kind.qualified_resource()
                )));
            }
        }
        if !verb_allowed(
            &kind,
            &method,
            path.name.is_some(),
            path.subresource.as_deref(),
        ) {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {}",
                kind.qualified_resource()
            )));
        }
        let deleting = method == Method::DELETE;
        let reply = match (method, path.name.is_some()) {
            (Method::GET, true) => {
                let obj = present(scope.get().await?);
                if metadata_only {
                    return Ok(json_response(200, &partial_object_metadata(&obj), &[]));
                }
                if table {
                    let rv = obj
                        .get("metadata")
                        .and_then(|m| m.get("resourceVersion"))
                        .and_then(Value::as_str);
                    let opts = TableOptions {
                        include_object: include,
                        resource_version: rv.map(str::to_owned),
                        ..Default::default()
                    };
                    return Ok(json_response(
                        200,
                        &render_table(cp, &kind, &[obj], &opts),
                        &[],
                    ));
                }
                Reply {
                    code: 200,
                    body: obj,
                    warnings: vec![],
                }
            }
            (Method::GET, false) if query.flag("watch") => {
                let kind_for_render = kind.clone();
                let custom_for_render = cp.registry().custom(&kind);
                let present_for_table = present.clone();
                let present = present.clone();
                let form: Arc<str> = format!(
                    "{}/{}{}",
                    kind.api_version(),
                    kind.plural,
                    if metadata_only { "/metadata" } else { "" }
                )
                .into();
                let render = if table {
                    watch::Render {
                        form: None,
                        render: Box::new(move |obj, first| {
                            let opts = TableOptions {
                                include_object: include,
                                omit_column_definitions: !first,
                                resource_version: obj
                                    .pointer("/metadata/resourceVersion")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned),
                                ..Default::default()
                            };
                            let shown = present_for_table(obj.clone());
                            table_for(
                                &kind_for_render,
                                custom_for_render.as_deref(),
                                std::slice::from_ref(&shown),
                                &opts,
                            )
                        }),
                    }
                } else if metadata_only {
                    watch::Render {
                        form: Some(form),
                        render: Box::new(move |obj, _| {
                            partial_object_metadata(&present(obj.clone()))
                        }),
                    }
                } else {
                    watch::Render {
                        form: Some(form),
                        render: Box::new(move |obj, _| present(obj.clone())),
                    }
                };
                let rx = watch::start(&scope, &query, render).await?;
                return Ok(stream_response(rx));
            }
            (Method::GET, false) => {
                let (items, meta) = scope.list(&query).await?;
                if !metadata_only && !table && crate::conversion::served_as_stored(&kind) {
                    // Encoded straight from the shared items, as they are served.
                    let served_version = kind.api_version();
                    let list = SharedList {
                        kind: &kind.list_kind,
                        api_version: &served_version,
                        metadata: &meta,
                        items: &items,
                        item_api_version: scope
                            .custom
                            .is_some()
                            .then_some((kind.kind.as_str(), served_version.as_str())),
                    };
                    return Ok(json_response_of(200, &list));
                }
                let items: Vec<Value> = items
                    .into_iter()
                    .map(|item| present(Arc::unwrap_or_clone(item)))
                    .collect();
                if metadata_only {
                    let items: Vec<Value> = items.iter().map(partial_object_metadata).collect();
                    let list = crate::resource::list_value(
                        "PartialObjectMetadataList",
                        "meta.k8s.io/v1",
                        meta,
                        items,
                    );
                    return Ok(json_response(200, &list, &[]));
                }
                if table {
                    let opts = TableOptions {
                        include_object: include,
                        resource_version: meta["resourceVersion"].as_str().map(str::to_owned),
                        continue_token: meta
                            .get("continue")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        ..Default::default()
                    };
                    return Ok(json_response(
                        200,
                        &render_table(cp, &kind, &items, &opts),
                        &[],
                    ));
                }
                Reply {
                    code: 200,
                    body: scope.list_object(items, meta),
                    warnings: vec![],
                }
            }
            (Method::POST, false) => {
                scope
                    .create(&query, decode_body(&body, content_type.as_deref())?)
                    .await?
            }
            (Method::PUT, true) => {
                scope
                    .update(&query, decode_body(&body, content_type.as_deref())?)
                    .await?
            }
            (Method::PATCH, true) => {
                scope
                    .patch(&query, patch_format(content_type.as_deref())?, &body)
                    .await?
            }
            (Method::DELETE, true) if crds::is_crd(&kind) => {
                // A CRD takes its objects with it.
                let crd = scope.get().await?;
                let reply = scope.delete(&query, &body).await?;
                if !crate::resource::is_dry_run_delete(&query, &body) {
                    crds::delete_instances(cp, &crd).await?;
                }
                reply
            }
            (Method::DELETE, true) => {
                if crate::namespaces::is_namespace(&kind) {
                    crate::namespaces::check_deletable(path.name.as_deref().unwrap_or(""))?;
                }
                scope.delete(&query, &body).await?
            }
            (Method::DELETE, false) => scope.delete_collection(&query, &body).await?,
            (m, _) => {
                return Err(ApiError::method_not_allowed(format!(
                    "{m} is not supported on this path"
                )));
            }
        };
        if crate::namespaces::is_namespace(&kind)
            && !crate::resource::is_dry_run_query(&query)
            && !(deleting && crate::resource::is_dry_run_delete(&query, &body))
            && reply.body.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
            && let Some(name) = reply.body.pointer("/metadata/name").and_then(Value::as_str)
        {
            crate::namespaces::spawn_finalizer(cp.clone(), name.to_owned());
        }
        if crds::is_crd(&kind) && !crate::resource::is_dry_run_query(&query) {
            // A written CRD is established and served before the answer goes out.
            if reply.code < 300
                && reply.body.get("kind").and_then(Value::as_str)
                    == Some("CustomResourceDefinition")
            {
                let name = reply
                    .body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                crds::establish(cp, &name).await?;
            }
            crds::reload(cp).await?;
            if let Some(name) = reply.body.pointer("/metadata/name").and_then(Value::as_str)
                && reply.body.get("kind").and_then(Value::as_str)
                    == Some("CustomResourceDefinition")
                && let Ok(current) = scope.get_named(name).await
            {
                return Ok(json_response(reply.code, &current, &reply.warnings));
            }
        }
        let body = present(reply.body);
        Ok(json_response(reply.code, &body, &reply.warnings))
    }
}

/// The field manager of a write: `fieldManager`, else the client's program name from its
/// User-Agent, as upstream defaults it.
fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.chars().take(128).collect();
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    agent
        .split('/')
        .next()
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

/// What a request asks to do, for the authorizer.
/// The object a node's write concerns, for NodeRestriction: the new object of a create,
/// the stored pod of a pod update, delete or eviction.
async fn node_write_object(
    cp: &ControlPlane,
    attrs: &authz::Attributes,
    body: &Bytes,
) -> Result<Option<Value>, ApiError> {
    if matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
        return Ok(None);
    }
    if attrs.verb == "create" && attrs.subresource.is_empty() {
        return Ok(serde_json::from_slice(body)
            .ok()
            .or_else(|| serde_yaml::from_slice(body).ok()));
    }
    if attrs.group.is_empty() && attrs.resource == "pods" && !attrs.name.is_empty() {
        let Some(kind) = cp.registry().by_kind("", "Pod") else {
            return Ok(None);
        };
        return cp
            .store
            .get(&cp.store.key(&kind, &attrs.namespace, &attrs.name))
            .await;
    }
    Ok(None)
}

/// `Impersonate-User` and `Impersonate-Group`, for the audit log.
fn impersonation_headers(headers: &HeaderMap) -> Option<(String, Vec<String>)> {
    let user = headers.get("impersonate-user")?.to_str().ok()?.to_owned();
    let groups = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    Some((user, groups))
}

/// The signing-key administration endpoint: GET lists the keys (public parts only), POST
/// adds a new signing key, DELETE `<kid>` retires one.
async fn signing_keys(
    cp: &ControlPlane,
    method: &Method,
    kid: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let keys = cp.tokens().keys();
    match (method, kid) {
        (&Method::GET, None) => {}
        (&Method::POST, None) => {
            keys.rotate().await?;
        }
        (&Method::DELETE, Some(kid)) => keys.retire(kid).await?,
        _ => {
            return Err(ApiError::method_not_allowed(
                "GET lists the keys, POST rotates, DELETE <kid> retires one",
            ));
        }
    }
    let keys = keys.reload().await?;
    let newest = keys.last().map(|k| k.stored.kid.clone());
    let list: Vec<Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "kid": k.stored.kid,
                "created": k.stored.created,
                "signing": Some(&k.stored.kid) == newest.as_ref(),
            })
        })
        .collect();
    Ok(json_response(200, &serde_json::json!({"keys": list}), &[]))
}

/// Whether `path` is a pod subresource the node agent serves (logs, exec, attach,
/// port-forward).
fn is_pod_stream(path: &ResourcePath) -> bool {
    path.group.is_empty()
        && path.resource == "pods"
        && path.name.is_some()
        && path
            .subresource
            .as_deref()
            .is_some_and(|s| crate::pod_streams::SUBRESOURCES.contains(&s))
}

/// Upgrades a node agent's request to its tunnel. Only a node may connect, and only as
/// itself (the tunnel is keyed by the node name of its credentials).
fn node_tunnel<B>(
    cp: Arc<ControlPlane>,
    mut req: Request<B>,
    identity: &Identity,
) -> Result<Response<Body>, ApiError> {
    let Some(node) = crate::node_authorizer::node_name(identity) else {
        return Err(ApiError::forbidden(format!(
            "User {:?} cannot open a node tunnel: only nodes (system:node:<name> in group system:nodes) can",
            identity.user
        )));
    };
    let wanted = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        == Some(crate::node_tunnel::UPGRADE_PROTOCOL);
    if !wanted {
        return Err(ApiError::bad_request(format!(
            "a node tunnel needs Upgrade: {}",
            crate::node_tunnel::UPGRADE_PROTOCOL
        )));
    }
    let node = node.to_owned();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(connection) => cp.tunnels().serve(&node, connection).await,
            Err(e) => tracing::debug!(%node, error = %e, "node tunnel upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, crate::node_tunnel::UPGRADE_PROTOCOL)
        .body(full(Bytes::new()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn request_attributes(
    route: &Route,
    method: &Method,
    query: &Query,
    path: &str,
) -> authz::Attributes {
    match route {
        Route::Resource(p) => {
            let verb = match (method, p.name.is_some()) {
                (&Method::GET, true) => "get",
                (&Method::GET, false) if query.flag("watch") => "watch",
                (&Method::GET, false) => "list",
                (&Method::POST, _) => "create",
                (&Method::PUT, _) => "update",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, true) => "delete",
                (&Method::DELETE, false) => "deletecollection",
                _ => "unknown",
            };
            // Opening a stream into a container is a create, whatever the method
            // (kubectl upgrades a GET to WebSocket): upstream's stricter reading.
            let stream = p.group.is_empty()
                && p.resource == "pods"
                && matches!(
                    p.subresource.as_deref(),
                    Some("exec" | "attach" | "portforward")
                );
            let verb = if stream { "create" } else { verb };
            authz::Attributes {
                verb: verb.to_owned(),
                group: p.group.clone(),
                resource: p.resource.clone(),
                subresource: p.subresource.clone().unwrap_or_default(),
                namespace: p.namespace.clone().unwrap_or_default(),
                name: p.name.clone().unwrap_or_default(),
                path: String::new(),
            }
        }
        _ => authz::Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            },
            ..Default::default()
        },
    }
}

/// The patch type of a PATCH request's Content-Type (415 for anything else).
fn patch_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    negotiate::body_format(content_type)
        .filter(|f| {
            matches!(
                f,
                BodyFormat::JsonPatch
                    | BodyFormat::MergePatch
                    | BodyFormat::StrategicMergePatch
                    | BodyFormat::ApplyPatch
            )
        })
        .ok_or_else(|| ApiError::unsupported_media_type(content_type.unwrap_or("")))
}

/// True if the kind's verbs allow this method on this path.
fn verb_allowed(kind: &KindInfo, method: &Method, named: bool, sub: Option<&str>) -> bool {
    let verb = match (method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return false,
    };
    match sub.and_then(|s| kind.subresource(s)) {
        Some(s) => s.verbs.iter().any(|v| v == verb),
        None => {
            kind.verbs.iter().any(|v| v == verb)
                || (verb == "list" && kind.verbs.iter().any(|v| v == "watch"))
        }
    }
}

/// An object's metadata alone, as a `meta.k8s.io/v1` PartialObjectMetadata.
fn partial_object_metadata(obj: &Value) -> Value {
    serde_json::json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
    })
}

fn render_table(
    cp: &ControlPlane,
    kind: &KindInfo,
    objects: &[Value],
    options: &TableOptions,
) -> Value {
    table_for(
        kind,
        cp.registry().custom(kind).as_deref(),
        objects,
        options,
    )
}

/// A Table of objects: upstream's columns for built-ins, printer columns for custom kinds.
fn table_for(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
    objects: &[Value],
    options: &TableOptions,
) -> Value {
    let now = jiff::Timestamp::now();
    match custom {
        Some(c) => {
            let columns = apimachinery::table::crd_columns(&c.printer_columns);
            apimachinery::table::crd_table(&columns, objects, options, now)
        }
        None => apimachinery::table::table(&kind.group, &kind.kind, objects, options, now),
    }
}

/// Reads a request body, refusing more than [`MAX_BODY_BYTES`] with 413.
async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(MAX_BODY_BYTES))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

/// Decodes a create or update body as its Content-Type says.
pub fn decode_body(body: &[u8], content_type: Option<&str>) -> Result<Value, ApiError> {
    let format = negotiate::body_format(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type.unwrap_or("")))?;
    match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        }),
        BodyFormat::Yaml => {
            let v: serde_yaml::Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })?;
            serde_json::to_value(v).map_err(|e| {
                ApiError::bad_request(format!("the YAML body is not a JSON document: {e}"))
            })
        }
        BodyFormat::Protobuf => apimachinery::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as protobuf: {e}"
            ))
        }),
        _ => Err(ApiError::unsupported_media_type(content_type.unwrap_or(""))),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn base_headers(builder: http::response::Builder) -> http::response::Builder {
    builder
        .header(header::CACHE_CONTROL, "no-cache, private")
        .header("Audit-Id", uuid::Uuid::new_v4().to_string())
}

/// A JSON response with `Warning` headers.
/// A LIST's body over items shared with the watch cache: serializing borrows them, where
/// building a list `Value` would copy every item first.
struct SharedList<'a> {
    kind: &'a str,
    api_version: &'a str,
    metadata: &'a Value,
    items: &'a [Arc<Value>],
    /// For custom resources, served in every version: items of this kind show this
    /// apiVersion instead of the stored one.
    item_api_version: Option<(&'a str, &'a str)>,
}

impl serde::Serialize for SharedList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};

        struct Items<'a>(&'a SharedList<'a>);
        impl serde::Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.items.len()))?;
                for item in self.0.items {
                    match (self.0.item_api_version, item.as_object()) {
                        (Some((kind, version)), Some(fields))
                            if item.get("kind").and_then(Value::as_str) == Some(kind) =>
                        {
                            seq.serialize_element(&WithApiVersion { fields, version })?
                        }
                        _ => seq.serialize_element(item.as_ref())?,
                    }
                }
                seq.end()
            }
        }

        struct WithApiVersion<'a> {
            fields: &'a serde_json::Map<String, Value>,
            version: &'a str,
        }
        impl serde::Serialize for WithApiVersion<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.fields.len()))?;
                for (key, value) in self.fields {
                    if key == "apiVersion" {
                        map.serialize_entry(key, self.version)?;
                    } else {
                        map.serialize_entry(key, value)?;
                    }
                }
                map.end()
            }
        }

        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("kind", self.kind)?;
        map.serialize_entry("apiVersion", self.api_version)?;
        map.serialize_entry("metadata", self.metadata)?;
        map.serialize_entry("items", &Items(self))?;
        map.end()
    }
}

/// A JSON response of any serializable body.
fn json_response_of(code: u16, body: &impl serde::Serialize) -> Response<Body> {
    base_headers(Response::builder().status(code))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_else(|_| internal())
}

pub fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response<Body> {
    let mut builder = base_headers(Response::builder().status(code))
        .header(header::CONTENT_TYPE, "application/json");
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            builder = builder.header(header::WARNING, v);
        }
    }
    builder
        .body(full(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_else(|_| internal())
}

fn aggregated_response(body: &Value) -> Response<Body> {
    base_headers(Response::builder().status(200))
        .header(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)
        .header(header::VARY, "Accept")
        .body(full(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_else(|_| internal())
}

/// A byte response with an explicit content type and optional ETag.
pub fn bytes_response(
    content_type: &str,
    body: Bytes,
    etag: Option<&str>,
    headers: &HeaderMap,
) -> Response<Body> {
    if let Some(tag) = etag {
        let quoted = format!("\"{tag}\"");
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == quoted);
        if matches {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, quoted)
                .body(full(Bytes::new()))
                .unwrap_or_else(|_| internal());
        }
        return Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ETAG, quoted)
            .header(header::VARY, "Accept")
            .body(full(body))
            .unwrap_or_else(|_| internal());
    }
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body))
        .unwrap_or_else(|_| internal())
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(text))
        .unwrap_or_else(|_| internal())
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
    base_headers(Response::builder().status(200))
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| internal())
}

/// The `Status` response for an error.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status(), &[]);
    if let Some(s) = e.details.retry_after_seconds
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn internal() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(b"internal error")));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}
