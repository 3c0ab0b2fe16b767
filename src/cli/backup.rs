//! `jaco backup` and `jaco restore`: a consistent snapshot of the cluster state, and the
//! offline recreation of a node from one.
//!
//! Role: adapter between the command line and the daemon's `Cluster.Backup` stream (backup)
//! and the local state store (restore). Contract: `backup` checks the stream before writing
//! anything — exactly one header first, then data whose total size and SHA-256 match the
//! header (`internal`, `reason=backup_stream_invalid` otherwise) — and then writes the file
//! with [`crate::backup`] atomically (temporary file, fsync, rename, mode 0600) with its
//! checksummed header naming cluster id, raft index and term; it prints index, term, size and
//! path. `restore` only writes into an empty data directory, with the daemon stopped, and
//! refuses a corrupt or mismatched file.
//!
//! Note: the file is a positional argument, not `-o FILE`, because `-o` is the global output
//! format flag on every command (a command-local `-o` would shadow it).
//!
//! This module must not implement the backup file format (`crate::backup` does) and must not
//! print success for an operation it could not perform.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::client::{self, Target};
use super::view;
use super::{Context, Failure};
use crate::backup::{self as file, Header};
use crate::error::{Code, Error};
use crate::proto::v1::backup_chunk::Chunk;
use crate::proto::v1::{BackupChunk, BackupHeader, BackupRequest};

/// Arguments of `jaco backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write the backup to (created with mode 0600; an existing file is replaced only
    /// when the new backup is complete)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `jaco restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup file written by `jaco backup`
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Data directory to create the node in; must be empty (the daemon must not be running)
    #[arg(
        long,
        value_name = "DIR",
        env = "JACO_DATA_DIR",
        hide_env_values = true,
        default_value = "/var/lib/jaco"
    )]
    pub data_dir: PathBuf,
    /// Node to recreate: one of the backup's nodes (default: this machine's host name, which is
    /// also the daemon's default node_name)
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address the restored node advertises (default: the address the backup records for it)
    #[arg(long, value_name = "HOST:PORT", value_parser = super::args::parse_server)]
    pub advertise: Option<String>,
}

/// Runs `jaco backup`.
pub fn backup(args: &BackupArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let target = Target::of(ctx)?;
    let (header, node, payload) = client::run(&target, |c| async move {
        let mut stream = c.cluster().backup(BackupRequest {}).await?.into_inner();
        let mut assembler = Assembler::default();
        while let Some(chunk) = stream.message().await? {
            assembler.push(chunk)?;
        }
        Ok(assembler.finish()?)
    })?;
    let bytes = file::encode(header.clone(), &payload);
    file::write_atomically(&args.file, &bytes).map_err(|e| {
        Error::new(
            Code::Internal,
            format!("cannot write the backup to {}: {e}", args.file.display()),
        )
        .with("reason", "backup_write_failed")
        .with("path", args.file.display())
    })?;
    let written = Written::new(&args.file, &header, node);
    ctx.print(&written, Written::text)
}

/// The checks on a `Cluster.Backup` stream: one header first, then data up to its size.
#[derive(Debug, Default)]
struct Assembler {
    header: Option<BackupHeader>,
    data: Vec<u8>,
}

/// The backup file format version this CLI writes (`JACO-BACKUP 1`).
const FORMAT_VERSION: u32 = 1;

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Internal,
        format!("the daemon sent an invalid backup stream: {why}; nothing was written"),
    )
    .with("reason", "backup_stream_invalid")
}

