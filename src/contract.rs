//! The external message contract (`shared/contract.md`, version 1): what portals, provider
//! workstations, centres, the payment gateway and staff publish, and the Outcome qyzmet
//! publishes back.
//!
//! Incoming messages are read in two stages so that the contract's split between "cannot be
//! understood" (dead-letter) and "breaks a rule" (`invalid_request` refusal) is exact:
//! [`Envelope::parse`] only needs JSON with a usable `request_id`; [`Request::from_value`] then
//! checks every field and names the first one that is wrong.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ident::{self, Identifier};

/// Exchange portals, workstations and centres publish Requests to.
pub const EXCHANGE_REQUESTS: &str = "qyzmet.requests";
/// Exchange the payment gateway publishes PaymentNotices to.
pub const EXCHANGE_PAYMENTS: &str = "qyzmet.payments";
/// Exchange provider staff publish Decisions to.
pub const EXCHANGE_DECISIONS: &str = "qyzmet.decisions";
/// Exchange qyzmet publishes Outcomes to.
pub const EXCHANGE_OUTCOMES: &str = "qyzmet.outcomes";
/// Exchange applicants' questionnaire answers arrive on (contract v1.1, P-51), published by
/// the system that submitted the request.
pub const EXCHANGE_FEEDBACK: &str = "qyzmet.feedback";
/// Routing key of every PaymentNotice on [`EXCHANGE_PAYMENTS`].
pub const ROUTING_KEY_PAYMENT: &str = "payment.confirmed";

/// Routing key of a Decision on [`EXCHANGE_DECISIONS`] for a service (`decision.<service>`).
pub fn decision_routing_key(service: &str) -> String {
    format!("decision.{service}")
}

/// Routing key of questionnaire answers on [`EXCHANGE_FEEDBACK`] (`questionnaire.<service>`).
pub fn questionnaire_routing_key(service: &str) -> String {
    format!("questionnaire.{service}")
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The contract spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the contract spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

code_enum!(
    /// The five services of the contract.
    ServiceCode {
        /// S1 «Запись на прием к врачу».
        DoctorAppointment = "doctor-appointment",
        /// S2 «Прикрепление к медицинской организации, оказывающей ПМСП».
        PhcAttachment = "phc-attachment",
        /// S3 «Вызов врача на дом».
        HomeDoctorCall = "home-doctor-call",
        /// S4 «Выдача лицензии, переоформление, выдача дубликатов лицензии на медицинскую деятельность».
        MedicalLicence = "medical-licence",
        /// S5 «Мұрағаттық анықтамалар беру».
        ArchiveCertificate = "archive-certificate",
    }
);

code_enum!(
    /// Regions (regulation variants).
    Region {
        /// Akmola region (sources 000, 002).
        Akmola = "akmola",
        /// Aktobe region (source 001).
        Aktobe = "aktobe",
        /// City of Astana (sources 003, 004).
        Astana = "astana",
    }
);

code_enum!(
    /// Intake channels (P-1).
    Channel {
        /// ПЭП/ЭҮП, elicense.
        Portal = "portal",
        /// Provider workstation, ЖАО.
        Provider = "provider",
        /// ЦОН/ХҚКО.
        Centre = "centre",
    }
);

/// The first look at an incoming message: enough to know which request it is about.
#[derive(Debug)]
pub struct Envelope {
    /// The request the message is about.
    pub request_id: Uuid,
    /// The whole JSON object.
    pub body: Map<String, Value>,
}

/// Why a message cannot be understood at all; it goes to the dead-letter queue with this reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreadable {
    /// Larger than the configured limit.
    #[error("oversized: {size} bytes, limit {limit}")]
    Oversized {
        /// Body size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not UTF-8 JSON.
    #[error("not_json: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("not_an_object")]
    NotAnObject,
    /// No `request_id`, or not a UUID.
    #[error("no_request_id: {0}")]
    NoRequestId(String),
}

impl Unreadable {
    /// Short machine word for the dead-letter header.
    pub fn code(&self) -> &'static str {
        match self {
            Unreadable::Oversized { .. } => "oversized",
            Unreadable::NotJson(_) => "not_json",
            Unreadable::NotAnObject => "not_an_object",
            Unreadable::NoRequestId(_) => "no_request_id",
        }
    }
}

