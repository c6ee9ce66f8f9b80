//! Regulations as data: loading, validation, routes and deadlines.
//!
//! `regulations/<service>.toml` describes a service (see [`model`]); `common.toml` the refusals
//! no regulation defines; `calendar.toml` the working-day calendar. Adding a service variant or
//! region is a data change. Loading checks every cross-reference and fails with the file, the
//! field and the reason.

pub mod calendar;
pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveTime, Utc};

pub use calendar::Calendar;
pub use model::*;

use crate::contract::{Channel, FieldError, Region, Request, ServiceCode};

/// Why the regulation data cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// Dotted path of the field (or `-` for the whole file).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl LoadError {
    /// A field-level error.
    pub fn new(file: &Path, field: &str, reason: String) -> Self {
        LoadError { file: file.to_owned(), field: field.to_owned(), reason }
    }

    fn io(file: &Path, e: std::io::Error) -> Self {
        LoadError::new(file, "-", format!("cannot read: {e}"))
    }

    fn toml(file: &Path, e: toml::de::Error) -> Self {
        LoadError::new(file, "-", e.to_string().trim().replace('\n', " "))
    }
}

/// Contract refusal kinds (contract.md, Outcome).
pub const REFUSAL_KINDS: &[&str] = &[
    "signature_not_confirmed",
    "not_in_registry",
    "power_of_attorney_not_found",
    "not_attached",
    "no_payment",
    "provider_refused",
    "deadline_exceeded",
    "invalid_request",
    "unsupported_service",
];

/// Regulation refusal codes the contract allows in `reason.code`.
pub const REFUSAL_CODES: &[&str] =
    &["R2", "R3", "R4", "R5", "L2", "L3", "L4", "L6", "L7", "L8", "L9", "A2", "A4", "A6", "A7"];

/// A parsed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// A fixed duration (seconds, minutes, hours).
    Span(Duration),
    /// Close of the Nth working day.
    WorkingDays(u32),
    /// Close of the Nth calendar day (moved off days off).
    CalendarDays(u32),
    /// Close of the same date N calendar months later (moved off days off; S5's «до 6 айға
    /// дейін», P-34).
    CalendarMonths(u32),
    /// End of the local day (or of the next working day after an intake cut-off).
    SameDay,
    /// Ends with the previous step.
    Shared,
}

impl Term {
    /// Parses the deadline grammar of the data files.
    pub fn parse(s: &str) -> Option<Term> {
        let s = s.trim();
        match s {
            "same day" => return Some(Term::SameDay),
            "shared" => return Some(Term::Shared),
            _ => {}
        }
        if let Some((n, unit)) = s.split_once(' ') {
            let n: u32 = n.parse().ok().filter(|n| *n > 0)?;
            return match (unit, n) {
                ("working day", 1) | ("working days", 2..) => Some(Term::WorkingDays(n)),
                ("calendar day", 1) | ("calendar days", 2..) => Some(Term::CalendarDays(n)),
                ("month", 1) | ("months", 2..) => Some(Term::CalendarMonths(n)),
                _ => None,
            };
        }
        parse_span(s).map(Term::Span)
    }
}

/// Parses `90s`, `1m30s`, `10m`, `2h`, `250ms`.
pub fn parse_span(s: &str) -> Option<Duration> {
    let mut total = Duration::zero();
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::milliseconds(n),
            "s" => Duration::seconds(n),
            "m" => Duration::minutes(n),
            "h" => Duration::hours(n),
            _ => return None,
        };
    }
    (total > Duration::zero()).then_some(total)
}

/// A loaded service file.
#[derive(Debug, Clone)]
pub struct Service {
    /// The data.
    pub file: ServiceFile,
    /// Where it came from (for messages).
    pub path: PathBuf,
}

