//! `jaco audit`: the cluster's append-only audit log.
//!
//! Role: adapter between the command line and the daemon's `Audit` service (Query, and Tail for
//! `--follow`) through [`super::client`]. Contract: events are filtered by age (`--since`,
//! sent as `now − DURATION`) and by type (the short names of the audit-event closed set, e.g.
//! `apply,node_join`); an unknown type name is a usage error (exit 2) that names it and lists
//! the valid names. The table is `TIME TYPE IDENTITY DETAILS` (the payload as `key=value`
//! words); `-o json` prints an array of `{"id", "time", "type", "identity", "payload",
//! "index"}`. With `-f` every event already logged is printed first (all pages of Query), then
//! new ones from Tail, resumed after the last id printed, until interrupted — one JSON object
//! per line with `-o json`, one YAML document per event with `-o yaml`, one table line per
//! event otherwise; a tail that the daemon ends is an error (`reason=stream_ended`), never a
//! silent success.
//!
//! This module must not own the audit-event type set: names come from the generated enum
//! ([`view::parse_short_name`]). It must not print success for an operation the daemon did not
//! confirm.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::args::{ReadArgs, parse_duration};
use super::client::{self, Target};
use super::output::{self, OutputFormat};
use super::view::{self, enum_name};
use super::{Context, Failure};
use crate::error::{Code, Error};
use crate::pki::now_unix_ms;
use crate::proto::v1::audit_client::AuditClient;
use crate::proto::v1::{AuditEvent, AuditEventType, AuditQueryRequest, AuditTailRequest};

/// Arguments of `jaco audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events from this last period, e.g. 30m, 24h, 7d
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only events of these types, comma-separated (e.g. apply,token_revoke)
    #[arg(
        long = "type",
        value_name = "TYPE,...",
        value_delimiter = ',',
        value_parser = parse_type
    )]
    pub types: Vec<AuditEventType>,
    /// Keep printing new events as they are committed
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Read options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// An audit event type by its short name (`node_join`).
pub fn parse_type(name: &str) -> Result<AuditEventType, String> {
    view::parse_short_name(name).ok_or_else(|| {
        format!(
            "unknown audit event type {name:?}; the types are: {}",
            view::short_names::<AuditEventType>().join(", ")
        )
    })
}

/// How far back the tail looks when the query found nothing to resume after: it covers events
/// committed between the query and the tail even when the clocks of this machine and the
/// leader disagree a little; events printed already are skipped by id.
const TAIL_OVERLAP_MS: i64 = 60_000;

/// Runs `jaco audit`.
pub fn run(args: &AuditArgs, ctx: &mut Context<'_>) -> Result<(), Failure> {
    let target = Target::of(ctx)?;
    let started = now_unix_ms();
    let since_unix_ms = args.since.map_or(0, |since| {
        let back = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
        started.saturating_sub(back).max(1)
    });
    let types: Vec<i32> = args.types.iter().map(|t| *t as i32).collect();
    let query = AuditQueryRequest {
        since_unix_ms,
        types: types.clone(),
        consistent: args.read.consistent,
        ..Default::default()
    };
    let follow = args.follow;
    let format = ctx.format;
    let out = &mut *ctx.out;
    let events = client::run(&target, |c| async move {
        let mut audit = c.audit();
        let events = query_all(&mut audit, query).await?;
        if !follow {
            return Ok(events);
        }
        let views: Vec<EventView> = events.iter().map(EventView::from).collect();
        let mut printer = Printer::new(format, &views);
        for view in &views {
            out.write_all(printer.event(view)?.as_bytes())?;
        }
        out.flush()?;
        let mut last_id = events.last().map_or(0, |e| e.id);
        let tail = AuditTailRequest {
            since_unix_ms: if last_id > 0 {
                0
            } else if since_unix_ms > 0 {
                since_unix_ms
            } else {
                started.saturating_sub(TAIL_OVERLAP_MS).max(1)
            },
            types,
            identity: String::new(),
            after_id: last_id,
        };
        let mut stream = audit.tail(tail).await?.into_inner();
        while let Some(item) = stream.message().await? {
            let Some(event) = item.event else { continue };
            if event.id <= last_id {
                continue;
            }
            last_id = event.id;
            out.write_all(printer.event(&EventView::from(&event))?.as_bytes())?;
            out.flush()?;
        }
        Err(Failure::from(
            Error::new(
                Code::Internal,
                "the daemon ended the audit stream; run the command again to resume",
            )
            .with("reason", "stream_ended")
            .with("last_id", last_id),
        ))
    })?;
    let views: Vec<EventView> = events.iter().map(EventView::from).collect();
    ctx.print(&views, |views| {
        output::table(
            HEADERS,
            &views.iter().map(EventView::row).collect::<Vec<_>>(),
        )
    })
}

