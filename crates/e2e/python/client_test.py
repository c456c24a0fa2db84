"""The official Python `kubernetes` client against kumo: CRUD and watch on Deployments
and ConfigMaps. Run by crates/e2e/tests/python_client.rs with KUBECONFIG set."""

import os
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"


def deployment(name, replicas, image):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=image)]),
            ),
        ),
    )


def check(cond, msg):
    if not cond:
        print("FAILED: " + msg, file=sys.stderr)
        sys.exit(1)


def main():
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    # ConfigMaps: create, read, patch, replace, list by label, delete.
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"src": "py"}), data={"a": "1"})
    created = core.create_namespaced_config_map(NS, cm)
    check(created.metadata.uid, "created configmap has a uid")
    core.patch_namespaced_config_map("py-cm", NS, {"data": {"b": "2"}})
    got = core.read_namespaced_config_map("py-cm", NS)
    check(got.data == {"a": "1", "b": "2"}, "patched data: %r" % got.data)
    got.data["c"] = "3"
    replaced = core.replace_namespaced_config_map("py-cm", NS, got)
    check(replaced.data["c"] == "3", "replaced")
    listed = core.list_namespaced_config_map(NS, label_selector="src=py")
    check([i.metadata.name for i in listed.items] == ["py-cm"], "label selector list")
    try:
        core.replace_namespaced_config_map("py-cm", NS, got)
        check(False, "stale replace should conflict")
    except ApiException as e:
        check(e.status == 409, "stale replace status %d" % e.status)

    # Deployments: create, read, scale by patch, list, delete; generation moves with spec.
    d = apps.create_namespaced_deployment(NS, deployment("py-web", 2, "busybox:1.36"))
    check(d.metadata.generation == 1, "generation starts at 1")
    apps.patch_namespaced_deployment("py-web", NS, {"spec": {"replicas": 5}})
    d = apps.read_namespaced_deployment("py-web", NS)
    check(d.spec.replicas == 5 and d.metadata.generation == 2, "patched replicas and generation")
    names = [i.metadata.name for i in apps.list_namespaced_deployment(NS).items]
    check(names == ["py-web"], "deployment list: %r" % names)

    # Watch: events for writes made after the list's resourceVersion.
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    seen = []

    def writer():
        time.sleep(0.5)
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-w"), data={}))
        core.patch_namespaced_config_map("py-w", NS, {"data": {"x": "y"}})
        core.delete_namespaced_config_map("py-w", NS)

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    t.join()
    check(seen == [("ADDED", "py-w"), ("MODIFIED", "py-w"), ("DELETED", "py-w")], "watch events: %r" % seen)

    # Deployment watch with a field selector on the name.
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, NS, field_selector="metadata.name=py-web", timeout_seconds=10):
        check(event["type"] == "ADDED" and event["object"].metadata.name == "py-web", "initial deployment event")
        w.stop()

    apps.delete_namespaced_deployment("py-web", NS)
    core.delete_namespaced_config_map("py-cm", NS)
    try:
        apps.read_namespaced_deployment("py-web", NS)
        check(False, "deleted deployment should be gone")
    except ApiException as e:
        check(e.status == 404, "read after delete status %d" % e.status)
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
