//! The swagger 2.0 document in gnostic's `openapi.v2` protobuf schema
//! (`github.com/google/gnostic-models/openapiv2/OpenAPIv2.proto`), the form kubectl asks for at
//! `/openapi/v2`. The JSON document is converted the way gnostic's compiler reads it: vendor
//! extensions and free-form values (`default`, `example`, `enum`) become `Any` holding YAML text.
//!
//! Field numbers are the .proto's. Parts kumo's document never has (security definitions,
//! shared parameters and responses, response headers and examples) are not declared.

// Oneof variants mirror the .proto's field names, and the messages live only while encoding.
#![allow(clippy::large_enum_variant, clippy::enum_variant_names)]

use prost::Message as _;
use serde_json::{Map, Value};

/// `openapi.v2.Document`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(string, tag = "3")]
    pub host: String,
    #[prost(string, tag = "4")]
    pub base_path: String,
    #[prost(string, repeated, tag = "5")]
    pub schemes: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub consumes: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub produces: Vec<String>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "14")]
    pub tags: Vec<Tag>,
    #[prost(message, optional, tag = "15")]
    pub external_docs: Option<ExternalDocs>,
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub terms_of_service: String,
    #[prost(message, optional, tag = "5")]
    pub contact: Option<Contact>,
    #[prost(message, optional, tag = "6")]
    pub license: Option<License>,
    #[prost(message, repeated, tag = "7")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Contact`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Contact {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub url: String,
    #[prost(string, tag = "3")]
    pub email: String,
    #[prost(message, repeated, tag = "4")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.License`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct License {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub url: String,
    #[prost(message, repeated, tag = "3")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Tag`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(message, optional, tag = "3")]
    pub external_docs: Option<ExternalDocs>,
    #[prost(message, repeated, tag = "4")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.ExternalDocs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExternalDocs {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub url: String,
    #[prost(message, repeated, tag = "3")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Any`: gnostic leaves `value` (a `google.protobuf.Any`, tag 1) unset and
/// keeps the value as YAML text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// `openapi.v2.NamedAny`: one vendor extension.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// `openapi.v2.Paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// `openapi.v2.NamedPathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// `openapi.v2.PathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    #[prost(string, tag = "1")]
    pub xref: String,
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "6")]
    pub options: Option<Operation>,
    #[prost(message, optional, tag = "7")]
    pub head: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Operation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "2")]
    pub summary: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(message, optional, tag = "4")]
    pub external_docs: Option<ExternalDocs>,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(bool, tag = "11")]
    pub deprecated: bool,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.ParametersItem`: a parameter or a reference to one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    #[prost(oneof = "ParametersItemOneof", tags = "1, 2")]
    pub oneof: Option<ParametersItemOneof>,
}

/// The choice of a [`ParametersItem`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParametersItemOneof {
    #[prost(message, tag = "1")]
    Parameter(Parameter),
    #[prost(message, tag = "2")]
    JsonReference(JsonReference),
}

/// `openapi.v2.JsonReference`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JsonReference {
    #[prost(string, tag = "1")]
    pub xref: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `openapi.v2.Parameter`: a body parameter or any other.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    #[prost(oneof = "ParameterOneof", tags = "1, 2")]
    pub oneof: Option<ParameterOneof>,
}

/// The choice of a [`Parameter`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterOneof {
    #[prost(message, tag = "1")]
    BodyParameter(BodyParameter),
    #[prost(message, tag = "2")]
    NonBodyParameter(NonBodyParameter),
}

/// `openapi.v2.BodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
    #[prost(message, repeated, tag = "6")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.NonBodyParameter`: chosen by the parameter's `in`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "NonBodyParameterOneof", tags = "1, 2, 3, 4")]
    pub oneof: Option<NonBodyParameterOneof>,
}

/// The choice of a [`NonBodyParameter`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum NonBodyParameterOneof {
    #[prost(message, tag = "1")]
    HeaderParameterSubSchema(HeaderParameterSubSchema),
    #[prost(message, tag = "2")]
    FormDataParameterSubSchema(FormDataParameterSubSchema),
    #[prost(message, tag = "3")]
    QueryParameterSubSchema(QueryParameterSubSchema),
    #[prost(message, tag = "4")]
    PathParameterSubSchema(PathParameterSubSchema),
}

