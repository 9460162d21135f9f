//! Link options for release builds of `clade` on x86-64 Linux, where LLD is Rust's linker:
//! - `--icf=all` folds identical functions: generic code instantiated for many types often
//!   compiles to the same machine code, and one copy serves them all.
//! - `-z pack-relative-relocs` stores the position-independent binary's relocations in a
//!   compact table (RELR) a tenth the size, read at every start. Only where the building
//!   machine's C library (glibc 2.36 or later) can load such a binary.
//! - `--symbol-ordering-file=startup-order.txt` lays out together the functions `clade serve`
//!   runs from start to idle (`cargo xtask startup-order` writes the list): the kernel maps
//!   code 64 KB around each page touched, and those functions, spread over all of `.text`,
//!   had the idle gateway map most of it. Names the binary lacks are skipped.
//!
//! `CLADE_PLAIN_LINK=1` turns them all off (another linker, or a binary for an older glibc).

// A build script's inputs are cargo's environment, and asking the C library's version means
// running `getconf`: the workspace's rules for the gateway's own code do not apply here.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLADE_PLAIN_LINK");
    println!("cargo:rerun-if-changed=startup-order.txt");
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
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("startup-order.txt");
    if order.is_file() {
        println!("cargo:rustc-link-arg-bin=clade=-Wl,--symbol-ordering-file={}", order.display());
        // Names of another build (hashes move with dependency versions) are expected.
        println!("cargo:rustc-link-arg-bin=clade=-Wl,--no-warn-symbol-ordering");
    }
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
