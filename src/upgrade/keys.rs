//! The minisign keys of upgrades: the public keys a node trusts (`/usr/lib/jaco/keys/*.pub`)
//! and the secret key a release is signed with.
//!
//! Role: load keys, sign manifest bytes, and verify a manifest signature against the trusted
//! set — any one trusted key that verifies suffices, which is what makes key rotation work (a
//! release signed by the old key ships the new key's `.pub`). It must not parse the manifest,
//! nor accept a signature from a key outside the set.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use minisign::{PublicKey, PublicKeyBox, SecretKey, SignatureBox};

use super::{io_failed, verification_failed};
use crate::error::{Code, Error};

/// Where the appliance image installs its trusted keys.
pub const DEFAULT_KEYS_DIR: &str = "/usr/lib/jaco/keys";

/// The public keys a node trusts, with the file each came from.
#[derive(Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<(PathBuf, PublicKey)>,
}

impl TrustedKeys {
    /// Every `*.pub` file of `dir` (minisign public key files). `upgrade_verification_failed`
    /// (`reason: no_trusted_key`) when the directory holds none: a node without keys can
    /// verify nothing.
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_failed("read", dir, &e)),
        };
        paths.sort();
        let mut keys = TrustedKeys::default();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| io_failed("read", &path, &e))?;
            keys.add(&path, &text)?;
        }
        if keys.keys.is_empty() {
            return Err(verification_failed(
                "no_trusted_key",
                format!("no trusted upgrade key (*.pub) in {}", dir.display()),
            )
            .with("keys_dir", dir.display()));
        }
        Ok(keys)
    }

    /// Adds a public key given as a minisign `.pub` file's text (`path` names it in messages).
    pub fn add(&mut self, path: &Path, text: &str) -> Result<(), Error> {
        let key = PublicKeyBox::from_string(text)
            .and_then(PublicKeyBox::into_public_key)
            .map_err(|e| {
                Error::new(
                    Code::ValidationFailed,
                    format!("{} is not a minisign public key: {e}", path.display()),
                )
                .with("path", path.display())
            })?;
        self.keys.push((path.to_owned(), key));
        Ok(())
    }

    /// Checks `signature` (a `.minisig` file's text) over `data` against every trusted key;
    /// returns the file of the key that verified. `upgrade_verification_failed` with reason
    /// `signature_malformed`, `untrusted_key` (signed by a key outside the set) or
    /// `signature_invalid`.
    pub fn verify(&self, data: &[u8], signature: &str) -> Result<&Path, Error> {
        let signature = SignatureBox::from_string(signature).map_err(|e| {
            verification_failed(
                "signature_malformed",
                format!("manifest.json.minisig is not a minisign signature: {e}"),
            )
        })?;
        let signer = signature.keynum().to_vec();
        let mut matching = self
            .keys
            .iter()
            .filter(|(_, key)| key.keynum() == signer.as_slice())
            .peekable();
        if matching.peek().is_none() {
            return Err(verification_failed(
                "untrusted_key",
                format!(
                    "the manifest is signed by key {}, which this node does not trust",
                    crate::pki::hex(&signer)
                ),
            ));
        }
        for (path, key) in matching {
            if minisign::verify(key, &signature, Cursor::new(data), true, false, false).is_ok() {
                return Ok(path);
            }
        }
        Err(verification_failed(
            "signature_invalid",
            "the manifest's signature does not verify: the manifest was altered or the \
             signature belongs to other content",
        ))
    }
}

/// A release signing key loaded from a minisign secret key file. An encrypted key takes its
/// password from `password` (the CLI reads it from a file or the environment, never argv).
pub fn load_secret_key(path: &Path, password: Option<String>) -> Result<SecretKey, Error> {
    let unusable = |e: &dyn std::fmt::Display| {
        Error::new(
            Code::ValidationFailed,
            format!(
                "cannot use {} as a minisign secret key: {e}",
                path.display()
            ),
        )
        .with("field", "key")
        .with("path", path.display())
    };
    let text = std::fs::read_to_string(path).map_err(|e| unusable(&e))?;
    let boxed = minisign::SecretKeyBox::from_string(&text).map_err(|e| unusable(&e))?;
    match password {
        // A key made without a password (`minisign -G -W`, the CI test key).
        None => boxed.into_unencrypted_secret_key(),
        Some(password) => boxed.into_secret_key(Some(password)),
    }
    .map_err(|e| unusable(&e))
}

