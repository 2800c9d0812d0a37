//! One bounded HTTP/1.1 GET: what the KDS client needs, and nothing it does not (no redirects, no cookies,
//! no connection pool). The answer is untrusted: its size is bounded and everything it carries is verified
//! against AMD's root by the caller before it is used or cached.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The answer to a GET.
#[derive(Debug)]
pub(crate) struct Response {
    /// HTTP status.
    pub(crate) status: u16,
    /// `Retry-After`, when the server sent one (delay-seconds or an HTTP-date).
    pub(crate) retry_after: Option<Duration>,
    /// The body (at most the limit).
    pub(crate) body: Bytes,
}

/// GETs `url` within `timeout`, reading at most `max_body` bytes of body.
pub(crate) async fn get(url: &str, timeout: Duration, max_body: usize) -> Result<Response, String> {
    get_with(url, &[], timeout, max_body).await
}

/// [`get`] with extra request headers.
pub(crate) async fn get_with(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    max_body: usize,
) -> Result<Response, String> {
    tokio::time::timeout(timeout, get_inner(url, headers, max_body))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn get_inner(
    url: &str,
    headers: &[(&str, &str)],
    max_body: usize,
) -> Result<Response, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().ok_or("URL without a host")?.to_owned();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http:// and https:// URLs".into()),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = TcpStream::connect((connect_host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
    let mut request = Request::builder().method("GET");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .uri(path)
        .header("host", authority)
        .header(
            "user-agent",
            concat!("cloister/", env!("CARGO_PKG_VERSION")),
        )
        .header("accept", "*/*")
        .header("connection", "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        #[cfg(feature = "https")]
        {
            let tls = tls_connect(&connect_host, tcp).await?;
            return exchange(TokioIo::new(tls), request, max_body).await;
        }
        #[cfg(not(feature = "https"))]
        {
            return Err("this build has no HTTPS client (feature `https`)".into());
        }
    }
    exchange(TokioIo::new(tcp), request, max_body).await
}

#[cfg(feature = "https")]
async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use std::sync::Arc;
    // WebPKI roots authenticate the server for transport hygiene only: what it serves is checked against
    // AMD's root anyway.
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("bad TLS server name {host:?}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))
}

async fn exchange<I>(
    io: I,
    request: Request<Empty<Bytes>>,
    max_body: usize,
) -> Result<Response, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("body (at most {max_body} bytes): {e}"))?
        .to_bytes();
    Ok(Response {
        status,
        retry_after,
        body,
    })
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 9110 §10.2.3) relative to now.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = date - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs(
        u64::try_from(delta.whole_seconds()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