/// Every event `query` matches, following the pages of a truncated answer.
async fn query_all(
    audit: &mut AuditClient<client::Service>,
    mut query: AuditQueryRequest,
) -> Result<Vec<AuditEvent>, Failure> {
    let mut events: Vec<AuditEvent> = Vec::new();
    loop {
        let page = audit.query(query.clone()).await?.into_inner();
        let more = page.truncated && !page.events.is_empty();
        events.extend(page.events);
        if !more {
            return Ok(events);
        }
        query.after_id = events.last().map_or(0, |e| e.id);
    }
}

const HEADERS: &[&str] = &["TIME", "TYPE", "IDENTITY", "DETAILS"];

/// An audit event as the CLI prints it.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// Sequence number.
    pub id: u64,
    /// RFC 3339 time.
    pub time: Option<String>,
    /// Short type name, e.g. `node_join`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who caused it.
    pub identity: String,
    /// Structured context.
    pub payload: BTreeMap<String, String>,
    /// Raft index of the command that recorded it.
    pub index: u64,
}

impl From<&AuditEvent> for EventView {
    fn from(event: &AuditEvent) -> Self {
        EventView {
            id: event.id,
            time: view::time(event.time_unix_ms),
            kind: enum_name::<AuditEventType>(event.r#type),
            identity: event.identity.clone(),
            payload: event.payload.clone().into_iter().collect(),
            index: event.index,
        }
    }
}

impl EventView {
    fn row(&self) -> Vec<String> {
        vec![
            self.time.clone().unwrap_or_else(|| "-".into()),
            self.kind.clone(),
            self.identity.clone(),
            view::key_values(&self.payload),
        ]
    }
}

/// Prints followed events one at a time in the chosen format.
enum Printer {
    /// Table lines with the column widths of the first batch; the header comes first.
    Table {
        widths: Vec<usize>,
        header_pending: bool,
    },
    /// One compact JSON object per line.
    JsonLines,
    /// One YAML document per event.
    YamlDocuments,
}

impl Printer {
    fn new(format: OutputFormat, first: &[EventView]) -> Printer {
        match format {
            OutputFormat::Table => Printer::Table {
                widths: output::column_widths(
                    HEADERS,
                    &first.iter().map(EventView::row).collect::<Vec<_>>(),
                ),
                header_pending: true,
            },
            OutputFormat::Json => Printer::JsonLines,
            OutputFormat::Yaml => Printer::YamlDocuments,
        }
    }

