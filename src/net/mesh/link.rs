//! The mesh interface's address, MTU, state and routes through iproute2 (`ip`), shared by the
//! kernel and the userspace implementation, and the one helper that runs such a tool.
//!
//! The commands are rendered by a pure function and run one by one; every one is idempotent
//! (`replace`, `set`), so configuring twice is harmless. This module must not create or own
//! the interface itself.

use super::MeshSettings;
use crate::error::{Code, Error};

/// The `ip` invocations that give the interface its /32 address, its MTU, bring it up and
/// route `settings.routes` into it with the node's mesh address as source.
pub(super) fn setup_commands(settings: &MeshSettings) -> Vec<Vec<String>> {
    let interface = settings.interface.clone();
    let address = settings.address.to_string();
    let mut commands = vec![
        vec![
            "addr".into(),
            "replace".into(),
            format!("{address}/32"),
            "dev".into(),
            interface.clone(),
        ],
        vec![
            "link".into(),
            "set".into(),
            "dev".into(),
            interface.clone(),
            "mtu".into(),
            settings.mtu.to_string(),
            "up".into(),
        ],
    ];
    for route in &settings.routes {
        commands.push(vec![
            "route".into(),
            "replace".into(),
            route.trunc().to_string(),
            "dev".into(),
            interface.clone(),
            "src".into(),
            address.clone(),
        ]);
    }
    commands
}

/// Runs [`setup_commands`].
pub(super) async fn configure(settings: &MeshSettings) -> Result<(), Error> {
    for args in setup_commands(settings) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("ip", &args, None).await?;
    }
    Ok(())
}

/// Deletes the interface if it exists (a leftover of an earlier run, or ours on stop).
pub(super) async fn delete(interface: &str) -> Result<(), Error> {
    match run("ip", &["link", "del", "dev", interface], None).await {
        Err(error) if error.message.contains("Cannot find device") => Ok(()),
        other => other.map(drop),
    }
}

/// Runs `program args…` (feeding `stdin` when given) and returns its standard output; a
/// missing program or a non-zero exit is an `internal` error that quotes the command and its
/// standard error.
pub(super) async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    crate::net::command::checked(&[program.to_owned()], args, stdin, Code::Internal).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interface_gets_its_address_mtu_state_and_routes_with_source() {
        let mut settings = MeshSettings::new("10.245.0.3".parse().unwrap());
        settings.routes = vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.245.0.9/24".parse().unwrap(),
        ];
        let rendered: Vec<String> = setup_commands(&settings)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            rendered,
            [
                "addr replace 10.245.0.3/32 dev jaco-wg",
                "link set dev jaco-wg mtu 1420 up",
                "route replace 10.244.0.0/16 dev jaco-wg src 10.245.0.3",
                "route replace 10.245.0.0/24 dev jaco-wg src 10.245.0.3",
            ]
        );
    }
}
