//! Compares kumo's schema extensions and GVKs with the upstream Kubernetes 1.33 definitions
//! shipped by the PyPI package `kubernetes-validate`.
//!
//! The test fails when the package is missing, unless `KUMO_SKIP_PYTHON_TESTS=1` is set.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use apimachinery::kinds::{self, GroupVersion, GroupVersionKind};
use apimachinery::schema::{self, gvks_of};
use serde_json::Value;

/// The property extensions that must match upstream.
const KEYS: &[&str] = &[
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];

/// Finds `_definitions.json` of Kubernetes 1.33 inside the installed `kubernetes_validate`.
fn upstream_definitions() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let path = dir
        .join("kubernetes-json-schema")
        .join("v1.33.0-local")
        .join("_definitions.json");
    path.is_file().then_some(path)
}

fn extensions(schema: &Value) -> Vec<(&'static str, Value)> {
    KEYS.iter()
        .filter_map(|k| schema.get(*k).map(|v| (*k, v.clone())))
        .collect()
}

#[test]
fn extensions_and_gvks_match_upstream() {
    let Some(path) = upstream_definitions() else {
        if std::env::var("KUMO_SKIP_PYTHON_TESTS").as_deref() == Ok("1") {
            eprintln!(
                "skipping: kubernetes-validate is not installed and KUMO_SKIP_PYTHON_TESTS=1"
            );
            return;
        }
        panic!(
            "kubernetes-validate is not installed (pip install kubernetes-validate), or set KUMO_SKIP_PYTHON_TESTS=1"
        );
    };
    let text = std::fs::read_to_string(&path).expect("read upstream definitions");
    let upstream: Value = serde_json::from_str(&text).expect("parse upstream definitions");
    let upstream = upstream
        .get("$defs")
        .and_then(Value::as_object)
        .expect("$defs");
    let ours = schema::builtin();

    let mut served: BTreeSet<GroupVersion> =
        kinds::builtin().iter().map(|k| k.group_version()).collect();
    served.insert(GroupVersion::new("", "v1"));

    let mut mismatches = Vec::new();
    let mut n_compared = 0;
    let mut n_definitions = 0;
    for (name, ours_def) in ours.definitions() {
        let Some(up_def) = upstream.get(name) else {
            continue;
        };
        n_definitions += 1;
        // Definition-level extensions (structs with map-type atomic).
        if ours_def.get("x-kubernetes-map-type") != up_def.get("x-kubernetes-map-type") {
            mismatches.push(format!(
                "{name}: map-type {:?} != upstream {:?}",
                ours_def.get("x-kubernetes-map-type"),
                up_def.get("x-kubernetes-map-type")
            ));
        }
        if ours_def.get("x-kubernetes-unions") != up_def.get("x-kubernetes-unions") {
            mismatches.push(format!("{name}: unions differ"));
        }
        // GVKs, restricted to the group versions kumo serves.
        let ours_gvks: BTreeSet<GroupVersionKind> = gvks_of(ours_def).collect();
        let up_gvks: BTreeSet<GroupVersionKind> = gvks_of(up_def)
            .filter(|g| served.contains(&GroupVersion::new(&g.group, &g.version)))
            .collect();
        if ours_gvks != up_gvks {
            mismatches.push(format!(
                "{name}: GVKs {ours_gvks:?} != upstream {up_gvks:?}"
            ));
        }
        let (Some(ours_props), Some(up_props)) = (
            ours_def.get("properties").and_then(Value::as_object),
            up_def.get("properties").and_then(Value::as_object),
        ) else {
            continue;
        };
        for (prop, ours_prop) in ours_props {
            let Some(up_prop) = up_props.get(prop) else {
                continue;
            };
            n_compared += 1;
            let (mine, theirs) = (extensions(ours_prop), extensions(up_prop));
            if mine != theirs {
                mismatches.push(format!("{name}.{prop}: {mine:?} != upstream {theirs:?}"));
            }
        }
    }
    assert!(
        n_definitions > 400,
        "only {n_definitions} definitions compared"
    );
    assert!(n_compared > 2000, "only {n_compared} properties compared");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
