//! Builders shared by the pools' unit tests, which run without a broker or a database: the
//! repository's regulation data, Requests as senders publish them, a request registered and
//! standing at one step of its route, an in-memory registry holding the demo's people and
//! organisations (`demo/registries`), and the demo PKI.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::contract::{Envelope, Request};
use crate::pipeline::StepInput;
use crate::registry::MemoryRegistry;
use crate::regulations::{PoolName, Regulations, Route};
use crate::signature::keys::Keyring;
use crate::signature::x509::X509Verifier;
use crate::store::{AttachmentRecord, EntityRecord, PersonRecord, PowerOfAttorneyRecord, RequestRow};
use qyzmet_demo_pki::{self as pki, PkiPaths};

/// Identities of the demo (`demo/registries`, `tests/it/common`); every IIN and BIN has a valid
/// check digit.
pub mod who {
    /// In ГБД ФЛ, attached to [`AKMOLA_PHC`].
    pub const CITIZEN: &str = "850401300125";
    /// In ГБД ФЛ, attached nowhere.
    pub const UNATTACHED: &str = "921212500674";
    /// A valid IIN that is not in ГБД ФЛ.
    pub const UNKNOWN_PERSON: &str = "900615400236";
    /// In ГБД ФЛ; the representative named in [`super::POA`].
    pub const REPRESENTATIVE: &str = "800808300565";
    /// In ГБД ФЛ; someone who is not the representative.
    pub const OTHER_PERSON: &str = "010203600450";
    /// A clinic applying for a licence (in ГБД ЮЛ).
    pub const CLINIC: &str = "120540000785";
    /// A valid BIN that is not in ГБД ЮЛ.
    pub const UNKNOWN_ENTITY: &str = "150340000892";
    /// Akmola polyclinic (in ГБД ЮЛ).
    pub const AKMOLA_PHC: &str = "051140000113";
    /// Astana polyclinic (in ГБД ЮЛ).
    pub const ASTANA_PHC: &str = "061240000228";
    /// Aktobe health department, the licensor (in ГБД ЮЛ).
    pub const AKTOBE_HEALTH: &str = "011040000330";
    /// Astana archives department (in ГБД ЮЛ).
    pub const ASTANA_ARCHIVES: &str = "030940000443";
    /// A valid BIN of an organisation that is not in ГБД ЮЛ.
    pub const UNREGISTERED_PROVIDER: &str = "090840000556";
}

/// A notarised power of attorney in ЕНИС: [`who::CLINIC`] to [`who::REPRESENTATIVE`], valid.
pub const POA: &str = "ENIS-2026-000417";
/// The same, revoked.
pub const REVOKED_POA: &str = "ENIS-2026-000999";
/// Full name of [`who::CITIZEN`] in ГБД ФЛ.
pub const CITIZEN_NAME: &str = "Сапарова Айгерим Маратовна";
/// Registered name of [`who::CLINIC`] in ГБД ЮЛ.
pub const CLINIC_NAME: &str = "ТОО «Медикал Плюс»";
/// When the non-intake steps run: a Monday morning in Almaty.
pub const NOW: &str = "2026-11-23T10:15:00+05:00";

/// The repository's regulation data, loaded once.
pub fn regs() -> &'static Regulations {
    static REGS: OnceLock<Regulations> = OnceLock::new();
    REGS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regulations");
        Regulations::load(&dir).unwrap_or_else(|e| panic!("regulation data: {e}"))
    })
}

/// An instant from RFC 3339 text.
pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("an RFC 3339 time").with_timezone(&Utc)
}

/// A date `YYYY-MM-DD`.
pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a date")
}

/// An applicant identified by IIN.
pub fn iin(iin: &str) -> Value {
    json!({ "iin": iin })
}

/// An applicant identified by BIN.
pub fn bin(bin: &str) -> Value {
    json!({ "bin": bin })
}

/// The form of a licence request of `kind` (issue, reissue, duplicate).
pub fn licence_form(kind: &str) -> Value {
    json!({ "kind": kind, "activity": "стоматология" })
}

