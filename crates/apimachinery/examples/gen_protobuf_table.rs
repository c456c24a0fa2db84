//! Regenerates `src/protobuf/table.rs`, the wire schema the protobuf body decoder walks.
//!
//! Run from the crate directory:
//! `cargo run -p apimachinery --example gen_protobuf_table -- K8S_API_DIR APIMACHINERY_DIR [K8S_PB_SRC]`
//!
//! - `K8S_API_DIR`: a checkout of `k8s.io/api` (github.com/kubernetes/api) at the release that
//!   matches k8s-pb (k8s-pb 0.9 carries the 1.35 protos: tag `v0.35.7`);
//! - `APIMACHINERY_DIR`: a checkout of `k8s.io/apimachinery` at the same tag;
//! - `K8S_PB_SRC`: k8s-pb's `src` directory; by default k8s-pb 0.9.0 in cargo's registry cache.
//!
//! Two sources are joined because neither says everything. k8s-pb's prost attributes give every
//! message's field tags and wire types with message types resolved to full names. The Go types
//! give what the wire cannot: each field's JSON name, whether it is a pointer (presence matters)
//! or a value (zero means unset, `omitempty` drops it), and whether the struct is inlined into its
//! parent's JSON object. Fields are joined by (message name, tag number).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The k8s-pb module directories (under `src`) whose messages go into the table, with the
/// directory of the matching Go package: `A` under `K8S_API_DIR`, `M` under `APIMACHINERY_DIR`.
const PACKAGES: &[(&str, char, &str)] = &[
    (
        "api/admissionregistration/v1",
        'A',
        "admissionregistration/v1",
    ),
    ("api/apps/v1", 'A', "apps/v1"),
    ("api/authentication/v1", 'A', "authentication/v1"),
    ("api/authorization/v1", 'A', "authorization/v1"),
    ("api/autoscaling/v1", 'A', "autoscaling/v1"),
    ("api/autoscaling/v2", 'A', "autoscaling/v2"),
    ("api/batch/v1", 'A', "batch/v1"),
    ("api/certificates/v1", 'A', "certificates/v1"),
    ("api/coordination/v1", 'A', "coordination/v1"),
    ("api/core/v1", 'A', "core/v1"),
    ("api/discovery/v1", 'A', "discovery/v1"),
    ("api/events/v1", 'A', "events/v1"),
    ("api/networking/v1", 'A', "networking/v1"),
    ("api/node/v1", 'A', "node/v1"),
    ("api/policy/v1", 'A', "policy/v1"),
    ("api/rbac/v1", 'A', "rbac/v1"),
    ("api/scheduling/v1", 'A', "scheduling/v1"),
    ("api/storage/v1", 'A', "storage/v1"),
    ("apimachinery/pkg/apis/meta/v1", 'M', "pkg/apis/meta/v1"),
    ("apimachinery/pkg/runtime", 'M', "pkg/runtime"),
    ("apimachinery/pkg/util/intstr", 'M', "pkg/util/intstr"),
    ("apimachinery/pkg/api/resource", 'M', "pkg/api/resource"),
];

/// Messages whose JSON form is not an object of their fields.
const SPECIALS: &[(&str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
        "MicroTime",
    ),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1", "RawJson"),
    ("io.k8s.apimachinery.pkg.runtime.RawExtension", "RawJson"),
    (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "IntOrString",
    ),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", "Quantity"),
];

/// One prost field.
struct PbField {
    tag: u32,
    /// `Str`, `Bool`, `I32`, `I64`, `F64`, `Bytes` or `Msg(<full name>)` (resolved later).
    ty: String,
    /// `One`, `Rep` or `Map`.
    card: &'static str,
}

/// One prost message.
struct PbMessage {
    /// Module path with dots, `api.core.v1`.
    package: String,
    name: String,
    fields: Vec<PbField>,
}

/// What a Go struct field says about JSON.
#[derive(Clone)]
struct GoField {
    json: String,
    omitempty: bool,
    inline: bool,
    pointer: bool,
    ignored: bool,
    /// Position in the Go struct, which orders the JSON object's keys.
    position: usize,
}