    /// The text of one event (preceded by the table header the first time).
    fn event(&mut self, event: &EventView) -> Result<String, Failure> {
        Ok(match self {
            Printer::Table {
                widths,
                header_pending,
            } => {
                let mut text = String::new();
                if std::mem::take(header_pending) {
                    text.push_str(&output::table_line(widths, HEADERS));
                }
                text.push_str(&output::table_line(widths, &event.row()));
                text
            }
            Printer::JsonLines => output::stream_item(event, output::DataFormat::Json)?,
            Printer::YamlDocuments => output::stream_item(event, output::DataFormat::Yaml)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::cli::client::tests::serve_on_socket;
    use crate::cli::output::{DataFormat, render};
    use crate::cli::tests::run as jaco;
    use crate::cli::{Command, parse};
    use crate::proto::v1::audit_server::{Audit, AuditServer};
    use crate::proto::v1::{AuditQueryResponse, AuditTailResponse};

    /// Query answers events 1 and 2 in two pages; Tail repeats 2, sends 3 and ends. Records
    /// every request.
    #[derive(Clone, Default)]
    struct Log {
        queries: Arc<Mutex<Vec<AuditQueryRequest>>>,
        tails: Arc<Mutex<Vec<AuditTailRequest>>>,
    }

    #[tonic::async_trait]
    impl Audit for Log {
        async fn query(
            &self,
            request: Request<AuditQueryRequest>,
        ) -> Result<Response<AuditQueryResponse>, Status> {
            let request = request.into_inner();
            let first_page = request.after_id == 0;
            self.queries.lock().unwrap().push(request);
            Ok(Response::new(if first_page {
                AuditQueryResponse {
                    events: vec![event(1, AuditEventType::TokenIssue, &[("name", "ci")])],
                    truncated: true,
                }
            } else {
                AuditQueryResponse {
                    events: vec![event(2, AuditEventType::NodeJoin, &[("node", "node-b")])],
                    truncated: false,
                }
            }))
        }

        type TailStream = tokio_stream::Iter<std::vec::IntoIter<Result<AuditTailResponse, Status>>>;

        async fn tail(
            &self,
            request: Request<AuditTailRequest>,
        ) -> Result<Response<Self::TailStream>, Status> {
            self.tails.lock().unwrap().push(request.into_inner());
            let events = [
                event(2, AuditEventType::NodeJoin, &[("node", "node-b")]),
                event(3, AuditEventType::Apply, &[("deployment", "shop")]),
            ];
            Ok(Response::new(tokio_stream::iter(
                events
                    .into_iter()
                    .map(|event| Ok(AuditTailResponse { event: Some(event) }))
                    .collect::<Vec<_>>(),
            )))
        }
    }

    fn serve(log: &Log) -> (tempfile::TempDir, tokio::runtime::Runtime, String) {
        let (dir, runtime) =
            serve_on_socket(tonic::service::Routes::new(AuditServer::new(log.clone())));
        let socket = dir.path().join("jaco.sock").to_str().unwrap().to_owned();
        (dir, runtime, socket)
    }

    #[test]
    fn a_query_follows_every_page_and_prints_one_array() {
        let log = Log::default();
        let (_dir, _runtime, socket) = serve(&log);
        let (status, out, err) = jaco(&[
            "audit",
            "--since",
            "1h",
            "--type",
            "token_issue,node_join",
            "-o",
            "json",
            "--socket",
            &socket,
        ]);
        assert_eq!(status, 0, "{err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ids: Vec<u64> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 2]);
        let queries = log.queries.lock().unwrap().clone();
        assert_eq!(
            queries.iter().map(|q| q.after_id).collect::<Vec<_>>(),
            [0, 1]
        );
        let hour_ago = now_unix_ms() - 3_600_000;
        assert!((hour_ago - 60_000..=hour_ago).contains(&queries[0].since_unix_ms));
        assert_eq!(
            queries[0].types,
            [
                AuditEventType::TokenIssue as i32,
                AuditEventType::NodeJoin as i32
            ]
        );
        assert!(log.tails.lock().unwrap().is_empty());
    }

    #[test]
    fn follow_prints_json_lines_and_resumes_after_the_last_id() {
        let log = Log::default();
        let (_dir, _runtime, socket) = serve(&log);
        let (status, out, err) = jaco(&["-v", "audit", "-f", "-o", "json", "--socket", &socket]);
        let ids: Vec<u64> = out
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, [1, 2, 3], "{out}");
        let tails = log.tails.lock().unwrap().clone();
        assert_eq!((tails[0].after_id, tails[0].since_unix_ms), (2, 0));
        // The fixture's stream ends, which a follower must not take for success.
        assert_eq!(status, 1);
        assert!(err.contains("reason=stream_ended"), "{err}");
        assert!(err.contains("last_id=3"), "{err}");
    }

    fn event(id: u64, kind: AuditEventType, payload: &[(&str, &str)]) -> AuditEvent {
        AuditEvent {
            id,
            time_unix_ms: 1_700_000_000_000 + id as i64 * 1000,
            r#type: kind as i32,
            identity: "bootstrap".into(),
            payload: payload
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            index: 10 + id,
        }
    }

    fn views() -> Vec<EventView> {
        [
            event(1, AuditEventType::TokenIssue, &[("name", "ci")]),
            event(
                2,
                AuditEventType::NodeJoin,
                &[("node", "node-b"), ("address", "10.0.0.6:7000")],
            ),
        ]
        .iter()
        .map(EventView::from)
        .collect()
    }

    #[test]
    fn types_are_comma_separated_short_names() {
        let (cli, _) = parse([
            "jaco",
            "audit",
            "--type",
            "apply,node_join",
            "--since",
            "7d",
        ])
        .unwrap();
        let Command::Audit(args) = cli.command else {
            panic!("not audit")
        };
        assert_eq!(
            args.types,
            [AuditEventType::Apply, AuditEventType::NodeJoin]
        );
        assert_eq!(args.since, Some(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn an_unknown_type_is_a_usage_error_listing_the_valid_names() {
        let error = parse(["jaco", "audit", "--type", "apply,bogus"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(
            text.contains("unknown audit event type \"bogus\""),
            "{text}"
        );
        assert!(
            text.contains("apply, delete, rollback, node_join"),
            "{text}"
        );
        assert!(text.contains("rebalance_skipped"), "{text}");
        assert!(parse_type("unspecified").is_err());
        assert_eq!(parse_type("backup_taken"), Ok(AuditEventType::BackupTaken));
    }

    #[test]
    fn events_as_a_table() {
        let rows: Vec<Vec<String>> = views().iter().map(EventView::row).collect();
        assert_eq!(
            output::table(HEADERS, &rows),
            "TIME                  TYPE         IDENTITY   DETAILS\n\
             2023-11-14T22:13:21Z  token_issue  bootstrap  name=ci\n\
             2023-11-14T22:13:22Z  node_join    bootstrap  address=10.0.0.6:7000 node=node-b\n"
        );
    }

    #[test]
    fn events_as_json() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&views(), DataFormat::Json).unwrap()).unwrap();
        assert_eq!(
            json[1],
            serde_json::json!({
                "id": 2,
                "time": "2023-11-14T22:13:22Z",
                "type": "node_join",
                "identity": "bootstrap",
                "payload": {"address": "10.0.0.6:7000", "node": "node-b"},
                "index": 12
            })
        );
    }

    #[test]
    fn followed_events_print_one_at_a_time() {
        let views = views();
        let mut json = Printer::new(OutputFormat::Json, &views);
        let line = json.event(&views[0]).unwrap();
        assert_eq!(
            line,
            "{\"id\":1,\"time\":\"2023-11-14T22:13:21Z\",\"type\":\"token_issue\",\
             \"identity\":\"bootstrap\",\"payload\":{\"name\":\"ci\"},\"index\":11}\n"
        );

        let mut table = Printer::new(OutputFormat::Table, &views[..1]);
        assert_eq!(
            table.event(&views[0]).unwrap(),
            "TIME                  TYPE         IDENTITY   DETAILS\n\
             2023-11-14T22:13:21Z  token_issue  bootstrap  name=ci\n"
        );
        assert_eq!(
            table.event(&views[1]).unwrap(),
            "2023-11-14T22:13:22Z  node_join    bootstrap  address=10.0.0.6:7000 node=node-b\n"
        );

        let mut yaml = Printer::new(OutputFormat::Yaml, &views);
        let document = yaml.event(&views[0]).unwrap();
        assert!(document.starts_with("---\nid: 1\n"), "{document}");
    }
}
