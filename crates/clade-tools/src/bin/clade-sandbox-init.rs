//! The sandbox's init as a program of its own (`clade __sandbox-init` is the same): pid 1 of a
//! sandboxed tool run (see `clade_tools::init`).
//!
//! Usage (by the sandbox only): `clade-sandbox-init CONFIG -- COMMAND...`, with the run's report
//! socket at descriptor 5.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    clade_tools::init::main(&args)
}
