#!/usr/bin/env python3
"""Generate offline "keyless" Sigstore test material for Cloister.

Builds a local test CA (a stand-in for Fulcio), issues a short-lived leaf
certificate carrying a signer identity, has the reference OpenSSF signer
(`python -m model_signing sign certificate`) produce the DSSE bundle with it,
then attaches a transparency-log entry from a local test log (a stand-in for
Rekor: signed entry timestamp, RFC 6962 inclusion proof and signed checkpoint)
and writes a matching `trusted_root.json`.

The log entry is not covered by the DSSE signature, exactly as with Sigstore,
where Rekor's entry is attached after signing.

Usage:
    make_keyless.py OUTDIR MODEL_PATH [--identity producer@example.com]
        [--issuer https://accounts.example.com] [--expired]
        [--no-inclusion-proof] [--no-promise]

Writes OUTDIR/model.sig and OUTDIR/trusted_root.json. Private keys only ever
live in a temporary directory that is removed before exiting.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
LOG_ORIGIN = "rekor.test.example - 4242"
GLOBAL_LOG_INDEX = 1004
TREE_LEAF_INDEX = 4
TREE_SIZE = 7

OID_FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


class GenError(Exception):
    pass


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def utc(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


# --------------------------------------------------------------------------
# DER helpers
# --------------------------------------------------------------------------


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_utf8string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"\x0c" + der_length(len(raw)) + raw


# --------------------------------------------------------------------------
# Certificates (the local "Fulcio")
# --------------------------------------------------------------------------


def make_ca(t0: int):
    long_start = utc(t0 - 86400)
    long_end = utc(t0 + 10 * 365 * 86400)

    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "cloister-test-fulcio-root"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cloister-test"),
        ]
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(long_start)
        .not_valid_after(long_end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(root_key, hashes.SHA384())
    )

    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "cloister-test-fulcio-intermediate"),
        ]
    )
    inter = (
        x509.CertificateBuilder()
        .subject_name(inter_name)
        .issuer_name(root_name)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(long_start)
        .not_valid_after(long_end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(root_key, hashes.SHA384())
    )
    return root_key, root, inter_key, inter


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_leaf(t0: int, inter_key, inter, identity: str, issuer: str):
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    if "://" in identity:
        san = x509.UniformResourceIdentifier(identity)
    else:
        san = x509.RFC822Name(identity)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(inter.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc(t0))
        .not_valid_after(utc(t0 + 600))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(OID_FULCIO_ISSUER_V1, issuer.encode("utf-8")),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(OID_FULCIO_ISSUER_V2, der_utf8string(issuer)),
            critical=False,
        )
        .sign(inter_key, hashes.SHA384())
    )
    return leaf_key, leaf


# --------------------------------------------------------------------------
# RFC 6962 / RFC 9162 Merkle tree (the local "Rekor")
# --------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = split_point(n)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def audit_path(m: int, leaves) -> list:
    """PATH(m, D[n]) per RFC 6962 section 2.1.1, leaf-to-root order."""
    n = len(leaves)
    if n <= 1:
        return []
    k = split_point(n)
    if m < k:
        return audit_path(m, leaves[:k]) + [mth(leaves[k:])]
    return audit_path(m - k, leaves[k:]) + [mth(leaves[:k])]


def verify_inclusion(index: int, size: int, lhash: bytes, path, root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2 inclusion proof verification."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, lhash
    for p in path:
        if sn == 0:
            return False
        if (fn & 1) or fn == sn:
            r = node_hash(p, r)
            if not (fn & 1):
                while not (fn & 1) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def self_test_mth() -> None:
    vec = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
    ]
    got1 = mth(vec[:1]).hex()
    got8 = mth(vec).hex()
    want1 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    want8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    if got1 != want1 or got8 != want8:
        raise GenError(f"MTH self-test failed: got {got1} / {got8}")
    # Every leaf of every tree size up to 8 must prove against its root.
    for n in range(1, len(vec) + 1):
        root = mth(vec[:n])
        for m in range(n):
            path = audit_path(m, vec[:n])
            if not verify_inclusion(m, n, leaf_hash(vec[m]), path, root):
                raise GenError(f"inclusion self-test failed for leaf {m} of {n}")
            if path and verify_inclusion(m, n, leaf_hash(vec[m] + b"x"), path, root):
                raise GenError(f"inclusion self-test accepted a wrong leaf {m} of {n}")


# --------------------------------------------------------------------------
# DSSE helpers
# --------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def run_signer(python: str, model_path: str, tmp: pathlib.Path, leaf_key, leaf, inter, root) -> dict:
    key_pem = tmp / "leaf.key.pem"
    leaf_pem = tmp / "leaf.pem"
    inter_pem = tmp / "intermediate.pem"
    root_pem = tmp / "root.pem"
    sig_out = tmp / "model.sig"
    fd = os.open(key_pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    inter_pem.write_bytes(inter.public_bytes(serialization.Encoding.PEM))
    root_pem.write_bytes(root.public_bytes(serialization.Encoding.PEM))

    cmd = [
        python, "-m", "model_signing", "sign", "certificate", model_path,
        "--private_key", str(key_pem),
        "--signing_certificate", str(leaf_pem),
        "--certificate_chain", str(inter_pem),
        "--certificate_chain", str(root_pem),
        "--signature", str(sig_out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GenError(
            f"model_signing sign certificate failed (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    if not sig_out.is_file():
        raise GenError("model_signing did not write a signature file")
    return json.loads(sig_out.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def generate(args) -> None:
    self_test_mth()

    t0 = int(time.time()) - 300
    integrated_time = t0 + (3600 if args.expired else 60)

    outdir = pathlib.Path(args.outdir)
    model_path = args.model_path
    if not os.path.exists(model_path):
        raise GenError(f"model path does not exist: {model_path}")

    root_key, root, inter_key, inter = make_ca(t0)
    leaf_key, leaf = make_leaf(t0, inter_key, inter, args.identity, args.issuer)
    del root_key, inter_key

    with tempfile.TemporaryDirectory(prefix="cloister-keyless-") as tmpdir:
        bundle = run_signer(args.python, model_path, pathlib.Path(tmpdir), leaf_key, leaf, inter, root)
    del leaf_key

    # ---- inspect what the reference signer produced ----
    vm = bundle.get("verificationMaterial")
    if not isinstance(vm, dict):
        raise GenError("bundle has no verificationMaterial")
    if "x509CertificateChain" in vm:
        certs = vm["x509CertificateChain"].get("certificates", [])
        if not certs:
            raise GenError("x509CertificateChain is empty")
        first_der = base64.b64decode(certs[0]["rawBytes"])
    elif "certificate" in vm:
        first_der = base64.b64decode(vm["certificate"]["rawBytes"])
    else:
        raise GenError(f"unexpected verificationMaterial keys: {sorted(vm)}")
    if first_der != leaf.public_bytes(serialization.Encoding.DER):
        raise GenError("first certificate in the bundle is not the leaf")

    env = bundle.get("dsseEnvelope")
    if not isinstance(env, dict) or not env.get("signatures"):
        raise GenError("bundle has no dsseEnvelope with signatures")
    payload = base64.b64decode(env["payload"])
    payload_type = env["payloadType"]
    sig_b64 = env["signatures"][0]["sig"]

    # Sanity: the DSSE signature verifies under the leaf key (P-256 → SHA-256).
    try:
        leaf.public_key().verify(base64.b64decode(sig_b64), pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise GenError("DSSE signature does not verify under the leaf key")

    # ---- the local log ----
    log_key = ec.generate_private_key(ec.SECP256R1())
    spki = log_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    log_id = hashlib.sha256(spki).digest()

    envelope_json = compact(
        {"payload": env["payload"], "payloadType": payload_type, "signatures": env["signatures"]}
    )
    leaf_pem_text = leaf.public_bytes(serialization.Encoding.PEM)
    body_obj = {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {
                "algorithm": "sha256",
                "value": hashlib.sha256(envelope_json.encode("utf-8")).hexdigest(),
            },
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": sig_b64, "verifier": b64(leaf_pem_text)}],
        },
    }
    body = compact(body_obj).encode("utf-8")
    body_b64 = b64(body)

    leaves = [b"cloister-test-entry-%d" % i for i in range(TREE_SIZE)]
    leaves[TREE_LEAF_INDEX] = body
    root_hash = mth(leaves)
    path = audit_path(TREE_LEAF_INDEX, leaves)
    if not verify_inclusion(TREE_LEAF_INDEX, TREE_SIZE, leaf_hash(body), path, root_hash):
        raise GenError("inclusion proof self-check failed")

    note_body = f"{LOG_ORIGIN}\n{TREE_SIZE}\n{b64(root_hash)}\n"
    note_sig = log_key.sign(note_body.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    note = note_body + "\n" + "\u2014 " + LOG_ORIGIN + " " + b64(log_id[:4] + note_sig) + "\n"

    set_message = (
        '{"body":"%s","integratedTime":%d,"logID":"%s","logIndex":%d}'
        % (body_b64, integrated_time, log_id.hex(), GLOBAL_LOG_INDEX)
    ).encode("utf-8")
    set_sig = log_key.sign(set_message, ec.ECDSA(hashes.SHA256()))

    # Self-check the log signatures.
    try:
        log_key.public_key().verify(set_sig, set_message, ec.ECDSA(hashes.SHA256()))
        log_key.public_key().verify(note_sig, note_body.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise GenError("log signature self-check failed")
    del log_key

    entry = {
        "logIndex": str(GLOBAL_LOG_INDEX),
        "logId": {"keyId": b64(log_id)},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": str(integrated_time),
    }
    if not args.no_promise:
        entry["inclusionPromise"] = {"signedEntryTimestamp": b64(set_sig)}
    if not args.no_inclusion_proof:
        entry["inclusionProof"] = {
            "logIndex": str(TREE_LEAF_INDEX),
            "rootHash": b64(root_hash),
            "treeSize": str(TREE_SIZE),
            "hashes": [b64(h) for h in path],
            "checkpoint": {"envelope": note},
        }
    entry["canonicalizedBody"] = body_b64

    vm["tlogEntries"] = [entry]
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        bundle["mediaType"] = BUNDLE_MEDIA_TYPE

    trusted_root = {
        "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
        "tlogs": [
            {
                "baseUrl": "https://rekor.test.example",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                },
                "logId": {"keyId": b64(log_id)},
            }
        ],
        "certificateAuthorities": [
            {
                "subject": {"organization": "cloister-test", "commonName": "cloister-test-fulcio"},
                "uri": "https://fulcio.test.example",
                "certChain": {
                    "certificates": [
                        {"rawBytes": b64(inter.public_bytes(serialization.Encoding.DER))},
                        {"rawBytes": b64(root.public_bytes(serialization.Encoding.DER))},
                    ]
                },
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }
        ],
        "ctlogs": [],
        "timestampAuthorities": [],
    }

    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "model.sig").write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
    (outdir / "trusted_root.json").write_text(json.dumps(trusted_root, indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Generate offline keyless Sigstore test bundles.")
    ap.add_argument("outdir", help="output directory (model.sig, trusted_root.json)")
    ap.add_argument("model_path", help="model file or directory to sign")
    ap.add_argument("--identity", default="producer@example.com",
                    help="SAN identity: e-mail, or URI if it contains '://'")
    ap.add_argument("--issuer", default="https://accounts.example.com", help="OIDC issuer")
    ap.add_argument("--expired", action="store_true",
                    help="integratedTime after the leaf certificate's notAfter")
    ap.add_argument("--no-inclusion-proof", action="store_true", help="omit inclusionProof")
    ap.add_argument("--no-promise", action="store_true", help="omit inclusionPromise (SET)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter with model_signing installed (default: this one)")
    args = ap.parse_args(argv)
    try:
        generate(args)
    except (GenError, OSError, ValueError, KeyError, TypeError) as e:
        print(f"make_keyless: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
