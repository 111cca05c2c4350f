//! Sending one request body: ureq with bounded timeouts, no redirects, status codes as
//! answers rather than errors, TLS verified against the system trust store plus the
//! site's CAs, and the proxy the environment names (SPEC §5, Transport).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, Proxy};

use crate::error::{Error, Result};
use crate::units::format_duration;

/// The longest a connection may take to be set up, whatever the overall timeout.
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// The most of an answer's body read (for messages, and so the connection is reused).
const ANSWER_BODY_MAX: u64 = 64 * 1024;

/// The endpoint URL, checked and taken apart once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    shown: String,
    host: String,
    https: bool,
}

impl Endpoint {
    /// Parses an http(s) URL with a host; anything else is a usage error.
    pub fn parse(url: &str) -> Result<Endpoint> {
        let bad = |why: &str| Error::usage(format!("the endpoint `{}` {why}", redact(url)));
        let uri: ureq::http::Uri = url.parse().map_err(|_| bad("is not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(bad("is not an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Endpoint {
            url: url.to_string(),
            shown: redact(url),
            host: host.to_ascii_lowercase(),
            https,
        })
    }

    /// The URL as messages show it: without a password or other user information.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `localhost`, 127.0.0.0/8 or ::1: traffic that never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_end_matches('.');
        host == "localhost"
            || host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    }

    /// Plain http carries events readable by anyone on the path: only to this machine,
    /// unless the user insists.
    pub fn check_secure(&self, allow_insecure: bool) -> Result<()> {
        if self.https || allow_insecure || self.is_loopback() {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "refusing to send telemetry over plain http to {}: use an https:// endpoint \
             (--endpoint, NEMO_EVALUATOR_TELEMETRY_ENDPOINT or telespool.endpoint), or pass \
             --allow-insecure if the network path is trusted",
            self.shown
        )))
    }
}

/// Replaces user information (`user:password@`) in a URL by `***@`.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// How to reach the endpoint.
pub struct TransportOptions<'a> {
    /// Overall time for one request; connecting gets at most [`CONNECT_TIMEOUT_MAX`].
    pub timeout: Duration,
    /// `--ca-bundle`: more CA certificates to trust.
    pub ca_bundle: Option<&'a Path>,
    /// Environment look-ups (`SSL_CERT_FILE`, proxies).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The status and the headers that matter of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    /// The start of the answer's body, for messages.
    pub body: String,
}

/// No answer: the request could not be sent or no status came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The server's certificate was not trusted: a configuration problem, not a
    /// passing one.
    pub certificate: bool,
}

/// A connection pool to the endpoint.
pub struct Transport {
    agent: Agent,
    endpoint: Endpoint,
    timeout: Duration,
    /// What `-v` may want to know about how the transport was set up.
    pub notes: Vec<String>,
}

