//! Link options for release builds of `clade` on x86-64 Linux, where LLD is Rust's linker:
//! - `--icf=all` folds identical functions: generic code instantiated for many types often
//!   compiles to the same machine code, and one copy serves them all.
//! - `-z pack-relative-relocs` stores the position-independent binary's relocations in a
//!   compact table (RELR) a tenth the size, read at every start. Only where the building
//!   machine's C library (glibc 2.36 or later) can load such a binary.
//!
//! `CLADE_PLAIN_LINK=1` turns both off (another linker, or a binary for an older glibc).

// A build script's inputs are cargo's environment, and asking the C library's version means
// running `getconf`: the workspace's rules for the gateway's own code do not apply here.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLADE_PLAIN_LINK");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if !release
        || target != "x86_64-unknown-linux-gnu"
        || std::env::var_os("CLADE_PLAIN_LINK").is_some()
    {
        return;
    }
    println!("cargo:rustc-link-arg-bin=clade=-Wl,--icf=all");
    if host == target && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=clade=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`: `glibc 2.36`) is `major.minor`
/// or later.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
