//! Credentials in the replicated state: node join tokens, operator tokens and registry
//! credentials, their commands and their lookups.
//!
//! Only SHA-256 hashes of tokens are stored; a token lookup compares every stored hash in
//! constant time. Secrets (hashes, registry passwords) never reach an audit payload, an error
//! detail or a watch event key. Expiry is checked against the command's time, never a clock.
//!
//! It must not read clocks, randomness or disks, and must not log or echo a token, hash or
//! password.

use crate::error::{Code, Error};
use crate::proto::v1::{
    AuditEventType, ConsumeJoinToken, ConsumeJoinTokenResult, IssueJoinToken, IssueOperatorToken,
    JoinToken, OperatorToken, RegistryCredential, RemoveRegistryCredential, RevokeOperatorToken,
    UpsertRegistryCredential, command_result::Outcome,
};

use super::change::{Tx, modify, put, take, take_where};
use super::{State, ack, invalid, missing, payload, required};

/// Join tokens are valid this long when the command does not say (SPEC §3.4).
pub const JOIN_TOKEN_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Identities that are not operator tokens; no token may take these names.
const RESERVED_IDENTITIES: &[&str] = &["local", "system"];

/// Registry hosts that all mean Docker Hub.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

impl State {
    // ---- queries ---------------------------------------------------------------------------

    /// The operator token with this name (hash included: not for RPC answers).
    pub fn operator_token(&self, name: &str) -> Option<&OperatorToken> {
        self.operator_tokens.get(name)
    }

    /// Every operator token, by name.
    pub fn operator_tokens(&self) -> impl Iterator<Item = &OperatorToken> {
        self.operator_tokens.values()
    }

    /// The operator token whose hash is `sha256`, comparing every stored hash in constant time.
    pub fn operator_token_by_hash(&self, sha256: &[u8; 32]) -> Option<&OperatorToken> {
        let mut found = None;
        for token in self.operator_tokens.values() {
            if constant_time_eq(&token.sha256, sha256) {
                found = Some(token);
            }
        }
        found
    }

    /// [`State::operator_token_by_hash`] for a hex-encoded hash (None when not 64 hex chars).
    pub fn operator_token_by_hex(&self, sha256_hex: &str) -> Option<&OperatorToken> {
        self.operator_token_by_hash(&decode_sha256_hex(sha256_hex)?)
    }

    /// Authenticates a bearer token by its hash: the token, or `token_invalid` /
    /// `token_revoked`.
    pub fn authenticate(&self, sha256: &[u8; 32]) -> Result<&OperatorToken, Error> {
        match self.operator_token_by_hash(sha256) {
            None => Err(Error::new(
                Code::TokenInvalid,
                "the token matches no operator token",
            )),
            Some(token) if token.revoked_at_unix_ms != 0 => Err(Error::new(
                Code::TokenRevoked,
                format!("operator token {} was revoked", token.name),
            )
            .with("name", &token.name)
            .with("revoked_at_unix_ms", token.revoked_at_unix_ms)),
            Some(token) => Ok(token),
        }
    }

    /// Every join token (used and unused, not yet pruned), by hash.
    pub fn join_tokens(&self) -> impl Iterator<Item = &JoinToken> {
        self.join_tokens.values()
    }

    /// The registry credential for a prefix (canonicalised first).
    pub fn registry_credential(&self, registry: &str) -> Option<&RegistryCredential> {
        let key = canonical_registry(registry).ok()?;
        self.registry_credentials.get(&key)
    }

    /// Every registry credential, by canonical prefix.
    pub fn registry_credentials(&self) -> impl Iterator<Item = &RegistryCredential> {
        self.registry_credentials.values()
    }

    /// Rejects a command whose identity names a revoked operator token.
    pub(super) fn check_identity(&self, identity: &str) -> Result<(), Error> {
        match self.operator_tokens.get(identity) {
            Some(token) if token.revoked_at_unix_ms != 0 => Err(Error::new(
                Code::TokenRevoked,
                format!("operator token {identity} was revoked"),
            )
            .with("name", identity)),
            _ => Ok(()),
        }
    }

