//! `qyzmet drill`: the chaos drill. Publishes the realistic mix (paid licences and staff
//! decisions included) with a share of poison of every kind, while it SIGKILLs a random worker
//! process every few seconds (and starts a new one), restarts RabbitMQ and PostgreSQL, and then
//! checks every message's fate: each accepted request has exactly one final outcome in
//! PostgreSQL and on the wire (repeats identical), each poison message the fate its kind must
//! have. Exits non-zero on any loss, contradiction or unexpected fate.
//!
//! It answers as the payment gateway and as staff from the database (requests waiting at
//! payment or review), not from outcome events, so answers survive a broker restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use qyzmet::broker::{Broker, Message, QUEUE_DEAD, pool_name};
use qyzmet::config::Settings;
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_OUTCOMES, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Outcome};
use qyzmet::startup::ALL_POOLS;
use qyzmet::store::Store;

use crate::bench::{demo_world, make_request, mix, purge_pipeline_queues, terminate};
use crate::demo::{self, Keys};

/// What the drill does.
#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// Messages to publish (requests of the mix plus the poison share).
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
    /// Share of poison messages, spread over every kind.
    #[arg(long, default_value_t = 0.05)]
    pub poison: f64,
    /// Messages offered per second.
    #[arg(long, default_value_t = 150.0)]
    pub rate: f64,
    /// A random worker process is killed with SIGKILL (and a new one started) this often.
    #[arg(long, default_value_t = 3)]
    pub kill_every_secs: u64,
    /// RabbitMQ restarts during the traffic.
    #[arg(long, default_value_t = 2)]
    pub broker_restarts: usize,
    /// PostgreSQL restarts during the traffic.
    #[arg(long, default_value_t = 1)]
    pub database_restarts: usize,
    /// The script that stops and starts the services (`scripts/services.sh`).
    #[arg(long, default_value = "scripts/services.sh")]
    pub services: PathBuf,
    /// How long to wait for every final outcome after the traffic.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Demo registry data.
    #[arg(long, default_value = "demo")]
    pub demo_dir: PathBuf,
    /// Each worker process's log goes to a file here (`<pool>-<n>.log`).
    #[arg(long, default_value = ".qyzmet/drill-logs")]
    pub logs: PathBuf,
    /// Where the drill's demo PKI is generated.
    #[arg(long, default_value = ".qyzmet/drill-pki")]
    pub pki_dir: PathBuf,
}

/// The poison kinds, each with the fate it must have.
const POISON: &[(&str, &str)] = &[
    ("nul_in_form", "refused invalid_request"),
    ("nul_in_member_name", "refused invalid_request"),
    ("deep_nesting", "refused invalid_request"),
    ("bad_check_digit", "refused invalid_request"),
    ("long_power_of_attorney", "refused invalid_request"),
    ("not_json", "dead-lettered not_json"),
    ("no_request_id", "dead-lettered no_request_id"),
    ("oversized", "dead-lettered oversized"),
    ("huge_payment_amount", "dead-lettered invalid_payment_notice"),
    ("nul_in_decision", "dead-lettered invalid_decision"),
];

/// One published message and what must become of it.
struct Sent {
    /// Its `message_id` (a dead letter keeps it).
    message_id: String,
    /// The request it carries, if it has a usable one.
    request: Option<Uuid>,
    /// The poison kind, for poison.
    poison: Option<&'static str>,
}

/// Builds the `i`-th message, a poison one of `kind`, and what must become of it.
fn poison(keys: &mut Keys, kind: &'static str, i: usize) -> anyhow::Result<(Message, Sent)> {
    let (exchange, key, id, body, request) = poison_parts(keys, kind, i)?;
    Ok((message(exchange, key, id.clone(), body), Sent { message_id: id, request, poison: Some(kind) }))
}

