//! Tests of the CRD engine against a CronTab fixture and variations of it.

use serde_json::{Value, json};

use super::*;

/// A named edit of the fixture CRD and the causes it must produce.
type CrdCase = (
    &'static str,
    Box<dyn Fn(&mut Value)>,
    Vec<(String, &'static str)>,
);
/// A named patch of the fixture object's spec and the causes it must produce.
type ObjectCase = (&'static str, Value, Vec<(&'static str, &'static str)>);
/// A rule, an object, and the (reason, field, message) of the one cause expected.
type RuleCase = (
    Value,
    Value,
    Option<(&'static str, &'static str, &'static str)>,
);

fn crontab_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {
                "plural": "crontabs", "singular": "crontab", "kind": "CronTab",
                "listKind": "CronTabList", "shortNames": ["ct"], "categories": ["all"]
            },
            "versions": [
                {
                    "name": "v1beta1", "served": true, "storage": false,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                },
                {
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": crontab_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}
                    },
                    "additionalPrinterColumns": [
                        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                    ]
                },
                {
                    "name": "v2alpha1", "served": true, "storage": false,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                },
                {
                    "name": "v0old", "served": false, "storage": false,
                    "schema": {"openAPIV3Schema": {"type": "object"}}
                }
            ]
        }
    })
}

fn crontab_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.replicas <= 10"},
                    {"rule": "self.image == oldSelf.image", "message": "image is immutable", "fieldPath": ".image"}
                ],
                "required": ["cronSpec"],
                "properties": {
                    "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                    "image": {"type": "string", "maxLength": 20},
                    "replicas": {"type": "integer", "format": "int32", "minimum": 1, "default": 1},
                    "mode": {"type": "string", "enum": ["fast", "slow"]},
                    "port": {"x-kubernetes-int-or-string": true},
                    "ratio": {"type": "number", "exclusiveMaximum": true, "maximum": 1},
                    "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
                    "ports": {
                        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}, "maxProperties": 2},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "template": {
                        "type": "object", "x-kubernetes-embedded-resource": true,
                        "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string", "default": "dx"}}}}
                    },
                    "startAt": {"type": "string", "format": "date-time", "nullable": true},
                    "choice": {"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]}
                }
            },
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}}}
        }
    })
}

fn good_object() -> Value {
    json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "my-cron", "labels": {"app": "x"}},
        "spec": {"cronSpec": "* * * * */5", "image": "my-image", "replicas": 3}
    })
}

/// `(field, message fragment)` of each cause, for compact assertions.
fn pairs(causes: &[StatusCause]) -> Vec<(String, String)> {
    causes
        .iter()
        .map(|c| (c.field.clone(), c.message.clone()))
        .collect()
}

fn assert_causes(what: &str, causes: &[StatusCause], want: &[(&str, &str)]) {
    let got = pairs(causes);
    assert_eq!(got.len(), want.len(), "{what}: got {got:#?}");
    for (f, m) in want {
        assert!(
            got.iter().any(|(gf, gm)| gf == f && gm.contains(m)),
            "{what}: missing ({f}, {m}) in {got:#?}"
        );
    }
}

#[test]
fn good_crd_is_valid() {
    assert_causes("good", &validate_crd(&crontab_crd(), None), &[]);
}

