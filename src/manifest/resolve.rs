//! The CLI-side resolution of a compose document: everything that depends on the operator's
//! machine (SPEC §2.3) happens here, before anything is sent to a daemon.
//!
//! Steps, in order: interpolate every value with the jaco.yaml `environment:` file, merge
//! `include:` files, expand `extends:`, fold `env_file:`/`label_file:` into `environment:`/
//! `labels:`, and read secret and config sources. Files come through [`FileSource`], so the
//! steps are testable on in-memory files. [`check_unresolved`] is the daemon-side guard that a
//! document went through all of this. No validation of the resolved values happens here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::FileSource;
use super::compose::Objects;
use super::dotenv;
use super::interpolate;
use super::read::{Reader, join};
use super::spec::FileObject;
use crate::error::Code;
use crate::yaml::{self, Mark, Node, Value};

/// How deep `extends` chains and `include` nesting may go before we call it a cycle.
const MAX_DEPTH: usize = 16;

/// Variables for interpolation (from jaco.yaml's `environment:` file only).
pub type Vars = BTreeMap<String, String>;

/// Interpolates every scalar value (never keys) of `node` in place.
pub fn interpolate_tree(node: &mut Node, vars: &Vars, reader: &mut Reader) {
    let mut unset = BTreeSet::new();
    walk_values(node, vars, reader, &mut unset);
    for name in unset {
        reader.warn(
            "environment",
            format!(
                "variable {name} is not set in the environment file; substituting an empty string"
            ),
        );
    }
}

fn walk_values(node: &mut Node, vars: &Vars, reader: &mut Reader, unset: &mut BTreeSet<String>) {
    let mark = node.mark;
    match &mut node.value {
        Value::Scalar { text, plain } => {
            if !text.contains('$') {
                return;
            }
            let lookup = |name: &str| vars.get(name).map(String::as_str);
            match interpolate::expand(text, &lookup) {
                Ok(expanded) => {
                    unset.extend(expanded.unset);
                    *text = expanded.text;
                }
                Err(error) => {
                    let position = scalar_position(text, *plain, mark, error.offset);
                    reader
                        .report(
                            Code::ValidationFailed,
                            position,
                            format!("interpolation: {}", error.message),
                        )
                        .details
                        .insert("reason".into(), "interpolation_failed".into());
                }
            }
        }
        Value::Seq(items) => {
            for item in items {
                walk_values(item, vars, reader, unset);
            }
        }
        Value::Map(entries) => {
            for (_, value) in entries {
                walk_values(value, vars, reader, unset);
            }
        }
    }
}

/// The file position of byte `offset` inside a scalar that starts at `mark`. Exact for
/// single-line scalars; a multi-line scalar reports the line of the offending text.
fn scalar_position(text: &str, plain: bool, mark: Mark, offset: usize) -> Mark {
    let before = &text[..offset.min(text.len())];
    match before.rfind('\n') {
        None => Mark {
            line: mark.line,
            column: mark.column + usize::from(!plain) + before.chars().count(),
        },
        Some(newline) => Mark {
            line: mark.line + before.matches('\n').count() + usize::from(!plain),
            column: before[newline + 1..].chars().count() + 1,
        },
    }
}

/// Reads, parses and interpolates another compose file (for `include` and `extends`).
fn load_compose_file(
    path: &Path,
    files: &dyn FileSource,
    vars: &Vars,
    at: &Node,
    field: &str,
    reader: &mut Reader,
) -> Option<Node> {
    let text = match read_text(files, path) {
        Ok(text) => text,
        Err(why) => {
            reader.invalid(at, field, format!("cannot read {}: {why}", path.display()));
            return None;
        }
    };
    match yaml::parse(&text) {
        Ok(mut root) => {
            let mut nested = Reader::new(path.display().to_string());
            interpolate_tree(&mut root, vars, &mut nested);
            reader.errors.append(&mut nested.errors);
            reader.warnings.append(&mut nested.warnings);
            Some(root)
        }
        Err(error) => {
            reader
                .report(
                    Code::ParseFailed,
                    error.mark,
                    format!("{}: {}", path.display(), error.message),
                )
                .details
                .insert("file".into(), path.display().to_string());
            None
        }
    }
}

