//! kumo's object model: the kinds registry, schemas, selectors, patches, validation and
//! `Status` errors. This crate does no IO.

pub mod apply;
pub mod crd;
pub mod defaults;
pub mod kinds;
pub mod kinds_validation;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod schema;
pub mod selector;
pub mod status;
pub mod table;
pub mod validation;
