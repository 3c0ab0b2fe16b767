//! Coverage-guided fuzzing of jaco.yaml + compose parsing (`jaco::manifest`).
//!
//! Input format: the bytes are split on `\0` into up to five parts, each the content of one
//! in-memory file under `app/`:
//!
//! | part | file               | role                                                        |
//! |------|--------------------|-------------------------------------------------------------|
//! | 0    | `app/jaco.yaml`    | the jaco.yaml document                                      |
//! | 1    | `app/compose.yaml` | the compose document (found by discovery)                   |
//! | 2    | `app/.env`         | jaco.yaml `environment: .env` (interpolation variables)     |
//! | 3    | `app/web.env`      | a compose `env_file: web.env` / `label_file: web.env`       |
//! | 4    | `app/extra.yaml`   | a second compose file for `include:`, `extends.file:`, or jaco.yaml `compose: extra.yaml` |
//!
//! Missing parts are absent files (so "file not found" paths are exercised too); bytes after
//! a fifth `\0` stay in part 4. Two fixed files, `app/secret.txt` and `app/config.ini`, let
//! `secrets:`/`configs:` with `file: ./secret.txt` resolve.
//!
//! Invariants checked on every input (a violation panics, which libFuzzer reports as a crash):
//! - neither `load` nor `resolve_documents` panics (nor overflows, with `-a`);
//! - every returned error has a non-empty message;
//! - on success the `Resolved` serialises to JSON, which parses back, and every service's
//!   `spec_hash` is 64 lowercase hex characters;
//! - calling each entry point twice on the same input gives equal results (same JSON and
//!   warnings on success, equal error lists on failure).
//!
//! With `JACO_FUZZ_DEBUG=1` each input's outcome is printed to stderr (handy when reproducing
//! an artifact or checking what the seeds reach).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use jaco::error::Error;
use jaco::manifest::{self, MemoryFiles, Objects, Resolved};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 5] = [
    "app/jaco.yaml",
    "app/compose.yaml",
    "app/.env",
    "app/web.env",
    "app/extra.yaml",
];

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(FILES.len(), |&b| b == 0).collect();

    let mut files = MemoryFiles::default()
        .with("app/secret.txt", "s3cr3t\n")
        .with("app/config.ini", "[server]\nport = 3000\n");
    for (path, content) in FILES.iter().zip(&parts) {
        files = files.with(*path, *content);
    }

    // CLI side: the full pipeline over in-memory files.
    let first = manifest::load(&files, Path::new("app/jaco.yaml"), None);
    debug("load", &first);
    let first_summary = check("load", &first);
    let second = manifest::load(&files, Path::new("app/jaco.yaml"), None);
    let second_summary = check("load", &second);
    assert_same("load", &first, &first_summary, &second, &second_summary);

    // Daemon side: the two documents as received over the API (lossy UTF-8: the API carries
    // strings).
    let jaco = String::from_utf8_lossy(parts.first().copied().unwrap_or_default());
    let compose = String::from_utf8_lossy(parts.get(1).copied().unwrap_or_default());
    let first = manifest::resolve_documents(&jaco, &compose, Objects::default());
    debug("resolve_documents", &first);
    let first_summary = check("resolve_documents", &first);
    let second = manifest::resolve_documents(&jaco, &compose, Objects::default());
    let second_summary = check("resolve_documents", &second);
    assert_same(
        "resolve_documents",
        &first,
        &first_summary,
        &second,
        &second_summary,
    );
});

fn debug(entry: &str, result: &Result<Resolved, Vec<Error>>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("JACO_FUZZ_DEBUG").is_some_and(|v| v != "0")) {
        return;
    }
    match result {
        Ok(resolved) => eprintln!(
            "{entry}: Ok: {} service(s) {:?}, {} warning(s)",
            resolved.services.len(),
            resolved.services.keys().collect::<Vec<_>>(),
            resolved.warnings.len()
        ),
        Err(errors) => {
            eprintln!("{entry}: Err: {} error(s)", errors.len());
            for error in errors {
                eprintln!("  {}", error.render(false));
            }
        }
    }
}

/// Checks the per-result invariants; returns the JSON of a success (for the determinism check).
fn check(entry: &str, result: &Result<Resolved, Vec<Error>>) -> Option<String> {
    match result {
        Ok(resolved) => {
            let json = serde_json::to_string(resolved).unwrap_or_else(|error| {
                panic!("{entry}: Resolved does not serialise to JSON: {error}")
            });
            if let Err(error) = serde_json::from_str::<serde_json::Value>(&json) {
                panic!("{entry}: serialised Resolved is not valid JSON: {error}\n{json}");
            }
            for (name, service) in &resolved.services {
                let hash = &service.spec_hash;
                assert!(
                    hash.len() == 64
                        && hash
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                    "{entry}: service {name:?} has spec_hash {hash:?}, not 64 lowercase hex chars"
                );
            }
            Some(json)
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "{entry}: Err with an empty error list");
            for error in errors {
                assert!(
                    !error.message.trim().is_empty(),
                    "{entry}: error with an empty message: {error:?}"
                );
                // Rendering must not panic either.
                let _ = error.render(true);
            }
            None
        }
    }
}

fn assert_same(
    entry: &str,
    first: &Result<Resolved, Vec<Error>>,
    first_json: &Option<String>,
    second: &Result<Resolved, Vec<Error>>,
    second_json: &Option<String>,
) {
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(first_json, second_json, "{entry}: two runs gave different JSON");
            assert_eq!(
                a.warnings, b.warnings,
                "{entry}: two runs gave different warnings"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "{entry}: two runs gave different errors"),
        (a, b) => panic!(
            "{entry}: two runs disagree: first {}, second {}",
            outcome(a),
            outcome(b)
        ),
    }
}

fn outcome(result: &Result<Resolved, Vec<Error>>) -> String {
    match result {
        Ok(_) => "Ok".to_owned(),
        Err(errors) => format!("Err({errors:?})"),
    }
}
