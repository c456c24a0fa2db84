//! Tests of server-side apply and field tracking, on Deployment-shaped objects with the
//! built-in Deployment schema.

use serde_json::{Value, json};

use super::*;
use crate::schema::{Node, builtin};

const T1: &str = "2026-01-01T00:00:01Z";
const T2: &str = "2026-01-01T00:00:02Z";
const T3: &str = "2026-01-01T00:00:03Z";

fn schema() -> Option<Node<'static>> {
    Some(
        builtin()
            .node("io.k8s.api.apps.v1.Deployment")
            .expect("Deployment schema"),
    )
}

/// A Deployment named `web` with `spec` merged over a minimal skeleton.
fn deployment(spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {},
    });
    object["spec"] = spec;
    object
}

fn nginx(replicas: i64) -> Value {
    let mut object = deployment(json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]},
        },
    }));
    object["metadata"]["labels"] = json!({"app": "web"});
    object
}

fn apply_ok(live: Option<&Value>, applied: &Value, manager: &str, now: &str) -> Value {
    apply(live, applied, manager, false, schema(), &["status"], now)
        .unwrap_or_else(|e| panic!("apply by {manager} failed: {e}"))
        .object
}

fn updated(old: Option<&Value>, new: &Value, manager: &str, now: &str) -> Value {
    let mut new = new.clone();
    let kept = old.and_then(|o| o.pointer("/metadata/managedFields"));
    if let (Some(fields), None) = (kept, new.pointer("/metadata/managedFields")) {
        new["metadata"]["managedFields"] = fields.clone();
    }
    track_update(old, &mut new, manager, schema(), &["status"], now);
    new
}

/// The managed fields entries as (manager, operation, time, fieldsV1).
fn entries(object: &Value) -> Vec<(String, String, String, Value)> {
    let list = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                text("manager"),
                text("operation"),
                text("time"),
                e["fieldsV1"].clone(),
            )
        })
        .collect()
}

fn fields_of(object: &Value, manager: &str) -> Value {
    entries(object)
        .into_iter()
        .find(|e| e.0 == manager)
        .map(|e| e.3)
        .unwrap_or(Value::Null)
}

fn without_managed(object: &Value) -> Value {
    let mut object = object.clone();
    managed::remove(&mut object);
    object
}

fn conflicts_of(result: Result<ApplyOutcome, ApplyError>) -> Vec<(String, String)> {
    match result {
        Err(ApplyError::Conflict(Conflicts(list))) => list
            .iter()
            .map(|c| (c.cause_message(), c.field()))
            .collect(),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn fields_v1_round_trip() {
    let cases = [
        r#"{}"#,
        r#"{"f:spec":{"f:replicas":{}}}"#,
        r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}}}"#,
        r#"{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{}}}}}"#,
        r#"{"f:metadata":{"f:finalizers":{".":{},"v:\"a\"":{},"v:\"b\"":{}}}}"#,
        r#"{"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}"#,
        r#"{"f:a":{"i:0":{},"i:1":{"f:b":{}}}}"#,
        r#"{"f:a":{},"f:b":{"f:c":{}},"f:x":{"k:{\"k\":1}":{}},"f:y":{"v:1":{}}}"#,
    ];
    for text in cases {
        let value: Value = serde_json::from_str(text).unwrap();
        let set = FieldSet::from_fields_v1(&value).unwrap();
        assert_eq!(set.to_fields_v1().to_string(), text, "round trip of {text}");
    }
}

#[test]
fn fields_v1_keys_are_canonicalized_and_errors_reported() {
    // Key fields written in any order read back sorted by name.
    let value = json!({"k:{\"protocol\":\"TCP\",\"containerPort\":80}": {}});
    let set = FieldSet::from_fields_v1(&value).unwrap();
    assert_eq!(
        set.to_fields_v1(),
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}})
    );
    let bad = [
        (json!([]), "fieldsV1 node at  is not an object"),
        (json!({"f:a": 1}), "fieldsV1 node at .a is not an object"),
        (
            json!({"x:a": {}}),
            "fieldsV1 key \"x:a\" at  has no known prefix",
        ),
        (
            json!({"f:a": {"k:[1]": {}}}),
            "fieldsV1 key \"k:[1]\" at .a is malformed",
        ),
        (json!({"i:x": {}}), "fieldsV1 key \"i:x\" at  is malformed"),
    ];
    for (value, message) in bad {
        let error = FieldSet::from_fields_v1(&value).unwrap_err();
        assert_eq!(error.to_string(), message, "for {value}");
    }
    let mut deep = json!({});
    for _ in 0..(MAX_FIELDS_DEPTH + 5) {
        deep = json!({"f:a": deep});
    }
    assert_eq!(FieldSet::from_fields_v1(&deep), Err(FieldsV1Error::TooDeep));
}

