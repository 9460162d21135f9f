//! The TypeScript SDK (`sdk/typescript`): its own tests, run by Node against this build's
//! `clade serve` (they start it themselves, on a fresh data dir).

use super::support::required_tool;

#[test]
fn the_typescript_sdk_passes_its_tests_against_a_real_gateway() {
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/typescript");
    let installed = sdk.join("node_modules/.bin/tsc");
    let found = installed.is_file().then(|| installed.clone());
    let Some(_) = required_tool(
        found,
        "the TypeScript SDK's dependencies (npm ci in sdk/typescript)",
        "the TypeScript SDK test",
        "run scripts/test, which installs them with npm",
    ) else {
        return;
    };
    let clade = assert_cmd::cargo::cargo_bin("clade");
    #[allow(clippy::disallowed_methods)] // Node runs the SDK's own tests.
    let out = std::process::Command::new("npm")
        .arg("test")
        .current_dir(&sdk)
        .env("CLADE_BIN", &clade)
        .output()
        .expect("npm is needed for the TypeScript SDK test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Every test of the SDK ran and passed: none skipped, none left out.
    assert!(stdout.contains("# fail 0"), "{stdout}");
    let passed: usize = stdout
        .lines()
        .find_map(|line| line.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(passed >= 7, "only {passed} SDK tests passed:\n{stdout}");
}
