use super::*;

/// The Certificate Transparency reference leaves and the tree heads RFC 6962 implementations agree on
/// (certificate-transparency-go, the C++ log, Trillian): a log no other implementation agrees with
/// proves nothing to anyone.
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn ct_leaves() -> Vec<Hash> {
    CT_LEAVES
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
}

fn many(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
        .collect()
}

#[test]
fn tree_heads_match_rfc6962_reference() {
    let leaves = ct_leaves();
    for n in 0..=8 {
        assert_eq!(hex::encode(root(&leaves[..n])), CT_ROOTS[n], "size {n}");
    }
}

#[test]
fn the_reference_inclusion_proof_verifies() {
    let leaves = ct_leaves();
    let proof = inclusion_proof(0, &leaves).unwrap();
    let expected = [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ];
    assert_eq!(proof.iter().map(hex::encode).collect::<Vec<_>>(), expected);
    verify_inclusion(0, 8, &leaves[0], &proof, &root(&leaves)).unwrap();
}

#[test]
fn every_inclusion_proof_verifies_and_no_altered_one_does() {
    for n in 1..=33 {
        let leaves = many(n);
        let r = root(&leaves);
        for i in 0..n {
            let proof = inclusion_proof(i, &leaves).unwrap();
            verify_inclusion(i as u64, n as u64, &leaves[i], &proof, &r).unwrap();
            // Another leaf or index, a flipped path hash, a dropped or added hash: all refused.
            let other = leaf_hash(b"not in the log");
            assert!(verify_inclusion(i as u64, n as u64, &other, &proof, &r).is_err());
            if n > 1 {
                let j = (i + 1) % n;
                assert!(verify_inclusion(j as u64, n as u64, &leaves[i], &proof, &r).is_err());
            }
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][0] ^= 1;
                assert!(verify_inclusion(i as u64, n as u64, &leaves[i], &bad, &r).is_err());
            }
            let mut longer = proof.clone();
            longer.push(r);
            assert!(verify_inclusion(i as u64, n as u64, &leaves[i], &longer, &r).is_err());
            if !proof.is_empty() {
                let shorter = &proof[..proof.len() - 1];
                assert!(verify_inclusion(i as u64, n as u64, &leaves[i], shorter, &r).is_err());
            }
        }
        assert!(inclusion_proof(n, &leaves).is_none());
        assert!(verify_inclusion(n as u64, n as u64, &leaves[0], &[], &r).is_err());
    }
}

#[test]
fn every_consistency_proof_verifies_and_no_altered_one_does() {
    let leaves = many(33);
    for n in 1..=33 {
        let new_root = root(&leaves[..n]);
        for m in 1..=n {
            let old_root = root(&leaves[..m]);
            let proof = consistency_proof(m, &leaves[..n]).unwrap();
            verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof)
                .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
            // A rewritten history (another old root) and every altered path hash are refused.
            let forged = leaf_hash(b"rewritten");
            assert!(verify_consistency(m as u64, n as u64, &forged, &new_root, &proof).is_err());
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][31] ^= 0x80;
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &bad).is_err(),
                    "{m} -> {n}, hash {k}"
                );
            }
            if m < n {
                assert!(
                    verify_consistency(n as u64, m as u64, &new_root, &old_root, &proof).is_err()
                );
            }
        }
    }
    assert!(consistency_proof(0, &leaves).is_none());
    assert!(consistency_proof(34, &leaves).is_none());
}

fn test_key() -> (ring::signature::Ed25519KeyPair, NoteVerifier) {
    use ring::signature::KeyPair;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    (
        pair,
        NoteVerifier::new("example.com/releases", public).unwrap(),
    )
}

fn signed(cp: &Checkpoint, pair: &ring::signature::Ed25519KeyPair, v: &NoteVerifier) -> String {
    let body = cp.body();
    format!(
        "{body}\n{}",
        v.signature_line(pair.sign(body.as_bytes()).as_ref())
    )
}

#[test]
fn checkpoints_verify_under_the_pinned_key_only() {
    let (pair, v) = test_key();
    let cp = Checkpoint {
        origin: "example.com/releases".into(),
        size: 8,
        root: root(&ct_leaves()),
    };
    let note = signed(&cp, &pair, &v);
    assert_eq!(Checkpoint::verify(&note, &v).unwrap(), cp);
    // The verifier key round-trips through its text form, and a wrong key hash is refused.
    assert_eq!(NoteVerifier::parse(&v.to_string()).unwrap(), v);
    let text = v.to_string();
    let mut parts: Vec<&str> = text.split('+').collect();
    parts[1] = "00000000";
    assert!(NoteVerifier::parse(&parts.join("+")).is_err());

    // A witness's extra signature is ignored; the log's own is still required.
    let (other_pair, other_v) = {
        use ring::signature::KeyPair;
        let p = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let public: [u8; 32] = p.public_key().as_ref().try_into().unwrap();
        (p, NoteVerifier::new("witness.example", public).unwrap())
    };
    let cosigned = format!(
        "{note}{}",
        other_v.signature_line(other_pair.sign(cp.body().as_bytes()).as_ref())
    );
    assert_eq!(Checkpoint::verify(&cosigned, &v).unwrap(), cp);
    let only_witness = format!(
        "{}\n{}",
        cp.body(),
        other_v.signature_line(other_pair.sign(cp.body().as_bytes()).as_ref())
    );
    let err = Checkpoint::verify(&only_witness, &v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no signature by the pinned key"), "{err}");

    // A changed size or root breaks the signature.
    let tampered = note.replacen("\n8\n", "\n9\n", 1);
    let err = Checkpoint::verify(&tampered, &v).unwrap_err().to_string();
    assert!(err.contains("does not verify"), "{err}");

    // A checkpoint of another log, signed by a key with that log's name, is not this log's.
    let other_log = Checkpoint {
        origin: "elsewhere".into(),
        ..cp
    };
    let err = Checkpoint::verify(&signed(&other_log, &pair, &v), &v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("origin"), "{err}");

    // Garbage never panics and is refused.
    for junk in [
        "",
        "\n\n",
        "a\nb\nc\n\n— x y\n",
        "a\n\n—",
        &"x".repeat(MAX_NOTE_LEN + 1),
    ] {
        assert!(Checkpoint::verify(junk, &v).is_err(), "{junk:?}");
    }
}
