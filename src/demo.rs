//! Operator-facing reports (`qyzmet status`, `qyzmet regulations check`) and the demo.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::broker::{Broker, Message, Publisher, pool_name};
use crate::config::Settings;
use crate::contract::{
    EXCHANGE_DECISIONS, EXCHANGE_OUTCOMES, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Outcome, Status,
    now_local, to_local,
};
use crate::registry::import_file;
use crate::regulations::{DeadlineSpec, PoolName, Regulations};
use crate::startup::{self, Deps, Options};
use crate::store::Store;

/// The status screen of P-41: masked identifier, number, service, status, service deadline and
/// the step history.
pub async fn status_report(store: &Store, id: Uuid) -> anyhow::Result<String> {
    let Some(row) = store.get_request(id).await? else {
        anyhow::bail!("no request {id}");
    };
    let mut out = String::new();
    let _ = writeln!(out, "request      {}", row.request_id);
    let _ = writeln!(
        out,
        "number       {}",
        row.request_number.as_deref().unwrap_or("(not registered)")
    );
    let _ = writeln!(out, "applicant    {}", row.applicant_masked);
    let _ = writeln!(
        out,
        "service      {} / {} / {}",
        row.service, row.region, row.channel
    );
    let _ = writeln!(
        out,
        "status       {}{}",
        row.state,
        row.step
            .as_deref()
            .map(|s| format!(" (step {s})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "deadline     {}",
        row.service_deadline
            .map(|d| to_local(d).to_rfc3339())
            .unwrap_or_else(|| "-".into())
    );
    if let Some(outcome) = store.outcome_of(id).await? {
        if let Some(reason) = outcome.get("reason").filter(|r| !r.is_null()) {
            let _ = writeln!(
                out,
                "refusal      {} {} — {}",
                reason.get("code").and_then(|c| c.as_str()).unwrap_or("-"),
                reason.get("kind").and_then(|c| c.as_str()).unwrap_or("-"),
                reason.get("ru").and_then(|c| c.as_str()).unwrap_or("-")
            );
        }
        if let Some(doc) = outcome.get("document").filter(|d| !d.is_null()) {
            let _ = writeln!(
                out,
                "document     {} {}",
                doc.get("kind").and_then(|c| c.as_str()).unwrap_or("-"),
                doc.get("number").and_then(|c| c.as_str()).unwrap_or("-")
            );
        }
    }
    let _ = writeln!(out, "history:");
    for h in store.history_of(id).await? {
        let _ = writeln!(
            out,
            "  {}  {:<9} {:<17} deadline {}{}",
            to_local(h.at).format("%Y-%m-%d %H:%M:%S%.3f"),
            h.step,
            h.event,
            h.deadline
                .map(|d| to_local(d).format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            h.detail.map(|d| format!("  {d}")).unwrap_or_default()
        );
    }
    Ok(out)
}

/// One line per route with its steps and deadlines.
pub fn regulations_summary(regs: &Regulations) -> String {
    let mut out = String::new();
    for s in regs.services() {
        let f = &s.file;
        let _ = writeln!(
            out,
            "{} {} ({}): {} refusals, {} documents",
            f.code,
            f.service,
            s.path.display(),
            f.refusals.len(),
            f.documents.len()
        );
        for v in &f.variants {
            for c in &v.channels {
                let steps: Vec<String> = c
                    .steps
                    .iter()
                    .map(|st| {
                        let d = match &st.deadline {
                            DeadlineSpec::Fixed(t) => t.clone(),
                            DeadlineSpec::ByField { by, values } => format!(
                                "{by}: {}",
                                values
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        format!("{} [{d}]", pool_name(st.pool))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<7} {:<9} {}",
                    v.region.as_str(),
                    c.channel.as_str(),
                    steps.join(" → ")
                );
            }
        }
    }
    out
}

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
    /// Staff refuse with a reason.
    Refuse,
}

struct Scenario {
    label: &'static str,
    expect: &'static str,
    act: Act,
    request: Vec<u8>,
    id: Option<Uuid>,
    service: &'static str,
}

const CITIZEN: &str = "850401300125";
const CITIZEN_ASTANA: &str = "771102450346";
const UNATTACHED: &str = "921212500674";
const UNKNOWN_PERSON: &str = "900615400236";
const REPRESENTATIVE: &str = "800808300565";
const CLINIC: &str = "120540000785";
const UNKNOWN_ENTITY: &str = "150340000892";
const AKMOLA_PHC: &str = "051140000113";
const ASTANA_PHC: &str = "061240000228";
const AKTOBE_HEALTH: &str = "011040000330";
const ASTANA_ARCHIVES: &str = "030940000443";
const UNREGISTERED: &str = "090840000556";

fn signature() -> Value {
    json!({ "format": "jcs-x509", "algorithm": "ES256", "certificate_chain": ["MIIBszCCAVmgAwIBAgIU"], "value": "MEUCIQDx" })
}

fn req(
    service: &str,
    region: &str,
    channel: &str,
    applicant: Value,
    provider: &str,
    form: Value,
) -> Value {
    json!({
        "request_id": Uuid::new_v4().to_string(),
        "service": service, "region": region, "channel": channel,
        "submitted_at": now_local().to_rfc3339(),
        "applicant": applicant, "provider": provider, "form": form,
        "attachments": [{ "name": "application.pdf", "media_type": "application/pdf", "size": 48213,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "uri": "https://files.example/demo/1" }],
        "signature": signature()
    })
}

fn scenarios() -> Vec<Scenario> {
    let iin = |v: &str| json!({ "iin": v });
    let bin = |v: &str| json!({ "bin": v });
    let slot = json!({ "specialist": "терапевт", "slot": "2026-11-25T10:30+05:00" });
    let home = json!({ "address": "Кокшетау, ул. Абая 12, кв. 5", "symptoms": "температура 38,5" });
    let licence =
        |kind: &str| json!({ "kind": kind, "activity": "первичная медико-санитарная помощь" });
    let archive = json!({ "certificate_type": "о трудовом стаже", "period": "1995-2001", "purpose": "пенсия" });
    let mut centre_ok = req(
        "medical-licence",
        "aktobe",
        "centre",
        bin(CLINIC),
        AKTOBE_HEALTH,
        licence("duplicate"),
    );
    centre_ok["representative"] =
        json!({ "iin": REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000417" });
    let mut centre_revoked = req(
        "medical-licence",
        "aktobe",
        "centre",
        bin(CLINIC),
        AKTOBE_HEALTH,
        licence("issue"),
    );
    centre_revoked["representative"] =
        json!({ "iin": REPRESENTATIVE, "power_of_attorney": "ENIS-2026-000999" });
    let mut gost = req(
        "doctor-appointment",
        "akmola",
        "portal",
        iin(CITIZEN),
        AKMOLA_PHC,
        slot.clone(),
    );
    gost["signature"]["algorithm"] = json!("GOST3410-2015");
    let mut s5_gost = req(
        "archive-certificate",
        "astana",
        "portal",
        iin(CITIZEN_ASTANA),
        ASTANA_ARCHIVES,
        archive.clone(),
    );
    s5_gost["signature"]["algorithm"] = json!("GOST3410-2015");
    let mut bad_digit = req(
        "home-doctor-call",
        "astana",
        "portal",
        iin(CITIZEN_ASTANA),
        ASTANA_PHC,
        home.clone(),
    );
    bad_digit["applicant"] = json!({ "iin": "771102450345" });
    let list: Vec<(&'static str, &'static str, Act, Value)> = vec![
        (
            "S1 Akmola portal, attached citizen",
            "completed",
            Act::None,
            req(
                "doctor-appointment",
                "akmola",
                "portal",
                iin(CITIZEN),
                AKMOLA_PHC,
                slot.clone(),
            ),
        ),
        (
            "S1 Akmola provider workstation",
            "completed",
            Act::None,
            req(
                "doctor-appointment",
                "akmola",
                "provider",
                iin(CITIZEN),
                AKMOLA_PHC,
                slot.clone(),
            ),
        ),
        (
            "S1 Astana portal",
            "completed",
            Act::None,
            req(
                "doctor-appointment",
                "astana",
                "portal",
                iin(CITIZEN_ASTANA),
                ASTANA_PHC,
                slot.clone(),
            ),
        ),
        (
            "S1 Astana provider workstation",
            "completed",
            Act::None,
            req(
                "doctor-appointment",
                "astana",
                "provider",
                iin(CITIZEN_ASTANA),
                ASTANA_PHC,
                slot.clone(),
            ),
        ),
        (
            "S1 Akmola portal, not attached here (P-30)",
            "refused R3",
            Act::None,
            req(
                "doctor-appointment",
                "akmola",
                "portal",
                iin(UNATTACHED),
                AKMOLA_PHC,
                slot.clone(),
            ),
        ),
        (
            "S1 Akmola provider, not in ГБД ФЛ",
            "refused R4",
            Act::None,
            req(
                "doctor-appointment",
                "akmola",
                "provider",
                iin(UNKNOWN_PERSON),
                AKMOLA_PHC,
                slot.clone(),
            ),
        ),
        (
            "S1 Akmola portal, GOST signature",
            "refused R2",
            Act::None,
            gost,
        ),
        (
            "S2 Akmola portal",
            "completed",
            Act::None,
            req(
                "phc-attachment",
                "akmola",
                "portal",
                iin(UNATTACHED),
                AKMOLA_PHC,
                json!({}),
            ),
        ),
        (
            "S2 Akmola provider workstation",
            "completed",
            Act::None,
            req(
                "phc-attachment",
                "akmola",
                "provider",
                iin(UNATTACHED),
                AKMOLA_PHC,
                json!({}),
            ),
        ),
        (
            "S2 Aktobe portal (1 working day)",
            "completed",
            Act::None,
            req(
                "phc-attachment",
                "aktobe",
                "portal",
                iin(UNATTACHED),
                AKMOLA_PHC,
                json!({}),
            ),
        ),
        (
            "S2 Aktobe provider workstation",
            "completed",
            Act::None,
            req(
                "phc-attachment",
                "aktobe",
                "provider",
                iin(UNATTACHED),
                AKMOLA_PHC,
                json!({}),
            ),
        ),
        (
            "S2 Astana portal (same day)",
            "completed",
            Act::None,
            req(
                "phc-attachment",
                "astana",
                "portal",
                iin(UNATTACHED),
                ASTANA_PHC,
                json!({}),
            ),
        ),
        (
            "S2 Astana provider workstation",
            "completed",
            Act::None,
            req(
                "phc-attachment",
                "astana",
                "provider",
                iin(UNATTACHED),
                ASTANA_PHC,
                json!({}),
            ),
        ),
        (
            "S2 Astana portal, unregistered provider",
            "refused R3",
            Act::None,
            req(
                "phc-attachment",
                "astana",
                "portal",
                iin(UNATTACHED),
                UNREGISTERED,
                json!({}),
            ),
        ),
        (
            "S3 Akmola portal",
            "completed",
            Act::None,
            req(
                "home-doctor-call",
                "akmola",
                "portal",
                iin(CITIZEN),
                AKMOLA_PHC,
                home.clone(),
            ),
        ),
        (
            "S3 Akmola provider workstation",
            "completed",
            Act::None,
            req(
                "home-doctor-call",
                "akmola",
                "provider",
                iin(CITIZEN),
                AKMOLA_PHC,
                home.clone(),
            ),
        ),
        (
            "S3 Astana portal",
            "completed",
            Act::None,
            req(
                "home-doctor-call",
                "astana",
                "portal",
                iin(CITIZEN_ASTANA),
                ASTANA_PHC,
                home.clone(),
            ),
        ),
        (
            "S3 Astana provider workstation",
            "completed",
            Act::None,
            req(
                "home-doctor-call",
                "astana",
                "provider",
                iin(CITIZEN_ASTANA),
                ASTANA_PHC,
                home.clone(),
            ),
        ),
        (
            "S3 Akmola provider, not attached here",
            "refused R5",
            Act::None,
            req(
                "home-doctor-call",
                "akmola",
                "provider",
                iin(UNATTACHED),
                AKMOLA_PHC,
                home.clone(),
            ),
        ),
        (
            "S3 Astana portal, bad IIN check digit",
            "refused invalid_request",
            Act::None,
            bad_digit,
        ),
        (
            "S4 portal, licence issue (15 working days)",
            "completed",
            Act::PayApprove,
            req(
                "medical-licence",
                "aktobe",
                "portal",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("issue"),
            ),
        ),
        (
            "S4 portal, re-issue, paid before the request",
            "completed",
            Act::PayFirstApprove,
            req(
                "medical-licence",
                "aktobe",
                "portal",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("reissue"),
            ),
        ),
        (
            "S4 portal, never paid",
            "refused L2",
            Act::NoPayment,
            req(
                "medical-licence",
                "aktobe",
                "portal",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("issue"),
            ),
        ),
        (
            "S4 portal, staff refuse",
            "refused L4",
            Act::PayRefuse,
            req(
                "medical-licence",
                "aktobe",
                "portal",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("issue"),
            ),
        ),
        (
            "S4 provider, re-issue (10 working days)",
            "completed",
            Act::Approve,
            req(
                "medical-licence",
                "aktobe",
                "provider",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("reissue"),
            ),
        ),
        (
            "S4 provider, entity not in ГБД ЮЛ",
            "refused L6",
            Act::None,
            req(
                "medical-licence",
                "aktobe",
                "provider",
                bin(UNKNOWN_ENTITY),
                AKTOBE_HEALTH,
                licence("issue"),
            ),
        ),
        (
            "S4 provider, staff refuse",
            "refused L7",
            Act::Refuse,
            req(
                "medical-licence",
                "aktobe",
                "provider",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("issue"),
            ),
        ),
        (
            "S4 centre, duplicate via representative",
            "completed",
            Act::Approve,
            centre_ok,
        ),
        (
            "S4 centre, revoked power of attorney",
            "refused L8",
            Act::None,
            centre_revoked,
        ),
        (
            "S4 in Akmola (no regulation there)",
            "refused unsupported_service",
            Act::None,
            req(
                "medical-licence",
                "akmola",
                "portal",
                bin(CLINIC),
                AKTOBE_HEALTH,
                licence("issue"),
            ),
        ),
        (
            "S5 ЖАО (provider)",
            "completed",
            Act::Approve,
            req(
                "archive-certificate",
                "astana",
                "provider",
                iin(CITIZEN_ASTANA),
                ASTANA_ARCHIVES,
                archive.clone(),
            ),
        ),
        (
            "S5 ХҚКО (centre)",
            "completed",
            Act::Approve,
            req(
                "archive-certificate",
                "astana",
                "centre",
                iin(CITIZEN_ASTANA),
                ASTANA_ARCHIVES,
                archive.clone(),
            ),
        ),
        (
            "S5 ЭҮП (portal)",
            "completed",
            Act::Approve,
            req(
                "archive-certificate",
                "astana",
                "portal",
                iin(CITIZEN_ASTANA),
                ASTANA_ARCHIVES,
                archive.clone(),
            ),
        ),
        (
            "S5 portal, staff refuse",
            "refused A7",
            Act::Refuse,
            req(
                "archive-certificate",
                "astana",
                "portal",
                iin(CITIZEN_ASTANA),
                ASTANA_ARCHIVES,
                archive.clone(),
            ),
        ),
        (
            "S5 portal, GOST signature",
            "refused A6",
            Act::None,
            s5_gost,
        ),
    ];
    let mut out: Vec<Scenario> = list
        .into_iter()
        .map(|(label, expect, act, v)| Scenario {
            label,
            expect,
            act,
            id: v
                .get("request_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok()),
            service: match v["service"].as_str() {
                Some("medical-licence") => "medical-licence",
                Some("archive-certificate") => "archive-certificate",
                _ => "other",
            },
            request: serde_json::to_vec(&v).unwrap_or_default(),
        })
        .collect();
    out.push(Scenario {
        label: "not JSON at all",
        expect: "dead-lettered not_json",
        act: Act::None,
        request: b"<xml>definitely not a request</xml>".to_vec(),
        id: None,
        service: "other",
    });
    out
}

async fn publish(
    p: &Publisher,
    exchange: &str,
    key: &str,
    id: String,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let m = Message {
        exchange: exchange.into(),
        routing_key: key.into(),
        message_id: id,
        body,
        traceparent: None,
        headers: Vec::new(),
        must_route: true,
    };
    p.publish_all(&[m]).await.context("publish")
}

fn payment_notice(id: Uuid) -> Vec<u8> {
    let v = json!({ "payment_id": format!("PSHEP-{}", &id.simple().to_string()[..10]), "request_id": id.to_string(),
        "amount": "20000.00", "currency": "KZT", "paid_at": now_local().to_rfc3339(), "payer": { "bin": CLINIC } });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn staff_decision(id: Uuid, approve: bool) -> Vec<u8> {
    let mut v = json!({ "decision_id": Uuid::new_v4().to_string(), "request_id": id.to_string(),
        "decision": if approve { "approve" } else { "refuse" }, "decided_at": now_local().to_rfc3339(), "signature": signature() });
    if !approve {
        v["reason"] = json!({ "ru": "не представлены документы о квалификации", "kk": "біліктілік туралы құжаттар ұсынылмаған" });
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Runs the demonstration end to end against the configured services.
pub async fn run(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "qyzmet demo — RabbitMQ {}, PostgreSQL {}",
        redact(&settings.amqp_url),
        redact(&settings.database_url)
    );
    let store = Store::connect(&settings.database_url, 4)
        .await
        .context("cannot connect to PostgreSQL")?;
    store.migrate().await.context("migrations failed")?;
    println!("\n1. migrations applied; demo registries:");
    for f in [
        "persons.jsonl",
        "legal-entities.csv",
        "powers-of-attorney.jsonl",
        "attachments.csv",
    ] {
        let path = dir.join("registries").join(f);
        let report = import_file(&store, &path, None)
            .await
            .with_context(|| format!("importing {}", path.display()))?;
        let n: usize = report.accepted.iter().map(|(_, n)| n).sum();
        println!(
            "   {:<28} {n} rows imported, {} rejected",
            f,
            report.rejected.len()
        );
    }
    let mut regs = Regulations::load(&settings.regulations_dir)
        .map_err(|e| anyhow::anyhow!("regulation data: {e}"))?;
    let payment_wait = chrono::Duration::seconds(10);
    regs.override_step_deadline(PoolName::Payment, payment_wait);
    println!(
        "\n2. starting all pools in this process (the demo shortens the S4 payment deadline from 1m30s \
         (Табл. 1.1 д.4) to {}s so the no-payment refusal L2 shows without a long wait)",
        payment_wait.num_seconds()
    );
    let running = startup::start(settings, regs, Options::all(8), Deps::default()).await?;

    let broker = Broker::connect(&settings.amqp_url, "qyzmet demo").await?;
    let publisher = broker.publisher().await?;
    let ch = broker.channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        q.name().clone(),
        EXCHANGE_OUTCOMES.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let dead_before = count_dead(&broker).await;

    let mut scenarios = scenarios();
    println!(
        "\n3. publishing {} messages to {EXCHANGE_REQUESTS} (every service, region and channel, and ones that must be refused)",
        scenarios.len()
    );
    for s in &scenarios {
        if let (Some(id), Act::PayFirstApprove) = (s.id, s.act) {
            publish(
                &publisher,
                EXCHANGE_PAYMENTS,
                "payment.confirmed",
                format!("pay-{id}"),
                payment_notice(id),
            )
            .await?;
        }
    }
    for s in &mut scenarios {
        let key = if s.id.is_some() {
            s.service.to_owned()
        } else {
            "unknown".to_owned()
        };
        let id =
            s.id.map(|i| i.to_string())
                .unwrap_or_else(|| Uuid::new_v4().to_string());
        publish(
            &publisher,
            EXCHANGE_REQUESTS,
            &key,
            id,
            std::mem::take(&mut s.request),
        )
        .await?;
    }

    println!("\n4. answering as the payment gateway and as provider staff while outcomes arrive…");
    let acts: HashMap<Uuid, (Act, &str)> = scenarios
        .iter()
        .filter_map(|s| s.id.map(|id| (id, (s.act, s.service))))
        .collect();
    let mut finals: HashMap<Uuid, Outcome> = HashMap::new();
    let mut answered: HashMap<(Uuid, &'static str), ()> = HashMap::new();
    let expected = acts.len();
    let deadline = Instant::now() + Duration::from_secs(180);
    while finals.len() < expected {
        let next = tokio::time::timeout_at(deadline.into(), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            anyhow::bail!(
                "only {} of {expected} requests reached a final outcome within 3 minutes",
                finals.len()
            );
        };
        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        let Ok(o) = serde_json::from_slice::<Outcome>(&delivery.data) else {
            continue;
        };
        let Some((act, service)) = acts.get(&o.request_id).copied() else {
            continue;
        };
        if o.status.is_final() {
            finals.insert(o.request_id, o);
            continue;
        }
        let step = o.step.as_deref().unwrap_or_default();
        if step == "payment"
            && matches!(act, Act::PayApprove | Act::PayRefuse)
            && answered.insert((o.request_id, "pay"), ()).is_none()
        {
            publish(
                &publisher,
                EXCHANGE_PAYMENTS,
                "payment.confirmed",
                format!("pay-{}", o.request_id),
                payment_notice(o.request_id),
            )
            .await?;
        }
        if step == "review"
            && matches!(
                act,
                Act::PayApprove
                    | Act::PayFirstApprove
                    | Act::PayRefuse
                    | Act::Approve
                    | Act::Refuse
            )
            && answered.insert((o.request_id, "decide"), ()).is_none()
        {
            let approve = !matches!(act, Act::PayRefuse | Act::Refuse);
            publish(
                &publisher,
                EXCHANGE_DECISIONS,
                &format!("decision.{service}"),
                format!("dec-{}", o.request_id),
                staff_decision(o.request_id, approve),
            )
            .await?;
        }
    }
    let dead_after = count_dead(&broker).await;

    println!("\n5. final outcomes\n");
    println!(
        "{:<3} {:<45} {:<24} {:<9} {:<9} {:<40} {:<17} check",
        "#",
        "scenario",
        "request number",
        "status",
        "step",
        "reason or document",
        "service deadline"
    );
    let mut ok = 0;
    for (i, s) in scenarios.iter().enumerate() {
        let (number, status, step, what, deadline, got) = match s.id.and_then(|id| finals.get(&id))
        {
            Some(o) => (
                o.request_number
                    .clone()
                    .unwrap_or_else(|| "(not registered)".into()),
                if o.status == Status::Completed {
                    "completed"
                } else {
                    "refused"
                },
                o.step.clone().unwrap_or_else(|| "-".into()),
                match (&o.reason, &o.document) {
                    (Some(r), _) => format!("{} {}", r.code.as_deref().unwrap_or("-"), r.kind),
                    (None, Some(d)) => format!(
                        "{} {}",
                        d["kind"].as_str().unwrap_or("?"),
                        d["number"].as_str().unwrap_or("?")
                    ),
                    _ => "-".into(),
                },
                o.deadline
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into()),
                match &o.reason {
                    Some(r) => format!(
                        "refused {}",
                        r.code.clone().unwrap_or_else(|| r.kind.clone())
                    ),
                    None => "completed".into(),
                },
            ),
            None if s.id.is_none() && dead_after > dead_before => (
                "-".into(),
                "-",
                "intake".into(),
                "qyzmet.dead-letter not_json".into(),
                "-".into(),
                "dead-lettered not_json".into(),
            ),
            None => (
                "-".into(),
                "-",
                "-".into(),
                "no outcome".into(),
                "-".into(),
                "missing".into(),
            ),
        };
        let check = if got == s.expect {
            ok += 1;
            "ok".to_owned()
        } else {
            format!("UNEXPECTED (expected {})", s.expect)
        };
        println!(
            "{:<3} {:<45} {:<24} {:<9} {:<9} {:<40} {:<17} {check}",
            i + 1,
            s.label,
            number,
            status,
            step,
            what,
            deadline
        );
    }
    if let Some(r) = finals
        .values()
        .filter_map(|o| o.reason.as_ref())
        .find(|r| r.code.as_deref() == Some("L4"))
    {
        println!(
            "\nA refusal reads, in the three languages of the outcome:\n  ru: {}\n  kk: {}\n  en: {}",
            r.ru, r.kk, r.en
        );
    }
    println!(
        "\n{ok} of {} scenarios ended as expected; {} message(s) dead-lettered in qyzmet.dead-letter during the demo; {:.1}s.",
        scenarios.len(),
        dead_after.saturating_sub(dead_before),
        started.elapsed().as_secs_f64()
    );
    if let Some(id) = scenarios.iter().filter_map(|s| s.id).next() {
        println!("Inspect any request with: qyzmet status {id}");
    }
    let _ = ch.close(200, "bye".into()).await;
    broker.close().await;
    running.shutdown(Duration::from_secs(10)).await;
    store.close().await;
    if ok != scenarios.len() {
        anyhow::bail!(
            "{} scenario(s) did not end as expected",
            scenarios.len() - ok
        );
    }
    Ok(())
}

async fn count_dead(broker: &Broker) -> u32 {
    let Ok(ch) = broker.channel().await else {
        return 0;
    };
    let n = ch
        .queue_declare(
            crate::broker::QUEUE_DEAD.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|q| q.message_count())
        .unwrap_or(0);
    let _ = ch.close(200, "ok".into()).await;
    n
}

/// A URL with its password hidden.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}
