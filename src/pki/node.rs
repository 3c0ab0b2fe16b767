//! A node's own credentials: its Ed25519 key, the CSR it sends when joining, and the identity
//! (key + node certificate + cluster CA certificate) it keeps under `<data_dir>/pki/`.
//!
//! The node key is generated on the node and never leaves it: nothing here serialises it
//! anywhere but `node.key` (mode 0600), and `Debug` output redacts it. This module does not
//! talk to peers or decide whether a certificate should be issued; it only checks that the
//! pieces it is given fit together (the key matches the certificate, the certificate chains to
//! the CA and names the node with both TLS usages).
//!
//! # Files
//! | file | content | mode |
//! |---|---|---|
//! | `<data_dir>/pki/` | directory | 0700 |
//! | `ca.crt` | cluster CA certificate, PEM | 0644 |
//! | `node.crt` | this node's certificate, PEM | 0644 |
//! | `node.key` | this node's Ed25519 key, PKCS#8 PEM | 0600 |
//!
//! Each file is written atomically (temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new file. The three files
//! are not replaced as one unit; [`NodeIdentity::load`] therefore checks that they fit together
//! and refuses a mixed set instead of serving a certificate that does not match its key.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};

use super::{San, certificate_names, crypto_error};
use crate::error::{Code, Error};

/// Directory under the data dir that holds the node identity.
pub const PKI_DIR: &str = "pki";
/// CA certificate file name (the path later issues and scripts rely on: `<data_dir>/pki/ca.crt`).
pub const CA_FILE: &str = "ca.crt";
/// Node certificate file name.
pub const CERT_FILE: &str = "node.crt";
/// Node key file name.
pub const KEY_FILE: &str = "node.key";

/// A node's Ed25519 private key, PKCS#8 PEM. `Debug` never prints it.
#[derive(Clone)]
pub struct NodeKey {
    pem: String,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    /// Generates a fresh Ed25519 key.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| crypto_error("generating the node key", e))?;
        Ok(NodeKey {
            pem: key.serialize_pem(),
        })
    }

    /// Reads a key written by [`pem`](Self::pem); only Ed25519 keys are accepted.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let key = key_pair(pem)?;
        Ok(NodeKey {
            pem: key.serialize_pem(),
        })
    }

    /// The key as PKCS#8 PEM. Secret: only [`NodeIdentity::save`] should write it anywhere.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A PKCS#10 CSR, PEM, for `node_name` with DNS SAN `node_name` plus `sans`.
    ///
    /// The CSR asks for nothing else (no key usages, no CA powers); the CA decides the rest.
    pub fn csr(&self, node_name: &str, sans: &[String]) -> Result<String, Error> {
        let names = certificate_names(node_name, sans)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params.subject_alt_names = names.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
        let key = key_pair(&self.pem)?;
        params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| crypto_error("building the CSR", e))
    }
}

fn key_pair(pem: &str) -> Result<KeyPair, Error> {
    let key = KeyPair::from_pem(pem).map_err(|e| {
        Error::new(Code::Internal, format!("the node key does not parse: {e}"))
            .with("reason", "node_key_unreadable")
    })?;
    if key.algorithm() != &rcgen::PKCS_ED25519 {
        return Err(
            Error::new(Code::Internal, "the node key is not an Ed25519 key")
                .with("reason", "node_key_type"),
        );
    }
    Ok(key)
}

/// Everything a node needs for TLS: its key, its certificate and the cluster CA certificate.
///
/// `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's Ed25519 key, PKCS#8 PEM. Never leaves the node.
    pub key_pem: String,
    /// The node certificate signed by the cluster CA, PEM.
    pub cert_pem: String,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("key_pem", &"<redacted>")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

