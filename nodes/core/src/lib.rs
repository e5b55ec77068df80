//! Pure domain types of wharf, free of IO, shared by every other crate.
//!
//! Module map:
//! - [`digest`]: content digests and the incremental hasher that verifies them while bytes stream.
//! - [`name`]: repository names and tags, validated by the OCI distribution grammar.
//! - [`reference`]: what a manifest request names, a tag or a digest.
//! - [`image`]: images as `docker pull` names them, and the walk from an index to its blobs.
//! - [`media`]: manifest media types and `Accept` negotiation.
//! - [`query`]: percent-escapes of query-string values.
//! - [`range`]: HTTP `Range` headers for blob requests.
//! - [`error`]: the OCI error codes clients understand, with their HTTP status.
//! - [`config`]: the node configuration, its defaults, and the file formats it is read from.

pub mod config;
pub mod config_env;
pub mod digest;
pub mod error;
pub mod image;
pub mod media;
pub mod name;
pub mod query;
pub mod range;
pub mod reference;

pub use digest::{Digest, DigestError, DigestHasher};
pub use error::OciCode;
pub use name::{NameError, RepoName, Tag};
pub use range::ByteRange;
pub use reference::Reference;
