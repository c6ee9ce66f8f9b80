//! The `jcs-x509` verifier (P-12…P-17): certificate chain to a configured trusted root
//! (intermediates from the message), validity at submission and at receipt, revocation against
//! CRLs that are reloaded when their files change (failing closed on a missing or stale CRL),
//! key usage, the identifier match of P-13 (IIN from the subject `serialNumber` as `IIN…`, BIN
//! from `OU` as `BIN…`) and, for staff, an accepted role OID of the national CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, CertificateRevocationListDer, InvalidSignature,
    SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use serde_json::{Map, Value};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyPurposeIdIter, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::oid_registry::{OID_X509_ORGANIZATIONAL_UNIT, OID_X509_SERIALNUMBER};

use super::{ExpectedSigner, SignatureFailure, Verifier, b64decode, ecdsa_fixed_to_der, signed_bytes};
use crate::contract::SignatureBlock;
use crate::ident::Identifier;
use crate::regulations::IdKind;

/// Why the verifier cannot be configured.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

const CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// Reads every certificate of a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("{}: not a PEM certificate file: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!("{}: no certificate found", path.display())));
    }
    Ok(certs)
}

/// A CRL file as last seen: path, modification time, size.
type FileStamp = (PathBuf, SystemTime, u64);

/// CRLs from a file or a directory, reloaded when the files change (checked at most every
/// `recheck`), so workers pick up a new CRL without restarting.
pub struct CrlStore {
    path: Option<PathBuf>,
    recheck: Duration,
    state: Mutex<(Instant, Vec<FileStamp>)>,
    crls: RwLock<Arc<Crls>>,
}

/// The CRLs in force, and what is known of their signatures.
#[derive(Default)]
pub struct Crls {
    /// For webpki's revocation check.
    list: Vec<CertRevocationList<'static>>,
    /// The same CRLs' signed parts and signatures, in the same order.
    signed: Vec<SignedCrl>,
}

/// A CRL's signed part and signature, and the issuer keys that have verified them.
///
/// webpki verifies the signature of a CRL each time it consults it, i.e. once per certificate
/// of every path on every request (rustls/webpki#81): two of the five signature checks of a
/// request here, and with the national CA's CRL of several megabytes, a hash of megabytes per
/// request. The bytes do not change while the CRL is in force, so a signature that verified
/// under an issuer's key once is known to verify under it; a new CRL starts afresh.
struct SignedCrl {
    tbs: Vec<u8>,
    signature: Vec<u8>,
    /// (signature algorithm, issuer `subjectPublicKey`) under which it verified.
    verified_by: Mutex<Vec<(AlgorithmIdentifier, Vec<u8>)>>,
}

impl SignedCrl {
    fn of(der: &[u8]) -> Result<SignedCrl, String> {
        let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| format!("{e}"))?;
        Ok(SignedCrl {
            tbs: crl.tbs_cert_list.as_ref().to_vec(),
            signature: crl.signature_value.data.to_vec(),
            verified_by: Mutex::new(Vec::new()),
        })
    }

    fn verified(&self, alg: AlgorithmIdentifier, key: &[u8]) -> bool {
        self.verified_by.lock().is_ok_and(|v| v.iter().any(|(a, k)| *a == alg && k == key))
    }

    fn remember(&self, alg: AlgorithmIdentifier, key: &[u8]) {
        if let Ok(mut v) = self.verified_by.lock() {
            v.push((alg, key.to_vec()));
        }
    }
}

/// A certificate authority's signature on an intermediate certificate, verified once: the
/// national CA's few intermediates sign every citizen's and employee's certificate, so every
/// request carries one of them and webpki would check its signature by the root each time.
#[derive(Debug)]
struct KnownSignature {
    alg: AlgorithmIdentifier,
    key: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
}

/// How many intermediate certificates' signatures are remembered (the oldest goes first).
const KNOWN_INTERMEDIATES: usize = 32;

/// A signature algorithm that verifies what is the same on every request once ([`SignedCrl`],
/// [`KnownSignature`]): a CRL in force, and an intermediate certificate of the request's chain,
/// whose signed bytes, signature, key and algorithm are byte for byte those of one already
/// verified, verify again without the arithmetic. Anything else — the end entity's certificate,
/// which belongs to one person, and the message itself — is verified every time.
#[derive(Debug)]
struct SignaturesOnce<'a> {
    alg: &'static dyn SignatureVerificationAlgorithm,
    crls: &'a [SignedCrl],
    /// The request's intermediate certificates: a message webpki takes from inside one of them is
    /// that certificate's signed part.
    intermediates: &'a [CertificateDer<'a>],
    /// Intermediate certificates' signatures verified before.
    known: &'a Mutex<std::collections::VecDeque<KnownSignature>>,
}