#[test]
fn set_algebra() {
    let set = |v: Value| FieldSet::from_fields_v1(&v).unwrap();
    let a = set(json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}, "f:e": {".": {}, "f:f": {}}}));
    let b = set(json!({"f:b": {"f:c": {}}, "f:e": {}, "f:g": {}}));
    let cases = [
        (
            a.union(&b),
            json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}, "f:e": {".": {}, "f:f": {}}, "f:g": {}}),
        ),
        (
            a.difference(&b),
            json!({"f:a": {}, "f:b": {"f:d": {}}, "f:e": {"f:f": {}}}),
        ),
        (a.intersection(&b), json!({"f:b": {"f:c": {}}, "f:e": {}})),
        (b.difference(&a), json!({"f:g": {}})),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got.to_fields_v1(), want, "case {i}");
    }
    let paths: Vec<String> = a.paths().iter().map(ToString::to_string).collect();
    assert_eq!(paths, [".a", ".b.c", ".b.d", ".e", ".e.f"]);
}

#[test]
fn path_display_matches_upstream() {
    let cases = [
        (json!({"f:spec": {"f:replicas": {}}}), ".spec.replicas"),
        (
            json!({"f:c": {"k:{\"name\":\"nginx\"}": {"f:image": {}}}}),
            ".c[name=\"nginx\"].image",
        ),
        (
            json!({"f:p": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {}}}),
            ".p[port=80,protocol=\"TCP\"]",
        ),
        (
            json!({"f:finalizers": {"v:\"x\"": {}}}),
            ".finalizers[=\"x\"]",
        ),
        (json!({"f:a": {"i:3": {}}}), ".a[3]"),
    ];
    for (value, want) in cases {
        let paths = FieldSet::from_fields_v1(&value).unwrap().paths();
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].to_string(), want);
    }
}

#[test]
fn field_set_of_objects_follows_the_schema() {
    let cases = [
        (
            nginx(3),
            json!({
                "f:apiVersion": {}, "f:kind": {},
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {}
                        }}}
                    }
                }
            }),
        ),
        (
            json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"strategy": {}}}),
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}},
                   "f:spec": {"f:strategy": {}}}),
        ),
        (
            deployment(json!({"template": {"spec": {"containers": [
                {"name": "a", "args": ["x", "y"], "ports": [{"containerPort": 80}]}
            ]}}})),
            json!({"f:apiVersion": {}, "f:kind": {}, "f:metadata": {"f:name": {}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {
                ".": {}, "f:args": {}, "f:name": {},
                // The key takes the protocol's default, as upstream's managedFields show.
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
            }}}}}}),
        ),
    ];
    for (object, want) in cases {
        let got = typed::to_field_set(schema(), &object).to_fields_v1();
        assert_eq!(got, want, "field set of {object}");
    }
    // Without a schema, objects are maps (every key a member) and lists are atomic.
    let got = typed::to_field_set(None, &json!({"a": {"b": 1}, "l": [1, 2]})).to_fields_v1();
    assert_eq!(got, json!({"f:a": {".": {}, "f:b": {}}, "f:l": {}}));
}

#[test]
fn create_by_apply() {
    let object = apply_ok(None, &nginx(3), "kubectl", T1);
    assert_eq!(without_managed(&object), nginx(3));
    assert_eq!(
        object["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {}
                        }}}
                    }
                }
            }
        }])
    );
}

#[test]
fn reapply_unchanged_changes_nothing() {
    let first = apply_ok(None, &nginx(3), "kubectl", T1);
    let again = apply(Some(&first), &nginx(3), "kubectl", false, schema(), &[], T2).unwrap();
    assert!(!again.changed);
    assert_eq!(again.object, first);
    // A real change moves the time.
    let changed = apply(Some(&first), &nginx(4), "kubectl", false, schema(), &[], T2).unwrap();
    assert!(changed.changed);
    assert_eq!(changed.object["spec"]["replicas"], 4);
    assert_eq!(entries(&changed.object)[0].2, T2);
    assert_eq!(
        fields_of(&changed.object, "kubectl"),
        fields_of(&first, "kubectl")
    );
}