#[test]
fn bad_crds() {
    let schema = "spec.versions[1].schema.openAPIV3Schema";
    let cases: Vec<CrdCase> = vec![
        (
            "wrong name",
            Box::new(|c| c["metadata"]["name"] = json!("crontab.stable.example.com")),
            vec![(
                "metadata.name".into(),
                "must be spec.names.plural+\".\"+spec.group",
            )],
        ),
        (
            "group without dot",
            Box::new(|c| {
                c["spec"]["group"] = json!("example");
                c["metadata"]["name"] = json!("crontabs.example");
            }),
            vec![(
                "spec.group".into(),
                "should be a domain with at least one dot",
            )],
        ),
        (
            "preserveUnknownFields",
            Box::new(|c| c["spec"]["preserveUnknownFields"] = json!(true)),
            vec![(
                "spec.preserveUnknownFields".into(),
                "Invalid value: true: cannot set to true",
            )],
        ),
        (
            "bad scope",
            Box::new(|c| c["spec"]["scope"] = json!("Global")),
            vec![(
                "spec.scope".into(),
                "Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
            )],
        ),
        (
            "upper plural",
            Box::new(|c| {
                c["spec"]["names"]["plural"] = json!("CronTabs");
                c["metadata"]["name"] = json!("CronTabs.stable.example.com");
            }),
            vec![(
                "spec.names.plural".into(),
                "Invalid value: \"CronTabs\": a DNS-1035 label",
            )],
        ),
        (
            "kind equals listKind",
            Box::new(|c| c["spec"]["names"]["listKind"] = json!("CronTab")),
            vec![(
                "spec.names.listKind".into(),
                "kind and listKind may not be the same",
            )],
        ),
        (
            "bad kind",
            Box::new(|c| c["spec"]["names"]["kind"] = json!("Cron_Tab")),
            vec![(
                "spec.names.kind".into(),
                "may have mixed case, but should otherwise match",
            )],
        ),
        (
            "two storage",
            Box::new(|c| c["spec"]["versions"][0]["storage"] = json!(true)),
            vec![(
                "spec.versions".into(),
                "must have exactly one version marked as storage version",
            )],
        ),
        (
            "no versions",
            Box::new(|c| c["spec"]["versions"] = json!([])),
            vec![("spec.versions".into(), "Required value")],
        ),
        (
            "none served",
            Box::new(|c| {
                for v in c["spec"]["versions"].as_array_mut().unwrap() {
                    v["served"] = json!(false)
                }
            }),
            vec![("spec.versions".into(), "must serve at least one version")],
        ),
        (
            "webhook conversion",
            Box::new(|c| c["spec"]["conversion"] = json!({"strategy": "Webhook"})),
            vec![(
                "spec.conversion.strategy".into(),
                "Unsupported value: \"Webhook\"",
            )],
        ),
        (
            "missing type",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["image"] = json!({"maxLength": 3})
            }),
            vec![(
                format!("{schema}.properties[spec].properties[image].type"),
                "Required value: must not be empty for specified object fields",
            )],
        ),
        (
            "props and additionalProperties",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["status"]["additionalProperties"] =
                    json!({"type": "string"})
            }),
            vec![(
                format!("{schema}.properties[status].additionalProperties"),
                "Forbidden: additionalProperties and properties are mutual exclusive",
            )],
        ),
        (
            "int-or-string with type",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["port"]["type"] = json!("string")
            }),
            vec![(
                format!("{schema}.properties[spec].properties[port].type"),
                "must be empty if x-kubernetes-int-or-string is true",
            )],
        ),
        (
            "preserve false",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["extra"]["x-kubernetes-preserve-unknown-fields"] = json!(false)
            }),
            vec![(
                format!(
                    "{schema}.properties[spec].properties[extra].x-kubernetes-preserve-unknown-fields"
                ),
                "must be true or undefined",
            )],
        ),
        (
            "embedded without properties",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["template"] =
                    json!({"type": "object", "x-kubernetes-embedded-resource": true});
            }),
            vec![(
                format!("{schema}.properties[spec].properties[template].properties"),
                "must not be empty if x-kubernetes-embedded-resource is true",
            )],
        ),
        (
            "bad default type",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["replicas"]["default"] = json!("one")
            }),
            vec![(
                format!("{schema}.properties[spec].properties[replicas].default"),
                "default in body must be of type integer: \"string\"",
            )],
        ),
        (
            "default below minimum",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["replicas"]["default"] = json!(0)
            }),
            vec![(
                format!("{schema}.properties[spec].properties[replicas].default"),
                "should be greater than or equal to 1",
            )],
        ),
        (
            "unpruned default",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["status"]["default"] =
                    json!({"replicas": 1, "bogus": true})
            }),
            vec![(
                format!("{schema}.properties[status].default"),
                "must not have unknown fields, got bogus",
            )],
        ),
        (
            "cel does not compile",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
                    [0]["rule"] = json!("self.replicas <=")
            }),
            vec![(
                format!("{schema}.properties[spec].x-kubernetes-validations[0].rule"),
                "compilation failed",
            )],
        ),
        (
            "cel undeclared",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
                    [0]["rule"] = json!("replicas <= 10")
            }),
            vec![(
                format!("{schema}.properties[spec].x-kubernetes-validations[0].rule"),
                "undeclared reference to 'replicas'",
            )],
        ),
        (
            "bad reason",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
                    [0]["reason"] = json!("Nope")
            }),
            vec![(
                format!("{schema}.properties[spec].x-kubernetes-validations[0].reason"),
                "Unsupported value: \"Nope\"",
            )],
        ),
        (
            "scale path",
            Box::new(|c| {
                c["spec"]["versions"][1]["subresources"]["scale"]["specReplicasPath"] =
                    json!(".status.replicas")
            }),
            vec![(
                "spec.versions[1].subresources.scale.specReplicasPath".into(),
                "should be a json path under .spec",
            )],
        ),
        (
            "scale status path missing",
            Box::new(|c| {
                c["spec"]["versions"][1]["subresources"]["scale"]
                    .as_object_mut()
                    .unwrap()
                    .remove("statusReplicasPath");
            }),
            vec![(
                "spec.versions[1].subresources.scale.statusReplicasPath".into(),
                "Required value",
            )],
        ),
        (
            "printer column",
            Box::new(|c| {
                c["spec"]["versions"][1]["additionalPrinterColumns"][0] =
                    json!({"name": "X", "type": "text", "jsonPath": "spec.x"})
            }),
            vec![
                (
                    "spec.versions[1].additionalPrinterColumns[0].type".into(),
                    "must be one of boolean,date,integer,number,string",
                ),
                (
                    "spec.versions[1].additionalPrinterColumns[0].jsonPath".into(),
                    "must be a simple json path starting with .",
                ),
            ],
        ),
        (
            "root not object",
            Box::new(|c| {
                c["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "string"})
            }),
            vec![(
                "spec.versions[0].schema.openAPIV3Schema.type".into(),
                "must be object at the root",
            )],
        ),
        (
            "array without items",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["tags"] = json!({"type": "array"});
            }),
            vec![(
                format!("{schema}.properties[spec].properties[tags].items"),
                "Required value: must be specified",
            )],
        ),
        (
            "type in anyOf",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["choice"]["anyOf"] = json!([{"type": "string"}])
            }),
            vec![(
                format!("{schema}.properties[spec].properties[choice].anyOf[0].type"),
                "must be empty to be structural",
            )],
        ),
        (
            "metadata schema",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["metadata"] =
                    json!({"type": "object", "properties": {"labels": {"type": "object"}}})
            }),
            vec![(
                format!("{schema}.properties[metadata]"),
                "must not specify anything other than name and generateName",
            )],
        ),
        (
            "schema missing",
            Box::new(|c| {
                c["spec"]["versions"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("schema");
            }),
            vec![(
                "spec.versions[0].schema.openAPIV3Schema".into(),
                "schemas are required",
            )],
        ),
        (
            "bad pattern",
            Box::new(|c| {
                c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    ["image"]["pattern"] = json!("(")
            }),
            vec![(
                format!("{schema}.properties[spec].properties[image].pattern"),
                "must be a valid regular expression",
            )],
        ),
    ];
    for (what, edit, want) in cases {
        let mut crd = crontab_crd();
        edit(&mut crd);
        let want: Vec<(&str, &str)> = want.iter().map(|(f, m)| (f.as_str(), *m)).collect();
        assert_causes(what, &validate_crd(&crd, None), &want);
    }
}