impl std::fmt::Debug for SignedCrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedCrl").field("tbs_bytes", &self.tbs.len()).finish_non_exhaustive()
    }
}

impl SignaturesOnce<'_> {
    fn is_intermediate(&self, message: &[u8]) -> bool {
        self.intermediates.iter().any(|der| der.as_ref().as_ptr_range().contains(&message.as_ptr()))
    }

    fn intermediate(&self, key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        let alg = self.alg.signature_alg_id();
        let same =
            |k: &KnownSignature| k.alg == alg && k.signature == signature && k.key == key && k.message == message;
        if self.known.lock().is_ok_and(|known| known.iter().any(same)) {
            return Ok(());
        }
        self.alg.verify_signature(key, message, signature)?;
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_INTERMEDIATES {
                known.pop_front();
            }
            known.push_back(KnownSignature {
                alg,
                key: key.to_vec(),
                message: message.to_vec(),
                signature: signature.to_vec(),
            });
        }
        Ok(())
    }
}

impl SignatureVerificationAlgorithm for SignaturesOnce<'_> {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        let alg = self.alg.signature_alg_id();
        if let Some(crl) = self.crls.iter().find(|c| c.signature == signature && c.tbs == message) {
            if crl.verified(alg, public_key) {
                return Ok(());
            }
            self.alg.verify_signature(public_key, message, signature)?;
            crl.remember(alg, public_key);
            return Ok(());
        }
        if self.is_intermediate(message) {
            return self.intermediate(public_key, message, signature);
        }
        self.alg.verify_signature(public_key, message, signature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        self.alg.public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.alg.signature_alg_id()
    }

    fn fips(&self) -> bool {
        self.alg.fips()
    }
}

impl CrlStore {
    /// Loads the CRLs at `path` (a `.pem`/`.crl`/`.der` file or a directory of them).
    pub fn open(path: Option<PathBuf>, recheck: Duration) -> Result<CrlStore, ConfigError> {
        let store = CrlStore {
            path,
            recheck,
            state: Mutex::new((Instant::now(), Vec::new())),
            crls: RwLock::new(Arc::new(Crls::default())),
        };
        let files = store.files();
        let crls = load_crls(&files).map_err(ConfigError)?;
        if let Ok(mut s) = store.state.lock() {
            *s = (Instant::now(), files);
        }
        if let Ok(mut c) = store.crls.write() {
            *c = Arc::new(crls);
        }
        Ok(store)
    }

