//! The AsyncAPI document of the external contract (docs/asyncapi.yaml) against the code: its
//! exchanges, routing keys and codes are the library's, every message the code builds or
//! accepts validates against its payload schema (JSON Schema draft-07, read from
//! `components.schemas`), and messages the code refuses do not. `scripts/check-asyncapi.sh`
//! checks the document against the AsyncAPI 3.0 specification itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{Duration, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use qyzmet::broker::pool_name;
use qyzmet::contract::{
    Channel, Decision, EXCHANGE_DECISIONS, EXCHANGE_FEEDBACK, EXCHANGE_OUTCOMES, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS,
    Envelope, PaymentNotice, QuestionnaireAnswer, Region, Request, ServiceCode, Status,
};
use qyzmet::pipeline::transition::{Finale, Head, Said, common_reason, notice, outcome_message, regulation_reason};
use qyzmet::regulations::{PoolName, REFUSAL_CODES, REFUSAL_KINDS};
use qyzmet::systems::Systems;

use crate::common::*;

const DOCUMENT: &str = "docs/asyncapi.yaml";
const LIMIT: usize = 262_144;

/// The document as JSON.
fn document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DOCUMENT);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{DOCUMENT} is not YAML: {e}"))
}

/// Validators of the payload schemas in `components.schemas`, as JSON Schema draft-07.
struct Schemas {
    doc: Value,
    compiled: BTreeMap<String, jsonschema::Validator>,
}

impl Schemas {
    fn load() -> Schemas {
        Schemas { doc: document(), compiled: BTreeMap::new() }
    }

    /// The errors of `instance` against `components.schemas.<name>` (empty when valid).
    fn errors(&mut self, name: &str, instance: &Value) -> Vec<String> {
        let doc = &self.doc;
        let validator = self.compiled.entry(name.to_owned()).or_insert_with(|| {
            assert!(doc["components"]["schemas"].get(name).is_some(), "{DOCUMENT} has no components.schemas.{name}");
            // The schema refers to its neighbours as `#/components/schemas/…`: the root carries
            // `components` (an unknown keyword, so only a place `$ref` resolves into).
            let root = json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "allOf": [{ "$ref": format!("#/components/schemas/{name}") }],
                "components": { "schemas": doc["components"]["schemas"] },
            });
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft7)
                .should_validate_formats(true)
                .build(&root)
                .unwrap_or_else(|e| panic!("components.schemas.{name} is not a draft-07 schema: {e}"))
        });
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
    }

    fn assert_valid(&mut self, name: &str, instance: &Value, what: &str) {
        let errors = self.errors(name, instance);
        assert!(errors.is_empty(), "{what} does not validate against {name}: {errors:#?}\n{instance:#}");
    }

    fn assert_invalid(&mut self, name: &str, instance: &Value, what: &str) {
        assert!(
            !self.errors(name, instance).is_empty(),
            "{what} validates against {name}, but must not:\n{instance:#}"
        );
    }

    /// A schema of the document (after one `$ref`), for reading its keywords.
    fn schema(&self, name: &str) -> &Value {
        &self.doc["components"]["schemas"][name]
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")).to_owned())
        .collect()
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

/// The enum of a schema that is `oneOf: [{ enum }, { type: null }]` or a plain `enum`.
fn enum_of(schema: &Value) -> BTreeSet<String> {
    match schema.get("enum") {
        Some(e) => strings(e),
        None => strings(
            schema["oneOf"]
                .as_array()
                .and_then(|alts| alts.iter().find_map(|a| a.get("enum")))
                .unwrap_or_else(|| panic!("no enum in {schema}")),
        ),
    }
}

/// The routing keys an anchored alternation `^(a|b\.c)$` of the definitions allows.
fn keys_of_pattern(pattern: &str) -> BTreeSet<String> {
    let inner = pattern.strip_prefix("^(").and_then(|p| p.strip_suffix(")$")).expect("an anchored alternation");
    inner
        .split('|')
        .map(|alt| {
            let mut out = String::new();
            let mut chars = alt.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().expect("escaped character") } else { c });
            }
            out
        })
        .collect()
}

