//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! the JSON form of the same object, for the built-in kinds.
//!
//! client-go's typed clients (and so `kubectl create <thing>`, `kubectl auth can-i`, `create
//! token`, `drain`) send the magic `k8s\0` followed by a `runtime.Unknown` envelope whose `raw`
//! field holds the object's own encoding. The decoder walks that encoding with a generated wire
//! schema (`table.rs`, from k8s-pb's message definitions joined with the Go types' JSON tags) and
//! produces what Go's `encoding/json` would write for the decoded Go struct: JSON field names,
//! `omitempty` drops zero values, pointer fields keep present zero values, structs are always
//! written (`"creationTimestamp": null`, `"status": {}`), lists and maps without `omitempty` are
//! `null` when empty, and the special types take their JSON forms (Time, MicroTime, Duration,
//! IntOrString, Quantity, RawExtension, FieldsV1, bytes as base64).
//!
//! The input is untrusted: every malformed input is an error, nesting depth is bounded, and so
//! is the number of JSON values the output may hold relative to the input's size.

mod decode;
mod schema;
#[allow(clippy::all)]
#[rustfmt::skip]
mod table;
#[cfg(test)]
mod tests;
mod wire;

use serde_json::{Map, Value};

use schema::Message;
use table::MESSAGES;
use wire::{Payload, Reader};

/// The four bytes that start every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The deepest message nesting accepted. Real objects stay well below 30 levels.
pub const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the magic bytes \"k8s\\x00\"")]
    MissingMagic,
    /// A varint or a length-delimited field runs past the end of its message.
    #[error("truncated protobuf data at byte {offset} of a message")]
    Truncated {
        /// Offset inside the enclosing message.
        offset: usize,
    },
    /// A varint is longer than ten bytes or overflows 64 bits.
    #[error("malformed varint at byte {offset} of a message")]
    VarintOverflow {
        /// Offset inside the enclosing message.
        offset: usize,
    },
    /// A field key with number 0 or above the protobuf maximum.
    #[error("invalid protobuf field number {number} at byte {offset} of a message")]
    InvalidFieldNumber {
        /// Offset inside the enclosing message.
        offset: usize,
        /// The number found.
        number: u64,
    },
    /// A field key with a wire type that is not 0, 1, 2 or 5 (groups are not used).
    #[error("unsupported protobuf wire type {wire_type} at byte {offset} of a message")]
    UnsupportedWireType {
        /// Offset inside the enclosing message.
        offset: usize,
        /// The wire type found.
        wire_type: u8,
    },
    /// A known field arrived with a wire type its type cannot have.
    #[error("field {field} of {message} has wire type {found}, expected {expected}")]
    WrongWireType {
        /// The message's full name.
        message: &'static str,
        /// The field number.
        field: u32,
        /// The wire type found.
        found: u8,
        /// The wire type the field's type uses.
        expected: u8,
    },
    /// The envelope names no kind.
    #[error("protobuf envelope has no kind or apiVersion")]
    MissingTypeMeta,
    /// The envelope names a kind this decoder has no schema for.
    #[error("no protobuf decoding for kind {kind:?} of apiVersion {api_version:?}")]
    UnknownKind {
        /// The apiVersion of the envelope.
        api_version: String,
        /// The kind of the envelope.
        kind: String,
    },
    /// The envelope's `contentEncoding` is set (no encoding is defined).
    #[error("unsupported protobuf envelope content encoding {0:?}")]
    UnsupportedContentEncoding(String),
    /// The envelope's `contentType` is neither protobuf nor JSON.
    #[error("unsupported protobuf envelope content type {0:?}")]
    UnsupportedContentType(String),
    /// Messages are nested deeper than [`MAX_DEPTH`].
    #[error("protobuf messages nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The decoded object would hold more JSON values than the input's size justifies.
    #[error("decoded protobuf object exceeds {limit} JSON values")]
    TooLarge {
        /// The limit for this input.
        limit: usize,
    },
    /// A field's value has no JSON form: a non-finite double, an impossible IntOrString type,
    /// an empty Quantity, a time outside years 1 to 9999, or embedded bytes that are not JSON.
    #[error("field {field} of {message}: {reason}")]
    InvalidValue {
        /// The message's full name.
        message: &'static str,
        /// The field number.
        field: u32,
        /// What is wrong.
        reason: String,
    },
    /// The envelope's raw bytes claim to be JSON but are not.
    #[error("protobuf envelope carries invalid JSON: {0}")]
    InvalidJson(String),
}

/// Decodes a whole protobuf request body (`k8s\0` + `runtime.Unknown`) into the object's JSON
/// form, with `kind` and `apiVersion` taken from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::MissingMagic)?;
    let envelope = Envelope::parse(rest)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedContentEncoding(
            envelope.content_encoding,
        ));
    }
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    match envelope.content_type.as_str() {
        "" | MEDIA_TYPE => decode_raw(&envelope.api_version, &envelope.kind, envelope.raw),
        "application/json" => {
            let value: Value = serde_json::from_slice(envelope.raw)
                .map_err(|e| ProtobufError::InvalidJson(e.to_string()))?;
            let Value::Object(fields) = value else {
                return Err(ProtobufError::InvalidJson("not an object".into()));
            };
            Ok(with_type_meta(
                &envelope.api_version,
                &envelope.kind,
                fields,
            ))
        }
        other => Err(ProtobufError::UnsupportedContentType(other.to_owned())),
    }
}