impl Transport {
    pub fn new(endpoint: Endpoint, options: &TransportOptions) -> Result<Transport> {
        let mut notes = Vec::new();
        let proxy = proxy_for(&endpoint, options.env)?;
        if let Some((proxy, var)) = &proxy {
            notes.push(format!(
                "using the proxy {}:{} (from {var})",
                proxy.host(),
                proxy.port()
            ));
        }
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(options.timeout))
            .timeout_connect(Some(options.timeout.min(CONNECT_TIMEOUT_MAX)))
            .user_agent(concat!("telespool/", env!("CARGO_PKG_VERSION")))
            .proxy(proxy.map(|(p, _)| p));
        if endpoint.https {
            let roots = trust_roots(options, &mut notes)?;
            config = config.tls_config(TlsConfig::builder().root_certs(roots).build());
        }
        let agent = Agent::with_parts(
            config.build(),
            DefaultConnector::default(),
            CachingResolver::default(),
        );
        Ok(Transport {
            agent,
            endpoint,
            timeout: options.timeout,
            notes,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// POSTs `body` as JSON, uncompressed.
    pub fn post(&self, body: &[u8]) -> std::result::Result<Answer, Failure> {
        let sent = self
            .agent
            .post(&self.endpoint.url)
            .header("Content-Type", "application/json")
            .send(body);
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Err(self.failure(e)),
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let retry_after = header("retry-after");
        let location = header("location");
        // Read the answer so the connection can carry the next request; an answer that
        // breaks off is still an answer, its status is what counts.
        let body = response
            .body_mut()
            .with_config()
            .limit(ANSWER_BODY_MAX)
            .read_to_vec()
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        Ok(Answer {
            status,
            retry_after,
            location,
            body,
        })
    }

    fn failure(&self, e: ureq::Error) -> Failure {
        let text = error_text(&e);
        let lower = text.to_ascii_lowercase();
        if lower.contains("certificate") || lower.contains("unknownissuer") {
            return Failure {
                message: format!(
                    "its TLS certificate is not trusted ({text}); if your site uses its own CA, \
                     pass --ca-bundle FILE or set SSL_CERT_FILE"
                ),
                certificate: true,
            };
        }
        let message = match &e {
            ureq::Error::Timeout(_) => format!(
                "no answer within {} (timeout; --timeout or telespool.timeout sets it)",
                format_duration(self.timeout)
            ),
            ureq::Error::HostNotFound => "its host name does not resolve".to_string(),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused".to_string()
            }
            _ => text,
        };
        Failure {
            message,
            certificate: false,
        }
    }
}

/// How long a name lookup is reused.
const RESOLVE_TTL: Duration = Duration::from_secs(60);

/// ureq looks the host up again for every request, even on a kept-alive connection, in
/// a new thread when a timeout is set; one lookup a minute is plenty for a run.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    last: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, at, addrs)) = &*last {
            if *k == key && at.elapsed() < RESOLVE_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *last = Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// An error and its causes on one line.
fn error_text(e: &ureq::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace(['\n', '\r'], " ")
}

/// The system trust store plus `SSL_CERT_FILE`, `SSL_CERT_DIR` and `--ca-bundle`.
fn trust_roots(options: &TransportOptions, notes: &mut Vec<String>) -> Result<RootCerts> {
    let cert_file = (options.env)("SSL_CERT_FILE").map(PathBuf::from);
    let cert_dir = (options.env)("SSL_CERT_DIR").map(PathBuf::from);

    let mut certs = system_roots(cert_file.is_some() || cert_dir.is_some());
    let system = certs.len();
    if let Some(file) = &cert_file {
        certs.extend(load_pem(file, "SSL_CERT_FILE")?);
    }
    if let Some(dir) = &cert_dir {
        certs.extend(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
    }
    if let Some(file) = options.ca_bundle {
        certs.extend(load_pem(file, "--ca-bundle")?);
    }
    notes.push(format!(
        "trusting {system} system CA certificates and {} more",
        certs.len() - system
    ));
    if certs.is_empty() {
        notes.push("no system trust store found; using the built-in Mozilla roots".into());
        return Ok(RootCerts::WebPki);
    }
    Ok(RootCerts::from(
        certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
    ))
}

/// The platform's CA certificates. When `SSL_CERT_FILE` or `SSL_CERT_DIR` is set the
/// usual loader reads only those, but here they add to the system store rather than
/// replace it, so the system's directories are read directly.
fn system_roots(env_overrides: bool) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    if !env_overrides {
        return rustls_native_certs::load_native_certs().certs;
    }
    let mut certs = Vec::new();
    for dir in openssl_probe::candidate_cert_dirs() {
        certs.extend(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
    }
    certs
}

/// The certificates of a PEM file; an unreadable file, or one without any, is a usage
/// error naming `what`.
fn load_pem(path: &Path, what: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    let bad = |why: String| Error::usage(format!("{what} {}: {why}", path.display()));
    if let Err(e) = std::fs::metadata(path) {
        return Err(bad(format!("cannot read it: {e}")));
    }
    let loaded = rustls_native_certs::load_certs_from_paths(Some(path), None);
    if let Some(e) = loaded.errors.first() {
        return Err(bad(format!("cannot read it: {e}")));
    }
    if loaded.certs.is_empty() {
        return Err(bad("holds no PEM certificate".to_string()));
    }
    Ok(loaded.certs)
}

/// The proxy for the endpoint's scheme, unless `NO_PROXY` exempts its host; with the
/// name of the variable it came from.
fn proxy_for(
    endpoint: &Endpoint,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Proxy, &'static str)>> {
    let names: &[&'static str] = if endpoint.https {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["http_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"]
    };
    let Some((var, value)) = names
        .iter()
        .find_map(|&n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
    else {
        return Ok(None);
    };
    let no_proxy = env("NO_PROXY").or_else(|| env("no_proxy"));
    if no_proxy.is_some_and(|list| bypasses(&list, &endpoint.host)) {
        return Ok(None);
    }
    let value = value.trim();
    // A bare host:port means an http proxy, as curl reads it.
    let url = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let proxy = Proxy::new(&url).map_err(|e| {
        Error::usage(format!(
            "{var}: `{}` is not a proxy URL telespool can use ({e})",
            redact(value)
        ))
    })?;
    Ok(Some((proxy, var)))
}

/// Whether `NO_PROXY` (comma-separated host names, domain suffixes, IP addresses, CIDR
/// ranges, or `*`) covers `host`.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy.split(',').any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        if let (Some(ip), Some((net, bits))) = (host_ip, entry.split_once('/')) {
            return in_cidr(ip, net, bits);
        }
        // Drop a port, and the brackets of an IPv6 address.
        let name = if let Some(rest) = entry.strip_prefix('[') {
            rest.split(']').next().unwrap_or_default().to_string()
        } else if entry.matches(':').count() == 1 {
            entry.split(':').next().unwrap_or_default().to_string()
        } else {
            entry
        };
        let name = name.trim_start_matches("*.").trim_start_matches('.');
        let name = name.trim_end_matches('.');
        if let (Some(ip), Ok(other)) = (host_ip, name.parse::<IpAddr>()) {
            return ip == other;
        }
        !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip.to_canonical(), net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure() {
        for url in [
            "http://127.0.0.1:8765/v1.1/events/json",
            "http://127.1.2.3/x",
            "http://[::1]:80/x",
            "http://localhost:1/",
            "http://LOCALHOST./",
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert!(e.is_loopback(), "{url}");
            assert!(e.check_secure(false).is_ok());
        }
        for url in [
            "http://192.0.2.1/",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
            "http://[::2]/",
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert!(!e.is_loopback(), "{url}");
            let err = e.check_secure(false).unwrap_err();
            assert_eq!(err.exit_code(), 69);
            assert!(e.check_secure(true).is_ok());
        }
        assert!(Endpoint::parse("https://192.0.2.1/")
            .unwrap()
            .check_secure(false)
            .is_ok());
        assert!(Endpoint::parse("ftp://x/").is_err());
    }

    #[test]
    fn user_information_is_never_shown() {
        let e = Endpoint::parse("https://me:secret@example.com/v1?q=a@b").unwrap();
        assert_eq!(e.shown(), "https://***@example.com/v1?q=a@b");
        assert_eq!(redact("https://example.com/a@b"), "https://example.com/a@b");
    }

    #[test]
    fn no_proxy_rules() {
        assert!(bypasses("*", "example.com"));
        assert!(bypasses("example.com", "example.com"));
        assert!(bypasses("example.com", "api.example.com"));
        assert!(bypasses(".example.com", "api.example.com"));
        assert!(bypasses("*.example.com", "api.example.com"));
        assert!(bypasses("foo, example.com:443", "example.com"));
        assert!(!bypasses("example.com", "notexample.com"));
        assert!(!bypasses("", "example.com"));
        assert!(bypasses("10.0.0.0/8", "10.1.2.3"));
        assert!(!bypasses("10.0.0.0/8", "11.1.2.3"));
        assert!(bypasses("127.0.0.1", "127.0.0.1"));
        assert!(bypasses("[::1]", "::1"));
        assert!(bypasses("::1", "::1"));
    }

    #[test]
    fn proxies_by_scheme_and_no_proxy() {
        let env = |name: &str| match name {
            "HTTPS_PROXY" => Some("proxy.example:3128".to_string()),
            "http_proxy" => Some("http://plain.example:8080".to_string()),
            "NO_PROXY" => Some("internal.example".to_string()),
            _ => None,
        };
        let https = Endpoint::parse("https://events.example/x").unwrap();
        let (p, var) = proxy_for(&https, &env).unwrap().unwrap();
        assert_eq!(
            (p.host(), p.port(), var),
            ("proxy.example", 3128, "HTTPS_PROXY")
        );
        let http = Endpoint::parse("http://events.example/x").unwrap();
        let (p, var) = proxy_for(&http, &env).unwrap().unwrap();
        assert_eq!((p.host(), var), ("plain.example", "http_proxy"));
        let exempt = Endpoint::parse("https://api.internal.example/x").unwrap();
        assert!(proxy_for(&exempt, &env).unwrap().is_none());
        assert!(proxy_for(&https, &|_: &str| None).unwrap().is_none());
    }
}
