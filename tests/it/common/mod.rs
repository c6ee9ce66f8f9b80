//! Test harness: real RabbitMQ and PostgreSQL, a fresh database and virtual host per test.
//!
//! Services come from `TEST_AMQP_URL`, `TEST_DATABASE_URL` and `TEST_AMQP_MANAGEMENT_URL` (set by
//! `make test`); without them, and with a Docker engine, testcontainers starts them; otherwise
//! the test fails with a message saying how to provide them. Nothing is ever skipped silently.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

use qyzmet::broker::{Broker, Message, Publisher};
use qyzmet::config::Settings;
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_OUTCOMES, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Outcome, Status};
use qyzmet::registry::import_file;
use qyzmet::regulations::Regulations;
use qyzmet::signature::keys::SigningKey;
use qyzmet::startup::{self, Deps, Options, Running};
use qyzmet::store::Store;
use qyzmet_demo_pki::PkiPaths;

/// Runs `rabbitmqctl` against the test broker (`scripts/services.sh rabbitmqctl`, as
/// `make test` sets `TEST_RABBITMQCTL`).
pub fn rabbitmqctl(args: &[&str]) {
    let cmd = std::env::var("TEST_RABBITMQCTL").unwrap_or_else(|_| {
        panic!("TEST_RABBITMQCTL is not set: this test drives the broker with rabbitmqctl; run it through make test")
    });
    let mut parts = cmd.split_whitespace();
    let program = parts.next().expect("a command");
    let status = std::process::Command::new(program)
        .args(parts)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Publishes a signed Request with confirms, retrying through a failover or a broker restart
/// (a publish during either fails).
pub async fn publish_until_confirmed(broker: &Arc<Broker>, body: &Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(p) = broker.publisher().await {
            let m = Message {
                exchange: EXCHANGE_REQUESTS.into(),
                routing_key: "doctor-appointment".into(),
                message_id: body["request_id"].as_str().unwrap_or_default().to_owned(),
                body: serde_json::to_vec(body).expect("json"),
                traceparent: None,
                headers: Vec::new(),
                must_route: true,
            };
            if p.publish_all(&[m]).await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "could not publish to the cluster for 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Log lines of this test process, for tests that assert on what was (not) logged. Installed
/// once per process (nextest runs every test in a process of its own).
pub fn capture_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("qyzmet=debug"))
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

/// The captured log as text.
pub fn log_text(logs: &std::sync::Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long a test waits for an event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(45);

/// Where the services are.
struct Services {
    amqp_base: String,
    db_admin_url: String,
    mgmt_url: String,
}

static SERVICES: tokio::sync::OnceCell<Services> = tokio::sync::OnceCell::const_new();
static PKI: std::sync::OnceLock<PkiPaths> = std::sync::OnceLock::new();

/// The demo PKI, generated once per test process.
pub fn pki() -> &'static PkiPaths {
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qyzmet-test-pki-{}", Uuid::new_v4().simple()));
        qyzmet_demo_pki::generate_demo(&dir).expect("demo PKI")
    })
}

/// A holder's key from the test PKI.
pub fn holder(name: &str) -> SigningKey {
    qyzmet::signature::keys::load_key(&pki().holders_dir, name).unwrap_or_else(|e| panic!("holder {name}: {e}"))
}

/// Signs a JSON object with a holder's key (replacing any signature).
pub fn sign_as(name: &str, v: &mut Value) {
    holder(name).sign_in_place(v.as_object_mut().expect("object")).expect("sign");
}

/// Settings pointed at the demo PKI (its trust bundle, CRLs, result-signing keys, and the staff
/// roles, centre and shared signer its certificates name).
pub fn with_pki(mut settings: Settings, pki: &PkiPaths) -> Settings {
    settings.trust_bundle = Some(pki.trust_bundle.clone());
    settings.crl_path = Some(pki.crl_dir.clone());
    settings.signing_keys = Some(pki.keys_dir.clone());
    settings.staff_role_oids = vec![qyzmet_demo_pki::DEMO_STAFF_ROLES.into()];
    settings.centre_bins = vec![qyzmet_demo_pki::DEMO_CENTRE_BIN.into()];
    settings.shared_signer_bins = vec![qyzmet_demo_pki::DEMO_SHARED_SIGNER_BIN.into()];
    settings
}

