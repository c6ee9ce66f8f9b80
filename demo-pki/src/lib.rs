//! A demonstration PKI (`qyzmet pki demo DIR`), used by `make demo`, `qyzmet bench` and the tests: a root and an
//! intermediate CA, their CRLs, certificates in the national CA's conventions (IIN in the subject
//! `serialNumber` as `IIN…`, BIN in `OU` as `BIN…`, staff roles as extended-key-usage OIDs under
//! 1.2.398.3.3.4.1.2) for citizens, legal entities, representatives, provider staff and centre
//! operators, the providers' result-signing keys, and certificates that must be refused:
//! expired, not yet valid, revoked, from an unknown issuer, without the digital-signature key
//! usage, and a citizen posing as staff.
//!
//! Layout of DIR:
//! - `trust/roots.pem` — the trust bundle (`QYZMET_TRUST_BUNDLE`);
//! - `crl/*.crl.pem` — CRLs (`QYZMET_CRL_PATH`);
//! - `keys/<BIN>.key.pem` + `.chain.pem` — result-signing keys (`QYZMET_SIGNING_KEYS`);
//! - `holders/<name>.key.pem` + `.chain.pem` — keys for signing demo requests and decisions;
//! - `ca/` — the CA keys, to issue more CRLs.
//!
//! Demo keys only: never use them for anything real. This crate is not part of the qyzmet library
//! (the library is the pipeline): the binary's demo commands use it with the `demo` feature, the
//! tests as a dev-dependency. It writes files; qyzmet reads them as it reads a real PKI's
//! (`qyzmet::signature::keys::load_key` for a holder's key).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

/// A 2048-bit RSA key for the RS256 holders (ring cannot generate RSA keys). Demo only.
const DEMO_RSA_KEY: &str = include_str!("demo-rsa.key.pem");

/// Staff role OID the demo puts in staff certificates (under the accepted 1.2.398.3.3.4.1.2.*).
pub const STAFF_ROLE_OID: &[u64] = &[1, 2, 398, 3, 3, 4, 1, 2, 1];
/// The accepted staff roles for the demo configuration.
pub const DEMO_STAFF_ROLES: &str = "1.2.398.3.3.4.1.2.*";
/// BIN of the demo public service centre (ЦОН/ХҚКО) whose operators sign centre requests.
pub const DEMO_CENTRE_BIN: &str = "141240000017";
/// BIN in the certificate of the demo's `default` result-signing key (a shared signer).
pub const DEMO_SHARED_SIGNER_BIN: &str = "090840000556";

/// What is special about a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// A good certificate.
    None,
    /// Expired a day ago.
    Expired,
    /// Valid from tomorrow.
    NotYetValid,
    /// Listed on the intermediate CA's CRL.
    Revoked,
    /// Issued by a CA nobody trusts.
    Rogue,
    /// Key usage without digitalSignature/nonRepudiation.
    NoSignatureUsage,
}

/// One certificate holder.
#[derive(Debug, Clone)]
pub struct Holder {
    /// File stem under `holders/` (or `keys/` for provider keys).
    pub name: String,
    /// Common name.
    pub common_name: String,
    /// IIN for `serialNumber=IIN…`.
    pub iin: Option<String>,
    /// BIN for `OU=BIN…`.
    pub bin: Option<String>,
    /// Carries the staff role OID.
    pub staff: bool,
    /// RSA (RS256) instead of ECDSA P-256 (ES256).
    pub rsa: bool,
    /// What is special about it.
    pub quirk: Quirk,
}

impl Holder {
    fn new(name: &str, cn: &str, iin: Option<&str>, bin: Option<&str>, staff: bool) -> Holder {
        Holder {
            name: name.into(),
            common_name: cn.into(),
            iin: iin.map(Into::into),
            bin: bin.map(Into::into),
            staff,
            rsa: false,
            quirk: Quirk::None,
        }
    }

    fn quirk(mut self, q: Quirk) -> Holder {
        self.quirk = q;
        self
    }

    fn rsa(mut self) -> Holder {
        self.rsa = true;
        self
    }
}