    // ---- join tokens -----------------------------------------------------------------------

    pub(super) fn issue_join_token(
        &mut self,
        tx: &mut Tx,
        c: &IssueJoinToken,
    ) -> Result<Outcome, Error> {
        let mut token = c.token.clone().ok_or_else(|| missing("token"))?;
        check_hash(&token.sha256, "token.sha256")?;
        required(&token.node_name, "token.node_name")?;
        if self.nodes.contains_key(&token.node_name) {
            return Err(already_member(&token.node_name));
        }
        if self.join_tokens.contains_key(&token.sha256) {
            return Err(invalid(
                "token.sha256",
                "a join token with this hash exists",
            ));
        }
        if token.issued_at_unix_ms == 0 {
            token.issued_at_unix_ms = tx.now;
        }
        if token.expires_at_unix_ms == 0 {
            token.expires_at_unix_ms = token.issued_at_unix_ms + JOIN_TOKEN_TTL_MS;
        }
        if token.issued_by.is_empty() {
            token.issued_by = tx.identity.to_owned();
        }
        token.used_at_unix_ms = 0;
        // Expired tokens can never be consumed; forget them.
        let now = tx.now;
        take_where(&mut self.join_tokens, tx, |_, t| {
            t.expires_at_unix_ms <= now
        });
        let details = payload([
            ("kind", "join".to_owned()),
            ("node", token.node_name.clone()),
            ("sans", token.sans.join(",")),
            ("expires_at_unix_ms", token.expires_at_unix_ms.to_string()),
        ]);
        put(&mut self.join_tokens, token.sha256.clone(), token, tx);
        self.audit_push(tx, AuditEventType::TokenIssue, details);
        Ok(ack())
    }

    pub(super) fn consume_join_token(
        &mut self,
        tx: &mut Tx,
        c: &ConsumeJoinToken,
    ) -> Result<Outcome, Error> {
        let token = self
            .join_tokens
            .get(&c.sha256)
            .ok_or_else(|| join_invalid("unknown"))?;
        if token.used_at_unix_ms != 0 {
            return Err(join_invalid("used"));
        }
        if token.expires_at_unix_ms <= tx.now {
            return Err(join_invalid("expired"));
        }
        if token.node_name != c.node_name {
            return Err(join_invalid("wrong_node").with("node", &c.node_name));
        }
        if self.nodes.contains_key(&c.node_name) {
            return Err(already_member(&c.node_name));
        }
        let result = ConsumeJoinTokenResult {
            node_name: token.node_name.clone(),
            sans: token.sans.clone(),
        };
        let now = tx.now;
        modify(&mut self.join_tokens, &c.sha256, tx, |t| {
            t.used_at_unix_ms = now
        });
        Ok(Outcome::ConsumeJoinToken(result))
    }

    // ---- operator tokens -------------------------------------------------------------------

    /// Checks and completes a new operator token (defaults from the command).
    pub(super) fn new_operator_token(
        &self,
        tx: &Tx,
        token: Option<&OperatorToken>,
    ) -> Result<OperatorToken, Error> {
        let mut token = token.cloned().ok_or_else(|| missing("token"))?;
        check_token_name(&token.name)?;
        check_hash(&token.sha256, "token.sha256")?;
        if self.operator_tokens.contains_key(&token.name) {
            return Err(invalid(
                "token.name",
                format!("an operator token named {} exists", token.name),
            )
            .with("name", &token.name));
        }
        if self
            .operator_tokens
            .values()
            .any(|t| t.sha256 == token.sha256)
        {
            return Err(invalid(
                "token.sha256",
                "an operator token with this hash exists",
            ));
        }
        if token.issued_at_unix_ms == 0 {
            token.issued_at_unix_ms = tx.now;
        }
        if token.issued_by.is_empty() {
            token.issued_by = tx.identity.to_owned();
        }
        token.revoked_at_unix_ms = 0;
        Ok(token)
    }

