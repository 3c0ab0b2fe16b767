//! Credentials made of random bytes: operator bearer tokens (SPEC §3.4) and join tokens.
//!
//! This module generates tokens, hashes them, parses them and decides whether a presented token
//! matches a stored record. It never stores anything (callers put the hashes into raft), never
//! logs or echoes a plaintext token in an error, and reads no clock: every time-dependent rule
//! takes `now_unix_ms` from the caller (in raft, the command's timestamp).
//!
//! # Operator tokens
//! 32 random bytes shown once as 64 lowercase hex characters. Only the SHA-256 **of the 32
//! bytes** is stored (as `OperatorToken.sha256` in the proto says), so a token typed in upper
//! case still matches. Lookup compares the presented hash with every stored hash in constant
//! time ([`find_token`]); the caller then checks revocation (`token_revoked`).
//!
//! # Join tokens
//! `jacojoin.<id>.<secret>[.<ca-sha256>]`, all lowercase hex:
//! - `id`: 8 random bytes (16 hex). Not secret: it names the token in listings and audit events
//!   and lets the leader find the record without comparing secrets across records.
//! - `secret`: 32 random bytes (64 hex). Only its SHA-256 is stored ([`JoinTokenRecord`]); the
//!   plaintext token is shown once.
//! - `ca-sha256` (optional; the issuer includes it whenever it knows the CA): SHA-256 of the
//!   cluster CA certificate's DER. A joiner that has no CA file can pin the CA with it
//!   ([`super::tls::pinned_client_config`]); a joiner that has one must check that they agree
//!   ([`super::tls::check_ca_pin`]). It is public data; it only makes the token self-contained,
//!   like Docker swarm's join tokens.
//!
//! A join token is single-use, valid for 24 h by default (never longer), and scoped to one node
//! name and the SANs approved at issue. [`validate_join`] / [`check_join`] apply those rules
//! and answer `join_token_invalid` with `details.reason` one of `unknown`, `expired`, `used`,
//! `scope` (as `docs/errors.md` lists them).

use std::fmt;

use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};

use super::{certificate_names, hex, sha256, unhex};
use crate::error::{Code, Error};

/// Random bytes in an operator token.
pub const OPERATOR_TOKEN_BYTES: usize = 32;
/// Prefix of every join token.
pub const JOIN_TOKEN_PREFIX: &str = "jacojoin";
/// Default and maximum validity of a join token: 24 hours.
pub const JOIN_TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

/// Operator bearer tokens (namespace for [`OperatorToken::generate`]).
#[derive(Debug)]
pub struct OperatorToken;

impl OperatorToken {
    /// A fresh token: the plaintext (64 lowercase hex characters, shown once) and the SHA-256
    /// of its 32 random bytes (the only thing to store).
    pub fn generate() -> (String, [u8; 32]) {
        let mut bytes = [0u8; OPERATOR_TOKEN_BYTES];
        rand::fill(&mut bytes[..]);
        (hex(&bytes), sha256(&bytes))
    }
}

/// SHA-256 of the 32 bytes a presented operator token encodes.
///
/// `token_invalid` (`reason: malformed`) unless `presented` is exactly 64 hex characters; the
/// token itself is never echoed.
pub fn hash_token(presented: &str) -> Result<[u8; 32], Error> {
    unhex::<OPERATOR_TOKEN_BYTES>(presented)
        .map(|bytes| sha256(&bytes))
        .ok_or_else(|| {
            Error::new(
                Code::TokenInvalid,
                "the token is not a jaco operator token (64 hex characters)",
            )
            .with("reason", "malformed")
        })
}

