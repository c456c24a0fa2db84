//! The generic resource verbs (get, list, create, update, patch, delete, deletecollection)
//! for every kind, built-in or custom, on JSON objects.

use std::sync::Arc;

use apimachinery::kinds::KindInfo;
use apimachinery::object::{ObjectExt, generate_name, metadata_mut, now, set_meta};
use apimachinery::status::{ApiError, StatusCause};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use store::{RangeRequest, Revision};

use crate::control_plane::{ControlPlane, CustomKind};
use crate::filter::Filter;
use crate::negotiate::BodyFormat;
use crate::query::Query;
use crate::storage::{decode, store_error};
use crate::strategy;
use crate::validation;

/// A successful answer: HTTP code, body and `Warning` headers.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// JSON body.
    pub body: Value,
    /// Warnings for `Warning: 299 - "..."` headers.
    pub warnings: Vec<String>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            code: 200,
            body,
            warnings: Vec::new(),
        }
    }
}

/// What one resource request addresses, resolved against the registry.
pub struct Scope<'a> {
    /// The control plane.
    pub cp: &'a ControlPlane,
    /// The kind.
    pub kind: Arc<KindInfo>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, ...).
    pub subresource: Option<String>,
    /// Keys the request body repeated (for `fieldValidation`).
    pub duplicates: Vec<String>,
    /// The custom-resource details, for kinds defined by CRDs.
    pub custom: Option<Arc<CustomKind>>,
    /// The field manager writes are recorded under (`fieldManager`, or the client's name).
    pub manager: String,
}

/// How many times a patch or unconditional update is retried when it races another write.
const MAX_RETRIES: usize = 8;