impl Assembler {
    /// Takes the next message of the stream.
    fn push(&mut self, chunk: BackupChunk) -> Result<(), Error> {
        match (chunk.chunk, &self.header) {
            (None, _) => Err(invalid("a message carries neither header nor data")),
            (Some(Chunk::Header(_)), Some(_)) => Err(invalid("a second header")),
            (Some(Chunk::Header(header)), None) => {
                if header.format_version != FORMAT_VERSION {
                    return Err(invalid(format!(
                        "format version {} (this jaco writes version {FORMAT_VERSION})",
                        header.format_version
                    ))
                    .with("format_version", header.format_version));
                }
                self.header = Some(header);
                Ok(())
            }
            (Some(Chunk::Data(_)), None) => Err(invalid("data before the header")),
            (Some(Chunk::Data(bytes)), Some(header)) => {
                let total = self.data.len() as u64 + bytes.len() as u64;
                if total > header.size_bytes {
                    return Err(invalid(format!(
                        "more data than the {} bytes the header announces",
                        header.size_bytes
                    )));
                }
                self.data.extend_from_slice(&bytes);
                Ok(())
            }
        }
    }

    /// The file header, the node that took the snapshot, and the payload, once the stream
    /// ended complete and intact.
    fn finish(self) -> Result<(Header, String, Vec<u8>), Error> {
        let header = self
            .header
            .ok_or_else(|| invalid("the stream ended before its header"))?;
        if self.data.len() as u64 != header.size_bytes {
            return Err(invalid(format!(
                "the stream ended after {} of the {} bytes the header announces",
                self.data.len(),
                header.size_bytes
            )));
        }
        let actual = crate::pki::hex(&crate::pki::sha256(&self.data));
        if !actual.eq_ignore_ascii_case(&header.sha256) {
            return Err(invalid(format!(
                "the data's SHA-256 is {actual}, the header says {}",
                header.sha256
            )));
        }
        Ok((
            Header {
                cluster_id: header.cluster_id,
                index: header.index,
                term: header.term,
                version: header.version,
                taken_at_unix_ms: header.created_at_unix_ms,
                size: header.size_bytes,
            },
            header.node,
            self.data,
        ))
    }
}

/// What `jaco backup` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    /// The file written.
    pub path: String,
    /// Cluster id of the snapshot.
    pub cluster_id: String,
    /// Raft index the snapshot is consistent at.
    pub index: u64,
    /// Raft term of that index.
    pub term: u64,
    /// Size of the state payload, in bytes.
    pub size_bytes: u64,
    /// RFC 3339 time the snapshot was taken.
    pub created_at: Option<String>,
    /// Node that took it.
    pub node: String,
    /// jaco version of that node.
    pub version: String,
}

impl Written {
    fn new(path: &Path, header: &Header, node: String) -> Written {
        Written {
            path: path.display().to_string(),
            cluster_id: header.cluster_id.clone(),
            index: header.index,
            term: header.term,
            size_bytes: header.size,
            created_at: view::time(header.taken_at_unix_ms),
            node,
            version: header.version.clone(),
        }
    }

    fn text(&self) -> String {
        format!(
            "backup of cluster {} at raft index {} (term {}), {} bytes of state from {}, \
             written to {}\n",
            self.cluster_id, self.index, self.term, self.size_bytes, self.node, self.path
        )
    }
}