/// `openapi.v2.HeaderParameterSubSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(string, tag = "6")]
    pub format: String,
    #[prost(message, optional, tag = "7")]
    pub items: Option<PrimitivesItems>,
    #[prost(string, tag = "8")]
    pub collection_format: String,
    #[prost(message, optional, tag = "9")]
    pub default: Option<Any>,
    #[prost(double, tag = "10")]
    pub maximum: f64,
    #[prost(bool, tag = "11")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "12")]
    pub minimum: f64,
    #[prost(bool, tag = "13")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "14")]
    pub max_length: i64,
    #[prost(int64, tag = "15")]
    pub min_length: i64,
    #[prost(string, tag = "16")]
    pub pattern: String,
    #[prost(int64, tag = "17")]
    pub max_items: i64,
    #[prost(int64, tag = "18")]
    pub min_items: i64,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(double, tag = "21")]
    pub multiple_of: f64,
    #[prost(message, repeated, tag = "22")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.PathParameterSubSchema` (same fields and numbers as the header one).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(string, tag = "6")]
    pub format: String,
    #[prost(message, optional, tag = "7")]
    pub items: Option<PrimitivesItems>,
    #[prost(string, tag = "8")]
    pub collection_format: String,
    #[prost(message, optional, tag = "9")]
    pub default: Option<Any>,
    #[prost(double, tag = "10")]
    pub maximum: f64,
    #[prost(bool, tag = "11")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "12")]
    pub minimum: f64,
    #[prost(bool, tag = "13")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "14")]
    pub max_length: i64,
    #[prost(int64, tag = "15")]
    pub min_length: i64,
    #[prost(string, tag = "16")]
    pub pattern: String,
    #[prost(int64, tag = "17")]
    pub max_items: i64,
    #[prost(int64, tag = "18")]
    pub min_items: i64,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(double, tag = "21")]
    pub multiple_of: f64,
    #[prost(message, repeated, tag = "22")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.QueryParameterSubSchema` (has `allowEmptyValue` at 5, so the rest shift by one).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(bool, tag = "5")]
    pub allow_empty_value: bool,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(string, tag = "7")]
    pub format: String,
    #[prost(message, optional, tag = "8")]
    pub items: Option<PrimitivesItems>,
    #[prost(string, tag = "9")]
    pub collection_format: String,
    #[prost(message, optional, tag = "10")]
    pub default: Option<Any>,
    #[prost(double, tag = "11")]
    pub maximum: f64,
    #[prost(bool, tag = "12")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "13")]
    pub minimum: f64,
    #[prost(bool, tag = "14")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "15")]
    pub max_length: i64,
    #[prost(int64, tag = "16")]
    pub min_length: i64,
    #[prost(string, tag = "17")]
    pub pattern: String,
    #[prost(int64, tag = "18")]
    pub max_items: i64,
    #[prost(int64, tag = "19")]
    pub min_items: i64,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "21")]
    pub r#enum: Vec<Any>,
    #[prost(double, tag = "22")]
    pub multiple_of: f64,
    #[prost(message, repeated, tag = "23")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.FormDataParameterSubSchema` (same field numbers as the query one).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FormDataParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(bool, tag = "5")]
    pub allow_empty_value: bool,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(string, tag = "7")]
    pub format: String,
    #[prost(message, optional, tag = "8")]
    pub items: Option<PrimitivesItems>,
    #[prost(string, tag = "9")]
    pub collection_format: String,
    #[prost(message, optional, tag = "10")]
    pub default: Option<Any>,
    #[prost(double, tag = "11")]
    pub maximum: f64,
    #[prost(bool, tag = "12")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "13")]
    pub minimum: f64,
    #[prost(bool, tag = "14")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "15")]
    pub max_length: i64,
    #[prost(int64, tag = "16")]
    pub min_length: i64,
    #[prost(string, tag = "17")]
    pub pattern: String,
    #[prost(int64, tag = "18")]
    pub max_items: i64,
    #[prost(int64, tag = "19")]
    pub min_items: i64,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "21")]
    pub r#enum: Vec<Any>,
    #[prost(double, tag = "22")]
    pub multiple_of: f64,
    #[prost(message, repeated, tag = "23")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.PrimitivesItems`: the items of a non-body array parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PrimitivesItems {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(message, optional, boxed, tag = "3")]
    pub items: Option<Box<PrimitivesItems>>,
    #[prost(string, tag = "4")]
    pub collection_format: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub maximum: f64,
    #[prost(bool, tag = "7")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "8")]
    pub minimum: f64,
    #[prost(bool, tag = "9")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "10")]
    pub max_length: i64,
    #[prost(int64, tag = "11")]
    pub min_length: i64,
    #[prost(string, tag = "12")]
    pub pattern: String,
    #[prost(int64, tag = "13")]
    pub max_items: i64,
    #[prost(int64, tag = "14")]
    pub min_items: i64,
    #[prost(bool, tag = "15")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "16")]
    pub r#enum: Vec<Any>,
    #[prost(double, tag = "17")]
    pub multiple_of: f64,
    #[prost(message, repeated, tag = "18")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Responses`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
    #[prost(message, repeated, tag = "2")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.NamedResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `openapi.v2.ResponseValue`: a response or a reference to one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    #[prost(oneof = "ResponseValueOneof", tags = "1, 2")]
    pub oneof: Option<ResponseValueOneof>,
}