/// Merges top-level `include:` files into `root` (recursively); a name defined twice is an
/// error, as in compose.
pub fn resolve_include(
    root: &mut Node,
    dir: &Path,
    files: &dyn FileSource,
    vars: &Vars,
    reader: &mut Reader,
) {
    resolve_include_at(root, dir, files, vars, reader, 0);
}

fn resolve_include_at(
    root: &mut Node,
    dir: &Path,
    files: &dyn FileSource,
    vars: &Vars,
    reader: &mut Reader,
    depth: usize,
) {
    let Some(include) = take_key(root, "include") else {
        return;
    };
    if depth >= MAX_DEPTH {
        reader.invalid(&include, "include", "nesting is too deep (cycle?)");
        return;
    }
    for (i, item) in reader.seq(&include, "include").to_vec().iter().enumerate() {
        let field = format!("include[{i}]");
        let paths = match item.as_map() {
            Some(_) => {
                reader.closed_keys(item, &field, &["path", "env_file", "project_directory"]);
                item.get("path")
                    .map(|p| reader.strings(p, &join(&field, "path")))
                    .unwrap_or_default()
            }
            None => reader.strings(item, &field),
        };
        for relative in paths {
            let path = dir.join(&relative);
            let Some(mut included) = load_compose_file(&path, files, vars, item, &field, reader)
            else {
                continue;
            };
            let included_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            resolve_include_at(&mut included, &included_dir, files, vars, reader, depth + 1);
            for section in ["services", "networks", "volumes", "secrets", "configs"] {
                merge_section(root, &included, section, &relative, reader);
            }
        }
    }
}

fn merge_section(
    root: &mut Node,
    included: &Node,
    section: &str,
    source: &str,
    reader: &mut Reader,
) {
    let Some(entries) = included.get(section).and_then(Node::as_map) else {
        return;
    };
    let mark = root.mark;
    let target = ensure_map(root, section, mark);
    let Value::Map(target_entries) = &mut target.value else {
        return;
    };
    for (key, value) in entries {
        let name = key.as_scalar().unwrap_or_default();
        if target_entries
            .iter()
            .any(|(k, _)| k.as_scalar() == Some(name))
        {
            reader.invalid(
                key,
                &join(section, name),
                format!("is defined both here and in the included file {source}"),
            );
        } else {
            target_entries.push((key.clone(), value.clone()));
        }
    }
}

/// Expands `extends:` in every service, from the same document or another file.
pub fn resolve_extends(
    root: &mut Node,
    dir: &Path,
    files: &dyn FileSource,
    vars: &Vars,
    reader: &mut Reader,
) {
    let names: Vec<String> = service_names(root);
    for name in names {
        let snapshot = root.clone();
        let Some(service) = root.get("services").and_then(|s| s.get(&name)) else {
            continue;
        };
        if service.get("extends").is_none() {
            continue;
        }
        reader.set_service(Some(&name));
        let resolved = extend_service(service, &snapshot, dir, files, vars, reader, 0);
        reader.set_service(None);
        if let Some(resolved) = resolved
            && let Some(slot) = service_mut(root, &name)
        {
            *slot = resolved;
        }
    }
}