impl Envelope {
    /// Reads a body as far as the contract requires before a message counts as understood.
    pub fn parse(bytes: &[u8], limit: usize) -> Result<Envelope, Unreadable> {
        if bytes.len() > limit {
            return Err(Unreadable::Oversized { size: bytes.len(), limit });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| Unreadable::NotJson(e.to_string()))?;
        let Value::Object(body) = value else {
            return Err(Unreadable::NotAnObject);
        };
        let request_id = match body.get("request_id") {
            Some(Value::String(s)) => {
                Uuid::parse_str(s).map_err(|_| Unreadable::NoRequestId("request_id is not a UUID".into()))?
            }
            Some(_) => return Err(Unreadable::NoRequestId("request_id is not a string".into())),
            None => return Err(Unreadable::NoRequestId("request_id is missing".into())),
        };
        Ok(Envelope { request_id, body })
    }
}

/// A rule the message breaks: the field (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `applicant.iin`.
    pub field: String,
    /// What is wrong, in plain words.
    pub problem: String,
}

impl FieldError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError { field: field.into(), problem: problem.into() }
    }
}

/// The applicant or payer: exactly one identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// IIN, for individuals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iin: Option<String>,
    /// BIN, for legal entities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
}

impl Party {
    /// The identifier this party carries (validated at parse time).
    pub fn identifier(&self) -> Option<Identifier> {
        match (&self.iin, &self.bin) {
            (Some(iin), None) => Some(Identifier::Iin(iin.clone())),
            (None, Some(bin)) => Some(Identifier::Bin(bin.clone())),
            _ => None,
        }
    }
}

/// A representative acting for the applicant (P-8, P-21).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Representative {
    /// The representative's IIN.
    pub iin: String,
    /// Number of a notarised power of attorney in ЕНИС; absent when certified otherwise (P-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_of_attorney: Option<String>,
}

/// A reference to an attached file; the content is not carried in the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name.
    pub name: String,
    /// MIME type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Where the content is.
    pub uri: String,
}

/// The `signature` member (`jcs-x509`); checked by a [`crate::signature::Verifier`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBlock {
    /// Always `jcs-x509` in contract version 1.
    pub format: String,
    /// `ES256` or `RS256`.
    pub algorithm: String,
    /// Base64 DER certificates, signer first.
    pub certificate_chain: Vec<String>,
    /// Base64 signature value.
    pub value: String,
}

/// A validated Request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Idempotency key chosen by the sender.
    pub request_id: Uuid,
    /// Service.
    pub service: ServiceCode,
    /// Region variant.
    pub region: Region,
    /// Channel.
    pub channel: Channel,
    /// When the sender says it was submitted.
    pub submitted_at: DateTime<FixedOffset>,
    /// The applicant.
    pub applicant: Party,
    /// Representative with a power of attorney, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representative: Option<Representative>,
    /// BIN of the providing organisation.
    pub provider: String,
    /// Service-specific form.
    pub form: Map<String, Value>,
    /// Attached files.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// The signature.
    pub signature: SignatureBlock,
}

/// What the caller learns when a Request breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestProblem {
    /// A field is wrong: refusal `invalid_request` naming the field.
    #[error("invalid request: {0}")]
    Invalid(FieldError),
    /// Service, region and channel are valid codes but no regulation covers them.
    #[error("unsupported service: {0}")]
    Unsupported(String),
}

const MAX_TEXT: usize = 4096;
const MAX_ATTACHMENTS: usize = 100;
/// Identifiers chosen by other systems (`payment_id`, `decision_id`, a power-of-attorney
/// number) are primary keys and index entries: PostgreSQL refuses an index row over ~2.7 kB, so
/// they are bounded well below that.
const MAX_ID: usize = 128;
/// Nesting deeper than this anywhere in a message is refused (the contract's own messages are
/// at most four levels deep; a service form has no reason to go further).
pub const MAX_DEPTH: usize = 16;
/// Largest amount `payments.amount` (`numeric(14,2)`) holds: twelve integer digits.
const MAX_AMOUNT_DIGITS: usize = 12;

