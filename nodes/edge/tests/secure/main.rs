//! wharf as a mirror on a company network: TLS (with reload and mTLS), client authentication
//! (htpasswd, wharf's token flow, external JWTs), repository policy, blob isolation across
//! repositories, and credentials that never reach a log. Real clients where they exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../mirror/common.rs"]
mod common;
mod setup;

mod abuse;
mod auth;
mod client_logins;
mod clients;
mod isolation;
mod routing;
mod tls;
mod trust;
