#!/usr/bin/env bash
# Independent check of the simulated SEV-SNP platform (`cloister sim`) with the openssl CLI only: none of
# Cloister's verification code is involved. For each product (Milan, Genoa, Turin) it creates a platform
# with a VLEK, makes a VCEK-signed and a VLEK-signed report, and checks with openssl that
#   - the ARK, ASK and ASVK are RSA-4096 certificates signed with RSASSA-PSS (SHA-384, MGF1-SHA-384,
#     salt 48), the VCEK and VLEK ECDSA P-384 keys, and the ARK's subject says SIMULATED;
#   - the chains verify: ARK -> ASK -> VCEK and ARK -> ASVK -> VLEK (self-signature of the ARK checked),
#     and each link alone with -partial_chain;
#   - each report's ECDSA P-384 / SHA-384 signature over bytes 0x000..0x2A0 verifies under the leaf's
#     public key (R and S converted from 72-byte little-endian to a DER ECDSA-Sig-Value), and fails once
#     a byte of MEASUREMENT is flipped;
#   - REPORT_DATA is what was asked for, CHIP_ID equals the VCEK's hwID extension (Turin: 8 bytes then
#     zeros) and REPORTED_TCB equals the leaf's blSPL/teeSPL/snpSPL/ucodeSPL (and fmcSPL on Turin).
#
# Usage: scripts/check-sim-openssl.sh [PATH-TO-cloister]
#   Without a path, the binary is built and run with `cargo run -q -p cloister-cli --bin cloister --`.
#   PRODUCTS="Genoa" limits the products checked (default: "Milan Genoa Turin").
# Exit status: 0 if every check passed, 1 otherwise (2 if openssl is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-}"
PRODUCTS="${PRODUCTS:-Milan Genoa Turin}"

if ! command -v openssl >/dev/null 2>&1; then
    echo "check-sim-openssl: openssl not found" >&2
    exit 2
fi