/// Decodes the protobuf encoding of one object (the envelope's `raw` bytes) of the given
/// `apiVersion` and `kind` into its JSON form, `kind` and `apiVersion` first.
pub fn decode_raw(api_version: &str, kind: &str, raw: &[u8]) -> Result<Value, ProtobufError> {
    let message = kind_message(api_version, kind).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })?;
    let budget = raw.len().saturating_mul(4).saturating_add(16 * 1024);
    let mut decoder = decode::Decoder::new(budget);
    let Value::Object(fields) = decoder.message(message, &[raw], 0)? else {
        // Kinds are ordinary structs; only special messages decode to non-objects.
        return Err(ProtobufError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    };
    Ok(with_type_meta(api_version, kind, fields))
}

/// Whether [`decode_raw`] knows the kind: a built-in kind (or list, or options type) of a
/// supported group version, or a `meta.k8s.io/v1` type such as `DeleteOptions`, which every
/// group version accepts.
pub fn supports(api_version: &str, kind: &str) -> bool {
    kind_message(api_version, kind).is_some()
}

/// The wire schema of a kind.
fn kind_message(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if version.is_empty() || kind.is_empty() {
        return None;
    }
    let package = GROUP_PACKAGES
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(_, package)| *package)?;
    let in_group = format!("{package}.{version}.{kind}");
    let in_meta = format!("{META_PACKAGE}.v1.{kind}");
    [in_group, in_meta]
        .iter()
        .filter_map(|name| find_message(name))
        .find(|message| message.is_kind)
}

/// A message by full name.
fn find_message(name: &str) -> Option<&'static Message> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &MESSAGES[i])
}

/// The protobuf package prefix of the meta types.
const META_PACKAGE: &str = "io.k8s.apimachinery.pkg.apis.meta";

/// API groups and the package prefix of their messages.
const GROUP_PACKAGES: &[(&str, &str)] = &[
    ("", "io.k8s.api.core"),
    (
        "admissionregistration.k8s.io",
        "io.k8s.api.admissionregistration",
    ),
    ("apps", "io.k8s.api.apps"),
    ("authentication.k8s.io", "io.k8s.api.authentication"),
    ("authorization.k8s.io", "io.k8s.api.authorization"),
    ("autoscaling", "io.k8s.api.autoscaling"),
    ("batch", "io.k8s.api.batch"),
    ("certificates.k8s.io", "io.k8s.api.certificates"),
    ("coordination.k8s.io", "io.k8s.api.coordination"),
    ("discovery.k8s.io", "io.k8s.api.discovery"),
    ("events.k8s.io", "io.k8s.api.events"),
    ("meta.k8s.io", META_PACKAGE),
    ("networking.k8s.io", "io.k8s.api.networking"),
    ("node.k8s.io", "io.k8s.api.node"),
    ("policy", "io.k8s.api.policy"),
    ("rbac.authorization.k8s.io", "io.k8s.api.rbac"),
    ("scheduling.k8s.io", "io.k8s.api.scheduling"),
    ("storage.k8s.io", "io.k8s.api.storage"),
];

/// Prepends `kind` and `apiVersion` (in Go's `TypeMeta` order) to an object's fields,
/// replacing any the fields carry.
fn with_type_meta(api_version: &str, kind: &str, fields: Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(fields.len() + 2);
    out.insert("kind".into(), Value::String(kind.to_owned()));
    out.insert("apiVersion".into(), Value::String(api_version.to_owned()));
    for (key, value) in fields {
        if key != "kind" && key != "apiVersion" {
            out.insert(key, value);
        }
    }
    Value::Object(out)
}

/// The fields of a `runtime.Unknown`.
#[derive(Debug, Default)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    /// The full name of `runtime.Unknown`, for errors.
    const NAME: &'static str = "io.k8s.apimachinery.pkg.runtime.Unknown";

    /// Parses `runtime.Unknown {typeMeta = 1, raw = 2, contentEncoding = 3, contentType = 4}`.
    fn parse(data: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut envelope = Envelope::default();
        let mut reader = Reader::new(data);
        while let Some((number, payload)) = reader.next_field()? {
            let bytes = match (number, payload) {
                (1..=4, Payload::Len(bytes)) => bytes,
                (1..=4, other) => {
                    return Err(wrong_wire_type(Self::NAME, number, other));
                }
                _ => continue,
            };
            match number {
                1 => {
                    // TypeMeta {apiVersion = 1, kind = 2}; repeated occurrences merge.
                    let mut type_meta = Reader::new(bytes);
                    while let Some((number, payload)) = type_meta.next_field()? {
                        let target = match number {
                            1 => &mut envelope.api_version,
                            2 => &mut envelope.kind,
                            _ => continue,
                        };
                        let Payload::Len(text) = payload else {
                            return Err(wrong_wire_type(
                                "io.k8s.apimachinery.pkg.runtime.TypeMeta",
                                number,
                                payload,
                            ));
                        };
                        *target = String::from_utf8_lossy(text).into_owned();
                    }
                }
                2 => envelope.raw = bytes,
                3 => envelope.content_encoding = String::from_utf8_lossy(bytes).into_owned(),
                _ => envelope.content_type = String::from_utf8_lossy(bytes).into_owned(),
            }
        }
        Ok(envelope)
    }
}

/// The error for a field that arrived with a wire type other than length-delimited.
fn wrong_wire_type(message: &'static str, field: u32, payload: Payload<'_>) -> ProtobufError {
    ProtobufError::WrongWireType {
        message,
        field,
        found: payload.wire_type().number(),
        expected: wire::WireType::Len.number(),
    }
}
