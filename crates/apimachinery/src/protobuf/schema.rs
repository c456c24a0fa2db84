//! The shape of the generated wire schema (`table.rs`): messages, their fields, and how each
//! field appears in the JSON form.

/// One protobuf message of the built-in API.
#[derive(Debug)]
pub(super) struct Message {
    /// Full name as in the OpenAPI definitions, `io.k8s.api.core.v1.Pod`.
    pub name: &'static str,
    /// Whether the Go struct embeds `TypeMeta`: a kind, a list or an options type.
    pub is_kind: bool,
    /// How the message turns into JSON.
    pub special: Special,
    /// Fields in the Go struct's order, which is the JSON object's key order.
    pub fields: &'static [Field],
}

/// How a message turns into JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    /// An object of its fields.
    Object,
    /// `metav1.Time`: seconds → RFC 3339 with second precision; the empty message is `null`.
    Time,
    /// `metav1.MicroTime`: seconds and nanos → RFC 3339 with six fraction digits.
    MicroTime,
    /// `metav1.Duration`: nanoseconds → Go's duration string, `1h0m0s`.
    Duration,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `resource.Quantity`: its string form.
    Quantity,
    /// `runtime.RawExtension`, `metav1.FieldsV1`: raw bytes holding JSON, embedded as is.
    RawJson,
    /// A named Go slice (`ExtraValue []string`) carried as `{repeated items = 1}`: the array.
    Items,
}

/// The wire and JSON type of a field (of a map's values for [`Card::Map`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    /// `string`.
    Str,
    /// `bool`.
    Bool,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// `double`.
    F64,
    /// `bytes`, base64 in JSON.
    Bytes,
    /// A message: an index into `MESSAGES`.
    Msg(u16),
}

/// Cardinality of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Card {
    /// A single value.
    One,
    /// A list.
    Rep,
    /// A `map<string, ty>`, carried as repeated entries `{key = 1, value = 2}`.
    Map,
}

/// How the Go struct field behaves in JSON; the wire cannot tell a pointer from a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Presence {
    /// A pointer with `omitempty`: absent means omitted, present is kept even when zero.
    Ptr,
    /// A pointer without `omitempty`: absent means `null`.
    PtrNull,
    /// A value without `omitempty`: absent means its zero value, which is kept.
    Val,
    /// A value with `omitempty`: zero scalars, empty lists and maps are dropped (Go keeps
    /// structs, whose zero value is still written).
    ValOmit,
    /// An embedded struct whose fields are written into the parent object (`json:",inline"`).
    Inline,
    /// A field that JSON never carries (`json:"-"`).
    Skip,
}

/// One field of a message.
#[derive(Debug)]
pub(super) struct Field {
    /// Protobuf field number.
    pub tag: u32,
    /// JSON name (the Go field name when the tag has none); empty for inlined structs.
    pub json: &'static str,
    /// Wire and JSON type.
    pub ty: Ty,
    /// Cardinality.
    pub card: Card,
    /// JSON behaviour of the Go field.
    pub presence: Presence,
}

/// Builds a [`Field`]; keeps the generated table short.
pub(super) const fn f(
    tag: u32,
    json: &'static str,
    ty: Ty,
    card: Card,
    presence: Presence,
) -> Field {
    Field {
        tag,
        json,
        ty,
        card,
        presence,
    }
}

/// Builds a [`Message`]; keeps the generated table short.
pub(super) const fn m(
    name: &'static str,
    is_kind: bool,
    special: Special,
    fields: &'static [Field],
) -> Message {
    Message {
        name,
        is_kind,
        special,
        fields,
    }
}
