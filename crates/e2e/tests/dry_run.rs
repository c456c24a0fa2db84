//! `dryRun=All` on every write verb: the reply is what would be written, the store is
//! untouched. Driven through kubectl's `--dry-run=server` where it has one, kube-rs elsewhere.

use std::time::Duration;

use e2e::Kumo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"set": "dry"}},
        "data": {"v": value},
    }))
    .expect("valid ConfigMap")
}

fn value(cm: &ConfigMap) -> &str {
    cm.data
        .as_ref()
        .and_then(|d| d.get("v"))
        .map_or("", String::as_str)
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_every_patch_type_write_nothing() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    let stored = cms
        .create(&PostParams::default(), &configmap("cm", "1"))
        .await?;
    let rv = stored.metadata.resource_version.clone();

    let mut replaced = stored.clone();
    replaced.data = Some([("v".to_owned(), "put".to_owned())].into());
    let reply = cms.replace("cm", &dry_post(), &replaced).await?;
    assert_eq!(value(&reply), "put", "the reply is what would be written");

    let dry = PatchParams::default().dry_run();
    let merge = Patch::Merge(json!({"data": {"v": "merge"}}));
    assert_eq!(value(&cms.patch("cm", &dry, &merge).await?), "merge");
    let strategic = Patch::Strategic(json!({"data": {"v": "strategic"}}));
    assert_eq!(
        value(&cms.patch("cm", &dry, &strategic).await?),
        "strategic"
    );
    let apply = PatchParams::apply("dry-test").force().dry_run();
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "cm"}, "data": {"v": "apply"}});
    assert_eq!(
        value(&cms.patch("cm", &apply, &Patch::Apply(&config)).await?),
        "apply"
    );
    // Apply that would create makes nothing either.
    let fresh = json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "fresh"}, "data": {"v": "new"}});
    let reply = cms.patch("fresh", &apply, &Patch::Apply(&fresh)).await?;
    assert_eq!(value(&reply), "new");
    assert!(
        cms.get_opt("fresh").await?.is_none(),
        "apply dry run created"
    );

    // kubectl's server-side dry runs of the same verbs.
    let out = kumo.kubectl(&[
        "patch",
        "cm",
        "cm",
        "--dry-run=server",
        "-o",
        "jsonpath={.data.v}",
        "-p",
        r#"{"data":{"v":"k"}}"#,
    ])?;
    assert_eq!(out, "k");
    let out = kumo.kubectl(&[
        "patch",
        "cm",
        "cm",
        "--type=json",
        "--dry-run=server",
        "-o",
        "jsonpath={.data.v}",
        "-p",
        r#"[{"op":"replace","path":"/data/v","value":"kj"}]"#,
    ])?;
    assert_eq!(out, "kj");
    let out = kumo.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "jsonpath={.data.v}",
        ],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {v: kapply}\n",
    )?;
    assert_eq!(out, "kapply");
    let out = kumo.kubectl_stdin(
        &[
            "replace",
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "jsonpath={.data.v}",
        ],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {v: kreplace}\n",
    )?;
    assert_eq!(out, "kreplace");

    let now = cms.get("cm").await?;
    assert_eq!(value(&now), "1");
    assert_eq!(now.metadata.resource_version, rv, "nothing was written");
    assert_eq!(
        now.metadata.managed_fields.as_ref().map(Vec::len),
        stored.metadata.managed_fields.as_ref().map(Vec::len),
        "no manager was recorded"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_leave_objects_in_place() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let client = kumo.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let dry = DeleteParams::default().dry_run();

    cms.create(&PostParams::default(), &configmap("plain", "1"))
        .await?;
    // ConfigMaps answer an immediate delete with a Success status, as upstream's do.
    let reply = cms.delete("plain", &dry).await?;
    assert!(reply.is_right(), "{reply:?}");
    assert!(
        cms.get_opt("plain").await?.is_some(),
        "dry-run delete removed it"
    );
    kumo.kubectl(&["delete", "cm", "plain", "--dry-run=server"])?;
    assert!(
        cms.get_opt("plain").await?.is_some(),
        "kubectl dry-run delete removed it"
    );

    // With a finalizer the reply shows the deletion mark the real delete would set.
    let mut held = configmap("held", "1");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await?;
    let shown = cms.delete("held", &dry).await?.left().expect("object");
    assert!(shown.metadata.deletion_timestamp.is_some(), "{shown:?}");
    let now = cms.get("held").await?;
    assert!(
        now.metadata.deletion_timestamp.is_none(),
        "dry run marked it"
    );

    // A graceful pod delete (the pod is bound, so it waits for its node) marks nothing.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "nowhere", "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let graceful = DeleteParams {
        grace_period_seconds: Some(20),
        ..DeleteParams::default().dry_run()
    };
    let shown = pods
        .delete("p", &graceful)
        .await?
        .left()
        .expect("pods return the object");
    assert!(
        shown.metadata.deletion_timestamp.is_some(),
        "{:?}",
        shown.metadata
    );
    assert_eq!(shown.metadata.deletion_grace_period_seconds, Some(20));
    kumo.kubectl(&["delete", "pod", "p", "--dry-run=server", "--grace-period=5"])?;
    let now = pods.get("p").await?;
    assert!(
        now.metadata.deletion_timestamp.is_none(),
        "{:?}",
        now.metadata
    );
    assert!(now.metadata.deletion_grace_period_seconds.is_none());

    // Delete-collection lists what it would delete and deletes none of it.
    cms.create(&PostParams::default(), &configmap("other", "2"))
        .await?;
    let selected = ListParams::default().labels("set=dry");
    let reply = cms.delete_collection(&dry, &selected).await?;
    let listed = reply.left().expect("a list of what would be deleted");
    assert_eq!(listed.items.len(), 3, "plain, held and other");
    kumo.kubectl(&["delete", "cm", "-l", "set=dry", "--dry-run=server"])?;
    assert_eq!(cms.list(&selected).await?.items.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_status_subresources_write_nothing() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let client = kumo.client().await?;
    kumo.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=1",
    ])?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);

    let dry = PatchParams::default().dry_run();
    let scale: Scale = deploys
        .patch_scale("web", &dry, &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    let mut current: Scale = deploys.get_scale("web").await?;
    // The controllers write the deployment meanwhile; replace without a precondition.
    current.metadata.resource_version = None;
    current.spec = Some(k8s_openapi::api::autoscaling::v1::ScaleSpec { replicas: Some(7) });
    let scale: Scale = deploys.replace_scale("web", &dry_post(), &current).await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(7));
    kumo.kubectl(&["scale", "deploy", "web", "--replicas=9", "--dry-run=server"])?;
    assert_eq!(replicas(&deploys.get("web").await?), Some(1));
    assert_eq!(
        deploys
            .get_scale("web")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(1)
    );

    // Nothing else writes a ClusterIP service's status, so any change would be ours.
    kumo.kubectl(&["create", "service", "clusterip", "svc", "--tcp=80:8080"])?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}});
    let reply = services
        .patch_status("svc", &dry, &Patch::Merge(ingress.clone()))
        .await?;
    let ips = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(ips(&reply), ["192.0.2.7"]);
    let mut with_status = services.get("svc").await?;
    let rv = with_status.metadata.resource_version.clone();
    with_status.status = Some(serde_json::from_value(ingress["status"].clone())?);
    let reply = services
        .replace_status("svc", &dry_post(), &with_status)
        .await?;
    assert_eq!(ips(&reply), ["192.0.2.7"]);
    let now = services.get("svc").await?;
    assert!(ips(&now).is_empty(), "status was written");
    assert_eq!(now.metadata.resource_version, rv);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_delete_dry_run_leaves_the_namespace_and_its_objects() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let client = kumo.client().await?;
    kumo.kubectl(&["create", "namespace", "keep"])?;
    kumo.kubectl(&[
        "create",
        "configmap",
        "inside",
        "-n",
        "keep",
        "--from-literal=v=1",
    ])?;
    let out = kumo.kubectl(&["delete", "ns", "keep", "--dry-run=server"])?;
    assert!(
        out.contains("namespace \"keep\" deleted (server dry run)"),
        "{out}"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "keep");
    // The namespace controller would act within moments on a real delete; give it time.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        let ns = namespaces.get("keep").await?;
        assert!(
            ns.metadata.deletion_timestamp.is_none(),
            "{:?}",
            ns.metadata
        );
        assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
        assert!(
            cms.get_opt("inside").await?.is_some(),
            "its objects were removed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And new objects are still accepted there.
    cms.create(&PostParams::default(), &configmap("later", "2"))
        .await?;
    Ok(())
}
