//! Events: written through events.k8s.io/v1 or core/v1, both views show them, and
//! `kubectl describe` finds an object's events by involvedObject field selectors.

use e2e::Kumo;

#[test]
fn events_in_both_apis_show_in_describe() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "configmap", "watched", "--from-literal=a=b"])?;
    let uid = kumo.kubectl(&["get", "cm", "watched", "-o", "jsonpath={.metadata.uid}"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("event.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: watched.1\n  namespace: default\nregarding:\n  apiVersion: v1\n  kind: ConfigMap\n  name: watched\n  namespace: default\n  uid: {uid}\nreason: Checked\nnote: all good here\ntype: Normal\naction: Check\nreportingController: kumo.test/checker\nreportingInstance: checker-1\neventTime: \"2026-01-01T00:00:00.000000Z\"\n"
        ),
    )?;
    kumo.kubectl(&["create", "-f", &file.to_string_lossy()])?;
    let core = kumo.kubectl(&[
        "get",
        "events.v1.",
        "-o",
        "jsonpath={.items[0].message}/{.items[0].involvedObject.name}",
    ])?;
    assert_eq!(core, "all good here/watched");
    let new_api = kumo.kubectl(&[
        "get",
        "events.v1.events.k8s.io",
        "watched.1",
        "-o",
        "jsonpath={.note}/{.regarding.uid}",
    ])?;
    assert_eq!(new_api, format!("all good here/{uid}"));
    let by_selector = kumo.kubectl(&[
        "get",
        "events.v1.events.k8s.io",
        "--field-selector",
        "regarding.name=watched,reason=Checked",
        "-o",
        "name",
    ])?;
    assert!(by_selector.contains("watched.1"), "{by_selector}");
    let describe = kumo.kubectl(&["describe", "configmap", "watched"])?;
    assert!(
        describe.contains("Checked") && describe.contains("all good here"),
        "{describe}"
    );
    Ok(())
}
