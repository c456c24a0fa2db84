//! kumo's Kubernetes API server: HTTPS serving, authentication, discovery, OpenAPI and the
//! generic resource verbs over the revisioned store, for a map of control planes.

pub mod audit;
pub mod authn;
pub mod authz;
pub mod control_plane;
mod conversion;
pub mod crds;
pub mod discovery;
mod duplicates;
mod eviction;
mod fields;
mod filter;
pub mod local;
mod namespaces;
pub mod negotiate;
pub mod node_authorizer;
pub mod node_tunnel;
pub mod openapi;
mod patching;
pub mod pki;
mod pod_streams;
mod priority;
mod query;
mod quota;
pub mod rbac;
pub mod request;
mod resource;
mod reviews;
mod scale;
pub mod serve;
pub mod server;
pub mod service_account_admission;
pub mod service_alloc;
pub mod storage;
mod storage_class;
mod storage_protection;
mod strategy;
pub mod testing;
mod validation;
mod watch;
mod watch_cache;

pub use control_plane::ControlPlane;
pub use server::ApiServer;
