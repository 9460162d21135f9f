//! Engine behaviour in the seeded simulator: turns, sessions, forks, crashes and model faults,
//! on a manual clock, in one process. `CLADE_SIM_SEED=<seed>` replays a failing test's run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod suite;