/// A citizen's archive-certificate request on the Astana portal (S5).
pub fn archive_portal_body() -> Value {
    body("archive-certificate", "astana", "portal", iin(who::CITIZEN), who::ASTANA_ARCHIVES, archive_form())
}

/// The form of an archive-certificate request.
pub fn archive_form() -> Value {
    json!({ "certificate_type": "о трудовом стаже", "period": "1995-2001", "purpose": "пенсия" })
}

/// An unsigned Request body as a sender publishes it, submitted now.
pub fn body(service: &str, region: &str, channel: &str, applicant: Value, provider: &str, form: Value) -> Value {
    json!({
        "request_id": Uuid::new_v4().to_string(),
        "service": service,
        "region": region,
        "channel": channel,
        "submitted_at": crate::contract::now_local().to_rfc3339(),
        "applicant": applicant,
        "provider": provider,
        "form": form,
        "attachments": []
    })
}

/// `body` with a representative, acting on a notarised power of attorney when `number` is set.
pub fn represented(mut body: Value, representative: &str, number: Option<&str>) -> Value {
    body["representative"] = json!({ "iin": representative, "power_of_attorney": number });
    body
}

/// The envelope intake reads `body` from.
pub fn envelope(body: &Value) -> Envelope {
    Envelope::parse(body.to_string().as_bytes(), 1 << 20).expect("a readable envelope")
}

/// The demo PKI (generated once into a fresh temporary directory), its verifier and the
/// providers' result-signing keys.
pub struct DemoPki {
    /// Where the files are.
    pub paths: PkiPaths,
    /// Verifies against the demo trust bundle and CRLs, accepting the demo staff roles.
    pub verifier: X509Verifier,
    /// Every provider key and the default one.
    pub keyring: Keyring,
}

/// The demo PKI.
pub fn pki() -> &'static DemoPki {
    static PKI: OnceLock<DemoPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qyzmet-workers-pki-{}", Uuid::new_v4().simple()));
        let paths = pki::generate_demo(&dir).expect("demo PKI");
        let verifier =
            X509Verifier::new(&paths.trust_bundle, Some(paths.crl_dir.clone()), vec![pki::DEMO_STAFF_ROLES.into()])
                .expect("verifier");
        let keyring = Keyring::load(&paths.keys_dir).expect("signing keys");
        DemoPki { paths, verifier, keyring }
    })
}

/// `body` signed by a demo PKI holder (`iin-…`, `bin-…`, `staff-<BIN>`, `expired-…`).
pub fn signed_by(holder: &str, mut body: Value) -> Value {
    let key = crate::signature::keys::load_key(&pki().paths.holders_dir, holder).expect("a demo holder");
    key.sign_in_place(body.as_object_mut().expect("an object")).expect("signed");
    body
}

/// `body` signed by whoever its channel's regulation says signs it.
pub fn signed(body: Value) -> Value {
    signed_by(&pki::proper_signer(&body), body)
}

/// A request registered and standing at a step of its route, with the facts earlier steps
/// gathered. The step pools never look at the signature, so the body carries a placeholder.
pub struct Case {
    /// The validated request.
    pub request: Request,
    /// Its route.
    pub route: Route<'static>,
    /// Its stored row.
    pub row: RequestRow,
    /// Findings of earlier steps.
    pub facts: Value,
    /// When the step runs.
    pub now: DateTime<Utc>,
}

