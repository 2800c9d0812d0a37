//! Who may use the proxy: the `Host` check (DNS rebinding) and the `Origin` check (cross-site requests).
//!
//! Why: the proxy holds the data owner's trust (its policy) and answers in plaintext to whoever reaches it.
//! Listening on loopback keeps other machines out, but not the web pages open in a browser on this machine:
//! - DNS rebinding: a page at `evil.example` re-points that name to 127.0.0.1 and then calls the proxy as its own
//!   origin, reading every answer (model metadata, inference results). Its requests carry
//!   `Host: evil.example:PORT`, a name the proxy does not answer to: refused with 421 before anything is forwarded.
//! - Cross-site requests: any page can POST a form or a `no-cors` fetch to `http://127.0.0.1:PORT` (it cannot read
//!   the answer, but it runs inferences in the data owner's name, with the enclave's receipts and audit log
//!   attributing them to this proxy's sessions). Browsers mark such requests with `Origin` and
//!   `Sec-Fetch-Site`: refused with 403 unless the origin was allowed (`--allow-origin`).
//!
//! Clients that are not browsers (curl, tritonclient, the KServe client) send the listen address as `Host` and
//! no `Origin`: they pass untouched.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST, ORIGIN};
use hyper::{Request, StatusCode};

/// A `--allow-host` or `--allow-origin` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// Not `NAME[:PORT]`, `IPv4[:PORT]` or `[IPv6][:PORT]`.
    #[error("`{0}` is not a host: NAME[:PORT], IPv4[:PORT] or [IPv6][:PORT] (letters, digits, `-`, `.`, `_`)")]
    BadHost(String),
    /// Not `scheme://host[:port]` (no path, query or user) nor `null`.
    #[error(
        "`{0}` is not an origin: scheme://host[:port] exactly as a browser sends it (e.g. https://app.example), \
         with no path, or `null`"
    )]
    BadOrigin(String),
}

/// A name the proxy answers to besides its listen address (`--allow-host NAME[:PORT]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    host: String,
    /// `None`: the listen port.
    port: Option<u16>,
}

impl FromStr for AllowedHost {
    type Err = AdmissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) =
            parse_authority(s).ok_or_else(|| AdmissionError::BadHost(s.to_owned()))?;
        Ok(AllowedHost { host, port })
    }
}

/// A browser origin allowed to call the proxy (`--allow-origin`), in the form browsers send in `Origin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedOrigin(String);

impl FromStr for AllowedOrigin {
    type Err = AdmissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `null` is what sandboxed frames and `file:` pages send: any site can produce it, so it is allowed
        // only when given literally, never by a pattern or a default.
        if s == "null" {
            return Ok(AllowedOrigin(s.to_owned()));
        }
        let bad = || AdmissionError::BadOrigin(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(bad());
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) =
            parse_authority(rest.strip_suffix('/').unwrap_or(rest)).ok_or_else(bad)?;
        // Browsers serialize an origin without its scheme's default port.
        let port = port.filter(|p| !matches!((scheme.as_str(), p), ("http", 80) | ("https", 443)));
        Ok(AllowedOrigin(match port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        }))
    }
}

/// `host[:port]` with the host canonical (names lowercased, IP addresses as `IpAddr` prints them, IPv6 in
/// brackets); `None` for anything else (user info, paths, empty names, a port that is not 1-5 digits).
fn parse_authority(s: &str) -> Option<(String, Option<u16>)> {
    let digits = |p: &str| {
        (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(digits(p.strip_prefix(':')?)?),
        };
        return Some((format!("[{ip}]"), port));
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((name, p)) => (name, Some(digits(p)?)),
        None => (s, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    name_ok.then(|| (name.to_ascii_lowercase(), port))
}

/// Why a request was refused before anything was forwarded.
#[derive(Debug)]
pub(super) enum Refusal {
    /// No `Host`, several, or one that is not `host[:port]`.
    BadHost,
    /// A `Host` (or absolute request target) naming something else than this proxy.
    ForeignHost(String),
    /// An `Origin` not allowed (or several).
    ForeignOrigin(String),
    /// `Sec-Fetch-Site: cross-site`/`same-site` without an allowed origin.
    CrossSite(String),
}

impl Refusal {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Refusal::BadHost => StatusCode::BAD_REQUEST,
            // 421 rather than 403: the request is not forbidden to its sender, it reached a server that is not
            // the one its URL names (RFC 9110 §15.5.20) — the signature of DNS rebinding, and what a
            // misconfigured service name needs to hear (`--allow-host`).
            Refusal::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Refusal::ForeignOrigin(_) | Refusal::CrossSite(_) => StatusCode::FORBIDDEN,
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            Refusal::BadHost => "a request needs exactly one Host header, host[:port]; nothing was forwarded".into(),
            Refusal::ForeignHost(h) => format!(
                "this proxy does not answer to Host `{h}` (DNS rebinding?); use its listen address or localhost, \
                 or start it with --allow-host; nothing was forwarded"
            ),
            Refusal::ForeignOrigin(o) => format!(
                "requests from browser origin `{o}` are refused (start the proxy with --allow-origin to allow \
                 one); nothing was forwarded"
            ),
            Refusal::CrossSite(s) => format!(
                "a {s} browser request without an allowed Origin is refused; nothing was forwarded"
            ),
        }
    }
}

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The `Host` and `Origin` checks of one listener.
#[derive(Debug)]
pub(super) struct Gate {
    /// (canonical host, port) pairs answered to.
    hosts: Vec<(String, u16)>,
    origins: Vec<AllowedOrigin>,
    refused: AtomicU64,
}

