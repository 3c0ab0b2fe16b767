//! The manifest library against files on disk: every example deployment and the deploy
//! benchmark's deployment are valid, and every fixture of the real-world corpus
//! (tests/fixtures/corpus) validates or fails with exactly the codes its `expect` file names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jaco::manifest::{self, Filesystem};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_example_is_valid() {
    let examples = subdirectories(&root().join("examples"));
    assert!(examples.len() >= 3, "expected at least three examples");
    for dir in examples {
        let jaco_yaml = dir.join("jaco.yaml");
        if let Err(errors) = manifest::load(&Filesystem, &jaco_yaml, None) {
            panic!("{} is invalid: {errors:#?}", jaco_yaml.display());
        }
    }
}

#[test]
fn the_deploy_benchmark_deployment_is_valid() {
    let jaco_yaml = root().join("benches/web10/jaco.yaml");
    let resolved = manifest::load(&Filesystem, &jaco_yaml, None)
        .unwrap_or_else(|errors| panic!("{} is invalid: {errors:#?}", jaco_yaml.display()));
    assert_eq!(resolved.services["web"].replicas, 10);
}

/// One expected problem: a code and, optionally, the `details.field` it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    code: String,
    field: Option<String>,
}

/// What a fixture's `expect` file says: `valid`, or `invalid` and the expected problems.
fn expectation(dir: &Path) -> Option<Vec<Expected>> {
    let text = std::fs::read_to_string(dir.join("expect"))
        .unwrap_or_else(|e| panic!("{}: cannot read expect: {e}", dir.display()));
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    match lines.next() {
        Some("valid") => None,
        Some("invalid") => Some(
            lines
                .map(|line| {
                    let mut words = line.split_whitespace();
                    Expected {
                        code: words.next().unwrap_or_default().to_owned(),
                        field: words
                            .find_map(|w| w.strip_prefix("field="))
                            .map(str::to_owned),
                    }
                })
                .collect(),
        ),
        other => panic!(
            "{}: expect must start with valid or invalid, found {other:?}",
            dir.display()
        ),
    }
}

/// Whether the problems found match the expectation: the same set of codes, and for every
/// expected field a problem of that code naming it.
fn matches(expected: &[Expected], errors: &[jaco::error::Error]) -> bool {
    let expected_codes: BTreeSet<&str> = expected.iter().map(|e| e.code.as_str()).collect();
    let got_codes: BTreeSet<&str> = errors.iter().map(|e| e.code.as_str()).collect();
    expected_codes == got_codes
        && expected.iter().all(|e| match &e.field {
            None => true,
            Some(field) => errors.iter().any(|error| {
                error.code.as_str() == e.code && error.details.get("field") == Some(field)
            }),
        })
}

#[test]
fn real_world_corpus_behaves_as_documented() {
    let fixtures = subdirectories(&root().join("tests/fixtures/corpus"));
    assert!(
        fixtures.len() >= 20,
        "the corpus shrank to {}",
        fixtures.len()
    );
    let mut mismatches = Vec::new();
    for dir in &fixtures {
        let outcome = manifest::load(&Filesystem, &dir.join("jaco.yaml"), None);
        match (expectation(dir), outcome) {
            (None, Ok(_)) => {}
            (None, Err(errors)) => mismatches.push(format!(
                "{}: expected valid, got {errors:#?}",
                dir.display()
            )),
            (Some(expected), Ok(_)) => mismatches.push(format!(
                "{}: expected {expected:?}, got valid",
                dir.display()
            )),
            (Some(expected), Err(errors)) => {
                if !matches(&expected, &errors) {
                    mismatches.push(format!(
                        "{}: expected {expected:?}, got {errors:#?}",
                        dir.display()
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// What `jaco apply` sends is what the daemon resolves: for every example and every valid
/// corpus fixture, the documents from `load_documents` (with the secret and config contents)
/// resolve on the daemon side to the same deployment, spec hashes included.
#[test]
fn resolved_documents_resolve_to_the_same_deployment_on_the_daemon() {
    let mut dirs = subdirectories(&root().join("examples"));
    dirs.extend(
        subdirectories(&root().join("tests/fixtures/corpus"))
            .into_iter()
            .filter(|dir| expectation(dir).is_none()),
    );
    assert!(dirs.len() >= 10, "only {} valid deployments", dirs.len());
    for dir in dirs {
        let (local, documents) =
            manifest::load_documents(&Filesystem, &dir.join("jaco.yaml"), None)
                .unwrap_or_else(|e| panic!("{}: {e:#?}", dir.display()));
        let objects = manifest::Objects {
            secrets: local.deployment.secrets.clone(),
            configs: local.deployment.configs.clone(),
        };
        let remote =
            manifest::resolve_documents(&documents.jaco_yaml, &documents.compose_yaml, objects)
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: the daemon refuses the documents: {e:#?}\n{}",
                        dir.display(),
                        documents.compose_yaml
                    )
                });
        assert_eq!(
            serde_json::to_value(&remote).unwrap(),
            serde_json::to_value(&local).unwrap(),
            "{}: the daemon resolves another deployment from\n{}",
            dir.display(),
            documents.compose_yaml
        );
    }
}