/// Finds the stored token whose hash matches `presented`, comparing against **every**
/// candidate in constant time (no early exit, no data-dependent branch per candidate).
///
/// `hash_of` returns a candidate's stored SHA-256. `token_invalid` when `presented` is
/// malformed (`reason: malformed`) or matches nothing (`reason: unknown`). Revocation is the
/// caller's check on the returned candidate.
pub fn find_token<'a, T: 'a>(
    presented: &str,
    candidates: impl IntoIterator<Item = &'a T>,
    hash_of: impl Fn(&T) -> &[u8; 32],
) -> Result<&'a T, Error> {
    let wanted = hash_token(presented)?;
    let candidates: Vec<&'a T> = candidates.into_iter().collect();
    let mut found_index = 0u64;
    let mut found = Choice::from(0);
    for (index, candidate) in candidates.iter().enumerate() {
        let equal = hash_of(candidate)[..].ct_eq(&wanted[..]);
        found_index.conditional_assign(&(index as u64), equal);
        found |= equal;
    }
    if bool::from(found) {
        Ok(candidates[found_index as usize])
    } else {
        Err(
            Error::new(Code::TokenInvalid, "the token matches no operator token")
                .with("reason", "unknown"),
        )
    }
}

/// The token of an `authorization` header value of the form `Bearer <token>`.
///
/// The scheme is case-insensitive; the token must be 64 hex characters. Every failure is
/// `token_invalid` with `reason: malformed`, a message that says what is wrong, and never the
/// token itself.
pub fn parse_bearer(header_value: &str) -> Result<&str, Error> {
    let malformed = |message: &str| {
        Error::new(Code::TokenInvalid, message.to_owned()).with("reason", "malformed")
    };
    let value = header_value.trim();
    if value.is_empty() {
        return Err(malformed(
            "the authorization header is empty; expected 'Bearer <token>'",
        ));
    }
    let Some((scheme, token)) = value.split_once([' ', '\t']) else {
        if value.eq_ignore_ascii_case("bearer") {
            return Err(malformed(
                "the authorization header has no token after 'Bearer'",
            ));
        }
        return Err(malformed(
            "the authorization header has no scheme; expected 'Bearer <token>'",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // The scheme is not secret; it helps to see e.g. "Basic".
        return Err(malformed(&format!(
            "the authorization scheme is {scheme:?}; expected 'Bearer <token>'"
        ))
        .with("scheme", scheme));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(malformed(
            "the authorization header has no token after 'Bearer'",
        ));
    }
    if unhex::<OPERATOR_TOKEN_BYTES>(token).is_none() {
        return Err(malformed(
            "the bearer token is not a jaco operator token (64 hex characters)",
        ));
    }
    Ok(token)
}

/// `token_invalid` for a TCP call that carries no `authorization` header at all.
pub fn missing_bearer() -> Error {
    Error::new(
        Code::TokenInvalid,
        "this call needs 'authorization: Bearer <token>' (or use the local socket on a node)",
    )
    .with("reason", "missing")
}

/// The `authorization` header value a client sends for `token`.
pub fn bearer_header(token: &str) -> String {
    format!("Bearer {token}")
}

/// A stored join token: what raft keeps (no plaintext, only the secret's hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// Public token id (16 hex characters).
    pub id: String,
    /// SHA-256 of the 32 secret bytes.
    pub secret_sha256: [u8; 32],
    /// The only node name the token admits.
    pub node_name: String,
    /// SANs approved for the node certificate besides the node name, normalised
    /// (lowercase DNS names, canonical IPs).
    pub sans: Vec<String>,
    /// When it was issued.
    pub issued_at_unix_ms: i64,
    /// When it stops being valid (exclusive).
    pub expires_at_unix_ms: i64,
    /// When it was consumed; `None` while unused.
    pub used_at_unix_ms: Option<i64>,
}

impl JoinTokenRecord {
    /// Marks the token consumed at `now_unix_ms` (after [`check_join`] succeeded).
    pub fn mark_used(&mut self, now_unix_ms: i64) {
        self.used_at_unix_ms = Some(now_unix_ms);
    }
}

/// A freshly issued join token: the plaintext to show once, and the record to store.
#[derive(Clone)]
pub struct IssuedJoinToken {
    /// `jacojoin.<id>.<secret>[.<ca-sha256>]`; show once, never store or log.
    pub plaintext: String,
    /// What to store.
    pub record: JoinTokenRecord,
}

impl fmt::Debug for IssuedJoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedJoinToken")
            .field("plaintext", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// Mints a join token for `node_name` and the approved `sans`, valid for `ttl_ms` from
/// `now_unix_ms` (0 = 24 h; more than 24 h is refused), embedding `ca_sha256` when given.
///
/// `validation_failed` for a bad node name, SAN or TTL.
pub fn issue_join_token(
    node_name: &str,
    sans: &[String],
    ca_sha256: Option<[u8; 32]>,
    now_unix_ms: i64,
    ttl_ms: u64,
) -> Result<IssuedJoinToken, Error> {
    let ttl_ms = match i64::try_from(ttl_ms) {
        Ok(0) => JOIN_TOKEN_TTL_MS,
        Ok(ttl) if ttl <= JOIN_TOKEN_TTL_MS => ttl,
        _ => {
            return Err(Error::new(
                Code::ValidationFailed,
                format!("a join token is valid for at most 24 h ({JOIN_TOKEN_TTL_MS} ms)"),
            )
            .with("field", "ttl_ms")
            .with("ttl_ms", ttl_ms));
        }
    };
    // The node name is implied; store only the extra SANs, normalised.
    let sans: Vec<String> = certificate_names(node_name, sans)?
        .iter()
        .skip(1)
        .map(ToString::to_string)
        .collect();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::fill(&mut id[..]);
    rand::fill(&mut secret[..]);
    let id = hex(&id);
    let mut plaintext = format!("{JOIN_TOKEN_PREFIX}.{id}.{}", hex(&secret));
    if let Some(pin) = ca_sha256 {
        plaintext.push('.');
        plaintext.push_str(&hex(&pin));
    }
    Ok(IssuedJoinToken {
        plaintext,
        record: JoinTokenRecord {
            id,
            secret_sha256: sha256(&secret),
            node_name: node_name.to_owned(),
            sans,
            issued_at_unix_ms: now_unix_ms,
            expires_at_unix_ms: now_unix_ms.saturating_add(ttl_ms),
            used_at_unix_ms: None,
        },
    })
}

/// A join token taken apart. Holds the secret's hash, not the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedJoinToken {
    /// Public token id.
    pub id: String,
    /// SHA-256 of the secret bytes (what [`check_join`] compares).
    pub secret_sha256: [u8; 32],
    /// The pinned CA fingerprint, when the token carries one.
    pub ca_sha256: Option<[u8; 32]>,
}

/// Parses `jacojoin.<id>.<secret>[.<ca-sha256>]` (surrounding whitespace ignored).
///
/// `join_token_invalid` with `reason: unknown` for anything else (the plaintext is not echoed).
pub fn parse_join_token(presented: &str) -> Result<ParsedJoinToken, Error> {
    let malformed = || {
        Error::new(
            Code::JoinTokenInvalid,
            format!("the join token is not a jaco join token ({JOIN_TOKEN_PREFIX}.<id>.<secret>)"),
        )
        .with("reason", "unknown")
    };
    let mut parts = presented.trim().split('.');
    if parts.next() != Some(JOIN_TOKEN_PREFIX) {
        return Err(malformed());
    }
    let id = parts
        .next()
        .filter(|id| unhex::<8>(id).is_some())
        .ok_or_else(malformed)?;
    let secret = parts.next().and_then(unhex::<32>).ok_or_else(malformed)?;
    let ca_sha256 = match parts.next() {
        None => None,
        Some(pin) => Some(unhex::<32>(pin).ok_or_else(malformed)?),
    };
    if parts.next().is_some() {
        return Err(malformed());
    }
    Ok(ParsedJoinToken {
        id: id.to_ascii_lowercase(),
        secret_sha256: sha256(&secret),
        ca_sha256,
    })
}

/// Checks a presented join token against the stored record found by its id, for a joiner
/// claiming `node_name` at `now_unix_ms`. See [`check_join`] for the rules.
pub fn validate_join(
    presented: &str,
    stored: &JoinTokenRecord,
    node_name: &str,
    now_unix_ms: i64,
) -> Result<(), Error> {
    let parsed = parse_join_token(presented)?;
    if parsed.id != stored.id {
        return Err(unknown_join_token(node_name));
    }
    check_join(stored, &parsed.secret_sha256, node_name, now_unix_ms)
}

/// The join-token rules, on the secret's hash (what a raft command carries):
/// the secret must match (constant time) → else `unknown`; the token must be unused → else
/// `used`; `now < expires_at` → else `expired`; the node name must be the token's → else
/// `scope`. The secret is checked first so that nothing about a record is revealed to a caller
/// who does not hold its secret.
pub fn check_join(
    stored: &JoinTokenRecord,
    secret_sha256: &[u8; 32],
    node_name: &str,
    now_unix_ms: i64,
) -> Result<(), Error> {
    if !bool::from(stored.secret_sha256[..].ct_eq(&secret_sha256[..])) {
        return Err(unknown_join_token(node_name));
    }
    let invalid = |reason: &str, message: String| {
        Error::new(Code::JoinTokenInvalid, message)
            .with("reason", reason)
            .with("node", node_name)
            .with("token_id", &stored.id)
    };
    if let Some(used_at) = stored.used_at_unix_ms {
        return Err(invalid(
            "used",
            "the join token was already used; join tokens are single-use".into(),
        )
        .with("used_at_unix_ms", used_at));
    }
    if now_unix_ms >= stored.expires_at_unix_ms {
        return Err(invalid("expired", "the join token has expired".into())
            .with("expires_at_unix_ms", stored.expires_at_unix_ms));
    }
    if node_name != stored.node_name {
        return Err(invalid(
            "scope",
            format!(
                "the join token admits node {:?}, not {node_name:?}",
                stored.node_name
            ),
        )
        .with("token_node", &stored.node_name));
    }
    Ok(())
}

/// `join_token_invalid`, `reason: unknown`: no stored token has this id and secret.
pub fn unknown_join_token(node_name: &str) -> Error {
    Error::new(
        Code::JoinTokenInvalid,
        "the join token is unknown to this cluster",
    )
    .with("reason", "unknown")
    .with("node", node_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn operator_tokens_are_64_hex_chars_and_hash_to_the_stored_value() {
        let (plaintext, hash) = OperatorToken::generate();
        assert_eq!(plaintext.len(), 64);
        assert!(
            plaintext
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(hash_token(&plaintext).unwrap(), hash);
        assert_eq!(hash_token(&plaintext.to_ascii_uppercase()).unwrap(), hash);
        let (other, other_hash) = OperatorToken::generate();
        assert_ne!(plaintext, other);
        assert_ne!(hash, other_hash);
    }

    #[test]
    fn hash_is_sha256_of_the_token_bytes() {
        let plaintext = "00".repeat(32);
        assert_eq!(
            hex(&hash_token(&plaintext).unwrap()),
            // SHA-256 of 32 zero bytes.
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn malformed_operator_tokens_are_token_invalid_without_echo() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            let error = hash_token(bad).unwrap_err();
            assert_eq!(error.code, Code::TokenInvalid);
            assert_eq!(error.details["reason"], "malformed");
            if !bad.is_empty() {
                assert!(!error.message.contains(bad));
            }
        }
    }

    #[derive(Debug, PartialEq)]
    struct Stored {
        name: &'static str,
        sha256: [u8; 32],
    }

    #[test]
    fn find_token_returns_the_matching_candidate() {
        let tokens: Vec<(String, Stored)> = ["bootstrap", "ci", "alice"]
            .into_iter()
            .map(|name| {
                let (plaintext, sha256) = OperatorToken::generate();
                (plaintext, Stored { name, sha256 })
            })
            .collect();
        let stored: Vec<&Stored> = tokens.iter().map(|(_, s)| s).collect();
        for (plaintext, expected) in &tokens {
            let found = find_token(plaintext, stored.iter().copied(), |s| &s.sha256).unwrap();
            assert_eq!(found, expected);
        }
        let (stranger, _) = OperatorToken::generate();
        let error = find_token(&stranger, stored.iter().copied(), |s| &s.sha256).unwrap_err();
        assert_eq!(error.code, Code::TokenInvalid);
        assert_eq!(error.details["reason"], "unknown");
        let error = find_token("nope", stored.iter().copied(), |s| &s.sha256).unwrap_err();
        assert_eq!(error.details["reason"], "malformed");
        let none: Vec<Stored> = Vec::new();
        assert!(find_token(&tokens[0].0, &none, |s| &s.sha256).is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        let (token, _) = OperatorToken::generate();
        assert_eq!(parse_bearer(&bearer_header(&token)).unwrap(), token);
        assert_eq!(parse_bearer(&format!("bearer  {token} ")).unwrap(), token);
        assert_eq!(parse_bearer(&format!("BEARER\t{token}")).unwrap(), token);

        let cases = [
            ("", "empty"),
            (token.as_str(), "no scheme"),
            ("Bearer ", "no token"),
            ("Bearer", "no token"),
            ("Basic dXNlcjpwYXNz", "scheme is \"Basic\""),
            ("Bearer not-a-token", "64 hex"),
        ];
        for (value, says) in cases {
            let error = parse_bearer(value).unwrap_err();
            assert_eq!(error.code, Code::TokenInvalid, "{value:?}");
            assert_eq!(error.details["reason"], "malformed");
            assert!(error.message.contains(says), "{value:?}: {}", error.message);
        }
        let error = parse_bearer(&format!("Bearer {}", &token[..40])).unwrap_err();
        assert!(!error.message.contains(&token[..40]));
        assert_eq!(missing_bearer().details["reason"], "missing");
    }

    fn issue(node: &str, sans: &[&str]) -> IssuedJoinToken {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        issue_join_token(node, &sans, None, NOW, 0).unwrap()
    }

    #[test]
    fn join_token_format_and_record() {
        let pin = [7u8; 32];
        let issued = issue_join_token(
            "node-2",
            &[
                "10.0.0.2".into(),
                "Node-2.Example.org".into(),
                "node-2".into(),
            ],
            Some(pin),
            NOW,
            0,
        )
        .unwrap();
        let parts: Vec<&str> = issued.plaintext.split('.').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "jacojoin");
        assert_eq!(parts[1], issued.record.id);
        assert_eq!(parts[1].len(), 16);
        assert_eq!(parts[2].len(), 64);
        assert_eq!(parts[3], hex(&pin));
        assert_eq!(issued.record.sans, ["10.0.0.2", "node-2.example.org"]);
        assert_eq!(issued.record.expires_at_unix_ms, NOW + JOIN_TOKEN_TTL_MS);
        assert_eq!(issued.record.used_at_unix_ms, None);
        assert!(
            !issued
                .plaintext
                .contains(&hex(&issued.record.secret_sha256))
        );
        assert!(!format!("{issued:?}").contains(parts[2]));

        let parsed = parse_join_token(&issued.plaintext).unwrap();
        assert_eq!(parsed.id, issued.record.id);
        assert_eq!(parsed.secret_sha256, issued.record.secret_sha256);
        assert_eq!(parsed.ca_sha256, Some(pin));
        assert_eq!(
            parse_join_token(&issue("node-2", &[]).plaintext)
                .unwrap()
                .ca_sha256,
            None
        );
    }

    #[test]
    fn join_token_ttl_is_at_most_a_day() {
        let short = issue_join_token("n", &[], None, NOW, 60_000).unwrap();
        assert_eq!(short.record.expires_at_unix_ms, NOW + 60_000);
        let error = issue_join_token("n", &[], None, NOW, 25 * 3600 * 1000).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["field"], "ttl_ms");
        assert_eq!(
            issue_join_token("N!", &[], None, NOW, 0).unwrap_err().code,
            Code::ValidationFailed
        );
        assert_eq!(
            issue_join_token("n", &["bad san".into()], None, NOW, 0)
                .unwrap_err()
                .code,
            Code::ValidationFailed
        );
    }

    #[test]
    fn valid_join_token_passes_until_just_before_expiry() {
        let issued = issue("node-2", &[]);
        validate_join(&issued.plaintext, &issued.record, "node-2", NOW).unwrap();
        validate_join(
            &issued.plaintext,
            &issued.record,
            "node-2",
            NOW + JOIN_TOKEN_TTL_MS - 1,
        )
        .unwrap();
        // Whitespace from a copy-paste is tolerated.
        validate_join(
            &format!(" {}\n", issued.plaintext),
            &issued.record,
            "node-2",
            NOW,
        )
        .unwrap();
    }

    fn reason(result: Result<(), Error>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.code, Code::JoinTokenInvalid);
        error.details["reason"].clone()
    }

    #[test]
    fn expired_join_token_is_refused() {
        let issued = issue("node-2", &[]);
        let at_expiry = NOW + JOIN_TOKEN_TTL_MS;
        let error =
            validate_join(&issued.plaintext, &issued.record, "node-2", at_expiry).unwrap_err();
        assert_eq!(error.details["reason"], "expired");
        assert_eq!(error.details["expires_at_unix_ms"], at_expiry.to_string());
    }

    #[test]
    fn used_join_token_is_refused() {
        let mut issued = issue("node-2", &[]);
        validate_join(&issued.plaintext, &issued.record, "node-2", NOW).unwrap();
        issued.record.mark_used(NOW + 5);
        let error =
            validate_join(&issued.plaintext, &issued.record, "node-2", NOW + 10).unwrap_err();
        assert_eq!(error.details["reason"], "used");
        assert_eq!(error.details["used_at_unix_ms"], (NOW + 5).to_string());
    }

    #[test]
    fn join_token_for_another_node_is_out_of_scope() {
        let issued = issue("node-2", &[]);
        let error = validate_join(&issued.plaintext, &issued.record, "node-3", NOW).unwrap_err();
        assert_eq!(error.details["reason"], "scope");
        assert_eq!(error.details["token_node"], "node-2");
        assert_eq!(error.details["node"], "node-3");
    }

    #[test]
    fn wrong_secret_or_id_is_unknown_and_reveals_nothing() {
        let mut issued = issue("node-2", &[]);
        let other = issue("node-2", &[]);
        // Another token's plaintext against this record: unknown, even when this one is used.
        issued.record.mark_used(NOW);
        let error = validate_join(&other.plaintext, &issued.record, "node-9", NOW).unwrap_err();
        assert_eq!(error.details["reason"], "unknown");
        assert!(!error.details.contains_key("token_node"));
        // Right secret, wrong id.
        let forged = issued
            .plaintext
            .replacen(&issued.record.id, &other.record.id, 1);
        assert_eq!(
            reason(validate_join(&forged, &issued.record, "node-2", NOW)),
            "unknown"
        );
    }

    #[test]
    fn malformed_join_tokens_are_unknown() {
        let issued = issue("node-2", &[]);
        let secret = issued.plaintext.split('.').nth(2).unwrap().to_owned();
        for bad in [
            String::new(),
            "jacojoin".into(),
            format!("jacojoin.{}", issued.record.id),
            format!("other.{}.{secret}", issued.record.id),
            format!("jacojoin.{}.{}", issued.record.id, &secret[..10]),
            format!("{}.{}", issued.plaintext, "zz"),
            format!(
                "{}.{}.{}",
                issued.plaintext,
                "00".repeat(32),
                "00".repeat(32)
            ),
        ] {
            let error = validate_join(&bad, &issued.record, "node-2", NOW).unwrap_err();
            assert_eq!(error.details["reason"], "unknown", "{bad:?}");
            if !secret.is_empty() {
                assert!(!error.message.contains(&secret));
            }
        }
    }

    #[test]
    fn check_join_works_on_the_hash_a_raft_command_carries() {
        let issued = issue("node-2", &[]);
        let parsed = parse_join_token(&issued.plaintext).unwrap();
        check_join(&issued.record, &parsed.secret_sha256, "node-2", NOW).unwrap();
        assert_eq!(
            reason(check_join(&issued.record, &[0u8; 32], "node-2", NOW)),
            "unknown"
        );
    }
}