impl NodeIdentity {
    /// `<data_dir>/pki`.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(PKI_DIR)
    }

    /// Checks that the pieces fit and returns the node name.
    ///
    /// The key must be Ed25519 and belong to the certificate; the certificate must chain to
    /// the CA, be valid at `now_unix_ms`, and be usable both as a TLS server certificate for
    /// its node name and as a TLS client certificate. A joiner runs this on the certificate the
    /// leader returned before it saves anything.
    pub fn verify(&self, now_unix_ms: i64) -> Result<String, Error> {
        let mismatch = |reason: &str, message: String| {
            Error::new(Code::Internal, message).with("reason", reason)
        };
        let node_name = super::tls::cert_node_name(&self.cert_pem)?;
        let key = key_pair(&self.key_pem)?;
        let leaf = super::first_cert_der(&self.cert_pem, "node certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
            mismatch(
                "node_cert_unreadable",
                format!("the node certificate does not parse: {e}"),
            )
        })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(mismatch(
                "node_key_mismatch",
                "the node key does not belong to the node certificate".into(),
            ));
        }
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| crypto_error("reading the node key for TLS", e))?;

        let provider = super::tls::provider();
        let roots = super::tls::root_store(&self.ca_pem)?;
        let now = UnixTime::since_unix_epoch(Duration::from_millis(
            u64::try_from(now_unix_ms).unwrap_or(0),
        ));
        let server_name = ServerName::try_from(node_name.clone())
            .map_err(|e| crypto_error("turning the node name into a server name", e))?;
        let untrusted = |e: rustls::Error, usage: &str| {
            mismatch(
                "node_cert_untrusted",
                format!("the node certificate is not valid for {usage} under the cluster CA: {e}"),
            )
        };
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| crypto_error("building a certificate verifier", e))?
        .verify_server_cert(&leaf, &[], &server_name, &[], now)
        .map_err(|e| untrusted(e, "TLS servers"))?;
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| crypto_error("building a certificate verifier", e))?
            .verify_client_cert(&leaf, &[], now)
            .map_err(|e| untrusted(e, "TLS clients"))?;
        Ok(node_name)
    }

    /// Loads the identity from `<data_dir>/pki/`.
    ///
    /// `Ok(None)` when none of the three files exists (a node that has not initialised or
    /// joined). A partial set, a key file readable by group or others, or files that do not
    /// fit together (see [`verify`](Self::verify); expiry is not checked here) are errors.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, Error> {
        let dir = Self::dir(data_dir);
        let read = |name: &str| -> Result<Option<String>, Error> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error("reading", &path, e)),
            }
        };
        let (key, cert, ca) = (read(KEY_FILE)?, read(CERT_FILE)?, read(CA_FILE)?);
        let (key_pem, cert_pem, ca_pem) = match (key, cert, ca) {
            (None, None, None) => return Ok(None),
            (Some(key), Some(cert), Some(ca)) => (key, cert, ca),
            (key, cert, ca) => {
                let missing: Vec<&str> = [(KEY_FILE, key), (CERT_FILE, cert), (CA_FILE, ca)]
                    .into_iter()
                    .filter(|(_, content)| content.is_none())
                    .map(|(name, _)| name)
                    .collect();
                return Err(Error::new(
                    Code::Internal,
                    format!(
                        "the node identity in {} is incomplete: {} missing",
                        dir.display(),
                        missing.join(", ")
                    ),
                )
                .with("reason", "identity_incomplete")
                .with("path", dir.display()));
            }
        };
        let key_path = dir.join(KEY_FILE);
        let mode = fs::metadata(&key_path)
            .map_err(|e| io_error("inspecting", &key_path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "{} is readable by other users (mode {:o}); it must be 0600",
                    key_path.display(),
                    mode & 0o777
                ),
            )
            .with("reason", "key_permissions")
            .with("path", key_path.display()));
        }
        let identity = NodeIdentity {
            key_pem,
            cert_pem,
            ca_pem,
        };
        // Expiry is the caller's concern (rotation); only the fit is checked here.
        let not_before = super::tls::cert_not_before_unix_ms(&identity.cert_pem)?;
        identity
            .verify(not_before)
            .map_err(|e| e.with("path", dir.display()))?;
        Ok(Some(identity))
    }

    /// Writes the identity to `<data_dir>/pki/` (directory 0700, `node.key` 0600, certificates
    /// 0644), each file atomically. The key is written first and the CA last.
    pub fn save(&self, data_dir: &Path) -> Result<(), Error> {
        let dir = Self::dir(data_dir);
        fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("restricting", &dir, e))?;
        write_atomic(&dir, KEY_FILE, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir, CERT_FILE, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&dir, CA_FILE, self.ca_pem.as_bytes(), 0o644)?;
        Ok(())
    }
}

/// Writes `dir/name` atomically with `mode`: temp file + fsync + rename + directory fsync.
fn write_atomic(dir: &Path, name: &str, content: &[u8], mode: u32) -> Result<(), Error> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("removing", &temp, e)),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The process umask may have narrowed the mode; make it exact.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error("writing", &path, e)
    })
}

