//! Generated protobuf and gRPC types for the `jaco.v1` API (see `proto/jaco/v1/`).
//!
//! Nothing but the generated code lives here; conversions to domain types belong to the
//! modules that own those types.

/// The `jaco.v1` package: entities, commands, services and the error envelope.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("jaco.v1");
}

#[cfg(test)]
mod tests {
    //! The closed sets of `status-and-errors.seed.txt`, the service surface of SPEC §3.3 and
    //! the documentation rule of the proto files, checked against the generated code and the
    //! compiled descriptors.

    use std::collections::{BTreeMap, BTreeSet};

    use super::v1::*;

    /// Every (tag, short name) an enum decodes, for tags 0..=63, with `prefix` stripped and
    /// the name lowercased (the CLI's spelling). Also checks that each name parses back.
    macro_rules! decoded {
        ($enum:ty, $prefix:literal) => {{
            let mut out = Vec::new();
            for tag in 0..=63 {
                if let Ok(value) = <$enum>::try_from(tag) {
                    let name = value.as_str_name();
                    assert_eq!(<$enum>::from_str_name(name), Some(value), "{name}");
                    let short = name
                        .strip_prefix($prefix)
                        .unwrap_or_else(|| panic!("{name} lacks prefix {}", $prefix));
                    out.push((tag, short.to_ascii_lowercase()));
                }
            }
            out
        }};
    }

