//! The signature seams: a [`Verifier`] for signed Requests and Decisions, a [`Signer`] for result
//! documents.
//!
//! The cryptographic implementation (`jcs-x509`: RFC 8785 canonical JSON, ES256/RS256, X.509
//! chains, CRLs) is the next piece of work. Until then [`StructuralVerifier`] checks that the
//! `signature` member is well-formed — the right format, a supported algorithm, base64 chain and
//! value — and refuses otherwise, and [`UnsignedSigner`] issues documents with a `null`
//! signature so nobody mistakes them for signed ones.

use serde_json::{Map, Value};

use crate::contract::SignatureBlock;

/// Why a signature is not confirmed (stored with the refusal; the outcome carries the
/// regulation's text, not this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFailure {
    /// Certificate expired.
    #[error("expired")]
    Expired,
    /// Certificate not yet valid.
    #[error("not_yet_valid")]
    NotYetValid,
    /// Certificate revoked.
    #[error("revoked")]
    Revoked,
    /// Issuer not trusted.
    #[error("unknown_issuer")]
    UnknownIssuer,
    /// Chain does not verify.
    #[error("bad_chain")]
    BadChain,
    /// Signature value does not verify.
    #[error("bad_signature")]
    BadSignature,
    /// The certificate names someone else (P-13).
    #[error("identifier_mismatch")]
    IdentifierMismatch,
    /// Key usage does not allow signing.
    #[error("key_usage")]
    KeyUsage,
    /// Algorithm not supported (including GOST R 34.10-2015).
    #[error("unsupported_algorithm")]
    UnsupportedAlgorithm,
    /// The signature member cannot be read.
    #[error("malformed")]
    Malformed,
}

/// Who must have signed.
#[derive(Debug, Clone)]
pub struct ExpectedSigner<'a> {
    /// `applicant`, `provider_staff` or `centre_operator` (regulation data).
    pub role: &'a str,
    /// Identifier kinds that may match (P-13).
    pub identifiers: &'a [crate::regulations::IdKind],
    /// The applicant's or the provider's identifier to match.
    pub subject: &'a str,
}

/// Checks the signature of a signed message.
pub trait Verifier: Send + Sync {
    /// Verifies `signature` over `message` (the whole object, `signature` member included; the
    /// implementation removes it before canonicalising).
    fn verify(
        &self,
        message: &Map<String, Value>,
        signature: &SignatureBlock,
        expected: &ExpectedSigner<'_>,
    ) -> Result<(), SignatureFailure>;
}

/// Signs result documents on behalf of a provider.
pub trait Signer: Send + Sync {
    /// The `signature` member for a document issued by `provider` (BIN); `None` when this
    /// installation does not sign.
    fn sign(&self, provider: &str, document: &Map<String, Value>) -> Result<Option<Value>, String>;
}

/// Well-formedness checks only, until the cryptographic verifier lands.
#[derive(Debug, Default, Clone, Copy)]
pub struct StructuralVerifier;

fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

impl Verifier for StructuralVerifier {
    fn verify(
        &self,
        _message: &Map<String, Value>,
        signature: &SignatureBlock,
        _expected: &ExpectedSigner<'_>,
    ) -> Result<(), SignatureFailure> {
        if signature.format != "jcs-x509" {
            return Err(SignatureFailure::Malformed);
        }
        if !matches!(signature.algorithm.as_str(), "ES256" | "RS256") {
            return Err(SignatureFailure::UnsupportedAlgorithm);
        }
        if !signature.certificate_chain.iter().all(|c| is_base64(c)) || !is_base64(&signature.value)
        {
            return Err(SignatureFailure::Malformed);
        }
        Ok(())
    }
}

/// Issues documents without a signature (`"signature": null`).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnsignedSigner;

impl Signer for UnsignedSigner {
    fn sign(
        &self,
        _provider: &str,
        _document: &Map<String, Value>,
    ) -> Result<Option<Value>, String> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(format: &str, alg: &str, value: &str) -> SignatureBlock {
        SignatureBlock {
            format: format.into(),
            algorithm: alg.into(),
            certificate_chain: vec!["MIIBAA==".into()],
            value: value.into(),
        }
    }

    fn expected() -> ExpectedSigner<'static> {
        ExpectedSigner {
            role: "applicant",
            identifiers: &[],
            subject: "840317000029",
        }
    }

    #[test]
    fn p12_well_formed_signature_passes_the_structural_check() {
        let ok = StructuralVerifier.verify(
            &Map::new(),
            &block("jcs-x509", "ES256", "MEUCIQ=="),
            &expected(),
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn gost_is_unsupported() {
        let r = StructuralVerifier.verify(
            &Map::new(),
            &block("jcs-x509", "GOST3410-2015", "AA=="),
            &expected(),
        );
        assert_eq!(r, Err(SignatureFailure::UnsupportedAlgorithm));
    }

    #[test]
    fn other_formats_and_garbage_are_malformed() {
        let v = StructuralVerifier;
        assert_eq!(
            v.verify(&Map::new(), &block("xmldsig", "ES256", "AA=="), &expected()),
            Err(SignatureFailure::Malformed)
        );
        assert_eq!(
            v.verify(
                &Map::new(),
                &block("jcs-x509", "ES256", "not base64!"),
                &expected()
            ),
            Err(SignatureFailure::Malformed)
        );
    }
}