/// The routing keys a channel's address stands for, its parameters expanded from their enums.
fn addresses(doc: &Value, channel: &Value) -> BTreeSet<String> {
    let address = channel["address"].as_str().expect("address");
    let Some(params) = channel.get("parameters").and_then(Value::as_object) else {
        return set([address]);
    };
    assert_eq!(params.len(), 1, "one parameter per address: {address}");
    let (name, param) = params.iter().next().expect("a parameter");
    let param = resolve(doc, param);
    let values = param.get("enum").map(strings).unwrap_or_else(|| panic!("parameter {name} has no enum"));
    values.iter().map(|v| address.replace(&format!("{{{name}}}"), v)).collect()
}

/// Follows one local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc.pointer(r.strip_prefix('#').expect("a local $ref")).unwrap_or_else(|| panic!("{r} is missing")),
        None => v,
    }
}

/// The channels of the document by exchange: (address, channel).
fn channels_by_exchange(doc: &Value) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut out: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (id, ch) in doc["channels"].as_object().expect("channels") {
        let amqp = &ch["bindings"]["amqp"];
        assert_eq!(amqp["is"], "routingKey", "channel {id}: is routingKey");
        let exchange = amqp["exchange"]["name"].as_str().unwrap_or_else(|| panic!("channel {id}: exchange name"));
        out.entry(exchange.to_owned()).or_default().push((id.clone(), ch.clone()));
    }
    out
}

/// RabbitMQ definitions the library derives for one system of each kind.
fn definitions() -> Value {
    let text = r##"
        [qyzmet]
        user = "qyzmet"

        [[system]]
        user = "portal"
        kind = "portal"

        [[system]]
        user = "gateway"
        kind = "payment_gateway"

        [[system]]
        user = "staff"
        kind = "staff_application"

        [[system]]
        user = "reader"
        kind = "outcome_reader"
        queues = [{ name = "reader.outcomes", bindings = ["#"] }]
    "##;
    let systems = Systems::parse(text, std::path::Path::new(".")).expect("systems file");
    systems.definitions("/", &|_| Ok("password".to_owned())).expect("definitions")
}

/// The routing keys `user` may write on `exchange`.
fn topic_write_keys(defs: &Value, user: &str, exchange: &str) -> BTreeSet<String> {
    let perm = defs["topic_permissions"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["user"] == user && p["exchange"] == exchange))
        .unwrap_or_else(|| panic!("no topic permission for {user} on {exchange}"));
    keys_of_pattern(perm["write"].as_str().expect("write"))
}

#[test]
fn document_is_asyncapi_3_0_0_of_contract_version_1_1_with_amqp_and_amqps_servers() {
    let doc = document();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "qyzmet");
    assert_eq!(doc["info"]["version"], "1.1", "info.version is the contract version (1.1 only adds to 1)");
    let protocols: BTreeSet<String> = doc["servers"]
        .as_object()
        .expect("servers")
        .values()
        .map(|s| s["protocol"].as_str().expect("protocol").to_owned())
        .collect();
    assert_eq!(protocols, set(["amqp", "amqps"]));
}