/// A new key pair as minisign files' text: (secret key, public key). With a password the
/// secret key is encrypted (scrypt), as release keys should be; without, it is stored in the
/// clear (test keys only).
pub fn generate(password: Option<String>, comment: &str) -> Result<(String, String), Error> {
    let failed = |e: minisign::PError| {
        Error::new(Code::Internal, format!("generating a key pair failed: {e}"))
            .with("reason", "keygen_failed")
    };
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(failed)?;
    let secret = pair.sk.to_box(Some(comment)).map_err(failed)?.into_string();
    let public = pair.pk.to_box().map_err(failed)?.into_string();
    Ok((secret, public))
}

/// Signs `data`; returns the `.minisig` text.
pub fn sign(key: &SecretKey, data: &[u8], trusted_comment: &str) -> Result<String, Error> {
    minisign::sign(None, key, Cursor::new(data), Some(trusted_comment), None)
        .map(|signature| signature.into_string())
        .map_err(|e| {
            Error::new(Code::Internal, format!("signing the manifest failed: {e}"))
                .with("reason", "sign_failed")
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use minisign::KeyPair;

    /// A fresh unencrypted key pair: (secret key, public key file text).
    pub(crate) fn key_pair() -> (SecretKey, String) {
        let pair = KeyPair::generate_unencrypted_keypair().unwrap();
        let public = pair.pk.to_box().unwrap().into_string();
        (pair.sk, public)
    }

    fn trusting(publics: &[&str]) -> TrustedKeys {
        let mut keys = TrustedKeys::default();
        for (i, text) in publics.iter().enumerate() {
            keys.add(Path::new(&format!("k{i}.pub")), text).unwrap();
        }
        keys
    }

    #[test]
    fn any_trusted_key_that_signed_verifies() {
        let (old_sk, old_pub) = key_pair();
        let (new_sk, new_pub) = key_pair();
        let keys = trusting(&[&old_pub, &new_pub]);
        let data = b"{\"version\":\"1.0.0\"}";
        for (sk, expected) in [(&old_sk, "k0.pub"), (&new_sk, "k1.pub")] {
            let signature = sign(sk, data, "test").unwrap();
            assert_eq!(keys.verify(data, &signature).unwrap(), Path::new(expected));
        }
    }

    #[test]
    fn altered_data_foreign_keys_and_garbage_are_refused_with_their_reason() {
        let (sk, public) = key_pair();
        let (other_sk, _) = key_pair();
        let keys = trusting(&[&public]);
        let data = b"manifest";
        let signature = sign(&sk, data, "test").unwrap();
        let cases = [
            (keys.verify(b"manifesT", &signature), "signature_invalid"),
            (
                keys.verify(data, &sign(&other_sk, data, "t").unwrap()),
                "untrusted_key",
            ),
            (keys.verify(data, "not a signature"), "signature_malformed"),
        ];
        for (result, reason) in cases {
            let error = result.unwrap_err();
            assert_eq!(error.code, Code::UpgradeVerificationFailed);
            assert_eq!(error.details["reason"], reason);
        }
    }

    #[test]
    fn generated_key_files_load_and_sign_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        for password in [None, Some("correct horse".to_owned())] {
            let (secret, public) = generate(password.clone(), "test key").unwrap();
            let path = dir.path().join("k.key");
            std::fs::write(&path, secret).unwrap();
            let key = load_secret_key(&path, password.clone()).unwrap();
            let signature = sign(&key, b"data", "t").unwrap();
            let keys = trusting(&[&public]);
            assert!(keys.verify(b"data", &signature).is_ok());
            if password.is_some() {
                let error = load_secret_key(&path, Some("wrong".into())).unwrap_err();
                assert_eq!(error.code, Code::ValidationFailed);
            }
        }
    }

    #[test]
    fn a_key_directory_without_public_keys_trusts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README"), "no keys here").unwrap();
        let error = TrustedKeys::load_dir(dir.path()).unwrap_err();
        assert_eq!(error.details["reason"], "no_trusted_key");
        let (_, public) = key_pair();
        std::fs::write(dir.path().join("release.pub"), public).unwrap();
        assert!(TrustedKeys::load_dir(dir.path()).is_ok());
    }
}
