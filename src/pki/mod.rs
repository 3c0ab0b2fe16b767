//! Cluster PKI and credentials: the cluster CA, node keys and certificates, TLS configs for
//! the `:7000` listener and its clients, operator tokens and join tokens (SPEC §1.1, §3.4).
//!
//! Everything here is a pure helper: no sockets, no raft, no clock reads except where a
//! function says it uses the current time. Files are touched only by
//! [`node::NodeIdentity::load`] and [`node::NodeIdentity::save`], under `<data_dir>/pki/`.
//! Callers own policy (who may issue tokens, when a join token is consumed in raft); this
//! module owns the cryptography and the rules a credential must satisfy.
//!
//! - [`ca`]: the Ed25519 cluster CA and the signing of node CSRs with only approved names.
//! - [`node`]: node key + CSR generation on the node itself, and the on-disk identity.
//! - [`tls`]: rustls server/client configs, tonic TLS builders, peer node name extraction.
//! - [`tokens`]: operator bearer tokens and single-use, node-scoped join tokens.
//!
//! Shared vocabulary lives in this file: node names, SANs, SHA-256 fingerprints, hex.

pub mod ca;
pub mod node;
pub mod tls;
pub mod tokens;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest as _, Sha256};

use crate::error::{Code, Error};

pub use ca::ClusterCa;
pub use node::{NodeIdentity, NodeKey};
pub use tls::ClientAuth;
pub use tokens::{JoinTokenRecord, OperatorToken};

/// A subject alternative name a node certificate may carry: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// A DNS name, stored in lowercase.
    Dns(String),
    /// An IP address (v4 or v6).
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    /// The rcgen form of this SAN.
    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, Error> {
        match self {
            San::Dns(name) => name
                .clone()
                .try_into()
                .map(rcgen::SanType::DnsName)
                .map_err(|e| crypto_error("encoding a DNS SAN", e)),
            San::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
        }
    }
}

/// The names of a node certificate: DNS `node_name` first, then each of `sans` parsed with
/// [`parse_san`], without repeats. Validates the node name too.
pub(crate) fn certificate_names(node_name: &str, sans: &[String]) -> Result<Vec<San>, Error> {
    validate_node_name(node_name)?;
    let mut names = vec![San::Dns(node_name.to_owned())];
    for text in sans {
        let san = parse_san(text)?;
        if !names.contains(&san) {
            names.push(san);
        }
    }
    Ok(names)
}

/// Parses one SAN as written by an operator (`--san`): an IP address or a DNS name.
///
/// DNS names are lowercased (certificate name matching is case-insensitive). Anything rustls
/// would not accept as a server name is refused with `validation_failed`, so a certificate
/// never carries a name that no client could verify.
pub fn parse_san(text: &str) -> Result<San, Error> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(San::Ip(ip));
    }
    let lower = text.to_ascii_lowercase();
    match ServerName::try_from(lower.as_str()) {
        Ok(ServerName::DnsName(_)) => Ok(San::Dns(lower)),
        _ => Err(Error::new(
            Code::ValidationFailed,
            format!("{text:?} is neither an IP address nor a valid DNS name"),
        )
        .with("field", "san")
        .with("san", text)),
    }
}

/// Checks a node name: a lowercase DNS name (labels of `a-z`, `0-9`, `-`) that is not an IP.
///
/// The node name is the certificate's common name and its first DNS SAN, and peers verify a
/// node's certificate against it, so it must be a name rustls accepts.
pub fn validate_node_name(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 253 {
        Some("is longer than 253 characters")
    } else if name.parse::<IpAddr>().is_ok() {
        Some("is an IP address")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        Some("may contain only lowercase letters, digits, '-' and '.'")
    } else if !matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_))) {
        Some("is not a valid DNS name")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            Code::ValidationFailed,
            format!("node name {name:?} {problem}"),
        )
        .with("field", "node_name")
        .with("node", name)),
    }
}

/// SHA-256 of arbitrary bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 fingerprint of a PEM certificate's DER encoding (the first certificate in `pem`).
///
/// This is the value a join token carries to pin the cluster CA (see [`tokens`]).
pub fn cert_fingerprint(pem: &str) -> Result<[u8; 32], Error> {
    let der = first_cert_der(pem, "certificate")?;
    Ok(sha256(der.as_ref()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Decodes exactly `N` bytes of hex (either case); `None` for any other input.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The first certificate of a PEM bundle; `what` names it in the error.
pub(crate) fn first_cert_der(pem: &str, what: &str) -> Result<CertificateDer<'static>, Error> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            Error::new(
                Code::ValidationFailed,
                format!("the {what} is not a PEM certificate"),
            )
            .with("field", what.replace(' ', "_"))
        })
}

/// Converts unix milliseconds to a [`SystemTime`] (times before 1970 clamp to the epoch).
pub(crate) fn system_time(unix_ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0))
}

/// The current time in unix milliseconds.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An `internal` error for a cryptographic library failure that no input can cause.
pub(crate) fn crypto_error(what: &str, error: impl fmt::Display) -> Error {
    Error::new(Code::Internal, format!("{what}: {error}")).with("reason", "crypto")
}

/// Helpers shared by the tests of the pki submodules.
#[cfg(test)]
pub(crate) mod testing {
    use super::{ClusterCa, NodeIdentity, NodeKey};

    /// A node identity for `node` with `sans`, signed by `ca` at `now_unix_ms`.
    pub(crate) fn identity(
        ca: &ClusterCa,
        node: &str,
        sans: &[&str],
        now_unix_ms: i64,
    ) -> NodeIdentity {
        let key = NodeKey::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let csr = key.csr(node, &sans).unwrap();
        let cert_pem = ca.sign_node_csr(&csr, node, &sans, now_unix_ms).unwrap();
        NodeIdentity {
            key_pem: key.pem().to_owned(),
            cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_parse_as_ip_or_lowercase_dns() {
        assert_eq!(
            parse_san("10.0.0.7").unwrap(),
            San::Ip("10.0.0.7".parse().unwrap())
        );
        assert_eq!(
            parse_san("fd00::1").unwrap(),
            San::Ip("fd00::1".parse().unwrap())
        );
        assert_eq!(
            parse_san("Node-1.Example.org").unwrap(),
            San::Dns("node-1.example.org".into())
        );
        let error = parse_san("not a name").unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["san"], "not a name");
    }

    #[test]
    fn node_names_are_lowercase_dns_names() {
        for good in ["node-1", "n1", "edge.example.org", "a"] {
            validate_node_name(good).unwrap();
        }
        for bad in ["", "Node1", "node_1", "-node", "10.0.0.1", "node 1", "a..b"] {
            let error = validate_node_name(bad).unwrap_err();
            assert_eq!(error.code, Code::ValidationFailed, "{bad:?}");
            assert_eq!(error.details["field"], "node_name");
        }
    }

    #[test]
    fn hex_round_trips_in_either_case() {
        let bytes = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(hex(&bytes), "007fabff");
        assert_eq!(unhex::<4>("007fabff"), Some(bytes));
        assert_eq!(unhex::<4>("007FABFF"), Some(bytes));
        assert_eq!(unhex::<4>("007fab"), None);
        assert_eq!(unhex::<4>("007fabfg"), None);
    }
}