fn io_error(action: &str, path: &Path, error: io::Error) -> Error {
    Error::new(
        Code::Internal,
        format!("{action} {}: {error}", path.display()),
    )
    .with("reason", "pki_io")
    .with("path", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ca::ClusterCa;

    const NOW: i64 = 1_800_000_000_000;

    fn identity(ca: &ClusterCa, node: &str, sans: &[&str]) -> NodeIdentity {
        crate::pki::testing::identity(ca, node, sans, NOW)
    }

    #[test]
    fn key_is_ed25519_and_debug_redacts_it() {
        let key = NodeKey::generate().unwrap();
        assert!(key.pem().contains("BEGIN PRIVATE KEY"));
        assert_eq!(format!("{key:?}"), "NodeKey(<redacted>)");
        let again = NodeKey::from_pem(key.pem()).unwrap();
        assert_eq!(again.pem(), key.pem());
        let ca = ClusterCa::generate_at("c", NOW).unwrap();
        let id = identity(&ca, "node-1", &[]);
        assert!(!format!("{id:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn csr_names_the_node_and_its_sans() {
        let key = NodeKey::generate().unwrap();
        let csr = key.csr("node-1", &["10.1.2.3".into()]).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert_eq!(
            parsed.params.subject_alt_names,
            vec![
                rcgen::SanType::DnsName("node-1".try_into().unwrap()),
                rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap())
            ]
        );
        assert!(parsed.params.key_usages.is_empty());
        assert!(key.csr("Bad_Name", &[]).is_err());
    }

    #[test]
    fn verify_accepts_a_matching_identity_and_names_the_node() {
        let ca = ClusterCa::generate_at("c", NOW).unwrap();
        let id = identity(&ca, "node-1", &["10.0.0.1"]);
        assert_eq!(id.verify(NOW).unwrap(), "node-1");
    }

    #[test]
    fn verify_refuses_a_foreign_key_or_ca() {
        let ca = ClusterCa::generate_at("c", NOW).unwrap();
        let id = identity(&ca, "node-1", &[]);

        let other_key = NodeIdentity {
            key_pem: NodeKey::generate().unwrap().pem().to_owned(),
            ..id.clone()
        };
        assert_eq!(
            other_key.verify(NOW).unwrap_err().details["reason"],
            "node_key_mismatch"
        );

        let other_ca = ClusterCa::generate_at("c2", NOW).unwrap();
        let foreign = NodeIdentity {
            ca_pem: other_ca.cert_pem().to_owned(),
            ..id.clone()
        };
        assert_eq!(
            foreign.verify(NOW).unwrap_err().details["reason"],
            "node_cert_untrusted"
        );

        // Two years later the certificate has expired.
        let later = NOW + 2 * 365 * 24 * 3600 * 1000;
        assert_eq!(
            id.verify(later).unwrap_err().details["reason"],
            "node_cert_untrusted"
        );
    }

    #[test]
    fn save_and_load_round_trip_with_restrictive_modes() {
        let data = tempfile::tempdir().unwrap();
        assert_eq!(NodeIdentity::load(data.path()).unwrap(), None);

        let ca = ClusterCa::generate_at("c", NOW).unwrap();
        let id = identity(&ca, "node-1", &[]);
        id.save(data.path()).unwrap();
        let dir = data.path().join("pki");
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
        assert_eq!(mode(CA_FILE), 0o644);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            ca.cert_pem()
        );
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        assert_eq!(NodeIdentity::load(data.path()).unwrap(), Some(id.clone()));

        // Saving again replaces the files in place.
        let renewed = identity(&ca, "node-1", &["10.0.0.9"]);
        renewed.save(data.path()).unwrap();
        assert_eq!(NodeIdentity::load(data.path()).unwrap(), Some(renewed));
        assert_eq!(mode(KEY_FILE), 0o600);
    }

    #[test]
    fn load_refuses_partial_sets_and_loose_key_permissions() {
        let data = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate_at("c", NOW).unwrap();
        identity(&ca, "node-1", &[]).save(data.path()).unwrap();
        let dir = data.path().join("pki");

        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let error = NodeIdentity::load(data.path()).unwrap_err();
        assert_eq!(error.details["reason"], "key_permissions");

        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        let error = NodeIdentity::load(data.path()).unwrap_err();
        assert_eq!(error.details["reason"], "identity_incomplete");
        assert!(error.message.contains("node.crt"), "{}", error.message);
    }

    #[test]
    fn load_refuses_a_mixed_set() {
        let data = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate_at("c", NOW).unwrap();
        identity(&ca, "node-1", &[]).save(data.path()).unwrap();
        let other = identity(&ca, "node-1", &[]);
        fs::write(data.path().join("pki").join(CERT_FILE), &other.cert_pem).unwrap();
        let error = NodeIdentity::load(data.path()).unwrap_err();
        assert_eq!(error.details["reason"], "node_key_mismatch");
    }
}