/// What a Go package says.
#[derive(Default)]
struct GoPackage {
    /// Struct name → fields by protobuf tag.
    structs: BTreeMap<String, BTreeMap<u32, GoField>>,
    /// Structs that embed `TypeMeta` (kinds, lists and options).
    kinds: BTreeSet<String>,
    /// Named slice types (`type ExtraValue []string`), carried in protobuf as `{items}`.
    slices: BTreeSet<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(api_dir), Some(machinery_dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: gen_protobuf_table K8S_API_DIR APIMACHINERY_DIR [K8S_PB_SRC]");
        std::process::exit(2);
    };
    let pb_src = args.get(2).map(PathBuf::from).unwrap_or_else(find_k8s_pb);

    let mut messages: Vec<PbMessage> = Vec::new();
    let mut go: BTreeMap<String, GoPackage> = BTreeMap::new();
    for (module_dir, root, go_dir) in PACKAGES {
        let file = pb_src.join(module_dir).join("mod.rs");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let package = module_dir.replace('/', ".");
        messages.extend(parse_prost(&package, &text));
        let base = if *root == 'A' { api_dir } else { machinery_dir };
        go.insert(package, parse_go_dir(&Path::new(base).join(go_dir)));
    }

    // Canonical names: the Go struct's spelling (prost re-cases acronyms), as in OpenAPI.
    // Keyed by the prost-spelled full name, which field references carry.
    let mut canonical: BTreeMap<String, String> = BTreeMap::new();
    for m in &messages {
        let pkg = &go[&m.package];
        let go_name = pkg
            .structs
            .keys()
            .chain(pkg.slices.iter())
            .find(|n| n.eq_ignore_ascii_case(&m.name))
            .cloned()
            .unwrap_or_else(|| m.name.clone());
        canonical.insert(
            format!("io.k8s.{}.{}", m.package, m.name),
            format!("io.k8s.{}.{go_name}", m.package),
        );
    }
    // Messages with fields but no Go struct (`type List metav1.List`, `QuantityValue`) have no
    // JSON form of their own here; they are left out, and a reference to one is an error.
    messages.retain(|m| {
        let full = &canonical[&format!("io.k8s.{}.{}", m.package, m.name)];
        let short = full.rsplit('.').next().unwrap_or_default();
        let pkg = &go[&m.package];
        let keep = m.fields.is_empty()
            || pkg.structs.contains_key(short)
            || pkg.slices.contains(short)
            || SPECIALS.iter().any(|(n, _)| n == full);
        if !keep {
            eprintln!("note: leaving out {full}: no Go struct");
        }
        keep
    });
    let kept: BTreeSet<String> = messages
        .iter()
        .map(|m| canonical[&format!("io.k8s.{}.{}", m.package, m.name)].clone())
        .collect();
    let mut names: Vec<&String> = kept.iter().collect();
    names.sort();
    names.dedup();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();

    let mut out_messages: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for m in &messages {
        let full = &canonical[&format!("io.k8s.{}.{}", m.package, m.name)];
        let short = full.rsplit('.').next().unwrap_or_default();
        let pkg = &go[&m.package];
        let special = SPECIALS
            .iter()
            .find(|(n, _)| n == full)
            .map(|(_, s)| *s)
            .unwrap_or(if pkg.slices.contains(short) {
                "Items"
            } else {
                "Object"
            });
        let go_fields = pkg.structs.get(short);
        let mut rows: Vec<(usize, String)> = Vec::new();
        for f in &m.fields {
            let ty = match f.ty.strip_prefix("Msg(") {
                Some(target) => {
                    let target = target.trim_end_matches(')');
                    match canonical.get(target).and_then(|c| index.get(c.as_str())) {
                        Some(i) => format!("Msg({i})"),
                        None => {
                            problems.push(format!("{full}#{}: unknown message {target}", f.tag));
                            continue;
                        }
                    }
                }
                None => f.ty.clone(),
            };
            let go_field = match (special, go_fields.and_then(|g| g.get(&f.tag))) {
                (_, Some(g)) => g.clone(),
                ("Object", None) => {
                    problems.push(format!("{full}#{}: no Go field with this tag", f.tag));
                    continue;
                }
                // Special messages are decoded by hand; their field names do not matter.
                (_, None) => GoField {
                    json: String::new(),
                    omitempty: false,
                    inline: false,
                    pointer: false,
                    ignored: false,
                    position: f.tag as usize,
                },
            };
            let presence = if go_field.ignored {
                "Skip"
            } else if go_field.inline {
                "Inline"
            } else {
                match (go_field.pointer, go_field.omitempty) {
                    (true, true) => "Ptr",
                    (true, false) => "PtrNull",
                    (false, true) => "ValOmit",
                    (false, false) => "Val",
                }
            };
            rows.push((
                go_field.position,
                format!(
                    "f({}, {:?}, {ty}, {}, {presence})",
                    f.tag, go_field.json, f.card
                ),
            ));
        }
        rows.sort_by_key(|(position, _)| *position);
        let fields: Vec<String> = rows.into_iter().map(|(_, row)| row).collect();
        let kind = pkg.kinds.contains(short);
        let entry = format!(
            "    m({full:?}, {kind}, {special}, &[{}]),\n",
            fields.join(", ")
        );
        out_messages.insert(full.clone(), entry);
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        std::process::exit(1);
    }