/// The choice of a [`ResponseValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseValueOneof {
    #[prost(message, tag = "1")]
    Response(Response),
    #[prost(message, tag = "2")]
    JsonReference(JsonReference),
}

/// `openapi.v2.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
    #[prost(message, repeated, tag = "5")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.SchemaItem`: gnostic tries `Schema` first, which accepts any schema, so the
/// `FileSchema` alternative (tag 2) is never chosen for a parsed document.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    #[prost(oneof = "SchemaItemOneof", tags = "1")]
    pub oneof: Option<SchemaItemOneof>,
}

/// The choice of a [`SchemaItem`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SchemaItemOneof {
    #[prost(message, tag = "1")]
    Schema(Schema),
}

/// `openapi.v2.Definitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.Properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// `openapi.v2.TypeItem`: `type` as a string or a list of strings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `openapi.v2.ItemsItem`: `items` as one schema or a list of them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `openapi.v2.AdditionalPropertiesItem`: a schema or a boolean.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalPropertiesOneof", tags = "1, 2")]
    pub oneof: Option<AdditionalPropertiesOneof>,
}

/// The choice of an [`AdditionalPropertiesItem`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalPropertiesOneof {
    #[prost(message, tag = "1")]
    Schema(Schema),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

/// `openapi.v2.Xml`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Xml {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub prefix: String,
    #[prost(bool, tag = "4")]
    pub attribute: bool,
    #[prost(bool, tag = "5")]
    pub wrapped: bool,
    #[prost(message, repeated, tag = "6")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Schema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub xref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(string, tag = "26")]
    pub discriminator: String,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "28")]
    pub xml: Option<Xml>,
    #[prost(message, optional, tag = "29")]
    pub external_docs: Option<ExternalDocs>,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// Encodes a swagger 2.0 JSON document as gnostic's `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    document(doc).encode_to_vec()
}

