//! A stand-in for AMD's KDS on loopback, for tests: it serves given bodies at given exact paths (path and
//! query, byte for byte) and answers 404 to anything else, so a client that writes a URL slightly wrong
//! (padding, hwID length, a missing or reordered SPL) fails. It can answer 429 with `Retry-After` to the first
//! N requests, delay every answer, count what it was asked, and stop.
//!
//! Plain std threads, no HTTP library: what the client sends is read as it arrives on the wire. Included by
//! other crates' tests with `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the stand-in misbehaves.
#[derive(Clone, Debug, Default)]
pub(crate) struct Behaviour {
    /// Answer this many requests with 429 first.
    pub(crate) throttle_first: u32,
    /// The `Retry-After` of those answers (seconds); none when `None`.
    pub(crate) retry_after: Option<u32>,
    /// Wait this long before every answer.
    pub(crate) delay: Duration,
}

/// Answers a path (with query) with a body, or `None` (404).
pub(crate) type Router = Box<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

struct Shared {
    routes: Router,
    behaviour: Behaviour,
    throttled: AtomicU32,
    requests: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// A running stand-in.
pub(crate) struct KdsStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl KdsStandIn {
    /// Serves `routes` (exact path with query → body).
    pub(crate) fn start(routes: HashMap<String, Vec<u8>>, behaviour: Behaviour) -> Self {
        Self::start_with(Box::new(move |path| routes.get(path).cloned()), behaviour)
    }

    /// Serves what `routes` answers, asked at each request (for collateral that exists only later).
    pub(crate) fn start_with(routes: Router, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            routes,
            behaviour,
            throttled: AtomicU32::new(0),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || answer(&s, conn));
            }
        });
        KdsStandIn {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request path received so far, in order.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests asked for `path`.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|p| *p == path).count()
    }

    /// Stops listening: later connections are refused.
    pub(crate) fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for KdsStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(s: &Shared, conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain the headers.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    s.requests.lock().unwrap().push(target.to_owned());
    std::thread::sleep(s.behaviour.delay);
    let mut conn = conn;
    let found: Vec<u8>;
    let throttle = s.throttled.fetch_add(1, Ordering::SeqCst) < s.behaviour.throttle_first;
    let (status, extra, body): (&str, String, &[u8]) = if method != "GET" {
        ("405 Method Not Allowed", String::new(), b"")
    } else if throttle {
        let extra = s
            .behaviour
            .retry_after
            .map(|r| format!("Retry-After: {r}\r\n"))
            .unwrap_or_default();
        ("429 Too Many Requests", extra, b"rate limited\n")
    } else {
        match (s.routes)(target) {
            Some(b) => {
                found = b;
                ("200 OK", String::new(), found.as_slice())
            }
            None => ("404 Not Found", String::new(), b"not found\n"),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

/// The real evidence of `../shared/vectors/snp`.
pub(crate) fn vectors() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp")
}

/// AMD's VCEK path, written out here independently of the client's code: `/vcek/v1/{product}/{hwid}?` then
/// the SPLs, two-digit decimal, `fmcSPL` first on Turin.
pub(crate) fn vcek_path(product: &str, chip_id: &[u8], tcb: [u8; 4], fmc: Option<u8>) -> String {
    let hwid = if product == "Turin" {
        &chip_id[..8]
    } else {
        &chip_id[..64]
    };
    let hex: String = hwid.iter().map(|b| format!("{b:02x}")).collect();
    let fmc = fmc.map(|f| format!("fmcSPL={f:02}&")).unwrap_or_default();
    format!(
        "/vcek/v1/{product}/{hex}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
        tcb[0], tcb[1], tcb[2], tcb[3]
    )
}

/// The real collateral of one vector set at AMD's paths: the chain (`{tree}/v1/{product}/cert_chain`:
/// intermediate then ARK, PEM), the VCEK (DER) at its path (VCEK sets), and the CRLs the vectors hold.
pub(crate) fn routes_for(set: &str, product: &str) -> HashMap<String, Vec<u8>> {
    let dir = vectors().join(set);
    let report = std::fs::read(dir.join("report.bin")).unwrap();
    let mut routes = HashMap::new();
    let vlek = dir.join("vlek.der").exists();
    let (tree, inter) = if vlek {
        ("vlek", "asvk.pem")
    } else {
        ("vcek", "ask.pem")
    };
    let mut chain = std::fs::read(dir.join(inter)).unwrap();
    chain.extend(std::fs::read(dir.join("ark.pem")).unwrap());
    routes.insert(format!("/{tree}/v1/{product}/cert_chain"), chain);
    if !vlek {
        // REPORTED_TCB at 0x180 (8 bytes); CHIP_ID at 0x1A0 (64 bytes).
        let t = &report[0x180..0x188];
        let chip_id = &report[0x1A0..0x1E0];
        let (tcb, fmc) = if product == "Turin" {
            // Turin layout: FMC, BOOT_LOADER, TEE, SNP, reserved…, MICROCODE at byte 7.
            ([t[1], t[2], t[3], t[7]], Some(t[0]))
        } else {
            // Milan/Genoa: BOOT_LOADER, TEE, reserved[4], SNP, MICROCODE.
            ([t[0], t[1], t[6], t[7]], None)
        };
        routes.insert(
            vcek_path(product, chip_id, tcb, fmc),
            std::fs::read(dir.join("vcek.der")).unwrap(),
        );
    }
    // The CRLs AMD's KDS served for Milan and Genoa, as captured in the openpcc set. Both trees of a product
    // are signed by the same ARK; the vectors hold one CRL per product, served here for both.
    let crls = vectors().join("openpcc_azure_genoa_vcek_v3_with_crls");
    for (p, file) in [("Genoa", "crl_genoa.der"), ("Milan", "crl_milan.der")] {
        if p == product {
            let der = std::fs::read(crls.join(file)).unwrap();
            routes.insert(format!("/vcek/v1/{product}/crl"), der.clone());
            routes.insert(format!("/vlek/v1/{product}/crl"), der);
        }
    }
    routes
}
