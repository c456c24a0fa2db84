//! Fuzzes JSON, merge and strategic merge patches over a pod: any patch must apply or fail
//! cleanly, never panic.
#![no_main]

use serde_json::{Value, json};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(patch) = serde_json::from_slice::<Value>(data) else { return };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "env": [{"name": "X", "value": "1"}]}],
                 "volumes": [{"name": "v", "emptyDir": {}}]},
    });
    let _ = apimachinery::patch::json::apply(&pod, &patch);
    let _ = apimachinery::patch::merge::apply(&pod, &patch);
    let schema = apimachinery::schema::builtin().node("io.k8s.api.core.v1.Pod");
    let _ = apimachinery::patch::strategic::apply(&pod, &patch, schema);
});