/// Who signs a request under its channel's regulation (see `qyzmet_demo_pki::proper_signer`).
pub fn proper_signer(request: &Value) -> String {
    let name = qyzmet_demo_pki::proper_signer(request);
    // Identifiers without a certificate (invalid ones) are refused before the signature check.
    if pki().holders_dir.join(format!("{name}.key.pem")).exists() { name } else { "iin-850401300125".into() }
}

async fn services() -> &'static Services {
    SERVICES
        .get_or_init(|| async {
            let amqp = std::env::var("TEST_AMQP_URL").ok();
            let db = std::env::var("TEST_DATABASE_URL").ok();
            let mgmt = std::env::var("TEST_AMQP_MANAGEMENT_URL").ok();
            match (amqp, db, mgmt) {
                (Some(amqp), Some(db), Some(mgmt)) => Services {
                    amqp_base: strip_vhost(&amqp),
                    db_admin_url: db,
                    mgmt_url: mgmt.trim_end_matches('/').to_owned(),
                },
                _ => containers().await,
            }
        })
        .await
}

/// A PostgreSQL URL with another user (and no password: the test server trusts loopback).
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    format!("{scheme}://{user}@{host}")
}

fn strip_vhost(url: &str) -> String {
    // amqp://user:pass@host:port/vhost -> amqp://user:pass@host:port
    match url.find("://").map(|i| i + 3) {
        Some(start) => match url[start..].find('/') {
            Some(slash) => url[..start + slash].to_owned(),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

async fn containers() -> Services {
    use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{GenericImage, ImageExt};

    let hint = "set TEST_AMQP_URL, TEST_DATABASE_URL and TEST_AMQP_MANAGEMENT_URL (make test does: it starts \
                RabbitMQ and PostgreSQL on loopback), or run a Docker engine for testcontainers";
    let pg = testcontainers_modules::postgres::Postgres::default()
        .with_host_auth()
        .with_tag("15")
        .start()
        .await
        .unwrap_or_else(|e| panic!("no test services: {hint}. testcontainers could not start PostgreSQL: {e}"));
    let rabbit = GenericImage::new("rabbitmq", "4.1-management")
        .with_exposed_port(5672.tcp())
        .with_exposed_port(15672.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("no test services: {hint}. testcontainers could not start RabbitMQ: {e}"));
    let pg_port = pg.get_host_port_ipv4(5432).await.expect("postgres port");
    let amqp_port = rabbit.get_host_port_ipv4(5672).await.expect("amqp port");
    let mgmt_port = rabbit.get_host_port_ipv4(15672).await.expect("management port");
    // The containers live as long as the test process.
    Box::leak(Box::new(pg));
    Box::leak(Box::new(rabbit));
    Services {
        amqp_base: format!("amqp://guest:guest@127.0.0.1:{amqp_port}"),
        db_admin_url: format!("postgres://postgres@127.0.0.1:{pg_port}/postgres"),
        mgmt_url: format!("http://guest:guest@127.0.0.1:{mgmt_port}"),
    }
}

/// An Outcome's status and its `traceparent` header.
pub type Traced = (Status, Option<String>);

/// The SQLSTATE a statement failed with (`None` when it succeeded); any other error fails the test.
pub fn sqlstate_of<T>(result: Result<T, sqlx::Error>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(e) => panic!("{e}"),
    }
}

/// A minimal HTTP/1.1 client for the RabbitMQ management API (creating and deleting virtual
/// hosts, reading queue depths) — enough for tests, without an HTTP dependency.
pub async fn management(method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let base = &services().await.mgmt_url;
    let rest = base.strip_prefix("http://").expect("management URL must be http://user:pass@host:port");
    let (auth, host) = rest.split_once('@').expect("management URL must carry user:pass@");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let basic = format!("Basic {}", base64(auth.as_bytes()));
    let headers = [("Authorization", basic.as_str()), ("Content-Type", "application/json")];
    let reply = exchange(host, method, path, &headers, &payload).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

/// `GET path` on a qyzmet process's HTTP address: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let reply = http(addr, "GET", path, &[], "").await;
    (reply.status, reply.body)
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to a qyzmet process with extra header lines and a body.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    exchange(&addr.to_string(), method, path, headers, body).await
}

/// Sends one HTTP/1.1 request to `host` (host:port) and reads the whole answer.
async fn exchange(host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("the HTTP address answers");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    Reply { status, headers, body }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The repository's regulation data.
pub fn regulations() -> Regulations {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regulations");
    Regulations::load(&dir).unwrap_or_else(|e| panic!("regulation data: {e}"))
}

/// One test's world: its own database and virtual host, the demo registries loaded, and a
/// listener on every Outcome.
pub struct TestEnv {
    /// Settings pointing at this test's database and virtual host.
    pub settings: Settings,
    /// This test's database.
    pub store: Store,
    broker: Arc<Broker>,
    publisher: Publisher,
    outcomes: Arc<Mutex<HashMap<Uuid, Vec<Outcome>>>>,
    /// Every Outcome delivery by `message_id`, repeats included: a repeat must be identical to
    /// the first (the contract allows redelivery, never a different message under one id).
    deliveries: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>,
    /// The `traceparent` header of every Outcome, by request, in arrival order.
    traceparents: Arc<Mutex<HashMap<Uuid, Vec<Traced>>>>,
    arrived: Arc<Notify>,
    /// Provider of each published request, to sign decisions as its staff.
    providers: Mutex<HashMap<String, String>>,
    vhost: String,
    db_name: String,
    worker_role: String,
}

impl TestEnv {
    /// Creates the database and virtual host, migrates, loads the demo registries.
    pub async fn new() -> TestEnv {
        let s = services().await;
        let tag = Uuid::new_v4().simple().to_string();
        let vhost = format!("qyzmet-test-{tag}");
        let (st, _) = management("PUT", &format!("/api/vhosts/{vhost}"), None).await;
        assert!(st == 201 || st == 204, "cannot create vhost {vhost}: HTTP {st}");
        let perms = json!({ "configure": ".*", "write": ".*", "read": ".*" });
        let (st, _) = management("PUT", &format!("/api/permissions/{vhost}/guest"), Some(&perms)).await;
        assert!(st == 201 || st == 204, "cannot grant permissions on {vhost}: HTTP {st}");

        let db_name = format!("qyzmet_test_{tag}");
        let admin = Store::connect(&s.db_admin_url, 1).await.expect("admin connection to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(admin.pool())
            .await
            .expect("create test database");
        admin.close().await;
        let db_url = match s.db_admin_url.rfind('/') {
            Some(i) => format!("{}/{db_name}", &s.db_admin_url[..i]),
            None => panic!("TEST_DATABASE_URL needs a database path"),
        };
        let amqp_url = format!("{}/{vhost}", s.amqp_base);
        let regs_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regulations");

        let store = Store::connect(&db_url, 4).await.expect("test database");
        store.migrate().await.expect("migrations");
        // qyzmet itself logs in as a role with the worker's rights only (the test keeps the
        // owner's connection for setup and assertions), so every test runs least-privileged.
        let worker = format!("qyzmet_test_worker_{tag}");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {worker} LOGIN IN ROLE qyzmet_worker")))
            .execute(store.pool())
            .await
            .expect("worker role");
        let worker_url = with_user(&db_url, &worker);
        let mut settings = with_pki(Settings::for_urls(&amqp_url, &worker_url, regs_dir), pki());
        settings.migration_database_url = Some(db_url.clone());
        settings.sweep_interval_ms = 100;
        settings.outbox_relay_secs = 3;
        settings.db_pool_size = 8;
        // Long enough to ride out a short outage a test provokes, short enough that a test
        // that exhausts it finishes.
        settings.retry_budget_secs = 20;
        let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/registries");
        for f in ["persons.jsonl", "legal-entities.csv", "powers-of-attorney.jsonl", "attachments.csv"] {
            let report = import_file(&store, &demo.join(f), None).await.expect("import demo registry");
            assert!(report.rejected.is_empty(), "{f}: {:?}", report.rejected);
        }

        let broker = Broker::connect(&amqp_url, "qyzmet test").await.expect("broker");
        let publisher = broker.publisher().await.expect("publisher");
        let outcomes: Arc<Mutex<HashMap<Uuid, Vec<Outcome>>>> = Arc::new(Mutex::new(HashMap::new()));
        let arrived = Arc::new(Notify::new());
        let ch = broker.channel().await.expect("channel");
        ch.queue_declare("test.outcomes".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("outcome queue");
        ch.queue_bind(
            "test.outcomes".into(),
            EXCHANGE_OUTCOMES.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind outcome queue");
        let mut consumer = ch
            .basic_consume("test.outcomes".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume outcomes");
        let deliveries: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>> = Arc::new(Mutex::new(HashMap::new()));
        let traceparents: Arc<Mutex<HashMap<Uuid, Vec<Traced>>>> = Default::default();
        let (o, a, all, tps) = (outcomes.clone(), arrived.clone(), deliveries.clone(), traceparents.clone());
        tokio::spawn(async move {
            let _keep = ch;
            while let Some(Ok(d)) = consumer.next().await {
                // As the contract asks of consumers: a message_id seen before is a redelivery.
                // Every delivery is kept, so a test can tell a redelivery from a second message.
                let id = d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
                let first = {
                    let mut all = all.lock().await;
                    let copies = all.entry(id).or_default();
                    copies.push(d.data.clone());
                    copies.len() == 1
                };
                if first && let Ok(out) = serde_json::from_slice::<Outcome>(&d.data) {
                    let tp = qyzmet::pipeline::runtime::Incoming::from_delivery(&d).traceparent;
                    tps.lock().await.entry(out.request_id).or_default().push((out.status, tp));
                    o.lock().await.entry(out.request_id).or_default().push(out);
                }
                a.notify_waiters();
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        });
        TestEnv {
            settings,
            store,
            broker,
            publisher,
            outcomes,
            deliveries,
            traceparents,
            arrived,
            providers: Mutex::new(HashMap::new()),
            vhost,
            db_name,
            worker_role: worker,
        }
    }

    /// Starts qyzmet in this process with the given regulations and options.
    pub async fn start(&self, regs: Regulations, opts: Options) -> Running {
        startup::start(&self.settings, regs, opts, self.deps()).await.expect("qyzmet starts")
    }

    /// Lets this test's qyzmet role use the console's tables too (as `qyzmet run` with a
    /// console needs), and points the settings at an operators file with these accounts
    /// (name, role, password) and tokens (name, role, token).
    pub async fn enable_console(&mut self, accounts: &[(&str, &str, &str)], tokens: &[(&str, &str, &str)]) {
        sqlx::query(sqlx::AssertSqlSafe(format!("GRANT qyzmet_console TO {}", self.worker_role)))
            .execute(self.store.pool())
            .await
            .expect("console role");
        let mut file = String::new();
        for (name, role, password) in accounts {
            let hash = qyzmet::console::auth::hash_password(password).expect("hash");
            file.push_str(&format!(
                "[[operator]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n\n"
            ));
        }
        for (name, role, token) in tokens {
            let digest = qyzmet::console::auth::to_hex(&qyzmet::console::auth::digest(token));
            file.push_str(&format!("[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{digest}\"\n\n"));
        }
        let path = std::env::temp_dir().join(format!("qyzmet-operators-{}.toml", self.db_name));
        std::fs::write(&path, file).expect("operators file");
        self.settings.operators_file = Some(path);
    }

    /// Environment for a `qyzmet` child process pointed at this test's services and PKI.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.settings.to_env();
        env.push(("QYZMET_LOG", "warn".into()));
        env
    }

    /// The real verifier and signer for this test's PKI.
    pub fn deps(&self) -> Deps {
        Deps::from_settings(&self.settings).expect("signature configuration")
    }

    /// Starts every pool with the repository's regulations.
    pub async fn start_all(&self) -> Running {
        self.start(regulations(), Options::all(4)).await
    }

    /// Publishes raw bytes as a Request.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: Vec<u8>) {
        let m = Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            message_id: Uuid::new_v4().to_string(),
            body,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            headers: Vec::new(),
            must_route: true,
        };
        self.publisher.publish_all(&[m]).await.expect("publish");
    }

    /// Publishes a Request, signed as its channel's regulation says unless it already carries
    /// a `signature` member.
    pub async fn publish_request(&self, request: &Value) {
        let mut request = request.clone();
        if request.get("signature").is_none() {
            sign_as(&proper_signer(&request), &mut request);
        }
        if let (Some(id), Some(p)) = (request["request_id"].as_str(), request["provider"].as_str()) {
            self.providers.lock().await.insert(id.to_owned(), p.to_owned());
        }
        let key = request.get("service").and_then(Value::as_str).unwrap_or("unknown").to_owned();
        self.publish_raw(EXCHANGE_REQUESTS, &key, serde_json::to_vec(&request).expect("json")).await;
    }

    /// Publishes a PaymentNotice.
    pub async fn publish_payment(&self, notice: &Value) {
        self.publish_raw(
            EXCHANGE_PAYMENTS,
            qyzmet::contract::ROUTING_KEY_PAYMENT,
            serde_json::to_vec(notice).expect("json"),
        )
        .await;
    }

    /// Publishes a Decision, signed by staff of the request's provider unless it already carries
    /// a `signature` member.
    pub async fn publish_decision(&self, service: &str, decision: &Value) {
        let mut decision = decision.clone();
        if decision.get("signature").is_none() {
            let id = decision["request_id"].as_str().unwrap_or_default().to_owned();
            let provider = self.providers.lock().await.get(&id).cloned().unwrap_or_else(|| who::AKTOBE_HEALTH.into());
            sign_as(&format!("staff-{provider}"), &mut decision);
        }
        let decision = &decision;
        self.publish_raw(
            EXCHANGE_DECISIONS,
            &qyzmet::contract::decision_routing_key(service),
            serde_json::to_vec(decision).expect("json"),
        )
        .await;
    }

    /// The status and `traceparent` header of every Outcome of a request, once its final one
    /// arrived.
    pub async fn outcome_traceparents(&self, id: Uuid) -> Vec<Traced> {
        self.final_outcome(id).await;
        self.traceparents.lock().await.get(&id).cloned().unwrap_or_default()
    }

    /// Every Outcome received so far for a request.
    pub async fn outcomes_of(&self, id: Uuid) -> Vec<Outcome> {
        self.outcomes.lock().await.get(&id).cloned().unwrap_or_default()
    }

    /// Waits until an Outcome matching `pred` arrives for the request.
    pub async fn wait_for(&self, id: Uuid, what: &str, pred: impl Fn(&Outcome) -> bool) -> Outcome {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if let Some(o) = self.outcomes_of(id).await.into_iter().find(|o| pred(o)) {
                    return o;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(EVENT_TIMEOUT, wait).await {
            Ok(o) => o,
            Err(_) => panic!(
                "no {what} outcome for {id} within {EVENT_TIMEOUT:?}; received: {:#?}",
                self.outcomes_of(id).await.iter().map(|o| (o.status, o.step.clone())).collect::<Vec<_>>()
            ),
        }
    }

    /// Waits for the final Outcome.
    pub async fn final_outcome(&self, id: Uuid) -> Outcome {
        self.wait_for(id, "final", |o| o.status.is_final()).await
    }

    /// Waits until the request's current step is `step` (an in_progress or registered status).
    pub async fn wait_step(&self, id: Uuid, step: &str) -> Outcome {
        self.wait_for(id, &format!("in_progress({step})"), |o| {
            matches!(o.status, Status::InProgress | Status::Registered) && o.step.as_deref() == Some(step)
        })
        .await
    }

    /// Waits until a request's row is in `state` (events not visible on the outcome exchange,
    /// like "waiting").
    pub async fn wait_state(&self, id: Uuid, state: &str) {
        let wait = async {
            loop {
                if let Ok(Some(row)) = self.store.get_request(id).await
                    && row.state == state
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, wait).await.unwrap_or_else(|_| panic!("{id} never reached state {state}"));
    }

    /// Waits until a Decision for the request is recorded; returns (decision_id, applied, rejection).
    pub async fn wait_decisions(&self, id: Uuid) -> Vec<(String, bool, Option<String>)> {
        let wait = async {
            loop {
                let d = self.store.decisions_for(id).await.expect("decisions");
                if !d.is_empty() {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, wait).await.expect("a decision is recorded")
    }

    /// Messages ready in a queue, exactly (a passive declare; the management API's counters
    /// lag by seconds).
    pub async fn queue_ready(&self, queue: &str) -> u32 {
        let ch = self.broker.channel().await.expect("channel");
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = ch.close(200, "ok".into()).await;
        q.message_count()
    }

    /// Waits until a queue has no message ready.
    pub async fn wait_queue_empty(&self, queue: &str) {
        let wait = async {
            while self.queue_ready(queue).await > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, wait).await.unwrap_or_else(|_| panic!("{queue} never drained"));
    }

    /// Fetches one message from a queue (for dead-letter checks), with its headers.
    pub async fn get_one(&self, queue: &str) -> Option<(Vec<u8>, HashMap<String, String>)> {
        let ch = self.broker.channel().await.expect("channel");
        let got =
            ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true }).await.expect("basic.get")?;
        // Headers as text, the way the pipeline reads them.
        let headers = qyzmet::pipeline::runtime::Incoming::from_delivery(&got.delivery).headers.into_iter().collect();
        Some((got.delivery.data.clone(), headers))
    }

    /// Waits until a queue has a message ready, then returns it.
    pub async fn wait_dead_letter(&self) -> (Vec<u8>, HashMap<String, String>) {
        let wait = async {
            loop {
                if let Some(m) = self.get_one(qyzmet::broker::QUEUE_DEAD).await {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, wait).await.expect("a dead-lettered message")
    }

    /// Every delivery of Outcomes so far, by `message_id`, repeats included.
    pub async fn outcome_deliveries(&self) -> HashMap<String, Vec<Vec<u8>>> {
        self.deliveries.lock().await.clone()
    }

    /// Asserts that every repeated Outcome delivery is identical to the first one under its
    /// `message_id`, and that no request has two different final Outcomes.
    pub async fn assert_repeats_identical(&self) {
        for (id, copies) in self.deliveries.lock().await.iter() {
            assert!(copies.iter().all(|c| c == &copies[0]), "message {id} was delivered with different bodies");
        }
        for (request, outcomes) in self.outcomes.lock().await.iter() {
            let finals = outcomes.iter().filter(|o| o.status.is_final()).count();
            assert!(finals <= 1, "request {request} has {finals} different final outcomes");
        }
    }

    /// Publishes raw bytes with the given headers and no `traceparent` of the harness's own.
    pub async fn publish_with_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) {
        let m = Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            message_id: Uuid::new_v4().to_string(),
            body,
            traceparent: None,
            headers,
            must_route: true,
        };
        self.publisher.publish_all(&[m]).await.expect("publish");
    }

    /// The broker connection of the test (for raw consumers that play a crashing worker).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Messages ready and unacknowledged in a queue, from the management API (its counters
    /// lag; use after the consumers stopped).
    pub async fn queue_totals(&self, queue: &str) -> (u64, u64) {
        let path = format!("/api/queues/{}/{queue}", self.vhost);
        let (_, v) = management("GET", &path, None).await;
        (v["messages_ready"].as_u64().unwrap_or(0), v["messages_unacknowledged"].as_u64().unwrap_or(0))
    }

    /// This test's virtual host.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// This test's database.
    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// Takes this test's database away: no new connections, the existing ones ended (as a
    /// server restart or a network cut would). [`TestEnv::database_back`] undoes it.
    pub async fn database_away(&self) {
        let admin = self.admin_store().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.db_name)))
            .execute(admin.pool())
            .await
            .expect("disallow connections");
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.db_name)
        .execute(admin.pool())
        .await
        .expect("terminate connections");
        admin.close().await;
    }

    /// Lets connections to this test's database in again.
    pub async fn database_back(&self) {
        let admin = self.admin_store().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.db_name)))
            .execute(admin.pool())
            .await
            .expect("allow connections");
        admin.close().await;
    }

    /// A connection to the server's maintenance database, as its administrator.
    pub async fn admin_store(&self) -> Store {
        Store::connect(&services().await.db_admin_url, 1).await.expect("admin connection to PostgreSQL")
    }

    /// Drops the virtual host and the database, after checking that no Outcome was repeated
    /// with a different body.
    pub async fn cleanup(self) {
        self.assert_repeats_identical().await;
        self.broker.close().await;
        self.store.close().await;
        let _ = management("DELETE", &format!("/api/vhosts/{}", self.vhost), None).await;
        if let Ok(admin) = Store::connect(&services().await.db_admin_url, 1).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name)))
                .execute(admin.pool())
                .await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {}", self.worker_role)))
                .execute(admin.pool())
                .await;
            admin.close().await;
        }
    }
}