/// All regulation data, validated.
#[derive(Debug, Clone)]
pub struct Regulations {
    services: BTreeMap<ServiceCode, Service>,
    common: CommonFile,
    calendar: Calendar,
    /// Operator or test override of a pool's step duration (tiny deadlines in tests, drills).
    overrides: HashMap<PoolName, Duration>,
    /// Test override of every service's retention period.
    retention_override: Option<Duration>,
}

/// The route of one (service, region, channel).
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The service.
    pub service: &'a ServiceFile,
    /// The region variant.
    pub variant: &'a VariantDef,
    /// The channel.
    pub channel: &'a ChannelDef,
}

/// Absolute deadlines computed at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlinePlan {
    /// Per step, in route order (index 0 is intake).
    pub steps: Vec<(PoolName, DateTime<Utc>)>,
    /// The whole service (P-41): the last step's deadline.
    pub service: DateTime<Utc>,
}

impl Regulations {
    /// Loads `dir/*.toml` (service files), `dir/common.toml` and `dir/calendar.toml`
    /// (`dir/behaviours.toml` is the trace's list of behaviours, read by `qyzmet regulations trace`).
    pub fn load(dir: &Path) -> Result<Regulations, LoadError> {
        let calendar = Calendar::load(&dir.join("calendar.toml"))?;
        let common_path = dir.join("common.toml");
        let text = std::fs::read_to_string(&common_path).map_err(|e| LoadError::io(&common_path, e))?;
        let common: CommonFile = toml::from_str(&text).map_err(|e| LoadError::toml(&common_path, e))?;
        for kind in ["invalid_request", "unsupported_service", "deadline_exceeded"] {
            if !common.refusals.contains_key(kind) {
                return Err(LoadError::new(&common_path, &format!("refusals.{kind}"), "is missing".into()));
            }
        }
        for (kind, r) in &common.refusals {
            if !REFUSAL_KINDS.contains(&kind.as_str()) {
                return Err(LoadError::new(
                    &common_path,
                    &format!("refusals.{kind}"),
                    "is not a contract refusal kind".into(),
                ));
            }
            check_behaviours(&common_path, &format!("refusals.{kind}.behaviours"), &r.behaviours)?;
        }

        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| LoadError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter(|p| {
                !matches!(
                    p.file_name().and_then(|n| n.to_str()),
                    Some("common.toml" | "calendar.toml" | "behaviours.toml")
                )
            })
            .collect();
        entries.sort();
        let mut services = BTreeMap::new();
        for path in entries {
            let text = std::fs::read_to_string(&path).map_err(|e| LoadError::io(&path, e))?;
            let file: ServiceFile = toml::from_str(&text).map_err(|e| LoadError::toml(&path, e))?;
            validate_service(&path, &file)?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if stem != file.service.as_str() {
                return Err(LoadError::new(&path, "service", format!("{} does not match the file name", file.service)));
            }
            services.insert(file.service, Service { file, path });
        }
        if services.is_empty() {
            return Err(LoadError::new(dir, "-", "no service files found".into()));
        }
        Ok(Regulations { services, common, calendar, overrides: HashMap::new(), retention_override: None })
    }

    /// The working-day calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Every loaded service.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// One service.
    pub fn service(&self, code: ServiceCode) -> Option<&ServiceFile> {
        self.services.get(&code).map(|s| &s.file)
    }

    /// Texts for a refusal kind no regulation defines.
    pub fn common(&self, kind: &str) -> Option<&CommonRefusal> {
        self.common.refusals.get(kind)
    }

    /// The latest deadline an extension of the decision step at `index` may set (P-34): its
    /// term `up_to` (or, for an exceptional case, `exceptional_up_to`) counted from `start`,
    /// the moment the step began (the previous step's planned deadline). `None` when the step
    /// cannot be extended (or not exceptionally).
    pub fn extension_limit(
        &self,
        route: &Route<'_>,
        index: usize,
        start: DateTime<Utc>,
        exceptional: bool,
    ) -> Option<DateTime<Utc>> {
        let x = route.step(index)?.extension.as_ref()?;
        let term = if exceptional { x.exceptional_up_to.as_deref()? } else { x.up_to.as_str() };
        let cal = &self.calendar;
        Some(match Term::parse(term)? {
            Term::CalendarDays(n) => cal.add_calendar_days(start, n),
            Term::WorkingDays(n) => cal.add_working_days(start, n),
            Term::CalendarMonths(n) => cal.add_calendar_months(start, n),
            _ => return None,
        })
    }