/// Checks that PostgreSQL can store every part of a message as it is: no NUL character
/// (U+0000) in any string or member name (`jsonb` and `text` refuse it), and no nesting deeper
/// than [`MAX_DEPTH`]. The first problem is returned with its field path, so the sender learns
/// which field to fix instead of the request being retried against the database forever.
pub fn check_storable(body: &Map<String, Value>) -> Result<(), FieldError> {
    fn walk(v: &Value, path: &mut String, depth: usize) -> Result<(), FieldError> {
        if depth > MAX_DEPTH {
            return Err(FieldError::new(path.as_str(), format!("is nested deeper than {MAX_DEPTH} levels")));
        }
        match v {
            Value::String(s) if s.contains('\0') => {
                Err(FieldError::new(path.as_str(), "contains a NUL character (U+0000), which cannot be stored"))
            }
            Value::Array(items) => {
                let len = path.len();
                for (i, item) in items.iter().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    walk(item, path, depth + 1)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(members) => {
                let len = path.len();
                for (key, item) in members {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    if key.contains('\0') {
                        path.push_str(&key.replace('\0', "\\u0000"));
                        return Err(FieldError::new(
                            path.as_str(),
                            "member name contains a NUL character (U+0000), which cannot be stored",
                        ));
                    }
                    path.push_str(key);
                    walk(item, path, depth + 1)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let mut path = String::new();
    for (key, item) in body {
        path.clear();
        if key.contains('\0') {
            return Err(FieldError::new(
                key.replace('\0', "\\u0000"),
                "member name contains a NUL character (U+0000), which cannot be stored",
            ));
        }
        path.push_str(key);
        walk(item, &mut path, 1)?;
    }
    Ok(())
}

/// A copy of a message that PostgreSQL can store, for the audit trail of a message refused
/// because it could not be stored as sent: every NUL character becomes U+FFFD.
pub fn storable_copy(v: &Value) -> Value {
    fn clean(s: &str) -> String {
        s.replace('\0', "\u{fffd}")
    }
    match v {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(items) => Value::Array(items.iter().map(storable_copy).collect()),
        Value::Object(members) => Value::Object(members.iter().map(|(k, v)| (clean(k), storable_copy(v))).collect()),
        other => other.clone(),
    }
}

/// Text from outside (AMQP properties, headers, fields of a message refused before it was read
/// in full) made safe for a `text` column: control characters dropped, at most `max` characters.
pub fn storable_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn id_at(obj: &Map<String, Value>, key: &str, path: &str) -> Result<String, FieldError> {
    let s = string_at(obj, key, path)?;
    if s.len() > MAX_ID {
        return Err(FieldError::new(path, format!("is longer than {MAX_ID} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(path, "contains control characters"));
    }
    Ok(s.to_owned())
}

fn string_at<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, FieldError> {
    match obj.get(key) {
        Some(Value::String(s)) if s.trim().is_empty() => Err(FieldError::new(path, "is empty")),
        Some(Value::String(s)) if s.len() > MAX_TEXT => {
            Err(FieldError::new(path, format!("is longer than {MAX_TEXT} bytes")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(FieldError::new(path, format!("must be a string, not {}", type_name(other)))),
        None => Err(FieldError::new(path, "is missing")),
    }
}

fn object_at<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Map<String, Value>, FieldError> {
    match obj.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(FieldError::new(path, format!("must be an object, not {}", type_name(other)))),
        None => Err(FieldError::new(path, "is missing")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn code_at<T>(
    obj: &Map<String, Value>,
    key: &str,
    parse: fn(&str) -> Option<T>,
    known: &[&str],
) -> Result<T, FieldError> {
    let text = string_at(obj, key, key)?;
    parse(text).ok_or_else(|| FieldError::new(key, format!("unknown code {text:?}; known: {}", known.join(", "))))
}

fn party_at(obj: &Map<String, Value>, key: &str) -> Result<Party, FieldError> {
    let party = object_at(obj, key, key)?;
    let iin = party.get("iin").map(|_| string_at(party, "iin", &format!("{key}.iin"))).transpose()?;
    let bin = party.get("bin").map(|_| string_at(party, "bin", &format!("{key}.bin"))).transpose()?;
    match (iin, bin) {
        (Some(_), Some(_)) => Err(FieldError::new(key, "must carry exactly one of iin and bin, not both")),
        (None, None) => Err(FieldError::new(key, "must carry one of iin or bin")),
        (Some(iin), None) => {
            ident::check_iin(iin).map_err(|e| FieldError::new(format!("{key}.iin"), e.to_string()))?;
            Ok(Party { iin: Some(iin.to_owned()), bin: None })
        }
        (None, Some(bin)) => {
            ident::check_bin(bin).map_err(|e| FieldError::new(format!("{key}.bin"), e.to_string()))?;
            Ok(Party { iin: None, bin: Some(bin.to_owned()) })
        }
    }
}

fn attachments_at(obj: &Map<String, Value>) -> Result<Vec<Attachment>, FieldError> {
    let list = match obj.get("attachments") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(FieldError::new("attachments", format!("must be an array, not {}", type_name(other))));
        }
    };
    if list.len() > MAX_ATTACHMENTS {
        return Err(FieldError::new("attachments", format!("more than {MAX_ATTACHMENTS} attachments")));
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("attachments[{i}]");
            let Value::Object(a) = item else {
                return Err(FieldError::new(&path, "must be an object"));
            };
            let size = match a.get("size") {
                Some(Value::Number(n)) => n
                    .as_u64()
                    .ok_or_else(|| FieldError::new(format!("{path}.size"), "must be a whole number of bytes"))?,
                Some(other) => {
                    return Err(FieldError::new(
                        format!("{path}.size"),
                        format!("must be a number, not {}", type_name(other)),
                    ));
                }
                None => return Err(FieldError::new(format!("{path}.size"), "is missing")),
            };
            let sha256 = string_at(a, "sha256", &format!("{path}.sha256"))?;
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FieldError::new(format!("{path}.sha256"), "must be 64 hex digits"));
            }
            Ok(Attachment {
                name: string_at(a, "name", &format!("{path}.name"))?.to_owned(),
                media_type: string_at(a, "media_type", &format!("{path}.media_type"))?.to_owned(),
                size,
                sha256: sha256.to_ascii_lowercase(),
                uri: string_at(a, "uri", &format!("{path}.uri"))?.to_owned(),
            })
        })
        .collect()
}

fn signature_at(obj: &Map<String, Value>) -> Result<SignatureBlock, FieldError> {
    let sig = object_at(obj, "signature", "signature")?;
    let chain = match sig.get("certificate_chain") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(FieldError::new(
                    format!("signature.certificate_chain[{i}]"),
                    "must be a non-empty base64 string",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(FieldError::new("signature.certificate_chain", "is empty"));
        }
        Some(other) => {
            return Err(FieldError::new(
                "signature.certificate_chain",
                format!("must be an array, not {}", type_name(other)),
            ));
        }
        None => return Err(FieldError::new("signature.certificate_chain", "is missing")),
    };
    Ok(SignatureBlock {
        format: string_at(sig, "format", "signature.format")?.to_owned(),
        algorithm: string_at(sig, "algorithm", "signature.algorithm")?.to_owned(),
        certificate_chain: chain,
        value: string_at(sig, "value", "signature.value")?.to_owned(),
    })
}

impl Request {
    /// Checks every field of a Request the contract defines. The first broken rule is
    /// returned with its field path; service-specific rules (form fields, applicant kinds,
    /// known region variant) are checked against the regulations afterwards.
    pub fn from_envelope(env: &Envelope) -> Result<Request, FieldError> {
        let obj = &env.body;
        check_storable(obj)?;
        let service = code_at(obj, "service", ServiceCode::parse, &names(ServiceCode::ALL.iter().map(|c| c.as_str())))?;
        let region = code_at(obj, "region", Region::parse, &names(Region::ALL.iter().map(|c| c.as_str())))?;
        let channel = code_at(obj, "channel", Channel::parse, &names(Channel::ALL.iter().map(|c| c.as_str())))?;
        let submitted_at = DateTime::parse_from_rfc3339(string_at(obj, "submitted_at", "submitted_at")?)
            .map_err(|_| FieldError::new("submitted_at", "must be an RFC 3339 date-time with offset"))?;
        let applicant = party_at(obj, "applicant")?;
        let representative = match obj.get("representative") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => {
                let iin = string_at(r, "iin", "representative.iin")?;
                ident::check_iin(iin).map_err(|e| FieldError::new("representative.iin", e.to_string()))?;
                let poa = match r.get("power_of_attorney") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(id_at(r, "power_of_attorney", "representative.power_of_attorney")?),
                };
                Some(Representative { iin: iin.to_owned(), power_of_attorney: poa })
            }
            Some(other) => {
                return Err(FieldError::new("representative", format!("must be an object, not {}", type_name(other))));
            }
        };
        let provider = string_at(obj, "provider", "provider")?;
        ident::check_bin(provider).map_err(|e| FieldError::new("provider", e.to_string()))?;
        let form = object_at(obj, "form", "form")?.clone();
        let attachments = attachments_at(obj)?;
        let signature = signature_at(obj)?;
        Ok(Request {
            request_id: env.request_id,
            service,
            region,
            channel,
            submitted_at,
            applicant,
            representative,
            provider: provider.to_owned(),
            form,
            attachments,
            signature,
        })
    }

    /// The applicant's identifier.
    pub fn applicant_id(&self) -> Identifier {
        match self.applicant.identifier() {
            Some(id) => id,
            // from_envelope guarantees exactly one identifier
            None => Identifier::Iin(String::new()),
        }
    }

    /// A form field as text, if present and a string.
    pub fn form_text(&self, field: &str) -> Option<&str> {
        self.form.get(field).and_then(Value::as_str)
    }
}

fn names(all: impl Iterator<Item = &'static str>) -> Vec<&'static str> {
    all.collect()
}

/// A payment confirmed by ПШЭП.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentNotice {
    /// Gateway's id; the same id twice counts once.
    pub payment_id: String,
    /// The request paid for.
    pub request_id: Uuid,
    /// Decimal amount as text.
    pub amount: String,
    /// Currency code.
    pub currency: String,
    /// When it was paid.
    pub paid_at: DateTime<FixedOffset>,
    /// Who paid.
    pub payer: Party,
}

impl PaymentNotice {
    /// Reads a PaymentNotice from an understood envelope.
    pub fn from_envelope(env: &Envelope) -> Result<PaymentNotice, FieldError> {
        let obj = &env.body;
        check_storable(obj)?;
        let payment_id = id_at(obj, "payment_id", "payment_id")?;
        let amount = string_at(obj, "amount", "amount")?.to_owned();
        let valid_amount = amount.split_once('.').unwrap_or((amount.as_str(), ""));
        if valid_amount.0.is_empty()
            || !valid_amount.0.bytes().all(|b| b.is_ascii_digit())
            || !valid_amount.1.bytes().all(|b| b.is_ascii_digit())
            || valid_amount.1.len() > 2
            || amount.trim_start_matches(['0', '.']).is_empty()
        {
            return Err(FieldError::new("amount", "must be a positive decimal with at most 2 fraction digits"));
        }
        if valid_amount.0.trim_start_matches('0').len() > MAX_AMOUNT_DIGITS {
            return Err(FieldError::new("amount", format!("has more than {MAX_AMOUNT_DIGITS} integer digits")));
        }
        let currency = string_at(obj, "currency", "currency")?.to_owned();
        if currency != "KZT" {
            return Err(FieldError::new("currency", "must be KZT"));
        }
        let paid_at = DateTime::parse_from_rfc3339(string_at(obj, "paid_at", "paid_at")?)
            .map_err(|_| FieldError::new("paid_at", "must be an RFC 3339 date-time with offset"))?;
        let payer = party_at(obj, "payer")?;
        Ok(PaymentNotice { payment_id, request_id: env.request_id, amount, currency, paid_at, payer })
    }
}

/// A staff decision on a request under review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Unique id of the decision.
    pub decision_id: String,
    /// The request decided.
    pub request_id: Uuid,
    /// Approve or refuse.
    pub decision: Verdict,
    /// Required for `refuse`: the staff member's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StaffReason>,
    /// When it was decided.
    pub decided_at: DateTime<FixedOffset>,
    /// Signed by the staff member.
    pub signature: SignatureBlock,
    /// Contract v1.1, `extend` only: the new deadline of the decision step (P-34).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_to: Option<DateTime<FixedOffset>>,
    /// Contract v1.1, `extend` only: one of the exceptional cases the law allows a longer term
    /// for (S5: up to six months), which the reason must explain.
    #[serde(default)]
    pub exceptional: bool,
}

/// The staff member's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Issue the result.
    Approve,
    /// Refuse with a reason.
    Refuse,
    /// Contract v1.1: extend the decision step's term, with a reason (P-34).
    Extend,
}

/// The reason given by staff, in Russian and Kazakh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffReason {
    /// Russian.
    pub ru: String,
    /// Kazakh.
    pub kk: String,
}

impl Decision {
    /// Reads a Decision from an understood envelope.
    pub fn from_envelope(env: &Envelope) -> Result<Decision, FieldError> {
        let obj = &env.body;
        check_storable(obj)?;
        let decision_id = id_at(obj, "decision_id", "decision_id")?;
        let decision = match string_at(obj, "decision", "decision")? {
            "approve" => Verdict::Approve,
            "refuse" => Verdict::Refuse,
            "extend" => Verdict::Extend,
            other => {
                return Err(FieldError::new("decision", format!("must be approve, refuse or extend, not {other:?}")));
            }
        };
        let reason = match obj.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => Some(StaffReason {
                ru: string_at(r, "ru", "reason.ru")?.to_owned(),
                kk: string_at(r, "kk", "reason.kk")?.to_owned(),
            }),
            Some(other) => {
                return Err(FieldError::new("reason", format!("must be an object, not {}", type_name(other))));
            }
        };
        if matches!(decision, Verdict::Refuse | Verdict::Extend) && reason.is_none() {
            return Err(FieldError::new("reason", "is required when the decision is refuse or extend"));
        }
        let decided_at = DateTime::parse_from_rfc3339(string_at(obj, "decided_at", "decided_at")?)
            .map_err(|_| FieldError::new("decided_at", "must be an RFC 3339 date-time with offset"))?;
        let extend_to = match (decision, obj.get("extend_to")) {
            (Verdict::Extend, Some(Value::String(t))) => Some(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|_| FieldError::new("extend_to", "must be an RFC 3339 date-time with offset"))?,
            ),
            (Verdict::Extend, _) => {
                return Err(FieldError::new("extend_to", "is required when the decision is extend"));
            }
            (_, None | Some(Value::Null)) => None,
            (_, Some(_)) => return Err(FieldError::new("extend_to", "is only for a decision to extend")),
        };
        let exceptional = match obj.get("exceptional") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) if decision == Verdict::Extend || !*b => *b,
            Some(Value::Bool(_)) => return Err(FieldError::new("exceptional", "is only for a decision to extend")),
            Some(other) => {
                return Err(FieldError::new("exceptional", format!("must be true or false, not {}", type_name(other))));
            }
        };
        let signature = signature_at(obj)?;
        Ok(Decision {
            decision_id,
            request_id: env.request_id,
            decision,
            reason,
            decided_at,
            signature,
            extend_to,
            exceptional,
        })
    }
}

