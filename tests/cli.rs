//! The `jaco` binary as an operator and a script see it: help, exit statuses, stdout versus
//! stderr, output formats, completions, man pages, and the CLI reference in docs/cli.md.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use jaco::cli::Cli;

/// Commands that work without a daemon in this build; every other leaf calls the daemon or
/// says it is not available.
/// Commands that do not call a daemon: they work offline (`restore` writes a data directory,
/// `daemon` is the daemon; both are exercised by tests/daemon_cluster.rs).
const OFFLINE: &[&str] = &[
    "validate",
    "config",
    "version",
    "completion",
    "man",
    "restore",
    "daemon",
];

/// Leaf commands under a daemon command group that work without the daemon (release tooling,
/// first-boot preparation, the boot health gate that waits for the daemon by design).
const OFFLINE_LEAVES: &[&str] = &[
    "cluster seed",
    "upgrade bundle create",
    "upgrade bundle verify",
    "upgrade bundle keygen",
    "upgrade health-gate",
];

/// Runs the built binary with a clean jaco environment.
fn jaco(args: &[&str]) -> Output {
    jaco_in(args, None)
}

fn jaco_in(args: &[&str], dir: Option<&Path>) -> Output {
    jaco_fed(args, dir, b"")
}

/// Runs the built binary with `input` on its standard input.
fn jaco_fed(args: &[&str], dir: Option<&Path>, input: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jaco"));
    command.args(args);
    for var in ["JACO_TOKEN", "JACO_CA_CERT", "JACO_SOCKET", "JACO_DATA_DIR"] {
        command.env_remove(var);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run jaco");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A command that does not read its input may exit first; a broken pipe is no failure.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for jaco")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Every command path of the clap tree (`["cluster", "init"]`, …), hidden ones included.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands() {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_owned());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out
}

fn find<'a>(root: &'a clap::Command, path: &[String]) -> &'a clap::Command {
    path.iter().fold(root, |command, name| {
        command.find_subcommand(name).expect("path exists")
    })
}

#[test]
fn help_of_each_command_lists_its_subcommands() {
    let root = Cli::command();
    let top = jaco(&["--help"]);
    assert!(top.status.success());
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        assert!(stdout(&top).contains(sub.get_name()), "{}", sub.get_name());
    }
    for path in command_paths() {
        let command = find(&root, &path);
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let output = jaco(&args);
        assert!(output.status.success(), "{args:?}");
        let text = stdout(&output);
        assert!(text.contains("Usage: jaco "), "{args:?}: {text}");
        for sub in command.get_subcommands() {
            assert!(
                text.contains(sub.get_name()),
                "{args:?} lacks {}",
                sub.get_name()
            );
        }
    }
}

/// One command line per command that calls the daemon in this build, with its required
/// arguments (run in a directory holding a valid jaco.yaml and compose.yaml, with a password on
/// standard input).
const CLIENT_COMMANDS: &[&[&str]] = &[
    &["cluster", "init"],
    &[
        "cluster",
        "join",
        "--peer",
        "node-a:7000",
        "--token",
        "join-token",
        "--ca-cert",
        "ca.crt",
    ],
    &["cluster", "status"],
    &["node", "list"],
    &["node", "remove", "node-b"],
    &["node", "issue-join-token", "--node-name", "node-c"],
    &["token", "issue", "--name", "ci"],
    &["token", "revoke", "ci"],
    &["token", "list"],
    &[
        "registry",
        "login",
        "ghcr.io/acme",
        "--username",
        "bot",
        "--password-stdin",
    ],
    &["registry", "logout", "ghcr.io/acme"],
    &["registry", "list"],
    &["apply", "jaco.yaml"],
    &["status", "shop/web"],
    &["get", "deployments"],
    &["get", "deployment", "shop"],
    &["get", "replicas", "--deployment", "shop"],
    &["get", "replica", "shop-web-1"],
    &["get", "routes"],
    &["get", "route", "shop.example.com"],
    &["logs", "shop/web", "--tail", "10"],
    &["exec", "shop/web/1", "-it", "--", "sh"],
    &["rollback", "shop"],
    &["delete", "shop", "--yes"],
    &["audit", "--type", "apply,node_join"],
    &["backup", "cluster.bak"],
    &["node", "drain", "node-b", "--force"],
    &[
        "cluster",
        "bootstrap",
        "--file",
        "bootstrap.yaml",
        "--attempts",
        "1",
    ],
    &["upgrade", "start", "--bundle", "jaco-0.2.0-x86_64.bundle"],
    &["upgrade", "status"],
    &["upgrade", "abort"],
];

fn is_leaf(path: &[String]) -> bool {
    find(&Cli::command(), path)
        .get_subcommands()
        .next()
        .is_none()
}

#[test]
fn the_daemon_command_tables_cover_the_tree() {
    let expected: BTreeSet<String> = command_paths()
        .into_iter()
        .filter(|path| is_leaf(path) && !OFFLINE.contains(&path[0].as_str()))
        .map(|path| path.join(" "))
        .filter(|path| !OFFLINE_LEAVES.contains(&path.as_str()))
        .collect();
    let name = |argv: &&[&str]| argv[..expected_depth(argv)].join(" ");
    let client: BTreeSet<String> = CLIENT_COMMANDS.iter().map(name).collect();
    assert_eq!(client, expected);
}