    let mut out = String::new();
    out.push_str(
        "//! Generated by `examples/gen_protobuf_table.rs` from k8s-pb 0.9 and the k8s.io/api and\n\
         //! k8s.io/apimachinery Go types (v0.35.7). Do not edit by hand.\n\n\
         use super::schema::Card::*;\n\
         use super::schema::Presence::*;\n\
         use super::schema::Special::*;\n\
         use super::schema::Ty::*;\n\
         use super::schema::{Message, f, m};\n\n\
         /// Every message, sorted by name; `Msg(i)` refers to `MESSAGES[i]`.\n\
         pub(super) static MESSAGES: &[Message] = &[\n",
    );
    for entry in out_messages.values() {
        out.push_str(entry);
    }
    out.push_str("];\n");
    let target = Path::new("src/protobuf/table.rs");
    std::fs::write(target, out).unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
    eprintln!(
        "wrote {} messages to {}",
        out_messages.len(),
        target.display()
    );
}

/// k8s-pb 0.9.0's sources in cargo's registry cache.
fn find_k8s_pb() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let registry = home.join("registry/src");
    for entry in std::fs::read_dir(&registry).into_iter().flatten().flatten() {
        let candidate = entry.path().join("k8s-pb-0.9.0/src");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!("k8s-pb 0.9.0 not found under {}", registry.display());
}

/// Parses the messages of one prost-generated module.
fn parse_prost(package: &str, text: &str) -> Vec<PbMessage> {
    let mut out = Vec::new();
    let mut current: Option<PbMessage> = None;
    let mut attr: Option<String> = None;
    let mut decl = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("pub struct ") {
            let name = rest.split([' ', '{']).next().unwrap_or_default().to_owned();
            let msg = PbMessage {
                package: package.to_owned(),
                name,
                fields: Vec::new(),
            };
            if trimmed.ends_with("{}") {
                out.push(msg);
            } else {
                current = Some(msg);
            }
            continue;
        }
        if line == "}" {
            if let Some(msg) = current.take() {
                out.push(msg);
            }
            continue;
        }
        let Some(msg) = current.as_mut() else {
            continue;
        };
        if let Some(a) = trimmed
            .strip_prefix("#[prost(")
            .and_then(|a| a.strip_suffix(")]"))
        {
            attr = Some(a.to_owned());
            decl.clear();
            continue;
        }
        if attr.is_some() && !trimmed.starts_with("///") {
            decl.push_str(trimmed);
            let balanced = decl.matches('<').count() == decl.matches('>').count();
            if trimmed.ends_with(',') && balanced {
                let a = attr.take().unwrap_or_default();
                msg.fields.push(parse_field(package, &a, &decl));
            }
        }
    }
    out
}

/// Parses one `#[prost(…)]` attribute and the declaration that follows it.
fn parse_field(package: &str, attr: &str, decl: &str) -> PbField {
    let tag = attr
        .split("tag = \"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no tag in {attr}"));
    let rust_type = decl
        .split_once(':')
        .map(|(_, t)| {
            t.trim()
                .trim_end_matches(',')
                .replace(' ', "")
                .replace(",>", ">")
        })
        .unwrap_or_default();
    let scalar = |s: &str| -> String {
        match s {
            "string" => "Str".into(),
            "bool" => "Bool".into(),
            "int32" => "I32".into(),
            "int64" => "I64".into(),
            "double" => "F64".into(),
            "bytes" => "Bytes".into(),
            "message" => format!("Msg({})", resolve(package, &rust_type)),
            other => panic!("unsupported prost type {other}"),
        }
    };
    if let Some(map) = attr.strip_prefix("btree_map = \"") {
        let value = map.split('"').next().unwrap_or_default();
        let value = value.split(", ").nth(1).unwrap_or_default();
        return PbField {
            tag,
            ty: scalar(value),
            card: "Map",
        };
    }
    let first = attr.split(',').next().unwrap_or_default();
    let kind = first.split(' ').next().unwrap_or_default();
    let card = if attr.contains("repeated") {
        "Rep"
    } else {
        "One"
    };
    PbField {
        tag,
        ty: scalar(kind),
        card,
    }
}

