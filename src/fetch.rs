//! The HTTP(S) edge: fetches the hosts document, bounded in time and size, with the server's
//! certificate checked against the system roots or the operator's CA file or directory.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use url::Url;

use crate::signature;

/// Redirects followed before giving up (the original's limit).
const MAX_REDIRECTS: usize = 10;
/// Largest document accepted: ample for 100,000 entries.
pub const MAX_BODY_BYTES: u64 = 32 << 20;

/// Where the CA certificates for HTTPS come from.
#[derive(Clone, Debug, Default)]
pub struct Trust<'a> {
    /// A PEM file of CA certificates.
    pub ca_file: Option<&'a Path>,
    /// A directory of PEM files of CA certificates.
    pub ca_path: Option<&'a Path>,
}

/// Fetches one URL again and again, sending the validators of the document whose table is in
/// force, so that an unchanged document costs the server a 304.
pub struct Fetcher {
    agent: ureq::Agent,
    url: Url,
    /// Where the document's detached signature is: `url` with `.minisig` added to its path.
    signature_url: Url,
    timeout: Duration,
    /// The validators of the document in force: committed only once its table is published.
    committed: Validators,
}

/// What identifies a version of the document to its server (ETag, Last-Modified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The outcome of a fetch that worked.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A new document, and its validators: commit them once its table is in force.
    Document(String, Validators),
    /// The server says the document in force has not changed.
    Unchanged,
}

impl Fetcher {
    /// A fetcher for `url` whose every fetch, redirects included, ends within `timeout`.
    pub fn new(url: &str, trust: &Trust<'_>, timeout: Duration) -> Result<Self> {
        let url = Url::parse(url).with_context(|| format!("`{url}` is not a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("`{url}`: only http and https URLs are supported");
        }
        let tls = TlsConfig::builder().root_certs(root_certs(trust)?).build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("udptun/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let mut signature_url = url.clone();
        signature_url.set_path(&format!("{}{}", url.path(), signature::SUFFIX));
        signature_url.set_fragment(None);
        Ok(Self { agent, url, signature_url, timeout, committed: Validators::default() })
    }

    /// The URL fetched.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the document travels over plain http, where anyone on the path can change it.
    pub fn is_plain_http(&self) -> bool {
        self.url.scheme() == "http"
    }

    /// Fetches the document, following up to ten redirects but never from https to http, all
    /// within one deadline.
    pub fn fetch(&mut self) -> Result<Fetched> {
        let sent_validators = !self.committed.is_empty();
        let (url, mut response) = self.get(&self.url, &self.committed)?;
        let status = response.status();
        if status.as_u16() == 304 {
            if !sent_validators {
                bail!("{url}: HTTP 304 Not Modified to a request that named no version");
            }
            return Ok(Fetched::Unchanged);
        }
        if !status.is_success() {
            bail!("{url}: HTTP {status}");
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
        let validators = Validators { etag: header("etag"), last_modified: header("last-modified") };
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_string()
            .map_err(|e| anyhow!("{url}: {}", describe(&e)))?;
        Ok(Fetched::Document(body, validators))
    }

    /// Fetches the document's detached signature, the URL with [`signature::SUFFIX`] added to
    /// its path, whole (no validators: it is small, and must match the document just fetched),
    /// under the same rules and deadline as the document. `None` if the server has none (404,
    /// 410); otherwise at most one byte more than a signature may be, for the caller to refuse.
    pub fn fetch_signature(&self) -> Result<Option<Vec<u8>>> {
        let (url, mut response) = self.get(&self.signature_url, &Validators::default())?;
        let status = response.status();
        if matches!(status.as_u16(), 404 | 410) {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("{url}: HTTP {status}");
        }
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(signature::MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{url}"))?;
        Ok(Some(bytes))
    }

    /// Where the document's signature is fetched from.
    pub fn signature_url(&self) -> &Url {
        &self.signature_url
    }

    /// GETs `start`, following up to ten redirects but never from https to http, all within
    /// one deadline, sending `validators`; returns the URL that answered and its answer, which
    /// is not a redirect.
    fn get(&self, start: &Url, validators: &Validators) -> Result<(Url, ureq::http::Response<ureq::Body>)> {
        let deadline = Instant::now() + self.timeout;
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                bail!("{start}: timed out after {:?} (redirects included)", self.timeout);
            }
            let mut request = self.agent.get(url.as_str()).config().timeout_global(Some(remaining)).build();
            if let Some(etag) = &validators.etag {
                request = request.header("If-None-Match", etag);
            }
            if let Some(date) = &validators.last_modified {
                request = request.header("If-Modified-Since", date);
            }
            let response = request.call().map_err(|e| anyhow!("{url}: {}", describe(&e)))?;
            let status = response.status();
            if status.is_redirection() && status.as_u16() != 304 {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| anyhow!("{url}: HTTP {status} without a Location"))?;
                let next =
                    url.join(location).with_context(|| format!("{url}: bad redirect to `{location}`"))?;
                if url.scheme() == "https" && next.scheme() != "https" {
                    bail!("{url}: refused redirect from https to {next}");
                }
                url = next;
                continue;
            }
            return Ok((url, response));
        }
        bail!("{start}: more than {MAX_REDIRECTS} redirects")
    }

    /// The table built from the document these validators came with is in force: later fetches
    /// ask whether it changed.
    pub fn commit(&mut self, validators: Validators) {
        self.committed = validators;
    }

    /// The ETag of the document in force, if its server sent one.
    pub fn etag(&self) -> Option<&str> {
        self.committed.etag.as_deref()
    }

    /// Forgets the validators, so that the next fetch gets the whole document even if unchanged
    /// (after a document that did not load).
    pub fn forget_validators(&mut self) {
        self.committed = Validators::default();
    }
}

/// An error message that says plainly what went wrong, certificates above all.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::BodyExceedsLimit(limit) => format!("document larger than {limit} bytes"),
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::Rustls(e) => format!("TLS: {e} (certificate refused?)"),
        other => other.to_string(),
    }
}