/// Exchange, routing key, message id, body and request id of a poison message.
type PoisonParts = (&'static str, String, String, Vec<u8>, Option<Uuid>);

fn poison_parts(keys: &mut Keys, kind: &'static str, i: usize) -> anyhow::Result<PoisonParts> {
    let base =
        || demo::req("doctor-appointment", "akmola", "portal", ("iin", demo::CITIZEN), demo::AKMOLA_PHC, json!({}));
    let signed = |keys: &mut Keys, mut v: Value| -> anyhow::Result<(Option<Uuid>, Vec<u8>)> {
        keys.sign(&demo::proper_signer(&v), &mut v)?;
        Ok((v["request_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()), serde_json::to_vec(&v)?))
    };
    let id = format!("poison-{kind}-{i}");
    let request = |(rid, body): (Option<Uuid>, Vec<u8>)| {
        (EXCHANGE_REQUESTS, "doctor-appointment".to_owned(), id.clone(), body, rid)
    };
    Ok(match kind {
        "nul_in_form" => {
            let mut v = base();
            v["form"] = json!({ "note": "a\u{0}b" });
            request(signed(keys, v)?)
        }
        "nul_in_member_name" => {
            let mut v = base();
            v["form"] = json!({ "k\u{0}": 1 });
            request(signed(keys, v)?)
        }
        "deep_nesting" => {
            let mut v = base();
            v["form"] = (0..40).fold(json!(1), |inner, _| json!({ "x": inner }));
            request(signed(keys, v)?)
        }
        "bad_check_digit" => {
            let mut v = base();
            v["applicant"] = json!({ "iin": "850401300124" });
            request(signed(keys, v)?)
        }
        "long_power_of_attorney" => {
            let mut v = base();
            v["representative"] = json!({ "iin": demo::REPRESENTATIVE, "power_of_attorney": "P".repeat(3000) });
            request(signed(keys, v)?)
        }
        "not_json" => request((None, b"<not json>".to_vec())),
        "no_request_id" => request((None, br#"{"service": "doctor-appointment"}"#.to_vec())),
        "oversized" => request((
            None,
            format!(r#"{{"request_id": "{}", "pad": "{}"}}"#, Uuid::new_v4(), "x".repeat(300_000)).into_bytes(),
        )),
        "huge_payment_amount" => {
            let v = json!({ "payment_id": id, "request_id": Uuid::new_v4().to_string(), "amount": "99999999999999.00",
                "currency": "KZT", "paid_at": qyzmet::contract::now_local().to_rfc3339(), "payer": { "bin": demo::CLINIC } });
            (
                EXCHANGE_PAYMENTS,
                qyzmet::contract::ROUTING_KEY_PAYMENT.to_owned(),
                id.clone(),
                serde_json::to_vec(&v)?,
                None,
            )
        }
        _ => {
            let mut v = json!({ "decision_id": id, "request_id": Uuid::new_v4().to_string(), "decision": "refuse",
                "reason": { "ru": "\u{0}", "kk": "жоқ" }, "decided_at": qyzmet::contract::now_local().to_rfc3339() });
            keys.sign(&format!("staff-{}", demo::AKTOBE_HEALTH), &mut v)?;
            (
                EXCHANGE_DECISIONS,
                qyzmet::contract::decision_routing_key("medical-licence"),
                id.clone(),
                serde_json::to_vec(&v)?,
                None,
            )
        }
    })
}

/// Publishes until the broker confirms (a publish during a restart fails and is repeated).
async fn publish_surely(broker: &Arc<Broker>, m: Message, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut said = None::<Instant>;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let published = match broker.publisher().await {
            Ok(p) => p.publish_all(std::slice::from_ref(&m)).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => return true,
            Err(e) if said.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                tracing::warn!(message_id = %m.message_id, error = %e, "drill: cannot publish yet; retrying");
                said = Some(Instant::now());
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn message(exchange: &str, key: String, id: String, body: Vec<u8>) -> Message {
    Message {
        exchange: exchange.into(),
        routing_key: key,
        message_id: id,
        body,
        traceparent: None,
        headers: Vec::new(),
        must_route: true,
    }
}

/// One `qyzmet worker` process per pool; a killed one is replaced.
struct Fleet {
    settings: Settings,
    logs: PathBuf,
    spawned: usize,
    children: Vec<(&'static str, tokio::process::Child)>,
}

impl Fleet {
    fn spawn(&mut self, pool: &'static str) -> anyhow::Result<tokio::process::Child> {
        self.spawned += 1;
        let log = std::fs::File::create(self.logs.join(format!("{pool}-{}.log", self.spawned)))?;
        tokio::process::Command::new(std::env::current_exe()?)
            .args(["worker", pool, "--concurrency", "8"])
            .envs(self.settings.to_env())
            .env("QYZMET_DB_POOL_SIZE", "8")
            .env("QYZMET_LOG", "info,sqlx=warn,lapin=warn")
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn qyzmet worker")
    }

    fn start(settings: &Settings, logs: PathBuf) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        let mut fleet = Fleet { settings: settings.clone(), logs, spawned: 0, children: Vec::new() };
        for pool in ALL_POOLS {
            let child = fleet.spawn(pool_name(pool))?;
            fleet.children.push((pool_name(pool), child));
        }
        Ok(fleet)
    }

    /// SIGKILLs the `n`-th process (modulo) and starts its replacement.
    async fn kill(&mut self, n: usize) -> anyhow::Result<&'static str> {
        let i = n % self.children.len();
        let (pool, child) = &mut self.children[i];
        let pool = *pool;
        let _ = child.start_kill();
        let _ = child.wait().await;
        self.children[i].1 = self.spawn(pool)?;
        Ok(pool)
    }

    /// Starts a replacement for every process that has exited on its own, as a supervisor
    /// (systemd's `Restart=always`) would: a worker started while the broker is down gives up
    /// connecting and exits. Returns how many were started.
    fn revive(&mut self) -> anyhow::Result<usize> {
        let mut revived = 0;
        for i in 0..self.children.len() {
            if matches!(self.children[i].1.try_wait(), Ok(Some(_))) {
                let pool = self.children[i].0;
                self.children[i].1 = self.spawn(pool)?;
                revived += 1;
            }
        }
        Ok(revived)
    }

    async fn stop(mut self) {
        terminate(self.children.iter_mut().map(|(_, c)| c)).await;
    }
}

/// Runs `scripts/services.sh` with the given arguments.
fn services(args: &DrillArgs, what: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(&args.services)
        .args(what)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", args.services.display()))?;
    anyhow::ensure!(status.success(), "{} {what:?} failed", args.services.display());
    Ok(())
}

/// Answers as the payment gateway and as staff for requests waiting at payment or review.
async fn answer(
    store: &Store,
    broker: &Arc<Broker>,
    keys: &Mutex<Keys>,
    answered: &mut HashMap<(Uuid, &'static str), Instant>,
    stop: &AtomicBool,
) {
    for step in ["payment", "review"] {
        let Ok(waiting) = store.open_at_step(step).await else { return };
        for (id, service) in waiting {
            if step == "review" && !matches!(service.as_str(), "medical-licence" | "archive-certificate") {
                continue;
            }
            // Answer again if an answer seems lost in a restart (the same ids count once).
            if answered.get(&(id, step)).is_some_and(|t| t.elapsed() < Duration::from_secs(20)) {
                continue;
            }
            let m = if step == "payment" {
                message(
                    EXCHANGE_PAYMENTS,
                    qyzmet::contract::ROUTING_KEY_PAYMENT.into(),
                    format!("drill-pay-{id}"),
                    demo::payment_notice(id),
                )
            } else {
                let provider = if service == "medical-licence" { demo::AKTOBE_HEALTH } else { demo::ASTANA_ARCHIVES };
                let mut k = keys.lock().await;
                let Ok(body) = demo::staff_decision(&mut k, &format!("staff-{provider}"), id, true) else { continue };
                message(
                    EXCHANGE_DECISIONS,
                    qyzmet::contract::decision_routing_key(&service),
                    format!("drill-dec-{id}"),
                    body,
                )
            };
            if publish_surely(broker, m, stop).await {
                answered.insert((id, step), Instant::now());
            }
        }
    }
}

/// The drill's own queue of every Outcome.
const DRILL_OUTCOMES: &str = "drill.outcomes";

/// Runs the drill and prints its report.
pub async fn run(settings: &Settings, args: &DrillArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (settings, store, pki) = demo_world(settings, &args.pki_dir, &args.demo_dir).await?;
    store.close().await;
    let broker = settings.broker("qyzmet drill").await?;
    purge_pipeline_queues(&broker).await?;
    // Outcomes land in a durable quorum queue of the drill's, so none is missed across restarts.
    // It is deleted once read; should the drill be killed, the broker deletes it an hour after
    // its last use, so that it does not keep every Outcome of later runs on this virtual host.
    let ch = broker.channel().await?;
    let mut qargs = FieldTable::default();
    qargs.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    qargs.insert("x-expires".into(), AMQPValue::LongLongInt(3_600_000));
    ch.queue_delete(DRILL_OUTCOMES.into(), Default::default()).await?;
    ch.queue_declare(DRILL_OUTCOMES.into(), QueueDeclareOptions { durable: true, ..Default::default() }, qargs).await?;
    ch.queue_purge(QUEUE_DEAD.into(), Default::default()).await?;
    ch.queue_bind(
        DRILL_OUTCOMES.into(),
        EXCHANGE_OUTCOMES.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "ok".into()).await;

    println!(
        "qyzmet drill: {} messages ({:.0} % poison of {} kinds), a worker SIGKILLed every {} s, {} RabbitMQ and {} PostgreSQL restarts",
        args.requests,
        args.poison * 100.0,
        POISON.len(),
        args.kill_every_secs,
        args.broker_restarts,
        args.database_restarts
    );
    let mut fleet = Fleet::start(&settings, args.logs.clone())?;
    let keys = Arc::new(Mutex::new(Keys::new(pki.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));

    // The answerer.
    let answerer = {
        let (store, broker, keys, stop) =
            (Store::connect(&settings.database_url, 2).await?, broker.clone(), keys.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answered = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                answer(&store, &broker, &keys, &mut answered, &stop).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The traffic.
    let every = if args.poison > 0.0 { (1.0 / args.poison).round().max(1.0) as usize } else { usize::MAX };
    let plan: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let publisher = {
        let (broker, keys, stop, published, plan, args) =
            (broker.clone(), keys.clone(), stop.clone(), published.clone(), plan.clone(), args.clone());
        let templates = mix(None);
        tokio::spawn(async move {
            let pace = Duration::from_secs_f64(1.0 / args.rate.max(1.0));
            let mut next = tokio::time::Instant::now();
            for i in 0..args.requests {
                let built = if i % every == every - 1 {
                    let kind = POISON[(i / every) % POISON.len()].0;
                    let mut k = keys.lock().await;
                    poison(&mut k, kind, i)
                } else {
                    let mut k = keys.lock().await;
                    make_request(&mut k, &templates, i).map(|(id, service, body)| {
                        let sent = Sent { message_id: id.to_string(), request: Some(id), poison: None };
                        (message(EXCHANGE_REQUESTS, service, id.to_string(), body), sent)
                    })
                };
                let Ok((m, sent)) = built else { continue };
                if publish_surely(&broker, m, &stop).await {
                    plan.lock().await.push(sent);
                }
                published.fetch_add(1, Ordering::Relaxed);
                // After a stall (the broker down while a publish waits for its confirm) the rest
                // keeps the rate instead of catching up in a burst: a burst would end the
                // traffic, and with it the chaos, before the restarts still planned for it.
                next = (next + pace).max(tokio::time::Instant::now());
                tokio::time::sleep_until(next).await;
            }
        })
    };

    // The chaos, while the traffic lasts.
    let n = args.requests.max(1);
    let mut broker_at: Vec<usize> = (1..=args.broker_restarts).map(|k| n * k / (args.broker_restarts + 1)).collect();
    let mut database_at: Vec<usize> =
        (1..=args.database_restarts).map(|k| n * (2 * k - 1) / (2 * args.database_restarts)).collect();
    let mut kills = 0usize;
    let mut kill_log: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut restarts = Vec::new();
    let mut last_kill = Instant::now();
    let mut revived = 0usize;
    // A restart still planned when the traffic has ended (a slow restart held the loop while
    // the rest was published) happens then, while the pipeline works through what it has.
    loop {
        let over = publisher.is_finished();
        if over && broker_at.is_empty() && database_at.is_empty() {
            break;
        }
        let done = published.load(Ordering::Relaxed);
        for (planned, service, name) in
            [(&mut broker_at, "rabbitmq", "RabbitMQ"), (&mut database_at, "postgres", "PostgreSQL")]
        {
            if planned.first().is_some_and(|&at| done >= at || over) {
                planned.remove(0);
                let t = Instant::now();
                services(args, &["stop", service])?;
                services(args, &["start"])?;
                restarts
                    .push(format!("{name} restarted after {done} messages ({:.1} s down)", t.elapsed().as_secs_f64()));
            }
        }
        revived += fleet.revive()?;
        if last_kill.elapsed() >= Duration::from_secs(args.kill_every_secs.max(1)) {
            let pool = fleet.kill(kills.wrapping_mul(7919) ^ (started.elapsed().as_millis() as usize)).await?;
            *kill_log.entry(pool).or_default() += 1;
            kills += 1;
            last_kill = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.await?;
    for r in &restarts {
        println!("  {r}");
    }
    println!("  {kills} worker processes killed with SIGKILL: {kill_log:?}");

    // Every accepted request reaches one final outcome in PostgreSQL.
    let plan = plan.lock().await;
    let expected: Vec<Uuid> = plan.iter().filter_map(|s| s.request).collect();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let store = Store::connect(settings.migration_url(), 2).await?;
    let finished = loop {
        let n = store.count_outcomes(&expected).await.unwrap_or(0);
        if n as usize >= expected.len() || Instant::now() > deadline {
            break n as usize;
        }
        revived += fleet.revive()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let outbox = async {
        while store.outbox_backlog().await.unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), outbox).await;
    stop.store(true, Ordering::Relaxed);
    let _ = answerer.await;
    fleet.stop().await;
    if revived > 0 {
        println!(
            "  {revived} worker process(es) had exited on their own (started while the broker was down) and were started again"
        );
    }

    // What went on the wire, and what was dead-lettered.
    let wire = drain_finals(&broker, DRILL_OUTCOMES).await?;
    if let Ok(ch) = broker.channel().await {
        let _ = ch.queue_delete(DRILL_OUTCOMES.into(), Default::default()).await;
        let _ = ch.close(200, "ok".into()).await;
    }
    let dead = drain_dead(&broker).await?;
    let kinds = store.outcome_kinds(&expected).await?;

    let mut lost_db = 0;
    let mut lost_wire = 0;
    let mut repeats = 0;
    let mut contradicting = 0;
    for id in &expected {
        if !kinds.contains_key(id) {
            lost_db += 1;
        }
        match wire.get(id) {
            None => lost_wire += 1,
            Some(copies) if copies.iter().all(|c| c == &copies[0]) => repeats += copies.len() - 1,
            Some(_) => contradicting += 1,
        }
    }
    let mut poison_report: BTreeMap<&str, (usize, usize, BTreeMap<String, usize>)> = BTreeMap::new();
    let mut unexpected = 0;
    for s in plan.iter() {
        let Some(kind) = s.poison else { continue };
        let want = POISON.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f).unwrap_or("");
        let got = match s.request.and_then(|id| kinds.get(&id)) {
            Some(k) => format!("refused {k}"),
            None => match dead.get(&s.message_id) {
                Some(reason) => format!("dead-lettered {reason}"),
                None => "not found".into(),
            },
        };
        let e = poison_report.entry(kind).or_default();
        e.0 += 1;
        if got == want {
            e.1 += 1;
        } else {
            unexpected += 1;
        }
        *e.2.entry(got).or_default() += 1;
    }
    let requests = expected.len();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for k in kinds.values() {
        *by_kind.entry(k.clone()).or_default() += 1;
    }
    println!("\n  accepted requests      {requests}");
    println!("  final in PostgreSQL    {finished} (lost {lost_db})");
    println!(
        "  final on the wire      {} (lost {lost_wire}, identical repeats {repeats}, contradicting {contradicting})",
        requests - lost_wire
    );
    println!("  outcomes by kind       {by_kind:?}");
    println!("  poison, by kind (must be → got):");
    for (kind, (n, ok, got)) in &poison_report {
        let want = POISON.iter().find(|(k, _)| k == kind).map(|(_, f)| *f).unwrap_or("");
        println!("    {kind:<24} {n:>4} × must be {want:<40} {ok} as expected; got {got:?}");
    }
    println!("  {:.1} s in all", started.elapsed().as_secs_f64());
    anyhow::ensure!(lost_db == 0 && lost_wire == 0, "{lost_db} requests lost in PostgreSQL, {lost_wire} on the wire");
    anyhow::ensure!(contradicting == 0, "{contradicting} requests got contradicting final outcomes");
    anyhow::ensure!(unexpected == 0, "{unexpected} poison messages did not meet the fate of their kind");
    println!("drill passed: nothing lost, nothing contradicting, every poison message where it belongs");
    Ok(())
}

/// Final Outcomes by request from a queue, until it stays quiet for five seconds.
async fn drain_finals(broker: &Broker, queue: &str) -> anyhow::Result<HashMap<Uuid, Vec<Vec<u8>>>> {
    let ch = broker.channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer =
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let mut finals: HashMap<Uuid, Vec<Vec<u8>>> = HashMap::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
        let _ = d.acker.ack(BasicAckOptions::default()).await;
        if let Ok(o) = serde_json::from_slice::<Outcome>(&d.data)
            && o.status.is_final()
        {
            finals.entry(o.request_id).or_default().push(d.data.clone());
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(finals)
}

/// Every dead letter: message id → reason.
async fn drain_dead(broker: &Broker) -> anyhow::Result<HashMap<String, String>> {
    let ch = broker.channel().await?;
    let mut out = HashMap::new();
    while let Some(got) = ch.basic_get(QUEUE_DEAD.into(), lapin::options::BasicGetOptions { no_ack: true }).await? {
        let d = got.delivery;
        let id = d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
        let reason = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-qyzmet-reason").cloned())
            .map(|v| match v {
                AMQPValue::LongString(s) => s.to_string(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        out.entry(id).or_insert(reason);
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(out)
}
