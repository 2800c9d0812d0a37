#!/usr/bin/env python3
"""Writes synthetic-amdsev-ovmf.fd, kernel.bin and initrd.bin: small stand-ins for an AmdSev OVMF build
and a direct-boot kernel/initrd, for the measurement vectors of `cloister measure`.

Debian ships no AmdSev OVMF build (bookworm's and trixie's `ovmf` are OvmfPkgX64: SEV metadata, but no
SNP_KERNEL_HASHES section and a zero hash-table address), so kernel/initrd/command-line measurement is
tested on this image. It carries exactly what the measurement reads, laid out as EDK2 lays it out:
- the GUIDed footer table ending 32 bytes before the end of the image (entries read backwards, each
  `data || u16 size || GUID` in EDK2's mixed-endian GUID order), with the SEV-ES reset block (AP EIP),
  the SEV hash table (GPA not page-aligned, as in real builds) and the SEV metadata offset;
- the "ASEV" SEV metadata with every section type: SNP_SEC_MEM, SECRETS, CPUID, SVSM_CAA,
  SNP_KERNEL_HASHES;
- deterministic filler elsewhere, so that every page hashes differently.
Standard library only; the output is deterministic (its SHA-256 is checked by the tests).
"""
import hashlib
import struct
import sys
import uuid
from pathlib import Path

SIZE = 64 * 1024


def guid_le(s: str) -> bytes:
    return uuid.UUID(s).bytes_le


def filler(n: int, seed: bytes) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(4, "little")).digest()
        i += 1
    return out[:n]


def main(outdir: Path) -> None:
    img = bytearray(filler(SIZE, b"cloister-synthetic-ovmf"))

    # SEV metadata ("ASEV", OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm), at 0x1000 from the start.
    sections = [
        (0x800000, 0x9000, 1),   # SNP_SEC_MEM
        (0x80A000, 0x3000, 1),   # SNP_SEC_MEM
        (0x80D000, 0x1000, 2),   # SNP_SECRETS
        (0x80E000, 0x1000, 3),   # CPUID
        (0x80F000, 0x1000, 4),   # SVSM_CAA
        (0x810000, 0x1000, 0x10),  # SNP_KERNEL_HASHES
        (0x811000, 0xF000, 1),   # SNP_SEC_MEM
    ]
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    for gpa, size, kind in sections:
        meta += struct.pack("<III", gpa, size, kind)
    meta_at = 0x1000
    img[meta_at:meta_at + len(meta)] = meta

    # GUIDed footer table, built backwards from the footer entry.
    entries = [
        ("00f771de-1a7e-4fcb-890e-68c77e2fb44e", struct.pack("<I", 0x0080B004)),  # SEV-ES reset block
        ("7255371f-3a3b-4b04-927b-1da6efa8d454", struct.pack("<II", 0x00810C00, 0x400)),  # SEV hash table
        ("dc886566-984a-4798-a75e-5585a7bf67cc", struct.pack("<I", SIZE - meta_at)),  # SEV metadata
    ]
    table = b""
    for guid, data in entries:
        table += data + struct.pack("<H", len(data) + 18) + guid_le(guid)
    footer = struct.pack("<H", len(table) + 18) + guid_le("96b582de-1fb2-45f7-baea-a366c55a082d")
    end = SIZE - 32
    img[end - len(footer):end] = footer
    img[end - len(footer) - len(table):end - len(footer)] = table

    (outdir / "synthetic-amdsev-ovmf.fd").write_bytes(bytes(img))
    (outdir / "kernel.bin").write_bytes(filler(12345, b"cloister-dummy-kernel"))
    (outdir / "initrd.bin").write_bytes(filler(7777, b"cloister-dummy-initrd"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