// ---- sample messages -----------------------------------------------------------------------

/// Demo identities (see demo/registries).
pub mod who {
    /// In ГБД ФЛ, attached to the Akmola polyclinic.
    pub const CITIZEN: &str = "850401300125";
    /// In ГБД ФЛ, attached to the Astana polyclinic.
    pub const CITIZEN_ASTANA: &str = "771102450346";
    /// In ГБД ФЛ, attached nowhere.
    pub const UNATTACHED: &str = "921212500674";
    /// Valid IIN, not in ГБД ФЛ.
    pub const UNKNOWN_PERSON: &str = "900615400236";
    /// Representative named in ENIS-2026-000417.
    pub const REPRESENTATIVE: &str = "800808300565";
    /// Legal entity applying for a licence (in ГБД ЮЛ).
    pub const CLINIC: &str = "120540000785";
    /// Valid BIN, not in ГБД ЮЛ.
    pub const UNKNOWN_ENTITY: &str = "150340000892";
    /// Akmola polyclinic (provider of S1–S3 there).
    pub const AKMOLA_PHC: &str = "051140000113";
    /// Astana polyclinic.
    pub const ASTANA_PHC: &str = "061240000228";
    /// Aktobe health department (licensor).
    pub const AKTOBE_HEALTH: &str = "011040000330";
    /// Astana archives department.
    pub const ASTANA_ARCHIVES: &str = "030940000443";
    /// Valid BIN of an organisation that is not registered.
    pub const UNREGISTERED_PROVIDER: &str = "090840000556";
}