#[test]
fn crd_update_rules() {
    let mut old = crontab_crd();
    old["status"] = json!({
        "conditions": [{"type": "Established", "status": "True"}],
        "storedVersions": ["v1", "v0old"]
    });
    let mut new = crontab_crd();
    new["spec"]["scope"] = json!("Cluster");
    new["spec"]["versions"].as_array_mut().unwrap().pop();
    assert_causes(
        "update",
        &validate_crd(&new, Some(&old)),
        &[
            ("spec.scope", "field is immutable"),
            ("status.storedVersions[1]", "must appear in spec.versions"),
        ],
    );
}

#[test]
fn kinds_in_discovery_order() {
    let kinds = kinds_of(&crontab_crd());
    let versions: Vec<&str> = kinds.iter().map(|k| k.version.as_str()).collect();
    assert_eq!(versions, ["v1", "v1beta1", "v2alpha1"]);
    let v1 = &kinds[0];
    assert_eq!(v1.qualified_resource(), "crontabs.stable.example.com");
    assert_eq!(
        (
            v1.kind.as_str(),
            v1.list_kind.as_str(),
            v1.singular.as_str()
        ),
        ("CronTab", "CronTabList", "crontab")
    );
    assert!(v1.namespaced);
    assert_eq!(v1.short_names, ["ct"]);
    assert_eq!(v1.categories, ["all"]);
    assert!(v1.verbs.iter().any(|v| v == "deletecollection"));
    assert_eq!(v1.schema_name, None);
    let subs: Vec<(&str, String)> = v1
        .subresources
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                format!(
                    "{}/{}/{}",
                    s.response_kind.group, s.response_kind.version, s.response_kind.kind
                ),
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            ("status", "stable.example.com/v1/CronTab".to_owned()),
            ("scale", "autoscaling/v1/Scale".to_owned())
        ]
    );
    assert!(kinds[1].subresources.is_empty());
}

