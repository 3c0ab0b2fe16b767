//! The cluster certificate authority: an Ed25519 self-signed CA created at `cluster init`,
//! and the signing of node CSRs with only the names a join token approved.
//!
//! This module holds the CA key in memory and exports it as PEM for the caller to replicate or
//! store; it never writes files, never decides *who* may get a certificate (the join-token
//! check in [`super::tokens`] and the raft consume step do), and never copies anything from a
//! CSR into a certificate except the public key. The issued certificate's names are exactly
//! the node name plus the approved SANs.
//!
//! # Refusals
//! A CSR that asks for more than the token allows — a different common name, a SAN outside the
//! approved set, CA powers, key or extended key usages beyond TLS server/client, or an extension
//! jaco does not issue — is refused with `join_token_invalid`, `reason: scope`. That is the code
//! `docs/errors.md` assigns to "scoped to another node name or SANs": the fix is the same (issue
//! a token that approves exactly what the node needs). A CSR that cannot be parsed, has a bad
//! signature or uses a key type other than Ed25519 is malformed input, `validation_failed`.
//!
//! Signing is pure, so the leader should sign **before** it consumes the join token in raft and
//! return the certificate only once the consume is committed: a refused CSR then does not burn
//! the single-use token.

use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use super::{San, certificate_names, crypto_error, parse_san};
use crate::error::{Code, Error};

/// Validity of the cluster CA certificate (about ten years).
pub const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 3600);
/// Validity of a node certificate (one year).
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before the signing time, so that a joiner whose clock is
/// slightly behind the leader's does not reject a brand-new certificate as not yet valid.
pub const BACKDATE: Duration = Duration::from_secs(3600);
/// Organization name on every jaco certificate.
pub const ORGANIZATION: &str = "jaco";
/// Prefix of the CA's common name; the cluster id follows it.
pub const CA_COMMON_NAME_PREFIX: &str = "jaco cluster CA ";

/// The cluster CA: certificate and private key, both PEM.
///
/// `Debug` never prints the key.
#[derive(Clone)]
pub struct ClusterCa {
    cluster_id: String,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster_id", &self.cluster_id)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Creates a new CA for `cluster_id`, valid from now for [`CA_VALIDITY`].
    pub fn generate(cluster_id: &str) -> Result<Self, Error> {
        Self::generate_at(cluster_id, super::now_unix_ms())
    }