    /// How long a finished request of `service` keeps its personal data (P-48).
    pub fn retention(&self, service: ServiceCode) -> Option<Duration> {
        let keep = self.services.get(&service)?.file.retention.keep_days;
        Some(self.retention_override.unwrap_or_else(|| Duration::days(i64::from(keep))))
    }

    /// Shortens every service's retention (tests, demonstrations).
    pub fn override_retention(&mut self, keep: Duration) {
        self.retention_override = Some(keep);
    }

    /// Makes every step of `pool` due `span` after the request was received, in every route
    /// (tests and drills: a zero span makes the step overdue as soon as it is queued).
    pub fn override_step_deadline(&mut self, pool: PoolName, span: Duration) {
        self.overrides.insert(pool, span);
    }

    /// The route of a request, or why there is none (`unsupported_service`).
    pub fn route(&self, service: ServiceCode, region: Region, channel: Channel) -> Result<Route<'_>, String> {
        let file = self.service(service).ok_or_else(|| format!("no regulation is loaded for {service}"))?;
        let variant = file
            .variants
            .iter()
            .find(|v| v.region == region)
            .ok_or_else(|| format!("{service} has no regulation in {region}"))?;
        let channel = variant
            .channels
            .iter()
            .find(|c| c.channel == channel)
            .ok_or_else(|| format!("{service} in {region} is not offered through the {channel} channel"))?;
        Ok(Route { service: file, variant, channel })
    }

    /// Checks the service-specific rules of a request against its route.
    pub fn check_request(&self, route: &Route<'_>, req: &Request) -> Result<(), FieldError> {
        let id = req.applicant_id();
        let kind = match id.kind() {
            "bin" => IdKind::Bin,
            _ => IdKind::Iin,
        };
        if !route.variant.applicant.contains(&kind) {
            return Err(FieldError {
                field: format!("applicant.{}", id.kind()),
                problem: format!(
                    "{} in {} is provided to applicants identified by {} only",
                    req.service,
                    req.region,
                    route
                        .variant
                        .applicant
                        .iter()
                        .map(|k| format!("{k:?}").to_uppercase())
                        .collect::<Vec<_>>()
                        .join("/")
                ),
            });
        }
        for field in &route.variant.required_form_fields {
            match req.form.get(field) {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {}
                Some(serde_json::Value::String(_)) => {
                    return Err(FieldError { field: format!("form.{field}"), problem: "is empty".into() });
                }
                Some(_) => {
                    return Err(FieldError { field: format!("form.{field}"), problem: "must be a string".into() });
                }
                None => {
                    return Err(FieldError { field: format!("form.{field}"), problem: "is missing".into() });
                }
            }
        }
        for step in &route.channel.steps {
            if let DeadlineSpec::ByField { by, values } = &step.deadline {
                let field = by.strip_prefix("form.").unwrap_or(by);
                let value = req.form_text(field).unwrap_or_default();
                if !values.contains_key(value) {
                    return Err(FieldError {
                        field: by.clone(),
                        problem: format!(
                            "must be one of {}",
                            values.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Absolute deadlines of every step and of the service, computed at registration from the
    /// instant intake received the request. Call [`Regulations::check_request`] first.
    pub fn plan(&self, route: &Route<'_>, req: &Request, received: DateTime<Utc>) -> DeadlinePlan {
        self.plan_with(route, req, received, None)
    }

    /// [`Regulations::plan`] for a provider whose closing time the provider registry gives
    /// (`provider_closes`, local time); without it a variant's intake cut-off uses the data's
    /// default (P-10).
    pub fn plan_with(
        &self,
        route: &Route<'_>,
        req: &Request,
        received: DateTime<Utc>,
        provider_closes: Option<NaiveTime>,
    ) -> DeadlinePlan {
        let cal = &self.calendar;
        let mut at = received;
        let mut steps = Vec::with_capacity(route.channel.steps.len());
        for step in &route.channel.steps {
            let text = match &step.deadline {
                DeadlineSpec::Fixed(s) => s.as_str(),
                DeadlineSpec::ByField { by, values } => {
                    let field = by.strip_prefix("form.").unwrap_or(by);
                    req.form_text(field)
                        .and_then(|v| values.get(v))
                        .or_else(|| values.values().next_back())
                        .map(String::as_str)
                        .unwrap_or("shared")
                }
            };
            if let Some(span) = self.overrides.get(&step.pool) {
                at = received + *span;
                steps.push((step.pool, at));
                continue;
            }
            // validated at load time
            let term = Term::parse(text).unwrap_or(Term::Shared);
            at = match term {
                Term::Span(d) => at + d,
                Term::WorkingDays(n) => cal.add_working_days(at, n),
                Term::CalendarDays(n) => cal.add_calendar_days(at, n),
                Term::CalendarMonths(n) => cal.add_calendar_months(at, n),
                Term::SameDay => self.same_day(route, at, provider_closes),
                Term::Shared => at,
            };
            steps.push((step.pool, at));
        }
        DeadlinePlan { service: at, steps }
    }

    fn same_day(&self, route: &Route<'_>, at: DateTime<Utc>, provider_closes: Option<NaiveTime>) -> DateTime<Utc> {
        let cal = &self.calendar;
        let late = route.variant.intake_cutoff.as_ref().is_some_and(|c| {
            let closes = provider_closes.or_else(|| calendar::parse_hhmm(&c.provider_closes));
            let before = parse_span(&c.before_closing);
            match (closes, before) {
                (Some(closes), Some(before)) => cal.local_time(at) > closes - before,
                _ => false,
            }
        });
        if late { cal.end_of_date(cal.next_working_day(at)) } else { cal.end_of_day(at) }
    }
}

impl Route<'_> {
    /// The step at an index of the route.
    pub fn step(&self, index: usize) -> Option<&StepDef> {
        self.channel.steps.get(index)
    }

    /// Refusal definition by key (`R3`, `R3/not_attached`).
    pub fn refusal(&self, key: &str) -> Option<&RefusalDef> {
        self.service.refusals.get(key)
    }
}

/// The contract code of a refusal key: the part before `/`.
pub fn code_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

fn check_behaviours(path: &Path, field: &str, list: &[String]) -> Result<(), LoadError> {
    if list.is_empty() {
        return Err(LoadError::new(path, field, "must cite at least one behaviour (P-n)".into()));
    }
    for b in list {
        let ok = b.strip_prefix("P-").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| (1..=52).contains(&n));
        if !ok {
            return Err(LoadError::new(path, field, format!("{b:?} is not a behaviour P-1…P-52")));
        }
    }
    Ok(())
}

fn check_deadline(path: &Path, field: &str, spec: &DeadlineSpec, first: bool) -> Result<(), LoadError> {
    let texts: Vec<&String> = match spec {
        DeadlineSpec::Fixed(s) => vec![s],
        DeadlineSpec::ByField { by, values } => {
            if !by.starts_with("form.") {
                return Err(LoadError::new(
                    path,
                    &format!("{field}.by"),
                    "must name a form field (form.<name>)".into(),
                ));
            }
            if values.is_empty() {
                return Err(LoadError::new(path, &format!("{field}.values"), "is empty".into()));
            }
            values.values().collect()
        }
    };
    for t in texts {
        match Term::parse(t) {
            None => {
                return Err(LoadError::new(
                    path,
                    field,
                    format!(
                        "unknown deadline {t:?}; use e.g. 90s, 1m30s, 10m, 2h, 1 working day, 15 working days, 30 calendar days, same day, shared"
                    ),
                ));
            }
            Some(Term::Shared) if first => {
                return Err(LoadError::new(path, field, "the first step cannot share a previous deadline".into()));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

struct Checker<'a> {
    path: &'a Path,
    file: &'a ServiceFile,
}

impl Checker<'_> {
    fn err(&self, field: impl fmt::Display, reason: impl Into<String>) -> LoadError {
        LoadError::new(self.path, &field.to_string(), reason.into())
    }

    /// A text shown to the applicant: three non-empty languages, no quoted English, a source.
    fn text(&self, field: &str, texts: &Texts, marks: &TextSources, source: &str) -> Result<(), LoadError> {
        for (lang, text) in [("ru", &texts.ru), ("kk", &texts.kk), ("en", &texts.en)] {
            if text.trim().is_empty() {
                return Err(self.err(format!("{field}.{lang}"), "is empty"));
            }
        }
        if marks.en == TextSource::Quoted {
            return Err(self.err(format!("{field}.text_source.en"), "no source is in English: translated"));
        }
        if source.trim().is_empty() {
            return Err(self.err(format!("{field}.source"), "must cite its source"));
        }
        Ok(())
    }

    fn refusal(&self, field: &str, key: &Option<String>, required: bool) -> Result<(), LoadError> {
        match key {
            None if required => Err(self.err(field, "is required for this step")),
            None => Ok(()),
            Some(k) if !self.file.refusals.contains_key(k) => {
                Err(self.err(field, format!("refusal {k:?} is not defined in [refusals]")))
            }
            Some(_) => Ok(()),
        }
    }
}

fn validate_service(path: &Path, file: &ServiceFile) -> Result<(), LoadError> {
    let c = Checker { path, file };
    for (key, r) in &file.refusals {
        let code = code_of(key);
        if !REFUSAL_CODES.contains(&code) {
            return Err(c.err(format!("refusals.{key}"), format!("{code} is not a refusal code of the contract")));
        }
        if !REFUSAL_KINDS.contains(&r.kind.as_str()) {
            return Err(c.err(format!("refusals.{key}.kind"), format!("{:?} is not a contract refusal kind", r.kind)));
        }
        check_behaviours(path, &format!("refusals.{key}.behaviours"), &r.behaviours)?;
        for (lang, text) in [("ru", &r.texts.ru), ("kk", &r.texts.kk), ("en", &r.texts.en)] {
            if text.trim().is_empty() {
                return Err(c.err(format!("refusals.{key}.{lang}"), "is empty"));
            }
        }
        if r.text_source.en == TextSource::Quoted {
            return Err(c.err(format!("refusals.{key}.text_source.en"), "no source is in English: translated"));
        }
    }

    if file.retention.keep_days == 0 || file.retention.source.trim().is_empty() {
        return Err(c.err("retention", "needs keep_days (at least 1) and its source"));
    }
    let q = &file.questionnaire;
    if q.answers.len() != 3 {
        return Err(c.err("questionnaire.answers", "has three answers: not satisfied, partly, satisfied"));
    }
    for (field, texts) in [("quality", &q.quality), ("information", &q.information)]
        .into_iter()
        .chain(q.answers.iter().map(|a| ("answers", a)))
    {
        c.text(&format!("questionnaire.{field}"), texts, &q.text_source, &q.source)?;
    }
    for (kind, d) in &file.documents {
        check_behaviours(path, &format!("documents.{kind}.behaviours"), &d.behaviours)?;
        if d.number_prefix.is_empty() || !d.number_prefix.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(c.err(format!("documents.{kind}.number_prefix"), "must be upper-case ASCII letters or digits"));
        }
    }
    if file.variants.is_empty() {
        return Err(c.err("variants", "no region variant"));
    }
    let mut regions = Vec::new();
    for (vi, v) in file.variants.iter().enumerate() {
        let vf = format!("variants[{vi}]");
        if regions.contains(&v.region) {
            return Err(c.err(format!("{vf}.region"), format!("{} appears twice", v.region)));
        }
        regions.push(v.region);
        if v.applicant.is_empty() {
            return Err(c.err(format!("{vf}.applicant"), "must allow iin and/or bin"));
        }
        if let Some(cut) = &v.intake_cutoff {
            if calendar::parse_hhmm(&cut.provider_closes).is_none() {
                return Err(c.err(format!("{vf}.intake_cutoff.provider_closes"), "must be HH:MM"));
            }
            if parse_span(&cut.before_closing).is_none() {
                return Err(c.err(format!("{vf}.intake_cutoff.before_closing"), "must be a duration like 2h"));
            }
        }
        let mut channels = Vec::new();
        if v.contacts.is_empty() {
            return Err(c.err(format!("{vf}.contacts"), "every regulation gives an information contact (P-52)"));
        }
        for (i, contact) in v.contacts.iter().enumerate() {
            c.text(&format!("{vf}.contacts[{i}]"), &contact.texts, &contact.text_source, &contact.source)?;
        }
        for (ci, ch) in v.channels.iter().enumerate() {
            let cf = format!("{vf}.channels[{ci}]");
            if channels.contains(&ch.channel) {
                return Err(c.err(format!("{cf}.channel"), format!("{} appears twice", ch.channel)));
            }
            channels.push(ch.channel);
            check_behaviours(path, &format!("{cf}.behaviours"), &ch.behaviours)?;
            let d = &ch.delivery;
            c.text(&format!("{cf}.delivery"), &d.texts, &d.text_source, &d.source)?;
            c.refusal(&format!("{cf}.signature.refusal"), &ch.signature.refusal, false)?;
            if ch.signature.identifier.is_empty() {
                return Err(c.err(format!("{cf}.signature.identifier"), "must list iin and/or bin"));
            }
            validate_steps(&c, &cf, &v.required_form_fields, &ch.steps)?;
        }
    }
    Ok(())
}

fn validate_steps(c: &Checker<'_>, cf: &str, required: &[String], steps: &[StepDef]) -> Result<(), LoadError> {
    if steps.first().map(|s| s.pool) != Some(PoolName::Intake) {
        return Err(c.err(format!("{cf}.steps"), "a route starts with intake"));
    }
    if steps.last().map(|s| s.pool) != Some(PoolName::Result) {
        return Err(c.err(format!("{cf}.steps"), "a route ends with result"));
    }
    for pair in steps.windows(2) {
        if pair[0].pool >= pair[1].pool {
            return Err(c.err(
                format!("{cf}.steps"),
                format!(
                    "{:?} cannot follow {:?}: pools run in the order intake, registry, payment, review, result",
                    pair[1].pool, pair[0].pool
                ),
            ));
        }
    }
    for (si, s) in steps.iter().enumerate() {
        let sf = format!("{cf}.steps[{si}]");
        check_deadline(c.path, &format!("{sf}.deadline"), &s.deadline, si == 0)?;
        if let DeadlineSpec::ByField { by, .. } = &s.deadline {
            let field = by.trim_start_matches("form.");
            if !required.iter().any(|r| r == field) {
                return Err(c.err(format!("{sf}.deadline.by"), format!("{by} must be listed in required_form_fields")));
            }
        }
        if s.deadline_source.trim().is_empty() {
            return Err(c.err(format!("{sf}.deadline_source"), "must quote the step table"));
        }
        check_behaviours(c.path, &format!("{sf}.behaviours"), &s.behaviours)?;
        if let Some(x) = &s.extension {
            if s.mode != Some(ReviewMode::Decision) {
                return Err(c.err(format!("{sf}.extension"), "only a staff decision step can be extended"));
            }
            for (field, term) in [("up_to", Some(&x.up_to)), ("exceptional_up_to", x.exceptional_up_to.as_ref())] {
                if let Some(t) = term
                    && !matches!(
                        Term::parse(t),
                        Some(Term::CalendarDays(_) | Term::WorkingDays(_) | Term::CalendarMonths(_))
                    )
                {
                    return Err(c.err(format!("{sf}.extension.{field}"), "must be a term in days or months"));
                }
            }
        }
        if let Some(n) = &s.notice {
            c.text(&format!("{sf}.notice"), &n.texts, &n.text_source, &n.source)?;
        }
        c.refusal(&format!("{sf}.deadline_refusal"), &s.deadline_refusal, false)?;
        match s.pool {
            PoolName::Registry => {
                if s.lookups.is_empty() {
                    return Err(c.err(format!("{sf}.lookups"), "a registry step looks something up"));
                }
                c.refusal(&format!("{sf}.not_found_refusal"), &s.not_found_refusal, true)?;
            }
            PoolName::Payment => c.refusal(&format!("{sf}.deadline_refusal"), &s.deadline_refusal, true)?,
            PoolName::Review => match s.mode {
                None => return Err(c.err(format!("{sf}.mode"), "is required: rules or decision")),
                Some(ReviewMode::Decision) => c.refusal(&format!("{sf}.refusal"), &s.refusal, true)?,
                Some(ReviewMode::Rules) => {
                    for (ri, r) in s.rules.iter().enumerate() {
                        c.refusal(&format!("{sf}.rules[{ri}].refusal"), &Some(r.refusal.clone()), true)?;
                        check_behaviours(c.path, &format!("{sf}.rules[{ri}].behaviours"), &r.behaviours)?;
                    }
                }
            },
            PoolName::Result => match &s.document {
                None => {
                    return Err(c.err(format!("{sf}.document"), "the result step names its document kind"));
                }
                Some(kind) if !c.file.documents.contains_key(kind) => {
                    return Err(
                        c.err(format!("{sf}.document"), format!("document {kind:?} is not defined in [documents]"))
                    );
                }
                Some(_) => {}
            },
            PoolName::Intake => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p46_deadline_grammar() {
        assert_eq!(Term::parse("90s"), Some(Term::Span(Duration::seconds(90))));
        assert_eq!(Term::parse("1m30s"), Some(Term::Span(Duration::seconds(90))));
        assert_eq!(Term::parse("10m"), Some(Term::Span(Duration::minutes(10))));
        assert_eq!(Term::parse("1 working day"), Some(Term::WorkingDays(1)));
        assert_eq!(Term::parse("15 working days"), Some(Term::WorkingDays(15)));
        assert_eq!(Term::parse("30 calendar days"), Some(Term::CalendarDays(30)));
        assert_eq!(Term::parse("same day"), Some(Term::SameDay));
        assert_eq!(Term::parse("shared"), Some(Term::Shared));
        for bad in ["", "1 working days", "0 working days", "15 working day", "m", "5x", "1.5m"] {
            assert_eq!(Term::parse(bad), None, "{bad}");
        }
    }

    fn repo() -> Regulations {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regulations");
        Regulations::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn request(service: &str, region: &str, channel: &str, form: serde_json::Value) -> Request {
        let v = serde_json::json!({
            "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11", "service": service, "region": region,
            "channel": channel, "submitted_at": "2026-11-23T10:15:00+05:00",
            "applicant": { "iin": "840317000029" }, "provider": "081140000436", "form": form,
            "signature": { "format": "jcs-x509", "algorithm": "ES256", "certificate_chain": ["A"], "value": "B" }
        });
        let env = crate::contract::Envelope::parse(v.to_string().as_bytes(), 1 << 20).expect("envelope");
        Request::from_envelope(&env).expect("request")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn p47_repository_regulations_cover_every_service_and_load() {
        let regs = repo();
        assert_eq!(regs.services().count(), 5);
        for (service, region, channel) in [
            (ServiceCode::DoctorAppointment, Region::Akmola, Channel::Portal),
            (ServiceCode::PhcAttachment, Region::Aktobe, Channel::Provider),
            (ServiceCode::HomeDoctorCall, Region::Astana, Channel::Portal),
            (ServiceCode::MedicalLicence, Region::Aktobe, Channel::Centre),
            (ServiceCode::ArchiveCertificate, Region::Astana, Channel::Provider),
        ] {
            assert!(regs.route(service, region, channel).is_ok(), "{service} {region} {channel}");
        }
        assert!(regs.route(ServiceCode::MedicalLicence, Region::Akmola, Channel::Portal).is_err());
    }

    #[test]
    fn p33_licence_service_deadline_matches_the_contract_example() {
        let regs = repo();
        let route = regs.route(ServiceCode::MedicalLicence, Region::Aktobe, Channel::Portal).expect("route");
        let req =
            request("medical-licence", "aktobe", "portal", serde_json::json!({ "kind": "issue", "activity": "x" }));
        let plan = regs.plan(&route, &req, at("2026-11-23T10:15:00+05:00"));
        assert_eq!(plan.service, at("2026-12-14T18:00:00+05:00"));
        let dup =
            request("medical-licence", "aktobe", "portal", serde_json::json!({ "kind": "duplicate", "activity": "x" }));
        assert_eq!(regs.plan(&route, &dup, at("2026-11-23T10:15:00+05:00")).service, at("2026-11-25T18:00:00+05:00"));
    }

    #[test]
    fn p10_astana_home_call_after_the_cutoff_is_served_the_next_working_day() {
        let regs = repo();
        let route = regs.route(ServiceCode::HomeDoctorCall, Region::Astana, Channel::Portal).expect("route");
        let req = request("home-doctor-call", "astana", "portal", serde_json::json!({}));
        let early = regs.plan(&route, &req, at("2026-11-27T10:00:00+05:00"));
        assert_eq!(early.service, at("2026-11-27T23:59:59.999+05:00"));
        // Friday 19:00 is past the 18:00 cut-off: served on Monday.
        let late = regs.plan(&route, &req, at("2026-11-27T19:00:00+05:00"));
        assert_eq!(late.service, at("2026-11-30T23:59:59.999+05:00"));
    }

    #[test]
    fn p10_the_providers_own_closing_time_from_its_registry_moves_the_cutoff() {
        let regs = repo();
        let route = regs.route(ServiceCode::HomeDoctorCall, Region::Astana, Channel::Portal).expect("route");
        let req = request("home-doctor-call", "astana", "portal", serde_json::json!({}));
        let closes = NaiveTime::from_hms_opt(17, 0, 0);
        // 15:30 is within the data's default (closing 20:00, cut-off 18:00) but past this
        // provider's cut-off (closing 17:00, cut-off 15:00): Friday's call is served on Monday.
        let friday = at("2026-11-27T15:30:00+05:00");
        assert_eq!(regs.plan(&route, &req, friday).service, at("2026-11-27T23:59:59.999+05:00"));
        assert_eq!(regs.plan_with(&route, &req, friday, closes).service, at("2026-11-30T23:59:59.999+05:00"));
        let early = at("2026-11-27T14:00:00+05:00");
        assert_eq!(regs.plan_with(&route, &req, early, closes).service, at("2026-11-27T23:59:59.999+05:00"));
    }

    #[test]
    fn p46_steps_deadlines_accumulate_along_the_route() {
        let regs = repo();
        let route = regs.route(ServiceCode::DoctorAppointment, Region::Akmola, Channel::Provider).expect("route");
        let req = request("doctor-appointment", "akmola", "provider", serde_json::json!({}));
        let plan = regs.plan(&route, &req, at("2026-11-23T10:00:00+05:00"));
        let times: Vec<_> = plan.steps.iter().map(|(_, t)| *t).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(plan.service, *times.last().expect("steps"));
    }

    #[test]
    fn refusal_keys_carry_the_contract_code_before_the_slash() {
        assert_eq!(code_of("R3/not_attached"), "R3");
        assert_eq!(code_of("L2"), "L2");
    }
}