/// A Request with sensible defaults for the service.
pub fn request(service: &str, region: &str, channel: &str, applicant: Value, provider: &str, form: Value) -> Value {
    json!({
        "request_id": Uuid::new_v4().to_string(),
        "service": service,
        "region": region,
        "channel": channel,
        "submitted_at": qyzmet::contract::now_local().to_rfc3339(),
        "applicant": applicant,
        "provider": provider,
        "form": form,
        "attachments": []
    })
}

/// A medical-licence request (S4, Aktobe) of the demo clinic.
/// An S1 request at an Akmola provider for the attached citizen: it completes without staff.
pub fn appointment_at_provider() -> Value {
    request("doctor-appointment", "akmola", "provider", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}))
}

pub fn licence_request(channel: &str, kind: &str) -> Value {
    request(
        "medical-licence",
        "aktobe",
        channel,
        json!({ "bin": who::CLINIC }),
        who::AKTOBE_HEALTH,
        json!({ "kind": kind, "activity": "стоматология" }),
    )
}

/// The request id of a sample.
pub fn id_of(v: &Value) -> Uuid {
    v.get("request_id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()).expect("request_id")
}

/// A PaymentNotice for a request.
pub fn payment(request_id: Uuid, payment_id: &str) -> Value {
    json!({ "payment_id": payment_id, "request_id": request_id.to_string(), "amount": "20000.00", "currency": "KZT",
            "paid_at": qyzmet::contract::now_local().to_rfc3339(), "payer": { "bin": who::CLINIC } })
}

/// A staff Decision.
pub fn decision(request_id: Uuid, verdict: &str) -> Value {
    let mut d = json!({ "decision_id": Uuid::new_v4().to_string(), "request_id": request_id.to_string(), "decision": verdict,
            "decided_at": qyzmet::contract::now_local().to_rfc3339() });
    if verdict == "refuse" {
        d["reason"] = json!({ "ru": "Не соответствует квалификационным требованиям", "kk": "Біліктілік талаптарына сәйкес келмейді" });
    }
    d
}
