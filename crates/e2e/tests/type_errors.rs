//! Wrongly typed fields in built-in kinds are decoding errors, as upstream's Go decoder makes
//! them: a create gets 400 and stores nothing, a patch whose result would hold a wrong type
//! gets 422 on `patch` and leaves the object alone, whatever `fieldValidation` says.

use e2e::Kumo;

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn kubectl_create_of_a_wrongly_typed_pod_is_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    let grace = write(
        dir.path(),
        "grace.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: grace}\nspec:\n  terminationGracePeriodSeconds: abc\n  containers: [{name: c, image: busybox}]\n",
    );
    // --validate=false leaves the check to the server whatever kubectl would do itself.
    for validate in ["--validate=strict", "--validate=false", "--validate=ignore"] {
        let err = kumo.kubectl_fails(&["create", "-f", &grace, validate])?;
        assert!(
            err.contains("Error from server (BadRequest)")
                && err.contains(
                    "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field PodSpec.spec.terminationGracePeriodSeconds of type int64"
                ),
            "{validate}: {err}"
        );
    }
    let secret_name = write(
        dir.path(),
        "secret.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: vol}\nspec:\n  containers: [{name: c, image: busybox}]\n  volumes: [{name: v, secret: {secretName: true}}]\n",
    );
    let err = kumo.kubectl_fails(&["create", "-f", &secret_name, "--validate=false"])?;
    assert!(
        err.contains("cannot unmarshal bool into Go struct field SecretVolumeSource.spec.volumes.secret.secretName of type string"),
        "{err}"
    );
    let pods = kumo.kubectl(&["get", "pods", "-o", "name"])?;
    assert_eq!(pods.trim(), "", "nothing stored");

    // The same pod with the right types is fine, and null means "unset".
    let fine = write(
        dir.path(),
        "fine.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: fine}\nspec:\n  terminationGracePeriodSeconds: null\n  containers: [{name: c, image: busybox, ports: [{containerPort: 80}]}]\n  volumes: [{name: v, secret: {secretName: s}}]\n",
    );
    kumo.kubectl(&["create", "-f", &fine])?;
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "pod",
            "fine",
            "-o",
            "jsonpath={.spec.terminationGracePeriodSeconds}"
        ])?,
        "30"
    );
    Ok(())
}

#[test]
fn patches_that_would_store_a_wrong_type_are_refused() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "deployment", "web", "--image=nginx"])?;
    let before = kumo.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])?;

    let err = kumo.kubectl_fails(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":"three"}}"#,
    ])?;
    assert!(
        err.contains("is invalid: patch: Invalid value:")
            && err.contains("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"),
        "{err}"
    );
    let err = kumo.kubectl_fails(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/hostNetwork","value":"yes"}]"#,
    ])?;
    assert!(
        err.contains("cannot unmarshal string into Go struct field PodSpec.spec.template.spec.hostNetwork of type bool"),
        "{err}"
    );
    let err = kumo.kubectl_fails(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","ports":[{"containerPort":1.5}]}]}}}}"#,
    ])?;
    assert!(
        err.contains("cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"),
        "{err}"
    );
    // Server-side apply types the configuration first.
    let err = kumo
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=t", "-f", "-"],
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {paused: \"no\"}\n",
        )
        .expect_err("apply of a wrong type")
        .to_string();
    assert!(
        err.contains("failed to create typed patch object")
            && err.contains(".spec.paused: expected boolean, got string"),
        "{err}"
    );
    let after = kumo.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])?;
    assert_eq!(before, after, "the deployment is unchanged");

    // fieldValidation=Ignore does not let a wrong type through: it is not a field problem.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = kumo.client().await?;
        let create = |labels: serde_json::Value| {
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm", "labels": labels},
                "data": {"k": "v"},
            });
            http::Request::post("/api/v1/namespaces/default/configmaps?fieldValidation=Ignore")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).expect("json"))
                .expect("request")
        };
        let err = client
            .request::<serde_json::Value>(create(serde_json::json!({"n": 1})))
            .await
            .expect_err("wrong label type");
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
        assert!(
            status.message.contains(
                "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
            ),
            "{}",
            status.message
        );
        client
            .request::<serde_json::Value>(create(serde_json::json!({"n": "1"})))
            .await?;
        anyhow::Ok(())
    })?;
    Ok(())
}
