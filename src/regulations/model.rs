//! The shape of a regulation file (`regulations/<service>.toml`).
//!
//! One file describes one service: its refusal texts (tagged with the refusal code of
//! regulations.md and the P-numbers they implement) and, per region variant and channel, the
//! route a request takes through the worker pools with each step's deadline as the step tables
//! give it. The types here are exactly what the TOML holds; [`super::Regulations`] checks the
//! cross-references after loading.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::{Channel, Region, ServiceCode};

/// Text in the three languages every outcome carries (P-50).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Texts {
    /// Russian.
    pub ru: String,
    /// Kazakh.
    pub kk: String,
    /// English.
    pub en: String,
}

/// One service file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// Contract code of the service (`doctor-appointment`, …).
    pub service: ServiceCode,
    /// Short id used in regulations.md (`S1` … `S5`).
    pub code: String,
    /// Official names.
    pub name: Texts,
    /// `full`: the provider decides by rules in this file; `partial`: staff decide.
    pub automation: Automation,
    /// Source documents this file is drawn from, for the reader.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Refusals this service can produce, keyed by regulation code (`R3`, `L2`, …).
    pub refusals: BTreeMap<String, RefusalDef>,
    /// Result documents, keyed by document kind.
    pub documents: BTreeMap<String, DocumentDef>,
    /// Region variants (one per regulation).
    pub variants: Vec<VariantDef>,
    /// Choices made where sources conflict (regulations.md §12), kept with the data.
    #[serde(default)]
    pub decisions: Vec<DecisionNote>,
    /// The quality and accessibility questionnaire offered after the service (P-51).
    pub questionnaire: QuestionnaireDef,
    /// How long a finished request keeps its personal data (P-48).
    pub retention: RetentionDef,
}

/// Retention of a service's requests (P-48): after `keep_days` from the final outcome, the
/// personal data are purged and the audit skeleton stays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDef {
    /// Days after the final outcome that a request, its document and its personal data are kept.
    pub keep_days: u32,
    /// Where the period comes from, or why it was chosen.
    pub source: String,
}

/// The questionnaire of a service (P-51): two questions, three ordered answers each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionnaireDef {
    /// Question 1, on the quality of the process and the result.
    pub quality: Texts,
    /// Question 2, on the quality of the information about the procedure.
    pub information: Texts,
    /// The answers 1 (not satisfied), 2 (partly), 3 (satisfied), in that order.
    pub answers: Vec<Texts>,
    /// How each text came to be (the same for all of them).
    pub text_source: TextSources,
    /// The source clause.
    pub source: String,
}

/// A text the applicant is shown, with where its words come from (one level of `flatten`
/// only: serde cannot deny unknown fields through two).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcedText {
    /// The texts.
    #[serde(flatten)]
    pub texts: Texts,
    /// How each came to be.
    pub text_source: TextSources,
    /// The source clause.
    pub source: String,
}

/// An information contact (P-52).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactDef {
    /// The number as the source prints it.
    pub phone: String,
    /// What it is for.
    #[serde(flatten)]
    pub texts: Texts,
    /// How each text came to be.
    pub text_source: TextSources,
    /// The source clause.
    pub source: String,
}

/// How a channel's result reaches the applicant (P-44).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryDef {
    /// The contract's machine word.
    pub method: DeliveryMethod,
    /// What the applicant is told.
    #[serde(flatten)]
    pub texts: Texts,
    /// How each text came to be.
    pub text_source: TextSources,
    /// The source clause.
    pub source: String,
}

/// The ways a result is delivered (contract v1.1 `delivery.method`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMethod {
    /// On the portal, in the personal cabinet.
    PersonalCabinet,
    /// Recorded by the provider (journal entry, coupon) and told to the applicant there.
    ProviderRecords,
    /// Handed over in person or sent by e-mail (S5 desks).
    InPersonOrEmail,
    /// Handed over by the public service centre's operator.
    ViaCentreOperator,
}

impl DeliveryMethod {
    /// The contract word.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMethod::PersonalCabinet => "personal_cabinet",
            DeliveryMethod::ProviderRecords => "provider_records",
            DeliveryMethod::InPersonOrEmail => "in_person_or_email",
            DeliveryMethod::ViaCentreOperator => "via_centre_operator",
        }
    }
}

/// Whether a service is decided by rules or by staff.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Automation {
    /// полностью автоматизированная (S1–S3).
    Full,
    /// частично автоматизированная (S4, S5).
    Partial,
}

