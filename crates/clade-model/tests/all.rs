//! The adapters, router and credentials against `clade-stub` speaking the real wire protocols.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod suite;