/// The holders of the demo: the people and organisations of `demo/registries`, provider staff,
/// a centre operator, and the certificates that must be refused.
pub fn demo_holders() -> Vec<Holder> {
    let citizens = [
        ("850401300125", "САПАРОВА АЙГЕРИМ"),
        ("771102450346", "ЖУМАБЕКОВ ЕРЛАН"),
        ("010203600450", "НУРЛАНОВ ДАНИЯР"),
        ("800808300565", "КАСЫМОВА АСЕЛЬ"),
        ("921212500674", "АХМЕТОВ ТИМУР"),
        ("900615400236", "ИВАНОВ ИВАН"),
    ];
    let mut v: Vec<Holder> =
        citizens.iter().map(|(iin, cn)| Holder::new(&format!("iin-{iin}"), cn, Some(iin), None, false)).collect();
    // Legal entities sign through their director: IIN of the person, BIN of the entity.
    v.push(Holder::new(
        "bin-120540000785",
        "ДИРЕКТОР ТОО МЕДИКАЛ ПЛЮС",
        Some("700606400057"),
        Some("120540000785"),
        false,
    ));
    v.push(Holder::new("bin-150340000892", "ДИРЕКТОР ТОО ТЕСТ", Some("700606400057"), Some("150340000892"), false));
    let staff = [
        ("051140000113", "880303300019", false),
        ("061240000228", "791122400025", false),
        ("011040000330", "910505500038", false),
        ("030940000443", "880303300019", true),
        ("090840000556", "791122400025", false),
    ];
    for (bin, iin, rsa) in staff {
        let h = Holder::new(&format!("staff-{bin}"), "СОТРУДНИК УСЛУГОДАТЕЛЯ", Some(iin), Some(bin), true);
        v.push(if rsa { h.rsa() } else { h });
    }
    v.push(Holder::new(
        &format!("staff-{DEMO_CENTRE_BIN}"),
        "ОПЕРАТОР ЦОН",
        Some("950707600049"),
        Some(DEMO_CENTRE_BIN),
        true,
    ));
    let c = "850401300125";
    v.push(Holder::new(&format!("expired-{c}"), "САПАРОВА АЙГЕРИМ", Some(c), None, false).quirk(Quirk::Expired));
    v.push(Holder::new(&format!("notyet-{c}"), "САПАРОВА АЙГЕРИМ", Some(c), None, false).quirk(Quirk::NotYetValid));
    v.push(Holder::new(&format!("revoked-{c}"), "САПАРОВА АЙГЕРИМ", Some(c), None, false).quirk(Quirk::Revoked));
    v.push(Holder::new(&format!("rogue-{c}"), "САПАРОВА АЙГЕРИМ", Some(c), None, false).quirk(Quirk::Rogue));
    v.push(Holder::new(&format!("nosig-{c}"), "САПАРОВА АЙГЕРИМ", Some(c), None, false).quirk(Quirk::NoSignatureUsage));
    // A citizen whose certificate names the licensing department but carries no staff role.
    v.push(Holder::new("impostor-011040000330", "САПАРОВА АЙГЕРИМ", Some(c), Some("011040000330"), false));
    v
}

/// The providers that sign results (`keys/<BIN>`), and the default key.
pub fn demo_provider_keys() -> Vec<Holder> {
    let mut v: Vec<Holder> = [
        ("051140000113", "ГККП ПОЛИКЛИНИКА 1 КОКШЕТАУ"),
        ("061240000228", "ГКП ГОРОДСКАЯ ПОЛИКЛИНИКА 4 АСТАНА"),
        ("011040000330", "ГУ УПРАВЛЕНИЕ ЗДРАВООХРАНЕНИЯ АКТЮБИНСКОЙ ОБЛАСТИ"),
    ]
    .iter()
    .map(|(bin, cn)| Holder::new(bin, cn, Some("880303300019"), Some(bin), true))
    .collect();
    v.push(
        Holder::new("030940000443", "ГУ УПРАВЛЕНИЕ АРХИВОВ АСТАНЫ", Some("880303300019"), Some("030940000443"), true)
            .rsa(),
    );
    v.push(Holder::new(
        "default",
        "QYZMET DEMO RESULT SIGNER",
        Some("880303300019"),
        Some(DEMO_SHARED_SIGNER_BIN),
        true,
    ));
    v
}