#[test]
fn fields_no_longer_applied_are_removed_unless_owned_elsewhere() {
    let mut with_tier = nginx(3);
    with_tier["metadata"]["labels"]["tier"] = json!("front");
    with_tier["spec"]["minReadySeconds"] = json!(5);
    let live = apply_ok(None, &with_tier, "kubectl", T1);
    // Another manager also sets minReadySeconds to the same value through an update.
    let mut touched = live.clone();
    touched["metadata"]["annotations"] = json!({"note": "x"});
    let live = updated(Some(&live), &touched, "kubectl-annotate", T2);
    let mut shared = nginx(3);
    shared["spec"]["minReadySeconds"] = json!(5);
    let live = apply_ok(Some(&live), &shared, "other", T2);

    // The first manager stops applying the tier label and minReadySeconds.
    let object = apply_ok(Some(&live), &nginx(3), "kubectl", T3);
    assert_eq!(object["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(object["spec"]["minReadySeconds"], 5, "still owned by other");
    assert_eq!(object["metadata"]["annotations"], json!({"note": "x"}));
    assert_eq!(
        fields_of(&object, "kubectl")["f:metadata"],
        json!({"f:labels": {"f:app": {}}})
    );

    // Dropping every label removes the labels map.
    let mut bare = nginx(3);
    bare["metadata"].as_object_mut().unwrap().remove("labels");
    let object = apply_ok(Some(&object), &bare, "kubectl", T3);
    let object = apply_ok(Some(&object), &bare, "other", T3);
    assert_eq!(object["metadata"].get("labels"), None, "{object:#}");
}

#[test]
fn two_managers_own_different_fields() {
    let live = apply_ok(None, &nginx(3), "kubectl", T1);
    let mut paused = deployment(json!({"paused": true}));
    paused["metadata"]["labels"] = json!({"team": "a"});
    let object = apply_ok(Some(&live), &paused, "pauser", T2);
    assert_eq!(object["spec"]["paused"], true);
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(
        object["metadata"]["labels"],
        json!({"app": "web", "team": "a"})
    );
    let names: Vec<(String, String)> = entries(&object).into_iter().map(|e| (e.0, e.2)).collect();
    assert_eq!(
        names,
        [("kubectl".into(), T1.into()), ("pauser".into(), T2.into())]
    );
    assert_eq!(
        fields_of(&object, "pauser"),
        json!({"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:paused": {}}})
    );
}

#[test]
fn conflicts_and_force() {
    let created = updated(None, &nginx(3), "kubectl-client-side-apply", T1);
    let applied = apply_ok(None, &nginx(3), "ci", T1);

    let cases = [
        (
            &created,
            "helm",
            vec![(
                "conflict with \"kubectl-client-side-apply\" using apps/v1",
                ".spec.replicas",
            )],
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
        ),
        (
            &applied,
            "helm",
            vec![("conflict with \"ci\"", ".spec.replicas")],
            "Apply failed with 1 conflict: conflict with \"ci\": .spec.replicas",
        ),
        (
            &created,
            "kubectl",
            vec![(
                "conflict with \"kubectl-client-side-apply\" using apps/v1",
                ".spec.replicas",
            )],
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
        ),
    ];
    for (live, manager, want, message) in cases {
        let result = apply(Some(live), &nginx(5), manager, false, schema(), &[], T2);
        let error = result.clone().unwrap_err().to_string();
        assert_eq!(error, message);
        let got = conflicts_of(result);
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        assert_eq!(got, want, "{manager}");

        // Forcing takes the field.
        let forced = apply(Some(live), &nginx(5), manager, true, schema(), &[], T2)
            .unwrap()
            .object;
        assert_eq!(forced["spec"]["replicas"], 5);
        let previous_owner = &entries(live)[0].0;
        assert!(
            fields_of(&forced, previous_owner)["f:spec"]
                .get("f:replicas")
                .is_none()
        );
        assert!(
            fields_of(&forced, manager)["f:spec"]
                .get("f:replicas")
                .is_some()
        );
    }

    // Applying the same value shares ownership instead of conflicting.
    let shared = apply_ok(Some(&created), &nginx(3), "helm", T2);
    assert!(
        fields_of(&shared, "helm")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
    assert!(
        fields_of(&shared, "kubectl-client-side-apply")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
}

#[test]
fn several_conflicts_are_listed_by_manager() {
    let live = apply_ok(None, &nginx(3), "a", T1);
    let mut by_b = deployment(json!({"minReadySeconds": 1}));
    by_b["metadata"]["labels"] = json!({"app": "web"});
    let live = apply_ok(Some(&live), &by_b, "b", T1);
    let mut changed = nginx(4);
    changed["metadata"]["labels"]["app"] = json!("api");
    changed["spec"]["minReadySeconds"] = json!(2);
    let error = apply(Some(&live), &changed, "c", false, schema(), &[], T2).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Apply failed with 4 conflicts: conflicts with \"a\":\n- .metadata.labels.app\n- .spec.replicas\nconflicts with \"b\":\n- .metadata.labels.app\n- .spec.minReadySeconds"
    );
}

#[test]
fn containers_merge_by_name() {
    let mut two = nginx(3);
    two["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:1"},
    ]);
    let live = apply_ok(None, &two, "first", T1);
    let sidecar = deployment(json!({"template": {"spec": {"containers": [
        {"name": "c", "image": "c:1"}
    ]}}}));
    let object = apply_ok(Some(&live), &sidecar, "second", T2);
    let names: Vec<&str> = object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        fields_of(&object, "second"),
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}
        }}}}})
    );
    // Changing another manager's container image conflicts at the item's field.
    let retag = deployment(json!({"template": {"spec": {"containers": [
        {"name": "a", "image": "a:2"}
    ]}}}));
    let got = conflicts_of(apply(
        Some(&object),
        &retag,
        "second",
        false,
        schema(),
        &[],
        T3,
    ));
    assert_eq!(
        got,
        [(
            "conflict with \"first\"".to_owned(),
            ".spec.template.spec.containers[name=\"a\"].image".to_owned()
        )]
    );
    // The first manager dropping container b removes it; c stays (owned by second).
    let mut only_a = nginx(3);
    only_a["spec"]["template"]["spec"]["containers"] = json!([{"name": "a", "image": "a:1"}]);
    let object = apply_ok(Some(&object), &only_a, "first", T3);
    let names: Vec<&str> = object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
}

