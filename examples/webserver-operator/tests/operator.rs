//! The example operator against a real kumo server with hollow nodes, and the CRD flows
//! kube-rs's own cluster tests exercise (derived CRD, typed queries, status and scale
//! subresources, discovery).

use std::time::Duration;

use e2e::Kumo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;
use webserver_operator::{WebServer, WebServerSpec};

async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &WebServer::crd())
        .await?;
    let established = await_condition(
        crds,
        "webservers.example.kumo.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(10), established).await??;
    Ok(())
}

/// Polls `check` every 200 ms for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_crd_flows() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    let client = kumo.client().await?;
    install_crd(&client).await?;

    // Discovery, legacy and aggregated, finds the new kind with its subresources.
    let discovery = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await?;
    let (resource, caps) = discovery
        .get("example.kumo.dev")
        .and_then(|g| g.recommended_kind("WebServer"))
        .ok_or_else(|| anyhow::anyhow!("WebServer missing from aggregated discovery"))?;
    assert_eq!(resource.plural, "webservers");
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "webservers/status" || r.plural == "status"),
        "{:?}",
        caps.subresources
    );
    let legacy = kube::Discovery::new(client.clone()).run().await?;
    assert!(legacy.has_group("example.kumo.dev"));

    let api: Api<WebServer> = Api::namespaced(client.clone(), "default");
    let ws = WebServer::new(
        "site",
        WebServerSpec {
            replicas: 1,
            content: "hello".into(),
            port: 8080,
        },
    );
    let created = api.create(&PostParams::default(), &ws).await?;
    assert_eq!(created.spec, ws.spec);
    assert!(created.status.is_none(), "status is not set on create");
    // Typed list and get.
    let listed = api.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(api.get("site").await?.spec.content, "hello");

    // Status through the status subresource; the main resource ignores status changes.
    let patched = api
        .patch_status(
            "site",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1}})),
        )
        .await?;
    assert_eq!(patched.status.as_ref().map(|s| s.ready_replicas), Some(1));
    let ignored = api
        .patch(
            "site",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 7}})),
        )
        .await?;
    assert_eq!(ignored.status.as_ref().map(|s| s.ready_replicas), Some(1));

    // Scale subresource: read, then write replicas through it.
    let scale = api.get_scale("site").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    api.patch_scale(
        "site",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await?;
    assert_eq!(api.get("site").await?.spec.replicas, 4);

    // Server-side apply of a typed object by a second manager.
    let apply = json!({
        "apiVersion": "example.kumo.dev/v1",
        "kind": "WebServer",
        "spec": {"replicas": 4, "content": "applied", "port": 8080},
    });
    let applied = api
        .patch(
            "site",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&apply),
        )
        .await?;
    assert_eq!(applied.spec.content, "applied");

    api.delete("site", &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_reconciles_webservers() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let _nodes = kumo.hollow_nodes(&["--count", "2"])?;
    let client = kumo.client().await?;
    install_crd(&client).await?;
    let operator = tokio::spawn(webserver_operator::run(client.clone()));

    let api: Api<WebServer> = Api::namespaced(client.clone(), "default");
    let ws = WebServer::new(
        "site",
        WebServerSpec {
            replicas: 2,
            content: "<h1>hello from kumo</h1>".into(),
            port: 8080,
        },
    );
    let ws = api.create(&PostParams::default(), &ws).await?;
    let uid = ws.uid().unwrap_or_default();

    // Children exist, owned by the WebServer.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    eventually(20, "the children", || async {
        Ok(deployments.get_opt("site").await?.is_some()
            && services.get_opt("site").await?.is_some()
            && config_maps.get_opt("site-content").await?.is_some())
    })
    .await?;
    let deployment = deployments.get("site").await?;
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("WebServer", uid.as_str(), Some(true))
    );
    let page = config_maps.get("site-content").await?;
    assert_eq!(
        page.data
            .unwrap_or_default()
            .get("index.html")
            .map(String::as_str),
        Some("<h1>hello from kumo</h1>")
    );

    // The Deployment's pods run on the hollow nodes; the status reports them ready.
    eventually(60, "2 ready replicas", || async {
        Ok(api
            .get("site")
            .await?
            .status
            .is_some_and(|s| s.ready_replicas == 2))
    })
    .await?;
    let table = kumo.kubectl(&["get", "webservers"])?;
    assert!(table.contains("READY") && table.contains("site"), "{table}");

    // Scaling the WebServer (through its scale subresource, as kubectl does) scales the
    // Deployment.
    kumo.kubectl(&["scale", "webserver", "site", "--replicas=3"])?;
    eventually(60, "3 ready replicas", || async {
        Ok(api
            .get("site")
            .await?
            .status
            .is_some_and(|s| s.ready_replicas == 3))
    })
    .await?;

    // Deleting the WebServer deletes what it owns.
    api.delete("site", &DeleteParams::default()).await?;
    eventually(60, "the children to be collected", || async {
        Ok(deployments.get_opt("site").await?.is_none()
            && services.get_opt("site").await?.is_none()
            && config_maps.get_opt("site-content").await?.is_none())
    })
    .await?;
    operator.abort();
    Ok(())
}