    /// Stores a checked operator token and audits its issue.
    pub(super) fn store_operator_token(&mut self, tx: &mut Tx, token: OperatorToken) {
        let details = payload([
            ("kind", "operator".to_owned()),
            ("name", token.name.clone()),
            ("allow_privileged", token.allow_privileged.to_string()),
        ]);
        put(&mut self.operator_tokens, token.name.clone(), token, tx);
        self.audit_push(tx, AuditEventType::TokenIssue, details);
    }

    pub(super) fn issue_operator_token(
        &mut self,
        tx: &mut Tx,
        c: &IssueOperatorToken,
    ) -> Result<Outcome, Error> {
        let token = self.new_operator_token(tx, c.token.as_ref())?;
        self.store_operator_token(tx, token);
        Ok(ack())
    }

    pub(super) fn revoke_operator_token(
        &mut self,
        tx: &mut Tx,
        c: &RevokeOperatorToken,
    ) -> Result<Outcome, Error> {
        let token = self.operator_tokens.get(&c.name).ok_or_else(|| {
            Error::new(
                Code::NotFound,
                format!("no operator token named {}", c.name),
            )
            .with("name", &c.name)
        })?;
        if token.revoked_at_unix_ms != 0 {
            // Already revoked: nothing changes, nothing to audit.
            return Ok(ack());
        }
        let now = tx.now;
        modify(&mut self.operator_tokens, &c.name, tx, |t| {
            t.revoked_at_unix_ms = now
        });
        self.audit_push(
            tx,
            AuditEventType::TokenRevoke,
            payload([("name", c.name.clone())]),
        );
        Ok(ack())
    }

    // ---- registry credentials --------------------------------------------------------------

    pub(super) fn upsert_registry_credential(
        &mut self,
        tx: &mut Tx,
        c: &UpsertRegistryCredential,
    ) -> Result<Outcome, Error> {
        let mut credential = c.credential.clone().ok_or_else(|| missing("credential"))?;
        credential.registry = canonical_registry(&credential.registry)?;
        required(&credential.username, "credential.username")?;
        required(&credential.secret, "credential.secret")?;
        credential.updated_at_unix_ms = tx.now;
        credential.updated_by = tx.identity.to_owned();
        let rotated = self.registry_credentials.contains_key(&credential.registry);
        let details = payload([
            ("registry", credential.registry.clone()),
            ("username", credential.username.clone()),
            ("rotated", rotated.to_string()),
        ]);
        put(
            &mut self.registry_credentials,
            credential.registry.clone(),
            credential,
            tx,
        );
        self.audit_push(tx, AuditEventType::RegistryCredentialUpsert, details);
        Ok(ack())
    }

    pub(super) fn remove_registry_credential(
        &mut self,
        tx: &mut Tx,
        c: &RemoveRegistryCredential,
    ) -> Result<Outcome, Error> {
        let registry = canonical_registry(&c.registry)?;
        if let Some(removed) = take(&mut self.registry_credentials, &registry, tx) {
            let details = payload([("registry", registry), ("username", removed.username)]);
            self.audit_push(tx, AuditEventType::RegistryCredentialRemove, details);
        }
        Ok(ack())
    }
}