/// How many leading words of `argv` name the command (down to a leaf).
fn expected_depth(argv: &[&str]) -> usize {
    let mut command = Cli::command();
    let mut depth = 0;
    while let Some(word) = argv.get(depth) {
        let Some(sub) = command.find_subcommand(word).cloned() else {
            break;
        };
        command = sub;
        depth += 1;
    }
    depth
}

#[test]
fn every_client_command_says_when_the_daemon_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("jaco.sock");
    let socket = socket.to_str().unwrap();
    // `cluster join` reads its --ca-cert before it dials the socket.
    let ca = jaco::pki::ClusterCa::generate("test").unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
    // `cluster bootstrap` reads its file and `upgrade start` hashes its bundle first.
    std::fs::write(dir.path().join("bootstrap.yaml"), "init: {}\n").unwrap();
    std::fs::write(
        dir.path().join("jaco-0.2.0-x86_64.bundle"),
        "not checked here",
    )
    .unwrap();
    // `apply` resolves its files before it dials the socket.
    std::fs::write(dir.path().join("jaco.yaml"), "deployment: shop\n").unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: nginx:1.25\n",
    )
    .unwrap();
    for argv in CLIENT_COMMANDS {
        // Before the command: `exec` takes everything after `--` as the remote command.
        let mut args = vec!["--socket", socket];
        args.extend_from_slice(argv);
        assert_failed(
            &jaco_fed(&args, Some(dir.path()), b"s3cret\n"),
            argv,
            &format!(
                "Error: internal: cannot reach the jaco daemon at {socket}: No such file or \
                 directory (os error 2); is it running? (systemctl status jaco)\n"
            ),
        );
    }
    assert!(
        !dir.path().join("cluster.bak").exists(),
        "a failed backup writes nothing"
    );
}

/// `argv` exited with status 1, printed nothing on stdout and exactly `expected` on stderr.
fn assert_failed(output: &Output, argv: &[&str], expected: &str) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{argv:?}: {}",
        stderr(output)
    );
    assert_eq!(stdout(output), "", "{argv:?}");
    assert_eq!(stderr(output), expected, "{argv:?}");
}

#[test]
fn verbose_prints_the_details_of_an_error() {
    let output = jaco(&[
        "-v",
        "upgrade",
        "bundle",
        "verify",
        "/nonexistent.bundle",
        "--keys",
        "/nonexistent",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).ends_with("\n  keys_dir=/nonexistent\n  reason=no_trusted_key\n"),
        "{}",
        stderr(&output)
    );
    let output = jaco(&["-v", "token", "list", "--socket", "/nonexistent/jaco.sock"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .ends_with("\n  reason=daemon_unreachable\n  socket=/nonexistent/jaco.sock\n"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn version_prints_the_crate_version() {
    let version = env!("CARGO_PKG_VERSION");
    let output = jaco(&["version"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), format!("{version}\n"));

    let output = jaco(&["version", "-o", "json"]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "version": version }));

    let output = jaco(&["-o", "yaml", "version"]);
    assert_eq!(stdout(&output), format!("version: \"{version}\"\n"));
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = jaco(&["completion", shell]);
        assert!(output.status.success(), "{shell}");
        let script = stdout(&output);
        assert!(script.contains("jaco"), "{shell}");
        assert!(script.contains("issue-join-token"), "{shell}");
    }
}

#[test]
fn man_writes_a_page_per_visible_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let output = jaco(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));

    let root = Cli::command();
    let mut expected: BTreeSet<String> = command_paths()
        .into_iter()
        .filter(|path| {
            // A command is visible when no command on its path is hidden.
            (1..=path.len()).all(|n| !find(&root, &path[..n]).is_hide_set())
        })
        .map(|path| format!("jaco-{}.1", path.join("-")))
        .collect();
    expected.insert("jaco.1".to_owned());
    let written: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, expected);
    assert!(!written.contains("jaco-man.1"));
    let page = std::fs::read_to_string(out_dir.join("jaco-cluster-join.1")).unwrap();
    assert!(page.contains(".TH"), "not a man page");
    assert!(page.contains("peer"), "{page}");
    assert_eq!(stdout(&output).lines().count(), expected.len());
}

#[test]
fn usage_errors_exit_2() {
    for argv in [
        &["bogus"][..],
        &[],
        &["cluster"],
        &["logs", "no-service"],
        &["status", "--output", "xml"],
        &["completion", "bash", "-o", "json"],
        &["config", "-o", "table"],
        &["backup", "-o", "cluster.bak"],
        &["cluster", "join", "--peer", "n1:7000"],
        &["audit", "--type", "apply,bogus"],
        &["token", "list", "--server", "n1:7000"],
        &[
            "node",
            "issue-join-token",
            "--node-name",
            "n",
            "--ttl",
            "soon",
        ],
    ] {
        let output = jaco(argv);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{argv:?}: {}",
            stderr(&output)
        );
        assert_eq!(stdout(&output), "", "{argv:?}");
    }
    assert!(stderr(&jaco(&["bogus"])).contains("unrecognized subcommand 'bogus'"));
}

