//! Helpers shared by the integration tests.

pub mod collector;
pub mod sandbox;
pub mod tls;
