//! State registries behind one interface: ГБД ФЛ (individuals), ГБД ЮЛ (legal entities), ЕНИС
//! (notarised powers of attorney) and the attached-population register.
//!
//! [`PgRegistry`] reads the tables loaded by `qyzmet registry import`; a gateway adapter (ШЭП)
//! can implement [`Registry`] instead without touching the pipeline. This module also holds the
//! importer: CSV or JSON lines, validated row by row, with a report of rejected rows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::ident;
use crate::store::{AttachmentRecord, EntityRecord, PersonRecord, PowerOfAttorneyRecord, Store, StoreError};

/// A registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// It could not be reached or timed out: the step retries until its deadline.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// It refused the question itself (asking again cannot help).
    #[error("registry refused the lookup: {0}")]
    Rejected(String),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match crate::pipeline::failure::db_class(&e) {
            crate::pipeline::failure::Class::Transient => RegistryError::Unavailable(e.to_string()),
            crate::pipeline::failure::Class::Permanent => RegistryError::Rejected(e.to_string()),
        }
    }
}

/// Lookups the registry pool needs.
pub trait Registry: Send + Sync {
    /// ГБД ФЛ by IIN.
    fn person(&self, iin: &str) -> BoxFuture<'_, Result<Option<PersonRecord>, RegistryError>>;
    /// ГБД ЮЛ by BIN.
    fn entity(&self, bin: &str) -> BoxFuture<'_, Result<Option<EntityRecord>, RegistryError>>;
    /// ЕНИС by power-of-attorney number.
    fn power_of_attorney(&self, number: &str) -> BoxFuture<'_, Result<Option<PowerOfAttorneyRecord>, RegistryError>>;
    /// Attached-population register by IIN.
    fn attachment(&self, iin: &str) -> BoxFuture<'_, Result<Option<AttachmentRecord>, RegistryError>>;
}

/// Registries kept in PostgreSQL.
#[derive(Clone)]
pub struct PgRegistry {
    store: Store,
}

impl PgRegistry {
    /// Over the given store.
    pub fn new(store: Store) -> Self {
        PgRegistry { store }
    }
}

impl Registry for PgRegistry {
    fn person(&self, iin: &str) -> BoxFuture<'_, Result<Option<PersonRecord>, RegistryError>> {
        let iin = iin.to_owned();
        Box::pin(async move { Ok(self.store.find_person(&iin).await?) })
    }
    fn entity(&self, bin: &str) -> BoxFuture<'_, Result<Option<EntityRecord>, RegistryError>> {
        let bin = bin.to_owned();
        Box::pin(async move { Ok(self.store.find_entity(&bin).await?) })
    }
    fn power_of_attorney(&self, number: &str) -> BoxFuture<'_, Result<Option<PowerOfAttorneyRecord>, RegistryError>> {
        let number = number.to_owned();
        Box::pin(async move { Ok(self.store.find_power_of_attorney(&number).await?) })
    }
    fn attachment(&self, iin: &str) -> BoxFuture<'_, Result<Option<AttachmentRecord>, RegistryError>> {
        let iin = iin.to_owned();
        Box::pin(async move { Ok(self.store.find_attachment(&iin).await?) })
    }
}

/// An in-memory registry for unit tests of steps and for offline demos.
#[derive(Default)]
pub struct MemoryRegistry {
    /// Persons by IIN.
    pub persons: Mutex<HashMap<String, PersonRecord>>,
    /// Entities by BIN.
    pub entities: Mutex<HashMap<String, EntityRecord>>,
    /// Powers of attorney by number.
    pub powers: Mutex<HashMap<String, PowerOfAttorneyRecord>>,
    /// Attachments by IIN.
    pub attachments: Mutex<HashMap<String, AttachmentRecord>>,
    /// When set, every lookup fails (to exercise the transient path).
    pub down: std::sync::atomic::AtomicBool,
}

impl MemoryRegistry {
    fn get<T: Clone>(&self, map: &Mutex<HashMap<String, T>>, key: &str) -> Result<Option<T>, RegistryError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RegistryError::Unavailable("registry is down (test)".into()));
        }
        let guard = map.lock().map_err(|_| RegistryError::Unavailable("poisoned".into()))?;
        Ok(guard.get(key).cloned())
    }
}