#[test]
fn exchanges_and_routing_keys_of_the_document_are_the_librarys() {
    let doc = document();
    let defs = definitions();
    let by_exchange = channels_by_exchange(&doc);
    let contract_exchanges =
        set([EXCHANGE_REQUESTS, EXCHANGE_PAYMENTS, EXCHANGE_DECISIONS, EXCHANGE_OUTCOMES, EXCHANGE_FEEDBACK]);
    assert_eq!(by_exchange.keys().cloned().collect::<BTreeSet<_>>(), contract_exchanges, "exchanges");

    // Type and durability as qyzmet declares them (the definitions list the same exchanges).
    for (exchange, channels) in &by_exchange {
        let declared = defs["exchanges"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == exchange.as_str()))
            .unwrap_or_else(|| panic!("{exchange} is not declared by the library"));
        for (id, ch) in channels {
            let ex = &ch["bindings"]["amqp"]["exchange"];
            assert_eq!(ex["type"], declared["type"], "channel {id}: exchange type");
            assert_eq!(ex["durable"], declared["durable"], "channel {id}: durable");
            assert_eq!(ex["autoDelete"], declared["auto_delete"], "channel {id}: autoDelete");
        }
    }

    // Inbound: the routing keys the broker permissions let each kind of system write.
    for (user, exchange) in [
        ("portal", EXCHANGE_REQUESTS),
        ("portal", EXCHANGE_FEEDBACK),
        ("gateway", EXCHANGE_PAYMENTS),
        ("staff", EXCHANGE_DECISIONS),
    ] {
        let permitted_keys = topic_write_keys(&defs, user, exchange);
        let documented: BTreeSet<String> =
            by_exchange[exchange].iter().flat_map(|(_, ch)| addresses(&doc, ch)).collect();
        assert_eq!(documented, permitted_keys, "routing keys on {exchange}");
    }
    let services = set(ServiceCode::ALL.iter().map(|s| s.as_str()));
    assert_eq!(
        topic_write_keys(&defs, "portal", EXCHANGE_REQUESTS),
        services,
        "a Request's routing key is its service code"
    );

    // Outbound: the routing keys qyzmet's Outcome messages carry, for every status.
    let regs = regulations();
    let outcome_channels = &by_exchange[EXCHANGE_OUTCOMES];
    let statuses = [Status::Registered, Status::InProgress, Status::Completed, Status::Refused];
    let documented_prefixes: BTreeSet<String> = outcome_channels
        .iter()
        .map(|(_, ch)| ch["address"].as_str().and_then(|a| a.split_once('.')).expect("<prefix>.<service>").0.to_owned())
        .collect();
    assert_eq!(documented_prefixes, statuses.iter().map(|s| s.routing_prefix().to_owned()).collect());
    for service in ServiceCode::ALL {
        for status in statuses {
            let head = head_for(service.as_str(), "aktobe", "portal", true);
            let reason = (status == Status::Refused).then(|| common_reason(&regs, "invalid_request", "x"));
            let said = Said { reason, ..Said::default() };
            let (_, message) = outcome_message(&head, status, Some("intake"), said, Utc::now(), "m".into());
            assert_eq!(message.exchange, EXCHANGE_OUTCOMES);
            let documented = outcome_channels
                .iter()
                .find(|(_, ch)| {
                    ch["address"].as_str().is_some_and(|a| a.starts_with(&format!("{}.", status.routing_prefix())))
                })
                .map(|(_, ch)| ch)
                .expect("a channel for the status");
            let address = documented["address"].as_str().expect("address");
            let (name, param) =
                documented["parameters"].as_object().and_then(|p| p.iter().next()).expect("a parameter");
            let param = resolve(&doc, param);
            let expanded = address.replace(&format!("{{{name}}}"), service.as_str());
            assert_eq!(message.routing_key, expanded, "{status:?} of {service}");
            if let Some(values) = param.get("enum") {
                assert_eq!(strings(values), services, "parameter {name}");
            }
        }
    }
    // A refusal of a request that named no usable service goes out as refused.unknown.
    let (_, odd) = outcome_message(
        &head_for("Fishing Licence!", "", "", false),
        Status::Refused,
        Some("intake"),
        Said { reason: Some(common_reason(&regs, "invalid_request", "service")), ..Said::default() },
        Utc::now(),
        "m".into(),
    );
    assert_eq!(odd.routing_key, "refused.unknown");

    // The upstream systems send on the inbound channels and receive on the outbound ones.
    for (id, op) in doc["operations"].as_object().expect("operations") {
        let channel = resolve(&doc, &op["channel"]);
        let exchange = channel["bindings"]["amqp"]["exchange"]["name"].as_str().expect("exchange");
        let expected = if exchange == EXCHANGE_OUTCOMES { "receive" } else { "send" };
        assert_eq!(op["action"], expected, "operation {id} on {exchange}");
        assert_eq!(op["bindings"]["amqp"]["deliveryMode"], 2, "operation {id}: persistent");
    }
}