fn extend_service(
    service: &Node,
    document: &Node,
    dir: &Path,
    files: &dyn FileSource,
    vars: &Vars,
    reader: &mut Reader,
    depth: usize,
) -> Option<Node> {
    let Some(extends) = service.get("extends") else {
        return Some(service.clone());
    };
    if depth >= MAX_DEPTH {
        reader.invalid(extends, "extends", "chain is too long (cycle?)");
        return None;
    }
    let (base_name, file) = match &extends.value {
        Value::Map(_) => {
            reader.closed_keys(extends, "extends", &["service", "file"]);
            let base = extends
                .get("service")
                .and_then(|n| reader.required_string(n, "extends.service"));
            let file = extends
                .get("file")
                .and_then(|n| reader.required_string(n, "extends.file"));
            if extends.get("service").is_none() {
                reader.invalid(extends, "extends.service", "is required");
            }
            (base?, file)
        }
        _ => (reader.required_string(extends, "extends")?, None),
    };
    let (base_document, base_dir) = match &file {
        Some(file) => {
            let path = dir.join(file);
            let document = load_compose_file(&path, files, vars, extends, "extends.file", reader)?;
            (
                document,
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
            )
        }
        None => (document.clone(), dir.to_path_buf()),
    };
    let Some(base) = base_document
        .get("services")
        .and_then(|s| s.get(&base_name))
    else {
        reader.invalid(
            extends,
            "extends.service",
            format!("extends unknown service {base_name:?}"),
        );
        return None;
    };
    let base = extend_service(
        base,
        &base_document,
        &base_dir,
        files,
        vars,
        reader,
        depth + 1,
    )?;
    let mut own = service.clone();
    take_key(&mut own, "extends");
    Some(merge_nodes(base, own))
}

/// Overlays `over` on `base`: mappings merge key by key, anything else is replaced.
fn merge_nodes(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut base_entries), Value::Map(over_entries)) => {
            for (key, value) in over_entries {
                match base_entries
                    .iter()
                    .position(|(k, _)| k.as_scalar() == key.as_scalar())
                {
                    Some(i) => {
                        let previous =
                            std::mem::replace(&mut base_entries[i].1, Node::string("", value.mark));
                        base_entries[i].1 = merge_nodes(previous, value);
                    }
                    None => base_entries.push((key, value)),
                }
            }
            Node {
                value: Value::Map(base_entries),
                mark: over.mark,
            }
        }
        (_, value) => Node {
            value,
            mark: over.mark,
        },
    }
}

/// Folds `env_file:` into `environment:` and `label_file:` into `labels:` for every service.
/// Explicit values win; among files, later ones win.
pub fn fold_files(root: &mut Node, dir: &Path, files: &dyn FileSource, reader: &mut Reader) {
    for name in service_names(root) {
        reader.set_service(Some(&name));
        for (file_key, target_key) in [("env_file", "environment"), ("label_file", "labels")] {
            let Some(service) = service_mut(root, &name) else {
                continue;
            };
            let Some(entries) = take_key(service, file_key) else {
                continue;
            };
            let folded = read_env_files(&entries, file_key, dir, files, reader);
            let mut explicit = Reader::new(reader.file());
            let current = service
                .get(target_key)
                .map(|n| explicit.dict(n, target_key, '='))
                .unwrap_or_default();
            let mut merged = folded;
            merged.extend(current);
            let mark = entries.mark;
            let map = merged
                .into_iter()
                .map(|(k, v)| (Node::string(k, mark), Node::string(v, mark)))
                .collect();
            set_key(
                service,
                target_key,
                Node {
                    value: Value::Map(map),
                    mark,
                },
            );
        }
    }
    reader.set_service(None);
}