impl Gate {
    /// Answers to the listen address as bound, `localhost` on its port, and for a loopback or unspecified
    /// address `127.0.0.1` and `[::1]` too (all of them reach it); plus the allowed names.
    pub(super) fn new(
        listen: SocketAddr,
        allow: &[AllowedHost],
        origins: &[AllowedOrigin],
    ) -> Self {
        let port = listen.port();
        let ip = match listen.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut hosts = vec![(ip, port), ("localhost".to_owned(), port)];
        if listen.ip().is_loopback() || listen.ip().is_unspecified() {
            hosts.push(("127.0.0.1".to_owned(), port));
            hosts.push(("[::1]".to_owned(), port));
        }
        hosts.extend(
            allow
                .iter()
                .map(|a| (a.host.clone(), a.port.unwrap_or(port))),
        );
        Gate {
            hosts,
            origins: origins.to_vec(),
            refused: AtomicU64::new(0),
        }
    }

    /// Checks a request's target and origin. `Ok(Some(origin))`: an allowed browser origin, to which the answer
    /// carries CORS headers; `Ok(None)`: not a cross-origin browser request.
    pub(super) fn check<B>(&self, req: &Request<B>) -> Result<Option<HeaderValue>, Refusal> {
        let result = self.check_inner(req);
        if let Err(refusal) = &result {
            // Counted, and logged at powers of two: visible, but a page hammering the proxy cannot flood the log.
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                eprintln!(
                    "cloister proxy: refused a request ({}; {n} so far): {}",
                    refusal.status(),
                    refusal.message()
                );
            }
        }
        result
    }

    fn check_inner<B>(&self, req: &Request<B>) -> Result<Option<HeaderValue>, Refusal> {
        let host = only(req.headers(), &HOST).map_err(|()| Refusal::BadHost)?;
        let host = host.ok_or(Refusal::BadHost)?;
        let host = host.to_str().map_err(|_| Refusal::BadHost)?;
        self.answers_to(host)?;
        // An absolute request target (`GET http://name/ HTTP/1.1`) names the server too: it must agree.
        if let Some(authority) = req.uri().authority() {
            self.answers_to(authority.as_str())?;
        }
        let origin = only(req.headers(), &ORIGIN)
            .map_err(|()| Refusal::ForeignOrigin("(several Origin headers)".into()))?;
        let allowed = match origin {
            None => None,
            Some(o)
                if self
                    .origins
                    .iter()
                    .any(|a| o.as_bytes().eq_ignore_ascii_case(a.0.as_bytes())) =>
            {
                Some(o.clone())
            }
            Some(o) => {
                return Err(Refusal::ForeignOrigin(
                    String::from_utf8_lossy(o.as_bytes()).into(),
                ))
            }
        };
        // Defense in depth: a browser marks a request from another site even when it sends no `Origin` (a
        // cross-site GET, an image, a navigation).
        if allowed.is_none() {
            for site in req.headers().get_all(SEC_FETCH_SITE) {
                let site = String::from_utf8_lossy(site.as_bytes()).to_ascii_lowercase();
                if site == "cross-site" || site == "same-site" {
                    return Err(Refusal::CrossSite(site));
                }
            }
        }
        Ok(allowed)
    }

    fn answers_to(&self, host: &str) -> Result<(), Refusal> {
        let (name, port) = parse_authority(host).ok_or(Refusal::BadHost)?;
        // HTTP's default port when the client leaves it out.
        let port = port.unwrap_or(80);
        if self.hosts.iter().any(|(h, p)| *h == name && *p == port) {
            Ok(())
        } else {
            Err(Refusal::ForeignHost(host.to_owned()))
        }
    }
}