/// An applicant's answers to the quality and accessibility questionnaire (contract v1.1, P-51):
/// two questions, each answered 1 (not satisfied), 2 (partly) or 3 (satisfied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionnaireAnswer {
    /// The sender's id of this answer set (a repeat is the same set).
    pub answer_id: String,
    /// The request it is about.
    pub request_id: Uuid,
    /// «Удовлетворены ли Вы качеством процесса и результатом оказания …»: 1–3.
    pub quality: i16,
    /// «Удовлетворены ли Вы качеством информации о порядке оказания …»: 1–3.
    pub information: i16,
    /// When the applicant answered.
    pub answered_at: DateTime<FixedOffset>,
}

impl QuestionnaireAnswer {
    /// Reads answers from an understood envelope.
    pub fn from_envelope(env: &Envelope) -> Result<QuestionnaireAnswer, FieldError> {
        let obj = &env.body;
        check_storable(obj)?;
        let answer_id = id_at(obj, "answer_id", "answer_id")?;
        let answers = match obj.get("answers") {
            Some(Value::Object(a)) => a,
            Some(other) => {
                return Err(FieldError::new("answers", format!("must be an object, not {}", type_name(other))));
            }
            None => return Err(FieldError::new("answers", "is missing")),
        };
        let answer = |key: &str| -> Result<i16, FieldError> {
            let field = format!("answers.{key}");
            match answers.get(key).and_then(Value::as_i64) {
                Some(n @ 1..=3) => Ok(n as i16),
                Some(n) => Err(FieldError::new(field, format!("must be 1, 2 or 3, not {n}"))),
                None => Err(FieldError::new(field, "must be 1, 2 or 3")),
            }
        };
        let (quality, information) = (answer("quality")?, answer("information")?);
        if let Some(extra) = answers.keys().find(|k| !matches!(k.as_str(), "quality" | "information")) {
            return Err(FieldError::new(format!("answers.{extra}"), "is not a question of the questionnaire"));
        }
        let answered_at = DateTime::parse_from_rfc3339(string_at(obj, "answered_at", "answered_at")?)
            .map_err(|_| FieldError::new("answered_at", "must be an RFC 3339 date-time with offset"))?;
        Ok(QuestionnaireAnswer { answer_id, request_id: env.request_id, quality, information, answered_at })
    }
}