    /// Expected (tag, name) pairs: UNSPECIFIED at 0, then the seed's names from tag 1 on.
    fn seed(names: &[&str]) -> Vec<(i32, String)> {
        std::iter::once((0, "unspecified".to_owned()))
            .chain(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (i as i32 + 1, (*name).to_owned())),
            )
            .collect()
    }

    #[test]
    fn replica_states_are_exactly_the_seeds() {
        let expected = seed(&[
            "pending", "pulling", "running", "degraded", "updating", "failed", "stopped",
        ]);
        assert_eq!(decoded!(ReplicaState, "REPLICA_STATE_"), expected);
    }

    #[test]
    fn deployment_statuses_are_exactly_the_seeds() {
        let expected = seed(&["pending", "active"]);
        assert_eq!(decoded!(DeploymentStatus, "DEPLOYMENT_STATUS_"), expected);
    }

    #[test]
    fn node_statuses_are_exactly_the_seeds() {
        let expected = seed(&["joining", "ready", "isolation_unavailable", "drain_timeout"]);
        assert_eq!(decoded!(NodeStatus, "NODE_STATUS_"), expected);
    }

    #[test]
    fn rollout_states_are_exactly_the_seeds() {
        let expected = seed(&["in_progress", "completed", "aborted"]);
        assert_eq!(decoded!(RolloutState, "ROLLOUT_STATE_"), expected);
    }

    #[test]
    fn audit_event_types_are_the_seeds_with_tag_22_reserved() {
        let names = [
            "apply",
            "delete",
            "rollback",
            "node_join",
            "node_remove",
            "token_issue",
            "token_revoke",
            "certificate_issued",
            "certificate_renewed",
            "certificate_failed",
            "isolation_ruleset_reconciled",
            "isolation_unavailable",
            "backup_taken",
            "restore_completed",
            "upgrade_succeeded",
            "upgrade_failed",
            "rollout_invariant_hold",
            "registry_credential_upsert",
            "registry_credential_remove",
            "privileged_workload_admitted",
            "rebalance_moved",
            // tag 22 (rebalance_dry_run) is reserved
            "rebalance_skipped",
        ];
        let mut expected = vec![(0, "unspecified".to_owned())];
        for (i, name) in names.iter().enumerate() {
            let tag = i as i32 + 1;
            let tag = if tag >= 22 { tag + 1 } else { tag };
            expected.push((tag, (*name).to_owned()));
        }
        assert_eq!(decoded!(AuditEventType, "AUDIT_EVENT_TYPE_"), expected);

        assert_eq!(
            AuditEventType::try_from(21),
            Ok(AuditEventType::RebalanceMoved)
        );
        assert!(AuditEventType::try_from(22).is_err());
        assert_eq!(
            AuditEventType::try_from(23),
            Ok(AuditEventType::RebalanceSkipped)
        );
        assert_eq!(
            AuditEventType::from_str_name("AUDIT_EVENT_TYPE_REBALANCE_DRY_RUN"),
            None
        );
    }

    #[test]
    fn every_service_of_spec_3_3_is_generated() {
        use tonic::server::NamedService;
        let names = [
            <cluster_server::ClusterServer<()> as NamedService>::NAME,
            <deploy_server::DeployServer<()> as NamedService>::NAME,
            <tokens_server::TokensServer<()> as NamedService>::NAME,
            <audit_server::AuditServer<()> as NamedService>::NAME,
            <registry_server::RegistryServer<()> as NamedService>::NAME,
            <upgrade_server::UpgradeServer<()> as NamedService>::NAME,
            <internal_server::InternalServer<()> as NamedService>::NAME,
        ];
        assert_eq!(
            names,
            [
                "jaco.v1.Cluster",
                "jaco.v1.Deploy",
                "jaco.v1.Tokens",
                "jaco.v1.Audit",
                "jaco.v1.Registry",
                "jaco.v1.Upgrade",
                "jaco.v1.Internal",
            ]
        );
        // The clients exist too (a missing one fails to compile).
        let _ = std::mem::size_of::<cluster_client::ClusterClient<()>>();
        let _ = std::mem::size_of::<deploy_client::DeployClient<()>>();
        let _ = std::mem::size_of::<tokens_client::TokensClient<()>>();
        let _ = std::mem::size_of::<audit_client::AuditClient<()>>();
        let _ = std::mem::size_of::<registry_client::RegistryClient<()>>();
        let _ = std::mem::size_of::<upgrade_client::UpgradeClient<()>>();
        let _ = std::mem::size_of::<internal_client::InternalClient<()>>();
    }

    // ---- descriptor-based checks -------------------------------------------------------------

    /// The compiled descriptors of proto/ (with source info, i.e. comments).
    fn descriptors() -> Vec<prost_types::FileDescriptorProto> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let mut files: Vec<_> = std::fs::read_dir(root.join("jaco/v1"))
            .expect("proto/jaco/v1 exists")
            .map(|entry| entry.expect("readable dir entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
            .collect();
        files.sort();
        protox::compile(&files, [&root])
            .expect("protos compile")
            .file
            .into_iter()
            .filter(|file| file.package() == "jaco.v1")
            .collect()
    }

    #[test]
    fn services_have_exactly_the_rpcs_of_spec_3_3() {
        let mut services = BTreeMap::new();
        for file in descriptors() {
            for service in &file.service {
                let rpcs: Vec<String> =
                    service.method.iter().map(|m| m.name().to_owned()).collect();
                services.insert(service.name().to_owned(), rpcs);
            }
        }
        let expect = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let expected = BTreeMap::from([
            (
                "Cluster".to_owned(),
                expect(&[
                    "Init",
                    "Join",
                    "Status",
                    "IssueJoinToken",
                    "RemoveNode",
                    "ListNodes",
                    "DrainNode",
                    "Backup",
                ]),
            ),
            (
                "Deploy".to_owned(),
                expect(&[
                    "Apply", "Status", "Get", "Rollback", "Delete", "Logs", "Exec", "Watch",
                ]),
            ),
            ("Tokens".to_owned(), expect(&["Issue", "Revoke", "List"])),
            ("Audit".to_owned(), expect(&["Query", "Tail"])),
            ("Registry".to_owned(), expect(&["Login", "Logout", "List"])),
            (
                "Upgrade".to_owned(),
                expect(&["Start", "Status", "Abort", "UploadBundle"]),
            ),
            (
                "Internal".to_owned(),
                expect(&[
                    "Submit",
                    "ReadIndex",
                    "AppendEntries",
                    "Vote",
                    "InstallSnapshot",
                    "Logs",
                    "Exec",
                    "EnsureSubnet",
                    "SignNodeCsr",
                    "AddLearner",
                    "Heartbeat",
                    "StartElection",
                    "FetchBundle",
                ]),
            ),
        ]);
        assert_eq!(services, expected);
    }

    /// Every message (nested map entries aside) of the jaco.v1 files by full name.
    fn messages(
        files: &[prost_types::FileDescriptorProto],
    ) -> BTreeMap<String, prost_types::DescriptorProto> {
        fn walk(
            prefix: &str,
            message: &prost_types::DescriptorProto,
            out: &mut BTreeMap<String, prost_types::DescriptorProto>,
        ) {
            let name = format!("{prefix}.{}", message.name());
            for nested in &message.nested_type {
                walk(&name, nested, out);
            }
            out.insert(name, message.clone());
        }
        let mut out = BTreeMap::new();
        for file in files {
            for message in &file.message_type {
                walk(&format!(".{}", file.package()), message, &mut out);
            }
        }
        out
    }

    #[test]
    fn every_message_field_enum_value_service_and_rpc_has_a_comment() {
        // Source-code-info paths: FileDescriptorProto message_type=4, enum_type=5, service=6;
        // DescriptorProto field=2, nested_type=3, enum_type=4, oneof_decl=8;
        // EnumDescriptorProto value=2; ServiceDescriptorProto method=2.
        fn message_paths(
            path: Vec<i32>,
            name: &str,
            message: &prost_types::DescriptorProto,
            out: &mut Vec<(Vec<i32>, String)>,
        ) {
            if message.options.as_ref().is_some_and(|o| o.map_entry()) {
                return;
            }
            out.push((path.clone(), name.to_owned()));
            for (i, field) in message.field.iter().enumerate() {
                let p = [path.as_slice(), &[2, i as i32]].concat();
                out.push((p, format!("{name}.{}", field.name())));
            }
            for (i, oneof) in message.oneof_decl.iter().enumerate() {
                let p = [path.as_slice(), &[8, i as i32]].concat();
                out.push((p, format!("{name}.{}", oneof.name())));
            }
            for (i, nested) in message.nested_type.iter().enumerate() {
                let p = [path.as_slice(), &[3, i as i32]].concat();
                message_paths(p, &format!("{name}.{}", nested.name()), nested, out);
            }
            for (i, e) in message.enum_type.iter().enumerate() {
                let p = [path.as_slice(), &[4, i as i32]].concat();
                enum_paths(p, &format!("{name}.{}", e.name()), e, out);
            }
        }
        fn enum_paths(
            path: Vec<i32>,
            name: &str,
            e: &prost_types::EnumDescriptorProto,
            out: &mut Vec<(Vec<i32>, String)>,
        ) {
            out.push((path.clone(), name.to_owned()));
            for (i, value) in e.value.iter().enumerate() {
                let p = [path.as_slice(), &[2, i as i32]].concat();
                out.push((p, format!("{name}.{}", value.name())));
            }
        }

        let mut missing = Vec::new();
        for file in descriptors() {
            let commented: BTreeSet<Vec<i32>> = file
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .filter(|l| {
                    l.leading_comments
                        .as_deref()
                        .is_some_and(|c| !c.trim().is_empty())
                })
                .map(|l| l.path.clone())
                .collect();
            let mut elements = Vec::new();
            for (i, message) in file.message_type.iter().enumerate() {
                message_paths(vec![4, i as i32], message.name(), message, &mut elements);
            }
            for (i, e) in file.enum_type.iter().enumerate() {
                enum_paths(vec![5, i as i32], e.name(), e, &mut elements);
            }
            for (i, service) in file.service.iter().enumerate() {
                elements.push((vec![6, i as i32], service.name().to_owned()));
                for (j, method) in service.method.iter().enumerate() {
                    let name = format!("{}.{}", service.name(), method.name());
                    elements.push((vec![6, i as i32, 2, j as i32], name));
                }
            }
            for (path, name) in elements {
                if !commented.contains(&path) {
                    missing.push(format!("{}: {name}", file.name()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "elements without a // comment:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn audit_tag_22_is_reserved_in_the_descriptor() {
        let files = descriptors();
        let audit = files
            .iter()
            .flat_map(|f| &f.enum_type)
            .find(|e| e.name() == "AuditEventType")
            .expect("AuditEventType exists");
        assert!(
            audit
                .reserved_range
                .iter()
                .any(|r| r.start() <= 22 && 22 <= r.end()),
            "tag 22 must stay reserved"
        );
        assert!(
            audit
                .reserved_name
                .iter()
                .any(|n| n == "AUDIT_EVENT_TYPE_REBALANCE_DRY_RUN")
        );
    }

    #[test]
    fn enum_zero_values_are_unspecified() {
        for file in descriptors() {
            for e in &file.enum_type {
                let zero = e
                    .value
                    .iter()
                    .find(|v| v.number() == 0)
                    .expect("has a zero");
                assert!(
                    zero.name().ends_with("_UNSPECIFIED"),
                    "{}: zero value {} is not *_UNSPECIFIED",
                    e.name(),
                    zero.name()
                );
            }
        }
    }

    #[test]
    fn times_are_int64_unix_ms_and_durations_uint64_ms() {
        use prost_types::field_descriptor_proto::Type;
        let files = descriptors();
        for (name, message) in messages(&files) {
            for field in &message.field {
                let field_name = field.name();
                if field_name.ends_with("_unix_ms") {
                    assert_eq!(field.r#type(), Type::Int64, "{name}.{field_name}");
                } else if field_name.ends_with("_ms") {
                    assert_eq!(field.r#type(), Type::Uint64, "{name}.{field_name}");
                }
                assert!(
                    !field_name.ends_with("_at") && !field_name.ends_with("_time"),
                    "{name}.{field_name}: times are named *_unix_ms"
                );
            }
        }
    }

    #[test]
    fn public_responses_never_reach_secret_bearing_entities() {
        // Entities that hold secret material (keys, hashes, passwords, secret contents). Only
        // the Internal service, Deploy.Watch (which strips that material before sending) and
        // the replicated log itself may carry them.
        let secret_bearing = [
            ".jaco.v1.ClusterMeta",
            ".jaco.v1.ContentBlob",
            ".jaco.v1.Certificate",
            ".jaco.v1.AcmeAccount",
            ".jaco.v1.OperatorToken",
            ".jaco.v1.JoinToken",
            ".jaco.v1.RegistryCredential",
            ".jaco.v1.StateSnapshot",
            ".jaco.v1.Command",
        ];
        let files = descriptors();
        let all = messages(&files);
        for file in &files {
            for service in &file.service {
                if service.name() == "Internal" {
                    continue;
                }
                for method in &service.method {
                    if service.name() == "Deploy" && method.name() == "Watch" {
                        continue;
                    }
                    let mut seen = BTreeSet::new();
                    let mut todo = vec![method.output_type().to_owned()];
                    while let Some(type_name) = todo.pop() {
                        if !seen.insert(type_name.clone()) {
                            continue;
                        }
                        assert!(
                            !secret_bearing.contains(&type_name.as_str()),
                            "{}.{} can return {type_name}",
                            service.name(),
                            method.name()
                        );
                        let message = &all[&type_name];
                        for field in &message.field {
                            if !field.type_name().is_empty() && all.contains_key(field.type_name())
                            {
                                todo.push(field.type_name().to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
}
