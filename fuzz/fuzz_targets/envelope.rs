//! Fuzzes everything an untrusted message goes through before a worker decides: the envelope,
//! the Request/PaymentNotice/Decision field rules (including the storability checks and the
//! regulation's own rules, deadline planning and the systems file's sender checks), and the
//! `jcs-x509` signature checks (base64, certificate parsing, chain building, signature value).
//! Nothing may panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qyzmet::contract::{Decision, Envelope, PaymentNotice, Request};
use qyzmet::ident::Identifier;
use qyzmet::regulations::{IdKind, Regulations};
use qyzmet::systems::Systems;
use qyzmet::signature::x509::X509Verifier;
use qyzmet::signature::{ExpectedSigner, Verifier};

fn verifier() -> &'static X509Verifier {
    static V: OnceLock<X509Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qyzmet-fuzz-pki-{}", std::process::id()));
        let pki = qyzmet_demo_pki::generate(
            &dir,
            &qyzmet_demo_pki::demo_holders()[..1],
            &[],
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .expect("demo PKI");
        X509Verifier::new(&pki.trust_bundle, Some(pki.crl_dir), vec![qyzmet_demo_pki::DEMO_STAFF_ROLES.into()]).expect("verifier")
    })
}

fn regulations() -> &'static Regulations {
    static R: OnceLock<Regulations> = OnceLock::new();
    R.get_or_init(|| {
        Regulations::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../regulations")).expect("regulations")
    })
}

fn systems() -> &'static Systems {
    static S: OnceLock<Systems> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
        Systems::load(&dir.join("systems.toml")).expect("systems file")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data, 262_144) else { return };
    let _ = qyzmet::contract::storable_copy(&serde_json::Value::Object(env.body.clone()));
    let _ = PaymentNotice::from_envelope(&env);
    let _ = Decision::from_envelope(&env);
    if let Ok(request) = Request::from_envelope(&env) {
        let regs = regulations();
        if let Ok(route) = regs.route(request.service, request.region, request.channel)
            && regs.check_request(&route, &request).is_ok()
        {
            let _ = regs.plan(&route, &request, chrono::Utc::now());
        }
        let _ = systems().may_submit(Some("egov-portal"), request.channel, request.service, &request.provider);
        let expected = ExpectedSigner {
            role: "applicant",
            identifiers: &[IdKind::Iin, IdKind::Bin],
            subjects: vec![request.applicant_id(), Identifier::Bin(request.provider.clone())],
            signed_at: request.submitted_at.with_timezone(&chrono::Utc),
        };
        let _ = verifier().verify(&env.body, &request.signature, &expected);
    }
});