impl Scope<'_> {
    fn key(&self, name: &str) -> String {
        self.cp
            .store
            .key(&self.kind, self.namespace.as_deref().unwrap_or(""), name)
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.kind.group, &self.kind.plural, name)
    }

    fn conflict(&self, name: &str, why: &str) -> ApiError {
        ApiError::conflict(&self.kind.group, &self.kind.plural, name, why)
    }

    fn require_name(&self) -> Result<&str, ApiError> {
        self.name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("a resource name is required"))
    }

    /// GET of the object `name` in this scope's namespace.
    pub async fn get_named(&self, name: &str) -> Result<Value, ApiError> {
        self.cp
            .store
            .get(&self.key(name))
            .await?
            .ok_or_else(|| self.not_found(name))
    }

    /// GET of one object.
    pub async fn get(&self) -> Result<Value, ApiError> {
        let name = self.require_name()?;
        self.cp
            .store
            .get(&self.key(name))
            .await?
            .ok_or_else(|| self.not_found(name))
    }

    /// LIST with selectors, pagination and resourceVersion semantics. Returns the items
    /// and the list metadata.
    pub async fn list(&self, query: &Query) -> Result<(Vec<Arc<Value>>, Value), ApiError> {
        let filter = Filter::from_query(&self.kind, self.namespace.as_deref(), query)?;
        let limit = match query.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let prefix = self.cp.store.prefix(&self.kind, self.namespace.as_deref());
        if let Some(served) = self.list_from_cache(query, &filter, &prefix, limit).await? {
            return Ok(served);
        }
        let (mut revision, mut start_after) = match query.get("continue").filter(|c| !c.is_empty())
        {
            Some(token) => {
                let (rev, after) = decode_continue(token, &prefix)?;
                (Some(rev), Some(after))
            }
            None => (list_revision(query)?, None),
        };
        let mut items = Vec::new();
        let mut next = None;
        loop {
            let want = if limit == 0 { 0 } else { limit - items.len() };
            let page = self
                .cp
                .store
                .backend()
                .range(RangeRequest { prefix: prefix.clone(), start_after: start_after.clone(), limit: want, revision })
                .await
                .map_err(|e| match e {
                    store::Error::Compacted { .. } if query.get("continue").is_some() => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the response to get a consistent list.",
                    ),
                    other => store_error(other),
                })?;
            revision = Some(page.revision);
            for kv in &page.kvs {
                let obj = decode(kv)?;
                if filter.matches(&obj) {
                    items.push(Arc::new(obj));
                }
            }
            start_after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
            if limit != 0 && items.len() >= limit {
                next = start_after.clone();
                break;
            }
        }
        let rev = revision.unwrap_or(0);
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(after) = next {
            meta["continue"] = json!(encode_continue(rev, &after[prefix.len()..]));
        }
        Ok((items, meta))
    }

    /// A LIST answered from the watch cache, when it can be: no continue token and not an
    /// exact revision. A page cut short by `limit` gets a continue token at the cache's
    /// revision; the next pages read the store at that revision. `None` means read the store.
    async fn list_from_cache(
        &self,
        query: &Query,
        filter: &Filter,
        prefix: &str,
        limit: usize,
    ) -> Result<Option<(Vec<Arc<Value>>, Value)>, ApiError> {
        if query.get("continue").is_some_and(|c| !c.is_empty())
            || query.get("resourceVersionMatch") == Some("Exact")
        {
            return Ok(None);
        }
        let at_least = match query.get("resourceVersion").unwrap_or("") {
            // A consistent read: never older than any write acknowledged before it.
            "" => self
                .cp
                .store
                .backend()
                .current_revision()
                .await
                .map_err(store_error)?,
            rv => parse_rv(rv)?.unwrap_or(0),
        };
        let cache = self.cp.cache(&self.kind);
        let Some((items, revision, more_after)) = cache
            .list(prefix, at_least, limit, |o| filter.matches(o))
            .await
        else {
            return Ok(None);
        };
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if let Some(last) = more_after {
            meta["continue"] = json!(encode_continue(revision, &last[prefix.len()..]));
        }
        Ok(Some((items, meta)))
    }

    /// The `...List` object for `items`.
    pub fn list_object(&self, items: Vec<Value>, meta: Value) -> Value {
        list_value(&self.kind.list_kind, &self.kind.api_version(), meta, items)
    }

    /// POST: create an object.
    pub async fn create(&self, query: &Query, body: Value) -> Result<Reply, ApiError> {
        let mut obj = self.typed_body(body)?;
        let warnings = validation::field_validation(
            &self.kind,
            self.custom.as_deref(),
            query,
            &mut obj,
            &self.duplicates,
            validation::BodyOrigin::Object,
        )?;
        let obj = crate::conversion::to_storage(&self.kind, obj);
        self.create_checked(query, obj, warnings, true).await
    }

    /// Creates an object whose body passed the type and field checks; `track` records the
    /// write in managedFields (server-side apply has already done so).
    async fn create_checked(
        &self,
        query: &Query,
        mut obj: Value,
        warnings: Vec<String>,
        track: bool,
    ) -> Result<Reply, ApiError> {
        self.set_namespace(&mut obj)?;
        let generate = obj.meta_str("generateName").map(str::to_owned);
        if obj.name().is_empty() && generate.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                &self.kind.group,
                &self.kind.kind,
                "",
                vec![StatusCause::new(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        }
        let meta = metadata_mut(&mut obj);
        for field in [
            "resourceVersion",
            "uid",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
        ] {
            meta.remove(field);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        validation::apply_defaults(&self.kind, self.custom.as_deref(), &mut obj);
        strategy::prepare_for_create(&self.kind, &mut obj);
        crate::rbac::escalation::admit(self.cp, &self.kind, &mut obj, None)?;
        if self.kind.group.is_empty() && self.kind.kind == "Pod" {
            crate::priority::admit_pod(self.cp, &mut obj).await?;
            let namespace = self.namespace.clone().unwrap_or_default();
            crate::service_account_admission::admit_pod(self.cp, &namespace, &mut obj).await?;
        }
        if self.kind.group.is_empty() && self.kind.kind == "PersistentVolumeClaim" {
            crate::storage_class::admit_claim(self.cp, &mut obj).await?;
        }
        crate::storage_protection::admit_create(&self.kind, &mut obj);
        if self.kind.group == "certificates.k8s.io" && self.kind.kind == "CertificateSigningRequest"
        {
            // Who asks is recorded by the server, never taken from the request.
            let requester =
                crate::authz::requester().unwrap_or_else(crate::authn::Identity::loopback);
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("username".into(), json!(requester.user));
                spec.insert("groups".into(), json!(requester.groups));
                if requester.uid.is_empty() {
                    spec.remove("uid");
                } else {
                    spec.insert("uid".into(), json!(requester.uid));
                }
                if requester.extra.is_empty() {
                    spec.remove("extra");
                } else {
                    spec.insert("extra".into(), json!(requester.extra));
                }
            }
        }
        if track {
            self.track(None, &mut obj);
        }
        if self.kind.namespaced {
            self.check_namespace_accepts(obj.namespace()).await?;
        }
        let dry_run = is_dry_run(query)?;
        let mut allocation = crate::service_alloc::Allocation::default();
        for attempt in 0.. {
            if let Some(prefix) = generate
                .as_deref()
                .filter(|_| obj.name().is_empty() || attempt > 0)
            {
                set_meta(&mut obj, "name", generate_name(prefix, rand_u32));
            }
            if self.kind.group.is_empty() && self.kind.kind == "Secret" && !dry_run {
                if attempt > 0
                    && let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut)
                {
                    // The token names its secret: a generated name that changed needs a new one.
                    data.remove("token");
                }
                let ns = obj.namespace().to_owned();
                crate::authn::service_account::fill_legacy_secret(
                    self.cp,
                    &ns,
                    &mut obj,
                    self.cp.ca_pem().as_deref(),
                )
                .await?;
            }
            validation::validate_create(&self.kind, self.custom.as_deref(), &obj)?;
            if attempt == 0 {
                crate::quota::admit_create(self.cp, &self.kind, &obj, dry_run).await?;
                allocation = crate::service_alloc::allocate(
                    self.cp.services(),
                    &self.kind,
                    None,
                    &mut obj,
                    dry_run,
                )
                .await?;
            }
            if dry_run {
                return Ok(Reply {
                    code: 201,
                    body: obj,
                    warnings,
                });
            }
            let key = self.cp.store.key(&self.kind, obj.namespace(), obj.name());
            let created = self.cp.store.create(&key, &obj).await;
            let name_taken = matches!(created, Err(store::Error::AlreadyExists(_)));
            if !(name_taken && generate.is_some() && attempt < 5) {
                std::mem::take(&mut allocation)
                    .finish(created.is_ok())
                    .await;
            }
            match created {
                Ok(stored) => {
                    return Ok(Reply {
                        code: 201,
                        body: stored,
                        warnings,
                    });
                }
                Err(store::Error::AlreadyExists(_)) if generate.is_some() && attempt < 5 => {
                    continue;
                }
                Err(store::Error::AlreadyExists(_)) => {
                    return Err(ApiError::already_exists(
                        &self.kind.group,
                        &self.kind.plural,
                        obj.name(),
                    ));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        unreachable!("the create loop returns")
    }

    /// PUT: replace an object (or its status with the `status` subresource).
    pub async fn update(&self, query: &Query, body: Value) -> Result<Reply, ApiError> {
        let name = self.require_name()?.to_owned();
        let mut obj = self.typed_body(body)?;
        let warnings = validation::field_validation(
            &self.kind,
            self.custom.as_deref(),
            query,
            &mut obj,
            &self.duplicates,
            validation::BodyOrigin::Object,
        )?;
        let mut obj = crate::conversion::to_storage(&self.kind, obj);
        if obj.name().is_empty() {
            set_meta(&mut obj, "name", name.clone());
        } else if obj.name() != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                obj.name()
            )));
        }
        self.set_namespace(&mut obj)?;
        let wanted_rv = parse_rv(obj.resource_version())?;
        let dry_run = is_dry_run(query)?;
        for _ in 0..MAX_RETRIES {
            let current = self.get().await?;
            let current_rv = parse_rv(current.resource_version())?.unwrap_or(0);
            if let Some(rv) = wanted_rv
                && rv != current_rv
            {
                return Err(self.conflict(&name, ApiError::MODIFIED));
            }
            let attempt = self
                .commit_update(&name, &current, obj.clone(), dry_run, true)
                .await;
            if let Some(done) = self.settle(&name, attempt, wanted_rv.is_some()) {
                return done.map(|stored| Reply {
                    code: 200,
                    body: stored,
                    warnings,
                });
            }
        }
        Err(self.conflict(&name, "too many concurrent writes; try again"))
    }

    /// PATCH with a JSON patch, a merge patch or a strategic merge patch.
    pub async fn patch(
        &self,
        query: &Query,
        format: BodyFormat,
        patch: &Bytes,
    ) -> Result<Reply, ApiError> {
        let name = self.require_name()?.to_owned();
        if format == BodyFormat::ApplyPatch {
            return self.server_side_apply(query, &name, patch).await;
        }
        let patch_doc: Value = serde_json::from_slice(patch)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let dry_run = is_dry_run(query)?;
        for _ in 0..MAX_RETRIES {
            let current = self.get().await?;
            let view = crate::conversion::from_storage(&self.kind, current.clone());
            let mut patched = crate::patching::apply(&self.kind, format, &view, &patch_doc)?;
            let warnings = validation::field_validation(
                &self.kind,
                self.custom.as_deref(),
                query,
                &mut patched,
                &[],
                validation::BodyOrigin::Patch,
            )?;
            let patched = crate::conversion::to_storage(&self.kind, patched);
            // A resourceVersion in the patch is a precondition.
            let wanted_rv = parse_rv(patched.resource_version())?;
            let current_rv = parse_rv(current.resource_version())?.unwrap_or(0);
            if wanted_rv.is_some_and(|rv| rv != current_rv) {
                return Err(self.conflict(&name, ApiError::MODIFIED));
            }
            if patched.name() != name {
                return Err(ApiError::bad_request(
                    "metadata.name cannot be changed by a patch",
                ));
            }
            let attempt = self
                .commit_update(&name, &current, patched, dry_run, true)
                .await;
            if let Some(done) = self.settle(&name, attempt, false) {
                return done.map(|stored| Reply {
                    code: 200,
                    body: stored,
                    warnings,
                });
            }
        }
        Err(self.conflict(&name, "too many concurrent writes; try again"))
    }

    /// POST of a `Binding`: assigns an unscheduled pod to a node, once.
    pub async fn bind(&self, query: &Query, binding: Value) -> Result<Reply, ApiError> {
        let pod_name = match (&self.name, binding.name()) {
            (Some(n), b) if b.is_empty() || b == n => n.clone(),
            (Some(n), b) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the binding ({b}) does not match the name on the URL ({n})"
                )));
            }
            (None, b) if !b.is_empty() => b.to_owned(),
            (None, _) => {
                return Err(ApiError::bad_request(
                    "a binding needs metadata.name (the pod)",
                ));
            }
        };
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                &pod_name,
                vec![StatusCause::new(
                    "FieldValueRequired",
                    "target.name",
                    "Required value",
                )],
            ));
        }
        let Some(pod_kind) = self.cp.registry().by_kind("", "Pod") else {
            return Err(ApiError::no_route());
        };
        let pods = Scope {
            cp: self.cp,
            kind: pod_kind,
            namespace: self.namespace.clone(),
            name: Some(pod_name.clone()),
            subresource: None,
            duplicates: Vec::new(),
            custom: None,
            manager: self.manager.clone(),
        };
        let dry_run = is_dry_run(query)?;
        for _ in 0..MAX_RETRIES {
            let current = pods.get().await?;
            if let Some(existing) = current
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(pods.conflict(
                    &pod_name,
                    &format!("pod {pod_name} is already assigned to node \"{existing}\""),
                ));
            }
            if current.meta_str("deletionTimestamp").is_some() {
                return Err(pods.conflict(
                    &pod_name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let mut bound = current.clone();
            bound["spec"]["nodeName"] = json!(node);
            let conditions = bound["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
            bound["status"]["conditions"] = json!(conditions);
            if dry_run {
                break;
            }
            let key = pods.key(&pod_name);
            let rv = parse_rv(current.resource_version())?.unwrap_or(0);
            match self.cp.store.update(&key, &bound, rv).await {
                Ok(_) => break,
                Err(store::Error::Conflict { .. }) => continue,
                Err(store::Error::NotFound(_)) => return Err(pods.not_found(&pod_name)),
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(Reply {
            code: 201,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            warnings: vec![],
        })
    }

    /// GET of the `scale` subresource.
    pub async fn get_scale(&self) -> Result<Value, ApiError> {
        crate::scale::to_scale(&self.kind, self.custom.as_deref(), &self.get().await?)
    }

    /// PUT (`patch` is `None`, `body` is a Scale) or PATCH of the `scale` subresource.
    pub async fn update_scale(
        &self,
        query: &Query,
        body: &Bytes,
        patch: Option<BodyFormat>,
    ) -> Result<Reply, ApiError> {
        let name = self.require_name()?.to_owned();
        let doc: Value = match patch {
            Some(BodyFormat::ApplyPatch) => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "server-side apply is not supported by this server yet",
                ));
            }
            Some(_) => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
            None => crate::server::decode_body(body, Some("application/json"))?,
        };
        let dry_run = is_dry_run(query)?;
        for _ in 0..MAX_RETRIES {
            let current = self.get().await?;
            let scale = crate::scale::to_scale(&self.kind, self.custom.as_deref(), &current)?;
            let new_scale = match patch {
                Some(format) => crate::patching::apply_with_schema(
                    Some("io.k8s.api.autoscaling.v1.Scale"),
                    "scale",
                    format,
                    &scale,
                    &doc,
                )?,
                None => doc.clone(),
            };
            let wanted_rv = parse_rv(new_scale.resource_version())?;
            if wanted_rv
                .is_some_and(|rv| Some(rv) != parse_rv(current.resource_version()).ok().flatten())
            {
                return Err(self.conflict(&name, ApiError::MODIFIED));
            }
            let mut updated = current.clone();
            crate::scale::apply_scale(
                &self.kind,
                self.custom.as_deref(),
                &mut updated,
                &new_scale,
            )?;
            let attempt = self
                .commit_update(&name, &current, updated, dry_run, true)
                .await;
            if let Some(done) = self.settle(&name, attempt, wanted_rv.is_some()) {
                return done.and_then(|stored| {
                    crate::scale::to_scale(&self.kind, self.custom.as_deref(), &stored)
                        .map(Reply::ok)
                });
            }
        }
        Err(self.conflict(&name, "too many concurrent writes; try again"))
    }

    /// Records a write by this scope's manager in `metadata.managedFields`.
    fn track(&self, old: Option<&Value>, new: &mut Value) {
        let schema = self
            .kind
            .schema_name
            .as_deref()
            .and_then(|n| apimachinery::schema::builtin().node(n));
        let now = now();
        match self.subresource.as_deref() {
            Some(sub @ ("status" | "approval")) => apimachinery::apply::track_subresource_update(
                old,
                new,
                &self.manager,
                sub,
                schema,
                &["spec"],
                &now,
            ),
            Some(sub) => apimachinery::apply::track_subresource_update(
                old,
                new,
                &self.manager,
                sub,
                schema,
                &["status"],
                &now,
            ),
            None => {
                let ignored: &[&str] = if self.kind.has_status() {
                    &["status"]
                } else {
                    &[]
                };
                apimachinery::apply::track_update(old, new, &self.manager, schema, ignored, &now)
            }
        }
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply. Merges the applied
    /// configuration by field ownership, answers 409 with the conflicting fields unless
    /// `force=true`, and creates the object when it does not exist.
    async fn server_side_apply(
        &self,
        query: &Query,
        name: &str,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let manager = query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![StatusCause::new(
                        "FieldValueRequired",
                        "fieldManager",
                        "Required value: is required for apply patch",
                    )],
                )
            })?;
        let yaml: serde_yaml::Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        let applied = serde_json::to_value(yaml).map_err(|e| {
            ApiError::bad_request(format!(
                "the applied configuration is not a JSON document: {e}"
            ))
        })?;
        let mut applied = self.typed_body(applied)?;
        match applied.meta_str("name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
            None => set_meta(&mut applied, "name", name),
        }
        self.set_namespace(&mut applied)?;
        let warnings = validation::field_validation(
            &self.kind,
            self.custom.as_deref(),
            query,
            &mut applied,
            &[],
            validation::BodyOrigin::Apply,
        )?;
        let force = query.flag("force");
        let schema = self
            .kind
            .schema_name
            .as_deref()
            .and_then(|n| apimachinery::schema::builtin().node(n));
        let ignored: &[&str] = if self.kind.has_status() {
            &["status"]
        } else {
            &[]
        };
        let dry_run = is_dry_run(query)?;
        for _ in 0..MAX_RETRIES {
            let current = match self.get().await {
                Ok(c) => Some(c),
                Err(e) if e.code == 404 => None,
                Err(e) => return Err(e),
            };
            let view = current
                .as_ref()
                .map(|c| crate::conversion::from_storage(&self.kind, c.clone()));
            let outcome = apimachinery::apply::apply(
                view.as_ref(),
                &applied,
                manager,
                force,
                schema,
                ignored,
                &now(),
            )
            .map_err(apply_error)?;
            let merged = crate::conversion::to_storage(&self.kind, outcome.object);
            let Some(current) = current else {
                let mut reply = self.create_checked(query, merged, warnings, false).await?;
                reply.code = 201;
                return Ok(reply);
            };
            if !outcome.changed {
                return Ok(Reply {
                    code: 200,
                    body: current,
                    warnings,
                });
            }
            let attempt = self
                .commit_update(name, &current, merged, dry_run, false)
                .await;
            if let Some(done) = self.settle(name, attempt, false) {
                return done.map(|stored| Reply {
                    code: 200,
                    body: stored,
                    warnings,
                });
            }
        }
        Err(self.conflict(name, "too many concurrent writes; try again"))
    }

    /// Writes `new` over `current` after applying the kind's update rules.
    async fn commit_update(
        &self,
        name: &str,
        current: &Value,
        mut new: Value,
        dry_run: bool,
        track: bool,
    ) -> Result<Value, Retry> {
        let current_rv = parse_rv(current.resource_version())
            .map_err(Retry::Fail)?
            .unwrap_or(0);
        if self.subresource.as_deref() == Some("status") {
            new = strategy::prepare_for_status_update(&new, current);
        } else if self.subresource.as_deref() == Some("approval") {
            new = strategy::prepare_for_approval(&new, current);
        } else {
            keep_system_metadata(&mut new, current).map_err(Retry::Fail)?;
            validation::apply_defaults(&self.kind, self.custom.as_deref(), &mut new);
            strategy::prepare_for_update(&self.kind, &mut new, current);
            crate::service_alloc::drop_type_dependent_fields(&self.kind, &mut new, current);
            crate::rbac::escalation::admit(self.cp, &self.kind, &mut new, Some(current))
                .map_err(Retry::Fail)?;
        }
        if track {
            self.track(Some(current), &mut new);
        }
        validation::validate_update(&self.kind, self.custom.as_deref(), &new, current)
            .map_err(Retry::Fail)?;
        let allocation = match self.subresource {
            None => crate::service_alloc::allocate(
                self.cp.services(),
                &self.kind,
                Some(current),
                &mut new,
                dry_run,
            )
            .await
            .map_err(Retry::Fail)?,
            Some(_) => Default::default(),
        };
        set_meta(&mut new, "resourceVersion", current.resource_version());
        if new == *current {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(new);
        }
        let key = self.key(name);
        let finishing = new.meta_str("deletionTimestamp").is_some()
            && new.finalizers().is_empty()
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0;
        if dry_run {
            return Ok(new);
        }
        if finishing {
            // The last finalizer is gone from an object being deleted: delete it now.
            let deleted = self.retrying(name, self.cp.store.delete(&key, Some(current_rv)).await);
            allocation.finish(false).await;
            if deleted.is_ok() {
                crate::service_alloc::release(self.cp.services(), &self.kind, current).await;
            }
            return deleted;
        }
        let updated = self.retrying(name, self.cp.store.update(&key, &new, current_rv).await);
        allocation.finish(updated.is_ok()).await;
        updated
    }

    /// DELETE of one object, honouring preconditions and finalizers.
    pub async fn delete(&self, query: &Query, body: &Bytes) -> Result<Reply, ApiError> {
        let name = self.require_name()?.to_owned();
        let options = DeleteOptions::parse(query, body)?;
        for _ in 0..MAX_RETRIES {
            let current = self.get().await?;
            match self.delete_one(&name, &current, &options).await {
                Err(Retry::Conflict) => continue,
                Err(Retry::Fail(e)) => return Err(e),
                Ok(reply) => return Ok(reply),
            }
        }
        Err(self.conflict(&name, "too many concurrent writes; try again"))
    }

    async fn delete_one(
        &self,
        name: &str,
        current: &Value,
        options: &DeleteOptions,
    ) -> Result<Reply, Retry> {
        if let Some(uid) = &options.uid
            && uid != current.uid()
        {
            return Err(Retry::Fail(self.conflict(
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.uid()
                ),
            )));
        }
        if let Some(rv) = &options.resource_version
            && rv != current.resource_version()
        {
            return Err(Retry::Fail(self.conflict(
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.resource_version()
                ),
            )));
        }
        let current_rv = parse_rv(current.resource_version())
            .map_err(Retry::Fail)?
            .unwrap_or(0);
        let key = self.key(name);
        if crate::namespaces::is_namespace(&self.kind)
            && current
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
        {
            // A namespace turns Terminating; its content is deleted, then the namespace.
            if current.meta_str("deletionTimestamp").is_some() {
                return Ok(Reply::ok(current.clone()));
            }
            let mut marked = current.clone();
            metadata_mut(&mut marked).insert("deletionTimestamp".into(), json!(now()));
            metadata_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
            marked["status"] = json!({"phase": "Terminating"});
            if options.dry_run {
                return Ok(Reply::ok(marked));
            }
            return self
                .retrying(name, self.cp.store.update(&key, &marked, current_rv).await)
                .map(Reply::ok);
        }
        let plan = strategy::before_delete(
            &self.kind,
            current,
            options.grace_period_seconds,
            jiff::Timestamp::now(),
        );
        if plan == strategy::GracefulDelete::Pending {
            // A graceful deletion under way is not lengthened, and its finalizers stay.
            return Ok(Reply::ok(current.clone()));
        }
        // The propagation policy becomes the garbage collector's finalizers (`orphan`,
        // `foregroundDeletion`), which hold the object until the collector has dealt with
        // its dependents.
        let finalizers = gc_finalizers(&current.finalizers(), options);
        let mut marked = current.clone();
        let meta = metadata_mut(&mut marked);
        if finalizers != current.finalizers() {
            meta.insert("finalizers".into(), json!(finalizers));
        }
        let delete_now = match plan {
            strategy::GracefulDelete::Graceful {
                deletion_timestamp,
                grace_period_seconds,
            } => {
                // The node agent (or the finalizers' owners) finish the deletion.
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(apimachinery::object::format_time(deletion_timestamp)),
                );
                meta.insert(
                    "deletionGracePeriodSeconds".into(),
                    json!(grace_period_seconds),
                );
                grace_period_seconds == 0 && finalizers.is_empty()
            }
            _ if finalizers.is_empty() => true,
            _ => {
                // Held by finalizers: marked as deleting now, unless an earlier mark stands.
                let marked_at = current
                    .meta_str("deletionTimestamp")
                    .map(|t| t.parse::<jiff::Timestamp>());
                let now = jiff::Timestamp::now();
                if marked_at.is_none_or(|t| t.is_ok_and(|t| t > now)) {
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(apimachinery::object::format_time(now)),
                    );
                }
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                false
            }
        };
        if !delete_now {
            if marked == *current {
                return Ok(Reply::ok(marked));
            }
            if options.dry_run {
                return Ok(Reply::ok(marked));
            }
            return self
                .retrying(name, self.cp.store.update(&key, &marked, current_rv).await)
                .map(Reply::ok);
        }
        let success =
            apimachinery::status::success(&self.kind.group, &self.kind.plural, name, current.uid());
        if options.dry_run {
            return Ok(Reply::ok(success));
        }
        let deleted = self.retrying(name, self.cp.store.delete(&key, Some(current_rv)).await);
        if deleted.is_ok() {
            crate::service_alloc::release(self.cp.services(), &self.kind, current).await;
        }
        deleted.map(|_| Reply::ok(success))
    }

    /// One commit attempt of a retry loop: `None` means read again and retry (a lost race
    /// when the caller set no resourceVersion precondition); otherwise the answer.
    fn settle(
        &self,
        name: &str,
        attempt: Result<Value, Retry>,
        precondition: bool,
    ) -> Option<Result<Value, ApiError>> {
        match attempt {
            Ok(stored) => Some(Ok(stored)),
            Err(Retry::Conflict) if !precondition => None,
            Err(Retry::Conflict) => Some(Err(self.conflict(name, ApiError::MODIFIED))),
            Err(Retry::Fail(e)) => Some(Err(e)),
        }
    }

    /// A store write's outcome for the retry loops: a lost race is retried, a vanished
    /// object is 404, anything else fails.
    fn retrying<T>(&self, name: &str, result: Result<T, store::Error>) -> Result<T, Retry> {
        match result {
            Ok(v) => Ok(v),
            Err(store::Error::Conflict { .. }) => Err(Retry::Conflict),
            Err(store::Error::NotFound(_)) => Err(Retry::Fail(self.not_found(name))),
            Err(e) => Err(Retry::Fail(store_error(e))),
        }
    }

    /// DELETE on a collection: deletes every matching object.
    pub async fn delete_collection(&self, query: &Query, body: &Bytes) -> Result<Reply, ApiError> {
        let options = DeleteOptions::parse(query, body)?;
        let mut list_query = query.clone();
        list_query.remove("continue");
        list_query.remove("limit");
        let (items, meta) = self.list(&list_query).await?;
        let mut deleted = Vec::new();
        for item in items {
            let scope = Scope {
                cp: self.cp,
                kind: self.kind.clone(),
                namespace: Some(item.namespace().to_owned()).filter(|n| !n.is_empty()),
                name: Some(item.name().to_owned()),
                subresource: None,
                duplicates: Vec::new(),
                custom: self.custom.clone(),
                manager: self.manager.clone(),
            };
            let name = item.name().to_owned();
            let mut done = false;
            for _ in 0..MAX_RETRIES {
                let current = match scope.get().await {
                    Ok(c) => c,
                    Err(e) if e.code == 404 => {
                        done = true;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                match scope.delete_one(&name, &current, &options).await {
                    Err(Retry::Conflict) => continue,
                    Err(Retry::Fail(e)) if e.code == 404 => {
                        done = true;
                        break;
                    }
                    Err(Retry::Fail(e)) => return Err(e),
                    Ok(_) => {
                        deleted.push(current);
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                return Err(self.conflict(&name, "too many concurrent writes; try again"));
            }
        }
        Ok(Reply::ok(self.list_object(deleted, meta)))
    }

    /// Checks the body's apiVersion and kind against the endpoint, filling them if absent.
    fn typed_body(&self, body: Value) -> Result<Value, ApiError> {
        let Value::Object(mut map) = body else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let (want_version, want_kind) =
            if self.subresource.as_deref() == Some("status") || self.subresource.is_none() {
                (self.kind.api_version(), self.kind.kind.clone())
            } else {
                return Err(ApiError::method_not_allowed(format!(
                    "subresource {:?} does not support this verb",
                    self.subresource.as_deref().unwrap_or("")
                )));
            };
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != want_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want_version})"
                )));
            }
            Some(_) => {}
            None => {
                map.insert("apiVersion".into(), json!(want_version));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            Some(k) if k != want_kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({want_kind})"
                )));
            }
            Some(_) => {}
            None => {
                map.insert("kind".into(), json!(want_kind));
            }
        }
        if !map.get("metadata").is_none_or(Value::is_object) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        Ok(Value::Object(map))
    }

    /// Namespaced objects take the namespace of the path; cluster-scoped ones have none.
    fn set_namespace(&self, obj: &mut Value) -> Result<(), ApiError> {
        if !self.kind.namespaced {
            metadata_mut(obj).remove("namespace");
            return Ok(());
        }
        let Some(ns) = self.namespace.as_deref() else {
            return Err(ApiError::bad_request(
                "the namespace of the object must be given in the request path",
            ));
        };
        match obj.meta_str("namespace") {
            Some(n) if !n.is_empty() && n != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                set_meta(obj, "namespace", ns);
                Ok(())
            }
        }
    }

    /// New objects need an existing namespace that is not terminating.
    async fn check_namespace_accepts(&self, namespace: &str) -> Result<(), ApiError> {
        let Some(ns_kind) = self.cp.registry().by_kind("", "Namespace") else {
            return Ok(());
        };
        let key = self.cp.store.key(&ns_kind, "", namespace);
        // The namespace cache answers without a store read; a namespace it does not know
        // (yet) is looked up in the store, so one created a moment ago is found.
        let cached = self.cp.cache(&ns_kind).peek(&key).flatten();
        let found = match cached {
            Some(ns) => Some(ns),
            None => self.cp.store.get(&key).await?,
        };
        match found {
            None => Err(ApiError::not_found("", "namespaces", namespace)),
            Some(ns) if ns.meta_str("deletionTimestamp").is_some() => {
                Err(ApiError::forbidden(format!(
                    "{} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    self.kind.qualified_resource(),
                )))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Why an update attempt did not commit.
enum Retry {
    /// Another write won the race; read again and retry.
    Conflict,
    /// A final error.
    Fail(ApiError),
}

impl From<ApiError> for Retry {
    fn from(e: ApiError) -> Self {
        Retry::Fail(e)
    }
}

/// The API error for a failed server-side apply.
fn apply_error(e: apimachinery::apply::ApplyError) -> ApiError {
    use apimachinery::apply::ApplyError;
    match e {
        ApplyError::Conflict(conflicts) => {
            let mut err = ApiError::new(409, "Conflict", conflicts.to_string());
            err.details.causes = conflicts
                .0
                .iter()
                .map(|c| StatusCause::new("FieldManagerConflict", &c.field(), c.cause_message()))
                .collect();
            err
        }
        ApplyError::ManagedFieldsSet => ApiError::bad_request("metadata.managedFields must be nil"),
        ApplyError::Invalid(message) => ApiError::new(422, "Invalid", message),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Carries over the metadata only the server sets; a different uid is a conflict.
fn keep_system_metadata(new: &mut Value, current: &Value) -> Result<(), ApiError> {
    let current_meta = current.metadata().cloned().unwrap_or_default();
    let meta = metadata_mut(new);
    if let Some(uid) = meta
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        && Some(uid) != current_meta.get("uid").and_then(Value::as_str)
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                current_meta
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
        ));
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match current_meta.get(field) {
            Some(v) => meta.insert(field.to_owned(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("selfLink");
    Ok(())
}

/// The revision a LIST without a continue token reads at: `None` for the newest.
fn list_revision(query: &Query) -> Result<Option<Revision>, ApiError> {
    let rv = query.get("resourceVersion").unwrap_or("");
    match (rv, query.get("resourceVersionMatch").unwrap_or("")) {
        ("" | "0", "") | ("" | "0", "NotOlderThan") => Ok(None),
        ("", "Exact") => Err(ApiError::bad_request(
            "resourceVersionMatch=Exact requires a resourceVersion",
        )),
        (rv, "Exact") => Ok(Some(parse_rv(rv)?.unwrap_or(0))),
        // NotOlderThan (explicit or legacy): the newest state is never older than `rv`.
        (rv, "" | "NotOlderThan") => {
            parse_rv(rv)?;
            Ok(None)
        }
        (_, other) => Err(ApiError::bad_request(format!(
            "invalid resourceVersionMatch {other:?}"
        ))),
    }
}

/// Parses a resourceVersion; empty means none.
pub fn parse_rv(rv: &str) -> Result<Option<Revision>, ApiError> {
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version {rv:?}")))
}

/// The continue token: the list's revision and the last key returned, relative to the
/// collection prefix, as base64 JSON (opaque to clients).
fn encode_continue(rev: Revision, after: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "kumo.continue/v1", "rv": rev, "start": after});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v["v"] != "kumo.continue/v1" {
        return Err(bad());
    }
    let rev = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    if start.contains("..") {
        return Err(bad());
    }
    Ok((rev, format!("{prefix}{start}")))
}

/// True when the query asks for a dry run (invalid values are rejected elsewhere).
pub fn is_dry_run_query(query: &Query) -> bool {
    is_dry_run(query).unwrap_or(true)
}

/// Whether a DELETE asked for a dry run, in its query or in its DeleteOptions body (where
/// kubectl puts it).
pub fn is_dry_run_delete(query: &Query, body: &Bytes) -> bool {
    DeleteOptions::parse(query, body).map_or(true, |o| o.dry_run)
}

/// Whether `dryRun=All` was asked for (any other value is rejected as upstream does).
fn is_dry_run(query: &Query) -> Result<bool, ApiError> {
    match query.get_all("dryRun").as_slice() {
        [] => Ok(false),
        ["All"] => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "unsupported dryRun value {other:?}; only \"All\" is supported"
        ))),
    }
}

/// The parts of `DeleteOptions` the server acts on.
#[derive(Debug, Default)]
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
    grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    propagation_policy: Option<String>,
    /// The deprecated `orphanDependents`.
    orphan_dependents: Option<bool>,
}