/// Outcome status (contract: `registered`, `in_progress`, `completed`, `refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Registered with a number; first step queued.
    Registered,
    /// A step is now running or waiting.
    InProgress,
    /// Final: result document issued.
    Completed,
    /// Final: reasoned refusal.
    Refused,
}

impl Status {
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Registered => "registered",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Refused => "refused",
        }
    }

    /// Whether this is one of the two final statuses.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Refused)
    }

    /// Routing key prefix on `qyzmet.outcomes`.
    pub fn routing_prefix(self) -> &'static str {
        match self {
            Status::Registered | Status::InProgress => "status",
            Status::Completed => "completed",
            Status::Refused => "refused",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Regulation refusal code, where one applies.
    pub code: Option<String>,
    /// Stable machine word.
    pub kind: String,
    /// Russian text.
    pub ru: String,
    /// Kazakh text.
    pub kk: String,
    /// English text.
    pub en: String,
}

/// A text in the three languages of every Outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wording {
    /// Russian text.
    pub ru: String,
    /// Kazakh text.
    pub kk: String,
    /// English text.
    pub en: String,
}

/// How the result reaches the applicant on this channel (contract v1.1, P-44).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable machine word: `personal_cabinet`, `provider_records`, `in_person_or_email`,
    /// `via_centre_operator`.
    pub method: String,
    /// What the applicant is told, in the sources' words where they have them.
    #[serde(flatten)]
    pub text: Wording,
}

