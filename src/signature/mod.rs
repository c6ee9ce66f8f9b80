//! Electronic digital signatures (ЭЦП), format `jcs-x509` of contract.md.
//!
//! A signed message carries a `signature` member: `format` = `jcs-x509`, `algorithm` = `ES256`
//! (ECDSA P-256, SHA-256) or `RS256` (RSA PKCS#1 v1.5, SHA-256), `certificate_chain` (base64 DER,
//! signer first, then intermediates) and `value` (base64), computed over the RFC 8785 (JCS)
//! canonical JSON of the message without its `signature` member. ES256 values are the 64-byte
//! `r‖s` form (as in JOSE); the DER form is accepted too.
//!
//! - [`Verifier`] checks Requests and Decisions: [`x509::X509Verifier`] does it for real
//!   (chain to a configured root, validity at submission and at receipt, CRLs reloaded when they
//!   change, key usage, identifier match of P-13, staff roles for Decisions).
//! - [`Signer`] signs result documents: [`keys::Keyring`] holds each provider's PKCS#8 key.
//! - GOST R 34.10-2015 signatures are refused as `unsupported_algorithm`: no mature pure-Rust
//!   verifier exists.

pub mod keys;
pub mod x509;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::contract::SignatureBlock;
use crate::ident::Identifier;
use crate::regulations::IdKind;

/// The only signature format of contract version 1.
pub const FORMAT: &str = "jcs-x509";

/// Why a signature is not confirmed. Stored with the refusal (the outcome carries the
/// regulation's text, not this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFailure {
    /// The signer's certificate had expired.
    #[error("expired")]
    Expired,
    /// The signer's certificate was not yet valid.
    #[error("not_yet_valid")]
    NotYetValid,
    /// A certificate of the chain is on its issuer's CRL.
    #[error("revoked")]
    Revoked,
    /// The chain does not lead to a configured trusted root.
    #[error("unknown_issuer")]
    UnknownIssuer,
    /// The chain is broken (bad certificate signature, constraint violated).
    #[error("bad_chain")]
    BadChain,
    /// The signature value does not verify over the canonical message.
    #[error("bad_signature")]
    BadSignature,
    /// The certificate names someone else than the request (P-13).
    #[error("identifier_mismatch")]
    IdentifierMismatch,
    /// The certificate's key usage does not allow digital signatures.
    #[error("key_usage")]
    KeyUsage,
    /// Not ES256 or RS256 (GOST R 34.10-2015 included).
    #[error("unsupported_algorithm")]
    UnsupportedAlgorithm,
    /// The signature member or a certificate cannot be read.
    #[error("malformed")]
    Malformed,
    /// The issuer's CRL is past its nextUpdate: revocation status unknown, fail closed.
    #[error("crl_expired")]
    CrlExpired,
    /// No CRL is configured for an issuer of the chain: fail closed.
    #[error("crl_missing")]
    CrlMissing,
    /// The certificate does not carry an accepted staff role (a citizen cannot decide).
    #[error("role_not_allowed")]
    RoleNotAllowed,
}

impl SignatureFailure {
    /// One sentence for people (`qyzmet verify`, logs).
    pub fn explain(self) -> &'static str {
        match self {
            Self::Expired => "the signer's certificate had expired at the time checked",
            Self::NotYetValid => "the signer's certificate was not yet valid at the time checked",
            Self::Revoked => "a certificate of the chain is revoked (listed on its issuer's CRL)",
            Self::UnknownIssuer => "the certificate chain does not lead to a trusted root",
            Self::BadChain => "the certificate chain does not verify",
            Self::BadSignature => "the signature does not match the message (tampered, or signed with another key)",
            Self::IdentifierMismatch => "the certificate names someone other than the message's applicant or provider",
            Self::KeyUsage => "the certificate's key usage does not allow digital signatures",
            Self::UnsupportedAlgorithm => {
                "the algorithm is not supported (ES256 and RS256 are; GOST R 34.10-2015 is not)"
            }
            Self::Malformed => "the signature member or a certificate cannot be read",
            Self::CrlExpired => "the CRL of an issuer is past its nextUpdate, so revocation cannot be checked",
            Self::CrlMissing => "no CRL is configured for an issuer of the chain, so revocation cannot be checked",
            Self::RoleNotAllowed => "the certificate does not carry an accepted staff role",
        }
    }
}