/// The garbage collector's finalizer that orphans an object's dependents.
const FINALIZER_ORPHAN: &str = "orphan";
/// The garbage collector's finalizer that deletes an object's dependents first.
const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// The finalizers an object gets when deleted with `options`, as upstream's registry
/// decides them: an explicit policy wins, then a finalizer the object already carries,
/// then the default (Background: no finalizer).
fn gc_finalizers(existing: &[String], options: &DeleteOptions) -> Vec<String> {
    let from_finalizers = || {
        existing.iter().find_map(|f| match f.as_str() {
            FINALIZER_ORPHAN => Some("Orphan"),
            FINALIZER_FOREGROUND => Some("Foreground"),
            _ => None,
        })
    };
    let policy = match (
        options.orphan_dependents,
        options.propagation_policy.as_deref(),
    ) {
        (Some(true), _) => Some("Orphan"),
        (Some(false), _) => Some("Background"),
        (None, Some(p)) => Some(p),
        (None, None) => from_finalizers(),
    };
    let mut finalizers: Vec<String> = existing
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    match policy {
        Some("Orphan") => finalizers.push(FINALIZER_ORPHAN.to_owned()),
        Some("Foreground") => finalizers.push(FINALIZER_FOREGROUND.to_owned()),
        _ => {}
    }
    // An unchanged set keeps its order.
    let same =
        finalizers.len() == existing.len() && finalizers.iter().all(|f| existing.contains(f));
    if same { existing.to_vec() } else { finalizers }
}

