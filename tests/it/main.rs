//! End-to-end scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod azure;
mod collateral;
mod e2e;
mod edges;
mod fleet;
mod governance;
mod kubernetes;
mod llm;
mod models;
mod provenance;
mod proxy;
mod vm;

/// The python (`$CLOISTER_PYTHON`, default `python3`) when it can `import_line` (e.g. `"model_signing,
/// cryptography"`); otherwise a loud SKIP line naming `test` and how to install (`pip`), and `None` -- or a
/// failure under CLOISTER_REQUIRE_ALL_TESTS=1 (CI), so CI never passes by skipping.
pub(crate) fn python_importing(import_line: &str, test: &str, pip: &str) -> Option<String> {
    let python = std::env::var("CLOISTER_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = std::process::Command::new(&python)
        .args(["-c", &format!("import {import_line}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has {
        return Some(python);
    }
    let required = std::env::var("CLOISTER_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{python} cannot import {import_line}; CLOISTER_REQUIRE_ALL_TESTS=1"
    );
    eprintln!(
        "\n\n*** SKIPPED {test}: {python} cannot import {import_line} (pip install {pip}, or set \
         CLOISTER_PYTHON). CI installs it and sets CLOISTER_REQUIRE_ALL_TESTS=1. ***\n"
    );
    None
}