#[test]
fn finalizers_merge_as_a_set() {
    let with = |finalizers: Value| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": finalizers},
        })
    };
    let live = apply_ok(None, &with(json!(["x"])), "one", T1);
    let object = apply_ok(Some(&live), &with(json!(["y", "x"])), "two", T2);
    assert_eq!(object["metadata"]["finalizers"], json!(["y", "x"]));
    assert_eq!(
        fields_of(&object, "two"),
        json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}, "v:\"y\"": {}}}})
    );
    // "one" stops applying x, but "two" still owns it; then "two" stops too.
    let object = apply_ok(Some(&object), &with(json!([])), "one", T3);
    assert_eq!(object["metadata"]["finalizers"], json!(["y", "x"]));
    let object = apply_ok(Some(&object), &with(json!(["y"])), "two", T3);
    assert_eq!(object["metadata"]["finalizers"], json!(["y"]));
}

#[test]
fn atomic_lists_are_replaced_whole() {
    let with_args = |args: Value| {
        deployment(json!({"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "command": args}
        ]}}}))
    };
    let live = apply_ok(None, &with_args(json!(["sh", "-c"])), "one", T1);
    let object = apply_ok(Some(&live), &with_args(json!(["bash"])), "one", T2);
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["bash"])
    );
    let got = conflicts_of(apply(
        Some(&object),
        &with_args(json!(["zsh"])),
        "two",
        false,
        schema(),
        &[],
        T3,
    ));
    assert_eq!(
        got,
        [(
            "conflict with \"one\"".to_owned(),
            ".spec.template.spec.containers[name=\"a\"].command".to_owned()
        )]
    );
}