impl DeleteOptions {
    fn parse(query: &Query, body: &Bytes) -> Result<Self, ApiError> {
        let mut options = DeleteOptions {
            dry_run: is_dry_run(query)?,
            ..Default::default()
        };
        if let Some(g) = query.get("gracePeriodSeconds") {
            options.grace_period_seconds =
                Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?);
        }
        options.propagation_policy = query.get("propagationPolicy").map(str::to_owned);
        if let Some(o) = query.get("orphanDependents") {
            options.orphan_dependents =
                Some(o.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid orphanDependents {o:?}"))
                })?);
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            options.parse_body(body)?;
        }
        options.check_propagation()?;
        Ok(options)
    }

    fn parse_body(&mut self, body: &Bytes) -> Result<(), ApiError> {
        let options = self;
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        let map: &Map<String, Value> = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("DeleteOptions must be an object"))?;
        if let Some(pre) = map.get("preconditions") {
            options.uid = pre.get("uid").and_then(Value::as_str).map(str::to_owned);
            options.resource_version = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if let Some(g) = map.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
            options.grace_period_seconds =
                Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?);
        }
        match map.get("dryRun") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Array(a)) if a.len() == 1 && a[0] == "All" => options.dry_run = true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported dryRun value {other}"
                )));
            }
        }
        if let Some(p) = map.get("propagationPolicy").and_then(Value::as_str) {
            options.propagation_policy = Some(p.to_owned());
        }
        if let Some(o) = map.get("orphanDependents").filter(|o| !o.is_null()) {
            options.orphan_dependents = Some(
                o.as_bool()
                    .ok_or_else(|| ApiError::bad_request("orphanDependents must be a boolean"))?,
            );
        }
        Ok(())
    }

    /// Rejects an unknown policy, and a policy given together with `orphanDependents`.
    fn check_propagation(&self) -> Result<(), ApiError> {
        if self.orphan_dependents.is_some() && self.propagation_policy.is_some() {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![StatusCause::new(
                    "FieldValueInvalid",
                    "propagationPolicy",
                    "Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set",
                )],
            ));
        }
        match self.propagation_policy.as_deref() {
            None | Some("Background" | "Foreground" | "Orphan") => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    "",
                    "DeleteOptions",
                    "",
                    vec![StatusCause::new(
                        "FieldValueNotSupported",
                        "propagationPolicy",
                        format!(
                            "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                        ),
                    )],
                ));
            }
        }
        Ok(())
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process and per instance: enough for name suffixes, which
    // are checked for uniqueness by the store anyway.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

