//! Client for the registries wharf mirrors.
//!
//! One [`UpstreamClient`] per configured upstream. It speaks the v2 read API, handles
//! authentication by the upstream's own challenge (anonymous, Docker Hub-style bearer tokens
//! cached per scope until expiry, HTTP basic), bounds every request by connect, first-byte and
//! idle timeouts, retries idempotent requests that failed before any body byte arrived, and
//! turns `429` into a typed error carrying `Retry-After`.
//!
//! Module map: [`auth`] (challenges, token cache), [`challenge`] (which login goes to which
//! origin, token fetches), [`body`] (bounded reads of upstream bodies), [`client`] (requests,
//! retries, responses),
//! [`endpoints`] (an upstream's URLs in order of preference, failover, parents' `ns=`),
//! [`error`] (what failed, and whether the edge should say 502, 503 or 504), [`login`] (a
//! client's own login, for `credentials = "client"`), [`state`] (health,
//! last error and pull allowance for the status page).

pub mod auth;
pub mod body;
pub mod challenge;
pub mod client;
pub mod endpoints;
pub mod error;
pub mod login;
pub mod state;

pub use client::{
    BlobResponse, LoginVerdict, ManifestHead, ManifestResponse, TagsListResponse, UpstreamClient,
};
pub use error::UpstreamError;

/// Manifests larger than this are refused (distribution uses the same bound).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