    fn files(&self) -> Vec<FileStamp> {
        let Some(path) = &self.path else { return Vec::new() };
        let mut paths = Vec::new();
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "pem" || x == "crl" || x == "der") {
                        paths.push(p);
                    }
                }
            }
        } else {
            paths.push(path.clone());
        }
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            })
            .collect()
    }

    /// The current CRLs, reloaded first if the files changed.
    pub fn current(&self) -> Arc<Crls> {
        let reload = match self.state.lock() {
            Ok(mut s) if s.0.elapsed() >= self.recheck => {
                s.0 = Instant::now();
                let files = self.files();
                if files != s.1 {
                    s.1 = files.clone();
                    Some(files)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(files) = reload {
            match load_crls(&files) {
                Ok(crls) => {
                    tracing::info!(count = crls.list.len(), "CRLs reloaded");
                    if let Ok(mut c) = self.crls.write() {
                        *c = Arc::new(crls);
                    }
                }
                // Keep the previous CRLs: a half-written file must not open the gate.
                Err(e) => tracing::warn!(error = %e, "CRL reload failed; keeping the previous CRLs"),
            }
        }
        self.crls.read().map(|c| c.clone()).unwrap_or_default()
    }
}

fn load_crls(files: &[FileStamp]) -> Result<Crls, String> {
    let mut out = Crls::default();
    for (path, _, _) in files {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let ders: Vec<Vec<u8>> = if bytes.starts_with(b"-----") {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .map(|r| r.map(|d| d.as_ref().to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            vec![bytes]
        };
        for der in ders {
            let crl =
                OwnedCertRevocationList::from_der(&der).map_err(|e| format!("{}: not a CRL: {e:?}", path.display()))?;
            let signed = SignedCrl::of(&der).map_err(|e| format!("{}: not a CRL: {e}", path.display()))?;
            out.list.push(crl.into());
            out.signed.push(signed);
        }
    }
    Ok(out)
}

/// Accepts any extended key usage: signing certificates of the national CA carry role OIDs,
/// which are checked separately.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, _iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// When a certificate path is valid, in Unix seconds, both ends included (as webpki checks a
/// certificate's `notBefore` and `notAfter`).
#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: i64,
    not_after: i64,
}

impl Validity {
    /// The validity period of a parsed certificate.
    fn of_parsed(cert: &x509_parser::certificate::X509Certificate<'_>) -> Validity {
        let v = cert.validity();
        Validity { not_before: v.not_before.timestamp(), not_after: v.not_after.timestamp() }
    }

    /// The validity period of one certificate.
    fn of(der: &[u8]) -> Option<Validity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Validity::of_parsed(&cert))
    }

    /// The period in which both are valid.
    fn within(self, other: Validity) -> Validity {
        Validity { not_before: self.not_before.max(other.not_before), not_after: self.not_after.min(other.not_after) }
    }

    /// Whether `t` falls in the period.
    fn contains(self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

/// The real verifier.
pub struct X509Verifier {
    anchors: Vec<TrustAnchor<'static>>,
    crls: CrlStore,
    /// Intermediate certificates' signatures verified before ([`SignaturesOnce`]).
    known: Mutex<std::collections::VecDeque<KnownSignature>>,
    /// Accepted staff role OIDs; a trailing `.*` accepts the subtree.
    staff_roles: Vec<String>,
}

impl X509Verifier {
    /// From a PEM bundle of trusted roots, a CRL path and the accepted staff role OIDs.
    pub fn new(
        trust_bundle: &Path,
        crls: Option<PathBuf>,
        staff_roles: Vec<String>,
    ) -> Result<X509Verifier, ConfigError> {
        let roots = read_certificates(trust_bundle)?;
        let anchors = roots
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError(format!("{}: unusable root certificate: {e:?}", trust_bundle.display())))?;
        let crls = CrlStore::open(crls, Duration::from_secs(2))?;
        Ok(X509Verifier { anchors, crls, known: Mutex::default(), staff_roles })
    }

    /// Verifies the chain as of `at` (signatures, validity, revocation); on success, when the
    /// path it found is valid as a whole: from its latest `notBefore` to its earliest `notAfter`.
    /// `leaf` is the end entity's own period (the caller parsed it already).
    fn chain_at(
        &self,
        ee: &EndEntityCert<'_>,
        leaf: Validity,
        intermediates: &[CertificateDer<'_>],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Validity, SignatureFailure> {
        let crls = self.crls.current();
        let refs: Vec<&CertRevocationList<'_>> = crls.list.iter().collect();
        let Ok(builder) = RevocationOptionsBuilder::new(&refs) else {
            return Err(SignatureFailure::CrlMissing);
        };
        let revocation = builder
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        let secs = u64::try_from(at.timestamp()).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let once: Vec<SignaturesOnce<'_>> = CHAIN_ALGS
            .iter()
            .map(|alg| SignaturesOnce { alg: *alg, crls: &crls.signed, intermediates, known: &self.known })
            .collect();
        let algs: Vec<&dyn SignatureVerificationAlgorithm> =
            once.iter().map(|a| a as &dyn SignatureVerificationAlgorithm).collect();
        let path = ee
            .verify_for_usage(&algs, &self.anchors, intermediates, time, AnyEku, Some(revocation), None)
            .map_err(map_chain_error)?;
        let mut validity = leaf;
        for cert in path.intermediate_certificates() {
            validity = validity.within(Validity::of(&cert.der()).ok_or(SignatureFailure::Malformed)?);
        }
        Ok(validity)
    }

    /// Checks the chain when the message was signed and when it is received.
    ///
    /// The chain is verified once, as of now. Its signatures do not depend on the time, and
    /// revocation is checked against the CRLs in force now, so as of an earlier signing time
    /// only the validity of the path's certificates remains to check — without verifying its
    /// signatures a second time. When that check fails, or the signing time is later than now,
    /// or the chain fails now, the chain is verified in full as of the signing time as well,
    /// so that the reason given is the same as from two full checks in that order.
    fn chain_when_signed_and_now(
        &self,
        ee: &EndEntityCert<'_>,
        leaf: Validity,
        intermediates: &[CertificateDer<'_>],
        signed_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), SignatureFailure> {
        let now = chrono::Utc::now();
        let at = |t| self.chain_at(ee, leaf, intermediates, t);
        match at(now) {
            Ok(path) if signed_at <= now && path.contains(signed_at.timestamp()) => Ok(()),
            Ok(_) => at(signed_at).map(|_| ()),
            Err(at_receipt) => Err(at(signed_at).err().unwrap_or(at_receipt)),
        }
    }

    fn has_staff_role(&self, cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
        let mut oids: Vec<String> = Vec::new();
        if let Ok(Some(eku)) = cert.extended_key_usage() {
            oids.extend(eku.value.other.iter().map(|o| o.to_id_string()));
        }
        for ext in cert.iter_extensions() {
            if let x509_parser::extensions::ParsedExtension::CertificatePolicies(policies) = ext.parsed_extension() {
                oids.extend(policies.iter().map(|p| p.policy_id.to_id_string()));
            }
        }
        oids.iter().any(|oid| {
            self.staff_roles.iter().any(|accepted| match accepted.strip_suffix(".*") {
                Some(prefix) => oid.starts_with(&format!("{prefix}.")),
                None => oid == accepted,
            })
        })
    }
}

fn map_chain_error(e: webpki::Error) -> SignatureFailure {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => SignatureFailure::Expired,
        E::CertNotValidYet { .. } => SignatureFailure::NotYetValid,
        E::CertRevoked => SignatureFailure::Revoked,
        E::UnknownIssuer => SignatureFailure::UnknownIssuer,
        E::UnknownRevocationStatus => SignatureFailure::CrlMissing,
        E::CrlExpired { .. } => SignatureFailure::CrlExpired,
        E::BadDer | E::BadDerTime | E::TrailingData(_) | E::UnsupportedCertVersion => SignatureFailure::Malformed,
        _ => SignatureFailure::BadChain,
    }
}

/// Identifiers a certificate names: IIN from `serialNumber=IIN…`, BIN from `OU=BIN…`.
pub fn certificate_identifiers(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> (Option<String>, Option<String>) {
    let subject = cert.subject();
    let pick = |attr: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>, prefix: &str| {
        attr.and_then(|a| a.as_str().ok())
            .and_then(|s| s.strip_prefix(prefix))
            .filter(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    };
    let iin = subject.iter_by_oid(&OID_X509_SERIALNUMBER).find_map(|a| pick(Some(a), "IIN"));
    let bin = subject.iter_by_oid(&OID_X509_ORGANIZATIONAL_UNIT).find_map(|a| pick(Some(a), "BIN"));
    (iin, bin)
}

/// Who signed a message, masked, for screens: the IIN (else the BIN) its signer certificate
/// names. `None` when the block has no readable certificate.
pub fn signer_masked(signature: &SignatureBlock) -> Option<String> {
    let der = b64decode(signature.certificate_chain.first()?).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let (iin, bin) = certificate_identifiers(&cert);
    iin.or(bin).map(|id| crate::ident::mask(&id))
}

impl Verifier for X509Verifier {
    fn verify(
        &self,
        message: &Map<String, Value>,
        signature: &SignatureBlock,
        expected: &ExpectedSigner<'_>,
    ) -> Result<(), SignatureFailure> {
        if signature.format != super::FORMAT {
            return Err(SignatureFailure::Malformed);
        }
        let alg: &dyn SignatureVerificationAlgorithm = match signature.algorithm.as_str() {
            "ES256" => webpki::ring::ECDSA_P256_SHA256,
            "RS256" => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(SignatureFailure::UnsupportedAlgorithm),
        };
        let chain = signature
            .certificate_chain
            .iter()
            .map(|c| b64decode(c).map(CertificateDer::from))
            .collect::<Result<Vec<_>, _>>()?;
        let (leaf, intermediates) = chain.split_first().ok_or(SignatureFailure::Malformed)?;
        let ee = EndEntityCert::try_from(leaf).map_err(|_| SignatureFailure::Malformed)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| SignatureFailure::Malformed)?;

        // The certificate must be valid when the message was signed and when it is received.
        self.chain_when_signed_and_now(&ee, Validity::of_parsed(&parsed), intermediates, expected.signed_at)?;

        if let Ok(Some(ku)) = parsed.key_usage()
            && !(ku.value.digital_signature() || ku.value.non_repudiation())
        {
            return Err(SignatureFailure::KeyUsage);
        }

        let raw = b64decode(&signature.value)?;
        let value = match (signature.algorithm.as_str(), ecdsa_fixed_to_der(&raw)) {
            ("ES256", Some(der)) => der,
            _ => raw,
        };
        let bytes = signed_bytes(message)?;
        ee.verify_signature(alg, &bytes, &value).map_err(|_| SignatureFailure::BadSignature)?;

        let (iin, bin) = certificate_identifiers(&parsed);
        let matches = expected.subjects.iter().any(|subject| match subject {
            Identifier::Iin(want) => {
                expected.identifiers.contains(&IdKind::Iin) && iin.as_deref() == Some(want.as_str())
            }
            Identifier::Bin(want) => {
                expected.identifiers.contains(&IdKind::Bin) && bin.as_deref() == Some(want.as_str())
            }
        });
        if !matches {
            return Err(SignatureFailure::IdentifierMismatch);
        }
        if expected.role != "applicant" && !self.staff_roles.is_empty() && !self.has_staff_role(&parsed) {
            return Err(SignatureFailure::RoleNotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use chrono::{Duration as Span, Utc};
    use serde_json::{Value, json};

    use super::*;
    use qyzmet_demo_pki::{self as pki, PkiPaths};

    use crate::signature::keys::load_key;

    fn pki() -> &'static PkiPaths {
        static PKI: OnceLock<PkiPaths> = OnceLock::new();
        PKI.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("qyzmet-unit-pki-{}", uuid::Uuid::new_v4().simple()));
            pki::generate_demo(&dir).expect("pki")
        })
    }

    fn verifier() -> X509Verifier {
        let p = pki();
        X509Verifier::new(&p.trust_bundle, Some(p.crl_dir.clone()), vec![pki::DEMO_STAFF_ROLES.into()])
            .expect("verifier")
    }

    const CITIZEN: &str = "850401300125";

    fn message() -> Value {
        json!({ "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11", "applicant": { "iin": CITIZEN },
                "form": { "kind": "issue" }, "submitted_at": "2026-11-23T10:15:00+05:00" })
    }

    fn signed_by(holder: &str) -> Value {
        let mut v = message();
        load_key(&pki().holders_dir, holder)
            .expect("holder")
            .sign_in_place(v.as_object_mut().expect("object"))
            .expect("sign");
        v
    }

    fn check_as(v: &Value, role: &str, subject: Identifier, kinds: &[IdKind]) -> Result<(), SignatureFailure> {
        let sig: SignatureBlock =
            serde_json::from_value(v["signature"].clone()).map_err(|_| SignatureFailure::Malformed)?;
        let expected = ExpectedSigner { role, identifiers: kinds, subjects: vec![subject], signed_at: Utc::now() };
        verifier().verify(v.as_object().expect("object"), &sig, &expected)
    }

    /// The citizen, as an IIN-only variant expects, signing now.
    fn citizen_signed_now() -> ExpectedSigner<'static> {
        ExpectedSigner {
            role: "applicant",
            identifiers: &[IdKind::Iin],
            subjects: vec![Identifier::Iin(CITIZEN.into())],
            signed_at: Utc::now(),
        }
    }

    fn check(v: &Value) -> Result<(), SignatureFailure> {
        check_as(v, "applicant", Identifier::Iin(CITIZEN.into()), &[IdKind::Iin, IdKind::Bin])
    }

    #[test]
    fn p12_a_properly_signed_message_verifies() {
        assert_eq!(check(&signed_by("iin-850401300125")), Ok(()));
    }

    #[test]
    fn p12_rs256_signatures_verify() {
        let mut v = message();
        load_key(&pki().holders_dir, "staff-030940000443")
            .expect("rsa holder")
            .sign_in_place(v.as_object_mut().expect("obj"))
            .expect("sign");
        assert_eq!(v["signature"]["algorithm"], "RS256");
        assert_eq!(check_as(&v, "provider_staff", Identifier::Bin("030940000443".into()), &[IdKind::Bin]), Ok(()));
    }

    #[test]
    fn p12_expired_not_yet_valid_revoked_and_untrusted_certificates_fail_with_their_reason() {
        assert_eq!(check(&signed_by("expired-850401300125")), Err(SignatureFailure::Expired));
        assert_eq!(check(&signed_by("notyet-850401300125")), Err(SignatureFailure::NotYetValid));
        assert_eq!(check(&signed_by("revoked-850401300125")), Err(SignatureFailure::Revoked));
        assert_eq!(check(&signed_by("rogue-850401300125")), Err(SignatureFailure::UnknownIssuer));
        assert_eq!(check(&signed_by("nosig-850401300125")), Err(SignatureFailure::KeyUsage));
    }

    /// Checks a message signed by `holder` on this verifier, as the citizen's.
    fn check_with(verifier: &X509Verifier, holder: &str) -> Result<(), SignatureFailure> {
        let v = signed_by(holder);
        let sig: SignatureBlock = serde_json::from_value(v["signature"].clone()).expect("signature block");
        let expected = ExpectedSigner {
            role: "applicant",
            identifiers: &[IdKind::Iin, IdKind::Bin],
            subjects: vec![Identifier::Iin(CITIZEN.into())],
            signed_at: Utc::now(),
        };
        verifier.verify(v.as_object().expect("object"), &sig, &expected)
    }

    #[test]
    fn p12_revocation_still_holds_once_the_crl_signatures_are_known() {
        let verifier = verifier();
        let check = |holder: &str| check_with(&verifier, holder);
        assert_eq!(check("iin-850401300125"), Ok(()));
        let crls = verifier.crls.current();
        let known = crls.signed.iter().filter(|c| c.verified_by.lock().is_ok_and(|v| !v.is_empty())).count();
        assert_eq!(known, crls.signed.len(), "both CRLs of the path were consulted and are now known");
        assert_eq!(check("iin-850401300125"), Ok(()));
        assert_eq!(check("revoked-850401300125"), Err(SignatureFailure::Revoked));
        assert_eq!(check("rogue-850401300125"), Err(SignatureFailure::UnknownIssuer));
    }

    /// Accepts a signature only under the keys `key` and `key2`, and counts what it is asked.
    #[derive(Debug)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl SignatureVerificationAlgorithm for Counting {
        fn verify_signature(
            &self,
            public_key: &[u8],
            message: &[u8],
            signature: &[u8],
        ) -> Result<(), InvalidSignature> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match (public_key, message, signature) {
                (b"key" | b"key2", b"tbs", b"sig") => Ok(()),
                _ => Err(InvalidSignature),
            }
        }

        fn public_key_alg_id(&self) -> AlgorithmIdentifier {
            webpki::ring::ECDSA_P256_SHA256.public_key_alg_id()
        }

        fn signature_alg_id(&self) -> AlgorithmIdentifier {
            webpki::ring::ECDSA_P256_SHA256.signature_alg_id()
        }
    }

    #[test]
    fn a_crl_signature_is_verified_once_per_issuer_key_and_anything_else_every_time() {
        static ALG: Counting = Counting(std::sync::atomic::AtomicUsize::new(0));
        let calls = || ALG.0.load(std::sync::atomic::Ordering::SeqCst);
        let crl = SignedCrl { tbs: b"tbs".to_vec(), signature: b"sig".to_vec(), verified_by: Mutex::new(Vec::new()) };
        let crls = [crl];
        let known = Mutex::default();
        let once = SignaturesOnce { alg: &ALG, crls: &crls, intermediates: &[], known: &known };
        assert!(once.verify_signature(b"key", b"tbs", b"sig").is_ok());
        assert!(once.verify_signature(b"key", b"tbs", b"sig").is_ok());
        assert_eq!(calls(), 1, "the CRL's signature under this key is known after the first check");
        assert!(once.verify_signature(b"key2", b"tbs", b"sig").is_ok());
        assert_eq!(calls(), 2, "under another key it is checked afresh");
        for _ in 0..2 {
            assert!(once.verify_signature(b"rogue", b"tbs", b"sig").is_err());
            assert!(once.verify_signature(b"key", b"forged", b"sig").is_err(), "the same signature on other bytes");
        }
        assert_eq!(calls(), 6, "a failure is never remembered, and other bytes are always checked");
    }

    #[test]
    fn an_intermediate_certificate_is_verified_once_and_the_signers_own_certificate_every_time() {
        static ALG: Counting = Counting(std::sync::atomic::AtomicUsize::new(0));
        let calls = || ALG.0.load(std::sync::atomic::Ordering::SeqCst);
        let intermediates = [CertificateDer::from(b"[-tbs-]".to_vec())];
        let inside = &intermediates[0].as_ref()[2..5];
        let known = Mutex::default();
        let once = SignaturesOnce { alg: &ALG, crls: &[], intermediates: &intermediates, known: &known };
        assert!(once.verify_signature(b"key", inside, b"sig").is_ok());
        assert!(once.verify_signature(b"key", inside, b"sig").is_ok());
        assert_eq!(calls(), 1, "the intermediate's signature is known after the first check");
        let leaf = b"tbs".to_vec();
        assert!(once.verify_signature(b"key", &leaf, b"sig").is_ok());
        assert!(once.verify_signature(b"key", &leaf, b"sig").is_ok());
        assert_eq!(calls(), 3, "the same bytes outside the intermediates (the signer's certificate) every time");
        for _ in 0..2 {
            assert!(once.verify_signature(b"rogue", inside, b"sig").is_err());
            assert!(once.verify_signature(b"key", inside, b"forged").is_err());
        }
        assert_eq!(calls(), 7, "a failure is never remembered");
    }

    #[test]
    fn a_verifier_remembers_the_demo_intermediate_and_still_refuses_an_unknown_issuer() {
        let verifier = verifier();
        assert_eq!(check_with(&verifier, "iin-850401300125"), Ok(()));
        assert_eq!(verifier.known.lock().map(|k| k.len()).unwrap_or(0), 1, "the intermediate's signature by the root");
        assert_eq!(check_with(&verifier, "iin-850401300125"), Ok(()));
        assert_eq!(check_with(&verifier, "rogue-850401300125"), Err(SignatureFailure::UnknownIssuer));
        assert_eq!(check_with(&verifier, "revoked-850401300125"), Err(SignatureFailure::Revoked));
    }

    /// The citizen's certificate is valid from 30 days ago; the expired one was valid from 400
    /// until 1 day ago.
    fn check_signed_at(v: &Value, signed_at: chrono::DateTime<Utc>) -> Result<(), SignatureFailure> {
        let sig: SignatureBlock = serde_json::from_value(v["signature"].clone()).expect("signature block");
        verifier().verify(v.as_object().expect("object"), &sig, &ExpectedSigner { signed_at, ..citizen_signed_now() })
    }

    #[test]
    fn p12_the_certificate_is_checked_when_signed_and_when_received() {
        let valid = signed_by("iin-850401300125");
        assert_eq!(check_signed_at(&valid, Utc::now() - Span::days(10)), Ok(()), "signed while valid");
        assert_eq!(
            check_signed_at(&valid, Utc::now() - Span::days(40)),
            Err(SignatureFailure::NotYetValid),
            "signed before the certificate was issued"
        );
        assert_eq!(
            check_signed_at(&valid, Utc::now() + Span::days(400)),
            Err(SignatureFailure::Expired),
            "dated after the certificate ends"
        );
        let expired = signed_by("expired-850401300125");
        assert_eq!(
            check_signed_at(&expired, Utc::now() - Span::days(10)),
            Err(SignatureFailure::Expired),
            "signed while valid, expired on receipt"
        );
        assert_eq!(
            check_signed_at(&signed_by("revoked-850401300125"), Utc::now() - Span::days(10)),
            Err(SignatureFailure::Revoked),
            "revoked now, whenever it signed"
        );
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        let mut v = signed_by("iin-850401300125");
        v["form"]["kind"] = json!("duplicate");
        assert_eq!(check(&v), Err(SignatureFailure::BadSignature));
    }

    #[test]
    fn a_swapped_certificate_is_a_bad_signature() {
        let mut v = signed_by("iin-850401300125");
        let other = signed_by("iin-921212500674");
        v["signature"]["certificate_chain"] = other["signature"]["certificate_chain"].clone();
        assert_eq!(check(&v), Err(SignatureFailure::BadSignature));
    }

    #[test]
    fn p13_a_body_re_signed_with_another_persons_key_is_an_identifier_mismatch() {
        assert_eq!(check(&signed_by("iin-921212500674")), Err(SignatureFailure::IdentifierMismatch));
    }

    #[test]
    fn p13_iin_only_variants_do_not_accept_a_bin_signer() {
        let v = signed_by("bin-120540000785");
        let as_bin = |kinds: &[IdKind]| check_as(&v, "applicant", Identifier::Bin("120540000785".into()), kinds);
        assert_eq!(as_bin(&[IdKind::Iin, IdKind::Bin]), Ok(()));
        assert_eq!(as_bin(&[IdKind::Iin]), Err(SignatureFailure::IdentifierMismatch));
    }

    #[test]
    fn staff_must_carry_an_accepted_role_so_a_citizen_cannot_decide() {
        let staff = signed_by("staff-011040000330");
        let impostor = signed_by("impostor-011040000330");
        let as_staff =
            |v: &Value| check_as(v, "provider_staff", Identifier::Bin("011040000330".into()), &[IdKind::Bin]);
        assert_eq!(as_staff(&staff), Ok(()));
        assert_eq!(as_staff(&impostor), Err(SignatureFailure::RoleNotAllowed));
    }

    #[test]
    fn gost_and_unknown_formats_are_refused_and_garbage_is_malformed() {
        let mut v = signed_by("iin-850401300125");
        v["signature"]["algorithm"] = json!("GOST34.10-2015");
        assert_eq!(check(&v), Err(SignatureFailure::UnsupportedAlgorithm));
        let mut v = signed_by("iin-850401300125");
        v["signature"]["certificate_chain"] = json!(["not base64 at all!"]);
        assert_eq!(check(&v), Err(SignatureFailure::Malformed));
        let mut v = signed_by("iin-850401300125");
        v["signature"]["certificate_chain"] = json!(["AAAA"]);
        assert_eq!(check(&v), Err(SignatureFailure::Malformed));
    }

    #[test]
    fn a_chain_without_its_intermediate_does_not_reach_the_root() {
        let mut v = signed_by("iin-850401300125");
        let leaf = v["signature"]["certificate_chain"][0].clone();
        v["signature"]["certificate_chain"] = json!([leaf]);
        assert_eq!(check(&v), Err(SignatureFailure::UnknownIssuer));
    }

    #[test]
    fn missing_and_stale_crls_fail_closed() {
        let p = pki();
        let copy = std::env::temp_dir().join(format!("qyzmet-crl-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&copy).expect("dir");
        // Only the root's CRL: the intermediate's is missing.
        std::fs::copy(p.crl_dir.join("root.crl.pem"), copy.join("root.crl.pem")).expect("copy");
        let only_root = X509Verifier::new(&p.trust_bundle, Some(copy.clone()), vec![]).expect("verifier");
        let v = signed_by("iin-850401300125");
        let sig: SignatureBlock = serde_json::from_value(v["signature"].clone()).expect("sig");
        let expected = citizen_signed_now();
        assert_eq!(only_root.verify(v.as_object().expect("o"), &sig, &expected), Err(SignatureFailure::CrlMissing));
        let none = X509Verifier::new(&p.trust_bundle, None, vec![]).expect("verifier");
        assert_eq!(none.verify(v.as_object().expect("o"), &sig, &expected), Err(SignatureFailure::CrlMissing));
        // A CRL past its nextUpdate.
        let stale_dir = std::env::temp_dir().join(format!("qyzmet-stale-{}", uuid::Uuid::new_v4().simple()));
        let stale = pki::generate(&stale_dir, &pki::demo_holders()[..1], &[], Utc::now() + Span::days(1)).expect("pki");
        pki::reissue_intermediate_crl(&stale_dir, &[], Utc::now() - Span::hours(1)).expect("stale CRL");
        let stale_verifier =
            X509Verifier::new(&stale.trust_bundle, Some(stale.crl_dir.clone()), vec![]).expect("verifier");
        let mut v = message();
        load_key(&stale.holders_dir, "iin-850401300125")
            .expect("holder")
            .sign_in_place(v.as_object_mut().expect("o"))
            .expect("sign");
        let sig: SignatureBlock = serde_json::from_value(v["signature"].clone()).expect("sig");
        assert_eq!(
            stale_verifier.verify(v.as_object().expect("o"), &sig, &expected),
            Err(SignatureFailure::CrlExpired)
        );
    }

    #[test]
    fn a_new_crl_is_picked_up_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("qyzmet-reload-{}", uuid::Uuid::new_v4().simple()));
        let p = pki::generate(&dir, &pki::demo_holders()[..1], &[], Utc::now() + Span::days(1)).expect("pki");
        let mut v = message();
        load_key(&p.holders_dir, "iin-850401300125")
            .expect("holder")
            .sign_in_place(v.as_object_mut().expect("o"))
            .expect("sign");
        let sig: SignatureBlock = serde_json::from_value(v["signature"].clone()).expect("sig");
        let expected = citizen_signed_now();
        let mut verifier = X509Verifier::new(&p.trust_bundle, Some(p.crl_dir.clone()), vec![]).expect("verifier");
        verifier.crls.recheck = Duration::ZERO;
        assert_eq!(verifier.verify(v.as_object().expect("o"), &sig, &expected), Ok(()));
        // The first holder got serial 1001; revoke it in a new CRL.
        pki::reissue_intermediate_crl(&dir, &[1001], Utc::now() + Span::days(1)).expect("new CRL");
        assert_eq!(verifier.verify(v.as_object().expect("o"), &sig, &expected), Err(SignatureFailure::Revoked));
    }
}