/// Where the generated files are.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// The directory.
    pub dir: PathBuf,
    /// Trust bundle.
    pub trust_bundle: PathBuf,
    /// CRL directory.
    pub crl_dir: PathBuf,
    /// Provider signing keys.
    pub keys_dir: PathBuf,
    /// Demo holders' keys.
    pub holders_dir: PathBuf,
}

impl PkiPaths {
    /// The layout under `dir`.
    pub fn at(dir: &Path) -> PkiPaths {
        PkiPaths {
            dir: dir.to_owned(),
            trust_bundle: dir.join("trust/roots.pem"),
            crl_dir: dir.join("crl"),
            keys_dir: dir.join("keys"),
            holders_dir: dir.join("holders"),
        }
    }
}

fn ts(t: DateTime<Utc>) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| e.to_string())
}

fn write(path: &Path, content: &str, private: bool) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    #[cfg(unix)]
    if private {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return f.write_all(content.as_bytes()).map_err(|e| format!("{}: {e}", path.display()));
    }
    let _ = private;
    std::fs::write(path, content).map_err(|e| format!("{}: {e}", path.display()))
}

fn ca_params(cn: &str, from: DateTime<Utc>, years: i64) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "KZ");
    dn.push(DnType::OrganizationName, "QYZMET DEMO CA (NOT THE NATIONAL CERTIFICATION AUTHORITY)");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = ts(from)?;
    p.not_after = ts(from + Duration::days(365 * years))?;
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn leaf_params(h: &Holder, serial: u64, now: DateTime<Utc>) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "KZ");
    dn.push(DnType::CommonName, h.common_name.as_str());
    if let Some(iin) = &h.iin {
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), format!("IIN{iin}"));
    }
    if let Some(bin) = &h.bin {
        dn.push(DnType::OrganizationalUnitName, format!("BIN{bin}"));
    }
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(serial));
    p.key_usages = match h.quirk {
        Quirk::NoSignatureUsage => vec![KeyUsagePurpose::KeyEncipherment],
        _ => vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment],
    };
    if h.staff {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(STAFF_ROLE_OID.to_vec())];
    }
    let (from, to) = match h.quirk {
        Quirk::Expired => (now - Duration::days(400), now - Duration::days(1)),
        Quirk::NotYetValid => (now + Duration::days(1), now + Duration::days(365)),
        _ => (now - Duration::days(30), now + Duration::days(365)),
    };
    p.not_before = ts(from)?;
    p.not_after = ts(to)?;
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn crl(
    issuer: &Issuer<'_, KeyPair>,
    revoked: &[u64],
    now: DateTime<Utc>,
    next: DateTime<Utc>,
) -> Result<String, String> {
    let params = CertificateRevocationListParams {
        this_update: ts(now - Duration::minutes(5))?,
        next_update: ts(next)?,
        crl_number: SerialNumber::from(u64::try_from(now.timestamp()).unwrap_or(1)),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: ts(now - Duration::days(2))?,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<_, String>>()?,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(issuer).map_err(|e| e.to_string())?.pem().map_err(|e| e.to_string())
}

fn ec_key() -> Result<KeyPair, String> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())
}

/// The whole demo PKI (every holder, every provider key) into `dir`, CRLs valid for 30 days:
/// what the demo, the benchmark, the drill and the tests use.
pub fn generate_demo(dir: &Path) -> Result<PkiPaths, String> {
    generate(dir, &demo_holders(), &demo_provider_keys(), Utc::now() + Duration::days(30))
}