/// Where the applicant can ask or complain (contract v1.1, P-52).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The number as the sources print it.
    pub phone: String,
    /// What it is for.
    #[serde(flatten)]
    pub text: Wording,
}

/// The questionnaire a final Outcome offers the applicant (contract v1.1, P-51).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Questionnaire {
    /// Routing key to send the answers with on [`EXCHANGE_FEEDBACK`].
    pub routing_key: String,
    /// The two questions, with the key their answer goes under (`quality`, `information`).
    pub questions: Vec<Question>,
    /// The three answers, with the value to send (1, 2, 3).
    pub answers: Vec<AnswerChoice>,
}

/// A question of the questionnaire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// The member of `answers` its answer goes under.
    pub key: String,
    /// Its wording.
    #[serde(flatten)]
    pub text: Wording,
}

/// An answer of the questionnaire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerChoice {
    /// The value to send.
    pub value: i16,
    /// Its wording.
    #[serde(flatten)]
    pub text: Wording,
}

/// What qyzmet publishes on `qyzmet.outcomes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The request.
    pub request_id: Uuid,
    /// Human-readable number, once registered.
    pub request_number: Option<String>,
    /// Service as sent (may be unknown for invalid requests).
    pub service: String,
    /// Region as sent.
    pub region: String,
    /// Channel as sent.
    pub channel: String,
    /// Status.
    pub status: Status,
    /// The step now running (in progress) or that decided (final).
    pub step: Option<String>,
    /// Service deadline (P-41).
    pub deadline: Option<DateTime<FixedOffset>>,
    /// Refusal reason.
    pub reason: Option<Reason>,
    /// Result document.
    pub document: Option<Value>,
    /// When this status was reached.
    pub at: DateTime<FixedOffset>,
    /// Contract v1.1: the status wording the sources give the applicant at this point
    /// (`registered`, `in_progress`; P-43, P-45), where they give one.
    #[serde(default)]
    pub notice: Option<Wording>,
    /// Contract v1.1: how the result is delivered on this channel (final Outcomes; P-44).
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// Contract v1.1: the information contacts of the service (final Outcomes; P-52).
    #[serde(default)]
    pub contacts: Option<Vec<Contact>>,
    /// Contract v1.1: the questionnaire the applicant may answer (final Outcomes; P-51).
    #[serde(default)]
    pub questionnaire: Option<Questionnaire>,
}