/// The canonical form of a registry prefix `host[:port][/namespace]`: lowercase, without a
/// scheme, trailing slash or `/v1`/`/v2` API suffix, and `docker.io` for every Docker Hub
/// alias. `validation_failed` when nothing remains or it contains whitespace.
pub fn canonical_registry(raw: &str) -> Result<String, Error> {
    let mut text = raw.trim().to_ascii_lowercase();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            text = rest.to_owned();
        }
    }
    let mut text = text.trim_end_matches('/').to_owned();
    for api in ["/v1", "/v2"] {
        if let Some(rest) = text.strip_suffix(api) {
            text = rest.trim_end_matches('/').to_owned();
        }
    }
    let (host, path) = match text.split_once('/') {
        Some((host, path)) => (host.to_owned(), Some(path.to_owned())),
        None => (text.clone(), None),
    };
    let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        "docker.io".to_owned()
    } else {
        host
    };
    let bad = host.is_empty()
        || text.chars().any(char::is_whitespace)
        || path
            .as_deref()
            .is_some_and(|p| p.is_empty() || p.starts_with('/') || p.contains("//"));
    if bad {
        return Err(invalid(
            "registry",
            format!("{raw:?} is not a registry prefix host[:port][/namespace]"),
        )
        .with("registry", raw));
    }
    Ok(match path {
        Some(path) => format!("{host}/{path}"),
        None => host,
    })
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Decodes 64 hex characters into a SHA-256 hash.
fn decode_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Rejects anything but a 32-byte hash (without echoing it).
fn check_hash(hash: &[u8], field: &str) -> Result<(), Error> {
    if hash.len() == 32 {
        Ok(())
    } else {
        Err(invalid(field, format!("{field} must be a 32-byte SHA-256")).with("length", hash.len()))
    }
}

/// Operator token names: 1–64 of `[A-Za-z0-9._-]`, not a reserved identity.
fn check_token_name(name: &str) -> Result<(), Error> {
    let shape_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !shape_ok {
        return Err(invalid(
            "token.name",
            "token names are 1-64 characters of A-Z a-z 0-9 . _ -",
        )
        .with("name", name));
    }
    if RESERVED_IDENTITIES.contains(&name) {
        return Err(
            invalid("token.name", format!("{name} is a reserved identity")).with("name", name),
        );
    }
    Ok(())
}

fn join_invalid(reason: &str) -> Error {
    Error::new(
        Code::JoinTokenInvalid,
        "the join token is unknown, expired, used or scoped to another node",
    )
    .with("reason", reason)
}

