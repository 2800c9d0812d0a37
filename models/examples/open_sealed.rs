//! Opens a sealed model from a file with its key from a keystore and reports the process's peak memory,
//! to check that streaming decryption needs the plaintext plus about one chunk, not two copies.
//!
//! ```sh
//! cloister seal --model M.onnx --out M.sealed --keystore KS
//! cargo run --release -p cloister-models --example open_sealed -- M.sealed KS
//! /usr/bin/time -v target/release/examples/open_sealed M.sealed KS
//! ```
#![allow(clippy::expect_used, missing_docs)]

use std::fs::File;
use std::io::BufReader;

use cloister_models::{open_expecting, read_header, Keystore, MAX_PLAINTEXT_LEN};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sealed = args.next().expect("usage: open_sealed SEALED KEYSTORE");
    let keystore = args.next().expect("usage: open_sealed SEALED KEYSTORE");
    let (header, _) = read_header(File::open(&sealed).expect("sealed file")).expect("header");
    let key = Keystore::open(&keystore)
        .expect("keystore")
        .get(header.digest())
        .expect("key");
    let before = vm_hwm_kib();
    let start = std::time::Instant::now();
    let plaintext = open_expecting(
        BufReader::new(File::open(&sealed).expect("sealed file")),
        &key,
        header.digest(),
        MAX_PLAINTEXT_LEN,
    )
    .expect("open");
    let elapsed = start.elapsed();
    let len = plaintext.len() as u64;
    println!(
        "opened {} ({} bytes, chunk {} bytes) in {:.1} ms: {:.0} MB/s; peak RSS {} KiB before, {} KiB after = plaintext + {} KiB",
        header.name(),
        len,
        header.chunk_size(),
        elapsed.as_secs_f64() * 1e3,
        len as f64 / elapsed.as_secs_f64() / 1e6,
        before,
        vm_hwm_kib(),
        vm_hwm_kib().saturating_sub(before).saturating_sub(len / 1024),
    );
}