/// Resolves the message type of a field declaration to `io.k8s.<package>.<Name>`, in prost's
/// spelling of the name (`main` maps it to the Go spelling).
fn resolve(package: &str, rust_type: &str) -> String {
    let mut t = rust_type;
    for wrapper in [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ] {
        if let Some(inner) = t.strip_prefix(wrapper) {
            t = inner.strip_suffix('>').unwrap_or(inner);
        }
    }
    if let Some(inner) =
        t.strip_prefix("::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,")
    {
        t = inner.strip_suffix('>').unwrap_or(inner);
    }
    let mut module: Vec<&str> = package.split('.').collect();
    let mut segments: Vec<&str> = t.split("::").collect();
    let name = segments.pop().unwrap_or_default();
    for seg in segments {
        if seg == "super" {
            module.pop();
        } else {
            module.push(seg);
        }
    }
    format!("io.k8s.{}.{name}", module.join("."))
}

/// Parses the Go files of one package (not tests, not generated code).
fn parse_go_dir(dir: &Path) -> GoPackage {
    let mut pkg = GoPackage::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".go")
                && !name.ends_with("_test.go")
                && !name.starts_with("generated")
                && !name.starts_with("zz_generated")
        })
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        parse_go(&text, &mut pkg);
    }
    pkg
}

/// Collects struct fields with protobuf tags from one Go file.
fn parse_go(text: &str, pkg: &mut GoPackage) {
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("type ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            match words.next() {
                Some("struct") => current = Some(name),
                Some(t) if t.starts_with("[]") => {
                    pkg.slices.insert(name);
                }
                _ => {}
            }
            continue;
        }
        if line == "}" {
            current = None;
            continue;
        }
        let Some(strukt) = current.as_ref() else {
            continue;
        };
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        let Some((decl, tags)) = trimmed.split_once('`') else {
            continue;
        };
        let words: Vec<&str> = decl.split_whitespace().collect();
        let json = tag_value(tags, "json");
        if words.len() == 1
            && words[0].trim_start_matches('*').ends_with("TypeMeta")
            && json.as_deref() == Some(",inline")
        {
            pkg.kinds.insert(strukt.clone());
        }
        let Some(protobuf) = tag_value(tags, "protobuf") else {
            continue;
        };
        let Some(number) = protobuf
            .split(',')
            .nth(1)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let go_type = if words.len() == 1 {
            words[0]
        } else {
            words.get(1).copied().unwrap_or_default()
        };
        let json = json.unwrap_or_default();
        let mut parts = json.split(',');
        let options: Vec<&str> = parts.clone().skip(1).collect();
        // Without a name in the tag, Go's encoder uses the field's Go name.
        let json_name = match parts.next().unwrap_or_default() {
            "" if !options.contains(&"inline") => words[0]
                .trim_start_matches('*')
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned(),
            name => name.to_owned(),
        };
        let position = pkg.structs.get(strukt.as_str()).map_or(0, BTreeMap::len);
        let field = GoField {
            position,
            ignored: json_name == "-",
            inline: options.contains(&"inline"),
            omitempty: options.contains(&"omitempty"),
            pointer: go_type.starts_with('*'),
            json: json_name,
        };
        pkg.structs
            .entry(strukt.clone())
            .or_default()
            .insert(number, field);
    }
}

/// The value of `key:"…"` in a Go struct tag.
fn tag_value(tags: &str, key: &str) -> Option<String> {
    let start = tags.find(&format!("{key}:\""))? + key.len() + 2;
    let rest = &tags[start..];
    Some(rest[..rest.find('"')?].to_owned())
}