    /// Creates a new CA as if the clock read `now_unix_ms` (for tests and replays).
    pub fn generate_at(cluster_id: &str, now_unix_ms: i64) -> Result<Self, Error> {
        validate_cluster_id(cluster_id)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| crypto_error("generating the CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("{CA_COMMON_NAME_PREFIX}{cluster_id}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) = validity(now_unix_ms, CA_VALIDITY)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| crypto_error("self-signing the CA certificate", e))?;
        Ok(ClusterCa {
            cluster_id: cluster_id.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA exported with [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem).
    ///
    /// Checks that the certificate is a jaco CA, that the key is Ed25519 and that it belongs to
    /// the certificate; the cluster id is read back from the common name.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let invalid = |reason: &str, message: String| {
            Error::new(Code::Internal, message)
                .with("reason", reason)
                .with("field", "ca")
        };
        let der = super::first_cert_der(cert_pem, "CA certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
            invalid(
                "ca_unreadable",
                format!("the CA certificate does not parse: {e}"),
            )
        })?;
        if !cert.is_ca() {
            return Err(invalid(
                "ca_not_ca",
                "the CA certificate is not a CA certificate".into(),
            ));
        }
        let cluster_id = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .and_then(|cn| cn.strip_prefix(CA_COMMON_NAME_PREFIX))
            .ok_or_else(|| {
                invalid(
                    "ca_not_jaco",
                    "the CA certificate's common name does not name a jaco cluster".into(),
                )
            })?
            .to_owned();
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            invalid(
                "ca_key_unreadable",
                format!("the CA key does not parse: {e}"),
            )
        })?;
        if key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(invalid(
                "ca_key_type",
                "the CA key is not an Ed25519 key".into(),
            ));
        }
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(invalid(
                "ca_key_mismatch",
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        Ok(ClusterCa {
            cluster_id,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The cluster id the CA was created for.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The CA certificate, PEM. Public: handed to joiners and CLIs (`--ca-cert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Secret: whoever holds it can mint node identities.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of the CA certificate's DER, the pin a join token may carry.
    pub fn fingerprint(&self) -> [u8; 32] {
        super::cert_fingerprint(&self.cert_pem).expect("a loaded CA certificate is valid PEM")
    }

    /// Signs a node's CSR, returning the node certificate as PEM.
    ///
    /// The certificate carries common name `node_name`, DNS SAN `node_name` plus
    /// `approved_sans` (DNS names or IP addresses), both the serverAuth and clientAuth extended
    /// key usages, and is valid for [`NODE_CERT_VALIDITY`] from `now_unix_ms` (backdated by
    /// [`BACKDATE`]). Only the CSR's public key is used; a CSR asking for anything beyond these
    /// names and usages is refused (see the module docs for the codes).
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        node_name: &str,
        approved_sans: &[String],
        now_unix_ms: i64,
    ) -> Result<String, Error> {
        let allowed = certificate_names(node_name, approved_sans)?;

        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::UnsupportedExtension => scope_error(
                node_name,
                "the CSR requests an extension jaco does not issue",
            ),
            other => Error::new(
                Code::ValidationFailed,
                format!("the certificate signing request is not valid: {other}"),
            )
            .with("field", "csr_pem")
            .with("node", node_name),
        })?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(Error::new(
                Code::ValidationFailed,
                "the certificate signing request must be for an Ed25519 key",
            )
            .with("field", "csr_pem")
            .with("node", node_name));
        }
        check_requested(&csr.params, node_name, &allowed)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params.subject_alt_names = allowed
            .iter()
            .map(San::to_rcgen)
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) = validity(now_unix_ms, NODE_CERT_VALIDITY)?;

        let issuer = self.issuer()?;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(|e| crypto_error("signing the node certificate", e))?;
        Ok(cert.pem())
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Error> {
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| crypto_error("reading the CA key", e))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key)
            .map_err(|e| crypto_error("reading the CA certificate", e))
    }
}

/// Refuses a CSR that asks for more than the node name, the approved SANs and TLS usages.
fn check_requested(
    requested: &CertificateParams,
    node_name: &str,
    allowed: &[San],
) -> Result<(), Error> {
    for (ty, value) in requested.distinguished_name.iter() {
        let text = match value {
            DnValue::PrintableString(s) => s.as_str().to_owned(),
            DnValue::Utf8String(s) => s.clone(),
            DnValue::Ia5String(s) => s.as_str().to_owned(),
            _ => String::new(),
        };
        if *ty != DnType::CommonName || text != node_name {
            return Err(scope_error(
                node_name,
                "the CSR's subject names something other than this node",
            )
            .with("subject", text));
        }
    }
    for san in &requested.subject_alt_names {
        let wanted = match san {
            SanType::DnsName(name) => parse_san(name.as_str()).ok(),
            SanType::IpAddress(ip) => Some(San::Ip(*ip)),
            _ => None,
        };
        match wanted {
            Some(wanted) if allowed.contains(&wanted) => {}
            _ => {
                return Err(scope_error(
                    node_name,
                    format!("the join token does not approve the SAN {}", san_text(san)),
                )
                .with("san", san_text(san)));
            }
        }
    }
    if !matches!(requested.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(scope_error(node_name, "the CSR asks for a CA certificate"));
    }
    if requested
        .key_usages
        .iter()
        .any(|usage| *usage != KeyUsagePurpose::DigitalSignature)
    {
        return Err(scope_error(
            node_name,
            "the CSR asks for key usages beyond digital signatures",
        ));
    }
    if requested.extended_key_usages.iter().any(|usage| {
        !matches!(
            usage,
            ExtendedKeyUsagePurpose::ServerAuth | ExtendedKeyUsagePurpose::ClientAuth
        )
    }) {
        return Err(scope_error(
            node_name,
            "the CSR asks for extended key usages beyond TLS server and client",
        ));
    }
    Ok(())
}

fn san_text(san: &SanType) -> String {
    match san {
        SanType::DnsName(name) => name.as_str().to_owned(),
        SanType::IpAddress(ip) => ip.to_string(),
        SanType::Rfc822Name(name) => format!("email:{}", name.as_str()),
        SanType::URI(uri) => format!("uri:{}", uri.as_str()),
        _ => "a SAN of another kind".to_owned(),
    }
}

fn scope_error(node_name: &str, message: impl Into<String>) -> Error {
    Error::new(Code::JoinTokenInvalid, message)
        .with("reason", "scope")
        .with("node", node_name)
}

/// A cluster id is printed in the CA's common name and in logs: keep it to a safe alphabet.
fn validate_cluster_id(cluster_id: &str) -> Result<(), Error> {
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= 64
        && cluster_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Code::ValidationFailed,
            format!("cluster id {cluster_id:?} must be 1-64 characters of letters, digits, '-', '_', '.'"),
        )
        .with("field", "cluster_id"))
    }
}

fn validity(
    now_unix_ms: i64,
    lifetime: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), Error> {
    let start = super::system_time(now_unix_ms) - BACKDATE;
    let end = start + BACKDATE + lifetime;
    Ok((offset_date_time(start)?, offset_date_time(end)?))
}

fn offset_date_time(at: std::time::SystemTime) -> Result<OffsetDateTime, Error> {
    let secs = at
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|e| crypto_error("converting a certificate date", e))
}

/// A random, positive, 16-byte serial number (RFC 5280 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[..]);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::X509Certificate;

    use super::*;
    use crate::pki::node::NodeKey;

    const NOW: i64 = 1_800_000_000_000;

    fn parse(pem: &str) -> Vec<u8> {
        crate::pki::first_cert_der(pem, "certificate")
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn common_name<'a>(cert: &'a X509Certificate<'_>) -> &'a str {
        let cn = cert.subject().iter_common_name().next().unwrap();
        cn.as_str().unwrap()
    }

    fn sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
        cert.subject_alternative_name()
            .unwrap()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .map(|name| match name {
                        GeneralName::DNSName(dns) => dns.to_string(),
                        GeneralName::IPAddress(bytes) => match bytes.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()).to_string(),
                            _ => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()).to_string(),
                        },
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn csr(node: &str, sans: &[&str]) -> (NodeKey, String) {
        let key = NodeKey::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let csr = key.csr(node, &sans).unwrap();
        (key, csr)
    }

    /// The refusal of an out-of-scope CSR: `join_token_invalid`, `reason: scope`.
    fn out_of_scope(result: Result<String, Error>) -> Error {
        let error = result.unwrap_err();
        assert_eq!(error.code, Code::JoinTokenInvalid, "{error:?}");
        assert_eq!(error.details["reason"], "scope");
        error
    }

    #[test]
    fn ca_is_an_ed25519_ca_named_after_the_cluster() {
        let ca = ClusterCa::generate_at("c-42", NOW).unwrap();
        assert_eq!(ca.cluster_id(), "c-42");
        let der = parse(ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(common_name(&cert), "jaco cluster CA c-42");
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ED25519
        );
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!(lifetime > 10 * 365 * 24 * 3600, "{lifetime}");
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn ca_survives_pem_export_and_import() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let back = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(back.cluster_id(), "c-1");
        assert_eq!(back.fingerprint(), ca.fingerprint());
        let (_, csr) = csr("node-1", &[]);
        back.sign_node_csr(&csr, "node-1", &[], NOW).unwrap();

        let other = ClusterCa::generate_at("c-2", NOW).unwrap();
        let error = ClusterCa::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
        assert_eq!(error.details["reason"], "ca_key_mismatch");
    }

    #[test]
    fn bad_cluster_ids_are_refused() {
        for bad in ["", "has space", "x\ny", &"a".repeat(65)] {
            let error = ClusterCa::generate_at(bad, NOW).unwrap_err();
            assert_eq!(error.code, Code::ValidationFailed);
        }
    }

    #[test]
    fn signed_cert_carries_node_name_approved_sans_and_both_usages() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let (_, csr) = csr("node-2", &["10.0.0.2"]);
        let approved = vec!["10.0.0.2".to_string(), "Node-2.Example.org".to_string()];
        let pem = ca.sign_node_csr(&csr, "node-2", &approved, NOW).unwrap();
        let der = parse(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(common_name(&cert), "node-2");
        assert_eq!(sans_of(&cert), ["node-2", "10.0.0.2", "node-2.example.org"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any && !eku.code_signing);
        let issuer_der = parse(ca.cert_pem());
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
        cert.verify_signature(Some(issuer.public_key())).unwrap();
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, (NODE_CERT_VALIDITY + BACKDATE).as_secs() as i64);
        assert_eq!(
            cert.validity().not_before.timestamp(),
            NOW / 1000 - BACKDATE.as_secs() as i64
        );
    }

    #[test]
    fn csr_asking_for_fewer_names_gets_exactly_the_approved_ones() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let (_, csr) = csr("node-3", &[]);
        let approved = vec!["192.168.1.3".to_string()];
        let pem = ca.sign_node_csr(&csr, "node-3", &approved, NOW).unwrap();
        let der = parse(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(sans_of(&cert), ["node-3", "192.168.1.3"]);
    }

    #[test]
    fn csr_asking_for_an_unapproved_san_is_refused_as_out_of_scope() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let (_, csr) = csr("node-4", &["10.0.0.4", "evil.example.org"]);
        let error = out_of_scope(ca.sign_node_csr(&csr, "node-4", &["10.0.0.4".to_string()], NOW));
        assert_eq!(error.details["san"], "evil.example.org");
    }

    #[test]
    fn csr_for_another_node_name_is_refused() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let (_, csr) = csr("node-5", &[]);
        let error = out_of_scope(ca.sign_node_csr(&csr, "node-6", &[], NOW));
        assert_eq!(error.details["subject"], "node-5");
    }

    #[test]
    fn csr_asking_for_ca_powers_or_other_usages_is_refused() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();

        let mut wants_ca = CertificateParams::new(vec!["node-7".to_string()]).unwrap();
        wants_ca.distinguished_name = DistinguishedName::new();
        wants_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = wants_ca.serialize_request(&key).unwrap().pem().unwrap();
        let error = out_of_scope(ca.sign_node_csr(&csr, "node-7", &[], NOW));
        assert!(error.message.contains("CA"), "{}", error.message);

        let mut wants_code_signing = CertificateParams::new(vec!["node-7".to_string()]).unwrap();
        wants_code_signing.distinguished_name = DistinguishedName::new();
        wants_code_signing.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let csr = wants_code_signing
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        out_of_scope(ca.sign_node_csr(&csr, "node-7", &[], NOW));
    }

    #[test]
    fn malformed_or_non_ed25519_csrs_are_validation_errors() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let error = ca.sign_node_csr("garbage", "node-8", &[], NOW).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert_eq!(error.details["field"], "csr_pem");

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["node-8".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let error = ca.sign_node_csr(&csr, "node-8", &[], NOW).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        assert!(error.message.contains("Ed25519"));
    }

    #[test]
    fn invalid_approved_sans_or_node_names_are_validation_errors() {
        let ca = ClusterCa::generate_at("c-1", NOW).unwrap();
        let (_, csr) = csr("node-9", &[]);
        let error = ca
            .sign_node_csr(&csr, "node-9", &["bad name".to_string()], NOW)
            .unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
        let error = ca.sign_node_csr(&csr, "Node_9", &[], NOW).unwrap_err();
        assert_eq!(error.code, Code::ValidationFailed);
    }
}
