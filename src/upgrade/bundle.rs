//! The bundle file `jaco-<version>-<arch>.bundle` (SPEC §9.2): a tar archive whose first entry is
//! `manifest.json`, second `manifest.json.minisig`, then the payload files the manifest lists.
//!
//! Role: write a signed bundle ([`create`]), and read one in a single streaming pass that checks
//! the signature over the manifest before anything else and every file's size and SHA-256 while
//! the file is read ([`verify`], [`extract`]). Every problem with a bundle's content is
//! `upgrade_verification_failed` with a `reason` detail.
//!
//! An installer calls [`verify`] first (it writes nothing) and only then [`extract`] into the
//! target, which re-checks everything and compares the manifest's hash with the verified one, so
//! a bundle replaced between the passes is still refused (its partial output is never made
//! bootable by the installer). This module must not decide versions or write slots.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write as _};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::keys::{TrustedKeys, sign};
use super::manifest::{FileEntry, MAX_MANIFEST_BYTES, Manifest};
use super::{io_failed, verification_failed};
use crate::error::{Code, Error};

/// The manifest's entry name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's entry name.
pub const SIGNATURE_FILE: &str = "manifest.json.minisig";
/// Largest signature file a node reads.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// A bundle whose signature and files verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// Lowercase hex SHA-256 of the manifest's bytes (identifies the release).
    pub manifest_sha256: String,
    /// The trusted key file that verified the signature.
    pub signed_by: PathBuf,
}

/// The conventional file name of a bundle.
pub fn file_name(version: &str, arch: &str) -> String {
    format!("jaco-{version}-{arch}.bundle")
}

/// Writes a bundle to `out` (through a temporary file renamed into place): hashes `files`
/// (`(name in the bundle, path)`) into `manifest` (which names no files yet), signs it with
/// `key` and archives all.
pub fn create(
    out: &Path,
    mut manifest: Manifest,
    files: &[(String, PathBuf)],
    key: &minisign::SecretKey,
) -> Result<Manifest, Error> {
    let (version, arch) = (manifest.version.clone(), manifest.arch.clone());
    for (name, path) in files {
        let mut reader =
            HashingReader::new(File::open(path).map_err(|e| io_failed("open", path, &e))?);
        io::copy(&mut reader, &mut io::sink()).map_err(|e| io_failed("read", path, &e))?;
        let (sha256, size) = reader.finish();
        manifest
            .files
            .insert(name.clone(), FileEntry { sha256, size });
    }
    manifest
        .check()
        .map_err(|e| Error::new(Code::ValidationFailed, e.message))?;
    let manifest_bytes = manifest.to_bytes();
    let signature = sign(key, &manifest_bytes, &format!("jaco {version} {arch}"))?;

    let partial = out.with_extension("bundle.partial");
    let result = (|| -> io::Result<()> {
        let mut builder = tar::Builder::new(io::BufWriter::new(File::create(&partial)?));
        append_bytes(&mut builder, MANIFEST_FILE, &manifest_bytes)?;
        append_bytes(&mut builder, SIGNATURE_FILE, signature.as_bytes())?;
        for (name, path) in files {
            let mut file = File::open(path)?;
            let mut header = header_for(file.metadata()?.len());
            builder.append_data(&mut header, name, &mut file)?;
        }
        let mut writer = builder.into_inner()?;
        writer.flush()?;
        writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&partial, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(io_failed("write", out, &e));
    }
    Ok(manifest)
}

fn header_for(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut header = header_for(bytes.len() as u64);
    builder.append_data(&mut header, name, bytes)
}

/// Checks a bundle end to end without writing anything.
pub fn verify(path: &Path, keys: &TrustedKeys) -> Result<Verified, Error> {
    walk(path, keys, &mut |_, reader| {
        io::copy(reader, &mut io::sink())
            .map(drop)
            .map_err(|e| io_failed("read", path, &e))
    })
}

/// Streams every payload file of a bundle to `sink` while checking it again; refuses a bundle
/// whose manifest is not the one [`verify`] accepted (`expected_manifest_sha256`). The sink sees
/// a file's bytes before its hash is known: only commit what it wrote once this returns `Ok`.
pub fn extract(
    path: &Path,
    keys: &TrustedKeys,
    expected_manifest_sha256: &str,
    sink: &mut dyn FnMut(&str, &mut dyn Read) -> Result<(), Error>,
) -> Result<Verified, Error> {
    walk_checked(path, keys, Some(expected_manifest_sha256), sink)
}

/// Opens a bundle file; `not_found` when it does not exist.
pub fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| {
        let code = if e.kind() == io::ErrorKind::NotFound {
            Code::NotFound
        } else {
            Code::Internal
        };
        Error::new(
            code,
            format!("cannot open the bundle {}: {e}", path.display()),
        )
        .with("path", path.display())
    })
}

