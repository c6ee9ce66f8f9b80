//! Cost of the signature work per request: verifying a signed Request (ES256 and RS256: JCS
//! canonicalisation, chain to the root with CRLs at two instants, signature, identifiers) and
//! signing a result document. Run with `cargo bench --bench verify`.

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};

use qyzmet::contract::SignatureBlock;
use qyzmet::ident::Identifier;
use qyzmet::regulations::IdKind;
use qyzmet::signature::keys::load_key;
use qyzmet::signature::x509::X509Verifier;
use qyzmet::signature::{ExpectedSigner, Verifier, signed_bytes};

fn request() -> Map<String, Value> {
    let v = json!({
        "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11", "service": "medical-licence", "region": "aktobe",
        "channel": "portal", "submitted_at": Utc::now().to_rfc3339(), "applicant": { "bin": "030940000443" },
        "provider": "011040000330", "form": { "kind": "issue", "activity": "первичная медико-санитарная помощь" },
        "attachments": [{ "name": "diploma.pdf", "media_type": "application/pdf", "size": 48213,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "uri": "https://files.example/1" }]
    });
    v.as_object().cloned().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("qyzmet-bench-pki-{}", std::process::id()));
    let pki = qyzmet_demo_pki::generate(
        &dir,
        &qyzmet_demo_pki::demo_holders(),
        &qyzmet_demo_pki::demo_provider_keys(),
        Utc::now() + Duration::days(1),
    )
    .expect("demo PKI");
    let verifier =
        X509Verifier::new(&pki.trust_bundle, Some(pki.crl_dir.clone()), vec![qyzmet_demo_pki::DEMO_STAFF_ROLES.into()])
            .expect("verifier");
    for (label, holder, subject) in [
        ("verify ES256 request", "bin-120540000785", "120540000785"),
        ("verify RS256 request", "staff-030940000443", "030940000443"),
    ] {
        let key = load_key(&pki.holders_dir, holder).expect("holder");
        let mut msg = request();
        key.sign_in_place(&mut msg).expect("sign");
        let sig: SignatureBlock = serde_json::from_value(msg["signature"].clone()).expect("block");
        let expected = ExpectedSigner {
            role: "applicant",
            identifiers: &[IdKind::Bin],
            subjects: vec![Identifier::Bin(subject.into())],
            signed_at: Utc::now(),
        };
        assert_eq!(verifier.verify(&msg, &sig, &expected), Ok(()));
        c.bench_function(label, |b| b.iter(|| verifier.verify(black_box(&msg), black_box(&sig), &expected)));
    }
    let msg = request();
    c.bench_function("canonicalise (JCS) a request", |b| b.iter(|| signed_bytes(black_box(&msg))));
    let es = load_key(&pki.holders_dir, "bin-120540000785").expect("holder");
    c.bench_function("sign ES256 document", |b| b.iter(|| es.signature_for(black_box(&msg))));
    let rs = load_key(&pki.holders_dir, "staff-030940000443").expect("holder");
    c.bench_function("sign RS256 document", |b| b.iter(|| rs.signature_for(black_box(&msg))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