/// Converts a swagger 2.0 JSON document into gnostic's message.
pub fn document(doc: &Value) -> Document {
    let m = object(doc);
    Document {
        swagger: string(m, "swagger"),
        info: m.get("info").map(|v| info(object(v))),
        host: string(m, "host"),
        base_path: string(m, "basePath"),
        schemes: strings(m, "schemes"),
        consumes: strings(m, "consumes"),
        produces: strings(m, "produces"),
        paths: m.get("paths").map(|v| paths(object(v))),
        definitions: m.get("definitions").map(|v| Definitions {
            additional_properties: named_schemas(object(v)),
        }),
        tags: array(m, "tags").map(|t| tag(object(t))).collect(),
        external_docs: external_docs(m),
        vendor_extension: extensions(m),
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// The members of an object; anything else reads as an empty object.
fn object(value: &Value) -> &Map<String, Value> {
    value.as_object().unwrap_or(&EMPTY)
}

fn string(m: &Map<String, Value>, key: &str) -> String {
    m.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn boolean(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or_default()
}

fn float(m: &Map<String, Value>, key: &str) -> f64 {
    m.get(key).and_then(Value::as_f64).unwrap_or_default()
}

fn int(m: &Map<String, Value>, key: &str) -> i64 {
    m.get(key)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or_default()
}

fn array<'a>(m: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    m.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn strings(m: &Map<String, Value>, key: &str) -> Vec<String> {
    array(m, key)
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A free-form value as gnostic keeps it: its YAML text.
fn any(value: &Value) -> Any {
    Any {
        yaml: serde_yaml::to_string(value).unwrap_or_default(),
    }
}

fn optional_any(m: &Map<String, Value>, key: &str) -> Option<Any> {
    m.get(key).map(any)
}

/// The `x-` members of an object, in document order.
fn extensions(m: &Map<String, Value>) -> Vec<NamedAny> {
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(any(v)),
        })
        .collect()
}

fn info(m: &Map<String, Value>) -> Info {
    Info {
        title: string(m, "title"),
        version: string(m, "version"),
        description: string(m, "description"),
        terms_of_service: string(m, "termsOfService"),
        contact: m.get("contact").map(|v| {
            let c = object(v);
            Contact {
                name: string(c, "name"),
                url: string(c, "url"),
                email: string(c, "email"),
                vendor_extension: extensions(c),
            }
        }),
        license: m.get("license").map(|v| {
            let l = object(v);
            License {
                name: string(l, "name"),
                url: string(l, "url"),
                vendor_extension: extensions(l),
            }
        }),
        vendor_extension: extensions(m),
    }
}

fn tag(m: &Map<String, Value>) -> Tag {
    Tag {
        name: string(m, "name"),
        description: string(m, "description"),
        external_docs: external_docs(m),
        vendor_extension: extensions(m),
    }
}

fn external_docs(m: &Map<String, Value>) -> Option<ExternalDocs> {
    m.get("externalDocs").map(|v| {
        let d = object(v);
        ExternalDocs {
            description: string(d, "description"),
            url: string(d, "url"),
            vendor_extension: extensions(d),
        }
    })
}

fn paths(m: &Map<String, Value>) -> Paths {
    Paths {
        vendor_extension: extensions(m),
        path: m
            .iter()
            .filter(|(k, _)| k.starts_with('/'))
            .map(|(k, v)| NamedPathItem {
                name: k.clone(),
                value: Some(path_item(object(v))),
            })
            .collect(),
    }
}

fn path_item(m: &Map<String, Value>) -> PathItem {
    let op = |method: &str| m.get(method).map(|v| operation(object(v)));
    PathItem {
        xref: string(m, "$ref"),
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: array(m, "parameters")
            .map(|p| parameters_item(object(p)))
            .collect(),
        vendor_extension: extensions(m),
    }
}

fn operation(m: &Map<String, Value>) -> Operation {
    Operation {
        tags: strings(m, "tags"),
        summary: string(m, "summary"),
        description: string(m, "description"),
        external_docs: external_docs(m),
        operation_id: string(m, "operationId"),
        produces: strings(m, "produces"),
        consumes: strings(m, "consumes"),
        parameters: array(m, "parameters")
            .map(|p| parameters_item(object(p)))
            .collect(),
        responses: m.get("responses").map(|v| responses(object(v))),
        schemes: strings(m, "schemes"),
        deprecated: boolean(m, "deprecated"),
        vendor_extension: extensions(m),
    }
}

fn parameters_item(m: &Map<String, Value>) -> ParametersItem {
    let choice = if m.contains_key("$ref") {
        ParametersItemOneof::JsonReference(json_reference(m))
    } else {
        ParametersItemOneof::Parameter(parameter(m))
    };
    ParametersItem {
        oneof: Some(choice),
    }
}

fn json_reference(m: &Map<String, Value>) -> JsonReference {
    JsonReference {
        xref: string(m, "$ref"),
        description: string(m, "description"),
    }
}

/// A parameter, its message chosen by `in` as gnostic's oneof matching does.
fn parameter(m: &Map<String, Value>) -> Parameter {
    let location = string(m, "in");
    let choice = match location.as_str() {
        "body" => ParameterOneof::BodyParameter(BodyParameter {
            description: string(m, "description"),
            name: string(m, "name"),
            r#in: location,
            required: boolean(m, "required"),
            schema: m.get("schema").map(|v| schema(object(v))),
            vendor_extension: extensions(m),
        }),
        "header" => non_body(NonBodyParameterOneof::HeaderParameterSubSchema(
            HeaderParameterSubSchema {
                required: boolean(m, "required"),
                r#in: location,
                description: string(m, "description"),
                name: string(m, "name"),
                r#type: string(m, "type"),
                format: string(m, "format"),
                items: primitives_items(m),
                collection_format: string(m, "collectionFormat"),
                default: optional_any(m, "default"),
                maximum: float(m, "maximum"),
                exclusive_maximum: boolean(m, "exclusiveMaximum"),
                minimum: float(m, "minimum"),
                exclusive_minimum: boolean(m, "exclusiveMinimum"),
                max_length: int(m, "maxLength"),
                min_length: int(m, "minLength"),
                pattern: string(m, "pattern"),
                max_items: int(m, "maxItems"),
                min_items: int(m, "minItems"),
                unique_items: boolean(m, "uniqueItems"),
                r#enum: array(m, "enum").map(any).collect(),
                multiple_of: float(m, "multipleOf"),
                vendor_extension: extensions(m),
            },
        )),
        "path" => non_body(NonBodyParameterOneof::PathParameterSubSchema(
            PathParameterSubSchema {
                required: boolean(m, "required"),
                r#in: location,
                description: string(m, "description"),
                name: string(m, "name"),
                r#type: string(m, "type"),
                format: string(m, "format"),
                items: primitives_items(m),
                collection_format: string(m, "collectionFormat"),
                default: optional_any(m, "default"),
                maximum: float(m, "maximum"),
                exclusive_maximum: boolean(m, "exclusiveMaximum"),
                minimum: float(m, "minimum"),
                exclusive_minimum: boolean(m, "exclusiveMinimum"),
                max_length: int(m, "maxLength"),
                min_length: int(m, "minLength"),
                pattern: string(m, "pattern"),
                max_items: int(m, "maxItems"),
                min_items: int(m, "minItems"),
                unique_items: boolean(m, "uniqueItems"),
                r#enum: array(m, "enum").map(any).collect(),
                multiple_of: float(m, "multipleOf"),
                vendor_extension: extensions(m),
            },
        )),
        "formData" => non_body(NonBodyParameterOneof::FormDataParameterSubSchema(
            FormDataParameterSubSchema {
                required: boolean(m, "required"),
                r#in: location,
                description: string(m, "description"),
                name: string(m, "name"),
                allow_empty_value: boolean(m, "allowEmptyValue"),
                r#type: string(m, "type"),
                format: string(m, "format"),
                items: primitives_items(m),
                collection_format: string(m, "collectionFormat"),
                default: optional_any(m, "default"),
                maximum: float(m, "maximum"),
                exclusive_maximum: boolean(m, "exclusiveMaximum"),
                minimum: float(m, "minimum"),
                exclusive_minimum: boolean(m, "exclusiveMinimum"),
                max_length: int(m, "maxLength"),
                min_length: int(m, "minLength"),
                pattern: string(m, "pattern"),
                max_items: int(m, "maxItems"),
                min_items: int(m, "minItems"),
                unique_items: boolean(m, "uniqueItems"),
                r#enum: array(m, "enum").map(any).collect(),
                multiple_of: float(m, "multipleOf"),
                vendor_extension: extensions(m),
            },
        )),
        // `query`, and whatever else a document holds, reads as a query parameter.
        _ => non_body(NonBodyParameterOneof::QueryParameterSubSchema(
            QueryParameterSubSchema {
                required: boolean(m, "required"),
                r#in: location,
                description: string(m, "description"),
                name: string(m, "name"),
                allow_empty_value: boolean(m, "allowEmptyValue"),
                r#type: string(m, "type"),
                format: string(m, "format"),
                items: primitives_items(m),
                collection_format: string(m, "collectionFormat"),
                default: optional_any(m, "default"),
                maximum: float(m, "maximum"),
                exclusive_maximum: boolean(m, "exclusiveMaximum"),
                minimum: float(m, "minimum"),
                exclusive_minimum: boolean(m, "exclusiveMinimum"),
                max_length: int(m, "maxLength"),
                min_length: int(m, "minLength"),
                pattern: string(m, "pattern"),
                max_items: int(m, "maxItems"),
                min_items: int(m, "minItems"),
                unique_items: boolean(m, "uniqueItems"),
                r#enum: array(m, "enum").map(any).collect(),
                multiple_of: float(m, "multipleOf"),
                vendor_extension: extensions(m),
            },
        )),
    };
    Parameter {
        oneof: Some(choice),
    }
}

fn non_body(choice: NonBodyParameterOneof) -> ParameterOneof {
    ParameterOneof::NonBodyParameter(NonBodyParameter {
        oneof: Some(choice),
    })
}

/// The `items` of a non-body parameter (or of another primitives item).
fn primitives_items(parent: &Map<String, Value>) -> Option<PrimitivesItems> {
    let m = object(parent.get("items")?);
    Some(PrimitivesItems {
        r#type: string(m, "type"),
        format: string(m, "format"),
        items: primitives_items(m).map(Box::new),
        collection_format: string(m, "collectionFormat"),
        default: optional_any(m, "default"),
        maximum: float(m, "maximum"),
        exclusive_maximum: boolean(m, "exclusiveMaximum"),
        minimum: float(m, "minimum"),
        exclusive_minimum: boolean(m, "exclusiveMinimum"),
        max_length: int(m, "maxLength"),
        min_length: int(m, "minLength"),
        pattern: string(m, "pattern"),
        max_items: int(m, "maxItems"),
        min_items: int(m, "minItems"),
        unique_items: boolean(m, "uniqueItems"),
        r#enum: array(m, "enum").map(any).collect(),
        multiple_of: float(m, "multipleOf"),
        vendor_extension: extensions(m),
    })
}

/// Response codes are the three-digit keys and `default`.
fn responses(m: &Map<String, Value>) -> Responses {
    let is_code =
        |k: &str| k == "default" || (k.len() == 3 && k.bytes().all(|b| b.is_ascii_digit()));
    Responses {
        response_code: m
            .iter()
            .filter(|(k, _)| is_code(k))
            .map(|(k, v)| {
                let r = object(v);
                let choice = if r.contains_key("$ref") {
                    ResponseValueOneof::JsonReference(json_reference(r))
                } else {
                    ResponseValueOneof::Response(Response {
                        description: string(r, "description"),
                        schema: r.get("schema").map(|s| SchemaItem {
                            oneof: Some(SchemaItemOneof::Schema(schema(object(s)))),
                        }),
                        vendor_extension: extensions(r),
                    })
                };
                NamedResponseValue {
                    name: k.clone(),
                    value: Some(ResponseValue {
                        oneof: Some(choice),
                    }),
                }
            })
            .collect(),
        vendor_extension: extensions(m),
    }
}

fn named_schemas(m: &Map<String, Value>) -> Vec<NamedSchema> {
    m.iter()
        .map(|(k, v)| NamedSchema {
            name: k.clone(),
            value: Some(schema(object(v))),
        })
        .collect()
}

/// A schema and, recursively, the schemas inside it.
fn schema(m: &Map<String, Value>) -> Schema {
    let additional_properties = m.get("additionalProperties").map(|v| {
        let choice = match v {
            Value::Bool(b) => AdditionalPropertiesOneof::Boolean(*b),
            other => AdditionalPropertiesOneof::Schema(schema(object(other))),
        };
        Box::new(AdditionalPropertiesItem {
            oneof: Some(choice),
        })
    });
    let r#type = m.get("type").map(|v| TypeItem {
        value: match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(types) => types
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        },
    });
    let items = m.get("items").map(|v| ItemsItem {
        schema: match v {
            Value::Array(list) => list.iter().map(|s| schema(object(s))).collect(),
            one => vec![schema(object(one))],
        },
    });
    Schema {
        xref: string(m, "$ref"),
        format: string(m, "format"),
        title: string(m, "title"),
        description: string(m, "description"),
        default: optional_any(m, "default"),
        multiple_of: float(m, "multipleOf"),
        maximum: float(m, "maximum"),
        exclusive_maximum: boolean(m, "exclusiveMaximum"),
        minimum: float(m, "minimum"),
        exclusive_minimum: boolean(m, "exclusiveMinimum"),
        max_length: int(m, "maxLength"),
        min_length: int(m, "minLength"),
        pattern: string(m, "pattern"),
        max_items: int(m, "maxItems"),
        min_items: int(m, "minItems"),
        unique_items: boolean(m, "uniqueItems"),
        max_properties: int(m, "maxProperties"),
        min_properties: int(m, "minProperties"),
        required: strings(m, "required"),
        r#enum: array(m, "enum").map(any).collect(),
        additional_properties,
        r#type,
        items,
        all_of: array(m, "allOf").map(|s| schema(object(s))).collect(),
        // Present-but-empty `properties` stays present: kube-openapi reads a schema without
        // a type but with properties as a kind, and one with neither as an arbitrary value.
        properties: m.get("properties").map(|v| Properties {
            additional_properties: named_schemas(object(v)),
        }),
        discriminator: string(m, "discriminator"),
        read_only: boolean(m, "readOnly"),
        xml: m.get("xml").map(|v| {
            let x = object(v);
            Xml {
                name: string(x, "name"),
                namespace: string(x, "namespace"),
                prefix: string(x, "prefix"),
                attribute: boolean(x, "attribute"),
                wrapped: boolean(x, "wrapped"),
                vendor_extension: extensions(x),
            }
        }),
        external_docs: external_docs(m),
        example: optional_any(m, "example"),
        vendor_extension: extensions(m),
    }
}
