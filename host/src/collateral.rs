//! `GET /collateral/<KDS path>`: a mirror of AMD's Key Distribution Service for the enclave.
//!
//! Hosts no longer attach certificates to extended reports (upstream KVM dropped the certificate table), so
//! an enclave on real hardware has a report and no VCEK. It asks here, with AMD's own path
//! (`/collateral/vcek/v1/Genoa/{hwid}?blSPL=…`); the host answers from its collateral client: memory, the
//! on-disk cache (`--collateral-cache`, Trustee's layout), an offline bundle (`--collateral`), or AMD's KDS
//! (`--kds-url`), with single flight and AMD's rate limits honoured.
//!
//! Trust: none needed. The host verifies what it fetches before caching it (hygiene: a poisoned cache would
//! only make the enclave fail), and the enclave verifies it again against AMD's root, its CHIP_ID and its
//! REPORTED_TCB before evidence carries it. Only exact KDS paths are answered; anything else is 404.

use bytes::Bytes;
use cloister_collateral::{Collateral, Error};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode, Uri};

use crate::body::BlobBody;

/// Path prefix of collateral requests.
pub const PREFIX: &str = "/collateral/";

/// Answers one collateral request.
pub async fn respond(collateral: Option<&Collateral>, uri: &Uri) -> Response<BlobBody> {
    let Some(collateral) = collateral else {
        return text(
            StatusCode::NOT_FOUND,
            "this host serves no collateral (start it with --kds-url, --collateral-cache or --collateral)\n"
                .into(),
        );
    };
    let full = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let kds_path = &full[PREFIX.len() - 1..];
    match collateral.by_path(kds_path).await {
        None => text(
            StatusCode::NOT_FOUND,
            "not a KDS path (/vcek|vlek/v1/{product}/{hwid}?…SPL=NN…, /cert_chain, /crl)\n".into(),
        ),
        Some(Ok(body)) => {
            tracing::info!(path = kds_path, bytes = body.len(), "collateral: serving");
            let mut resp = Response::new(BlobBody::bytes(body));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        Some(Err(e)) => {
            tracing::warn!(path = kds_path, "collateral: {e}");
            let status = match e {
                Error::NotFound { .. } | Error::Offline { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            };
            text(status, format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, msg: String) -> Response<BlobBody> {
    let mut resp = Response::new(BlobBody::bytes(Bytes::from(msg)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
