//! Who is calling: the local socket (`local`), a peer node proven by its cluster certificate
//! (`node:<name>`), or an operator with a bearer token (SPEC §3.4).
//!
//! [`authenticate`] is a function of the transport facts and the stored tokens, so every rule is
//! tested without a server; the tonic interceptor only gathers the facts. Token hashes are
//! compared in constant time against every stored token. This module must not grant anything by
//! itself: handlers decide what an identity may do.

use crate::error::{Code, Error};
use crate::pki::tokens::{find_token, missing_bearer, parse_bearer};
use crate::proto::v1::OperatorToken;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The local control socket: the file permission is the authentication.
    Local,
    /// A cluster node, named by its verified certificate.
    Node(String),
    /// An operator token.
    Operator {
        /// The token's name.
        name: String,
        /// Whether it may admit privileged workloads.
        allow_privileged: bool,
    },
}

impl Identity {
    /// The identity recorded on commands and audit events.
    pub fn audit_name(&self) -> String {
        match self {
            Identity::Local => "local".to_owned(),
            Identity::Node(name) => format!("node:{name}"),
            Identity::Operator { name, .. } => name.clone(),
        }
    }
}

/// What the transport knows about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// Arrived on the local control socket.
    LocalSocket,
    /// Arrived over TLS.
    Tls {
        /// The node name of a client certificate the cluster CA verified, if one was presented.
        node: Option<&'a str>,
        /// The `authorization` header, if any.
        authorization: Option<&'a str>,
    },
}

/// Decides who is calling.
///
/// A bearer token wins over a node certificate when both are present, so that an operator
/// using a node's certificate still acts under their own (revocable) name.
pub fn authenticate<'t>(
    caller: Caller<'_>,
    tokens: impl IntoIterator<Item = &'t OperatorToken>,
) -> Result<Identity, Error> {
    let (node, authorization) = match caller {
        Caller::LocalSocket => return Ok(Identity::Local),
        Caller::Tls {
            node,
            authorization,
        } => (node, authorization),
    };
    let Some(header) = authorization else {
        return match node {
            Some(name) => Ok(Identity::Node(name.to_owned())),
            None => Err(missing_bearer()),
        };
    };
    let presented = parse_bearer(header)?;
    let candidates: Vec<(&OperatorToken, [u8; 32])> = tokens
        .into_iter()
        .filter_map(|token| Some((token, token.sha256.as_slice().try_into().ok()?)))
        .collect();
    let (token, _) = find_token(presented, &candidates, |(_, hash)| hash)?;
    if token.revoked_at_unix_ms != 0 {
        return Err(Error::new(
            Code::TokenRevoked,
            format!("operator token {} was revoked", token.name),
        )
        .with("name", &token.name));
    }
    Ok(Identity::Operator {
        name: token.name.clone(),
        allow_privileged: token.allow_privileged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tokens::{OperatorToken as Generator, bearer_header};

    fn stored(name: &str, revoked: bool, allow_privileged: bool) -> (String, OperatorToken) {
        let (plaintext, hash) = Generator::generate();
        let token = OperatorToken {
            name: name.into(),
            sha256: hash.to_vec(),
            revoked_at_unix_ms: if revoked { 1 } else { 0 },
            allow_privileged,
            ..Default::default()
        };
        (plaintext, token)
    }

    fn tls<'a>(node: Option<&'a str>, authorization: Option<&'a str>) -> Caller<'a> {
        Caller::Tls {
            node,
            authorization,
        }
    }

    #[test]
    fn the_local_socket_is_local() {
        assert_eq!(authenticate(Caller::LocalSocket, []), Ok(Identity::Local));
        assert_eq!(Identity::Local.audit_name(), "local");
    }

    #[test]
    fn operators_are_found_by_their_token() {
        let (ci, ci_token) = stored("ci", false, true);
        let (_, other) = stored("other", false, false);
        let header = bearer_header(&ci);
        let identity = authenticate(tls(None, Some(&header)), [&other, &ci_token]).unwrap();
        assert_eq!(
            identity,
            Identity::Operator {
                name: "ci".into(),
                allow_privileged: true
            }
        );
        assert_eq!(identity.audit_name(), "ci");
    }

    #[test]
    fn unknown_revoked_missing_and_malformed_tokens() {
        let (revoked, revoked_token) = stored("old", true, false);
        let (unknown, _) = stored("nobody", false, false);
        let tokens = [&revoked_token];

        let error = authenticate(tls(None, Some(&bearer_header(&revoked))), tokens).unwrap_err();
        assert_eq!(error.code, Code::TokenRevoked);
        let error = authenticate(tls(None, Some(&bearer_header(&unknown))), tokens).unwrap_err();
        assert_eq!(error.code, Code::TokenInvalid);
        let error = authenticate(tls(None, None), tokens).unwrap_err();
        assert_eq!(error.code, Code::TokenInvalid);
        let error = authenticate(tls(None, Some("Basic abc")), tokens).unwrap_err();
        assert_eq!(error.code, Code::TokenInvalid);
        assert_eq!(error.details["reason"], "malformed");
    }

    #[test]
    fn nodes_are_named_by_their_certificate_unless_a_token_is_sent() {
        assert_eq!(
            authenticate(tls(Some("node-b"), None), []),
            Ok(Identity::Node("node-b".into()))
        );
        assert_eq!(Identity::Node("node-b".into()).audit_name(), "node:node-b");
        let (revoked, revoked_token) = stored("old", true, false);
        let error = authenticate(
            tls(Some("node-b"), Some(&bearer_header(&revoked))),
            [&revoked_token],
        )
        .unwrap_err();
        assert_eq!(
            error.code,
            Code::TokenRevoked,
            "a revoked token is not saved by a cert"
        );
    }

    #[test]
    fn stored_hashes_of_the_wrong_length_are_ignored_not_fatal() {
        let broken = OperatorToken {
            name: "broken".into(),
            sha256: vec![1, 2, 3],
            ..Default::default()
        };
        let (ci, ci_token) = stored("ci", false, false);
        let identity = authenticate(tls(None, Some(&bearer_header(&ci))), [&broken, &ci_token]);
        assert!(matches!(identity, Ok(Identity::Operator { .. })));
    }
}
