//! Keeps the operator documentation honest about the closed sets the code defines.

use std::path::Path;

use jaco::error::Code;

fn read_doc(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn errors_doc_has_a_section_for_every_code() {
    let doc = read_doc("docs/errors.md");
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|code| code.as_str())
        .filter(|name| !doc.contains(&format!("### `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/errors.md has no `### `code`` section for {missing:?}"
    );
}

#[test]
fn errors_doc_documents_no_code_outside_the_closed_set() {
    let doc = read_doc("docs/errors.md");
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            let name = rest.trim_end_matches('`');
            assert!(
                name.parse::<Code>().is_ok(),
                "docs/errors.md documents {name:?}, which is not in the closed set"
            );
        }
    }
}
