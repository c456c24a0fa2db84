//! kube-rs against a real `kumo server`: optimistic concurrency, watch resumption across a
//! restart, 410 for compacted revisions, and two clusters on one datastore.

use std::time::Duration;

use e2e::{Kumo, client_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"v": value},
    }))
    .expect("valid ConfigMap")
}

/// Reads the next non-bookmark watch event, within a time limit.
async fn next_event<S>(stream: &mut S) -> anyhow::Result<(String, String, String)>
where
    S: futures::Stream<Item = Result<WatchEvent<ConfigMap>, kube::Error>> + Unpin,
{
    loop {
        let event = tokio::time::timeout(Duration::from_secs(15), stream.try_next())
            .await?
            .map_err(anyhow::Error::from)?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        let (kind, obj) = match event {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => anyhow::bail!("watch error: {e:?}"),
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        return Ok((kind.to_owned(), name, rv));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_is_a_conflict() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    let created = cms
        .create(&PostParams::default(), &configmap("occ", "1"))
        .await?;
    let mut first = created.clone();
    first.data = Some([("v".to_owned(), "2".to_owned())].into());
    let updated = cms.replace("occ", &PostParams::default(), &first).await?;
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let mut stale = created.clone();
    stale.data = Some([("v".to_owned(), "3".to_owned())].into());
    match cms.replace("occ", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409);
            assert_eq!(e.reason, "Conflict");
        }
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
    assert_eq!(
        cms.get("occ")
            .await?
            .data
            .and_then(|d| d.get("v").cloned())
            .as_deref(),
        Some("2")
    );

    // A no-op update keeps the resourceVersion.
    let same = cms.replace("occ", &PostParams::default(), &updated).await?;
    assert_eq!(
        same.metadata.resource_version,
        updated.metadata.resource_version
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_restart_without_gaps_or_repeats() -> anyhow::Result<()> {
    // API semantics only: the control loops' own writes would interleave with the events.
    let mut kumo = Kumo::start_with(&["--no-control-loops"])?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    for i in 0..3 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("before-{i}"), "x"),
        )
        .await?;
    }
    let list = cms.list(&ListParams::default()).await?;
    let list_rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut stream = cms.watch(&WatchParams::default(), &list_rv).await?.boxed();
    cms.create(&PostParams::default(), &configmap("during-1", "x"))
        .await?;
    cms.create(&PostParams::default(), &configmap("during-2", "x"))
        .await?;
    let (k1, n1, _) = next_event(&mut stream).await?;
    let (k2, n2, last_rv) = next_event(&mut stream).await?;
    assert_eq!(
        (k1.as_str(), n1.as_str(), k2.as_str(), n2.as_str()),
        ("ADDED", "during-1", "ADDED", "during-2")
    );
    drop(stream);

    tokio::task::block_in_place(|| kumo.restart())?;

    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    cms.create(&PostParams::default(), &configmap("after-1", "x"))
        .await?;
    cms.patch(
        "during-1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"v": "y"}})),
    )
    .await?;
    cms.delete("during-2", &DeleteParams::default()).await?;
    let mut stream = cms.watch(&WatchParams::default(), &last_rv).await?.boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (kind, name, _) = next_event(&mut stream).await?;
        seen.push(format!("{kind} {name}"));
    }
    assert_eq!(
        seen,
        ["ADDED after-1", "MODIFIED during-1", "DELETED during-2"]
    );
    // Nothing else is pending: no event is repeated.
    let extra = tokio::time::timeout(Duration::from_millis(700), stream.try_next()).await;
    assert!(
        matches!(extra, Err(_) | Ok(Ok(Some(WatchEvent::Bookmark(_))))),
        "unexpected extra event: {extra:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_is_gone() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&[
        "--no-control-loops",
        "--compaction-retention-seconds",
        "1",
        "--compaction-interval-seconds",
        "1",
    ])?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    let created = cms
        .create(&PostParams::default(), &configmap("churn", "0"))
        .await?;
    let old_rv = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut i = 0;
    loop {
        i += 1;
        cms.patch(
            "churn",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"v": i.to_string()}})),
        )
        .await?;
        let mut stream = cms.watch(&WatchParams::default(), &old_rv).await?.boxed();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await?;
        match first {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!(e.code, 410);
                assert_eq!(e.reason, "Expired");
                break;
            }
            Some(Ok(WatchEvent::Modified(_))) => {}
            other => panic!("unexpected first event {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A list at the compacted revision is gone too.
    let exact = ListParams::default()
        .at(&old_rv)
        .matching(kube::api::VersionMatch::Exact);
    match cms.list(&exact).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_a_datastore_but_not_data() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--extra-cluster", "team-a"])?;
    let root = kumo.client().await?;
    let team = client_for(&kumo.data_dir().join("clusters/team-a/admin.kubeconfig")).await?;
    let root_cms: Api<ConfigMap> = Api::namespaced(root.clone(), "default");
    let team_cms: Api<ConfigMap> = Api::namespaced(team.clone(), "default");
    root_cms
        .create(&PostParams::default(), &configmap("same-name", "root"))
        .await?;
    team_cms
        .create(&PostParams::default(), &configmap("same-name", "team"))
        .await?;
    team_cms
        .create(&PostParams::default(), &configmap("team-only", "team"))
        .await?;
    let value = |cm: ConfigMap| {
        cm.data
            .and_then(|d| d.get("v").cloned())
            .unwrap_or_default()
    };
    assert_eq!(value(root_cms.get("same-name").await?), "root");
    assert_eq!(value(team_cms.get("same-name").await?), "team");
    assert!(root_cms.get_opt("team-only").await?.is_none());
    let root_names: Vec<String> = root_cms
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    assert_eq!(root_names, ["same-name"]);
    // Each cluster runs its own control loops, leader-elected in its own kube-system.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(team.clone(), "kube-system");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while leases.get_opt("kube-controller-manager").await?.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "team-a's controllers never elected a leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let team_ns: Api<Namespace> = Api::all(team.clone());
    team_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "team-ns"}}))?,
        )
        .await?;
    let root_ns: Api<Namespace> = Api::all(root.clone());
    assert!(root_ns.get_opt("team-ns").await?.is_none());
    team_cms
        .delete("same-name", &DeleteParams::default())
        .await?;
    assert_eq!(value(root_cms.get("same-name").await?), "root");

    // Watches are scoped too: a watch on the root cluster sees none of the team's writes.
    let list_rv = root_cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = root_cms
        .watch(&WatchParams::default(), &list_rv)
        .await?
        .boxed();
    team_cms
        .create(&PostParams::default(), &configmap("team-2", "team"))
        .await?;
    root_cms
        .create(&PostParams::default(), &configmap("root-2", "root"))
        .await?;
    let (kind, name, _) = next_event(&mut stream).await?;
    assert_eq!((kind.as_str(), name.as_str()), ("ADDED", "root-2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_lists_are_complete_and_consistent() -> anyhow::Result<()> {
    // Exact page contents: no control loops adding their own ConfigMaps.
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    for i in 0..7 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("page-{i}"), "x"),
        )
        .await?;
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    let mut pages = 0;
    let mut list_rv = None;
    loop {
        let page = cms.list(&params).await?;
        pages += 1;
        list_rv.get_or_insert(page.metadata.resource_version.clone());
        // Writes between pages do not show up in later pages of the same list.
        cms.create(
            &PostParams::default(),
            &configmap(&format!("late-{pages}"), "x"),
        )
        .await?;
        names.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("page-{i}")).collect();
    assert_eq!(names, expected);
    assert_eq!(pages, 3);
    // kubectl follows continue tokens too.
    let out = kumo.kubectl(&["get", "configmaps", "--chunk-size=2", "-o", "name"])?;
    assert_eq!(out.lines().count(), 7 + 3, "{out}");
    Ok(())
}

/// Metadata-only reads, as metadata informers use them (kube-rs `metadata_watcher`,
/// client-go's metadata informers, and kube-runtime's `Controller::owns`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_get_list_and_watch() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    cms.create(&PostParams::default(), &configmap("meta-a", "secret-ish"))
        .await?;
    let one = cms.get_metadata("meta-a").await?;
    assert_eq!(one.metadata.name.as_deref(), Some("meta-a"));
    assert_eq!(
        one.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    let list = cms.list_metadata(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let raw = kumo.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps/meta-a",
    ])?;
    assert!(raw.contains("secret-ish"), "plain GET still returns data");

    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut stream = cms
        .watch_metadata(&WatchParams::default(), &rv)
        .await?
        .boxed();
    cms.create(&PostParams::default(), &configmap("meta-b", "x"))
        .await?;
    let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await??
        .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
    match event {
        WatchEvent::Added(obj) => assert_eq!(obj.metadata.name.as_deref(), Some("meta-b")),
        other => panic!("unexpected event {other:?}"),
    }
    Ok(())
}
