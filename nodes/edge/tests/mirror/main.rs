//! End-to-end tests of a wharf node: the real v2 HTTP API in front of real
//! distribution registries started on loopback, seeded through the push API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod artifacts;
mod auth;
mod blobs;
mod cdn;
mod clients;
mod common;
mod conformance;
mod metrics;
mod outage;
mod prefetch;
mod referrers;
mod routing;
mod s3;
mod tags;
mod trust;