impl Case {
    /// `body` (see [`body`]) registered as `S…-0000001`, at [`NOW`], with no facts yet.
    pub fn new(mut body: Value) -> Case {
        body["signature"] =
            json!({ "format": "jcs-x509", "algorithm": "ES256", "certificate_chain": ["A"], "value": "B" });
        let request = Request::from_envelope(&envelope(&body)).expect("a valid Request");
        let route = regs().route(request.service, request.region, request.channel).expect("a route");
        let now = at(NOW);
        let row = RequestRow {
            request_id: request.request_id,
            request_number: Some(format!("{}-XXX-20261123-0000001", route.service.code)),
            service: request.service.as_str().into(),
            region: request.region.as_str().into(),
            channel: request.channel.as_str().into(),
            applicant_masked: crate::ident::mask(request.applicant_id().digits()),
            state: "queued".into(),
            step_index: 0,
            step: None,
            step_deadline: None,
            service_deadline: None,
            deadlines: json!([]),
            attempts: 0,
            facts: json!({}),
            body,
            traceparent: None,
            received_at: now,
        };
        Case { request, route, row, facts: json!({}), now }
    }

    /// With these facts gathered by earlier steps.
    pub fn facts(mut self, facts: Value) -> Case {
        self.row.facts = facts.clone();
        self.facts = facts;
        self
    }

    /// When the step runs.
    pub fn now(mut self, now: &str) -> Case {
        self.now = at(now);
        self
    }

    /// What the `pool` step of the route sees (the row moved to that step).
    pub fn input(&mut self, pool: PoolName) -> StepInput<'_> {
        let (index, step) =
            self.route.channel.steps.iter().enumerate().find(|(_, s)| s.pool == pool).unwrap_or_else(|| {
                panic!("{} {} {} has no {pool:?} step", self.request.service, self.request.region, self.request.channel)
            });
        self.row.step_index = i32::try_from(index).expect("a short route");
        self.row.step = Some(crate::broker::pool_name(pool).into());
        StepInput { request: &self.request, route: self.route, step, facts: &self.facts, row: &self.row, now: self.now }
    }
}

fn put<T>(map: &Mutex<HashMap<String, T>>, key: &str, value: T) {
    map.lock().expect("registry map").insert(key.to_owned(), value);
}

/// A power of attorney from `principal` to `representative`, valid until the end of 2027.
pub fn power(number: &str, principal: &str, representative: &str) -> PowerOfAttorneyRecord {
    PowerOfAttorneyRecord {
        number: number.into(),
        principal: principal.into(),
        representative_iin: representative.into(),
        valid_until: Some(date("2027-12-31")),
        revoked: false,
    }
}

/// Adds (or replaces) a power of attorney in ЕНИС.
pub fn add_power(registry: &MemoryRegistry, record: PowerOfAttorneyRecord) {
    let number = record.number.clone();
    put(&registry.powers, &number, record);
}

/// The registries of the demo, in memory.
pub fn registry() -> MemoryRegistry {
    use who::*;
    let r = MemoryRegistry::default();
    for (iin, name) in [
        (CITIZEN, CITIZEN_NAME),
        (UNATTACHED, "Ахметов Тимур Даулетович"),
        (REPRESENTATIVE, "Касымова Асель Бекболатовна"),
        (OTHER_PERSON, "Нурланов Данияр Аскарович"),
    ] {
        put(&r.persons, iin, PersonRecord { iin: iin.into(), full_name: name.into(), birth_date: None });
    }
    for (bin, name) in [
        (CLINIC, CLINIC_NAME),
        (AKMOLA_PHC, "ГККП «Поликлиника № 1 города Кокшетау»"),
        (ASTANA_PHC, "ГКП на ПХВ «Городская поликлиника № 4» города Астаны"),
        (AKTOBE_HEALTH, "ГУ «Управление здравоохранения Актюбинской области»"),
        (ASTANA_ARCHIVES, "ГУ «Управление архивов и документации города Астаны»"),
    ] {
        put(&r.entities, bin, EntityRecord { bin: bin.into(), name: name.into(), closes_at: None });
    }
    let attached =
        AttachmentRecord { iin: CITIZEN.into(), provider_bin: AKMOLA_PHC.into(), since: Some(date("2019-05-14")) };
    put(&r.attachments, CITIZEN, attached);
    add_power(&r, power(POA, CLINIC, REPRESENTATIVE));
    add_power(&r, PowerOfAttorneyRecord { revoked: true, ..power(REVOKED_POA, CLINIC, REPRESENTATIVE) });
    r
}