/// Who must have signed, and when.
#[derive(Debug, Clone)]
pub struct ExpectedSigner<'a> {
    /// `applicant`, `provider_staff` or `centre_operator` (regulation data).
    pub role: &'a str,
    /// Identifier kinds that may match (P-13).
    pub identifiers: &'a [IdKind],
    /// Identifiers of which the certificate must carry one: the applicant's IIN/BIN, the
    /// provider's BIN for its staff, the centres' BINs for their operators.
    pub subjects: Vec<Identifier>,
    /// When the sender says the message was signed; the certificate must be valid then and now.
    pub signed_at: chrono::DateTime<chrono::Utc>,
}

/// Checks the signature of a signed message.
pub trait Verifier: Send + Sync {
    /// Verifies `signature` over `message` (the whole object; the `signature` member is removed
    /// before canonicalising).
    fn verify(
        &self,
        message: &Map<String, Value>,
        signature: &SignatureBlock,
        expected: &ExpectedSigner<'_>,
    ) -> Result<(), SignatureFailure>;
}

/// Signs result documents on behalf of a provider.
pub trait Signer: Send + Sync {
    /// The `signature` member for a document issued by `provider` (BIN).
    fn sign(&self, provider: &str, document: &Map<String, Value>) -> Result<Value, String>;

    /// Whether documents of `provider` can be signed (its own key or a default one). Intake
    /// refuses a request whose result could never be signed instead of letting it reach the
    /// result step.
    fn can_sign(&self, provider: &str) -> bool;
}

/// The bytes that are signed: RFC 8785 canonical JSON of the object without `signature`.
pub fn signed_bytes(message: &Map<String, Value>) -> Result<Vec<u8>, SignatureFailure> {
    let mut unsigned = message.clone();
    unsigned.remove("signature");
    serde_jcs::to_vec(&Value::Object(unsigned)).map_err(|_| SignatureFailure::Malformed)
}

/// Base64 (standard alphabet; URL-safe and unpadded input accepted).
pub fn b64decode(s: &str) -> Result<Vec<u8>, SignatureFailure> {
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .map_err(|_| SignatureFailure::Malformed)
}

/// Base64 (standard alphabet, padded).
pub fn b64encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Converts a 64-byte ECDSA P-256 `r‖s` signature to ASN.1 DER.
pub fn ecdsa_fixed_to_der(fixed: &[u8]) -> Option<Vec<u8>> {
    if fixed.len() != 64 {
        return None;
    }
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut b: &[u8] = bytes;
        while b.len() > 1 && b[0] == 0 {
            b = &b[1..];
        }
        let mut out = vec![0x02];
        if b[0] & 0x80 != 0 {
            out.push((b.len() + 1) as u8);
            out.push(0);
        } else {
            out.push(b.len() as u8);
        }
        out.extend_from_slice(b);
        out
    }
    let r = integer(&fixed[..32]);
    let s = integer(&fixed[32..]);
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    Some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_are_canonical_and_exclude_the_signature() {
        let a: Map<String, Value> = serde_json::from_str(r#"{"b":1,"a":"x","signature":{"v":1}}"#).expect("json");
        let b: Map<String, Value> = serde_json::from_str(r#"{"a":"x","b":1.0}"#).expect("json");
        assert_eq!(signed_bytes(&a).expect("jcs"), br#"{"a":"x","b":1}"#);
        assert_eq!(signed_bytes(&a).expect("jcs"), signed_bytes(&b).expect("jcs"));
    }

    #[test]
    fn fixed_ecdsa_signatures_convert_to_der() {
        let mut fixed = [0u8; 64];
        fixed[0] = 0x80;
        fixed[63] = 1;
        let der = ecdsa_fixed_to_der(&fixed).expect("64 bytes");
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00], "a high bit gets a leading zero");
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1], "leading zeros are stripped");
        assert!(ecdsa_fixed_to_der(&[0; 63]).is_none());
    }
}