#[test]
fn codes_in_the_schemas_are_the_librarys() {
    let s = Schemas::load();
    assert_eq!(enum_of(s.schema("ServiceCode")), set(ServiceCode::ALL.iter().map(|c| c.as_str())));
    assert_eq!(enum_of(s.schema("Region")), set(Region::ALL.iter().map(|c| c.as_str())));
    assert_eq!(enum_of(s.schema("Channel")), set(Channel::ALL.iter().map(|c| c.as_str())));
    let outcome = &s.schema("Outcome")["properties"];
    let statuses = [Status::Registered, Status::InProgress, Status::Completed, Status::Refused];
    assert_eq!(enum_of(&outcome["status"]), statuses.iter().map(|s| s.as_str().to_owned()).collect());
    let pools = [PoolName::Intake, PoolName::Registry, PoolName::Payment, PoolName::Review, PoolName::Result];
    assert_eq!(enum_of(&outcome["step"]), set(pools.iter().map(|p| pool_name(*p))));
    let reason = &s.schema("RefusalReason")["properties"];
    assert_eq!(enum_of(&reason["kind"]), set(REFUSAL_KINDS.iter().copied()));
    assert_eq!(enum_of(&reason["code"]), set(REFUSAL_CODES.iter().copied()));
    assert_eq!(s.schema("Signature")["properties"]["format"]["const"], qyzmet::signature::FORMAT);
    let parameter = &s.doc["components"]["parameters"]["service"];
    assert_eq!(strings(&parameter["enum"]), set(ServiceCode::ALL.iter().map(|c| c.as_str())));
}

/// What every Outcome of a request repeats, as intake would have it.
fn head_for(service: &str, region: &str, channel: &str, registered: bool) -> Head {
    Head {
        request_id: Uuid::new_v4(),
        request_number: registered.then(|| "S4-AKT-20261123-0000417".to_owned()),
        service: service.to_owned(),
        region: region.to_owned(),
        channel: channel.to_owned(),
        deadline: registered.then(|| Utc::now() + Duration::days(21)),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        received_at: Some(Utc::now()),
        finale: Finale::default(),
    }
}

fn envelope(v: &Value) -> Envelope {
    Envelope::parse(v.to_string().as_bytes(), LIMIT).unwrap_or_else(|e| panic!("{e}: {v:#}"))
}