/// Generates the demo PKI into `dir` (overwriting), with CRLs valid until `crl_next_update`.
pub fn generate(
    dir: &Path,
    holders: &[Holder],
    provider_keys: &[Holder],
    crl_next_update: DateTime<Utc>,
) -> Result<PkiPaths, String> {
    let paths = PkiPaths::at(dir);
    let now = Utc::now();
    let root_key = ec_key()?;
    write(&dir.join("ca/root.key.pem"), &root_key.serialize_pem(), true)?;
    let root = CertifiedIssuer::self_signed(ca_params("QYZMET DEMO ROOT CA", now - Duration::days(365), 20)?, root_key)
        .map_err(|e| e.to_string())?;
    let inter_key = ec_key()?;
    write(&dir.join("ca/intermediate.key.pem"), &inter_key.serialize_pem(), true)?;
    let inter = CertifiedIssuer::signed_by(
        ca_params("QYZMET DEMO SIGNING CA", now - Duration::days(365), 10)?,
        inter_key,
        &root,
    )
    .map_err(|e| e.to_string())?;
    let rogue = CertifiedIssuer::self_signed(ca_params("UNTRUSTED CA", now - Duration::days(365), 10)?, ec_key()?)
        .map_err(|e| e.to_string())?;
    write(&paths.trust_bundle, &root.pem(), false)?;
    write(&dir.join("ca/root.cert.pem"), &root.pem(), false)?;
    write(&dir.join("ca/intermediate.cert.pem"), &inter.pem(), false)?;

    let mut revoked = Vec::new();
    let mut serial = 1000u64;
    let mut issue = |h: &Holder, out: &Path| -> Result<(), String> {
        serial += 1;
        let key = if h.rsa { KeyPair::from_pem(DEMO_RSA_KEY).map_err(|e| e.to_string())? } else { ec_key()? };
        let params = leaf_params(h, serial, now)?;
        let (cert, chain_tail) = if h.quirk == Quirk::Rogue {
            (params.signed_by(&key, &rogue).map_err(|e| e.to_string())?, rogue.pem())
        } else {
            (params.signed_by(&key, &inter).map_err(|e| e.to_string())?, inter.pem())
        };
        if h.quirk == Quirk::Revoked {
            revoked.push(serial);
        }
        let key_pem = if h.rsa { DEMO_RSA_KEY.to_owned() } else { key.serialize_pem() };
        write(&out.join(format!("{}.key.pem", h.name)), &key_pem, true)?;
        write(&out.join(format!("{}.chain.pem", h.name)), &format!("{}{}", cert.pem(), chain_tail), false)
    };
    for h in holders {
        issue(h, &paths.holders_dir)?;
    }
    for h in provider_keys {
        issue(h, &paths.keys_dir)?;
    }
    write(&paths.crl_dir.join("intermediate.crl.pem"), &crl(&inter, &revoked, now, crl_next_update)?, false)?;
    write(&paths.crl_dir.join("root.crl.pem"), &crl(&root, &[], now, crl_next_update)?, false)?;
    Ok(paths)
}

/// Re-issues the intermediate CA's CRL of an existing demo PKI (tests: a CRL past its
/// nextUpdate, a newly revoked serial).
pub fn reissue_intermediate_crl(dir: &Path, revoked_serials: &[u64], next_update: DateTime<Utc>) -> Result<(), String> {
    let key_pem = std::fs::read_to_string(dir.join("ca/intermediate.key.pem")).map_err(|e| e.to_string())?;
    let cert_pem = std::fs::read_to_string(dir.join("ca/intermediate.cert.pem")).map_err(|e| e.to_string())?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| e.to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| e.to_string())?;
    let now = Utc::now();
    let this = if next_update < now { next_update - Duration::days(1) } else { now };
    let pem = crl(&issuer, revoked_serials, this + Duration::minutes(5), next_update)?;
    write(&dir.join("crl/intermediate.crl.pem"), &pem, false)
}

/// The demo PKI holder who signs a request under the regulation of its channel: the applicant
/// on the portal, provider staff at the provider, a centre operator at the centre.
pub fn proper_signer(request: &serde_json::Value) -> String {
    let applicant = &request["applicant"];
    match request["channel"].as_str() {
        Some("provider") => format!("staff-{}", request["provider"].as_str().unwrap_or_default()),
        Some("centre") => format!("staff-{DEMO_CENTRE_BIN}"),
        _ => match (applicant["iin"].as_str(), applicant["bin"].as_str()) {
            (_, Some(b)) => format!("bin-{b}"),
            (Some(i), _) => format!("iin-{i}"),
            _ => String::new(),
        },
    }
}
