//! The demonstration behind `make demo`: a demo PKI, the demo registries, every pool in one
//! process, signed sample traffic for every service, region and channel (including requests
//! that must be refused), and a table of the final outcomes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use qyzmet::broker::{Broker, Message, Publisher};
use qyzmet::config::Settings;
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Outcome, Status, now_local};
use qyzmet::registry::import_file;
use qyzmet::regulations::{PoolName, Regulations};
use qyzmet::signature::keys::SigningKey;
use qyzmet::startup::{self, Deps, Options};
use qyzmet::store::Store;
use qyzmet::systems::{Kind, System, Systems};
use qyzmet_demo_pki::PkiPaths;

/// What the demo does once a request reaches the payment or a staff-review step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Nothing to answer (automated services, or refused before).
    None,
    /// Pay when the payment step is reached, then approve at review.
    PayApprove,
    /// Pay before the request is even published, then approve.
    PayFirstApprove,
    /// Never pay (refusal L2 when the payment deadline passes).
    NoPayment,
    /// Pay, then staff refuse.
    PayRefuse,
    /// Staff approve.
    Approve,
    /// A citizen's certificate "approves" (recorded, not applied), then staff approve.
    ImpostorThenApprove,
    /// Staff refuse with a reason.
    Refuse,
}

/// How the demo signs a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    /// As the channel's regulation says: the applicant on the portal, provider staff at the
    /// provider, a centre operator at the centre.
    Proper,
    /// With this holder's key instead (expired, revoked, rogue, someone else's).
    Holder(&'static str),
    /// Properly, then the algorithm is relabelled GOST.
    Gost,
    /// Properly, then the form is changed.
    Tampered,
}

struct Spec {
    label: &'static str,
    expect: &'static str,
    act: Act,
    sig: Sig,
    request: Value,
}

struct Scenario {
    label: &'static str,
    expect: &'static str,
    act: Act,
    body: Vec<u8>,
    id: Option<Uuid>,
    service: String,
    provider: String,
    /// Which system publishes it (portal, provider workstation, centre).
    channel: String,
}

pub(crate) const CITIZEN: &str = "850401300125";
pub(crate) const CITIZEN_ASTANA: &str = "771102450346";
pub(crate) const UNATTACHED: &str = "921212500674";
pub(crate) const UNKNOWN_PERSON: &str = "900615400236";
pub(crate) const REPRESENTATIVE: &str = "800808300565";
pub(crate) const CLINIC: &str = "120540000785";
pub(crate) const UNKNOWN_ENTITY: &str = "150340000892";
pub(crate) const AKMOLA_PHC: &str = "051140000113";
pub(crate) const ASTANA_PHC: &str = "061240000228";
pub(crate) const AKTOBE_HEALTH: &str = "011040000330";
pub(crate) const ASTANA_ARCHIVES: &str = "030940000443";
pub(crate) const UNREGISTERED: &str = "090840000556";

/// The settings pointed at a demo PKI: its trust bundle, CRLs and result-signing keys, and the
/// staff roles, centre and shared signer its certificates name.
pub(crate) fn with_pki(mut settings: Settings, pki: &PkiPaths) -> Settings {
    settings.trust_bundle = Some(pki.trust_bundle.clone());
    settings.crl_path = Some(pki.crl_dir.clone());
    settings.signing_keys = Some(pki.keys_dir.clone());
    settings.staff_role_oids = vec![qyzmet_demo_pki::DEMO_STAFF_ROLES.into()];
    settings.centre_bins = vec![qyzmet_demo_pki::DEMO_CENTRE_BIN.into()];
    settings.shared_signer_bins = vec![qyzmet_demo_pki::DEMO_SHARED_SIGNER_BIN.into()];
    settings
}

pub(crate) fn req(
    service: &str,
    region: &str,
    channel: &str,
    applicant: (&str, &str),
    provider: &str,
    form: Value,
) -> Value {
    json!({
        "request_id": Uuid::new_v4().to_string(),
        "service": service, "region": region, "channel": channel,
        "submitted_at": now_local().to_rfc3339(),
        "applicant": { applicant.0: applicant.1 }, "provider": provider, "form": form,
        "attachments": [{ "name": "application.pdf", "media_type": "application/pdf", "size": 48213,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "uri": "https://files.example/demo/1" }],
    })
}