fn read_env_files(
    entries: &Node,
    field: &str,
    dir: &Path,
    files: &dyn FileSource,
    reader: &mut Reader,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let items: Vec<(Node, bool)> = match &entries.value {
        Value::Seq(items) => items
            .iter()
            .map(|item| match item.as_map() {
                Some(_) => {
                    let required = item
                        .get("required")
                        .and_then(|r| reader.bool(r, &join(field, "required")))
                        .unwrap_or(true);
                    reader.closed_keys(item, field, &["path", "required", "format"]);
                    (
                        item.get("path").cloned().unwrap_or_else(|| item.clone()),
                        required,
                    )
                }
                None => (item.clone(), true),
            })
            .collect(),
        _ => vec![(entries.clone(), true)],
    };
    for (node, required) in items {
        let Some(relative) = reader.required_string(&node, field) else {
            continue;
        };
        let path = dir.join(&relative);
        let text = match read_text(files, &path) {
            Ok(text) => text,
            Err(_) if !required => continue,
            Err(why) => {
                reader
                    .report(
                        Code::ValidationFailed,
                        node.mark,
                        format!("{field} {}: {why}", path.display()),
                    )
                    .details
                    .extend([
                        ("field".to_owned(), field.to_owned()),
                        ("path".to_owned(), path.display().to_string()),
                    ]);
                continue;
            }
        };
        match dotenv::parse(&text) {
            Ok(pairs) => out.extend(pairs),
            Err(error) => {
                reader.errors.push(
                    crate::error::Error::new(
                        Code::ValidationFailed,
                        format!("{}: {}", path.display(), error.message),
                    )
                    .with("file", path.display())
                    .with("line", error.line)
                    .with("column", error.column)
                    .with("field", field),
                );
            }
        }
    }
    out
}

/// Reads secret and config sources (`file:`, `environment:`, `content:`).
pub fn read_objects(
    root: &Node,
    dir: &Path,
    files: &dyn FileSource,
    vars: &Vars,
    reader: &mut Reader,
) -> Objects {
    let mut objects = Objects::default();
    for (section, target) in [
        ("secrets", &mut objects.secrets),
        ("configs", &mut objects.configs),
    ] {
        let Some(node) = root.get(section) else {
            continue;
        };
        for (key, value) in reader.map(node, section) {
            let name = key.as_scalar().unwrap_or_default().to_owned();
            let path = join(section, &name);
            let mut allowed = vec!["file", "environment", "name", "external", "labels"];
            if section == "configs" {
                allowed.push("content");
            }
            reader.map(value, &path);
            reader.closed_keys(value, &path, &allowed);
            if value.get("external").and_then(Node::as_bool) == Some(true) {
                reader.invalid(
                    value,
                    &join(&path, "external"),
                    format!("external {section} are not supported: jaco stores {section} in the cluster state"),
                );
                continue;
            }
            let sources: Vec<&str> = ["file", "environment", "content"]
                .into_iter()
                .filter(|k| value.get(k).is_some())
                .collect();
            if sources.len() != 1 {
                reader.invalid(
                    value,
                    &path,
                    "needs exactly one source: file, environment or content",
                );
                continue;
            }
            let source_node = value.get(sources[0]).expect("checked above");
            let Some(source) = reader.string(source_node, &join(&path, sources[0])) else {
                continue;
            };
            let content = match sources[0] {
                "file" => match files.read(&dir.join(&source)) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        reader.invalid(
                            source_node,
                            &join(&path, "file"),
                            format!("cannot read {}: {error}", dir.join(&source).display()),
                        );
                        continue;
                    }
                },
                "environment" => match vars.get(&source) {
                    Some(value) => value.clone().into_bytes(),
                    None => {
                        reader.invalid(
                            source_node,
                            &join(&path, "environment"),
                            format!("variable {source} is not set in the environment file"),
                        );
                        continue;
                    }
                },
                _ => source.into_bytes(),
            };
            target.insert(name, FileObject::new(content));
        }
    }
    objects
}

