//! CustomResourceDefinitions with kubectl: served at once, validated with field paths,
//! defaulted and pruned, printer columns, status subresource, and deleted with their CRD.

use std::time::Duration;

use e2e::{Kumo, eventually};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas <= 10"
              message: "at most 10 replicas"
            properties:
              cronSpec:
                type: string
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 1
                default: 1
          status:
            type: object
            properties:
              ready:
                type: boolean
              replicas:
                type: integer
"#;

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn custom_resources_end_to_end() -> anyhow::Result<()> {
    let mut kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    let crd = write(dir.path(), "crd.yaml", CRD);
    kumo.kubectl(&["apply", "-f", &crd])?;
    let established = kumo.kubectl(&[
        "get",
        "crd",
        "crontabs.stable.example.com",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ])?;
    assert_eq!(established, "True");
    let explain = kumo.kubectl(&["explain", "crontab.spec.replicas"])?;
    assert!(
        explain.contains("CronTab")
            && explain.contains("replicas")
            && explain.contains("<integer>"),
        "{explain}"
    );
    let resources = kumo.kubectl(&["api-resources", "--api-group=stable.example.com"])?;
    assert!(
        resources.contains("crontabs") && resources.contains("ct") && resources.contains("CronTab"),
        "{resources}"
    );

    let good = write(
        dir.path(),
        "good.yaml",
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: nightly\nspec:\n  cronSpec: '0 3 * * *'\n  image: backup:1\n  bogus: dropped\n",
    );
    kumo.kubectl(&["apply", "-f", &good, "--validate=false"])?;
    let obj: serde_json::Value =
        serde_json::from_str(&kumo.kubectl(&["get", "ct", "nightly", "-o", "json"])?)?;
    assert_eq!(obj["spec"]["replicas"], 1, "defaulted");
    assert!(obj["spec"].get("bogus").is_none(), "pruned");
    assert_eq!(obj["metadata"]["generation"], 1);
    let table = kumo.kubectl(&["get", "crontabs"])?;
    assert!(
        table.contains("SPEC") && table.contains("REPLICAS") && table.contains("0 3 * * *"),
        "{table}"
    );
    assert!(
        kumo.kubectl(&["get", "all"])?
            .contains("crontab.stable.example.com/nightly")
    );

    // Schema and CEL validation with field paths.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  cronSpec: 'never'\n  replicas: 0\n",
    );
    let err = kumo.kubectl_fails(&["apply", "-f", &bad])?;
    assert!(
        err.contains("spec.cronSpec") && err.contains("spec.replicas"),
        "{err}"
    );
    let too_many = write(
        dir.path(),
        "many.yaml",
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: many\nspec:\n  cronSpec: '* * * * *'\n  replicas: 11\n",
    );
    let err = kumo.kubectl_fails(&["apply", "-f", &too_many])?;
    assert!(err.contains("at most 10 replicas"), "{err}");

    // The status subresource: the main resource ignores status, /status changes only it.
    kumo.kubectl(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":true}}"#,
    ])?;
    assert_eq!(
        kumo.kubectl(&["get", "ct", "nightly", "-o", "jsonpath={.status.ready}"])?,
        ""
    );
    kumo.kubectl(&[
        "patch",
        "ct",
        "nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":true}}"#,
    ])?;
    assert_eq!(
        kumo.kubectl(&["get", "ct", "nightly", "-o", "jsonpath={.status.ready}"])?,
        "true"
    );
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "ct",
            "nightly",
            "-o",
            "jsonpath={.metadata.generation}"
        ])?,
        "1"
    );

    // The scale subresource follows the CRD's paths.
    kumo.kubectl(&["scale", "crontab", "nightly", "--replicas=3"])?;
    assert_eq!(
        kumo.kubectl(&["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"])?,
        "3"
    );
    let err = kumo.kubectl_fails(&["scale", "crontab", "nightly", "--replicas=11"])?;
    assert!(err.contains("at most 10 replicas"), "{err}");

    // Served again after a restart.
    kumo.restart()?;
    assert!(
        kumo.kubectl(&["get", "ct", "-o", "name"])?
            .contains("crontab.stable.example.com/nightly")
    );

    // Deleting the CRD deletes its objects and stops serving the kind.
    kumo.kubectl(&["delete", "crd", "crontabs.stable.example.com"])?;
    assert!(eventually(Duration::from_secs(10), || kumo
        .kubectl_fails(&["get", "crontabs"])
        .is_ok()));
    kumo.kubectl(&["apply", "-f", &crd])?;
    assert_eq!(
        kumo.kubectl(&["get", "crontabs", "-o", "name"])?.trim(),
        "",
        "objects did not survive the CRD"
    );
    Ok(())
}

