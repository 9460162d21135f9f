//! Backend-conformance suite: every test runs unchanged against SQLite and PostgreSQL.

mod suite;