#[test]
fn track_update_moves_ownership() {
    let created = updated(None, &nginx(3), "kubectl-create", T1);
    assert_eq!(
        created["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {}
                        }}}
                    }
                }
            }
        }])
    );

    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scaled = updated(Some(&created), &scaled, "kubectl-scale", T2);
    assert_eq!(
        fields_of(&scaled, "kubectl-scale"),
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(
        fields_of(&scaled, "kubectl-create")["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    // Scaling back to 3 under the same manager keeps one entry and refreshes its time.
    let mut again = scaled.clone();
    again["spec"]["replicas"] = json!(3);
    let again = updated(Some(&scaled), &again, "kubectl-scale", T3);
    let list = entries(&again);
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[1].0.as_str(), list[1].2.as_str()),
        ("kubectl-scale", T3)
    );

    // An update that only removes fields takes them from their owners, and gives the
    // remover nothing: the entry that becomes empty disappears.
    let mut removed = again.clone();
    removed["spec"].as_object_mut().unwrap().remove("replicas");
    let removed = updated(Some(&again), &removed, "kubectl-edit", T3);
    let managers: Vec<String> = entries(&removed).into_iter().map(|e| e.0).collect();
    assert_eq!(managers, ["kubectl-create"]);

    // A no-op update records nothing.
    let same = updated(Some(&removed), &removed, "kubectl-edit", T3);
    assert_eq!(same, removed);

    // `[{}]` resets the managed fields.
    let mut reset = removed.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    track_update(Some(&removed), &mut reset, "x", schema(), &[], T3);
    assert_eq!(reset["metadata"].get("managedFields"), None);
}

