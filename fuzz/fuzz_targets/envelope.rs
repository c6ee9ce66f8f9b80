//! Fuzzes everything an untrusted message goes through before a worker decides: the envelope,
//! the Request/PaymentNotice/Decision field rules, and the `jcs-x509` signature checks
//! (base64, certificate parsing, chain building, signature value). Nothing may panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qyzmet::contract::{Decision, Envelope, PaymentNotice, Request};
use qyzmet::ident::Identifier;
use qyzmet::regulations::IdKind;
use qyzmet::signature::x509::X509Verifier;
use qyzmet::signature::{ExpectedSigner, Verifier};

fn verifier() -> &'static X509Verifier {
    static V: OnceLock<X509Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qyzmet-fuzz-pki-{}", std::process::id()));
        let pki = qyzmet::pki::generate(
            &dir,
            &qyzmet::pki::demo_holders()[..1],
            &[],
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .expect("demo PKI");
        X509Verifier::new(&pki.trust_bundle, Some(pki.crl_dir), vec![qyzmet::pki::DEMO_STAFF_ROLES.into()]).expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data, 262_144) else { return };
    let _ = PaymentNotice::from_envelope(&env);
    let _ = Decision::from_envelope(&env);
    if let Ok(request) = Request::from_envelope(&env) {
        let expected = ExpectedSigner {
            role: "applicant",
            identifiers: &[IdKind::Iin, IdKind::Bin],
            subjects: vec![request.applicant_id(), Identifier::Bin(request.provider.clone())],
            signed_at: request.submitted_at.with_timezone(&chrono::Utc),
        };
        let _ = verifier().verify(&env.body, &request.signature, &expected);
    }
});