/// Runs `jaco restore`.
pub fn restore(args: &RestoreArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let bytes = std::fs::read(&args.input).map_err(|e| {
        Error::new(
            Code::ValidationFailed,
            format!("cannot read {}: {e}", args.input.display()),
        )
        .with("reason", "unreadable_file")
        .with("path", args.input.display())
    })?;
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let restored = runtime.block_on(crate::daemon::restore::restore(
        &bytes,
        &args.data_dir,
        &node_name,
        args.advertise.as_deref(),
    ))?;
    ctx.print(&restored, |r| {
        format!(
            "Restored cluster {} at raft index {} (term {}) into {} as node {}, its single \
             voter advertised at {}.\nStart the daemon with this data directory; the other \
             nodes of the backup stay in the node table until `jaco node remove`.\n",
            r.cluster_id,
            r.index,
            r.term,
            r.data_dir.display(),
            r.node,
            r.advertise
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::cli::client::tests::serve_on_socket;
    use crate::cli::tests::run as jaco;
    use crate::proto::v1::{
        ClusterStatusRequest, ClusterStatusResponse, DrainNodeRequest, DrainNodeResponse,
        InitRequest, InitResponse, IssueJoinTokenRequest, IssueJoinTokenResponse, JoinRequest,
        JoinResponse, ListNodesRequest, ListNodesResponse, RemoveNodeRequest, RemoveNodeResponse,
    };

    type Answer<T> = Result<Response<T>, Status>;

    const STATE: &[u8] = b"snapshot bytes";

    fn header() -> BackupHeader {
        BackupHeader {
            format_version: 1,
            cluster_id: "c-42".into(),
            index: 120,
            term: 3,
            version: "0.1.0".into(),
            created_at_unix_ms: 1_700_000_000_000,
            node: "node-a".into(),
            size_bytes: STATE.len() as u64,
            sha256: crate::pki::hex(&crate::pki::sha256(STATE)),
        }
    }

    fn header_chunk(header: BackupHeader) -> BackupChunk {
        BackupChunk {
            chunk: Some(Chunk::Header(header)),
        }
    }

    fn data(bytes: &[u8]) -> BackupChunk {
        BackupChunk {
            chunk: Some(Chunk::Data(bytes.to_vec())),
        }
    }

    /// Feeds `chunks` and finishes; the first error wins.
    fn assemble(chunks: Vec<BackupChunk>) -> Result<(Header, String, Vec<u8>), Error> {
        let mut assembler = Assembler::default();
        for chunk in chunks {
            assembler.push(chunk)?;
        }
        assembler.finish()
    }

    fn why(result: Result<(Header, String, Vec<u8>), Error>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.code, Code::Internal);
        assert_eq!(error.details["reason"], "backup_stream_invalid");
        error.message
    }

    #[test]
    fn a_complete_stream_maps_onto_the_file_header() {
        let (file_header, node, payload) = assemble(vec![
            header_chunk(header()),
            data(&STATE[..8]),
            data(&STATE[8..]),
        ])
        .unwrap();
        assert_eq!(payload, STATE);
        assert_eq!(node, "node-a");
        assert_eq!(
            file_header,
            Header {
                cluster_id: "c-42".into(),
                index: 120,
                term: 3,
                version: "0.1.0".into(),
                taken_at_unix_ms: 1_700_000_000_000,
                size: STATE.len() as u64,
            }
        );
        let written = Written::new(Path::new("/tmp/c.bak"), &file_header, node);
        assert_eq!(
            written.text(),
            "backup of cluster c-42 at raft index 120 (term 3), 14 bytes of state from node-a, \
             written to /tmp/c.bak\n"
        );
    }

    /// A `Cluster` service whose Backup streams fixed chunks; nothing else is needed here.
    struct Streams(Vec<BackupChunk>);

    #[tonic::async_trait]
    impl crate::proto::v1::cluster_server::Cluster for Streams {
        async fn init(&self, _: Request<InitRequest>) -> Answer<InitResponse> {
            Err(Status::unimplemented("fixture"))
        }
        async fn join(&self, _: Request<JoinRequest>) -> Answer<JoinResponse> {
            Err(Status::unimplemented("fixture"))
        }
        async fn status(&self, _: Request<ClusterStatusRequest>) -> Answer<ClusterStatusResponse> {
            Err(Status::unimplemented("fixture"))
        }
        async fn issue_join_token(
            &self,
            _: Request<IssueJoinTokenRequest>,
        ) -> Answer<IssueJoinTokenResponse> {
            Err(Status::unimplemented("fixture"))
        }
        async fn remove_node(&self, _: Request<RemoveNodeRequest>) -> Answer<RemoveNodeResponse> {
            Err(Status::unimplemented("fixture"))
        }
        async fn list_nodes(&self, _: Request<ListNodesRequest>) -> Answer<ListNodesResponse> {
            Err(Status::unimplemented("fixture"))
        }
        async fn drain_node(&self, _: Request<DrainNodeRequest>) -> Answer<DrainNodeResponse> {
            Err(Status::unimplemented("fixture"))
        }

        type BackupStream = tokio_stream::Iter<std::vec::IntoIter<Result<BackupChunk, Status>>>;

        async fn backup(&self, _: Request<BackupRequest>) -> Answer<Self::BackupStream> {
            let chunks: Vec<Result<BackupChunk, Status>> = self.0.iter().cloned().map(Ok).collect();
            Ok(Response::new(tokio_stream::iter(chunks)))
        }
    }

    /// Runs `jaco backup <dir>/cluster.bak` against a daemon streaming `chunks`; returns the
    /// outcome and the directory.
    fn backup_from(
        chunks: Vec<BackupChunk>,
        extra: &[&str],
    ) -> (i32, String, String, tempfile::TempDir) {
        let (dir, _runtime) = serve_on_socket(tonic::service::Routes::new(
            crate::proto::v1::cluster_server::ClusterServer::new(Streams(chunks)),
        ));
        let file = dir.path().join("cluster.bak");
        let socket = dir.path().join("jaco.sock");
        let mut argv = vec![
            "backup",
            file.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ];
        argv.extend(extra);
        let (status, out, err) = jaco(&argv);
        (status, out, err, dir)
    }

    #[test]
    fn backup_writes_a_file_that_decodes_to_the_streamed_state() {
        let (status, out, err, dir) = backup_from(
            vec![header_chunk(header()), data(&STATE[..5]), data(&STATE[5..])],
            &["-o", "json"],
        );
        let file = dir.path().join("cluster.bak");
        assert_eq!(status, 0, "{err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["path"], file.to_str().unwrap());
        assert_eq!(json["index"], 120);
        assert_eq!(json["term"], 3);
        assert_eq!(json["size_bytes"], 14);
        assert_eq!(json["node"], "node-a");
        let bytes = std::fs::read(&file).unwrap();
        let (read, payload) = file::decode(&bytes).unwrap();
        assert_eq!(payload, STATE);
        assert_eq!(
            (read.cluster_id.as_str(), read.index, read.term),
            ("c-42", 120, 3)
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_broken_stream_writes_nothing() {
        let (status, out, err, dir) =
            backup_from(vec![header_chunk(header()), data(&STATE[..3])], &[]);
        assert_eq!(status, 1);
        assert_eq!(out, "");
        assert!(
            err.starts_with("Error: internal: the daemon sent an invalid backup stream"),
            "{err}"
        );
        assert!(!dir.path().join("cluster.bak").exists());
    }

    #[test]
    fn the_header_must_come_first_and_once() {
        assert!(
            why(assemble(vec![data(STATE), header_chunk(header())]))
                .contains("data before the header")
        );
        assert!(
            why(assemble(vec![
                header_chunk(header()),
                header_chunk(header())
            ]))
            .contains("a second header")
        );
        assert!(why(assemble(vec![])).contains("ended before its header"));
        assert!(
            why(assemble(vec![BackupChunk { chunk: None }])).contains("neither header nor data")
        );
        let newer = BackupHeader {
            format_version: 2,
            ..header()
        };
        assert!(why(assemble(vec![header_chunk(newer)])).contains("format version 2"));
    }

    #[test]
    fn sizes_must_match_the_header() {
        let short = why(assemble(vec![header_chunk(header()), data(&STATE[..4])]));
        assert!(short.contains("ended after 4 of the 14 bytes"), "{short}");
        let long = why(assemble(vec![
            header_chunk(header()),
            data(STATE),
            data(b"!"),
        ]));
        assert!(long.contains("more data than the 14 bytes"), "{long}");
    }

    #[test]
    fn the_sha256_must_match_the_header() {
        let mut damaged = STATE.to_vec();
        damaged[0] ^= 1;
        let message = why(assemble(vec![header_chunk(header()), data(&damaged)]));
        assert!(message.contains("SHA-256"), "{message}");
        assert!(message.ends_with("nothing was written"), "{message}");
    }
}