/// Current time in Almaty (+05:00), the offset every timestamp qyzmet writes carries.
pub fn now_local() -> DateTime<FixedOffset> {
    to_local(Utc::now())
}

/// A UTC instant rendered in Asia/Almaty.
pub fn to_local(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.with_timezone(&chrono_tz::Asia::Almaty).fixed_offset()
}

/// Routing-key word for a service string, safe for unknown input.
pub fn routing_word(service: &str) -> &str {
    if !service.is_empty()
        && service.len() <= 64
        && service.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        service
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11",
            "service": "medical-licence",
            "region": "aktobe",
            "channel": "portal",
            "submitted_at": "2026-11-23T10:15:00+05:00",
            "applicant": { "iin": "840317000029" },
            "provider": "081140000436",
            "form": { "kind": "issue", "activity": "general practice" },
            "attachments": [{ "name": "diploma.pdf", "media_type": "application/pdf", "size": 48213,
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "uri": "https://files.example/1" }],
            "signature": { "format": "jcs-x509", "algorithm": "ES256",
                "certificate_chain": ["MIIB"], "value": "MEUC" }
        })
    }

    fn parse(v: &Value) -> Result<Request, FieldError> {
        let env = Envelope::parse(v.to_string().as_bytes(), 262_144).expect("envelope");
        Request::from_envelope(&env)
    }

    #[test]
    fn contract_example_request_parses() {
        let r = parse(&sample()).expect("valid");
        assert_eq!(r.service, ServiceCode::MedicalLicence);
        assert_eq!(r.form_text("kind"), Some("issue"));
    }

    #[test]
    fn not_json_is_unreadable() {
        assert!(matches!(Envelope::parse(b"{nope", 100), Err(Unreadable::NotJson(_))));
    }

    #[test]
    fn oversized_is_unreadable_before_parsing() {
        let body = vec![b' '; 101];
        assert_eq!(Envelope::parse(&body, 100).unwrap_err(), Unreadable::Oversized { size: 101, limit: 100 });
    }

    #[test]
    fn missing_request_id_is_unreadable() {
        assert!(matches!(Envelope::parse(br#"{"service":"x"}"#, 100), Err(Unreadable::NoRequestId(_))));
        assert!(matches!(Envelope::parse(br#"{"request_id":"nope"}"#, 100), Err(Unreadable::NoRequestId(_))));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let mut v = sample();
        v["provider"] = json!(81140000436u64);
        assert_eq!(parse(&v).unwrap_err().field, "provider");
    }

    #[test]
    fn bad_check_digit_names_the_identifier_field() {
        let mut v = sample();
        v["applicant"] = json!({ "iin": "840317000028" });
        let e = parse(&v).unwrap_err();
        assert_eq!(e.field, "applicant.iin");
        assert!(e.problem.contains("check digit"), "{e}");
    }

    #[test]
    fn unknown_service_names_the_field() {
        let mut v = sample();
        v["service"] = json!("fishing-licence");
        assert_eq!(parse(&v).unwrap_err().field, "service");
    }

    #[test]
    fn both_identifiers_are_refused() {
        let mut v = sample();
        v["applicant"] = json!({ "iin": "840317000029", "bin": "081140000436" });
        assert_eq!(parse(&v).unwrap_err().field, "applicant");
    }

    #[test]
    fn missing_signature_is_invalid() {
        let mut v = sample();
        v.as_object_mut().expect("object").remove("signature");
        assert_eq!(parse(&v).unwrap_err().field, "signature");
    }

    #[test]
    fn refuse_decision_requires_reason() {
        let v = json!({ "decision_id": "d1", "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11",
            "decision": "refuse", "decided_at": "2026-11-23T10:15:00+05:00",
            "signature": { "format": "jcs-x509", "algorithm": "ES256", "certificate_chain": ["A"], "value": "B" } });
        let env = Envelope::parse(v.to_string().as_bytes(), 10_000).expect("envelope");
        assert_eq!(Decision::from_envelope(&env).unwrap_err().field, "reason");
    }

    #[test]
    fn payment_amount_must_be_positive_decimal() {
        let base = json!({ "payment_id": "P1", "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11",
            "amount": "20000.00", "currency": "KZT", "paid_at": "2026-11-23T10:14:12+05:00",
            "payer": { "iin": "840317000029" } });
        let env = Envelope::parse(base.to_string().as_bytes(), 10_000).expect("envelope");
        assert!(PaymentNotice::from_envelope(&env).is_ok());
        for bad in ["0.00", "-1", "1.234", "abc", ""] {
            let mut v = base.clone();
            v["amount"] = json!(bad);
            let env = Envelope::parse(v.to_string().as_bytes(), 10_000).expect("envelope");
            assert_eq!(PaymentNotice::from_envelope(&env).unwrap_err().field, "amount", "{bad}");
        }
    }

    #[test]
    fn nul_characters_anywhere_are_refused_with_their_path() {
        let mut v = sample();
        v["form"]["activity"] = json!("a\u{0}b");
        assert_eq!(parse(&v).unwrap_err().field, "form.activity");
        let mut v = sample();
        v["attachments"][0]["name"] = json!("\u{0}");
        assert_eq!(parse(&v).unwrap_err().field, "attachments[0].name");
        let mut v = sample();
        v["form"] = json!({ "k\u{0}": 1 });
        assert_eq!(parse(&v).unwrap_err().field, "form.k\\u0000");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let mut v = sample();
        v["form"] = (0..MAX_DEPTH).fold(json!(1), |inner, _| json!({ "x": inner }));
        let e = parse(&v).unwrap_err();
        assert!(e.field.starts_with("form.x"), "{e}");
        assert!(e.problem.contains("nested"), "{e}");
    }

    #[test]
    fn storable_copy_replaces_nul_in_keys_and_values() {
        let v = json!({ "a\u{0}": ["x\u{0}y", 1] });
        assert_eq!(storable_copy(&v), json!({ "a\u{fffd}": ["x\u{fffd}y", 1] }));
        assert_eq!(storable_text("ak\u{0}mola\n", 64), "akmola");
    }

    #[test]
    fn payment_amounts_past_numeric_14_2_and_long_ids_are_refused() {
        let base = json!({ "payment_id": "P1", "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11",
            "amount": "999999999999.99", "currency": "KZT", "paid_at": "2026-11-23T10:14:12+05:00",
            "payer": { "iin": "840317000029" } });
        let read = |v: &Value| {
            PaymentNotice::from_envelope(&Envelope::parse(v.to_string().as_bytes(), 100_000).expect("envelope"))
        };
        assert!(read(&base).is_ok(), "twelve integer digits fit");
        let mut v = base.clone();
        v["amount"] = json!("1000000000000.00");
        assert_eq!(read(&v).unwrap_err().field, "amount");
        let mut v = base.clone();
        v["amount"] = json!("000000000000001.00");
        assert!(read(&v).is_ok(), "leading zeros do not count");
        let mut v = base;
        v["payment_id"] = json!("P".repeat(129));
        assert_eq!(read(&v).unwrap_err().field, "payment_id");
    }

    #[test]
    fn routing_word_rejects_odd_input() {
        assert_eq!(routing_word("medical-licence"), "medical-licence");
        assert_eq!(routing_word("a.b#"), "unknown");
        assert_eq!(routing_word(""), "unknown");
    }
}