fn walk(
    path: &Path,
    keys: &TrustedKeys,
    on_file: &mut dyn FnMut(&str, &mut dyn Read) -> Result<(), Error>,
) -> Result<Verified, Error> {
    walk_checked(path, keys, None, on_file)
}

fn walk_checked(
    path: &Path,
    keys: &TrustedKeys,
    expected_manifest_sha256: Option<&str>,
    on_file: &mut dyn FnMut(&str, &mut dyn Read) -> Result<(), Error>,
) -> Result<Verified, Error> {
    let file = open(path)?;
    let malformed = |message: String| verification_failed("bundle_malformed", message);
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let mut entries = archive
        .entries()
        .map_err(|e| malformed(format!("{} is not a bundle: {e}", path.display())))?;
    let mut next_named = |wanted: &str, limit: u64| -> Result<Vec<u8>, Error> {
        let mut entry = entries
            .next()
            .ok_or_else(|| malformed(format!("the bundle ends before {wanted}")))?
            .map_err(|e| malformed(format!("the bundle is not a tar archive: {e}")))?;
        let name = entry_name(&entry)?;
        if name != wanted {
            return Err(malformed(format!(
                "the bundle's entry {name:?} comes where {wanted} must"
            )));
        }
        if entry.size() > limit {
            return Err(malformed(format!("{wanted} is larger than {limit} bytes")));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| malformed(format!("reading {wanted}: {e}")))?;
        Ok(bytes)
    };
    let manifest_bytes = next_named(MANIFEST_FILE, MAX_MANIFEST_BYTES)?;
    let signature = next_named(SIGNATURE_FILE, MAX_SIGNATURE_BYTES)?;
    let signature = String::from_utf8(signature)
        .map_err(|_| verification_failed("signature_malformed", "the signature is not text"))?;
    // The signature first: nothing of an unsigned manifest is believed, not even its file list.
    let signed_by = keys.verify(&manifest_bytes, &signature)?.to_owned();
    let manifest = Manifest::parse(&manifest_bytes)?;
    let manifest_sha256 = crate::pki::hex(&Sha256::digest(&manifest_bytes));
    if let Some(expected) = expected_manifest_sha256
        && expected != manifest_sha256
    {
        return Err(verification_failed(
            "bundle_changed",
            "the bundle changed since it was verified (its manifest differs)",
        ));
    }

    let mut seen = BTreeSet::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| malformed(format!("the bundle is not a tar archive: {e}")))?;
        let name = entry_name(&entry)?;
        let Some(expected) = manifest.files.get(&name) else {
            return Err(verification_failed(
                "unexpected_file",
                format!("the bundle holds {name:?}, which its manifest does not list"),
            )
            .with("file", &name));
        };
        if !seen.insert(name.clone()) {
            return Err(
                verification_failed("duplicate_file", format!("{name} appears twice"))
                    .with("file", &name),
            );
        }
        if entry.size() != expected.size {
            return Err(size_mismatch(&name, expected.size, entry.size()));
        }
        let mut reader = HashingReader::new(entry.take(expected.size));
        on_file(&name, &mut reader)?;
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| malformed(format!("reading {name}: {e}")))?;
        let (sha256, size) = reader.finish();
        if size != expected.size {
            return Err(size_mismatch(&name, expected.size, size));
        }
        if sha256 != expected.sha256 {
            return Err(verification_failed(
                "checksum_mismatch",
                format!(
                    "{name}'s SHA-256 is {sha256}, the manifest says {}",
                    expected.sha256
                ),
            )
            .with("file", &name));
        }
    }
    if let Some(missing) = manifest.files.keys().find(|name| !seen.contains(*name)) {
        return Err(verification_failed(
            "missing_file",
            format!("the bundle lacks {missing}, which its manifest lists"),
        )
        .with("file", missing));
    }
    Ok(Verified {
        manifest,
        manifest_sha256,
        signed_by,
    })
}

