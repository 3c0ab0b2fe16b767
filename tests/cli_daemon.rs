//! The `jaco` binary against a real single-node daemon (its control socket): registry
//! credentials (login, list, logout, and the secret never shown by list or audit) and the
//! deployment commands (apply with dry run and detach, status, get, a bounded wait that names
//! what is pending or failed, rollback dry run, delete). The image never exists, so no container
//! runs; the runtime's own tests cover containers.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::daemons::{DEADLINE, Daemons};

/// Runs the binary against `socket` with `input` on standard input.
fn jaco(socket: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jaco"));
    command.arg("--socket").arg(socket).args(args);
    for var in ["JACO_TOKEN", "JACO_CA_CERT", "JACO_SERVER"] {
        command.env_remove(var);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jaco");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for jaco")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit status and returns (stdout, stderr).
fn expect(output: &Output, status: i32, what: &str) -> (String, String) {
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(status),
        "{what}\nstdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_through_the_cli_never_show_the_secret() {
    let cluster = Daemons::start(1, "");
    cluster.form().await;
    let socket = cluster.nodes[0].socket.clone();
    let password = format!("pw-{}-never-shown", std::process::id());
    let piped = format!("{password}\n");

    let (out, _) = expect(
        &jaco(
            &socket,
            &[
                "registry",
                "login",
                "LocalHost:5000/Team/",
                "-u",
                "bot",
                "--password-stdin",
            ],
            piped.as_bytes(),
        ),
        0,
        "login",
    );
    assert!(out.contains("for localhost:5000/team"), "{out}");
    let (out, _) = expect(
        &jaco(
            &socket,
            &[
                "registry",
                "login",
                "localhost:5000/team",
                "-u",
                "bot2",
                "--password-stdin",
                "-o",
                "json",
            ],
            piped.as_bytes(),
        ),
        0,
        "second login",
    );
    assert_eq!(
        json(&out),
        serde_json::json!({"registry": "localhost:5000/team", "username": "bot2", "rotated": true})
    );

    let (out, _) = expect(
        &jaco(&socket, &["registry", "list", "-o", "json"], b""),
        0,
        "list",
    );
    let listed = json(&out);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["registry"], "localhost:5000/team");
    assert_eq!(listed[0]["username"], "bot2");
    assert_eq!(listed[0]["updated_by"], "local");
    let (table, _) = expect(&jaco(&socket, &["registry", "list"], b""), 0, "list table");
    assert!(table.starts_with("REGISTRY "), "{table}");
    let (audit, _) = expect(
        &jaco(
            &socket,
            &[
                "audit",
                "--type",
                "registry_credential_upsert",
                "-o",
                "json",
            ],
            b"",
        ),
        0,
        "audit",
    );
    let events = json(&audit);
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    assert_eq!(events[0]["payload"]["registry"], "localhost:5000/team");
    for shown in [&out, &table, &audit] {
        assert!(!shown.contains(&password), "the password leaked: {shown}");
    }

    // Refused before anything is stored: a malformed prefix, an empty password.
    let (_, err) = expect(
        &jaco(
            &socket,
            &[
                "registry",
                "login",
                "not a host",
                "-u",
                "bot",
                "--password-stdin",
            ],
            piped.as_bytes(),
        ),
        1,
        "bad registry",
    );
    assert!(err.starts_with("Error: validation_failed: "), "{err}");
    let (_, err) = expect(
        &jaco(
            &socket,
            &[
                "registry",
                "login",
                "ghcr.io",
                "-u",
                "bot",
                "--password-stdin",
            ],
            b"\n",
        ),
        1,
        "empty password",
    );
    assert!(err.starts_with("Error: validation_failed: "), "{err}");

    let (out, _) = expect(
        &jaco(&socket, &["registry", "logout", "LOCALHOST:5000/team"], b""),
        0,
        "logout",
    );
    assert!(out.contains("localhost:5000/team"), "{out}");
    let (out, _) = expect(
        &jaco(&socket, &["registry", "list", "-o", "json"], b""),
        0,
        "list after logout",
    );
    assert_eq!(json(&out), serde_json::json!([]));
    let (_, err) = expect(
        &jaco(
            &socket,
            &["-v", "registry", "logout", "localhost:5000/team"],
            b"",
        ),
        1,
        "second logout",
    );
    assert!(err.starts_with("Error: not_found: "), "{err}");
    assert!(err.contains("registry=localhost:5000/team"), "{err}");
}

