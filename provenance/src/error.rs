//! The crate's one error type. Every variant says which field or file failed, and what was expected
//! against what was found, where both are public (digests, names, key fingerprints).

/// Why a model signature or a signed model was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bundle is larger than [`crate::MAX_BUNDLE_LEN`].
    #[error("signature bundle: {len} bytes, more than the {max}-byte limit")]
    BundleTooLarge {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bundle (or the statement it carries) is not the JSON the format says.
    #[error("signature bundle: {what}: {detail}")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// The parser's message (public bytes only).
        detail: String,
    },
    /// A field holds a value this verifier does not accept.
    #[error("signature bundle: {field} is {found:?}, expected {expected}")]
    Unsupported {
        /// The JSON path of the field.
        field: &'static str,
        /// What is accepted.
        expected: &'static str,
        /// What the bundle holds.
        found: String,
    },
    /// The bundle is keyless (a certificate and a log entry), and no trusted root and signer
    /// identities were given to check it against.
    #[error("signature bundle: keyless (certificate) bundle, but no trusted root and signer identities are configured to check it (or sign with a key: model_signing sign key)")]
    KeylessUnsupported,
    /// A keyless bundle's certificate or log entry does not check out.
    #[error("keyless signature: {field}: {reason}")]
    Keyless {
        /// The part that failed.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The signing certificate was not valid when the log says the signature was made.
    #[error("keyless signature: the certificate is valid from {not_before} to {not_after} (Unix seconds), but the signature was logged at {integrated_time}: expired or not yet valid")]
    CertificateNotValidAt {
        /// Certificate notBefore.
        not_before: i64,
        /// Certificate notAfter.
        not_after: i64,
        /// The log's authenticated integrated time.
        integrated_time: i64,
    },
    /// The certificate names an identity the policy does not allow.
    #[error(
        "keyless signature: signed by {found}, which is none of the allowed signers [{allowed}]"
    )]
    UnknownIdentity {
        /// The certificate's identity and issuer.
        found: String,
        /// The allowed ones.
        allowed: String,
    },
    /// The public key is not an ECDSA P-256 or P-384 key in PEM SubjectPublicKeyInfo form.
    #[error("signer key: {0}")]
    BadKey(String),
    /// The bundle's key hint names another key than every pinned one.
    #[error("signature bundle: key hint {hint} matches none of the {pinned} pinned signer key(s)")]
    UnknownSigner {
        /// The bundle's `verificationMaterial.publicKey.hint`.
        hint: String,
        /// How many keys were pinned.
        pinned: usize,
    },
    /// No pinned key verifies the DSSE signature.
    #[error("signature bundle: the DSSE signature does not verify under any of the {pinned} pinned signer key(s)")]
    BadSignature {
        /// How many keys were tried.
        pinned: usize,
    },
    /// The statement's root digest is not SHA-256 over its file digests.
    #[error("signed statement: root digest is {claimed}, but the listed files hash to {computed}")]
    RootDigestMismatch {
        /// The subject's digest.
        claimed: String,
        /// What the resources hash to.
        computed: String,
    },
    /// A file of the model differs from its signed digest.
    #[error("model file {name:?}: SHA-256 is {found}, the signature says {expected}")]
    FileDigestMismatch {
        /// The file's name as the statement lists it.
        name: String,
        /// The signed digest.
        expected: String,
        /// The digest of the bytes presented.
        found: String,
    },
    /// The signature lists a file the model does not have.
    #[error("model file {name:?}: signed, but missing from the model")]
    FileMissing {
        /// The name.
        name: String,
    },
    /// The model has a file the signature does not cover.
    #[error("model file {name:?}: present in the model, but not covered by the signature")]
    FileUnsigned {
        /// The name.
        name: String,
    },
    /// A transparency-log proof, checkpoint or verifier key does not check out.
    #[error("release log: {0}")]
    Log(String),
    /// What the client attests is not in the release log.
    #[error("release log: {what} {value} is not in the log (checkpoint of {size} entries)")]
    NotLogged {
        /// What was looked for ("enclave measurement", "model").
        what: &'static str,
        /// Its value.
        value: String,
        /// The size of the tree the proofs are against.
        size: u64,
    },
    /// A signed-model container is truncated or inconsistent.
    #[error("signed model: {0}")]
    Container(&'static str),
}
