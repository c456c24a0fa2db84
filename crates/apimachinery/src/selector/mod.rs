//! Label and field selectors: parsing the query-string forms and matching objects.

pub mod field;
pub mod label;