#[test]
fn version_order() {
    let mut vs = vec![
        "foo10",
        "v1alpha1",
        "v11alpha2",
        "v2",
        "v1",
        "v10beta3",
        "foo1",
        "v3beta1",
        "v10",
        "v11beta2",
        "v12alpha1",
    ];
    vs.sort_by(|a, b| compare_versions(a, b));
    assert_eq!(
        vs,
        [
            "v10",
            "v2",
            "v1",
            "v11beta2",
            "v10beta3",
            "v3beta1",
            "v12alpha1",
            "v11alpha2",
            "v1alpha1",
            "foo1",
            "foo10"
        ]
    );
}

#[test]
fn object_validation() {
    let schema = crontab_schema();
    let cases: Vec<ObjectCase> = vec![
        ("good", json!({}), vec![]),
        (
            "wrong type",
            json!({"replicas": "string"}),
            vec![
                (
                    "spec.replicas",
                    "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                ),
                ("", "some validation rules were not checked"),
            ],
        ),
        (
            "minimum",
            json!({"replicas": 0}),
            vec![(
                "spec.replicas",
                "Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            )],
        ),
        (
            "int32",
            json!({"replicas": 3_000_000_000_i64}),
            vec![
                ("spec.replicas", "must be of type int32"),
                ("", "some validation rules were not checked"),
            ],
        ),
        (
            "pattern",
            json!({"cronSpec": "bad"}),
            vec![(
                "spec.cronSpec",
                "spec.cronSpec in body should match '^(\\d+|\\*)",
            )],
        ),
        (
            "maxLength",
            json!({"image": "x".repeat(21)}),
            vec![("spec.image", "Too long: may not be more than 20 bytes")],
        ),
        (
            "enum",
            json!({"mode": "medium"}),
            vec![
                (
                    "spec.mode",
                    "Unsupported value: \"medium\": supported values: \"fast\", \"slow\"",
                ),
                ("", "some validation rules were not checked"),
            ],
        ),
        (
            "exclusive max",
            json!({"ratio": 1}),
            vec![("spec.ratio", "should be less than 1")],
        ),
        ("int-or-string int", json!({"port": 80}), vec![]),
        ("int-or-string string", json!({"port": "http"}), vec![]),
        (
            "int-or-string bool",
            json!({"port": true}),
            vec![
                ("spec.port", "must be of type integer-or-string"),
                ("", "some validation rules were not checked"),
            ],
        ),
        (
            "set duplicate",
            json!({"tags": ["a", "b", "a"]}),
            vec![("spec.tags[2]", "Duplicate value: \"a\"")],
        ),
        (
            "max items",
            json!({"tags": ["a", "b", "c", "d"]}),
            vec![("spec.tags", "Too many: 4: must have at most 3 items")],
        ),
        (
            "map duplicate",
            json!({"ports": [{"name": "a"}, {"name": "a", "port": 1}]}),
            vec![("spec.ports[1]", "Duplicate value: {\"name\":\"a\"}")],
        ),
        (
            "item required",
            json!({"ports": [{"port": 1}]}),
            vec![("spec.ports[0].name", "Required value")],
        ),
        (
            "additionalProperties",
            json!({"labels": {"a": ""}}),
            vec![("spec.labels.a", "should be at least 1 chars long")],
        ),
        (
            "maxProperties",
            json!({"labels": {"a": "1", "b": "2", "c": "3"}}),
            vec![("spec.labels", "Too many: 3: must have at most 2 items")],
        ),
        (
            "preserved",
            json!({"extra": {"anything": [1, {"x": null}]}}),
            vec![],
        ),
        (
            "embedded",
            json!({"template": {"spec": {}}}),
            vec![
                (
                    "spec.template.apiVersion",
                    "Required value: must not be empty",
                ),
                ("spec.template.kind", "Required value: must not be empty"),
            ],
        ),
        (
            "embedded metadata",
            json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a b": "x"}}}}),
            vec![("spec.template.metadata.labels", "Invalid value: \"a b\"")],
        ),
        ("nullable", json!({"startAt": null}), vec![]),
        (
            "not nullable",
            json!({"image": null}),
            vec![
                (
                    "spec.image",
                    "spec.image in body must be of type string: \"null\"",
                ),
                ("", "some validation rules were not checked"),
            ],
        ),
        (
            "date-time",
            json!({"startAt": "yesterday"}),
            vec![
                ("spec.startAt", "must be of type date-time: \"yesterday\""),
                ("", "some validation rules were not checked"),
            ],
        ),
        (
            "date-time ok",
            json!({"startAt": "2024-01-02T03:04:05Z"}),
            vec![],
        ),
        (
            "oneOf none",
            json!({"choice": "zzz"}),
            vec![(
                "spec.choice",
                "must validate one and only one schema (oneOf)",
            )],
        ),
        (
            "oneOf both",
            json!({"choice": "ab"}),
            vec![(
                "spec.choice",
                "must validate one and only one schema (oneOf)",
            )],
        ),
        ("oneOf one", json!({"choice": "ax"}), vec![]),
        (
            "cel",
            json!({"replicas": 11}),
            vec![(
                "spec",
                "Invalid value: \"object\": failed rule: self.replicas <= 10",
            )],
        ),
    ];
    for (what, spec_patch, want) in cases {
        let mut obj = good_object();
        for (k, v) in spec_patch.as_object().unwrap() {
            obj["spec"][k] = v.clone();
        }
        assert_causes(what, &validate(&schema, &obj), &want);
    }
}

#[test]
fn root_checks() {
    let schema = crontab_schema();
    let mut obj = good_object();
    obj["spec"].as_object_mut().unwrap().remove("cronSpec");
    obj["metadata"]["annotations"] = json!({"bad key!": "v"});
    obj["metadata"]["name"] = json!("Not_A_Name");
    assert_causes(
        "root",
        &validate(&schema, &obj),
        &[
            ("spec.cronSpec", "Required value"),
            ("metadata.annotations", "Invalid value: \"bad key!\""),
        ],
    );
    obj["metadata"] = json!("nope");
    assert!(
        pairs(&validate(&schema, &obj))
            .iter()
            .any(|(f, _)| f == "metadata")
    );
}

#[test]
fn transition_rules() {
    let schema = crontab_schema();
    let old = good_object();
    let mut new = good_object();
    new["spec"]["image"] = json!("other");
    // Transition rules are skipped on create.
    assert_causes("create", &validate(&schema, &new), &[]);
    assert_causes(
        "update",
        &validate_update(&schema, &new, &old),
        &[(
            "spec.image",
            "Invalid value: \"object\": image is immutable",
        )],
    );
    assert_causes("unchanged", &validate_update(&schema, &old, &old), &[]);
    // No old spec: nothing to compare with.
    let mut bare = good_object();
    bare.as_object_mut().unwrap().remove("spec");
    assert_causes("no old spec", &validate_update(&schema, &new, &bare), &[]);
}

#[test]
fn cel_reasons_messages_and_errors() {
    let schema = |rule: Value| json!({"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}, "x-kubernetes-validations": [rule]});
    let cases: Vec<RuleCase> = vec![
        (json!({"rule": "self.n > 1"}), json!({"n": 2}), None),
        (
            json!({"rule": "self.n > 1", "reason": "FieldValueForbidden", "message": "too small"}),
            json!({"n": 1}),
            Some(("FieldValueForbidden", "", "Forbidden: too small")),
        ),
        (
            json!({"rule": "self.n > 1", "reason": "FieldValueRequired", "fieldPath": ".n"}),
            json!({"n": 1}),
            Some((
                "FieldValueRequired",
                "n",
                "Required value: failed rule: self.n > 1",
            )),
        ),
        (
            json!({"rule": "self.n > 1", "messageExpression": "'n is ' + string(self.n)", "message": "fallback"}),
            json!({"n": 1}),
            Some(("FieldValueInvalid", "", "Invalid value: \"object\": n is 1")),
        ),
        (
            json!({"rule": "self.n > 1", "messageExpression": "self.nope", "message": "fallback"}),
            json!({"n": 1}),
            Some((
                "FieldValueInvalid",
                "",
                "Invalid value: \"object\": fallback",
            )),
        ),
        (
            json!({"rule": "self.s.matches('^a+$')"}),
            json!({"s": "aaa"}),
            None,
        ),
        (
            json!({"rule": "self.s.startsWith('b')"}),
            json!({"s": "aaa"}),
            Some((
                "FieldValueInvalid",
                "",
                "failed rule: self.s.startsWith('b')",
            )),
        ),
        (
            json!({"rule": "self.missing > 1"}),
            json!({"n": 1}),
            Some((
                "FieldValueInvalid",
                "",
                "failed to evaluate rule self.missing > 1",
            )),
        ),
        (
            json!({"rule": "self.n"}),
            json!({"n": 1}),
            Some(("FieldValueInvalid", "", "rule did not evaluate to a bool")),
        ),
        (
            json!({"rule": "has(self.s) || self.n == 1"}),
            json!({"n": 1}),
            None,
        ),
        (
            json!({"rule": "self.s.lowerAscii() == 'abc'"}),
            json!({"s": "ABC"}),
            None,
        ),
        (
            json!({"rule": "self.metadata.name == 'x' && !has(self.metadata.labels)"}),
            json!({"metadata": {"name": "x", "labels": {"a": "b"}}}),
            None,
        ),
    ];
    for (rule, obj, want) in cases {
        let causes = validate(&schema(rule.clone()), &obj);
        match want {
            None => assert!(causes.is_empty(), "{rule}: {causes:?}"),
            Some((reason, field, msg)) => {
                assert_eq!(causes.len(), 1, "{rule}: {causes:?}");
                assert_eq!(causes[0].reason, reason, "{rule}");
                assert_eq!(causes[0].field, field, "{rule}");
                assert!(
                    causes[0].message.contains(msg),
                    "{rule}: {}",
                    causes[0].message
                );
            }
        }
    }
}

#[test]
fn cel_cost_is_bounded() {
    let schema = json!({
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
        "x-kubernetes-validations": [
            {"rule": "self.a.all(x, self.a.all(y, self.a.all(z, x + y + z >= 0)))"},
            {"rule": "size(self.a) > 0"}
        ]
    });
    let small = json!({"a": [1, 2, 3]});
    assert!(validate(&schema, &small).is_empty());
    let big = json!({"a": (0..2000).collect::<Vec<i64>>()});
    let started = std::time::Instant::now();
    let causes = validate(&schema, &big);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_causes(
        "big",
        &causes,
        &[("", "validation failed due to running out of cost budget")],
    );
}

#[test]
fn defaults() {
    let schema = crontab_schema();
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "c"},
        "spec": {"cronSpec": "* * * * *", "template": {"spec": {}}}
    });
    apply_defaults(&schema, &mut obj);
    assert_eq!(obj["spec"]["replicas"], json!(1));
    assert_eq!(obj["spec"]["template"]["spec"]["x"], json!("dx"));
    // Explicit values stay; null on a non-nullable field with a default is replaced.
    let mut obj = json!({"spec": {"replicas": 4}});
    apply_defaults(&schema, &mut obj);
    assert_eq!(obj["spec"]["replicas"], json!(4));
    let mut obj = json!({"spec": {"replicas": null}});
    apply_defaults(&schema, &mut obj);
    assert_eq!(obj["spec"]["replicas"], json!(1));
    // Absent parents are not created.
    let mut obj = json!({"metadata": {}});
    apply_defaults(&schema, &mut obj);
    assert_eq!(obj, json!({"metadata": {}}));
    // Defaults inside defaults apply.
    let nested = json!({"type": "object", "properties": {"a": {"type": "object", "default": {}, "properties": {"b": {"type": "integer", "default": 2}}}}});
    let mut obj = json!({});
    apply_defaults(&nested, &mut obj);
    assert_eq!(obj, json!({"a": {"b": 2}}));
}

#[test]
fn pruning() {
    let schema = crontab_schema();
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "c", "anything": {"kept": true}},
        "unknownTop": 1,
        "spec": {
            "cronSpec": "* * * * *", "bogus": true,
            "extra": {"free": {"form": 1}},
            "ports": [{"name": "a", "junk": 1}],
            "labels": {"k": "v"},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": "1", "y": 2}, "other": 3}
        },
        "status": {"replicas": 1, "nope": 2}
    });
    let mut pruned = prune(&schema, &mut obj);
    pruned.sort();
    assert_eq!(
        pruned,
        [
            "spec.bogus",
            "spec.ports[0].junk",
            "spec.template.other",
            "spec.template.spec.y",
            "status.nope",
            "unknownTop"
        ]
    );
    assert_eq!(obj["metadata"]["anything"], json!({"kept": true}));
    assert_eq!(obj["spec"]["extra"], json!({"free": {"form": 1}}));
    assert_eq!(obj["spec"]["labels"], json!({"k": "v"}));
    assert_eq!(obj["spec"]["template"]["metadata"], json!({"name": "p"}));
    assert_eq!(obj["apiVersion"], json!("stable.example.com/v1"));
    // Preserve-unknown at the root keeps everything.
    let mut free = json!({"a": {"b": 1}});
    assert!(
        prune(
            &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            &mut free
        )
        .is_empty()
    );
    assert_eq!(free, json!({"a": {"b": 1}}));
}

