//! The systems file: every upstream system that talks to qyzmet, with what it may do.
//!
//! One file says which broker user each portal, provider workstation, public service centre,
//! the payment gateway, staff applications and outcome readers have, and which channels,
//! services and providers each may use. From it come
//! - the broker's users, permissions and topic permissions, as RabbitMQ definitions
//!   ([`Systems::definitions`], `qyzmet systems definitions`, imported with
//!   `rabbitmqctl import_definitions` or at boot with `load_definitions`): a portal may write
//!   only to `qyzmet.requests` with its services' routing keys (and its applicants'
//!   questionnaire answers to `qyzmet.feedback`, `questionnaire.<service>`), the gateway only to
//!   `qyzmet.payments`, staff applications only to `qyzmet.decisions`, readers may only read
//!   their own queues bound to `qyzmet.outcomes`; only qyzmet's own user may configure;
//! - the checks qyzmet makes on the broker-validated `user_id` of every Request, PaymentNotice
//!   and Decision ([`Systems::may_submit`], [`Systems::may_pay`], [`Systems::may_decide`]),
//!   which the broker's permissions cannot express (a portal must not submit provider-channel
//!   requests on the same exchange).
//!
//! ```toml
//! [qyzmet]
//! user = "qyzmet"
//!
//! [[system]]
//! user = "egov-portal"
//! kind = "portal"
//! services = ["doctor-appointment", "medical-licence"]   # all when omitted
//!
//! [[system]]
//! user = "akmola-phc-arm"
//! kind = "provider_workstation"
//! providers = ["051140000113"]                            # any when omitted
//!
//! [[system]]
//! user = "monitoring"
//! kind = "outcome_reader"
//! queues = [{ name = "monitoring.outcomes", bindings = ["#"] }]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::broker::{EXCHANGE_DEAD, EXCHANGE_WORK};
use crate::contract::{
    Channel, EXCHANGE_DECISIONS, EXCHANGE_FEEDBACK, EXCHANGE_OUTCOMES, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS,
    ServiceCode,
};

/// What kind of system a broker user belongs to; decides what it may publish or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A citizen portal (ПЭП/ЭҮП, elicense): submits portal-channel Requests.
    Portal,
    /// A provider's workstation (АРМ, ЖАО): submits provider-channel Requests.
    ProviderWorkstation,
    /// A public service centre (ЦОН/ХҚКО): submits centre-channel Requests.
    Centre,
    /// The payment gateway (ПШЭП): sends PaymentNotices.
    PaymentGateway,
    /// A provider staff application: sends Decisions.
    StaffApplication,
    /// Reads Outcomes from its own queues.
    OutcomeReader,
}

impl Kind {
    /// The channel a submitting system uses; `None` for systems that submit no Requests.
    pub fn channel(self) -> Option<Channel> {
        match self {
            Kind::Portal => Some(Channel::Portal),
            Kind::ProviderWorkstation => Some(Channel::Provider),
            Kind::Centre => Some(Channel::Centre),
            _ => None,
        }
    }
}

/// A queue an outcome reader reads, declared for it by the definitions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderQueue {
    /// Queue name (must not start with `qyzmet.`, qyzmet's own namespace).
    pub name: String,
    /// Routing keys on `qyzmet.outcomes` (`completed.*`, `#`).
    pub bindings: Vec<String>,
    /// At most this many Outcomes wait in the queue; beyond it the oldest are dropped (a
    /// policy, so it applies to a queue that exists already). Only for a reader that may fall
    /// behind for good, such as the demo's example reader, which nobody reads: without a bound
    /// it would keep every Outcome of every later run. Unbounded when omitted.
    #[serde(default)]
    pub max_length: Option<u64>,
}