fn size_mismatch(name: &str, expected: u64, found: u64) -> Error {
    verification_failed(
        "size_mismatch",
        format!("{name} is {found} bytes, the manifest says {expected}"),
    )
    .with("file", name)
}

/// An entry's name: one plain path component of a regular file.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, Error> {
    let path = entry.path().map_err(|e| {
        verification_failed(
            "bundle_malformed",
            format!("an entry name is unreadable: {e}"),
        )
    })?;
    let mut components = path.components();
    match (
        components.next(),
        components.next(),
        entry.header().entry_type(),
    ) {
        (Some(Component::Normal(name)), None, tar::EntryType::Regular) => name
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| verification_failed("bundle_malformed", "an entry name is not UTF-8")),
        _ => Err(verification_failed(
            "bundle_malformed",
            format!(
                "the bundle entry {} is not a plain file name",
                path.display()
            ),
        )),
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The lowercase hex SHA-256 and the byte count of everything read.
    pub fn finish(self) -> (String, u64) {
        (crate::pki::hex(&self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::upgrade::keys::tests::key_pair;
    use crate::upgrade::manifest::{KERNEL_IMAGE, ROOT_IMAGE, ROOT_VERITY};

    /// A signed appliance bundle in `dir` with the given payloads; returns its path and the
    /// keys that trust it.
    pub(crate) fn appliance_bundle(
        dir: &Path,
        version: &str,
        root: &[u8],
        kernel: &[u8],
    ) -> (PathBuf, TrustedKeys) {
        verity_appliance_bundle(dir, version, root, kernel, None)
    }

    /// [`appliance_bundle`], with `verity` = (hash device bytes, root hash) when given.
    pub(crate) fn verity_appliance_bundle(
        dir: &Path,
        version: &str,
        root: &[u8],
        kernel: &[u8],
        verity: Option<(&[u8], &str)>,
    ) -> (PathBuf, TrustedKeys) {
        let (sk, public) = key_pair();
        let root_path = dir.join(format!("root-{version}"));
        let kernel_path = dir.join(format!("kernel-{version}"));
        std::fs::write(&root_path, root).unwrap();
        std::fs::write(&kernel_path, kernel).unwrap();
        let mut files = vec![
            (ROOT_IMAGE.into(), root_path),
            (KERNEL_IMAGE.into(), kernel_path),
        ];
        let mut manifest = Manifest::new(version, "0.1.0", "x86_64");
        if let Some((hash_device, root_hash)) = verity {
            let verity_path = dir.join(format!("verity-{version}"));
            std::fs::write(&verity_path, hash_device).unwrap();
            files.push((ROOT_VERITY.into(), verity_path));
            manifest.root_hash = Some(root_hash.to_owned());
        }
        let out = dir.join(file_name(version, "x86_64"));
        create(&out, manifest, &files, &sk).unwrap();
        let mut keys = TrustedKeys::default();
        keys.add(Path::new("test.pub"), &public).unwrap();
        (out, keys)
    }

    fn reason(result: Result<Verified, Error>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.code, Code::UpgradeVerificationFailed, "{error:?}");
        error.details["reason"].clone()
    }

    /// Rewrites a bundle's tar entries through `edit` (name, bytes) → entries to write.
    fn rewrite(path: &Path, edit: impl Fn(String, Vec<u8>) -> Vec<(String, Vec<u8>)>) {
        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            entries.extend(edit(name, bytes));
        }
        let mut builder = tar::Builder::new(File::create(path).unwrap());
        for (name, bytes) in entries {
            append_bytes(&mut builder, &name, &bytes).unwrap();
        }
        builder.finish().unwrap();
    }

    #[test]
    fn a_signed_bundle_verifies_and_extracts_its_exact_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = vec![7u8; 300_000];
        let (path, keys) = appliance_bundle(dir.path(), "1.2.0", &root, b"uki");
        let verified = verify(&path, &keys).unwrap();
        assert_eq!(verified.manifest.version, "1.2.0");
        assert_eq!(verified.manifest.files[ROOT_IMAGE].size, 300_000);
        assert_eq!(verified.signed_by, Path::new("test.pub"));
        let mut got = Vec::new();
        extract(
            &path,
            &keys,
            &verified.manifest_sha256,
            &mut |name, reader| {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).unwrap();
                got.push((name.to_owned(), bytes));
                Ok(())
            },
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [ROOT_IMAGE, KERNEL_IMAGE]);
        assert!(got[0].1 == root, "the root image arrives intact");
        assert_eq!(got[1].1, b"uki");
        assert_eq!(
            reason(extract(&path, &keys, &"0".repeat(64), &mut |_, _| Ok(()))),
            "bundle_changed"
        );
    }

    #[test]
    fn every_kind_of_tampering_is_refused_before_any_payload_reaches_a_sink() {
        let dir = tempfile::tempdir().unwrap();
        type Edit = Box<dyn Fn(String, Vec<u8>) -> Vec<(String, Vec<u8>)>>;
        let cases: Vec<(&str, Edit, bool)> = vec![
            (
                "checksum_mismatch",
                Box::new(|n, mut b: Vec<u8>| {
                    if n == ROOT_IMAGE {
                        b[10] ^= 1;
                    }
                    vec![(n, b)]
                }),
                true,
            ),
            (
                "size_mismatch",
                Box::new(|n, mut b: Vec<u8>| {
                    if n == KERNEL_IMAGE {
                        b.push(0);
                    }
                    vec![(n, b)]
                }),
                true,
            ),
            (
                "signature_invalid",
                Box::new(|n, b: Vec<u8>| {
                    let b = if n == MANIFEST_FILE {
                        String::from_utf8(b)
                            .unwrap()
                            .replace("1.2.0", "1.2.1")
                            .into_bytes()
                    } else {
                        b
                    };
                    vec![(n, b)]
                }),
                false,
            ),
            (
                "missing_file",
                Box::new(|n, b| {
                    if n == KERNEL_IMAGE {
                        vec![]
                    } else {
                        vec![(n, b)]
                    }
                }),
                true,
            ),
            (
                "unexpected_file",
                Box::new(|n: String, b| {
                    let extra = n == KERNEL_IMAGE;
                    let mut out = vec![(n, b)];
                    if extra {
                        out.push(("evil.sh".into(), b"rm -rf /".to_vec()));
                    }
                    out
                }),
                true,
            ),
            (
                "bundle_malformed",
                Box::new(|n, b| {
                    if n == SIGNATURE_FILE {
                        vec![]
                    } else {
                        vec![(n, b)]
                    }
                }),
                false,
            ),
        ];
        for (expected, edit, payload_reached_pass_one) in cases {
            let (path, keys) = appliance_bundle(dir.path(), "1.2.0", &[1u8; 5000], b"uki");
            rewrite(&path, edit);
            let mut seen = 0;
            let result = walk(&path, &keys, &mut |_, reader| {
                seen += 1;
                io::copy(reader, &mut io::sink()).unwrap();
                Ok(())
            });
            assert_eq!(reason(result), expected);
            // Unsigned or malformed bundles never show a payload to anyone.
            if !payload_reached_pass_one {
                assert_eq!(seen, 0, "{expected}");
            }
        }
        let garbage = dir.path().join("garbage.bundle");
        std::fs::write(&garbage, vec![0x42u8; 2000]).unwrap();
        let (_, keys) = appliance_bundle(dir.path(), "1.0.0", b"r", b"k");
        assert_eq!(reason(verify(&garbage, &keys)), "bundle_malformed");
    }

    #[test]
    fn a_bundle_signed_by_an_untrusted_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = appliance_bundle(dir.path(), "1.2.0", b"root", b"uki");
        let (_, other_public) = key_pair();
        let mut others = TrustedKeys::default();
        others.add(Path::new("other.pub"), &other_public).unwrap();
        assert_eq!(reason(verify(&path, &others)), "untrusted_key");
    }
}