fn already_member(node: &str) -> Error {
    Error::new(
        Code::NodeAlreadyMember,
        format!("node {node} is already a member"),
    )
    .with("node", node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::command::Kind;
    use crate::state::testkit::*;
    use crate::state::{AuditFilter, ChangeKind};

    fn issue_join(node: &str, secret: &str) -> Kind {
        Kind::IssueJoinToken(IssueJoinToken {
            token: Some(JoinToken {
                sha256: sha(secret),
                node_name: node.into(),
                sans: vec!["10.0.0.2".into()],
                ..Default::default()
            }),
        })
    }

    fn consume(node: &str, secret: &str) -> Kind {
        Kind::ConsumeJoinToken(ConsumeJoinToken {
            sha256: sha(secret),
            node_name: node.into(),
        })
    }

    fn issue_op(name: &str, secret: &str) -> Kind {
        Kind::IssueOperatorToken(IssueOperatorToken {
            token: Some(OperatorToken {
                name: name.into(),
                sha256: sha(secret),
                ..Default::default()
            }),
        })
    }

    fn revoke(name: &str) -> Kind {
        Kind::RevokeOperatorToken(RevokeOperatorToken { name: name.into() })
    }

    fn upsert_cred(registry: &str, secret: &str) -> Kind {
        Kind::UpsertRegistryCredential(UpsertRegistryCredential {
            credential: Some(RegistryCredential {
                registry: registry.into(),
                username: "ci".into(),
                secret: secret.into(),
                ..Default::default()
            }),
        })
    }

    fn remove_cred(registry: &str) -> Kind {
        Kind::RemoveRegistryCredential(RemoveRegistryCredential {
            registry: registry.into(),
        })
    }

    fn last_audit(h: &Harness) -> crate::proto::v1::AuditEvent {
        let page = h.state.audit(&AuditFilter::default());
        page.events.last().cloned().expect("an audit event")
    }

    #[test]
    fn test_join_token_is_single_use_and_scoped() {
        let mut h = Harness::initialised();
        h.ok(issue_join("n2", "j1"));
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::TokenIssue);
        assert_eq!(audit.payload["node"], "n2");
        let err = h.rejected(consume("n3", "j1"), Code::JoinTokenInvalid);
        assert_eq!(err.details["reason"], "wrong_node");
        let Outcome::ConsumeJoinToken(result) = h.ok(consume("n2", "j1")) else {
            panic!("expected a consume result")
        };
        assert_eq!(result.node_name, "n2");
        assert_eq!(result.sans, ["10.0.0.2"]);
        let used = h.state.join_tokens().next().expect("token kept");
        assert_eq!(used.used_at_unix_ms, h.now);
        let err = h.rejected(consume("n2", "j1"), Code::JoinTokenInvalid);
        assert_eq!(err.details["reason"], "used");
        let err = h.rejected(consume("n2", "other"), Code::JoinTokenInvalid);
        assert_eq!(err.details["reason"], "unknown");
    }

    #[test]
    fn test_join_token_expiry_uses_the_command_time() {
        let mut h = Harness::initialised();
        h.ok(issue_join("n2", "j1"));
        let issued = h.now;
        h.now = issued + JOIN_TOKEN_TTL_MS - 1;
        let before_expiry = h.state.clone();
        h.ok(consume("n2", "j1"));
        h.state = before_expiry;
        h.now = issued + JOIN_TOKEN_TTL_MS;
        let err = h.rejected(consume("n2", "j1"), Code::JoinTokenInvalid);
        assert_eq!(err.details["reason"], "expired");
    }

    #[test]
    fn test_issuing_prunes_expired_join_tokens() {
        let mut h = Harness::initialised();
        h.ok(issue_join("n2", "old"));
        h.now += JOIN_TOKEN_TTL_MS;
        h.ok(issue_join("n3", "new"));
        let nodes: Vec<&str> = h
            .state
            .join_tokens()
            .map(|t| t.node_name.as_str())
            .collect();
        assert_eq!(nodes, ["n3"]);
        assert!(
            h.events
                .iter()
                .any(|e| e.kind == ChangeKind::Removed && e.key.starts_with("n2@"))
        );
    }

    #[test]
    fn test_join_token_errors() {
        let mut h = Harness::initialised();
        h.rejected(issue_join("n1", "j"), Code::NodeAlreadyMember);
        h.rejected(
            Kind::IssueJoinToken(IssueJoinToken { token: None }),
            Code::ValidationFailed,
        );
        let mut short = issue_join("n2", "j");
        if let Kind::IssueJoinToken(c) = &mut short {
            c.token.as_mut().expect("token").sha256 = vec![1, 2, 3];
        }
        h.rejected(short, Code::ValidationFailed);
        h.rejected(issue_join("", "j"), Code::ValidationFailed);
        h.ok(issue_join("n2", "j"));
        h.rejected(issue_join("n2", "j"), Code::ValidationFailed);
        // A valid token for a name that became a member meanwhile.
        h.ok(issue_join("n3", "k"));
        h.ok(add_node("n3", 3));
        h.rejected(consume("n3", "k"), Code::NodeAlreadyMember);
    }

    #[test]
    fn test_operator_token_issue_revoke_and_lookup() {
        let mut h = Harness::initialised();
        h.ok(issue_op("ci", "secret-ci"));
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::TokenIssue);
        assert_eq!(audit.payload["name"], "ci");
        let hash: [u8; 32] = sha("secret-ci").try_into().expect("32 bytes");
        let token = h
            .state
            .operator_token_by_hash(&hash)
            .expect("found by hash");
        assert_eq!(token.name, "ci");
        assert_eq!(token.issued_by, "local");
        assert_eq!(
            h.state.operator_token_by_hex(&hex(&hash)).map(|t| &t.name),
            Some(&"ci".to_owned())
        );
        assert!(h.state.operator_token_by_hex("zz").is_none());
        assert!(h.state.authenticate(&hash).is_ok());
        assert_eq!(
            h.state.authenticate(&[0; 32]).map(|_| ()).unwrap_err().code,
            Code::TokenInvalid
        );

        h.ok(revoke("ci"));
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::TokenRevoke);
        assert_eq!(
            h.state.operator_token("ci").map(|t| t.revoked_at_unix_ms),
            Some(h.now)
        );
        assert_eq!(
            h.state.authenticate(&hash).map(|_| ()).unwrap_err().code,
            Code::TokenRevoked
        );
        // Revoking again changes nothing and audits nothing.
        let before = h.state.audit_len();
        h.ok(revoke("ci"));
        assert!(h.events.is_empty());
        assert_eq!(h.state.audit_len(), before);
    }

    #[test]
    fn test_operator_token_errors() {
        let mut h = Harness::initialised();
        h.ok(issue_op("ci", "a"));
        h.rejected(issue_op("ci", "b"), Code::ValidationFailed);
        h.rejected(issue_op("other", "a"), Code::ValidationFailed);
        h.rejected(issue_op("local", "c"), Code::ValidationFailed);
        h.rejected(issue_op("has space", "c"), Code::ValidationFailed);
        h.rejected(issue_op("", "c"), Code::ValidationFailed);
        h.rejected(
            Kind::IssueOperatorToken(IssueOperatorToken { token: None }),
            Code::ValidationFailed,
        );
        let err = h.rejected(revoke("nobody"), Code::NotFound);
        assert_eq!(err.details["name"], "nobody");
    }

    #[test]
    fn test_a_revoked_identity_cannot_write() {
        let mut h = Harness::initialised();
        h.ok(issue_op("ci", "a"));
        h.ok_as("ci", issue_op("ci2", "b"));
        h.ok(revoke("ci"));
        h.rejected_as("ci", issue_op("ci3", "c"), Code::TokenRevoked);
    }

    #[test]
    fn test_registry_credentials_are_canonicalised_rotated_and_removed() {
        let mut h = Harness::initialised();
        h.ok(upsert_cred("https://Index.Docker.io/v1/", "pw1"));
        let cred = h
            .state
            .registry_credential("docker.io")
            .expect("stored under docker.io");
        assert_eq!(cred.secret, "pw1");
        assert_eq!(cred.updated_by, "local");
        let audit = last_audit(&h);
        assert_eq!(audit.r#type(), AuditEventType::RegistryCredentialUpsert);
        assert_eq!(audit.payload["rotated"], "false");
        h.ok(upsert_cred("docker.io", "pw2"));
        assert_eq!(last_audit(&h).payload["rotated"], "true");
        assert_eq!(h.state.registry_credentials().count(), 1);

        h.ok(remove_cred("registry-1.docker.io"));
        assert_eq!(
            last_audit(&h).r#type(),
            AuditEventType::RegistryCredentialRemove
        );
        assert!(h.state.registry_credential("docker.io").is_none());
        // Idempotent: removing again is accepted and changes nothing.
        let before = h.state.audit_len();
        h.ok(remove_cred("docker.io"));
        assert!(h.events.is_empty());
        assert_eq!(h.state.audit_len(), before);
    }

    #[test]
    fn test_registry_credential_errors() {
        let mut h = Harness::initialised();
        h.rejected(upsert_cred("", "pw"), Code::ValidationFailed);
        h.rejected(upsert_cred("ghcr.io", ""), Code::ValidationFailed);
        h.rejected(
            Kind::UpsertRegistryCredential(UpsertRegistryCredential { credential: None }),
            Code::ValidationFailed,
        );
        h.rejected(remove_cred("a b"), Code::ValidationFailed);
    }

    #[test]
    fn test_canonical_registry_forms() {
        let cases = [
            ("docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry.hub.docker.com/library", "docker.io/library"),
            ("GHCR.io/Acme/", "ghcr.io/acme"),
            ("http://localhost:5000/v2", "localhost:5000"),
            ("  quay.io/team ", "quay.io/team"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_registry(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in ["", "https://", "/ns", "host//x", "a b"] {
            assert!(canonical_registry(bad).is_err(), "{bad:?}");
        }
    }
}
