//! Backend-conformance suite: every test runs unchanged against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod suite;