/// The one value of a header: `Ok(None)` absent, `Err` repeated.
fn only<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (v, None) => Ok(v),
        (Some(_), Some(_)) | (None, Some(_)) => Err(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn gate(listen: &str, allow: &[&str], origins: &[&str]) -> Gate {
        let allow: Vec<AllowedHost> = allow.iter().map(|h| h.parse().unwrap()).collect();
        let origins: Vec<AllowedOrigin> = origins.iter().map(|o| o.parse().unwrap()).collect();
        Gate::new(listen.parse().unwrap(), &allow, &origins)
    }

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().uri("/v2/health/ready");
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn the_listen_address_and_loopback_names_with_its_port_are_answered() {
        let g = gate("127.0.0.1:8000", &[], &[]);
        for host in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LocalHost:8000",
            "[::1]:8000",
            "[0:0::1]:8000",
        ] {
            assert!(g.check(&request(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "evil.example:8000",
            "127.0.0.1:8001",
            "localhost",
            "127.1:8000",
            "localhost.:8000",
            "a@localhost:8000",
        ] {
            let e = g.check(&request(&[("host", host)])).unwrap_err();
            assert!(
                matches!(e, Refusal::ForeignHost(_) | Refusal::BadHost),
                "{host}: {e:?}"
            );
        }
        let e = g.check(&request(&[])).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = g
            .check(&request(&[
                ("host", "localhost:8000"),
                ("host", "localhost:8000"),
            ]))
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = g
            .check(&request(&[("host", "evil.example:8000")]))
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::MISDIRECTED_REQUEST);

        // Port 80 may be left out; a non-loopback listen address answers to itself and localhost only.
        assert!(gate("127.0.0.1:80", &[], &[])
            .check(&request(&[("host", "localhost")]))
            .is_ok());
        let g = gate("10.0.0.5:8000", &[], &[]);
        assert!(g.check(&request(&[("host", "10.0.0.5:8000")])).is_ok());
        assert!(g.check(&request(&[("host", "127.0.0.1:8000")])).is_err());
    }

    #[test]
    fn allowed_hosts_take_the_listen_port_unless_they_name_one() {
        let g = gate("127.0.0.1:8000", &["Proxy.NS.svc", "gateway:80"], &[]);
        for host in [
            "proxy.ns.svc:8000",
            "PROXY.ns.svc:8000",
            "gateway",
            "gateway:80",
        ] {
            assert!(g.check(&request(&[("host", host)])).is_ok(), "{host}");
        }
        for host in ["proxy.ns.svc", "gateway:8000"] {
            assert!(g.check(&request(&[("host", host)])).is_err(), "{host}");
        }
        for bad in [
            "",
            "a b",
            "host:",
            "host:99999",
            "host:+80",
            "[::1",
            "user@host",
            "host/path",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_match_exactly_as_browsers_send_them() {
        assert_eq!(
            "HTTPS://App.Example:443/"
                .parse::<AllowedOrigin>()
                .unwrap()
                .0,
            "https://app.example"
        );
        assert_eq!(
            "http://[::1]:3000".parse::<AllowedOrigin>().unwrap().0,
            "http://[::1]:3000"
        );
        for bad in [
            "app.example",
            "https://app.example/x",
            "https://",
            "*",
            "https://*.example",
            "1http://a",
        ] {
            assert!(bad.parse::<AllowedOrigin>().is_err(), "{bad}");
        }
        let g = gate("127.0.0.1:8000", &[], &["https://app.example", "null"]);
        let host = ("host", "127.0.0.1:8000");
        let ok = g
            .check(&request(&[host, ("origin", "https://app.example")]))
            .unwrap();
        assert_eq!(ok.unwrap(), "https://app.example");
        assert!(g
            .check(&request(&[host, ("origin", "null")]))
            .unwrap()
            .is_some());
        for origin in [
            "https://app.example:8443",
            "http://app.example",
            "https://evil.example",
        ] {
            let e = g.check(&request(&[host, ("origin", origin)])).unwrap_err();
            assert_eq!(e.status(), StatusCode::FORBIDDEN, "{origin}");
        }
        let no_null = gate("127.0.0.1:8000", &[], &[]);
        assert!(no_null
            .check(&request(&[host, ("origin", "null")]))
            .is_err());
        // Sec-Fetch-Site: other sites are refused without an allowed origin; the user's own navigation is not.
        for (site, refused) in [
            ("cross-site", true),
            ("same-site", true),
            ("same-origin", false),
            ("none", false),
        ] {
            let r = no_null.check(&request(&[host, ("sec-fetch-site", site)]));
            assert_eq!(r.is_err(), refused, "{site}");
        }
        let r = g.check(&request(&[
            host,
            ("origin", "https://app.example"),
            ("sec-fetch-site", "cross-site"),
        ]));
        assert!(r.is_ok());
    }
}