fn spec(label: &'static str, expect: &'static str, act: Act, sig: Sig, request: Value) -> Spec {
    Spec { label, expect, act, sig, request }
}

fn specs() -> Vec<Spec> {
    use Act::*;
    use Sig::*;
    let (s1, s2, s3, s4, s5) =
        ("doctor-appointment", "phc-attachment", "home-doctor-call", "medical-licence", "archive-certificate");
    let iin = |v: &'static str| ("iin", v);
    let bin = |v: &'static str| ("bin", v);
    let slot = || json!({ "specialist": "терапевт", "slot": "2026-11-25T10:30+05:00" });
    let home = || json!({ "address": "Кокшетау, ул. Абая 12, кв. 5", "symptoms": "температура 38,5" });
    let licence = |kind: &str| json!({ "kind": kind, "activity": "первичная медико-санитарная помощь" });
    let archive = || json!({ "certificate_type": "о трудовом стаже", "period": "1995-2001", "purpose": "пенсия" });
    let with_poa = |mut v: Value, poa: &str| {
        v["representative"] = json!({ "iin": REPRESENTATIVE, "power_of_attorney": poa });
        v
    };
    vec![
        spec(
            "S1 Akmola portal, attached citizen",
            "completed",
            None,
            Proper,
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola provider workstation",
            "completed",
            None,
            Proper,
            req(s1, "akmola", "provider", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Astana portal",
            "completed",
            None,
            Proper,
            req(s1, "astana", "portal", iin(CITIZEN_ASTANA), ASTANA_PHC, slot()),
        ),
        spec(
            "S1 Astana provider workstation",
            "completed",
            None,
            Proper,
            req(s1, "astana", "provider", iin(CITIZEN_ASTANA), ASTANA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, not attached here (P-30)",
            "refused R3",
            None,
            Proper,
            req(s1, "akmola", "portal", iin(UNATTACHED), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola provider, not in ГБД ФЛ",
            "refused R4",
            None,
            Proper,
            req(s1, "akmola", "provider", iin(UNKNOWN_PERSON), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, GOST signature",
            "refused R2",
            None,
            Gost,
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, tampered after signing",
            "refused R2",
            None,
            Tampered,
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, expired certificate",
            "refused R2",
            None,
            Holder("expired-850401300125"),
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, revoked certificate",
            "refused R2",
            None,
            Holder("revoked-850401300125"),
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, untrusted issuer",
            "refused R2",
            None,
            Holder("rogue-850401300125"),
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S1 Akmola portal, signed by someone else",
            "refused R2",
            None,
            Holder("iin-921212500674"),
            req(s1, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, slot()),
        ),
        spec(
            "S2 Akmola portal",
            "completed",
            None,
            Proper,
            req(s2, "akmola", "portal", iin(UNATTACHED), AKMOLA_PHC, json!({})),
        ),
        spec(
            "S2 Akmola provider workstation",
            "completed",
            None,
            Proper,
            req(s2, "akmola", "provider", iin(UNATTACHED), AKMOLA_PHC, json!({})),
        ),
        spec(
            "S2 Aktobe portal (1 working day)",
            "completed",
            None,
            Proper,
            req(s2, "aktobe", "portal", iin(UNATTACHED), AKMOLA_PHC, json!({})),
        ),
        spec(
            "S2 Aktobe provider workstation",
            "completed",
            None,
            Proper,
            req(s2, "aktobe", "provider", iin(UNATTACHED), AKMOLA_PHC, json!({})),
        ),
        spec(
            "S2 Astana portal (same day)",
            "completed",
            None,
            Proper,
            req(s2, "astana", "portal", iin(UNATTACHED), ASTANA_PHC, json!({})),
        ),
        spec(
            "S2 Astana provider workstation",
            "completed",
            None,
            Proper,
            req(s2, "astana", "provider", iin(UNATTACHED), ASTANA_PHC, json!({})),
        ),
        spec(
            "S2 Astana portal, provider not in ГБД ЮЛ",
            "completed",
            None,
            Proper,
            req(s2, "astana", "portal", iin(UNATTACHED), UNREGISTERED, json!({})),
        ),
        spec(
            "S3 Akmola portal",
            "completed",
            None,
            Proper,
            req(s3, "akmola", "portal", iin(CITIZEN), AKMOLA_PHC, home()),
        ),
        spec(
            "S3 Akmola provider workstation",
            "completed",
            None,
            Proper,
            req(s3, "akmola", "provider", iin(CITIZEN), AKMOLA_PHC, home()),
        ),
        spec(
            "S3 Astana portal",
            "completed",
            None,
            Proper,
            req(s3, "astana", "portal", iin(CITIZEN_ASTANA), ASTANA_PHC, home()),
        ),
        spec(
            "S3 Astana provider workstation",
            "completed",
            None,
            Proper,
            req(s3, "astana", "provider", iin(CITIZEN_ASTANA), ASTANA_PHC, home()),
        ),
        spec(
            "S3 Akmola provider, not attached here",
            "refused R5",
            None,
            Proper,
            req(s3, "akmola", "provider", iin(UNATTACHED), AKMOLA_PHC, home()),
        ),
        spec(
            "S3 Astana portal, bad IIN check digit",
            "refused invalid_request",
            None,
            Proper,
            req(s3, "astana", "portal", iin("771102450345"), ASTANA_PHC, home()),
        ),
        spec(
            "S4 portal, licence issue (15 working days)",
            "completed",
            PayApprove,
            Proper,
            req(s4, "aktobe", "portal", bin(CLINIC), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S4 portal, re-issue, paid before the request",
            "completed",
            PayFirstApprove,
            Proper,
            req(s4, "aktobe", "portal", bin(CLINIC), AKTOBE_HEALTH, licence("reissue")),
        ),
        spec(
            "S4 portal, never paid",
            "refused L2",
            NoPayment,
            Proper,
            req(s4, "aktobe", "portal", bin(CLINIC), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S4 portal, staff refuse",
            "refused L4",
            PayRefuse,
            Proper,
            req(s4, "aktobe", "portal", bin(CLINIC), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S4 portal, GOST signature",
            "refused L3",
            None,
            Gost,
            req(s4, "aktobe", "portal", bin(CLINIC), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S4 provider, citizen 'approves', then staff",
            "completed",
            ImpostorThenApprove,
            Proper,
            req(s4, "aktobe", "provider", bin(CLINIC), AKTOBE_HEALTH, licence("reissue")),
        ),
        spec(
            "S4 provider, entity not in ГБД ЮЛ",
            "refused L6",
            None,
            Proper,
            req(s4, "aktobe", "provider", bin(UNKNOWN_ENTITY), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S4 provider, staff refuse",
            "refused L7",
            Refuse,
            Proper,
            req(s4, "aktobe", "provider", bin(CLINIC), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S4 centre, duplicate via representative",
            "completed",
            Approve,
            Proper,
            with_poa(req(s4, "aktobe", "centre", bin(CLINIC), AKTOBE_HEALTH, licence("duplicate")), "ENIS-2026-000417"),
        ),
        spec(
            "S4 centre, revoked power of attorney",
            "refused L8",
            None,
            Proper,
            with_poa(req(s4, "aktobe", "centre", bin(CLINIC), AKTOBE_HEALTH, licence("issue")), "ENIS-2026-000999"),
        ),
        spec(
            "S4 centre, staff refuse",
            "refused L9",
            Refuse,
            Proper,
            with_poa(req(s4, "aktobe", "centre", bin(CLINIC), AKTOBE_HEALTH, licence("issue")), "ENIS-2026-000417"),
        ),
        spec(
            "S4 in Akmola (no regulation there)",
            "refused unsupported_service",
            None,
            Proper,
            req(s4, "akmola", "portal", bin(CLINIC), AKTOBE_HEALTH, licence("issue")),
        ),
        spec(
            "S5 ЖАО (provider, RS256)",
            "completed",
            Approve,
            Proper,
            req(s5, "astana", "provider", iin(CITIZEN_ASTANA), ASTANA_ARCHIVES, archive()),
        ),
        spec(
            "S5 ХҚКО (centre)",
            "completed",
            Approve,
            Proper,
            req(s5, "astana", "centre", iin(CITIZEN_ASTANA), ASTANA_ARCHIVES, archive()),
        ),
        spec(
            "S5 ЭҮП (portal)",
            "completed",
            Approve,
            Proper,
            req(s5, "astana", "portal", iin(CITIZEN_ASTANA), ASTANA_ARCHIVES, archive()),
        ),
        spec(
            "S5 portal, staff refuse",
            "refused A7",
            Refuse,
            Proper,
            req(s5, "astana", "portal", iin(CITIZEN_ASTANA), ASTANA_ARCHIVES, archive()),
        ),
        spec(
            "S5 ЖАО, citizen's certificate",
            "refused A2",
            None,
            Holder("iin-771102450346"),
            req(s5, "astana", "provider", iin(CITIZEN_ASTANA), ASTANA_ARCHIVES, archive()),
        ),
        spec(
            "S5 ХҚКО, expired certificate",
            "refused A4",
            None,
            Holder("expired-850401300125"),
            req(s5, "astana", "centre", iin(CITIZEN_ASTANA), ASTANA_ARCHIVES, archive()),
        ),
        spec(
            "S5 portal, certificate not yet valid",
            "refused A6",
            None,
            Holder("notyet-850401300125"),
            req(s5, "astana", "portal", iin(CITIZEN), ASTANA_ARCHIVES, archive()),
        ),
    ]
}

pub use qyzmet_demo_pki::proper_signer;

/// Demo signing keys, loaded on first use.
pub(crate) struct Keys {
    pki: PkiPaths,
    cache: HashMap<String, SigningKey>,
}

impl Keys {
    /// Over a generated demo PKI.
    pub(crate) fn new(pki: PkiPaths) -> Keys {
        Keys { pki, cache: HashMap::new() }
    }

    pub(crate) fn sign(&mut self, holder: &str, v: &mut Value) -> anyhow::Result<()> {
        // An invalid identifier has no certificate: sign as the other citizen of the registry.
        let holder =
            if self.pki.holders_dir.join(format!("{holder}.key.pem")).exists() { holder } else { "iin-771102450346" };
        if !self.cache.contains_key(holder) {
            let key = qyzmet::signature::keys::load_key(&self.pki.holders_dir, holder)
                .map_err(|e| anyhow::anyhow!("demo key {holder}: {e}"))?;
            self.cache.insert(holder.to_owned(), key);
        }
        let key = &self.cache[holder];
        let obj = v.as_object_mut().context("a JSON object")?;
        key.sign_in_place(obj).map_err(|e| anyhow::anyhow!(e))
    }
}

fn scenarios(keys: &mut Keys) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for s in specs() {
        let mut v = s.request;
        match s.sig {
            Sig::Proper => keys.sign(&proper_signer(&v), &mut v)?,
            Sig::Holder(h) => keys.sign(h, &mut v)?,
            Sig::Gost => {
                keys.sign(&proper_signer(&v), &mut v)?;
                v["signature"]["algorithm"] = json!("GOST34.10-2015");
            }
            Sig::Tampered => {
                keys.sign(&proper_signer(&v), &mut v)?;
                v["form"]["specialist"] = json!("хирург");
            }
        }
        out.push(Scenario {
            label: s.label,
            expect: s.expect,
            act: s.act,
            id: v["request_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()),
            service: v["service"].as_str().unwrap_or_default().to_owned(),
            provider: v["provider"].as_str().unwrap_or_default().to_owned(),
            channel: v["channel"].as_str().unwrap_or("portal").to_owned(),
            body: serde_json::to_vec(&v)?,
        });
    }
    out.push(Scenario {
        label: "not JSON at all",
        expect: "dead-lettered not_json",
        act: Act::None,
        body: b"<xml>definitely not a request</xml>".to_vec(),
        id: Option::None,
        // Published by the portal with a routing key it may use (its permissions allow no other).
        service: "doctor-appointment".into(),
        provider: String::new(),
        channel: "portal".into(),
    });
    Ok(out)
}

pub(crate) async fn publish(p: &Publisher, exchange: &str, key: &str, id: String, body: Vec<u8>) -> anyhow::Result<()> {
    let m = Message {
        exchange: exchange.into(),
        routing_key: key.into(),
        message_id: id,
        body,
        traceparent: Option::None,
        headers: Vec::new(),
        must_route: true,
    };
    p.publish_all(&[m]).await.context("publish")
}

/// Publishes the payment gateway's notice for a request.
async fn pay(gateway: &Publisher, id: Uuid) -> anyhow::Result<()> {
    publish(gateway, EXCHANGE_PAYMENTS, qyzmet::contract::ROUTING_KEY_PAYMENT, format!("pay-{id}"), payment_notice(id))
        .await
}

pub(crate) fn payment_notice(id: Uuid) -> Vec<u8> {
    let v = json!({ "payment_id": format!("PSHEP-{}", &id.simple().to_string()[..10]), "request_id": id.to_string(),
        "amount": "20000.00", "currency": "KZT", "paid_at": now_local().to_rfc3339(), "payer": { "bin": CLINIC } });
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(crate) fn staff_decision(keys: &mut Keys, holder: &str, id: Uuid, approve: bool) -> anyhow::Result<Vec<u8>> {
    let mut v = json!({ "decision_id": Uuid::new_v4().to_string(), "request_id": id.to_string(),
        "decision": if approve { "approve" } else { "refuse" }, "decided_at": now_local().to_rfc3339() });
    if !approve {
        v["reason"] =
            json!({ "ru": "не представлены документы о квалификации", "kk": "біліктілік туралы құжаттар ұсынылмаған" });
    }
    keys.sign(holder, &mut v)?;
    Ok(serde_json::to_vec(&v)?)
}

/// Who publishes the demo's messages: with a systems file, each upstream system under its own
/// broker user (the broker checks each one's permissions, qyzmet each message's `user_id`);
/// without one, the configured user for everything.
struct Senders {
    portal: Arc<Publisher>,
    provider: Arc<Publisher>,
    centre: Arc<Publisher>,
    gateway: Arc<Publisher>,
    staff: Arc<Publisher>,
    brokers: Vec<Arc<Broker>>,
    /// (role, broker user) for the narration.
    users: Vec<(&'static str, String)>,
}

impl Senders {
    async fn connect(settings: &Settings, systems: Option<&Systems>, passwords: &Path) -> anyhow::Result<Senders> {
        let Some(systems) = systems else {
            let broker = Broker::open_with(&settings.amqp_url()?, "qyzmet demo sender", settings.amqp_ca()?).await?;
            let p = Arc::new(broker.publisher().await?);
            return Ok(Senders {
                portal: p.clone(),
                provider: p.clone(),
                centre: p.clone(),
                gateway: p.clone(),
                staff: p,
                users: vec![("everything", broker.user().to_owned())],
                brokers: vec![broker],
            });
        };
        let mut brokers = Vec::new();
        let mut users = Vec::new();
        let mut publishers = Vec::new();
        for (role, kind) in [
            ("portal", Kind::Portal),
            ("provider workstation", Kind::ProviderWorkstation),
            ("centre", Kind::Centre),
            ("payment gateway", Kind::PaymentGateway),
            ("staff application", Kind::StaffApplication),
        ] {
            let system = systems
                .systems()
                .iter()
                .find(|s| s.kind == kind)
                .with_context(|| format!("the systems file has no {role}"))?;
            let url = url_as(settings, systems, Some(system), passwords)?;
            let broker = Broker::open_with(&url, &format!("qyzmet demo as {}", system.user), settings.amqp_ca()?)
                .await
                .with_context(|| format!("cannot log in as {} (were the definitions imported?)", system.user))?;
            publishers.push(Arc::new(broker.publisher().await?));
            users.push((role, system.user.clone()));
            brokers.push(broker);
        }
        let mut next = publishers.into_iter();
        let mut take = || next.next().context("a publisher per role");
        Ok(Senders {
            portal: take()?,
            provider: take()?,
            centre: take()?,
            gateway: take()?,
            staff: take()?,
            brokers,
            users,
        })
    }

    fn for_channel(&self, channel: &str) -> &Publisher {
        match channel {
            "provider" => &self.provider,
            "centre" => &self.centre,
            _ => &self.portal,
        }
    }

    async fn close(self) {
        for b in self.brokers {
            b.close().await;
        }
    }
}

/// The broker URL of `settings` logged in as a system of the file (`None`: qyzmet itself),
/// with the password from its password file.
fn url_as(settings: &Settings, systems: &Systems, system: Option<&System>, passwords: &Path) -> anyhow::Result<String> {
    let user = system.map(|s| s.user.as_str()).unwrap_or(systems.own_user());
    let path = systems.password_path(system, passwords);
    let password = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the password of {user} ({})", path.display()))?;
    qyzmet::config::with_login(&settings.amqp_url, Some(user), password.trim_end())
}

/// Runs the demonstration end to end against the configured services. With a systems file in
/// the settings, qyzmet runs as its own broker user and every message is published by the
/// system that would send it, with the passwords in `passwords`.
/// The demo's console account.
const DEMO_OPERATOR: &str = "demo-operator";

/// Writes the demo's operators file (one operator account whose password is generated once and
/// kept under `passwords`); returns the file and the password.
fn demo_operators(passwords: &Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let password_file = passwords.join(format!("console-{DEMO_OPERATOR}.password"));
    let password = crate::read_or_make_password(&password_file, true).map_err(anyhow::Error::msg)?;
    let hash = qyzmet::console::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    let file = passwords.parent().unwrap_or(Path::new(".")).join("operators.toml");
    let text = format!(
        "# Written by `qyzmet demo`: the demo's console account (password in {}).\n\
         [[operator]]\nname = \"{DEMO_OPERATOR}\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\n",
        password_file.display()
    );
    crate::write_private(&file, text.as_bytes())?;
    Ok((file, password))
}

pub async fn run(
    settings: &Settings,
    dir: &Path,
    pki_dir: &Path,
    passwords: &Path,
    keep_running: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "qyzmet demo — RabbitMQ {}, PostgreSQL {}",
        qyzmet::config::redact(&settings.amqp_url),
        qyzmet::config::redact(&settings.database_url)
    );
    if let Some(file) = &settings.systems_file {
        println!("   (qyzmet and every sender log in as the broker users of {})", file.display());
    }
    let pki = qyzmet_demo_pki::generate_demo(pki_dir).map_err(|e| anyhow::anyhow!("demo PKI: {e}"))?;
    println!(
        "\n1. demo PKI in {} (root and signing CA, CRLs, citizen, entity, staff and operator certificates,",
        pki_dir.display()
    );
    println!("   provider result-signing keys, and expired, not-yet-valid, revoked and untrusted certificates)");
    let mut settings = with_pki(settings.clone(), &pki);
    let systems = settings.systems()?;
    if let Some(systems) = &systems {
        // qyzmet itself logs in as its own user, reading the password from its file.
        let url = url_as(&settings, systems, None, passwords)?;
        settings.amqp_password_file = Some(systems.password_path(None, passwords));
        settings.amqp_url = url;
    }
    let store = Store::connect(settings.migration_url(), 4).await.context("cannot connect to PostgreSQL")?;
    store.migrate().await.context("migrations failed")?;
    println!("\n2. migrations applied; demo registries:");
    for f in ["persons.jsonl", "legal-entities.csv", "powers-of-attorney.jsonl", "attachments.csv"] {
        let path = dir.join("registries").join(f);
        let report =
            import_file(&store, &path, Option::None).await.with_context(|| format!("importing {}", path.display()))?;
        let n: usize = report.accepted.iter().map(|(_, n)| n).sum();
        println!("   {:<28} {n} rows imported, {} rejected", f, report.rejected.len());
    }
    let mut regs = Regulations::load(&settings.regulations_dir).map_err(|e| anyhow::anyhow!("regulation data: {e}"))?;
    let payment_wait = chrono::Duration::seconds(10);
    regs.override_step_deadline(PoolName::Payment, payment_wait);
    println!(
        "\n3. starting all pools in this process (the demo shortens the S4 payment deadline from 1m30s \
         (Табл. 1.1 д.4) to {}s so the no-payment refusal L2 shows without a long wait)",
        payment_wait.num_seconds()
    );
    let console_password = match &settings.operators_file {
        Some(_) => None,
        None => {
            let (file, password) = demo_operators(passwords)?;
            settings.operators_file = Some(file);
            Some(password)
        }
    };
    let running = startup::start(&settings, regs, Options::all(8), Deps::from_settings(&settings)?).await?;

    let broker = settings.broker("qyzmet demo").await?;
    let senders = Senders::connect(&settings, systems.as_ref(), passwords).await?;
    match &systems {
        Some(_) => {
            println!(
                "   publishing as the systems of {}:",
                settings.systems_file.as_deref().unwrap_or(Path::new("")).display()
            );
            for (role, user) in &senders.users {
                println!("     {role:<22} broker user {user}");
            }
        }
        None => println!("   no systems file: every message is published as {}", senders.users[0].1),
    }
    let (ch, mut consumer) = qyzmet::broker::subscribe_outcomes(&broker).await?;
    let dead_before = count_dead(&broker, &store).await;

    let mut keys = Keys::new(pki.clone());
    let mut scenarios = scenarios(&mut keys)?;
    println!(
        "\n4. publishing {} signed messages to {EXCHANGE_REQUESTS} (every service, region and channel, and ones that must be refused)",
        scenarios.len()
    );
    for s in &scenarios {
        if let (Some(id), Act::PayFirstApprove) = (s.id, s.act) {
            pay(&senders.gateway, id).await?;
        }
    }
    for s in &mut scenarios {
        let id = s.id.map(|i| i.to_string()).unwrap_or_else(|| Uuid::new_v4().to_string());
        let sender = senders.for_channel(&s.channel);
        publish(sender, EXCHANGE_REQUESTS, &s.service, id, std::mem::take(&mut s.body)).await?;
    }

    println!("\n5. answering as the payment gateway and as provider staff while outcomes arrive…");
    let acts: HashMap<Uuid, (Act, String, String)> =
        scenarios.iter().filter_map(|s| s.id.map(|id| (id, (s.act, s.service.clone(), s.provider.clone())))).collect();
    let mut finals: HashMap<Uuid, Outcome> = HashMap::new();
    let mut answered: HashMap<(Uuid, &'static str), ()> = HashMap::new();
    let expected = acts.len();
    let deadline = Instant::now() + Duration::from_secs(180);
    while finals.len() < expected {
        let next = tokio::time::timeout_at(deadline.into(), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            anyhow::bail!("only {} of {expected} requests reached a final outcome within 3 minutes", finals.len());
        };
        let Ok(o) = serde_json::from_slice::<Outcome>(&delivery.data) else { continue };
        let Some((act, service, provider)) = acts.get(&o.request_id).cloned() else { continue };
        if o.status.is_final() {
            finals.insert(o.request_id, o);
            continue;
        }
        let step = o.step.as_deref().unwrap_or_default();
        let id = o.request_id;
        if step == "payment"
            && matches!(act, Act::PayApprove | Act::PayRefuse)
            && answered.insert((id, "pay"), ()).is_none()
        {
            pay(&senders.gateway, id).await?;
        }
        if step == "review"
            && act != Act::None
            && act != Act::NoPayment
            && answered.insert((id, "decide"), ()).is_none()
        {
            let staff = format!("staff-{provider}");
            let key = qyzmet::contract::decision_routing_key(&service);
            if act == Act::ImpostorThenApprove {
                let fake = staff_decision(&mut keys, "impostor-011040000330", id, true)?;
                publish(&senders.staff, EXCHANGE_DECISIONS, &key, format!("fake-{id}"), fake).await?;
            }
            let approve = !matches!(act, Act::PayRefuse | Act::Refuse);
            let body = staff_decision(&mut keys, &staff, id, approve)?;
            publish(&senders.staff, EXCHANGE_DECISIONS, &key, format!("dec-{id}"), body).await?;
        }
    }
    let dead_after = count_dead(&broker, &store).await;

    println!("\n6. final outcomes\n");
    println!(
        "{:<3} {:<45} {:<24} {:<9} {:<9} {:<52} {:<17} check",
        "#", "scenario", "request number", "status", "step", "reason or document", "service deadline"
    );
    // The specific reason a signature was not confirmed is not in the Outcome (applicants get the
    // regulation's text); operators find it in the audit trail, as `qyzmet status` shows.
    let mut signature_reasons: HashMap<Uuid, String> = HashMap::new();
    for o in finals.values().filter(|o| o.reason.as_ref().is_some_and(|r| r.kind == "signature_not_confirmed")) {
        let history = store.history_of(o.request_id).await.unwrap_or_default();
        if let Some(why) = history.iter().find_map(|h| h.detail.as_ref()?.get("signature")?.as_str().map(str::to_owned))
        {
            signature_reasons.insert(o.request_id, why);
        }
    }
    let mut ok = 0;
    for (i, s) in scenarios.iter().enumerate() {
        let (number, status, step, what, deadline, got) = match s.id.and_then(|id| finals.get(&id)) {
            Some(o) => (
                o.request_number.clone().unwrap_or_else(|| "(not registered)".into()),
                if o.status == Status::Completed { "completed" } else { "refused" },
                o.step.clone().unwrap_or_else(|| "-".into()),
                match (&o.reason, &o.document) {
                    (Some(r), _) => match signature_reasons.get(&o.request_id) {
                        Some(why) => format!("{} {} ({why})", r.code.as_deref().unwrap_or("-"), r.kind),
                        None => format!("{} {}", r.code.as_deref().unwrap_or("-"), r.kind),
                    },
                    (Option::None, Some(d)) => format!(
                        "{} {} {}",
                        d["kind"].as_str().unwrap_or("?"),
                        d["number"].as_str().unwrap_or("?"),
                        d["signature"]["algorithm"].as_str().unwrap_or("unsigned")
                    ),
                    _ => "-".into(),
                },
                o.deadline.map(|d| d.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_else(|| "-".into()),
                match &o.reason {
                    Some(r) => format!("refused {}", r.code.clone().unwrap_or_else(|| r.kind.clone())),
                    Option::None => "completed".into(),
                },
            ),
            Option::None if s.id.is_none() && dead_after > dead_before => (
                "-".into(),
                "-",
                "intake".into(),
                "qyzmet.dead-letter not_json".into(),
                "-".into(),
                "dead-lettered not_json".into(),
            ),
            Option::None => ("-".into(), "-", "-".into(), "no outcome".into(), "-".into(), "missing".into()),
        };
        let check = if got == s.expect {
            ok += 1;
            "ok".to_owned()
        } else {
            format!("UNEXPECTED (expected {})", s.expect)
        };
        println!(
            "{:<3} {:<45} {:<24} {:<9} {:<9} {:<52} {:<17} {check}",
            i + 1,
            s.label,
            number,
            status,
            step,
            what,
            deadline
        );
    }
    if let Some(r) = finals.values().filter_map(|o| o.reason.as_ref()).find(|r| r.code.as_deref() == Some("L4")) {
        println!(
            "\nA refusal reads, in the three languages of the outcome:\n  ru: {}\n  kk: {}\n  en: {}",
            r.ru, r.kk, r.en
        );
    }
    if let Some(doc) = finals.values().find_map(|o| o.document.as_ref()) {
        let path = pki_dir.join("sample-document.json");
        std::fs::write(&path, serde_json::to_vec_pretty(doc)?)?;
        println!(
            "\nA signed result document was saved to {}; check it offline with:\n  qyzmet verify {} --trust-bundle {} --crl-path {} \\\n    --shared-signer-bins {}",
            path.display(),
            path.display(),
            pki.trust_bundle.display(),
            pki.crl_dir.display(),
            qyzmet_demo_pki::DEMO_SHARED_SIGNER_BIN
        );
    }
    println!(
        "\n{ok} of {} scenarios ended as expected; {} message(s) dead-lettered during the demo; {:.1}s.",
        scenarios.len(),
        dead_after.saturating_sub(dead_before),
        started.elapsed().as_secs_f64()
    );
    if let Some(id) = scenarios.iter().filter_map(|s| s.id).next() {
        println!("Inspect any request with: qyzmet status {id}");
    }
    let console = format!("http://{}/console", running.http_addr);
    match &console_password {
        Some(pw) => println!("\nConsole: {console} — sign in as {DEMO_OPERATOR} / {pw}"),
        None => println!(
            "\nConsole: {console} (accounts of {})",
            settings.operators_file.as_deref().unwrap_or(Path::new("")).display()
        ),
    }
    let _ = ch.close(200, "bye".into()).await;
    senders.close().await;
    broker.close().await;
    if keep_running {
        println!("The pipeline and the console keep running; Ctrl-C stops them.");
        crate::wait_for_signal().await;
    } else {
        println!(
            "To look around the console with these requests, run `make console` (the demo, then the pipeline and console keep running until Ctrl-C)."
        );
    }
    running.shutdown(Duration::from_secs(10)).await;
    store.close().await;
    if ok != scenarios.len() {
        anyhow::bail!("{} scenario(s) did not end as expected", scenarios.len() - ok);
    }
    Ok(())
}

/// Dead letters on the broker plus those the console moved into PostgreSQL.
pub(crate) async fn count_dead(broker: &Broker, store: &Store) -> u64 {
    let queued = qyzmet::broker::queue_counts(broker, qyzmet::broker::QUEUE_DEAD).await.0;
    u64::from(queued) + store.open_dead_letters().await.map_or(0, |n| n.max(0) as u64)
}
