//! End-to-end tests: the real `clade` binary against temporary data dirs, over its command line
//! and over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod suite;