fn root_certs(trust: &Trust<'_>) -> Result<RootCerts> {
    let mut certs = Vec::new();
    if let Some(file) = trust.ca_file {
        certs.extend(read_pem_certs(file)?);
    }
    if let Some(dir) = trust.ca_path {
        let entries = fs::read_dir(dir).with_context(|| format!("--ca-path {}", dir.display()))?;
        let before = certs.len();
        for entry in entries {
            let path = entry.with_context(|| format!("--ca-path {}", dir.display()))?.path();
            if path.is_file() {
                // Files that hold no certificate (CRLs, READMEs) are skipped, as OpenSSL does.
                certs.extend(read_pem_certs(&path).unwrap_or_default());
            }
        }
        if certs.len() == before {
            bail!("--ca-path {}: no PEM certificates found", dir.display());
        }
    }
    if trust.ca_file.is_none() && trust.ca_path.is_none() {
        let found = rustls_native_certs::load_native_certs();
        certs.extend(found.certs.iter().map(|der| Certificate::from_der(der.as_ref()).to_owned()));
        if certs.is_empty() {
            tracing::warn!("no system CA certificates found; using the bundled Mozilla roots");
            return Ok(RootCerts::WebPki);
        }
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

fn read_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = fs::read(path).with_context(|| format!("{}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(cert) = item.with_context(|| format!("{}: bad PEM", path.display()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        bail!("{}: no PEM certificates found", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_at_the_documents_path_plus_minisig() {
        let fetcher =
            Fetcher::new("http://h:8080/o/hosts.json?v=2#top", &Trust::default(), Duration::from_secs(1))
                .unwrap();
        assert_eq!(fetcher.signature_url().as_str(), "http://h:8080/o/hosts.json.minisig?v=2");
        assert!(fetcher.is_plain_http());
        let fetcher = Fetcher::new("https://h/", &Trust::default(), Duration::from_secs(1)).unwrap();
        assert_eq!(fetcher.signature_url().as_str(), "https://h/.minisig");
        assert!(!fetcher.is_plain_http());
    }
}
