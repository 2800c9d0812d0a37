#!/usr/bin/env python3
"""Regenerates vectors.json and id_block.json with the reference tools of sev-snp-measure.

    python3 -m venv /tmp/snpm && /tmp/snpm/bin/pip install sev-snp-measure==0.0.13
    python3 make_synthetic_ovmf.py            # synthetic-amdsev-ovmf.fd, kernel.bin, initrd.bin
    PATH=/tmp/snpm/bin:$PATH python3 generate_vectors.py

Inputs: Debian bookworm's `ovmf` package (/usr/share/ovmf/OVMF.fd: OvmfPkgX64 with SEV metadata but no
kernel hashes section) and the synthetic AmdSev-like image of this directory (kernel/initrd/append).
Each vector records the exact command (paths as @DEBIAN_OVMF@ and @DATA@) and the tool's output.
The ID block keys (id_key.pem: SEC1, author_key.pem: PKCS#8, P-384) are test keys made with openssl.
"""
import base64
import hashlib
import json
import shlex
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEBIAN_OVMF = "/usr/share/ovmf/OVMF.fd"


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main():
    version = run(["sev-snp-measure", "--version"]).strip()
    vectors = []

    def add(ovmf, extra):
        args = ["--mode", "snp"] + extra + ["--ovmf", ovmf]
        real = [a.replace("@DEBIAN_OVMF@", DEBIAN_OVMF).replace("@DATA@", str(HERE)) for a in args]
        out = run(["sev-snp-measure"] + real).strip().splitlines()[-1]
        vectors.append({"command": "sev-snp-measure " + shlex.join(args), "measurement": out})

    for vmm in ["QEMU", "ec2"]:
        for cpu in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"]:
            for n in ["1", "4"]:
                add("@DEBIAN_OVMF@", ["--vcpus", n, "--vcpu-type", cpu, "--vmm-type", vmm])
    add("@DEBIAN_OVMF@", ["--vcpus", "2", "--vcpu-type", "EPYC-Turin", "--vmm-type", "QEMU"])
    add("@DEBIAN_OVMF@", ["--vcpus", "4", "--vcpu-type", "EPYC-Genoa", "--vmm-type", "gce"])
    add("@DEBIAN_OVMF@", ["--vcpus", "1", "--vcpu-type", "EPYC-Milan", "--vmm-type", "QEMU",
                          "--guest-features", "0x21"])

    syn = "@DATA@/synthetic-amdsev-ovmf.fd"
    kernel = ["--kernel", "@DATA@/kernel.bin"]
    initrd = ["--initrd", "@DATA@/initrd.bin"]
    append = ["--append", "console=ttyS0 root=/dev/vda rw cloister.config=sha384:00ff"]
    for vmm in ["QEMU", "ec2", "gce"]:
        for n, cpu in [("1", "EPYC-v4"), ("4", "EPYC-Genoa")]:
            base = ["--vcpus", n, "--vcpu-type", cpu, "--vmm-type", vmm]
            add(syn, base)
            add(syn, base + kernel)
            add(syn, base + kernel + initrd)
            add(syn, base + kernel + initrd + append)
    add(syn, ["--vcpus", "2", "--vcpu-type", "EPYC-Milan", "--vmm-type", "QEMU"] + kernel + append)

    (HERE / "vectors.json").write_text(json.dumps({
        "tool": version,
        "inputs_sha256": {
            "@DEBIAN_OVMF@": sha256(DEBIAN_OVMF),
            "synthetic-amdsev-ovmf.fd": sha256(HERE / "synthetic-amdsev-ovmf.fd"),
            "kernel.bin": sha256(HERE / "kernel.bin"),
            "initrd.bin": sha256(HERE / "initrd.bin"),
        },
        "vectors": vectors,
    }, indent=1) + "\n")

    # ID block: the first vector's measurement, default fields (policy 0x30000, zero IDs and SVN).
    ld = bytes.fromhex(vectors[0]["measurement"])
    out = run(["snp-create-id-block", "--measurement", base64.b64encode(ld).decode(),
               "--idkey", str(HERE / "id_key.pem"), "--authorkey", str(HERE / "author_key.pem")])
    lines = out.strip().splitlines()
    block_b64, auth_b64 = [p.split("=", 1)[1] for p in lines[0].split(",")]
    (HERE / "id_block.json").write_text(json.dumps({
        "tool": "snp-create-id-block (" + version + ")",
        "command": "snp-create-id-block --measurement <base64 of measurement> --idkey id_key.pem "
                   "--authorkey author_key.pem",
        "measurement": vectors[0]["measurement"],
        "id_block": block_b64,
        "id_auth": auth_b64,
        "id_key_digest": base64.b64decode(lines[1].split(": ", 1)[1]).hex(),
        "author_key_digest": base64.b64decode(lines[2].split(": ", 1)[1]).hex(),
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
