//! Structured logs for the daemon: `tracing` with human text on a terminal and JSON lines
//! otherwise (journald and log shippers read JSON), filtered by `daemon.yaml`'s `log` or
//! `JACO_LOG`.
//!
//! Installs the global subscriber once, from `main`; libraries only emit events. Secrets never
//! reach a log line: callers log names and hashes, never tokens or passwords.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::config::LogFormat;
use crate::error::{Code, Error};

/// Whether logs should be JSON for this format and stderr.
pub fn wants_json(format: LogFormat, stderr_is_terminal: bool) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !stderr_is_terminal,
    }
}

/// The filter with hickory's per-query `info` lines capped at `warn`, unless the operator's
/// filter says something about hickory itself.
fn with_quiet_dns(filter: &str) -> String {
    if filter.contains("hickory") {
        filter.to_owned()
    } else {
        format!("{filter},hickory_server=warn,hickory_proto=warn,hickory_net=warn")
    }
}

/// Installs the global subscriber writing to stderr.
pub fn init(filter: &str, format: LogFormat) -> Result<(), Error> {
    let filter = EnvFilter::try_new(with_quiet_dns(filter)).map_err(|e| {
        Error::new(
            Code::ValidationFailed,
            format!("invalid log filter {filter:?}: {e}"),
        )
        .with("field", "log")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = if wants_json(format, std::io::stderr().is_terminal()) {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(|e| Error::new(Code::Internal, format!("cannot install the logger: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hickory_is_quiet_unless_asked_for() {
        assert_eq!(
            with_quiet_dns("info"),
            "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn"
        );
        assert_eq!(
            with_quiet_dns("hickory_server=debug"),
            "hickory_server=debug"
        );
    }

    #[test]
    fn auto_means_json_unless_on_a_terminal() {
        assert!(wants_json(LogFormat::Auto, false));
        assert!(!wants_json(LogFormat::Auto, true));
        assert!(wants_json(LogFormat::Json, true));
        assert!(!wants_json(LogFormat::Text, false));
    }

    #[test]
    fn a_bad_filter_is_a_validation_error() {
        let error = init("jaco=notalevel[", LogFormat::Text).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["field"], "log");
    }
}
