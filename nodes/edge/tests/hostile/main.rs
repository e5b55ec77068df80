//! wharf under attack, in a test binary of its own: the adversarial floods saturate the
//! machine's cores for a while, which must not disturb the timing of the mirror tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
#[allow(dead_code)]
#[path = "../mirror/common.rs"]
mod common;
mod keepalive;