cloister() {
    if [ -n "$BIN" ]; then
        "$BIN" "$@"
    else
        (cd "$ROOT" && cargo run -q -p cloister-cli --bin cloister -- "$@")
    fi
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-sim-openssl.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
FAILURES=0
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*" >&2; FAILURES=$((FAILURES + 1)); }

# `n` zero characters (printf alone would print one even for n = 0).
zeros() { if [ "$1" -gt 0 ]; then printf '0%.0s' $(seq "$1"); fi; }
# Hex of `len` bytes of `file` at `offset`, in file order.
bytes_hex() { od -An -v -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'; }
# The same bytes reversed (little-endian integer -> big-endian hex).
le_to_be_hex() { bytes_hex "$1" "$2" "$3" | fold -w2 | tac | tr -d '\n'; }
# The value of a one-byte DER INTEGER extension (OID `$2`) of certificate `$1`, in decimal.
spl() {
    local dump
    dump="$(openssl asn1parse -in "$1" | grep -A1 ":$2\$" | tail -1 | sed 's/.*\[HEX DUMP\]://')"
    # 02 01 XX, or 02 02 00 XX for values >= 0x80.
    echo $((16#${dump: -2}))
}
# The raw hwID extension value of a VCEK, lower-case hex.
hw_id() {
    openssl asn1parse -in "$1" | grep -A1 ':1.3.6.1.4.1.3704.1.4$' | tail -1 \
        | sed 's/.*\[HEX DUMP\]://' | tr 'A-F' 'a-f'
}

check_cert_profile() { # name file expect(rsa|ec)
    local text
    text="$(openssl x509 -in "$2" -noout -text)"
    if ! grep -q "Signature Algorithm: rsassaPss" <<<"$text" \
        || ! grep -q "Hash Algorithm: sha384" <<<"$text" \
        || ! grep -q "Mask Algorithm: mgf1 with sha384" <<<"$text" \
        || ! grep -q "Salt Length: 0x30" <<<"$text"; then
        fail "$1: not signed with RSASSA-PSS SHA-384 / MGF1-SHA-384 / salt 48"
        return
    fi
    case "$3" in
        rsa) grep -q "Public-Key: (4096 bit)" <<<"$text" && grep -q rsaEncryption <<<"$text" \
            || { fail "$1: not an RSA-4096 key"; return; } ;;
        ec) grep -q "NIST CURVE: P-384" <<<"$text" || { fail "$1: not an ECDSA P-384 key"; return; } ;;
    esac
    grep -q "O = Cloister SIMULATED (not AMD)" <<<"$text" || { fail "$1: subject does not say SIMULATED"; return; }
    pass "$1: RSASSA-PSS SHA-384 salt 48, $3 key, subject says SIMULATED"
}

check_report_signature() { # name report leaf.pem
    local name="$1" report="$2" leaf="$3" d="$WORK/sig"
    mkdir -p "$d"
    if [ "$(wc -c <"$report")" -ne 1184 ]; then
        fail "$name: report is not 1184 bytes"
        return
    fi
    # R at 0x2A0 and S at 0x2E8, 72 bytes little-endian each; a P-384 scalar uses the low 48.
    if [ "$(bytes_hex "$report" $((0x2A0 + 48)) 24)$(bytes_hex "$report" $((0x2E8 + 48)) 24)" != "$(zeros 96)" ]; then
        fail "$name: signature components do not fit in 48 bytes"
        return
    fi
    cat >"$d/sig.cnf" <<EOF
asn1=SEQUENCE:sig
[sig]
r=INTEGER:0x$(le_to_be_hex "$report" $((0x2A0)) 48)
s=INTEGER:0x$(le_to_be_hex "$report" $((0x2E8)) 48)
EOF
    openssl asn1parse -genconf "$d/sig.cnf" -out "$d/sig.der" -noout
    openssl x509 -in "$leaf" -pubkey -noout >"$d/pub.pem"
    head -c $((0x2A0)) "$report" >"$d/signed.bin"
    if openssl dgst -sha384 -verify "$d/pub.pem" -signature "$d/sig.der" "$d/signed.bin" >/dev/null 2>&1; then
        pass "$name: report signature (ECDSA P-384 SHA-384 over 0x000..0x2A0) verifies"
    else
        fail "$name: report signature does not verify"
    fi
    # The same with MEASUREMENT's first byte flipped must fail.
    { head -c $((0x90)) "$d/signed.bin"
      printf "\\x$(printf '%02x' $(( 16#$(bytes_hex "$d/signed.bin" $((0x90)) 1) ^ 1 )))"
      tail -c +$((0x90 + 2)) "$d/signed.bin"; } >"$d/flipped.bin"
    if openssl dgst -sha384 -verify "$d/pub.pem" -signature "$d/sig.der" "$d/flipped.bin" >/dev/null 2>&1; then
        fail "$name: report signature still verifies after flipping a MEASUREMENT byte"
    else
        pass "$name: a flipped MEASUREMENT byte breaks the signature"
    fi
}

check_tcb() { # name report leaf.pem product
    local report="$2" leaf="$3" b
    b="$(bytes_hex "$report" $((0x180)) 8)"
    local -a t=()
    for i in 0 1 2 3 4 5 6 7; do t[i]=$((16#${b:$((2 * i)):2})); done
    local bl tee snp ucode
    bl=$(spl "$leaf" 1.3.6.1.4.1.3704.1.3.1)
    tee=$(spl "$leaf" 1.3.6.1.4.1.3704.1.3.2)
    snp=$(spl "$leaf" 1.3.6.1.4.1.3704.1.3.3)
    ucode=$(spl "$leaf" 1.3.6.1.4.1.3704.1.3.8)
    if [ "$4" = Turin ]; then
        local fmc
        fmc=$(spl "$leaf" 1.3.6.1.4.1.3704.1.3.9)
        [ "${t[0]} ${t[1]} ${t[2]} ${t[3]} ${t[7]}" = "$fmc $bl $tee $snp $ucode" ] \
            && pass "$1: REPORTED_TCB = certificate SPLs (fmc=$fmc bl=$bl tee=$tee snp=$snp ucode=$ucode)" \
            || fail "$1: REPORTED_TCB ${t[*]} differs from the SPLs fmc=$fmc bl=$bl tee=$tee snp=$snp ucode=$ucode"
    else
        [ "${t[0]} ${t[1]} ${t[6]} ${t[7]}" = "$bl $tee $snp $ucode" ] \
            && pass "$1: REPORTED_TCB = certificate SPLs (bl=$bl tee=$tee snp=$snp ucode=$ucode)" \
            || fail "$1: REPORTED_TCB ${t[*]} differs from the SPLs bl=$bl tee=$tee snp=$snp ucode=$ucode"
    fi
}

for product in $PRODUCTS; do
    echo "== $product"
    dir="$WORK/$product"
    cloister sim init --dir "$dir" --product "$product" --vlek >/dev/null
    certs="$dir/certs" vcerts="$dir/certs-vlek"

    openssl x509 -in "$certs/ark.pem" -noout -subject | grep -q "CN = ARK-$product SIMULATED" \
        && pass "ARK subject CN is ARK-$product SIMULATED" || fail "ARK subject does not say SIMULATED"
    check_cert_profile ARK "$certs/ark.pem" rsa
    check_cert_profile ASK "$certs/ask.pem" rsa
    check_cert_profile ASVK "$vcerts/asvk.pem" rsa
    check_cert_profile VCEK "$certs/vcek.pem" ec
    check_cert_profile VLEK "$vcerts/vlek.pem" ec

    # Chains: to the self-signed ARK (its own PSS signature checked too), then link by link.
    openssl verify -check_ss_sig -CAfile "$certs/ark.pem" -untrusted "$certs/ask.pem" "$certs/vcek.pem" >/dev/null \
        && pass "openssl verify ARK -> ASK -> VCEK" || fail "openssl verify ARK -> ASK -> VCEK"
    openssl verify -check_ss_sig -CAfile "$vcerts/ark.pem" -untrusted "$vcerts/asvk.pem" "$vcerts/vlek.pem" >/dev/null \
        && pass "openssl verify ARK -> ASVK -> VLEK" || fail "openssl verify ARK -> ASVK -> VLEK"
    openssl verify -partial_chain -CAfile "$certs/ark.pem" "$certs/ask.pem" >/dev/null \
        && openssl verify -partial_chain -CAfile "$certs/ask.pem" "$certs/vcek.pem" >/dev/null \
        && openssl verify -partial_chain -CAfile "$vcerts/ark.pem" "$vcerts/asvk.pem" >/dev/null \
        && openssl verify -partial_chain -CAfile "$vcerts/asvk.pem" "$vcerts/vlek.pem" >/dev/null \
        && pass "openssl verify -partial_chain, each link" || fail "openssl verify -partial_chain, a link"
    # A chain with the intermediates swapped must not verify.
    if openssl verify -partial_chain -CAfile "$vcerts/asvk.pem" "$certs/vcek.pem" >/dev/null 2>&1; then
        fail "the ASVK verifies the VCEK"
    else
        pass "the ASVK does not verify the VCEK"
    fi

    report_data="$(openssl rand -hex 64)"
    cloister sim report --dir "$dir" --out "$dir/vcek.bin" --report-data "$report_data" >/dev/null
    cloister sim report --dir "$dir" --out "$dir/vlek.bin" --report-data "$report_data" --vlek >/dev/null
    check_report_signature "VCEK report" "$dir/vcek.bin" "$certs/vcek.pem"
    check_report_signature "VLEK report" "$dir/vlek.bin" "$vcerts/vlek.pem"
    [ "$(bytes_hex "$dir/vcek.bin" $((0x50)) 64)" = "$report_data" ] \
        && pass "REPORT_DATA as requested" || fail "REPORT_DATA differs from the request"

    hw="$(hw_id "$certs/vcek.pem")"
    chip="$(bytes_hex "$dir/vcek.bin" $((0x1A0)) 64)"
    expected_chip="$hw$(zeros $((128 - ${#hw})))"
    [ "$chip" = "$expected_chip" ] && [ ${#hw} -eq "$([ "$product" = Turin ] && echo 16 || echo 128)" ] \
        && pass "CHIP_ID = VCEK hwID (${#hw} hex digits)" || fail "CHIP_ID $chip differs from hwID $hw"
    check_tcb "VCEK report" "$dir/vcek.bin" "$certs/vcek.pem" "$product"
    check_tcb "VLEK report" "$dir/vlek.bin" "$vcerts/vlek.pem" "$product"
done

if [ "$FAILURES" -ne 0 ]; then
    echo "check-sim-openssl: $FAILURES check(s) FAILED" >&2
    exit 1
fi
echo "check-sim-openssl: all checks passed ($(openssl version))"
