#!/usr/bin/env python3
"""Render the Cloister Kubernetes manifests from values.toml and the CoCo initdata document.

    render.py --values deploy/kubernetes/values.toml --out DIR [--initdata FILE]
    render.py --values deploy/kubernetes/values.toml --print-annotation
    render.py --initdata FILE --print-annotation

Reads the values (TOML), reads the initdata document's exact bytes (the file written by
`cloister initdata --enclave-config enclave.toml --out initdata.toml`), computes the pod annotation
io.katacontainers.config.hypervisor.cc_init_data = base64(gzip(bytes)) (gzip with mtime 0 and fixed
header fields, so the same document always gives the same annotation), validates every input, fills the
templates in templates/ (Python string.Template, ${var}), and writes DIR/*.yaml plus DIR/kustomization.yaml
listing them, so `kubectl apply -k DIR` applies the lot and overlays can build on DIR.

The HOST_DATA that verifiers pin is a digest of the same initdata bytes; `cloister initdata` prints it.
This tool does not compute it: it only carries the document, byte for byte, to Kata.

Python 3.11+ standard library only. Exit status: 0 rendered, 2 invalid input (the message says which
value and why), 1 an output file could not be written.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import math
import os
import re
import string
import struct
import sys
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"

MIB = 1024 * 1024
# Memory request = limit = max(512 MiB, 3 x plaintext model bytes + 256 MiB), rounded up to a whole MiB,
# plus `extra_memory_mib`. Three copies: the sealed blob as fetched, its decrypted plaintext, and tract's
# loaded model, which coexist until the plaintext is zeroized; 256 MiB for the runtime, TLS sessions and
# request buffers. (Under Kata the pod VM gets this on top of the runtime class's base VM memory.)
MEMORY_FLOOR_MIB = 512
MEMORY_HEADROOM_MIB = 256
MEMORY_MODEL_COPIES = 3

INITDATA_ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
# Kubernetes caps the total size of an object's annotations at 256 KiB; the other pod annotations are small.
MAX_ANNOTATION_BYTES = 256 * 1024 - 4096

# The schemes `cloister-enclave --blobs` accepts (enclave/src/blobs.rs: `http(s)://HOST[:PORT][/PREFIX]`).
# The blob store is untrusted (every blob is AEAD- and digest-checked), so plain HTTP is fine.
BLOB_URL_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

KSERVE_DEPLOYMENT_MODES = ("RawDeployment", "Standard")

# Where the enclave reads the document when it is mounted from a ConfigMap (initdata_configmap = true).
INITDATA_MOUNT_DIR = "/etc/cloister/initdata"
INITDATA_FILE = "initdata.toml"
# The initdata versions `cloister-enclave` reads (attestation/src/initdata.rs), and its size bound.
INITDATA_VERSIONS = ("0.1.0",)
MAX_INITDATA_LEN = 1024 * 1024

# Template file -> rendered in which variant ("both", "plain" = Deployment + Service, "kserve").
TEMPLATE_VARIANTS = {
    "configmap.yaml": "both",
    "deployment.yaml": "plain",
    "service.yaml": "plain",
    "inferenceservice.yaml": "kserve",
    "hpa.yaml": "both",
    "networkpolicy.yaml": "both",
}

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?$")
# An image reference pinned by digest only: [registry[:port]/]path@sha256:<64 lowercase hex>.
_IMAGE_BY_DIGEST = re.compile(
    r"^(?:(?P<registry>[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?(?::[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"@sha256:(?P<digest>[0-9a-f]{64})$"
)
_MODEL_DIGEST = re.compile(r"^sha384:[0-9a-f]{96}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CPU = re.compile(r"^(?:[0-9]+(?:\.[0-9]{1,3})?|[0-9]+m)$")
_QUANTITY = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?)(?:m|k|M|G|Ki|Mi|Gi)?$")


class InputError(Exception):
    """Invalid input: reported with the key it concerns; exit status 2."""


@dataclass
class Model:
    name: str
    digest: str
    bytes: int


@dataclass
class Values:
    path: Path
    name: str
    namespace: str
    image: str
    runtime_class: str
    replicas: int
    cpu: str
    extra_memory_mib: int
    blobs_url: str
    blobs_port: int
    initdata: Path
    initdata_configmap: bool
    models: list[Model]
    key_broker_address: str
    key_broker_cidr: str
    key_broker_port: int
    blob_store_cidr: str
    blob_store_port: int
    registry_cidr: str | None
    registry_port: int | None
    hpa_enabled: bool
    hpa_min: int
    hpa_max: int
    hpa_target: str
    kserve_enabled: bool
    kserve_deployment_mode: str
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Values


def _take(table: dict, key: str, where: str, kind, *, required: bool = True, default=None):
    full = f"{where}{key}"
    if key not in table:
        if required:
            raise InputError(f"values: `{full}` is required")
        return default
    value = table[key]
    if kind is int and isinstance(value, bool):
        raise InputError(f"values: `{full}` must be an integer (found {value!r})")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"values: `{full}` must be {names} (found {type(value).__name__} {value!r})")
    return value


def _no_unknown(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        keys = ", ".join(f"`{where}{k}`" for k in unknown)
        raise InputError(f"values: unknown key(s) {keys} (a typo? allowed: {', '.join(sorted(allowed))})")


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host without brackets, port)."""
    m = re.fullmatch(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<port>[0-9]{1,5})|(?P<host>[^:\[\]/@\s]+):(?P<port2>[0-9]{1,5})", text)
    if not m:
        raise InputError(f"values: `{what}` must be HOST:PORT or [IPv6]:PORT (found {text!r})")
    host = m.group("v6") or m.group("host")
    port = int(m.group("port") or m.group("port2"))
    if not 1 <= port <= 65535:
        raise InputError(f"values: `{what}`: port must be 1..65535 (found {port})")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InputError(f"values: `{what}`: {host!r} is not an IPv6 address") from None
    elif not _is_ip(host) and not _HOSTNAME.match(host):
        raise InputError(f"values: `{what}`: {host!r} is neither an IP address nor a DNS name")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def parse_cidr(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InputError(f"values: `{what}` must be a string CIDR such as 10.0.0.0/24")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        hint = ""
        try:
            hint = f" (did you mean {ipaddress.ip_network(text, strict=False)}?)"
        except ValueError:
            pass
        raise InputError(f"values: `{what}` = {text!r} is not a CIDR: {e}{hint}") from None
    if "/" not in text:
        raise InputError(f"values: `{what}` = {text!r} needs a prefix length, e.g. {text}/32")
    return str(net)


def _check_in_cidr(host: str, cidr: str, what: str) -> None:
    if _is_ip(host) and ipaddress.ip_address(host) not in ipaddress.ip_network(cidr):
        raise InputError(f"values: {what}: address {host} is outside its NetworkPolicy CIDR {cidr}")


def parse_port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InputError(f"values: `{what}` must be a port number 1..65535 (found {value!r})")
    return value


def parse_blobs_url(url: str) -> tuple[str, int]:
    """Mirrors `BlobService::parse` in enclave/src/blobs.rs: http(s)://HOST[:PORT][/PREFIX] (default ports
    80 and 443), no user info, query or fragment. Returns (host, port)."""
    m = re.fullmatch(r"(?P<scheme>[a-z]+)://(?P<authority>[^/]*)(?P<path>/[^\s\"'\\]*)?", url)
    if not m or m.group("scheme") not in BLOB_URL_SCHEMES:
        schemes = " or ".join(f"{s}://" for s in BLOB_URL_SCHEMES)
        raise InputError(
            f"values: `blobs_url` must be {schemes}HOST[:PORT][/PREFIX] (what `cloister-enclave --blobs` accepts; "
            f"found {url!r})"
        )
    authority, path = m.group("authority"), m.group("path") or ""
    if "@" in authority or "?" in path or "#" in path:
        raise InputError(f"values: `blobs_url` must not have user info, a query or a fragment (found {url!r})")
    if not re.search(r":[0-9]+$", authority):
        authority = f"{authority}:{DEFAULT_PORTS[m.group('scheme')]}"
    host, port = parse_host_port(authority, "blobs_url")
    return host, port


def load_values(path: Path, overrides: dict | None = None) -> Values:
    """Parse and validate values.toml. `overrides` (tests, check.py) are merged over the top-level tables."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"values: {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"values: {path} is not valid TOML: {e}") from None
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value

    _no_unknown(
        raw,
        {"name", "namespace", "image", "runtime_class", "replicas", "cpu", "extra_memory_mib", "blobs_url",
         "initdata", "initdata_configmap", "models", "key_broker", "blob_store", "image_registry", "hpa", "kserve"},
        "",
    )

    name = _take(raw, "name", "", str)
    if len(name) > 63 - len("-predictor") or not _DNS1035.match(name):
        raise InputError(
            f"values: `name` = {name!r} must be a DNS-1035 label (lowercase letters, digits, '-', starting with a "
            f"letter) of at most {63 - len('-predictor')} characters (Service names; KServe appends -predictor)"
        )
    namespace = _take(raw, "namespace", "", str)
    if len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        raise InputError(f"values: `namespace` = {namespace!r} must be a DNS-1123 label")

    image = _take(raw, "image", "", str)
    if not _IMAGE_BY_DIGEST.match(image):
        if re.search(r"@sha256:[0-9a-f]{64}$", image) and ":" in image.rsplit("/", 1)[-1].split("@")[0]:
            why = "it has both a tag and a digest: drop the tag, keep REPO@sha256:..."
        elif "@" not in image:
            why = "it is not pinned by digest (a tag can be moved to another image by whoever controls the registry)"
        else:
            why = "the digest must be sha256: followed by 64 lowercase hex digits"
        raise InputError(
            f"values: `image` = {image!r} is refused: {why}. Use REGISTRY/REPO@sha256:<64 hex> "
            f"(scripts/build-image.sh --push prints it)"
        )

    runtime_class = _take(raw, "runtime_class", "", str, required=False, default="kata-qemu-snp")
    if len(runtime_class) > 253 or not _DNS1123_SUBDOMAIN.match(runtime_class):
        raise InputError(f"values: `runtime_class` = {runtime_class!r} must be a DNS-1123 subdomain")

    replicas = _take(raw, "replicas", "", int)
    if replicas < 1:
        raise InputError(f"values: `replicas` must be at least 1 (found {replicas})")

    cpu_raw = _take(raw, "cpu", "", (str, int, float))
    cpu = str(cpu_raw) if not isinstance(cpu_raw, str) else cpu_raw
    if isinstance(cpu_raw, bool) or not _CPU.match(cpu) or float(cpu.rstrip("m")) == 0:
        raise InputError(f"values: `cpu` = {cpu_raw!r} must be a positive CPU quantity such as \"2\", \"1.5\" or \"500m\"")

    extra_memory_mib = _take(raw, "extra_memory_mib", "", int, required=False, default=0)
    if extra_memory_mib < 0:
        raise InputError(f"values: `extra_memory_mib` must be 0 or more (found {extra_memory_mib})")

    blobs_url = _take(raw, "blobs_url", "", str)
    blobs_host, blobs_port = parse_blobs_url(blobs_url)

    initdata_rel = _take(raw, "initdata", "", str)
    initdata = (path.parent / initdata_rel).resolve()
    initdata_configmap = _take(raw, "initdata_configmap", "", bool, required=False, default=False)

    models_raw = _take(raw, "models", "", list)
    if not models_raw:
        raise InputError("values: at least one [[models]] entry is required")
    models: list[Model] = []
    for i, m in enumerate(models_raw):
        where = f"models[{i}]."
        if not isinstance(m, dict):
            raise InputError(f"values: `models[{i}]` must be a table ([[models]])")
        _no_unknown(m, {"name", "digest", "bytes"}, where)
        mname = _take(m, "name", where, str)
        if not _MODEL_NAME.match(mname):
            raise InputError(f"values: `{where}name` = {mname!r} must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
        digest = _take(m, "digest", where, str)
        if not _MODEL_DIGEST.match(digest):
            raise InputError(
                f"values: `{where}digest` = {digest!r} must be \"sha384:\" followed by 96 lowercase hex digits "
                f"(the sealed model's digest, as `cloister seal` prints it)"
            )
        nbytes = _take(m, "bytes", where, int)
        if nbytes < 1:
            raise InputError(f"values: `{where}bytes` (the plaintext model size) must be at least 1 (found {nbytes})")
        models.append(Model(mname, digest, nbytes))
    for attr in ("name", "digest"):
        seen = [getattr(m, attr) for m in models]
        dup = {v for v in seen if seen.count(v) > 1}
        if dup:
            raise InputError(f"values: model {attr} {sorted(dup)[0]!r} appears twice in [[models]]")

    kb = _take(raw, "key_broker", "", dict)
    _no_unknown(kb, {"address", "cidr"}, "key_broker.")
    kb_address = _take(kb, "address", "key_broker.", str)
    kb_host, kb_port = parse_host_port(kb_address, "key_broker.address")
    kb_cidr = parse_cidr(_take(kb, "cidr", "key_broker.", str), "key_broker.cidr")
    _check_in_cidr(kb_host, kb_cidr, "key_broker.address")

    bs = _take(raw, "blob_store", "", dict)
    _no_unknown(bs, {"cidr", "port"}, "blob_store.")
    bs_cidr = parse_cidr(_take(bs, "cidr", "blob_store.", str), "blob_store.cidr")
    bs_port = parse_port(bs.get("port", blobs_port), "blob_store.port")
    if bs_port != blobs_port:
        raise InputError(
            f"values: `blob_store.port` = {bs_port} differs from the port of `blobs_url` ({blobs_port}): the "
            f"NetworkPolicy would block the enclave's blob fetches"
        )
    _check_in_cidr(blobs_host, bs_cidr, "blobs_url")

    registry_cidr = registry_port = None
    if "image_registry" in raw:
        reg = _take(raw, "image_registry", "", dict)
        _no_unknown(reg, {"cidr", "port"}, "image_registry.")
        registry_cidr = parse_cidr(_take(reg, "cidr", "image_registry.", str), "image_registry.cidr")
        registry_port = parse_port(reg.get("port", 443), "image_registry.port")

    hpa = _take(raw, "hpa", "", dict)
    _no_unknown(hpa, {"enabled", "min_replicas", "max_replicas", "target_requests_per_second"}, "hpa.")
    hpa_enabled = _take(hpa, "enabled", "hpa.", bool, required=False, default=True)
    hpa_min = _take(hpa, "min_replicas", "hpa.", int)
    hpa_max = _take(hpa, "max_replicas", "hpa.", int)
    if hpa_min < 1:
        raise InputError(f"values: `hpa.min_replicas` must be at least 1 (found {hpa_min})")
    if hpa_min > hpa_max:
        raise InputError(f"values: `hpa.min_replicas` ({hpa_min}) is greater than `hpa.max_replicas` ({hpa_max})")
    if hpa_enabled and not hpa_min <= replicas <= hpa_max:
        raise InputError(
            f"values: `replicas` ({replicas}) must lie within hpa.min_replicas..hpa.max_replicas ({hpa_min}..{hpa_max})"
        )
    target_raw = _take(hpa, "target_requests_per_second", "hpa.", (str, int, float))
    target = target_raw if isinstance(target_raw, str) else str(target_raw)
    if isinstance(target_raw, bool) or not _QUANTITY.match(target) or float(re.sub(r"[a-zA-Z]+$", "", target)) <= 0:
        raise InputError(
            f"values: `hpa.target_requests_per_second` = {target_raw!r} must be a positive quantity such as \"20\" or \"500m\""
        )

    ks = _take(raw, "kserve", "", dict, required=False, default={})
    _no_unknown(ks, {"enabled", "deployment_mode"}, "kserve.")
    kserve_enabled = _take(ks, "enabled", "kserve.", bool, required=False, default=False)
    kserve_mode = _take(ks, "deployment_mode", "kserve.", str, required=False, default="RawDeployment")
    if kserve_mode not in KSERVE_DEPLOYMENT_MODES:
        raise InputError(
            f"values: `kserve.deployment_mode` = {kserve_mode!r} must be one of {', '.join(KSERVE_DEPLOYMENT_MODES)} "
            f"(Knative/Serverless mode puts an HTTP proxy in front of the container, which cannot pass the attested "
            f"TLS through)"
        )

    return Values(
        path=path, name=name, namespace=namespace, image=image, runtime_class=runtime_class, replicas=replicas,
        cpu=cpu, extra_memory_mib=extra_memory_mib, blobs_url=blobs_url, blobs_port=blobs_port, initdata=initdata,
        initdata_configmap=initdata_configmap,
        models=models, key_broker_address=kb_address, key_broker_cidr=kb_cidr, key_broker_port=kb_port,
        blob_store_cidr=bs_cidr, blob_store_port=bs_port, registry_cidr=registry_cidr, registry_port=registry_port,
        hpa_enabled=hpa_enabled, hpa_min=hpa_min, hpa_max=hpa_max, hpa_target=target,
        kserve_enabled=kserve_enabled, kserve_deployment_mode=kserve_mode,
    )


def memory_mib(models: list[Model], extra_mib: int = 0) -> int:
    """max(512 MiB, 3 x plaintext bytes + 256 MiB), rounded up to a whole MiB, plus extra_mib."""
    total = sum(m.bytes for m in models)
    need = math.ceil((MEMORY_MODEL_COPIES * total + MEMORY_HEADROOM_MIB * MIB) / MIB)
    return max(MEMORY_FLOOR_MIB, need) + extra_mib


# --------------------------------------------------------------------------------------------------
# Initdata


def read_initdata(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"initdata: {path} does not exist (write it with `cloister initdata --enclave-config "
                         f"enclave.toml --out {path.name}`)") from None
    except OSError as e:
        raise InputError(f"initdata: cannot read {path}: {e}") from None
    if not data:
        raise InputError(f"initdata: {path} is empty")
    if len(data) > MAX_INITDATA_LEN:
        raise InputError(f"initdata: {path} has {len(data)} bytes; the enclave accepts at most {MAX_INITDATA_LEN}")
    return data


def check_initdata(data: bytes, path: Path) -> dict:
    """The document must be a CoCo initdata TOML: version, algorithm, [data] of strings. Returns it parsed."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"initdata: {path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"initdata: {path} is not valid TOML: {e}") from None
    for key in ("version", "algorithm"):
        if not isinstance(doc.get(key), str):
            raise InputError(f"initdata: {path} has no string `{key}` (not a CoCo initdata document)")
    unknown = sorted(set(doc) - {"version", "algorithm", "data"})
    if unknown:
        raise InputError(f"initdata: {path} has unknown top-level key(s) {unknown} (the enclave refuses them)")
    if doc["version"] not in INITDATA_VERSIONS:
        raise InputError(f"initdata: {path}: version {doc['version']!r}, the enclave reads {', '.join(INITDATA_VERSIONS)}")
    if doc["algorithm"] not in ("sha256", "sha384", "sha512"):
        raise InputError(f"initdata: {path}: algorithm {doc['algorithm']!r} is not sha256, sha384 or sha512")
    entries = doc.get("data")
    if not isinstance(entries, dict) or not entries or not all(isinstance(v, str) for v in entries.values()):
        raise InputError(f"initdata: {path} needs a non-empty [data] table of strings")
    return doc


def find_enclave_config(doc: dict) -> tuple[str, dict] | None:
    """The [data] entry that is a Cloister enclave configuration (has [key_broker] and [[models]])."""
    for key, text in doc["data"].items():
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        if isinstance(cfg.get("key_broker"), dict) and isinstance(cfg.get("models"), list):
            return key, cfg
    return None


def cross_check(values: Values, doc: dict, path: Path) -> None:
    """What the values repeat from the measured configuration must agree with it."""
    if "policy.rego" not in doc["data"]:
        values.warnings.append(
            f"initdata: {path} has no Kata agent policy (policy.rego): it binds the enclave's configuration "
            "but not the container image, so the host can run another image under the same HOST_DATA "
            "(docs/kubernetes.md; cloister initdata --policy-rego)"
        )
    found = find_enclave_config(doc)
    if found is None:
        values.warnings.append(
            f"initdata: no enclave configuration found in [data] of {path}: key broker and models not cross-checked"
        )
        return
    key, cfg = found
    where = f"initdata: {path} [data].\"{key}\""
    address = cfg["key_broker"].get("address")
    if address != values.key_broker_address:
        raise InputError(
            f"{where}: key_broker.address is {address!r} but values say {values.key_broker_address!r} "
            f"(the NetworkPolicy would let the enclave reach the wrong broker)"
        )
    in_config = {(m.get("name"), m.get("digest")) for m in cfg["models"] if isinstance(m, dict)}
    in_values = {(m.name, m.digest) for m in values.models}
    if in_config != in_values:
        missing = sorted(in_values - in_config)
        extra = sorted(in_config - in_values)
        raise InputError(
            f"{where}: the models differ from values [[models]]"
            + (f"; only in values: {missing}" if missing else "")
            + (f"; only in the configuration: {extra}" if extra else "")
        )


def gzip_deterministic(data: bytes) -> bytes:
    """RFC 1952 member with MTIME 0, no file name, XFL 2, OS 255: the same bytes on every platform and Python
    version (gzip.compress writes the OS byte differently across versions)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY)
    body = co.compress(data) + co.flush()
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x02\xff"
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def initdata_annotation(data: bytes) -> str:
    """The value of io.katacontainers.config.hypervisor.cc_init_data: base64(gzip(document bytes))."""
    value = base64.standard_b64encode(gzip_deterministic(data)).decode("ascii")
    if len(value) > MAX_ANNOTATION_BYTES:
        raise InputError(
            f"initdata: the annotation would be {len(value)} bytes; Kubernetes allows 256 KiB for all of a pod's "
            f"annotations"
        )
    return value


# --------------------------------------------------------------------------------------------------
# Rendering


def registry_egress(values: Values) -> str:
    """The NetworkPolicy egress rule for the image registry, or nothing (indented for the template)."""
    if values.registry_cidr is None:
        return ""
    return (
        "    # The container image registry: under CoCo the image is pulled inside the pod VM (guest pull),\n"
        "    # through the pod's network, so the policy applies to it.\n"
        "    - to:\n"
        f"        - ipBlock:\n            cidr: {values.registry_cidr}\n"
        "      ports:\n"
        f"        - protocol: TCP\n          port: {values.registry_port}\n"
    )


def context(values: Values, initdata: bytes) -> dict[str, str]:
    plain_name = values.name
    if values.initdata_configmap:
        config_arg = f"--config-from-initdata={INITDATA_MOUNT_DIR}/{INITDATA_FILE}"
        # Flow-style YAML on one line, so that one template line serves both settings.
        volume_mounts = f"[{{name: initdata, mountPath: {INITDATA_MOUNT_DIR}, readOnly: true}}]"
        volumes = f"[{{name: initdata, configMap: {{name: {values.name}-initdata}}}}]"
    else:
        config_arg = "--config-from-initdata"
        volume_mounts = volumes = "[]"
    return {
        "name": values.name,
        "namespace": values.namespace,
        "image": values.image,
        "runtime_class": values.runtime_class,
        "replicas": str(values.replicas),
        "cpu": values.cpu,
        "memory": f"{memory_mib(values.models, values.extra_memory_mib)}Mi",
        "blobs_url": values.blobs_url,
        "config_arg": config_arg,
        "volume_mounts": volume_mounts,
        "volumes": volumes,
        "initdata_file": INITDATA_FILE,
        "initdata_base64": base64.standard_b64encode(initdata).decode("ascii"),
        "initdata_annotation": initdata_annotation(initdata),
        "initdata_sha384": hashlib.sha384(initdata).hexdigest(),
        "models": ",".join(m.name for m in values.models),
        "key_broker_cidr": values.key_broker_cidr,
        "key_broker_port": str(values.key_broker_port),
        "blob_store_cidr": values.blob_store_cidr,
        "blob_store_port": str(values.blob_store_port),
        "registry_egress": registry_egress(values),
        "hpa_min": str(values.hpa_min),
        "hpa_max": str(values.hpa_max),
        "hpa_target": values.hpa_target,
        # KServe (raw deployment mode) names the Deployment it creates <isvc>-predictor.
        "scale_target": f"{values.name}-predictor" if values.kserve_enabled else plain_name,
        "kserve_deployment_mode": values.kserve_deployment_mode,
    }


def selected_templates(values: Values) -> list[str]:
    variant = "kserve" if values.kserve_enabled else "plain"
    names = [n for n, v in TEMPLATE_VARIANTS.items() if v in ("both", variant)]
    if not values.hpa_enabled:
        names.remove("hpa.yaml")
    if not values.initdata_configmap:
        names.remove("configmap.yaml")
    return names


def render(values: Values, initdata: bytes, templates_dir: Path = TEMPLATES) -> dict[str, str]:
    """File name -> rendered text, kustomization.yaml included."""
    ctx = context(values, initdata)
    out: dict[str, str] = {}
    for name in selected_templates(values):
        src = (templates_dir / name).read_text(encoding="utf-8")
        try:
            out[name] = string.Template(src).substitute(ctx)
        except KeyError as e:
            raise InputError(f"template {name}: no value for ${{{e.args[0]}}}") from None
        except ValueError as e:
            raise InputError(f"template {name}: {e} (write a literal $ as $$)") from None
    out["kustomization.yaml"] = (
        "# Generated by deploy/kubernetes/render.py; `kubectl apply -k` this directory, or list it as a\n"
        "# resource of an overlay. Re-render instead of editing: the initdata annotation is computed.\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n" + "".join(f"  - {n}\n" for n in out)
    )
    return out


def write(files: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # Files of the other variant left by an earlier render would confuse a reader (kustomize ignores them).
    for stale in set(TEMPLATE_VARIANTS) - set(files):
        (out_dir / stale).unlink(missing_ok=True)
    written = []
    for name, text in files.items():
        p = out_dir / name
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        written.append(p)
    return written


def prepare(values_path: Path | None, initdata_path: Path | None, overrides: dict | None = None):
    """Load and validate everything: (values or None, initdata path, initdata bytes)."""
    values = load_values(values_path, overrides) if values_path is not None else None
    if initdata_path is None:
        assert values is not None
        initdata_path = values.initdata
    data = read_initdata(initdata_path)
    doc = check_initdata(data, initdata_path)
    if values is not None:
        cross_check(values, doc, initdata_path)
    return values, initdata_path, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="render.py",
        description="Render Cloister's Kubernetes manifests (Deployment or KServe InferenceService, Service, HPA, "
        "NetworkPolicy, kustomization) from values.toml and the CoCo initdata document.",
        epilog="The HOST_DATA a verifier pins is a digest of the initdata document: `cloister initdata` prints it. "
        "This tool carries the document's exact bytes to Kata (annotation " + INITDATA_ANNOTATION + " = "
        "base64(gzip(bytes))) and does not compute HOST_DATA. Exit status: 0 rendered, 2 invalid input, "
        "1 cannot write.",
    )
    parser.add_argument("--values", type=Path, help="values file (TOML), e.g. deploy/kubernetes/values.toml")
    parser.add_argument("--out", type=Path, help="directory to write the manifests and kustomization.yaml to")
    parser.add_argument("--initdata", type=Path,
                        help="the initdata document (default: `initdata` in the values, relative to the values file)")
    parser.add_argument("--print-annotation", action="store_true",
                        help="print the " + INITDATA_ANNOTATION + " value and exit (needs --values or --initdata)")
    args = parser.parse_args(argv)

    if args.print_annotation:
        if args.values is None and args.initdata is None:
            parser.error("--print-annotation needs --values or --initdata")
    elif args.values is None or args.out is None:
        parser.error("--values and --out are required (or use --print-annotation)")

    try:
        values, initdata_path, data = prepare(args.values, args.initdata)
        if values is not None:
            for w in values.warnings:
                print(f"render.py: warning: {w}", file=sys.stderr)
        if args.print_annotation:
            try:
                print(initdata_annotation(data))
            except BrokenPipeError:  # `| head`: not an error of ours
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        files = render(values, data)
    except InputError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2

    try:
        written = write(files, args.out)
    except OSError as e:
        print(f"render.py: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"render.py: initdata {initdata_path} ({len(data)} bytes, sha384 {hashlib.sha384(data).hexdigest()[:16]}...)")
    print(f"render.py: variant {'KServe InferenceService' if values.kserve_enabled else 'Deployment + Service'}, "
          f"memory {memory_mib(values.models, values.extra_memory_mib)}Mi, cpu {values.cpu}")
    for p in written:
        print(f"wrote {p}")
    print(f"apply with: kubectl apply -k {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