impl Registry for MemoryRegistry {
    fn person(&self, iin: &str) -> BoxFuture<'_, Result<Option<PersonRecord>, RegistryError>> {
        let r = self.get(&self.persons, iin);
        Box::pin(async move { r })
    }
    fn entity(&self, bin: &str) -> BoxFuture<'_, Result<Option<EntityRecord>, RegistryError>> {
        let r = self.get(&self.entities, bin);
        Box::pin(async move { r })
    }
    fn power_of_attorney(&self, number: &str) -> BoxFuture<'_, Result<Option<PowerOfAttorneyRecord>, RegistryError>> {
        let r = self.get(&self.powers, number);
        Box::pin(async move { r })
    }
    fn attachment(&self, iin: &str) -> BoxFuture<'_, Result<Option<AttachmentRecord>, RegistryError>> {
        let r = self.get(&self.attachments, iin);
        Box::pin(async move { r })
    }
}

/// Which registry a file or row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// ГБД ФЛ.
    Persons,
    /// ГБД ЮЛ.
    LegalEntities,
    /// ЕНИС.
    PowersOfAttorney,
    /// Attached population.
    Attachments,
}

impl RegistryKind {
    /// Parses `persons`, `legal-entities`, `powers-of-attorney`, `attachments`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "persons" => RegistryKind::Persons,
            "legal-entities" | "legal_entities" => RegistryKind::LegalEntities,
            "powers-of-attorney" | "powers_of_attorney" => RegistryKind::PowersOfAttorney,
            "attachments" => RegistryKind::Attachments,
            _ => return None,
        })
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            RegistryKind::Persons => "persons",
            RegistryKind::LegalEntities => "legal-entities",
            RegistryKind::PowersOfAttorney => "powers-of-attorney",
            RegistryKind::Attachments => "attachments",
        }
    }

    fn from_columns(cols: &[&str]) -> Option<Self> {
        let has = |c: &str| cols.contains(&c);
        if has("number") && has("representative_iin") {
            Some(RegistryKind::PowersOfAttorney)
        } else if has("provider_bin") && has("iin") {
            Some(RegistryKind::Attachments)
        } else if has("bin") && has("name") {
            Some(RegistryKind::LegalEntities)
        } else if has("iin") && has("full_name") {
            Some(RegistryKind::Persons)
        } else {
            None
        }
    }
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Line number in the file (1-based, header included).
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Rows accepted per registry.
    pub accepted: Vec<(RegistryKind, usize)>,
    /// Rows rejected.
    pub rejected: Vec<Rejected>,
}

#[derive(Default)]
struct Batch {
    persons: Vec<PersonRecord>,
    entities: Vec<EntityRecord>,
    powers: Vec<PowerOfAttorneyRecord>,
    attachments: Vec<AttachmentRecord>,
}

fn field<'a>(row: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match row.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(format!("{name} is missing")),
        Some(_) => Err(format!("{name} must be text")),
    }
}

/// An optional text member parsed by `parse`; empty counts as absent, anything else unparsable
/// is refused with `expected` (what the member must be).
fn optional<T>(
    row: &serde_json::Map<String, Value>,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, String> {
    match row.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => parse(s.trim()).map(Some).ok_or_else(|| format!("{name} must be {expected}")),
        Some(_) => Err(format!("{name} must be {expected}")),
    }
}

fn opt_date(row: &serde_json::Map<String, Value>, name: &str) -> Result<Option<chrono::NaiveDate>, String> {
    optional(row, name, |s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(), "a date YYYY-MM-DD")
}

fn opt_time(row: &serde_json::Map<String, Value>, name: &str) -> Result<Option<chrono::NaiveTime>, String> {
    optional(row, name, |s| chrono::NaiveTime::parse_from_str(s, "%H:%M").ok(), "a local time HH:MM")
}

fn checked<'a>(row: &'a serde_json::Map<String, Value>, name: &str, bin: bool) -> Result<&'a str, String> {
    let v = field(row, name)?;
    let r = if bin { ident::check_bin(v) } else { ident::check_iin(v) };
    r.map_err(|e| format!("{name} {}: {e}", ident::mask(v)))?;
    Ok(v)
}