/// A list object of `items`, which are moved in: `json!` would serialize each item into a
/// new value, a deep copy that costs more than the rest of a large LIST.
pub fn list_value(kind: &str, api_version: &str, meta: Value, items: Vec<Value>) -> Value {
    let mut list = serde_json::Map::with_capacity(4);
    list.insert("kind".into(), Value::String(kind.to_owned()));
    list.insert("apiVersion".into(), Value::String(api_version.to_owned()));
    list.insert("metadata".into(), meta);
    list.insert("items".into(), Value::Array(items));
    Value::Object(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/web-1");
        assert_eq!(
            decode_continue(&t, "/c/core/pods/").ok(),
            Some((42, "/c/core/pods/default/web-1".to_owned()))
        );
        assert!(decode_continue("not-base64!!", "/p/").is_err());
        assert!(decode_continue(&encode_continue(0, "x"), "/p/").is_err());
    }

    #[test]
    fn propagation_policies_become_finalizers() {
        let check =
            |existing: &[&str], policy: Option<&str>, orphan: Option<bool>, want: &[&str]| {
                let existing: Vec<String> = existing.iter().map(|s| (*s).to_owned()).collect();
                let options = DeleteOptions {
                    propagation_policy: policy.map(str::to_owned),
                    orphan_dependents: orphan,
                    ..Default::default()
                };
                assert_eq!(
                    gc_finalizers(&existing, &options),
                    want,
                    "{existing:?} {policy:?} {orphan:?}"
                );
            };
        check(&[], None, None, &[]);
        check(&[], Some("Background"), None, &[]);
        check(&[], Some("Orphan"), None, &["orphan"]);
        check(&[], Some("Foreground"), None, &["foregroundDeletion"]);
        check(&[], None, Some(true), &["orphan"]);
        check(
            &["a"],
            Some("Foreground"),
            None,
            &["a", "foregroundDeletion"],
        );
        // An explicit policy replaces the other garbage collector finalizer.
        check(
            &["orphan", "a"],
            Some("Foreground"),
            None,
            &["a", "foregroundDeletion"],
        );
        check(&["foregroundDeletion"], Some("Background"), None, &[]);
        // Without a policy, the finalizers already there decide.
        check(
            &["foregroundDeletion", "a"],
            None,
            None,
            &["foregroundDeletion", "a"],
        );
        check(&["orphan"], None, Some(false), &[]);
    }

    #[test]
    fn delete_options_reject_two_policies() {
        let q = Query::parse(None);
        let both = Bytes::from_static(br#"{"propagationPolicy":"Orphan","orphanDependents":true}"#);
        assert_eq!(
            DeleteOptions::parse(&q, &both).err().map(|e| e.code),
            Some(422)
        );
        let bad = Bytes::from_static(br#"{"propagationPolicy":"Sideways"}"#);
        assert_eq!(
            DeleteOptions::parse(&q, &bad).err().map(|e| e.code),
            Some(422)
        );
        let query = Query::parse(Some("propagationPolicy=Foreground"));
        let parsed = DeleteOptions::parse(&query, &Bytes::new()).ok();
        assert_eq!(
            parsed.and_then(|o| o.propagation_policy).as_deref(),
            Some("Foreground")
        );
    }

    #[test]
    fn list_revisions() {
        let q = |s: &str| Query::parse(Some(s));
        assert_eq!(list_revision(&q("")).ok(), Some(None));
        assert_eq!(list_revision(&q("resourceVersion=0")).ok(), Some(None));
        assert_eq!(
            list_revision(&q("resourceVersion=5&resourceVersionMatch=Exact")).ok(),
            Some(Some(5))
        );
        assert!(list_revision(&q("resourceVersion=x")).is_err());
        assert!(list_revision(&q("resourceVersionMatch=Exact")).is_err());
    }
}
