//! Fetching an upgrade bundle from an `http://` or `https://` URL onto the node's disk.
//!
//! Role: one GET over HTTP/1.1 (TLS verified against the trust roots in a PEM file, by default
//! the system's), following up to [`MAX_REDIRECTS`] redirects, streamed to a file with a size
//! bound; the caller verifies the bundle afterwards. Plain `http://` is accepted because the
//! bundle's minisign signature, not the transport, is what makes it trusted. It must not
//! verify, install or keep anything itself, and must not follow a redirect to another scheme
//! than http(s).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt as _;

use crate::error::{Code, Error};

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// The largest bundle accepted (a whole root image is a few hundred MB).
pub const MAX_BUNDLE_BYTES: u64 = 4 << 30;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the transfer may stall between two pieces of data.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

fn failed(url: &str, reason: &str, message: impl Into<String>) -> Error {
    Error::new(Code::UpgradeFailed, message)
        .with("reason", reason)
        .with("url", url)
}

/// Whether `text` is a URL this module fetches (as opposed to a file path).
pub fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// Downloads `url` into `dest` (created or truncated), trusting the roots in `ca_file` for
/// `https://`; returns the number of bytes written. On failure `dest` may hold part of the
/// body: the caller removes it.
pub async fn download(url: &str, dest: &Path, ca_file: &Path) -> Result<u64, Error> {
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        match fetch_once(&current, dest, ca_file).await? {
            Fetched::Done(size) => return Ok(size),
            Fetched::Redirect(location) => current = location,
        }
    }
    Err(failed(
        url,
        "too_many_redirects",
        format!("{url} redirected more than {MAX_REDIRECTS} times"),
    ))
}

enum Fetched {
    Done(u64),
    Redirect(String),
}

async fn fetch_once(url: &str, dest: &Path, ca_file: &Path) -> Result<Fetched, Error> {
    let uri: hyper::Uri = url.parse().map_err(|e| {
        Error::new(Code::ValidationFailed, format!("{url:?} is not a URL: {e}"))
            .with("field", "bundle")
            .with("reason", "url_invalid")
    })?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(Error::new(
                Code::ValidationFailed,
                format!("{url} is neither http:// nor https://"),
            )
            .with("field", "bundle")
            .with("reason", "url_invalid"));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| failed(url, "url_invalid", format!("{url} names no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let unreachable =
        |e: String| failed(url, "url_unreachable", format!("cannot fetch {url}: {e}"));
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| {
        unreachable(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| unreachable(e.to_string()))?;
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), ToString::to_string);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("jaco/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let response = if tls {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_file)?));
        let name = ServerName::try_from(host.clone())
            .map_err(|e| failed(url, "url_invalid", format!("{host}: {e}")))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| unreachable("the TLS handshake timed out".to_owned()))?
            .map_err(|e| failed(url, "tls_failed", format!("TLS with {host}: {e}")))?;
        send(stream, request).await
    } else {
        send(tcp, request).await
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                failed(
                    url,
                    "http_error",
                    format!("{url}: {status} without Location"),
                )
            })?;
        if location.contains("://") && !is_url(location) {
            return Err(failed(
                url,
                "url_invalid",
                format!("{url} redirects to {location}, which is not http(s)"),
            ));
        }
        return Ok(Fetched::Redirect(resolve(&uri, location)));
    }
    if !status.is_success() {
        return Err(
            failed(url, "http_error", format!("{url} answered {status}"))
                .with("status", status.as_u16()),
        );
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| crate::upgrade::io_failed("create", dest, &e))?;
    let mut body = response.into_body();
    let mut size = 0u64;
    loop {
        let frame = tokio::time::timeout(STALL_TIMEOUT, body.frame())
            .await
            .map_err(|_| unreachable(format!("no data for {} s", STALL_TIMEOUT.as_secs())))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| unreachable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        size += data.len() as u64;
        if size > MAX_BUNDLE_BYTES {
            return Err(failed(
                url,
                "bundle_too_large",
                format!("{url} is larger than {MAX_BUNDLE_BYTES} bytes"),
            ));
        }
        file.write_all(&data)
            .await
            .map_err(|e| crate::upgrade::io_failed("write", dest, &e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| crate::upgrade::io_failed("sync", dest, &e))?;
    Ok(Fetched::Done(size))
}

async fn send<S>(
    stream: S,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    sender.send_request(request).await
}

/// A redirect's `Location`, absolute or relative to `base`.
fn resolve(base: &hyper::Uri, location: &str) -> String {
    if is_url(location) {
        return location.to_owned();
    }
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map_or("", |a| a.as_str())
    );
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{origin}{dir}/{location}")
    }
}

/// A TLS client trusting the certificates in `ca_file` (PEM).
fn client_config(ca_file: &Path) -> Result<rustls::ClientConfig, Error> {
    let unreadable = |e: String| {
        Error::new(
            Code::UpgradeFailed,
            format!("cannot read the trust roots {}: {e}", ca_file.display()),
        )
        .with("reason", "no_trust_roots")
        .with("path", ca_file.display())
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(e.to_string()))? {
        let cert = cert.map_err(|e| unreadable(e.to_string()))?;
        // A bundle may hold certificates rustls cannot use; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(unreadable("no certificate in it".to_owned()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| unreadable(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_request() {
        let base: hyper::Uri = "https://example.org/releases/v1/jaco.bundle"
            .parse()
            .unwrap();
        assert_eq!(
            resolve(&base, "https://cdn.example.net/x"),
            "https://cdn.example.net/x"
        );
        assert_eq!(resolve(&base, "/y/z"), "https://example.org/y/z");
        assert_eq!(resolve(&base, "w"), "https://example.org/releases/v1/w");
        assert!(is_url("http://a/b") && is_url("https://a") && !is_url("/srv/jaco.bundle"));
    }
}