/// A refusal the regulation defines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalDef {
    /// Stable machine word of the contract (`not_in_registry`, `provider_refused`, …).
    pub kind: String,
    /// Behaviours (P-n) this refusal implements.
    pub behaviours: Vec<String>,
    /// Where the wording comes from.
    pub source: String,
    /// The texts.
    #[serde(flatten)]
    pub texts: Texts,
    /// How each text came to be.
    pub text_source: TextSources,
}

/// How a text came to be (P-50), so that a reader knows which words are the law's.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// The source's own words for this region, cut to the message itself.
    Quoted,
    /// qyzmet's words built from the source's: a ground added, a sentence split, a registry
    /// named from another row, or (common refusals) qyzmet's own wording.
    Composed,
    /// No source has this text in this language (or for this region): written by qyzmet.
    Translated,
}

/// The [`TextSource`] of each language of a text.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSources {
    /// Russian.
    pub ru: TextSource,
    /// Kazakh.
    pub kk: TextSource,
    /// English (never quoted: no source is in English).
    pub en: TextSource,
}

/// A result document kind (P-36…P-39).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentDef {
    /// Title printed on the document.
    pub title: Texts,
    /// Prefix of the document number; numbers count per prefix and year.
    pub number_prefix: String,
    /// How the applicant receives it (P-44).
    pub delivery: String,
    /// Behaviours implemented.
    pub behaviours: Vec<String>,
    /// Where it is described.
    pub source: String,
}

/// A documented choice where the sources conflict or are silent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionNote {
    /// Defect or behaviour concerned (`D21`, `P-10`, …).
    pub about: String,
    /// What qyzmet does.
    pub choice: String,
    /// Why.
    pub reason: String,
}

/// One region's regulation for the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantDef {
    /// Region code.
    pub region: Region,
    /// Regulation ids of regulations.md §0.2 (`S1-AKM-RU, S1-AKM-KZ`).
    pub regulation: String,
    /// Identifier kinds an applicant may have (`iin`, `bin`) — P-13 and the recipient definitions.
    pub applicant: Vec<IdKind>,
    /// Form fields that must be present and non-empty.
    #[serde(default)]
    pub required_form_fields: Vec<String>,
    /// Intake cut-off before the provider closes (P-10), when the regulation sets one.
    #[serde(default)]
    pub intake_cutoff: Option<IntakeCutoff>,
    /// Channels and their routes.
    pub channels: Vec<ChannelDef>,
    /// Where applicants can ask or complain (P-52), as this variant's regulation prints it; on
    /// every final Outcome.
    pub contacts: Vec<ContactDef>,
}

/// Identifier kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    /// Individual identification number.
    Iin,
    /// Business identification number.
    Bin,
}

/// P-10: requests accepted only until some time before the provider closes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeCutoff {
    /// Provider's closing time, local (`HH:MM`).
    pub provider_closes: String,
    /// How long before closing requests stop being accepted for the same day.
    pub before_closing: String,
    /// What happens to a later request.
    pub after_cutoff: AfterCutoff,
}

/// What a `same day` deadline does for a request registered after the intake cut-off.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AfterCutoff {
    /// The request is accepted and served on the next working day (its `same day` deadline
    /// becomes the end of that day).
    NextWorkingDay,
}

/// One channel of a variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDef {
    /// Channel code.
    pub channel: Channel,
    /// Behaviours this route implements.
    pub behaviours: Vec<String>,
    /// Where the route comes from.
    pub source: String,
    /// Signature check at intake (P-12…P-16).
    pub signature: SignatureDef,
    /// The route, in order; every route starts with `intake` and ends with `result`.
    pub steps: Vec<StepDef>,
    /// How the result reaches the applicant (P-44), shown on the final Outcome.
    pub delivery: DeliveryDef,
}

/// Signature check of a channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDef {
    /// Who signs the request (`applicant`, `provider_staff`, `centre_operator`).
    pub signer: String,
    /// Identifier kinds matched against the certificate (P-13).
    pub identifier: Vec<IdKind>,
    /// Refusal code when the signature is not confirmed; absent where the regulation
    /// specifies no check for this signer (P-14) — qyzmet still verifies, see decisions.
    #[serde(default)]
    pub refusal: Option<String>,
}

/// Worker pools, in the order a request can meet them.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PoolName {
    /// Validation, signature, registration.
    Intake,
    /// State registries.
    Registry,
    /// Payment confirmation.
    Payment,
    /// Provider review.
    Review,
    /// Result generation.
    Result,
}