#[test]
fn deep_input_is_bounded() {
    let mut schema = json!({"type": "string"});
    let mut obj = json!("x");
    for _ in 0..300 {
        schema = json!({"type": "object", "properties": {"a": schema}});
        obj = json!({"a": obj});
    }
    assert!(!validate(&schema, &obj).is_empty());
    let mut crd = crontab_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema.clone();
    assert!(!validate_crd(&crd, None).is_empty());
    apply_defaults(&schema, &mut obj);
    prune(&schema, &mut obj);
}

/// `field: message` of every cause validate_crd reports for a CRD whose only version
/// has `schema`, sorted.
fn schema_causes(schema: Value) -> Vec<String> {
    let mut crd = crontab_crd();
    crd["spec"]["versions"] = json!([{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]);
    let mut out: Vec<String> = validate_crd(&crd, None)
        .into_iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    out.sort();
    out
}

#[test]
fn structural_rules() {
    let root = "spec.versions[0].schema.openAPIV3Schema";
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"type": "object", "properties": {"foo": {"type": "string"}},
                   "not": {"type": "string", "additionalProperties": true, "title": "t", "description": "d", "nullable": true},
                   "anyOf": [{"items": {"type": "string"}}]}),
            vec![
                format!("{root}.anyOf[0].items.type: Forbidden: must be empty to be structural"),
                format!(
                    "{root}.items: Required value: because it is defined in {root}.anyOf[0].items"
                ),
                format!(
                    "{root}.not.additionalProperties: Forbidden: must be undefined to be structural"
                ),
                format!("{root}.not.description: Forbidden: must be empty to be structural"),
                format!("{root}.not.nullable: Forbidden: must be false to be structural"),
                format!("{root}.not.title: Forbidden: must be empty to be structural"),
                format!("{root}.not.type: Forbidden: must be empty to be structural"),
            ],
        ),
        (
            json!({"type": "object", "properties": {
                "a": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "b": {"x-kubernetes-int-or-string": true, "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^x"}]}
            }}),
            vec![],
        ),
        (
            json!({"type": "object", "properties": {"a": {"x-kubernetes-int-or-string": true, "x-kubernetes-preserve-unknown-fields": true}}}),
            vec![format!(
                "{root}.properties[a].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if x-kubernetes-int-or-string is true"
            )],
        ),
        (
            json!({"type": "object", "properties": {"e": {"x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}}),
            vec![format!(
                "{root}.properties[e].type: Required value: must be object if x-kubernetes-embedded-resource is true"
            )],
        ),
        (
            json!({"type": "object", "properties": {"e": {"type": "object", "x-kubernetes-embedded-resource": true,
                   "properties": {"kind": {"type": "integer"}, "apiVersion": {"type": "string"}, "metadata": {"type": "object"}}}}}),
            vec![format!(
                "{root}.properties[e].properties[kind].type: Invalid value: \"integer\": must be string"
            )],
        ),
        (
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            vec![format!(
                "{root}.additionalProperties: Forbidden: must not be used at the root"
            )],
        ),
        (
            json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}}}),
            vec![],
        ),
        (
            json!({"type": "object", "properties": {"x": {"type": "object", "allOf": [{"properties": {"metadata": {}, "y": {}}}]}}}),
            vec![
                format!(
                    "{root}.properties[x].allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context"
                ),
                format!(
                    "{root}.properties[x].properties[metadata]: Required value: because it is defined in {root}.properties[x].allOf[0].properties[metadata]"
                ),
                format!(
                    "{root}.properties[x].properties[y]: Required value: because it is defined in {root}.properties[x].allOf[0].properties[y]"
                ),
            ],
        ),
        (
            json!({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object", "properties": {"k": {"type": "string"}}}}}}),
            vec![format!(
                "{root}.properties[l].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"
            )],
        ),
        (
            json!({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "object"}}}}),
            vec![format!(
                "{root}.properties[l].items.type: Invalid value: \"object\": must be a scalar type if parent array's x-kubernetes-list-type is set"
            )],
        ),
    ];
    for (schema, want) in cases {
        assert_eq!(schema_causes(schema.clone()), want, "{schema}");
    }
}

#[test]
fn schema_of_version() {
    let crd = crontab_crd();
    assert_eq!(version_schema(&crd, "v1"), Some(&crontab_schema()));
    assert_eq!(version_schema(&crd, "v9"), None);
}