impl Batch {
    fn add(&mut self, kind: RegistryKind, row: &serde_json::Map<String, Value>) -> Result<(), String> {
        match kind {
            RegistryKind::Persons => self.persons.push(PersonRecord {
                iin: checked(row, "iin", false)?.to_owned(),
                full_name: field(row, "full_name")?.to_owned(),
                birth_date: opt_date(row, "birth_date")?,
            }),
            RegistryKind::LegalEntities => self.entities.push(EntityRecord {
                bin: checked(row, "bin", true)?.to_owned(),
                name: field(row, "name")?.to_owned(),
                closes_at: opt_time(row, "closes_at")?,
            }),
            RegistryKind::PowersOfAttorney => {
                let principal = field(row, "principal")?;
                if ident::check_iin(principal).is_err() && ident::check_bin(principal).is_err() {
                    return Err(format!("principal {} is neither a valid IIN nor BIN", ident::mask(principal)));
                }
                let revoked = match row.get("revoked") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(Value::String(s)) => match s.trim() {
                        "" | "false" | "no" | "0" => false,
                        "true" | "yes" | "1" => true,
                        _ => return Err("revoked must be true or false".into()),
                    },
                    Some(_) => return Err("revoked must be true or false".into()),
                };
                self.powers.push(PowerOfAttorneyRecord {
                    number: field(row, "number")?.to_owned(),
                    principal: principal.to_owned(),
                    representative_iin: checked(row, "representative_iin", false)?.to_owned(),
                    valid_until: opt_date(row, "valid_until")?,
                    revoked,
                });
            }
            RegistryKind::Attachments => self.attachments.push(AttachmentRecord {
                iin: checked(row, "iin", false)?.to_owned(),
                provider_bin: checked(row, "provider_bin", true)?.to_owned(),
                since: opt_date(row, "since")?,
            }),
        }
        Ok(())
    }
}

/// Errors that stop an import as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// File unreadable.
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// Format unknown or header unusable.
    #[error("{0}")]
    Format(String),
    /// Database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// Imports a CSV (header row) or JSON-lines file. The registry comes from `kind`, or from a
/// `registry` column/member per row, or from the CSV header's columns. Valid rows are upserted
/// in one transaction; invalid ones are reported and skipped.
pub async fn import_file(store: &Store, path: &Path, kind: Option<RegistryKind>) -> Result<ImportReport, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ImportError::Io(path.display().to_string(), e))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let mut batch = Batch::default();
    let mut report = ImportReport::default();
    let mut counts: HashMap<&'static str, (RegistryKind, usize)> = HashMap::new();
    let mut add = |line: usize, k: Option<RegistryKind>, row: serde_json::Map<String, Value>, batch: &mut Batch| {
        let k = k
            .or_else(|| row.get("registry").and_then(Value::as_str).and_then(RegistryKind::parse))
            .or_else(|| RegistryKind::from_columns(&row.keys().map(String::as_str).collect::<Vec<_>>()))
            .ok_or_else(|| Rejected {
                line,
                reason: "unknown registry (give --kind, a registry column, or its columns)".into(),
            })?;
        batch.add(k, &row).map_err(|reason| Rejected { line, reason })?;
        counts.entry(k.name()).or_insert((k, 0)).1 += 1;
        Ok::<(), Rejected>(())
    };
    match ext {
        "csv" => {
            let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
            let headers = reader.headers().map_err(|e| ImportError::Format(format!("CSV header: {e}")))?.clone();
            let cols: Vec<&str> = headers.iter().collect();
            let file_kind = kind.or_else(|| RegistryKind::from_columns(&cols));
            for (i, rec) in reader.records().enumerate() {
                let line = i + 2;
                match rec {
                    Ok(rec) => {
                        let row = headers
                            .iter()
                            .zip(rec.iter())
                            .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                            .collect();
                        if let Err(r) = add(line, file_kind, row, &mut batch) {
                            report.rejected.push(r);
                        }
                    }
                    Err(e) => report.rejected.push(Rejected { line, reason: format!("unreadable CSV row: {e}") }),
                }
            }
        }
        "jsonl" | "ndjson" | "json" => {
            for (i, l) in text.lines().enumerate() {
                let line = i + 1;
                if l.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(l) {
                    Ok(Value::Object(row)) => {
                        if let Err(r) = add(line, kind, row, &mut batch) {
                            report.rejected.push(r);
                        }
                    }
                    Ok(_) => report.rejected.push(Rejected { line, reason: "not a JSON object".into() }),
                    Err(e) => report.rejected.push(Rejected { line, reason: format!("not JSON: {e}") }),
                }
            }
        }
        other => {
            return Err(ImportError::Format(format!("unknown file type {other:?}: use .csv or .jsonl")));
        }
    }
    let mut tx = store.begin().await?;
    Store::upsert_persons(&mut tx, &batch.persons).await?;
    Store::upsert_entities(&mut tx, &batch.entities).await?;
    Store::upsert_powers_of_attorney(&mut tx, &batch.powers).await?;
    Store::upsert_attachments(&mut tx, &batch.attachments).await?;
    tx.commit().await?;
    let mut accepted: Vec<_> = counts.into_values().collect();
    accepted.sort_by_key(|(k, _)| k.name());
    report.accepted = accepted;
    Ok(report)
}