#[test]
fn client_side_apply_upgrades_to_server_side_apply() {
    let mut csa = nginx(3);
    let text = format!("{}\n", serde_json::to_string(&nginx(3)).unwrap());
    csa["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: text });
    let live = updated(None, &csa, "kubectl-client-side-apply", T1);

    // kubectl takes the fields last-applied still describes without conflict...
    let object = apply_ok(Some(&live), &nginx(5), "kubectl", T2);
    assert_eq!(object["spec"]["replicas"], 5);
    assert!(
        fields_of(&object, "kubectl")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
    assert!(
        fields_of(&object, "kubectl-client-side-apply")["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    // ...and rewrites the annotation to what it applied.
    let annotation = object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .unwrap();
    let stored: Value = serde_json::from_str(annotation).unwrap();
    assert_eq!(stored, nginx(5));
    assert!(annotation.ends_with('\n'));

    // Other managers do not get the upgrade.
    let error = apply(Some(&live), &nginx(5), "helm", false, schema(), &[], T2);
    assert_eq!(conflicts_of(error).len(), 1);

    // Fields changed since the last client-side apply still conflict.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(4);
    let scaled = updated(Some(&live), &scaled, "kubectl-scale", T2);
    let mut retagged = scaled.clone();
    retagged["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let retagged = updated(Some(&scaled), &retagged, "kubectl-set", T2);
    let mut wanted = nginx(5);
    wanted["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:3");
    let got = conflicts_of(apply(
        Some(&retagged),
        &wanted,
        "kubectl",
        false,
        schema(),
        &[],
        T3,
    ));
    assert_eq!(
        got,
        [
            (
                "conflict with \"kubectl-scale\" using apps/v1".to_owned(),
                ".spec.replicas".to_owned()
            ),
            (
                "conflict with \"kubectl-set\" using apps/v1".to_owned(),
                ".spec.template.spec.containers[name=\"nginx\"].image".to_owned()
            ),
        ]
    );
}

#[test]
fn status_is_ignored_on_the_main_resource() {
    let mut with_status = nginx(3);
    with_status["status"] = json!({"replicas": 9});
    let object = apply_ok(None, &with_status, "kubectl", T1);
    assert_eq!(object.get("status"), None);
    assert!(fields_of(&object, "kubectl").get("f:status").is_none());

    let mut live = object.clone();
    live["status"] = json!({"replicas": 1});
    let mut new = live.clone();
    new["status"]["replicas"] = json!(2);
    new["spec"]["paused"] = json!(true);
    let tracked = updated(Some(&live), &new, "controller", T2);
    assert_eq!(
        fields_of(&tracked, "controller"),
        json!({"f:spec": {"f:paused": {}}})
    );
}

#[test]
fn first_apply_to_an_untracked_object_conflicts_with_before_first_apply() {
    let untracked = nginx(3);
    let got = conflicts_of(apply(
        Some(&untracked),
        &nginx(4),
        "ci",
        false,
        schema(),
        &[],
        T1,
    ));
    assert_eq!(
        got,
        [(
            "conflict with \"before-first-apply\" using apps/v1".to_owned(),
            ".spec.replicas".to_owned()
        )]
    );
}

#[test]
fn bad_applied_configurations_are_refused() {
    let mut with_managed = nginx(3);
    with_managed["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    let mut duplicate = nginx(3);
    duplicate["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "a", "image": "a"},
        {"name": "a", "image": "b"},
    ]);
    let mut bad_live = nginx(3);
    bad_live["metadata"]["managedFields"] =
        json!([{"manager": "x", "operation": "Apply", "fieldsType": "FieldsV2"}]);
    let cases = [
        (None, json!([1]), "applied configuration must be an object"),
        (None, with_managed, "metadata.managedFields must be nil"),
        (
            None,
            duplicate,
            ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]",
        ),
        (
            Some(bad_live),
            nginx(3),
            "failed to decode managed fields: managed fields entry 0 has wrong fieldsType \"FieldsV2\", expected FieldsV1",
        ),
    ];
    for (live, applied, message) in cases {
        let error = apply(live.as_ref(), &applied, "m", false, schema(), &[], T1).unwrap_err();
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn objects_without_a_schema_merge_as_maps() {
    let config = json!({"spec": {"a": 1, "l": [1, 2]}});
    let live = apply(None, &config, "one", false, None, &[], T1)
        .unwrap()
        .object;
    let object = apply(
        Some(&live),
        &json!({"spec": {"b": 2, "l": [3]}}),
        "two",
        true,
        None,
        &[],
        T2,
    )
    .unwrap()
    .object;
    assert_eq!(object["spec"], json!({"a": 1, "l": [3], "b": 2}));
}

#[test]
fn deep_objects_do_not_overflow() {
    let mut deep = json!(1);
    for _ in 0..(typed::MAX_DEPTH * 3) {
        deep = json!({ "a": deep });
    }
    let config = json!({"spec": deep});
    let live = apply(None, &config, "one", false, None, &[], T1)
        .unwrap()
        .object;
    let again = apply(Some(&live), &config, "two", false, None, &[], T2).unwrap();
    assert!(again.changed);
    let mut new = live.clone();
    new["spec"] = json!({"b": 1});
    track_update(Some(&live), &mut new, "three", None, &[], T3);
    assert_eq!(entries(&new).last().unwrap().0, "three");
}

#[test]
fn subresource_writes_get_their_own_entry() {
    let live = apply_ok(None, &nginx(3), "kubectl", T1);
    let mut with_status = live.clone();
    with_status["status"] = json!({"replicas": 3, "readyReplicas": 3});
    // Managed fields sent with a subresource write are ignored.
    with_status["metadata"]["managedFields"] = json!([{}]);
    track_subresource_update(
        Some(&live),
        &mut with_status,
        "kube-controller-manager",
        "status",
        schema(),
        &["spec"],
        T2,
    );
    let list = with_status["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["subresource"], "status");
    assert_eq!(
        list[1]["fieldsV1"],
        json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}})
    );
    assert_eq!(list[0], live["metadata"]["managedFields"][0]);
    let conflict = Conflict {
        manager: "kube-controller-manager".into(),
        operation: Operation::Update,
        api_version: "apps/v1".into(),
        subresource: Some("status".into()),
        path: Path(vec![PathElement::Field("status".into())]),
    };
    assert_eq!(
        conflict.cause_message(),
        "conflict with \"kube-controller-manager\" with subresource \"status\" using apps/v1"
    );
}

/// Re-applying ports without a protocol matches the stored (defaulted) items: the key
/// uses the schema's default "TCP" instead of adding a duplicate port.
#[test]
fn reapplied_port_without_protocol_keys_by_the_default() {
    let config = deployment(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web", "image": "web:1",
                "ports": [{"name": "http", "containerPort": 8080}],
            }]},
        },
    }));
    let mut live = apply_ok(None, &config, "op", T1);
    // The server defaults the protocol after the first apply.
    live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
    let again = apply_ok(Some(&live), &config, "op", T2);
    let ports = &again["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
}