/// Daemon-side guard: a document that still needs the operator's files was not resolved by
/// the CLI (for example an old CLI talking to a new daemon).
pub fn check_unresolved(root: &Node, reader: &mut Reader) {
    if let Some(include) = root.get("include") {
        reader.invalid(
            include,
            "include",
            "must be resolved by the CLI before the document is sent",
        );
    }
    for (key, service) in root
        .get("services")
        .and_then(Node::as_map)
        .unwrap_or_default()
    {
        let name = key.as_scalar().unwrap_or_default();
        reader.set_service(Some(name));
        if let Some(node) = service.get("env_file") {
            reader
                .report(
                    Code::EnvFileUnresolved,
                    node.mark,
                    format!(
                        "service {name:?} still carries env_file: the CLI must fold env files into \
                         environment before sending (upgrade the jaco CLI)"
                    ),
                )
                .details
                .insert("field".into(), "env_file".into());
        }
        for key in ["label_file", "extends"] {
            if let Some(node) = service.get(key) {
                reader.invalid(
                    node,
                    key,
                    "must be resolved by the CLI before the document is sent",
                );
            }
        }
    }
    reader.set_service(None);
}

fn read_text(files: &dyn FileSource, path: &Path) -> Result<String, String> {
    let bytes = files.read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "file is not UTF-8 text".to_owned())
}

fn service_names(root: &Node) -> Vec<String> {
    root.get("services")
        .and_then(Node::as_map)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, _)| k.as_scalar().map(str::to_owned))
        .collect()
}

fn service_mut<'a>(root: &'a mut Node, name: &str) -> Option<&'a mut Node> {
    let Value::Map(entries) = &mut root.value else {
        return None;
    };
    let services = entries
        .iter_mut()
        .find(|(k, _)| k.as_scalar() == Some("services"))
        .map(|(_, v)| v)?;
    let Value::Map(services) = &mut services.value else {
        return None;
    };
    services
        .iter_mut()
        .find(|(k, _)| k.as_scalar() == Some(name))
        .map(|(_, v)| v)
}

fn take_key(node: &mut Node, key: &str) -> Option<Node> {
    let Value::Map(entries) = &mut node.value else {
        return None;
    };
    let index = entries
        .iter()
        .position(|(k, _)| k.as_scalar() == Some(key))?;
    Some(entries.remove(index).1)
}

fn set_key(node: &mut Node, key: &str, value: Node) {
    let mark = node.mark;
    if let Value::Map(entries) = &mut node.value {
        match entries.iter_mut().find(|(k, _)| k.as_scalar() == Some(key)) {
            Some(slot) => slot.1 = value,
            None => entries.push((Node::string(key, mark), value)),
        }
    }
}

fn ensure_map<'a>(node: &'a mut Node, key: &str, mark: Mark) -> &'a mut Node {
    if node.get(key).is_none_or(Node::is_null) {
        set_key(
            node,
            key,
            Node {
                value: Value::Map(Vec::new()),
                mark,
            },
        );
    }
    let Value::Map(entries) = &mut node.value else {
        unreachable!("callers pass mappings");
    };
    entries
        .iter_mut()
        .find(|(k, _)| k.as_scalar() == Some(key))
        .map(|(_, v)| v)
        .expect("just ensured")
}

/// The directory a relative path in `file` is resolved against.
pub fn parent_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_inside_scalars() {
        let mark = Mark {
            line: 4,
            column: 10,
        };
        assert_eq!(
            scalar_position("ab${X", true, mark, 2),
            Mark {
                line: 4,
                column: 12
            }
        );
        assert_eq!(
            scalar_position("ab${X", false, mark, 2),
            Mark {
                line: 4,
                column: 13
            }
        );
        assert_eq!(
            scalar_position("a\nbc${X", false, mark, 4),
            Mark { line: 6, column: 3 }
        );
    }

    #[test]
    fn merge_overlays_maps_and_replaces_the_rest() {
        let base = yaml::parse("a: {x: 1, y: 2}\nl: [1, 2]\ns: base\n").unwrap();
        let over = yaml::parse("a: {y: 3}\nl: [9]\n").unwrap();
        let merged = merge_nodes(base, over).to_json();
        assert_eq!(
            merged,
            serde_json::json!({"a": {"x": 1, "y": 3}, "l": [9], "s": "base"})
        );
    }
}