/// One upstream system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Its broker user: the `user_id` its messages carry.
    pub user: String,
    /// What it is.
    pub kind: Kind,
    /// Services it may submit or decide (contract codes); every service when omitted.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Provider BINs a provider workstation or staff application acts for; any when omitted.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Its queues, for outcome readers.
    #[serde(default)]
    pub queues: Vec<ReaderQueue>,
    /// File holding its broker password, relative to the systems file (for the definitions);
    /// `<passwords dir>/<user>.password` when omitted.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl System {
    /// Whether this system may `act` (submit, decide) on `service` for `provider`.
    fn serves(&self, service: &str, provider: &str, act: &str) -> Result<(), NotAllowed> {
        if let Some(services) = &self.services
            && !services.iter().any(|x| x == service)
        {
            return Err(not_allowed("service", format!("{} may not {act} {service} requests", self.user)));
        }
        if let Some(providers) = &self.providers
            && !providers.iter().any(|p| p == provider)
        {
            return Err(not_allowed("provider", format!("{} does not act for this provider", self.user)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    user: String,
    #[serde(default)]
    password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    qyzmet: Own,
    #[serde(default, rename = "system")]
    systems: Vec<System>,
}

/// A systems file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("systems file {path}: {problem}")]
pub struct SystemsError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// The loaded systems file.
#[derive(Debug, Clone)]
pub struct Systems {
    own: Own,
    systems: Vec<System>,
    by_user: HashMap<String, usize>,
    dir: PathBuf,
}

/// Why a message's sender may not do what it did; recorded and shown to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct NotAllowed {
    /// The field of the message the refusal concerns (`user_id`, `channel`, `service`, `provider`).
    pub field: &'static str,
    /// Plain words.
    pub problem: String,
}

fn not_allowed(field: &'static str, problem: impl Into<String>) -> NotAllowed {
    NotAllowed { field, problem: problem.into() }
}

/// A broker user name qyzmet accepts in the file: letters, digits, `.`, `_`, `-`.
fn valid_user(u: &str) -> bool {
    !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Systems {
    /// Reads and checks a systems file.
    pub fn load(path: &Path) -> Result<Systems, SystemsError> {
        let err = |problem: String| SystemsError { path: path.display().to_string(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let file: File = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Systems::from_parts(file, dir).map_err(err)
    }

    /// Parses a systems file's text (relative paths are taken from `dir`).
    pub fn parse(text: &str, dir: &Path) -> Result<Systems, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        Systems::from_parts(file, dir.to_path_buf())
    }

    fn from_parts(file: File, dir: PathBuf) -> Result<Systems, String> {
        if !valid_user(&file.qyzmet.user) {
            return Err(format!("qyzmet.user {:?}: use letters, digits, '.', '_' or '-'", file.qyzmet.user));
        }
        let mut by_user = HashMap::new();
        for (i, s) in file.systems.iter().enumerate() {
            let at = format!("system {:?}", s.user);
            if !valid_user(&s.user) {
                return Err(format!("{at}: user names use letters, digits, '.', '_' or '-'"));
            }
            if s.user == file.qyzmet.user || by_user.insert(s.user.clone(), i).is_some() {
                return Err(format!("{at}: the user appears twice"));
            }
            for svc in s.services.iter().flatten() {
                if ServiceCode::parse(svc).is_none() {
                    return Err(format!("{at}: unknown service {svc:?}"));
                }
            }
            for bin in s.providers.iter().flatten() {
                crate::ident::check_bin(bin).map_err(|e| format!("{at}: provider {bin}: {e}"))?;
            }
            match s.kind {
                Kind::OutcomeReader if s.queues.is_empty() => {
                    return Err(format!("{at}: an outcome reader needs at least one queue"));
                }
                Kind::OutcomeReader => {
                    for q in &s.queues {
                        if q.name.starts_with("qyzmet.") || q.name.starts_with("amq.") || q.name.is_empty() {
                            return Err(format!("{at}: queue {:?} is in a reserved namespace", q.name));
                        }
                        if q.bindings.is_empty() {
                            return Err(format!("{at}: queue {:?} has no binding", q.name));
                        }
                    }
                }
                _ if !s.queues.is_empty() => return Err(format!("{at}: only outcome readers have queues")),
                _ => {}
            }
        }
        Ok(Systems { own: file.qyzmet, systems: file.systems, by_user, dir })
    }

    /// qyzmet's own broker user.
    pub fn own_user(&self) -> &str {
        &self.own.user
    }

    /// Every system of the file.
    pub fn systems(&self) -> &[System] {
        &self.systems
    }

    /// The system behind a broker user.
    pub fn by_user(&self, user: &str) -> Option<&System> {
        self.by_user.get(user).map(|&i| &self.systems[i])
    }

    fn sender(&self, user_id: Option<&str>) -> Result<&System, NotAllowed> {
        let user = user_id.ok_or_else(|| {
            not_allowed("user_id", "the message carries no user_id property; publishers set it to their broker user")
        })?;
        self.by_user(user).ok_or_else(|| not_allowed("user_id", format!("{user} is not in the systems file")))
    }

    /// Whether the sender may submit a Request of this service on this channel for this provider.
    pub fn may_submit(
        &self,
        user_id: Option<&str>,
        channel: Channel,
        service: ServiceCode,
        provider: &str,
    ) -> Result<(), NotAllowed> {
        let s = self.sender(user_id)?;
        match s.kind.channel() {
            None => return Err(not_allowed("user_id", format!("{} ({:?}) submits no requests", s.user, s.kind))),
            Some(c) if c != channel => {
                return Err(not_allowed(
                    "channel",
                    format!("{} may submit {} requests only, not {channel}", s.user, c.as_str()),
                ));
            }
            Some(_) => {}
        }
        s.serves(service.as_str(), provider, "submit")
    }

    /// Whether the sender may send PaymentNotices (the payment gateway only).
    pub fn may_pay(&self, user_id: Option<&str>) -> Result<(), NotAllowed> {
        let s = self.sender(user_id)?;
        match s.kind {
            Kind::PaymentGateway => Ok(()),
            other => Err(not_allowed("user_id", format!("{} ({other:?}) is not the payment gateway", s.user))),
        }
    }

    /// Whether the sender may send a Decision on this service for this provider.
    pub fn may_decide(&self, user_id: Option<&str>, service: &str, provider: &str) -> Result<(), NotAllowed> {
        let s = self.sender(user_id)?;
        if s.kind != Kind::StaffApplication {
            return Err(not_allowed("user_id", format!("{} ({:?}) is not a staff application", s.user, s.kind)));
        }
        s.serves(service, provider, "decide")
    }

    /// Where a system's (or qyzmet's, `None`) password is read from.
    pub fn password_path(&self, user: Option<&System>, passwords_dir: &Path) -> PathBuf {
        let (name, file) = match user {
            Some(s) => (&s.user, &s.password_file),
            None => (&self.own.user, &self.own.password_file),
        };
        match file {
            Some(f) if f.is_absolute() => f.clone(),
            Some(f) => self.dir.join(f),
            None => passwords_dir.join(format!("{name}.password")),
        }
    }

    /// RabbitMQ definitions for virtual host `vhost`: qyzmet's exchanges, the readers' queues,
    /// bindings and length bounds (policies), every user with its password hash
    /// (`password(user)`), permissions and topic permissions. Import them with `rabbitmqctl
    /// import_definitions FILE` (or through the management API's `POST /api/definitions`).
    pub fn definitions(&self, vhost: &str, password: &dyn Fn(&str) -> Result<String, String>) -> Result<Value, String> {
        let anchored =
            |names: &[String]| format!("^({})$", names.iter().map(|n| regex_escape(n)).collect::<Vec<_>>().join("|"));
        let services_of = |s: &System| -> Vec<String> {
            match &s.services {
                Some(list) => list.clone(),
                None => ServiceCode::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
            }
        };
        let mut users = Vec::new();
        let mut permissions = Vec::new();
        let mut topic = Vec::new();
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        let mut policies = Vec::new();
        let mut user = |name: &str| -> Result<(), String> {
            let salt = random_salt()?;
            users.push(json!({
                "name": name,
                "password_hash": rabbit_password_hash(&password(name)?, salt),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ""
            }));
            Ok(())
        };
        user(&self.own.user)?;
        permissions.push(json!({ "user": self.own.user, "vhost": vhost,
            "configure": ".*", "write": ".*", "read": ".*" }));
        for s in &self.systems {
            user(&s.user)?;
            let (exchange, keys): (&str, Vec<String>) = match s.kind {
                Kind::Portal | Kind::ProviderWorkstation | Kind::Centre => {
                    // Requests, and its applicants' questionnaire answers (contract v1.1, P-51).
                    let services = services_of(s);
                    let answers: Vec<String> =
                        services.iter().map(|x| crate::contract::questionnaire_routing_key(x)).collect();
                    permissions.push(json!({ "user": s.user, "vhost": vhost, "configure": "^$",
                        "write": anchored(&[EXCHANGE_REQUESTS.to_owned(), EXCHANGE_FEEDBACK.to_owned()]), "read": "^$" }));
                    topic.push(json!({ "user": s.user, "vhost": vhost, "exchange": EXCHANGE_REQUESTS,
                        "write": anchored(&services), "read": "^$" }));
                    topic.push(json!({ "user": s.user, "vhost": vhost, "exchange": EXCHANGE_FEEDBACK,
                        "write": anchored(&answers), "read": "^$" }));
                    continue;
                }
                Kind::PaymentGateway => (EXCHANGE_PAYMENTS, vec![crate::contract::ROUTING_KEY_PAYMENT.into()]),
                Kind::StaffApplication => (
                    EXCHANGE_DECISIONS,
                    services_of(s).iter().map(|x| crate::contract::decision_routing_key(x)).collect(),
                ),
                Kind::OutcomeReader => {
                    let names: Vec<String> = s.queues.iter().map(|q| q.name.clone()).collect();
                    permissions.push(json!({ "user": s.user, "vhost": vhost,
                        "configure": "^$", "write": "^$", "read": anchored(&names) }));
                    for q in &s.queues {
                        if let Some(max) = q.max_length {
                            policies.push(json!({ "vhost": vhost, "name": format!("{}-bound", q.name),
                                "pattern": anchored(std::slice::from_ref(&q.name)), "apply-to": "queues",
                                "priority": 0, "definition": { "max-length": max } }));
                        }
                        queues.push(json!({ "name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
                            "arguments": { "x-queue-type": "quorum" } }));
                        for key in &q.bindings {
                            bindings.push(json!({ "source": EXCHANGE_OUTCOMES, "vhost": vhost, "destination": q.name,
                                "destination_type": "queue", "routing_key": key, "arguments": {} }));
                        }
                    }
                    continue;
                }
            };
            permissions.push(json!({ "user": s.user, "vhost": vhost,
                "configure": "^$", "write": anchored(&[exchange.to_owned()]), "read": "^$" }));
            topic.push(json!({ "user": s.user, "vhost": vhost, "exchange": exchange,
                "write": anchored(&keys), "read": "^$" }));
        }
        let exchanges: Vec<Value> = [
            (EXCHANGE_REQUESTS, "topic"),
            (EXCHANGE_PAYMENTS, "topic"),
            (EXCHANGE_DECISIONS, "topic"),
            (EXCHANGE_OUTCOMES, "topic"),
            (EXCHANGE_FEEDBACK, "topic"),
            (EXCHANGE_WORK, "direct"),
            (EXCHANGE_DEAD, "fanout"),
        ]
        .iter()
        .map(|(name, kind)| {
            json!({ "name": name, "vhost": vhost, "type": kind, "durable": true, "auto_delete": false,
                "internal": false, "arguments": {} })
        })
        .collect();
        Ok(json!({
            "users": users,
            "vhosts": [{ "name": vhost }],
            "permissions": permissions,
            "topic_permissions": topic,
            "exchanges": exchanges,
            "queues": queues,
            "bindings": bindings,
            "policies": policies,
        }))
    }

    /// One line per system: what it may do (for `qyzmet systems check`).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("{:<28} qyzmet itself: configure, write and read everything", self.own.user)];
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in &self.systems {
            *counts.entry(format!("{:?}", s.kind)).or_default() += 1;
            let services = s.services.as_ref().map(|l| l.join(",")).unwrap_or_else(|| "all services".into());
            let providers = s.providers.as_ref().map(|l| l.len().to_string()).unwrap_or_else(|| "any".into());
            let what = match s.kind {
                Kind::OutcomeReader => {
                    format!("reads {}", s.queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>().join(", "))
                }
                Kind::PaymentGateway => "writes qyzmet.payments (payment.confirmed)".into(),
                Kind::StaffApplication => format!("writes qyzmet.decisions: {services}; providers {providers}"),
                k => format!(
                    "writes qyzmet.requests: {} channel, {services}; providers {providers}",
                    k.channel().map(Channel::as_str).unwrap_or("-")
                ),
            };
            lines.push(format!("{:<28} {what}", s.user));
        }
        lines.push(format!("{} systems: {counts:?}", self.systems.len()));
        lines
    }
}

/// A regular expression matching `s` literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn random_salt() -> Result<[u8; 4], String> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 4];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| "no randomness for a password salt".to_owned())?;
    Ok(salt)
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64 of the 4-byte salt followed by
/// SHA-256(salt ‖ password).
pub fn rabbit_password_hash(password: &str, salt: [u8; 4]) -> String {
    use base64::Engine as _;
    let mut input = salt.to_vec();
    input.extend_from_slice(password.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut out = salt.to_vec();
    out.extend_from_slice(digest.as_ref());
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// A random password for a new system (48 characters of base64url).
pub fn random_password() -> Result<String, String> {
    use base64::Engine as _;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 36];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness for a password".to_owned())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [qyzmet]
        user = "qyzmet"

        [[system]]
        user = "portal"
        kind = "portal"
        services = ["doctor-appointment"]

        [[system]]
        user = "arm"
        kind = "provider_workstation"
        providers = ["051140000113"]

        [[system]]
        user = "pshep"
        kind = "payment_gateway"

        [[system]]
        user = "staff"
        kind = "staff_application"
        services = ["medical-licence"]

        [[system]]
        user = "monitor"
        kind = "outcome_reader"
        queues = [{ name = "monitor.outcomes", bindings = ["completed.*", "refused.*"] }]
    "#;

    fn systems() -> Systems {
        Systems::parse(FILE, Path::new("/etc/qyzmet")).expect("valid")
    }

    #[test]
    fn a_portal_may_submit_only_portal_requests_of_its_services() {
        let s = systems();
        let svc = ServiceCode::DoctorAppointment;
        assert!(s.may_submit(Some("portal"), Channel::Portal, svc, "051140000113").is_ok());
        assert_eq!(s.may_submit(Some("portal"), Channel::Provider, svc, "051140000113").unwrap_err().field, "channel");
        let other = s.may_submit(Some("portal"), Channel::Portal, ServiceCode::MedicalLicence, "011040000330");
        assert_eq!(other.unwrap_err().field, "service");
        assert_eq!(s.may_submit(None, Channel::Portal, svc, "051140000113").unwrap_err().field, "user_id");
        assert_eq!(s.may_submit(Some("pshep"), Channel::Portal, svc, "051140000113").unwrap_err().field, "user_id");
    }

    #[test]
    fn a_workstation_acts_for_its_providers_only() {
        let s = systems();
        let svc = ServiceCode::DoctorAppointment;
        assert!(s.may_submit(Some("arm"), Channel::Provider, svc, "051140000113").is_ok());
        assert_eq!(s.may_submit(Some("arm"), Channel::Provider, svc, "061240000228").unwrap_err().field, "provider");
    }

    #[test]
    fn only_the_gateway_pays_and_only_staff_applications_decide() {
        let s = systems();
        assert!(s.may_pay(Some("pshep")).is_ok());
        assert!(s.may_pay(Some("portal")).is_err());
        assert!(s.may_pay(Some("stranger")).is_err());
        assert!(s.may_decide(Some("staff"), "medical-licence", "011040000330").is_ok());
        assert_eq!(s.may_decide(Some("staff"), "archive-certificate", "x").unwrap_err().field, "service");
        assert!(s.may_decide(Some("portal"), "medical-licence", "x").is_err());
    }

    #[test]
    fn definitions_give_each_system_only_its_rights() {
        let d = systems().definitions("/", &|u| Ok(format!("pw-{u}"))).expect("definitions");
        let perm = |user: &str| {
            d["permissions"].as_array().expect("list").iter().find(|p| p["user"] == user).cloned().expect("permission")
        };
        assert_eq!(perm("qyzmet")["configure"], ".*");
        assert_eq!(perm("portal")["configure"], "^$");
        assert_eq!(perm("portal")["write"], "^(qyzmet\\.requests|qyzmet\\.feedback)$");
        assert_eq!(perm("portal")["read"], "^$");
        assert_eq!(perm("monitor")["read"], "^(monitor\\.outcomes)$");
        assert_eq!(perm("monitor")["write"], "^$");
        let topic = |user: &str| {
            d["topic_permissions"].as_array().expect("list").iter().find(|p| p["user"] == user).cloned().expect("topic")
        };
        assert_eq!(topic("portal")["write"], "^(doctor\\-appointment)$");
        let feedback = d["topic_permissions"]
            .as_array()
            .expect("list")
            .iter()
            .find(|p| p["user"] == "portal" && p["exchange"] == "qyzmet.feedback")
            .cloned()
            .expect("the portal may send its applicants' questionnaire answers");
        assert_eq!(feedback["write"], "^(questionnaire\\.doctor\\-appointment)$");
        assert_eq!(topic("pshep")["write"], "^(payment\\.confirmed)$");
        assert_eq!(topic("staff")["write"], "^(decision\\.medical\\-licence)$");
        assert_eq!(d["bindings"].as_array().expect("list").len(), 2);
        assert_eq!(d["users"].as_array().expect("list").len(), 6);
    }

    #[test]
    fn a_reader_queue_with_a_length_bound_gets_a_policy_and_others_none() {
        let unbounded = systems().definitions("/", &|u| Ok(format!("pw-{u}"))).expect("definitions");
        assert_eq!(unbounded["policies"], json!([]), "no bound unless the file asks for one");
        let bounded =
            FILE.replace(r#"bindings = ["completed.*", "refused.*"] }"#, r##"bindings = ["#"], max_length = 500 }"##);
        let d = Systems::parse(&bounded, Path::new("/etc/qyzmet"))
            .expect("valid")
            .definitions("/", &|u| Ok(format!("pw-{u}")))
            .expect("definitions");
        let policy = &d["policies"][0];
        assert_eq!(policy["pattern"], "^(monitor\\.outcomes)$");
        assert_eq!(policy["apply-to"], "queues");
        assert_eq!(policy["definition"], json!({ "max-length": 500 }));
    }

    #[test]
    fn password_hashes_follow_rabbitmq_sha256() {
        // RabbitMQ's documented example: salt 908DC60A, password "test12".
        assert_eq!(
            rabbit_password_hash("test12", [0x90, 0x8D, 0xC6, 0x0A]),
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
        );
    }

    #[test]
    fn mistakes_in_the_file_are_refused_with_the_system_named() {
        let bad = FILE.replace("\"doctor-appointment\"]", "\"fishing\"]");
        assert!(Systems::parse(&bad, Path::new("/")).unwrap_err().contains("fishing"));
        let twice = format!("{FILE}\n[[system]]\nuser = \"portal\"\nkind = \"centre\"\n");
        assert!(Systems::parse(&twice, Path::new("/")).unwrap_err().contains("twice"));
        let reserved = FILE.replace("monitor.outcomes", "qyzmet.sneaky");
        assert!(Systems::parse(&reserved, Path::new("/")).unwrap_err().contains("reserved"));
    }
}