/// The example Request of contract.md, signature and all (but for the representative).
fn contract_request() -> Value {
    json!({
        "request_id": "5f0c6a0e-3c1e-4a51-9b8e-1d2f0c9e7a11",
        "service": "medical-licence",
        "region": "aktobe",
        "channel": "portal",
        "submitted_at": "2026-11-23T10:15:00+05:00",
        "applicant": { "iin": "840317000029" },
        // contract.md's 900101300123 has a bad check digit: the demo representative instead.
        "representative": { "iin": who::REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000417" },
        "provider": "081140000436",
        "form": { "kind": "issue", "activity": "general practice" },
        "attachments": [{ "name": "diploma.pdf", "media_type": "application/pdf", "size": 48213,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "uri": "https://files.example/1" }],
        "signature": { "format": "jcs-x509", "algorithm": "ES256",
            "certificate_chain": ["MIIB", "MIIC"], "value": "MEUC" }
    })
}

/// Signed Requests as the demo and the tests publish them, one per service and channel kind.
fn sample_requests() -> Vec<Value> {
    let mut centre = licence_request("centre", "duplicate");
    centre["representative"] = json!({ "iin": who::REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000417" });
    let mut out = vec![
        contract_request(),
        licence_request("portal", "issue"),
        licence_request("provider", "reissue"),
        centre,
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({})),
        request("phc-attachment", "astana", "provider", json!({ "iin": who::UNATTACHED }), who::ASTANA_PHC, json!({})),
        request(
            "home-doctor-call",
            "astana",
            "portal",
            json!({ "iin": who::CITIZEN_ASTANA }),
            who::ASTANA_PHC,
            json!({ "note": "demo" }),
        ),
        request(
            "archive-certificate",
            "astana",
            "portal",
            json!({ "bin": who::CLINIC }),
            who::ASTANA_ARCHIVES,
            json!({ "note": "demo" }),
        ),
    ];
    for r in out.iter_mut().skip(1) {
        sign_as(&proper_signer(r), r);
    }
    out
}

/// A signed refusal by staff of the Aktobe health department.
fn sample_decision(verdict: &str) -> Value {
    let mut d = decision(Uuid::new_v4(), verdict);
    sign_as(&format!("staff-{}", who::AKTOBE_HEALTH), &mut d);
    d
}

#[test]
fn requests_payment_notices_and_decisions_the_code_accepts_validate_against_their_schemas() {
    let mut s = Schemas::load();
    let regs = regulations();
    for r in sample_requests() {
        if let Err(e) = intake_check(&regs, &r) {
            panic!("the code refuses {r:#}: {e}");
        }
        s.assert_valid("Request", &r, &format!("Request {} {}", r["service"], r["channel"]));
    }
    for p in [
        payment(Uuid::new_v4(), "PSHEP-000981"),
        json!({ "payment_id": "PSHEP-2", "request_id": Uuid::new_v4().to_string(), "amount": "0.5",
                "currency": "KZT", "paid_at": "2026-11-23T10:14:12Z", "payer": { "iin": who::CITIZEN } }),
        json!({ "payment_id": "PSHEP-3", "request_id": Uuid::new_v4().to_string(), "amount": "000999999999999.99",
                "currency": "KZT", "paid_at": "2026-11-23T10:14:12+05:00", "payer": { "bin": who::CLINIC } }),
    ] {
        PaymentNotice::from_envelope(&envelope(&p)).unwrap_or_else(|e| panic!("the code refuses {p:#}: {e}"));
        s.assert_valid("PaymentNotice", &p, "PaymentNotice");
    }
    for d in [sample_decision("approve"), sample_decision("refuse")] {
        Decision::from_envelope(&envelope(&d)).unwrap_or_else(|e| panic!("the code refuses {d:#}: {e}"));
        s.assert_valid("Decision", &d, &format!("Decision {}", d["decision"]));
    }
}

#[test]
fn message_examples_of_the_document_are_accepted_by_the_code_and_match_their_schemas() {
    let mut s = Schemas::load();
    let regs = regulations();
    let messages = s.doc["components"]["messages"].as_object().expect("messages").clone();
    assert_eq!(
        messages.keys().cloned().collect::<BTreeSet<_>>(),
        set(["Decision", "Outcome", "PaymentNotice", "QuestionnaireAnswer", "Request"]),
        "the five messages of the contract (QuestionnaireAnswer since 1.1)"
    );
    for (name, message) in &messages {
        let payload = message["payload"]["$ref"].as_str().expect("payload $ref");
        assert_eq!(payload, format!("#/components/schemas/{name}"), "payload schema of {name}");
        let examples = message["examples"].as_array().expect("examples");
        assert!(!examples.is_empty(), "{name} has examples");
        for example in examples {
            let body = &example["payload"];
            let what = format!("example {} of {name}", example["name"]);
            s.assert_valid(name, body, &what);
            let accepted = match name.as_str() {
                "Request" => intake_check(&regs, body),
                "PaymentNotice" => PaymentNotice::from_envelope(&envelope(body)).map(drop).map_err(|e| e.to_string()),
                "Decision" => Decision::from_envelope(&envelope(body)).map(drop).map_err(|e| e.to_string()),
                "QuestionnaireAnswer" => {
                    QuestionnaireAnswer::from_envelope(&envelope(body)).map(drop).map_err(|e| e.to_string())
                }
                _ => serde_json::from_value::<qyzmet::contract::Outcome>(body.clone())
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = accepted {
                panic!("the code refuses {what}: {e}");
            }
        }
    }
}

#[test]
fn unknown_members_are_accepted_by_the_schemas_as_by_the_code() {
    let mut s = Schemas::load();
    let mut r = contract_request();
    r["x_portal_session"] = json!("abc");
    r["applicant"]["x_note"] = json!(1);
    Request::from_envelope(&envelope(&r)).expect("the code accepts unknown members");
    s.assert_valid("Request", &r, "a Request with unknown members");
    let mut p = payment(Uuid::new_v4(), "PSHEP-1");
    p["bank"] = json!("KASPI");
    PaymentNotice::from_envelope(&envelope(&p)).expect("the code accepts unknown members");
    s.assert_valid("PaymentNotice", &p, "a PaymentNotice with unknown members");
}

#[test]
fn outcomes_of_every_status_built_by_the_library_validate_against_the_outcome_schema() {
    let mut s = Schemas::load();
    let regs = regulations();
    let route = regs.route(ServiceCode::MedicalLicence, Region::Aktobe, Channel::Portal).expect("S4 route");
    let head = head_for("medical-licence", "aktobe", "portal", true).on(&route);
    let mut document = Map::new();
    document.insert("kind".into(), json!("medical-licence"));
    document.insert("number".into(), json!("LIC-2026-000001"));
    document.insert("issued_at".into(), json!(qyzmet::contract::now_local()));
    document.insert("content".into(), json!({ "title": "Лицензия", "provider": who::AKTOBE_HEALTH }));
    let signature = holder(&format!("staff-{}", who::AKTOBE_HEALTH)).signature_for(&document).expect("sign");
    document.insert("signature".into(), signature);
    let cases = [
        (Status::Registered, Some("registry"), None, None, format!("{}:0:registered", head.request_id)),
        (Status::InProgress, Some("review"), None, None, format!("{}:3:in_progress", head.request_id)),
        (Status::Completed, Some("result"), None, Some(Value::Object(document)), format!("{}:final", head.request_id)),
        (
            Status::Refused,
            Some("payment"),
            Some(regulation_reason(&route, "L2", None)),
            None,
            format!("{}:final", head.request_id),
        ),
    ];
    let message_id = s.schema("OutcomeHeaders")["properties"]["message_id"].clone();
    for (index, (status, step, reason, document, id)) in cases.into_iter().enumerate() {
        // Contract v1.1: the sources' notice on the statuses before the end (step 0 and 1 of
        // the S4 portal route: registered, then at payment), delivery and contacts at the end.
        let notice = (index < 2).then(|| notice(&route, index)).flatten();
        let said = Said { reason, document, notice };
        let (outcome, message) = outcome_message(&head, status, step, said, Utc::now(), id);
        let body: Value = serde_json::from_slice(&message.body).expect("JSON body");
        assert_eq!(body, serde_json::to_value(&outcome).expect("json"));
        s.assert_valid("Outcome", &body, &format!("a {status:?} Outcome"));
        s.assert_valid("TraceParent", &json!(message.traceparent), "the Outcome's traceparent");
        assert!(validate_inline(&message_id, &json!(message.message_id)), "message_id {}", message.message_id);
    }
    // Refused at intake, for a request that named no valid service.
    let odd = head_for("fishing-licence", "", "", false);
    let reason = common_reason(&regs, "invalid_request", "service: unknown code");
    let said = Said { reason: Some(reason), ..Said::default() };
    let (_, message) = outcome_message(&odd, Status::Refused, Some("intake"), said, Utc::now(), "x:final".into());
    let body: Value = serde_json::from_slice(&message.body).expect("JSON body");
    s.assert_valid("Outcome", &body, "an intake refusal of an unknown service");
}

/// Intake's field and regulation checks (everything but the signature): why it would refuse.
fn intake_check(regs: &qyzmet::regulations::Regulations, v: &Value) -> Result<(), String> {
    let env = Envelope::parse(v.to_string().as_bytes(), LIMIT).map_err(|e| e.to_string())?;
    let r = Request::from_envelope(&env).map_err(|e| e.to_string())?;
    let route = regs.route(r.service, r.region, r.channel)?;
    regs.check_request(&route, &r).map_err(|e| e.to_string())
}

fn validate_inline(schema: &Value, instance: &Value) -> bool {
    jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(schema).expect("schema").is_valid(instance)
}

#[test]
fn invalid_messages_do_not_validate_and_the_code_refuses_them_too() {
    let mut s = Schemas::load();
    let base = contract_request();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut v = base.clone();
    v.as_object_mut().expect("object").remove("request_id");
    cases.push(("no request_id", v));
    let mut v = base.clone();
    v["request_id"] = json!("not-a-uuid");
    cases.push(("request_id not a UUID", v));
    let mut v = base.clone();
    v["applicant"] = json!({ "iin": "84031700002" });
    cases.push(("an 11-digit IIN", v));
    let mut v = base.clone();
    v["applicant"] = json!({ "iin": "840317000029", "bin": "081140000436" });
    cases.push(("both IIN and BIN", v));
    let mut v = base.clone();
    v["applicant"] = json!({});
    cases.push(("no identifier", v));
    let mut v = base.clone();
    v["service"] = json!("fishing-licence");
    cases.push(("an unknown service", v));
    let mut v = base.clone();
    v["region"] = json!("almaty");
    cases.push(("an unknown region", v));
    let mut v = base.clone();
    v["channel"] = json!("telegram");
    cases.push(("an unknown channel", v));
    let mut v = base.clone();
    v["provider"] = json!(81140000436u64);
    cases.push(("a numeric provider", v));
    let mut v = base.clone();
    v["submitted_at"] = json!("2026-11-23 10:15");
    cases.push(("a date without offset", v));
    let mut v = base.clone();
    v["attachments"][0]["sha256"] = json!("9f86d08");
    cases.push(("a short sha256", v));
    let mut v = base.clone();
    v["signature"]["certificate_chain"] = json!([]);
    cases.push(("an empty certificate chain", v));
    let mut v = base.clone();
    v["representative"]["power_of_attorney"] = json!("P".repeat(129));
    cases.push(("a power of attorney over 128 bytes", v));
    let mut v = base.clone();
    v["form"]["kind"] = json!("renewal");
    cases.push(("a licence form kind the regulation does not know", v));
    let regs = regulations();
    for (what, v) in &cases {
        s.assert_invalid("Request", v, what);
        assert!(intake_check(&regs, v).is_err(), "the code accepts {what}, the schema refuses it");
    }

    let notice = payment(Uuid::new_v4(), "PSHEP-1");
    for (what, member, bad) in [
        ("a zero amount", "amount", json!("0.00")),
        ("three fraction digits", "amount", json!("1.234")),
        ("thirteen integer digits", "amount", json!("1000000000000.00")),
        ("a numeric amount", "amount", json!(20000)),
        ("another currency", "currency", json!("USD")),
        ("an empty payment_id", "payment_id", json!(" ")),
        ("a payment_id with a control character", "payment_id", json!("P\u{1}")),
    ] {
        let mut v = notice.clone();
        v[member] = bad;
        s.assert_invalid("PaymentNotice", &v, what);
        assert!(PaymentNotice::from_envelope(&envelope(&v)).is_err(), "the code accepts {what}");
    }

    let mut d = sample_decision("refuse");
    d.as_object_mut().expect("object").remove("reason");
    s.assert_invalid("Decision", &d, "a refusal without reason");
    assert!(Decision::from_envelope(&envelope(&d)).is_err(), "the code accepts a refusal without reason");
    let mut d = sample_decision("approve");
    d["decision"] = json!("maybe");
    s.assert_invalid("Decision", &d, "an unknown verdict");
    assert!(Decision::from_envelope(&envelope(&d)).is_err(), "the code accepts an unknown verdict");

    let head = head_for("medical-licence", "aktobe", "portal", true);
    let (_, refused) = outcome_message(
        &head,
        Status::Refused,
        Some("payment"),
        Said { reason: Some(common_reason(&regs, "deadline_exceeded", "payment")), ..Said::default() },
        Utc::now(),
        "m".into(),
    );
    let refused: Value = serde_json::from_slice(&refused.body).expect("json");
    s.assert_valid("Outcome", &refused, "a refused Outcome");
    for (what, member, bad) in [
        ("a refusal without its reason", "reason", Value::Null),
        ("an unknown status", "status", json!("cancelled")),
        ("an unknown step", "step", json!("archive")),
        ("a request_id that is not a UUID", "request_id", json!("42")),
    ] {
        let mut v = refused.clone();
        v[member] = bad;
        s.assert_invalid("Outcome", &v, what);
    }
    let mut v = refused.clone();
    v["reason"]["kind"] = json!("bad_weather");
    s.assert_invalid("Outcome", &v, "an unknown refusal kind");
    let mut v = refused.clone();
    v.as_object_mut().expect("object").remove("deadline");
    s.assert_invalid("Outcome", &v, "an Outcome without its deadline member");
    let mut v = refused;
    v["status"] = json!("completed");
    v["step"] = json!("result");
    s.assert_invalid("Outcome", &v, "a completed Outcome without a document and with a reason");
}

/// A whole S4 request through the running pipeline (registered, in progress, completed) and
/// two refused at intake (an 11-digit IIN, an unknown service): every Outcome qyzmet published
/// validates, and so does every message the test published.
#[tokio::test]
async fn outcomes_of_a_real_pipeline_run_validate_against_the_outcome_schema() {
    let env = TestEnv::new().await;
    let app = env.start_all().await;
    let mut s = Schemas::load();

    let mut req = licence_request("portal", "issue");
    sign_as(&proper_signer(&req), &mut req);
    s.assert_valid("Request", &req, "the published Request");
    let id = id_of(&req);
    env.publish_request(&req).await;
    env.wait_step(id, "payment").await;
    let notice = payment(id, &format!("PSHEP-{}", &id.simple().to_string()[..10]));
    s.assert_valid("PaymentNotice", &notice, "the published PaymentNotice");
    env.publish_payment(&notice).await;
    env.wait_step(id, "review").await;
    let mut approve = decision(id, "approve");
    sign_as(&format!("staff-{}", who::AKTOBE_HEALTH), &mut approve);
    s.assert_valid("Decision", &approve, "the published Decision");
    env.publish_decision("medical-licence", &approve).await;
    let completed = env.final_outcome(id).await;
    assert_eq!(completed.status, Status::Completed, "{completed:#?}");

    let mut short_iin = licence_request("portal", "issue");
    short_iin["applicant"] = json!({ "iin": "85040130012" });
    sign_as("iin-850401300125", &mut short_iin);
    s.assert_invalid("Request", &short_iin, "a Request with an 11-digit IIN");
    env.publish_request(&short_iin).await;
    let mut unknown = licence_request("portal", "issue");
    unknown["service"] = json!("fishing-licence");
    sign_as(&proper_signer(&unknown), &mut unknown);
    s.assert_invalid("Request", &unknown, "a Request of an unknown service");
    env.publish_request(&unknown).await;
    for r in [&short_iin, &unknown] {
        let o = env.final_outcome(id_of(r)).await;
        assert_eq!(o.status, Status::Refused, "{o:#?}");
        assert_eq!(o.reason.as_ref().map(|r| r.kind.as_str()), Some("invalid_request"), "{o:#?}");
    }

    let message_id = s.schema("OutcomeHeaders")["properties"]["message_id"].clone();
    let mut statuses = BTreeSet::new();
    let deliveries = env.outcome_deliveries().await;
    for (mid, copies) in &deliveries {
        assert!(validate_inline(&message_id, &json!(mid)), "Outcome message_id {mid}");
        let body: Value = serde_json::from_slice(&copies[0]).expect("an Outcome is JSON");
        s.assert_valid("Outcome", &body, &format!("the delivered Outcome {mid}"));
        statuses.insert(body["status"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(statuses, set(["registered", "in_progress", "completed", "refused"]), "every status was seen");
    app.shutdown(std::time::Duration::from_secs(5)).await;
    env.cleanup().await;
}