const MULTI_VERSION_CLUSTER_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: regions.geo.example.com
spec:
  group: geo.example.com
  scope: Cluster
  names: {plural: regions, singular: region, kind: Region}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {zone: {type: string}}}
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {zone: {type: string}, capacity: {type: integer, default: 3}}}
  conversion: {strategy: None}
"#;

/// A cluster-scoped CRD served in two versions with conversion `None`: objects are served
/// in either version (only apiVersion differs), have no namespace, and each version is
/// validated by its own schema.
#[test]
fn cluster_scoped_crd_in_two_versions() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    let dir = tempfile::tempdir()?;
    kumo.kubectl(&[
        "apply",
        "-f",
        &write(dir.path(), "crd.yaml", MULTI_VERSION_CLUSTER_CRD),
    ])?;
    assert!(eventually(Duration::from_secs(10), || {
        kumo.kubectl(&["get", "regions"]).is_ok()
    }));
    kumo.kubectl(&[
        "apply",
        "-f",
        &write(
            dir.path(),
            "r.yaml",
            "apiVersion: geo.example.com/v1beta1\nkind: Region\nmetadata: {name: north}\nspec: {zone: n1}\n",
        ),
    ])?;
    // Stored in v1 (defaulted by v1's schema), served in both versions.
    let v1 = kumo.kubectl(&["get", "--raw", "/apis/geo.example.com/v1/regions/north"])?;
    let v1: serde_json::Value = serde_json::from_str(&v1)?;
    assert_eq!(v1["apiVersion"], "geo.example.com/v1");
    assert_eq!(v1["spec"]["zone"], "n1");
    assert!(v1["metadata"].get("namespace").is_none(), "{v1}");
    let beta = kumo.kubectl(&[
        "get",
        "--raw",
        "/apis/geo.example.com/v1beta1/regions/north",
    ])?;
    let beta: serde_json::Value = serde_json::from_str(&beta)?;
    assert_eq!(beta["apiVersion"], "geo.example.com/v1beta1");
    assert_eq!(beta["metadata"]["uid"], v1["metadata"]["uid"]);
    // Cluster-scoped: no namespaced path.
    let namespaced = kumo.kubectl_fails(&[
        "get",
        "--raw",
        "/apis/geo.example.com/v1/namespaces/default/regions/north",
    ])?;
    assert!(
        namespaced.contains("NotFound") || namespaced.contains("not found"),
        "{namespaced}"
    );
    // Each version validates with its own schema.
    let bad = kumo.kubectl_fails(&[
        "apply",
        "-f",
        &write(
            dir.path(),
            "bad.yaml",
            "apiVersion: geo.example.com/v1\nkind: Region\nmetadata: {name: south}\nspec: {capacity: lots}\n",
        ),
    ])?;
    assert!(bad.contains("spec.capacity"), "{bad}");
    // Discovery lists both versions, v1 preferred.
    let group = kumo.kubectl(&["get", "--raw", "/apis/geo.example.com"])?;
    let group: serde_json::Value = serde_json::from_str(&group)?;
    assert_eq!(group["preferredVersion"]["version"], "v1");
    assert_eq!(group["versions"].as_array().map(Vec::len), Some(2));
    Ok(())
}