/// A deployment directory with jaco.yaml and compose.yaml.
fn deployment(compose: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jaco.yaml"),
        "deployment: shop\nroutes:\n  - domain: shop.example.com\n    service: web\n    port: 8080\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("compose.yaml"), compose).unwrap();
    dir
}

const VALID_COMPOSE: &str =
    "services:\n  web:\n    image: nginx:1.25\n  cache:\n    image: redis:7\n    restart: always\n";

const INVALID_COMPOSE: &str = "services:\n  web:\n    build: .\n  worker:\n    build: ./worker\n";

#[test]
fn validate_a_valid_deployment() {
    let dir = deployment(VALID_COMPOSE);
    let output = jaco_in(&["validate"], Some(dir.path()));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "valid: deployment shop, 2 services, 1 route\n"
    );
    let warnings = stderr(&output);
    assert!(
        warnings.lines().all(|l| l.starts_with("Warning: ")),
        "{warnings}"
    );
    assert!(warnings.contains("restart"), "{warnings}");

    let quiet = jaco_in(&["validate", "-q"], Some(dir.path()));
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(stderr(&quiet), "");

    let json = jaco_in(&["validate", "jaco.yaml", "-o", "json"], Some(dir.path()));
    assert_eq!(json.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&json.stdout).unwrap(),
        serde_json::json!([])
    );

    let yaml = jaco_in(&["validate", "-o", "yaml"], Some(dir.path()));
    assert_eq!(yaml.status.code(), Some(0));
    assert_eq!(stdout(&yaml), "[]\n");
}

#[test]
fn validate_reports_every_problem() {
    let dir = deployment(INVALID_COMPOSE);
    let output = jaco_in(&["validate"], Some(dir.path()));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    let text = stderr(&output);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert!(errors.len() >= 2, "{errors:?}");

    let json = jaco_in(&["validate", "-o", "json"], Some(dir.path()));
    assert_eq!(json.status.code(), Some(1));
    let envelopes: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(envelopes.len() >= 2, "{envelopes:?}");
    for envelope in &envelopes {
        let keys: Vec<&str> = envelope
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["code", "message", "details"]);
    }
    assert!(
        envelopes.iter().any(|e| e["code"] == "validation_failed"),
        "{envelopes:?}"
    );
}

#[test]
fn config_prints_the_resolved_deployment() {
    let dir = deployment(VALID_COMPOSE);
    let json = jaco_in(&["config", "-o", "json"], Some(dir.path()));
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let resolved: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(resolved.get("deployment").is_some(), "{resolved}");
    assert!(resolved["services"]["web"].is_object(), "{resolved}");
    assert!(resolved["services"]["cache"].is_object(), "{resolved}");

    let yaml = jaco_in(&["config"], Some(dir.path()));
    assert_eq!(yaml.status.code(), Some(0));
    let text = stdout(&yaml);
    assert!(text.starts_with("deployment:"), "{text}");
    assert!(text.contains("\nservices:\n"), "{text}");
    assert_eq!(
        stdout(&jaco_in(&["config", "-o", "yaml"], Some(dir.path()))),
        text
    );

    let broken = deployment(INVALID_COMPOSE);
    let failed = jaco_in(&["config", "-o", "json"], Some(broken.path()));
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(stdout(&failed), "");
    assert!(stderr(&failed).starts_with("Error: "));
}

/// docs/cli.md has a section per command path (a heading "`jaco <path>`"), and each section
/// mentions every flag and argument of its command; global flags are in "Global flags".
#[test]
fn the_cli_reference_documents_every_command_and_flag() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md"))
        .expect("docs/cli.md");
    let sections = sections(&doc);
    let root = Cli::command();

    let global = sections
        .iter()
        .find(|(heading, _)| heading == "Global flags")
        .map(|(_, body)| body.as_str())
        .expect("a `Global flags` section");
    for arg in root.get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(global.contains(&format!("--{long}")), "global --{long}");
        }
    }

    let mut missing = Vec::new();
    for path in command_paths() {
        let name = format!("`jaco {}`", path.join(" "));
        let Some((_, body)) = sections.iter().find(|(heading, _)| *heading == name) else {
            missing.push(format!("section {name}"));
            continue;
        };
        for arg in find(&root, &path).get_arguments() {
            if arg.is_global_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            let mention = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map(|name| name.to_string())
                    .unwrap_or_else(|| arg.get_id().to_string()),
            };
            if !body.contains(&mention) {
                missing.push(format!("{mention} in {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/cli.md lacks: {missing:?}");
}

/// (heading text, body up to the next heading) for every markdown heading.
fn sections(doc: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in doc.lines() {
        if line.starts_with('#') {
            out.push((
                line.trim_start_matches('#').trim().to_owned(),
                String::new(),
            ));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}