/// A deployment directory whose image never exists.
fn deployment(dir: &Path, name: &str, greeting: &str) {
    std::fs::write(
        dir.join("jaco.yaml"),
        format!("deployment: {name}\nacme: off\n"),
    )
    .unwrap();
    std::fs::write(dir.join("db_password.txt"), "top-secret-content-42").unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:\n  web:\n    image: jaco-test/absent:never\n    pull_policy: never\n    \
             environment:\n      GREETING: {greeting}\n      API_KEY: hunter2-in-env\n    \
             secrets: [db_password]\nsecrets:\n  db_password:\n    file: ./db_password.txt\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_commands_through_the_cli() {
    let cluster = Daemons::start(1, "");
    cluster.form().await;
    let socket = cluster.nodes[0].socket.clone();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("cli-{}", std::process::id());
    deployment(dir.path(), &name, "hello");
    let file = dir.path().join("jaco.yaml");
    let file = file.to_str().unwrap();

    // A dry run shows the diff and commits nothing.
    let (out, _) = expect(
        &jaco(&socket, &["apply", file, "--dry-run"], b""),
        0,
        "dry run",
    );
    assert!(
        out.starts_with(&format!("dry run: applying would create {name}")),
        "{out}"
    );
    assert!(
        out.contains("+ service web: jaco-test/absent:never, 1 replica"),
        "{out}"
    );
    assert!(out.contains("+ secret db_password"), "{out}");
    let (out, _) = expect(&jaco(&socket, &["status", "-o", "json"], b""), 0, "status");
    assert_eq!(json(&out)["deployments"], serde_json::json!([]));

    // --detach returns at commit.
    let (out, _) = expect(
        &jaco(&socket, &["apply", file, "--detach"], b""),
        0,
        "apply",
    );
    assert!(
        out.starts_with(&format!("created {name} at revision 1")),
        "{out}"
    );

    // status -o json has the stable shape once the scheduler placed the replica.
    let replica = format!("{name}-web-1");
    let start = Instant::now();
    let status = loop {
        let (out, _) = expect(
            &jaco(&socket, &["status", &name, "-o", "json"], b""),
            0,
            "status",
        );
        let status = json(&out);
        if status["replicas"][0]["id"] == replica.as_str() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "never placed: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["deployments"][0]["name"], name.as_str());
    assert_eq!(status["deployments"][0]["revision"], 1);
    assert!(status["deployments"][0]["status"].is_string());
    assert!(status["deployments"][0]["status_details"].is_object());
    let r = &status["replicas"][0];
    for key in [
        "deployment",
        "service",
        "node",
        "state",
        "code",
        "message",
        "container_id",
    ] {
        assert!(r.get(key).is_some(), "replica lacks {key}: {r}");
    }
    assert_eq!((&r["service"], &r["node"]), (&"web".into(), &"n0".into()));

    // get shows the deployment with environment values masked and no secret content.
    let (detail, _) = expect(
        &jaco(&socket, &["get", "deployment", &name, "-o", "json"], b""),
        0,
        "get deployment",
    );
    let value = json(&detail);
    assert_eq!(value["redacted"], true);
    assert_eq!(value["spec"]["blobs"][0]["name"], "db_password");
    assert!(detail.contains("API_KEY"), "{detail}");
    let (table, _) = expect(
        &jaco(&socket, &["get", "deployment", &name], b""),
        0,
        "get deployment table",
    );
    assert!(
        table.contains("secrets and configs: secret db_password"),
        "{table}"
    );
    let (replicas, _) = expect(
        &jaco(
            &socket,
            &["get", "replicas", "--deployment", &name, "-o", "json"],
            b"",
        ),
        0,
        "get replicas",
    );
    assert_eq!(json(&replicas)[0]["id"], replica.as_str());
    let (one, _) = expect(
        &jaco(&socket, &["get", "replica", &replica], b""),
        0,
        "get replica",
    );
    assert!(one.starts_with(&format!("replica: {replica}\n")), "{one}");

    // A second revision that cannot run: the bounded wait fails and says what it waited for.
    deployment(dir.path(), &name, "bonjour");
    let (out, err) = expect(
        &jaco(&socket, &["apply", file, "--timeout", "3s"], b""),
        1,
        "apply that cannot converge",
    );
    assert!(
        out.starts_with(&format!("applied {name} revision 2 (was 1)")),
        "{out}"
    );
    assert!(out.contains("~ service web: changed: spec"), "{out}");
    assert!(
        err.contains(&format!("{name} revision 2 has not converged"))
            || err.contains(&format!("{name} revision 2 did not converge")),
        "{err}"
    );
    assert!(err.contains(&format!("{name}-web-")), "{err}");

    // The rollback dry run names the revision it would restore.
    let (out, _) = expect(
        &jaco(&socket, &["rollback", &name, "--dry-run"], b""),
        0,
        "rollback dry run",
    );
    assert!(
        out.starts_with(&format!(
            "dry run: rolling back would restore revision 1 of {name} as revision 3"
        )),
        "{out}"
    );

    // Delete asks for --yes without a terminal, then removes the deployment.
    expect(
        &jaco(&socket, &["delete", &name], b""),
        2,
        "delete without --yes",
    );
    let (out, _) = expect(
        &jaco(&socket, &["delete", &name, "--yes"], b""),
        0,
        "delete",
    );
    assert!(
        out.starts_with(&format!("deleted {name} (last revision 2)")),
        "{out}"
    );
    let (_, err) = expect(
        &jaco(&socket, &["get", "deployment", &name], b""),
        1,
        "get after delete",
    );
    assert!(err.starts_with("Error: deployment_not_found: "), "{err}");

    // No secret value reached status, get or the audit log.
    let (audit, _) = expect(&jaco(&socket, &["audit", "-o", "json"], b""), 0, "audit");
    for shown in [&detail, &table, &replicas, &audit] {
        assert!(
            !shown.contains("hunter2-in-env"),
            "an environment value leaked: {shown}"
        );
        assert!(
            !shown.contains("top-secret-content-42"),
            "a secret leaked: {shown}"
        );
    }
}