/// One step of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// The pool that runs it.
    pub pool: PoolName,
    /// Deadline grammar: `90s`, `1m30s`, `10m`, `2h`, `1 working day`, `15 working days`,
    /// `30 calendar days`, `same day`, `shared` (ends with the previous step), or a table
    /// choosing by a form field.
    pub deadline: DeadlineSpec,
    /// The deadline exactly as the step table prints it, with the table reference.
    pub deadline_source: String,
    /// Behaviours implemented.
    pub behaviours: Vec<String>,
    /// Registry lookups (registry pool only).
    #[serde(default)]
    pub lookups: Vec<Lookup>,
    /// Refusal code when a looked-up record is missing (registry pool).
    #[serde(default)]
    pub not_found_refusal: Option<String>,
    /// Refusal code of a staff refusal (review pool, `decision` mode).
    #[serde(default)]
    pub refusal: Option<String>,
    /// Refusal code when the step's deadline passes while the request waits at it (payment:
    /// L2 «no payment», P-24); without one the request is refused `deadline_exceeded`.
    #[serde(default)]
    pub deadline_refusal: Option<String>,
    /// `rules` or `decision` (review pool).
    #[serde(default)]
    pub mode: Option<ReviewMode>,
    /// Automated review rules (review pool, `rules` mode).
    #[serde(default)]
    pub rules: Vec<RuleDef>,
    /// Result document kind (result pool).
    #[serde(default)]
    pub document: Option<String>,
    /// Free text for the reader.
    #[serde(default)]
    pub note: Option<String>,
    /// What the applicant is told when the request reaches this step (the `registered` Outcome
    /// for intake, `in_progress` for the others; P-43, P-45), where the sources say something.
    #[serde(default)]
    pub notice: Option<SourcedText>,
    /// How far staff may extend this decision step's term by a signed Decision (P-34).
    #[serde(default)]
    pub extension: Option<ExtensionDef>,
}

impl StepDef {
    /// Whether the step does nothing but wait for a staff Decision (review, `decision` mode;
    /// P-32, P-35): a request is parked at it as it arrives, with no task to run, and the
    /// Decision moves it on.
    pub fn only_waits(&self) -> bool {
        self.mode == Some(ReviewMode::Decision)
    }
}

/// An extension of a decision step's term that staff may grant (S5, P-34): measured, like the
/// term, from the moment the step starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionDef {
    /// The longest term an extension may give («…30 күн күнтізбелік күнге дейін»).
    pub up_to: String,
    /// The longest term in the exceptional cases the law allows («жекелеген жағдайларда 6
    /// айға дейін»); the Decision must say it is one.
    #[serde(default)]
    pub exceptional_up_to: Option<String>,
    /// The source clause.
    pub source: String,
}

/// A deadline as written in the data.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DeadlineSpec {
    /// One deadline for every request.
    Fixed(String),
    /// A deadline chosen by a form field (S4: licence kind, P-33).
    ByField {
        /// Dotted path of the field, e.g. `form.kind`.
        by: String,
        /// Deadline per field value.
        values: BTreeMap<String, String>,
    },
}

/// Registry lookups.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Lookup {
    /// ГБД ФЛ by IIN (P-18).
    Person,
    /// ГБД ФЛ by IIN or ГБД ЮЛ by BIN (P-19, P-20).
    PersonOrEntity,
    /// ЕНИС, when the request carries a notarised power of attorney (P-21).
    PowerOfAttorney,
}

/// Review modes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReviewMode {
    /// Decided by the rules in the data.
    Rules,
    /// Waits for a staff Decision on `qyzmet.decisions`.
    Decision,
}

/// One automated review rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// What to check.
    pub check: RuleCheck,
    /// Refusal code when the check fails.
    pub refusal: String,
    /// Behaviours implemented.
    pub behaviours: Vec<String>,
    /// Why this rule exists.
    #[serde(default)]
    pub note: Option<String>,
}

/// The closed set of checks an automated review can make.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleCheck {
    /// The applicant is attached to the provider named in the request, according to the
    /// attached-population register (P-30), which the rule reads itself.
    AttachedToProvider,
}

/// Common texts for refusals no regulation defines (`invalid_request`, …), in
/// `regulations/common.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonFile {
    /// Keyed by refusal kind.
    pub refusals: BTreeMap<String, CommonRefusal>,
}

/// A refusal without a regulation code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonRefusal {
    /// Behaviours implemented.
    pub behaviours: Vec<String>,
    /// Why qyzmet emits it.
    pub source: String,
    /// The texts; `{detail}` is replaced with the specific reason.
    #[serde(flatten)]
    pub texts: Texts,
    /// How each text came to be (qyzmet's own wording: composed).
    pub text_source: TextSources,
}
