//! `qyzmet bench`: how fast and how far the pipeline goes, against its own ceiling.
//!
//! The bench publishes signed requests (a realistic mix of services, regions and channels,
//! including ones that end in refusals; or one service), closed-loop with a bounded window or at
//! a fixed offered rate, answers payments and staff reviews as the gateway and staff would, and
//! waits until every request has its final outcome — a missing one is reported as lost (and the
//! command fails), never as a smaller number. The pools run as separate `qyzmet worker`
//! processes (1, 2, 4… per pool), whose resident memory is sampled.
//!
//! The **ceiling** is measured in the same run on the same broker and database: the same number
//! of hops done by bare publish-confirm-consume-ack with one PostgreSQL write per hop and no
//! business logic. The report prints pipeline ÷ ceiling, so a figure means something on any
//! machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use lapin::options::QueuePurgeOptions;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::demo::{self, Keys};

mod ceiling;
mod cpu;
mod plot;

use ceiling::Ceiling;
use cpu::{CpuSplit, Parties};
use qyzmet::broker::{
    Broker, Message, Publisher, QUEUE_DECISIONS, QUEUE_INTAKE, QUEUE_PAYMENT_NOTICES, pool_name, task_queue,
};
use qyzmet::config::Settings;
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS, Outcome};
use qyzmet::registry::import_file;
use qyzmet::startup::ALL_POOLS;
use qyzmet::store::Store;

/// Options of `qyzmet bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Requests per measured run.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Offered rate in requests per second; without it the load is closed-loop (`--window`).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests in flight in closed-loop mode.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Requests published in the first this-many seconds of a run are answered and checked like
    /// the rest but left out of its latency figures, which are then the steady state's (the
    /// warm-up's are reported apart): freshly started workers meet their first requests with
    /// cold connections, statements and caches.
    #[arg(long = "warmup-secs", value_name = "SECONDS", default_value = "0", value_parser = seconds)]
    pub warmup: Duration,
    /// Also measure every process count with each worker's `/metrics` scraped this often (ms),
    /// as Prometheus would, and report the throughput against the run without: the metrics'
    /// overhead, from a baseline taken in the same bench.
    #[arg(long)]
    pub scrape_ms: Option<u64>,
    /// Worker processes per pool to measure, e.g. `1,2,4` (with `--layout together`: worker
    /// processes, each running every pool).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub processes: Vec<usize>,
    /// How the pools are spread over worker processes: `per-pool` starts `--processes` of
    /// `qyzmet worker` for each pool; `together` starts `--processes` of `qyzmet run`, each
    /// running every pool, as a small install does.
    #[arg(long, value_enum, default_value_t = Layout::PerPool)]
    pub layout: Layout,
    /// In-flight messages per queue in each worker process (on a 2-core machine 128 did best
    /// of 16, 64, 128 and 256).
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Only this service (`doctor-appointment`, …), or these, comma-separated, in their
    /// proportions of the realistic mix (default: the whole mix).
    #[arg(long)]
    pub service: Option<String>,
    /// Skip the ceiling baseline.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Then measure the latency at half the maximum: each run again as an open loop at half the
    /// throughput it reached, and the ceiling at half its own best, in the same bench. A p99
    /// target "at half the maximum rate" is read from these, beside what the bare broker and
    /// database give at their half on the same machine at the same hour. Closed loop only;
    /// use with `--warmup-secs`.
    #[arg(long, conflicts_with_all = ["rate", "backlog"])]
    pub half_max: bool,
    /// Measure every process count this many times, the ceiling's best setting again after
    /// each round. A shared machine's speed drifts by more than a change worth measuring, even
    /// within minutes; each run is therefore divided by the ceiling measured just before and
    /// just after it, and the report gives the median of the rounds' ratios.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20), conflicts_with = "backlog")]
    pub rounds: u16,
    /// Backlog mode: publish this many requests with the pools stopped, then start them
    /// (one process per pool) and measure the drain rate and worker memory over time.
    #[arg(long)]
    pub backlog: Option<usize>,
    /// Give up waiting for outcomes after this many seconds (the missing ones count as lost).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as SVG charts into this directory (throughput and p99 against the
    /// ceiling, latency per step, worker memory over a backlog drain).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Demo registries.
    #[arg(long, default_value = "demo")]
    pub demo_dir: PathBuf,
    /// Where the bench's demo PKI is generated.
    #[arg(long, default_value = ".qyzmet/bench-pki")]
    pub pki_dir: PathBuf,
}

/// How the pools are spread over the worker processes of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A process (or several) for each pool, as `qyzmet worker` runs them: pools scale apart.
    PerPool,
    /// Every pool in each process, as `qyzmet run` runs them. On a small machine fewer
    /// processes mean fewer threads waking each other for the same work.
    Together,
}

impl Layout {
    /// How a run with `processes` worker processes is named in the report.
    pub fn label(self, processes: usize) -> String {
        match self {
            Layout::PerPool => format!("{processes} proc/pool"),
            Layout::Together => format!("{processes} proc, all pools"),
        }
    }
}

/// How a run offers its requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Closed loop: keep this many in flight, publishing as answers come.
    Window(usize),
    /// Open loop: this many per second on a schedule (request `k` due `(k + 1) / rate` after
    /// the start), whatever the pipeline does; a request's latency counts from when it was due.
    Rate(f64),
    /// As fast as the broker confirms (filling a backlog).
    FlatOut,
}

impl Pace {
    /// The offered rate of an open loop.
    pub fn rate(self) -> Option<f64> {
        match self {
            Pace::Rate(r) => Some(r),
            _ => None,
        }
    }
}

/// An open loop's timetable: message `k` is due `(k + 1) / rate` after the start, and its
/// latency counts from then, so that a publish held up hides no wait (no coordinated omission).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    started: Instant,
    rate: f64,
}

impl Schedule {
    /// A timetable starting now.
    pub fn start(rate: f64) -> Schedule {
        Schedule { started: Instant::now(), rate }
    }

    /// When message `k` is due.
    pub fn due_at(&self, k: usize) -> Instant {
        self.started + Duration::from_secs_f64((k + 1) as f64 / self.rate)
    }

    /// Waits until message `next` is due; then how many from `next` on are due by now, at
    /// least one and at most `most`.
    pub async fn wait_for(&self, next: usize, most: usize) -> usize {
        tokio::time::sleep_until(self.due_at(next).into()).await;
        let due = (self.started.elapsed().as_secs_f64() * self.rate) as usize;
        due.saturating_sub(next).clamp(1, most.max(1))
    }
}

/// A driver's publishes. In an open loop each awaits its confirms in a task of its own, so that
/// a slow confirm holds back no message due after it; in a closed loop the driver awaits them
/// itself, which is what holds the window. A failed publish fails the run.
pub struct Confirming {
    /// Whether publishes are confirmed in the background (an open loop).
    background: bool,
    tasks: tokio::task::JoinSet<Result<(), qyzmet::broker::BrokerError>>,
}

impl Confirming {
    /// Publishes for a driver offering messages at `schedule`'s times, or as a closed loop.
    pub fn for_schedule(schedule: Option<Schedule>) -> Confirming {
        Confirming { background: schedule.is_some(), tasks: tokio::task::JoinSet::new() }
    }

    /// Publishes `batch`: in the background in an open loop (failing if an earlier publish
    /// has failed), confirmed before returning in a closed one.
    pub async fn publish(&mut self, publisher: &Arc<Publisher>, batch: Vec<Message>) -> anyhow::Result<()> {
        if !self.background {
            return Ok(publisher.publish_all(&batch).await?);
        }
        let publisher = publisher.clone();
        self.tasks.spawn(async move { publisher.publish_all(&batch).await });
        while let Some(done) = self.tasks.try_join_next() {
            done??;
        }
        Ok(())
    }

    /// Waits for every publish to be confirmed.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        while let Some(done) = self.tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

/// A number of seconds, 0 or more (fractions allowed), as a command-line value.
fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds, 0 or more"))
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    if ms.is_empty() {
        return Latency::default();
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Latency { n: ms.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99), max: ms[ms.len() - 1] }
}

/// One measured run of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Worker processes per pool (per-pool layout), or worker processes (together).
    pub processes: usize,
    /// How the pools were spread over the processes.
    pub layout: Layout,
    /// Every worker's `/metrics` was scraped this often (ms) during the run.
    pub scraped_every_ms: Option<u64>,
    /// Scrapes answered during the run.
    pub scrapes: usize,
    /// Requests published.
    pub requests: usize,
    /// Final outcomes received.
    pub finished: usize,
    /// Requests without a final outcome when the bench gave up.
    pub lost: usize,
    /// Requests that got two different final outcomes (must be 0).
    pub answered_twice: usize,
    /// Extra deliveries of the same final Outcome (same `message_id`; at-least-once publication
    /// after a process could not record that it had published).
    pub duplicate_deliveries: usize,
    /// Wall time from the start of publishing to the last final outcome, seconds.
    pub seconds: f64,
    /// Final outcomes per second.
    pub throughput: f64,
    /// Publish to final outcome (after the warm-up, if one was set).
    pub end_to_end_ms: Latency,
    /// Publish to final outcome for the requests published during the warm-up (`--warmup-secs`),
    /// which `end_to_end_ms` and `step_ms` leave out.
    pub warmup_ms: Option<Latency>,
    /// The same for the requests published in each second of the run (index: seconds since
    /// the start): when the slow ones were sent, so that a stall can be lined up with what else
    /// happened then (a checkpoint, the hypervisor's steal, a sweeper pass).
    pub end_to_end_by_second: Vec<Latency>,
    /// Per step (time from the status that queued it to the next status).
    pub step_ms: BTreeMap<String, Latency>,
    /// Final outcomes by status/kind.
    pub outcomes: BTreeMap<String, usize>,
    /// Peak resident memory of each worker process, MiB, by pool.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Throughput ÷ the ceiling ([`Ceiling::reference`]: the mean of its figures before and
    /// after the runs), when measured.
    pub ratio_to_ceiling: Option<f64>,
    /// Where the machine's CPU went during the run.
    pub cpu: Option<CpuSplit>,
    /// Requests per second offered, in an open loop; `None` in a closed loop.
    pub offered_rate: Option<f64>,
    /// With `--half-max`: the same processes again, offered half this run's throughput.
    pub at_half_max: Option<Box<Run>>,
    /// Which of the bench's `--rounds` the run belongs to, from 1; `None` when it ran one round.
    pub round: Option<usize>,
}

impl Run {
    /// How the run is named in the report: its processes and layout, and its round when the
    /// bench ran several.
    pub fn label(&self) -> String {
        match self.round {
            Some(round) => format!("{}, round {round}", self.layout.label(self.processes)),
            None => self.layout.label(self.processes),
        }
    }

    /// `", scraped N ms"` when its workers' metrics were scraped, else nothing: appended to a
    /// label wherever scraped and plain runs are told apart.
    pub fn scraping(&self) -> String {
        self.scraped_every_ms.map(|ms| format!(", scraped {ms} ms")).unwrap_or_default()
    }
}

/// Backlog drain.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// Requests in the backlog.
    pub requests: usize,
    /// Publish rate while the pools were stopped.
    pub publish_rate: f64,
    /// Final outcomes per second while draining.
    pub drain_rate: f64,
    /// Requests without a final outcome when the bench stopped waiting (`--timeout-secs`).
    pub unfinished: usize,
    /// Seconds spent draining.
    pub drain_seconds: f64,
    /// Worker RSS samples (MiB, the largest process) every few seconds.
    pub rss_mib_over_time: Vec<f64>,
    /// Final outcomes per second in each minute of the drain: whether the pipeline slows down
    /// as the work done (the database) grows.
    pub drain_rate_per_minute: Vec<f64>,
    /// Outcomes by kind.
    pub outcomes: BTreeMap<String, usize>,
    /// Growth of the database on disk over the backlog, bytes per request (the requests' rows,
    /// their audit trail and outcomes; the outbox keeps only what is in flight).
    pub database_bytes_per_request: f64,
    /// Outbox rows left once the drain ended (published rows are deleted).
    pub outbox_rows_after: i64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Machine description.
    pub machine: String,
    /// What was offered.
    pub load: String,
    /// The ceiling.
    pub ceiling: Option<Ceiling>,
    /// The runs.
    pub runs: Vec<Run>,
    /// With `--rounds`: each process count's ratios to the ceiling over the rounds and their
    /// median, the figure to read on a machine whose speed drifts.
    pub rounds: Vec<Rounds>,
    /// The backlog drain.
    pub backlog: Option<Backlog>,
    /// Other systems' reader queues that exist on the bench's virtual host, with the Outcomes
    /// waiting in each: every Outcome of the run is also written to them (a quorum-queue write
    /// each), so the broker's figures include that work.
    pub readers: Vec<(String, u32)>,
}

/// A process count's runs over the bench's rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds {
    /// The runs' processes and layout (and scraping).
    pub label: String,
    /// Throughput ÷ the ceiling around it, round by round.
    pub ratios: Vec<f64>,
    /// Their median.
    pub median: f64,
}

// ---- load ----------------------------------------------------------------------------------

/// One kind of request in the mix, with its weight.
pub(crate) struct Template {
    weight: usize,
    service: &'static str,
    region: &'static str,
    channel: &'static str,
    applicant: (&'static str, &'static str),
    provider: &'static str,
    form: fn() -> Value,
}

pub(crate) fn mix(service: Option<&str>) -> Vec<Template> {
    use demo::{
        AKMOLA_PHC, AKTOBE_HEALTH, ASTANA_ARCHIVES, ASTANA_PHC, CITIZEN, CITIZEN_ASTANA, CLINIC, UNATTACHED,
        UNKNOWN_PERSON,
    };
    let t = |weight, service, region, channel, applicant, provider, form| Template {
        weight,
        service,
        region,
        channel,
        applicant,
        provider,
        form,
    };
    let none: fn() -> Value = || json!({});
    let licence: fn() -> Value = || json!({ "kind": "issue", "activity": "стоматология" });
    let all = vec![
        t(14, "doctor-appointment", "akmola", "portal", ("iin", CITIZEN), AKMOLA_PHC, none),
        t(8, "doctor-appointment", "akmola", "provider", ("iin", CITIZEN), AKMOLA_PHC, none),
        t(10, "doctor-appointment", "astana", "portal", ("iin", CITIZEN_ASTANA), ASTANA_PHC, none),
        t(2, "doctor-appointment", "akmola", "portal", ("iin", UNATTACHED), AKMOLA_PHC, none),
        t(2, "doctor-appointment", "akmola", "provider", ("iin", UNKNOWN_PERSON), AKMOLA_PHC, none),
        t(10, "phc-attachment", "akmola", "portal", ("iin", UNATTACHED), AKMOLA_PHC, none),
        t(8, "phc-attachment", "aktobe", "provider", ("iin", UNATTACHED), AKMOLA_PHC, none),
        t(8, "phc-attachment", "astana", "portal", ("iin", UNATTACHED), ASTANA_PHC, none),
        t(12, "home-doctor-call", "akmola", "portal", ("iin", CITIZEN), AKMOLA_PHC, none),
        t(8, "home-doctor-call", "astana", "provider", ("iin", CITIZEN_ASTANA), ASTANA_PHC, none),
        t(2, "home-doctor-call", "akmola", "provider", ("iin", UNATTACHED), AKMOLA_PHC, none),
        t(4, "medical-licence", "aktobe", "portal", ("bin", CLINIC), AKTOBE_HEALTH, licence),
        t(2, "medical-licence", "aktobe", "provider", ("bin", CLINIC), AKTOBE_HEALTH, licence),
        t(4, "archive-certificate", "astana", "portal", ("iin", CITIZEN_ASTANA), ASTANA_ARCHIVES, none),
    ];
    all.into_iter().filter(|t| service.is_none_or(|s| s.split(',').any(|s| s.trim() == t.service))).collect()
}

/// The mix a bench runs: [`mix`] for `--service`, refused early when a name in the list is no
/// service of the mix (a typo would otherwise surface only after the ceiling was measured).
pub(crate) fn chosen_mix(service: Option<&str>) -> anyhow::Result<Vec<Template>> {
    let mut known: Vec<&str> = Vec::new();
    for t in mix(None) {
        if !known.contains(&t.service) {
            known.push(t.service);
        }
    }
    for name in service.iter().flat_map(|s| s.split(',')).map(str::trim) {
        anyhow::ensure!(
            known.contains(&name),
            "--service {name}: no such service in the mix (it has {})",
            known.join(", ")
        );
    }
    Ok(mix(service))
}

/// Runs of at most this many requests have them built and signed before the clock starts
/// ([`Prepared`]); a larger backlog signs each as it publishes.
const PREPARE_AT_MOST: usize = 50_000;

/// A run's requests, built and signed before its clock starts: an upstream system signs on
/// its own machine, and signing on the machine being measured (ES256 and RS256, about a tenth
/// of the bench's own CPU) took cores from the pipeline that production would not. The
/// ceiling's driver likewise publishes bodies made beforehand.
pub(crate) struct Prepared(std::vec::IntoIter<(Uuid, String, Vec<u8>)>);

impl Prepared {
    /// The first `n` requests of the mix of `args`, or `None` when `n` is more than
    /// [`PREPARE_AT_MOST`] (they would take too much memory; they are signed as published).
    pub(crate) async fn of(args: &BenchArgs, n: usize, keys: &Arc<Mutex<Keys>>) -> anyhow::Result<Option<Prepared>> {
        if n > PREPARE_AT_MOST {
            return Ok(None);
        }
        let mix = chosen_mix(args.service.as_deref())?;
        let mut k = keys.lock().await;
        let all = (0..n).map(|i| make_request(&mut k, &mix, i)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Prepared(all.into_iter())))
    }
}

/// Builds and signs the i-th request of the mix.
pub(crate) fn make_request(keys: &mut Keys, mix: &[Template], i: usize) -> anyhow::Result<(Uuid, String, Vec<u8>)> {
    let total: usize = mix.iter().map(|t| t.weight).sum();
    let mut k = (i * 7919) % total.max(1);
    let t = mix
        .iter()
        .find(|t| {
            if k < t.weight {
                true
            } else {
                k -= t.weight;
                false
            }
        })
        .context("empty mix")?;
    let mut v = demo::req(t.service, t.region, t.channel, t.applicant, t.provider, (t.form)());
    keys.sign(&demo::proper_signer(&v), &mut v)?;
    let id = v["request_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).context("id")?;
    Ok((id, t.service.to_owned(), serde_json::to_vec(&v)?))
}

// ---- worker processes ----------------------------------------------------------------------

struct Workers {
    children: Vec<(String, tokio::process::Child)>,
    peak_kib: Arc<Mutex<HashMap<u32, (String, u64)>>>,
    sampler: tokio::task::JoinHandle<()>,
    /// Scrapes of `/metrics` answered so far (with `--scrape-ms`).
    scrapes: Arc<std::sync::atomic::AtomicUsize>,
    scraper: Option<tokio::task::JoinHandle<()>>,
}

/// A free loopback port (the probe socket is closed again; the worker binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /metrics` over HTTP/1.1; whether a whole answer came back.
async fn scrape(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut body = Vec::new();
    s.write_all(req.as_bytes()).await.is_ok()
        && s.read_to_end(&mut body).await.is_ok()
        && body.starts_with(b"HTTP/1.1 200")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl Workers {
    /// Starts `per_pool` processes for each pool (per-pool layout), or `per_pool` processes
    /// running every pool (together), and waits until every queue has that many consumers.
    async fn start(
        settings: &Settings,
        per_pool: usize,
        layout: Layout,
        concurrency: usize,
        broker: &Broker,
        scrape_ms: Option<u64>,
    ) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("own executable")?;
        let concurrency = concurrency.to_string();
        let kinds: Vec<(&str, Vec<&str>)> = match layout {
            Layout::PerPool => ALL_POOLS
                .iter()
                .map(|&p| (pool_name(p), vec!["worker", pool_name(p), "--concurrency", &concurrency]))
                .collect(),
            Layout::Together => vec![("all pools", vec!["run", "--concurrency", &concurrency])],
        };
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for (name, args) in &kinds {
            for _ in 0..per_pool {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
                addrs.push(addr);
                let child = tokio::process::Command::new(&exe)
                    .args(args)
                    .envs(settings.to_env())
                    .env("QYZMET_HTTP_ADDR", addr.to_string())
                    // Keep every process's connections (this many, and the few of the batch
                    // kinds its pool uses, at most seven) within the local PostgreSQL's
                    // max_connections of 200.
                    .env("QYZMET_DB_POOL_SIZE", (130 / (kinds.len() * per_pool)).clamp(4, 16).to_string())
                    .env("QYZMET_LOG", "warn")
                    .kill_on_drop(true)
                    .spawn()
                    .context("spawn a qyzmet worker process")?;
                children.push(((*name).to_owned(), child));
            }
        }
        // Wait until every pool's queues have their consumers.
        let queues: Vec<String> = vec![
            QUEUE_INTAKE.into(),
            task_queue(qyzmet::regulations::PoolName::Registry),
            task_queue(qyzmet::regulations::PoolName::Payment),
            QUEUE_PAYMENT_NOTICES.into(),
            task_queue(qyzmet::regulations::PoolName::Review),
            QUEUE_DECISIONS.into(),
            task_queue(qyzmet::regulations::PoolName::Result),
        ];
        let ready = async {
            loop {
                let mut all = true;
                for q in &queues {
                    if consumers(broker, q).await < per_pool as u32 {
                        all = false;
                    }
                }
                if all {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .context("worker processes did not start consuming")?;
        let peak_kib: Arc<Mutex<HashMap<u32, (String, u64)>>> = Arc::new(Mutex::new(HashMap::new()));
        let pids: Vec<(u32, String)> = children.iter().filter_map(|(p, c)| c.id().map(|id| (id, p.clone()))).collect();
        let peaks = peak_kib.clone();
        let sampler = tokio::spawn(async move {
            loop {
                for (pid, pool) in &pids {
                    if let Some(kib) = rss_kib(*pid) {
                        let mut g = peaks.lock().await;
                        let e = g.entry(*pid).or_insert((pool.clone(), 0));
                        e.1 = e.1.max(kib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let scrapes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let scraper = scrape_ms.map(|ms| {
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(ms.max(1)));
                loop {
                    tick.tick().await;
                    for addr in &addrs {
                        if scrape(*addr).await {
                            scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            })
        });
        Ok(Workers { children, peak_kib, sampler, scrapes, scraper })
    }

    fn pids(&self) -> Vec<(String, u32)> {
        self.children.iter().filter_map(|(pool, c)| c.id().map(|pid| (pool.clone(), pid))).collect()
    }

    async fn largest_rss_mib(&self) -> f64 {
        self.children.iter().filter_map(|(_, c)| c.id().and_then(rss_kib)).max().unwrap_or(0) as f64 / 1024.0
    }

    async fn stop(mut self) -> BTreeMap<String, f64> {
        self.sampler.abort();
        if let Some(s) = &self.scraper {
            s.abort();
        }
        terminate(self.children.iter_mut().map(|(_, c)| c)).await;
        let mut by_pool = BTreeMap::new();
        for (pool, kib) in self.peak_kib.lock().await.values() {
            let e = by_pool.entry(pool.clone()).or_insert(0.0f64);
            *e = e.max(*kib as f64 / 1024.0);
        }
        by_pool
    }
}

/// Stops worker processes: SIGTERM to every one, then up to 40 s each to finish its in-flight
/// work, then SIGKILL.
pub(crate) async fn terminate<'a>(children: impl IntoIterator<Item = &'a mut tokio::process::Child>) {
    let children: Vec<&mut tokio::process::Child> = children.into_iter().collect();
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for c in children {
        if tokio::time::timeout(Duration::from_secs(40), c.wait()).await.is_err() {
            let _ = c.start_kill();
        }
    }
}

async fn consumers(broker: &Broker, queue: &str) -> u32 {
    qyzmet::broker::queue_counts(broker, queue).await.1
}

// ---- observing outcomes ----------------------------------------------------------------------

#[derive(Default)]
struct Track {
    published: Option<Instant>,
    events: Vec<(String, Instant)>,
    finals: usize,
    /// A later final outcome that differs from the first (a real second answer).
    contradicted: bool,
    final_at: Option<Instant>,
    outcome: String,
    service: String,
}

#[derive(Default)]
struct Board {
    tracks: HashMap<Uuid, Track>,
    finished: usize,
    refused: usize,
    /// Woken at each first final outcome, so that a closed loop publishes as soon as its window
    /// has room instead of looking every millisecond (a thousand wake-ups a second on the
    /// machine it measures).
    room: Arc<tokio::sync::Notify>,
}

async fn outcome_listener(
    broker: Arc<Broker>,
    board: Arc<Mutex<Board>>,
    keys: Arc<Mutex<Keys>>,
    publisher: Arc<Publisher>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (ch, mut consumer) = qyzmet::broker::subscribe_outcomes(&broker).await?;
    Ok(tokio::spawn(async move {
        let _keep = ch;
        while let Some(Ok(d)) = consumer.next().await {
            let now = Instant::now();
            let Ok(o) = serde_json::from_slice::<Outcome>(&d.data) else { continue };
            let step = o.step.clone().unwrap_or_default();
            let (act, service) = {
                let mut b = board.lock().await;
                let Some(t) = b.tracks.get_mut(&o.request_id) else { continue };
                if o.status.is_final() {
                    t.finals += 1;
                    let outcome = match &o.reason {
                        Some(r) => format!("refused {}", r.code.clone().unwrap_or_else(|| r.kind.clone())),
                        None => "completed".into(),
                    };
                    if t.finals > 1 && outcome != t.outcome {
                        t.contradicted = true;
                    }
                    if t.finals == 1 {
                        t.final_at = Some(now);
                        t.outcome = outcome;
                        t.events.push((step.clone(), now));
                        let refused = o.reason.is_some();
                        b.finished += 1;
                        if refused {
                            b.refused += 1;
                        }
                        b.room.notify_one();
                    }
                    continue;
                }
                t.events.push((step.clone(), now));
                (step, t.service.clone())
            };
            // Answer as the payment gateway and as staff.
            let id = o.request_id;
            let msg = match act.as_str() {
                "payment" => Some((
                    EXCHANGE_PAYMENTS,
                    qyzmet::contract::ROUTING_KEY_PAYMENT.to_owned(),
                    demo::payment_notice(id),
                )),
                "review" if matches!(service.as_str(), "medical-licence" | "archive-certificate") => {
                    let provider =
                        if service == "medical-licence" { demo::AKTOBE_HEALTH } else { demo::ASTANA_ARCHIVES };
                    let mut k = keys.lock().await;
                    demo::staff_decision(&mut k, &format!("staff-{provider}"), id, true)
                        .ok()
                        .map(|b| (EXCHANGE_DECISIONS, qyzmet::contract::decision_routing_key(&service), b))
                }
                _ => None,
            };
            if let Some((exchange, key, body)) = msg {
                let m = Message {
                    exchange: exchange.into(),
                    routing_key: key,
                    message_id: format!("bench-{act}-{id}"),
                    body,
                    traceparent: None,
                    headers: Vec::new(),
                    must_route: true,
                };
                let p = publisher.clone();
                tokio::spawn(async move {
                    let _ = p.publish_all(&[m]).await;
                });
            }
        }
    }))
}

fn progress(label: &str, published: usize, total: usize, finished: usize, refused: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = finished as f64 / secs;
    let eta = if rate > 0.0 { (total.saturating_sub(finished)) as f64 / rate } else { f64::NAN };
    let width = 30;
    let filled = (finished * width / total.max(1)).min(width);
    let line = format!(
        "{label} [{}{}] published {published}/{total} · completed {} · refused {refused} · {rate:.0}/s · ETA {eta:.0}s",
        "#".repeat(filled),
        "-".repeat(width - filled),
        finished - refused
    );
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}   ");
    } else {
        eprintln!("{line}");
    }
    let _ = std::io::stderr().flush();
}

/// Publishes `n` requests (closed-loop or at a rate) and waits for their outcomes.
///
/// At a rate, request `k` is due `(k + 1) / rate` seconds after the start, and its latency counts
/// from then (not from when it was actually sent, so a generator that falls behind cannot hide
/// it); each batch's confirms are awaited in a task of its own, so that a slow confirm does not
/// hold back the requests due meanwhile, as it would not hold back other upstream systems.
#[allow(clippy::too_many_arguments)]
async fn drive(
    label: &str,
    args: &BenchArgs,
    n: usize,
    keys: &Arc<Mutex<Keys>>,
    mut prepared: Option<Prepared>,
    publisher: &Arc<Publisher>,
    board: &Arc<Mutex<Board>>,
    pace: Pace,
) -> anyhow::Result<(Instant, Vec<Uuid>)> {
    let mix = chosen_mix(args.service.as_deref())?;
    let room = board.lock().await.room.clone();
    let started = Instant::now();
    let schedule = pace.rate().map(Schedule::start);
    let mut confirming = Confirming::for_schedule(schedule);
    let mut ids = Vec::with_capacity(n);
    let mut last_progress = Instant::now();
    let mut i = 0;
    while i < n {
        let batch = match (schedule, pace) {
            (Some(schedule), _) => schedule.wait_for(i, 50).await,
            (None, Pace::Window(window)) => {
                let in_flight = i - board.lock().await.finished;
                if in_flight >= window {
                    // The timeout only bounds a wait that a lost wake-up could prolong.
                    let _ = tokio::time::timeout(Duration::from_millis(100), room.notified()).await;
                    0
                } else {
                    (window - in_flight).min(50)
                }
            }
            (None, _) => 50,
        };
        let batch = batch.min(n - i);
        if batch > 0 {
            let mut messages = Vec::with_capacity(batch);
            {
                let mut b = board.lock().await;
                for j in 0..batch {
                    // The keys are taken only to sign here: the outcome listener signs staff
                    // decisions with them meanwhile.
                    let (id, service, body) = match prepared.as_mut().and_then(|p| p.0.next()) {
                        Some(made) => made,
                        None => make_request(&mut *keys.lock().await, &mix, i + j)?,
                    };
                    let published = schedule.map_or_else(Instant::now, |s| s.due_at(i + j));
                    b.tracks
                        .insert(id, Track { published: Some(published), service: service.clone(), ..Track::default() });
                    ids.push(id);
                    messages.push(Message {
                        exchange: EXCHANGE_REQUESTS.into(),
                        routing_key: service,
                        message_id: id.to_string(),
                        body,
                        traceparent: None,
                        headers: Vec::new(),
                        must_route: true,
                    });
                }
            }
            confirming.publish(publisher, messages).await?;
            i += batch;
        }
        if last_progress.elapsed() > Duration::from_millis(500) {
            let b = board.lock().await;
            progress(label, i, n, b.finished, b.refused, started);
            last_progress = Instant::now();
        }
    }
    confirming.finish().await?;
    Ok((started, ids))
}

async fn wait_all(label: &str, n: usize, started: Instant, board: &Arc<Mutex<Board>>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (finished, refused) = {
            let b = board.lock().await;
            (b.finished, b.refused)
        };
        progress(label, n, n, finished, refused, started);
        if finished >= n || Instant::now() > deadline {
            if std::io::stderr().is_terminal() {
                eprintln!();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn summarise(
    processes: usize,
    layout: Layout,
    n: usize,
    started: Instant,
    warmup: Duration,
    board: &Board,
    peak: BTreeMap<String, f64>,
) -> Run {
    let mut e2e = Vec::new();
    let mut warm = Vec::new();
    let mut by_second: Vec<Vec<f64>> = Vec::new();
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut lost = 0;
    let mut twice = 0;
    let mut duplicates = 0;
    let mut last = started;
    for t in board.tracks.values() {
        let Some(published) = t.published else { continue };
        let in_warmup = published < started + warmup;
        match t.final_at {
            Some(f) => {
                let ms = (f - published).as_secs_f64() * 1000.0;
                if in_warmup {
                    warm.push(ms)
                } else {
                    e2e.push(ms)
                }
                let second = usize::try_from(published.saturating_duration_since(started).as_secs()).unwrap_or(0);
                if by_second.len() <= second {
                    by_second.resize_with(second + 1, Vec::new);
                }
                by_second[second].push(ms);
                last = last.max(f);
                *outcomes.entry(t.outcome.clone()).or_default() += 1;
            }
            None => lost += 1,
        }
        if t.contradicted {
            twice += 1;
        }
        duplicates += t.finals.saturating_sub(1);
        if in_warmup {
            continue;
        }
        // The step named by each status was queued at that status; it ended at the next one.
        let mut current = ("intake".to_owned(), published);
        for (step, at) in &t.events {
            steps.entry(current.0.clone()).or_default().push((*at - current.1).as_secs_f64() * 1000.0);
            current = (step.clone(), *at);
        }
    }
    let seconds = (last - started).as_secs_f64().max(0.001);
    Run {
        scraped_every_ms: None,
        scrapes: 0,
        processes,
        layout,
        requests: n,
        finished: board.finished,
        lost,
        answered_twice: twice,
        duplicate_deliveries: duplicates,
        seconds,
        throughput: board.finished as f64 / seconds,
        end_to_end_ms: latency(e2e),
        warmup_ms: (!warmup.is_zero()).then(|| latency(warm)),
        end_to_end_by_second: by_second.into_iter().map(latency).collect(),
        step_ms: steps.into_iter().map(|(k, v)| (k, latency(v))).collect(),
        outcomes,
        peak_rss_mib: peak,
        ratio_to_ceiling: None,
        cpu: None,
        offered_rate: None,
        at_half_max: None,
        round: None,
    }
}

// ---- the command -----------------------------------------------------------------------------

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:")).map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} memory")
}

pub(crate) async fn purge_pipeline_queues(broker: &Broker) -> anyhow::Result<()> {
    let ch = broker.channel().await?;
    for q in qyzmet::broker::pipeline_queues().into_iter().filter(|q| q != qyzmet::broker::QUEUE_DEAD) {
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await?;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// A demo PKI in `pki_dir`, the settings pointed at it, the database migrated and the demo
/// registries loaded: what the benchmark and the drill start from.
pub(crate) async fn demo_world(
    settings: &Settings,
    pki_dir: &std::path::Path,
    demo_dir: &std::path::Path,
) -> anyhow::Result<(Settings, Store, qyzmet_demo_pki::PkiPaths)> {
    let pki = qyzmet_demo_pki::generate_demo(pki_dir).map_err(|e| anyhow::anyhow!("demo PKI: {e}"))?;
    let settings = demo::with_pki(settings.clone(), &pki);
    let store = Store::connect(settings.migration_url(), 8).await.context("cannot connect to PostgreSQL")?;
    store.migrate().await?;
    for f in ["persons.jsonl", "legal-entities.csv", "powers-of-attorney.jsonl", "attachments.csv"] {
        import_file(&store, &demo_dir.join("registries").join(f), None).await?;
    }
    Ok((settings, store, pki))
}

/// The reader queues of the systems file in force and of the demo's (`demo.outcomes`, which
/// `qyzmet demo` declares and nobody reads) that exist on the bench's virtual host, with the
/// Outcomes waiting in each.
async fn other_readers(broker: &Broker, settings: &Settings, demo_dir: &std::path::Path) -> Vec<(String, u32)> {
    let demo = qyzmet::systems::Systems::load(&demo_dir.join("systems.toml")).ok();
    let in_force = settings.systems().ok().flatten();
    let mut names: Vec<String> = [demo, in_force]
        .iter()
        .flatten()
        .flat_map(|s| s.systems().iter().flat_map(|sys| sys.queues.iter().map(|q| q.name.clone())))
        .collect();
    names.sort();
    names.dedup();
    let mut found = Vec::new();
    for name in names {
        if let Some((waiting, _)) = qyzmet::broker::queue_counts_if_any(broker, &name).await {
            found.push((name, waiting));
        }
    }
    found
}

/// What every measured run of one bench shares.
struct Bench<'a> {
    settings: &'a Settings,
    args: &'a BenchArgs,
    broker: &'a Arc<Broker>,
    publisher: &'a Arc<Publisher>,
    keys: &'a Arc<Mutex<Keys>>,
    parties: &'a Parties,
}

impl Bench<'_> {
    /// One run: `k` worker processes (per pool, or each with every pool, as `--layout` says),
    /// `--requests` offered at `pace`, every final outcome awaited; the workers are stopped and
    /// the queues purged afterwards.
    async fn run(&self, k: usize, scrape_ms: Option<u64>, pace: Pace) -> anyhow::Result<Run> {
        let args = self.args;
        let board = Arc::new(Mutex::new(Board::default()));
        let listener =
            outcome_listener(self.broker.clone(), board.clone(), self.keys.clone(), self.publisher.clone()).await?;
        let workers = Workers::start(self.settings, k, args.layout, args.concurrency, self.broker, scrape_ms).await?;
        let mut label = args.layout.label(k);
        if let Some(ms) = scrape_ms {
            label = format!("{label}, /metrics scraped every {ms} ms");
        }
        if let Some(r) = pace.rate() {
            label = format!("{label}, {r:.0}/s");
        }
        let prepared = Prepared::of(args, args.requests, self.keys).await?;
        let parties = self.parties.with_workers(workers.pids());
        let before = parties.snapshot();
        let (started, _) =
            drive(&label, args, args.requests, self.keys, prepared, self.publisher, &board, pace).await?;
        wait_all(&label, args.requests, started, &board, Duration::from_secs(args.timeout_secs)).await;
        let cpu = CpuSplit::between(&before, &parties.snapshot(), board.lock().await.finished);
        let scrapes = workers.scrapes.load(std::sync::atomic::Ordering::Relaxed);
        let peak = workers.stop().await;
        listener.abort();
        let mut run = summarise(k, args.layout, args.requests, started, args.warmup, &*board.lock().await, peak).await;
        run.cpu = Some(cpu);
        run.scraped_every_ms = scrape_ms;
        run.scrapes = scrapes;
        run.offered_rate = pace.rate();
        purge_pipeline_queues(self.broker).await?;
        Ok(run)
    }
}

/// Runs the benchmark and prints the report. Fails when a request was lost or answered twice.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    chosen_mix(args.service.as_deref())?;
    let (settings, store, pki) = demo_world(settings, &args.pki_dir, &args.demo_dir).await?;
    let broker = settings.broker("qyzmet bench").await?;
    purge_pipeline_queues(&broker).await?;
    let publisher = Arc::new(broker.publisher().await?);
    let keys = Arc::new(Mutex::new(Keys::new(pki.clone())));
    let load = match args.rate {
        Some(r) => format!("{r} requests/s offered"),
        None => format!("closed loop, {} in flight", args.window),
    };
    let mix_name = args.service.clone().unwrap_or_else(|| "realistic mix of S1–S5 incl. refusals".into());
    let load = match args.backlog {
        Some(n) => format!("backlog of {n} requests, {mix_name}"),
        None => format!("{} requests per run, {mix_name}, {load}", args.requests),
    };
    let readers = other_readers(&broker, &settings, &args.demo_dir).await;
    for (queue, waiting) in &readers {
        eprintln!(
            "note: the reader queue {queue} exists on this virtual host ({waiting} Outcomes waiting): it gets this \
             run's Outcomes too, and the broker's figures include that work. Run on a virtual host of its own to \
             leave it out (README, «Performance»)."
        );
    }
    let mut report = Report {
        machine: machine(),
        load,
        ceiling: None,
        runs: Vec::new(),
        rounds: Vec::new(),
        backlog: None,
        readers,
    };
    let parties = Parties::find(&settings.amqp_url, &settings.database_url);

    if let Some(n) = args.backlog {
        report.backlog = Some(backlog(&settings, args, n, &broker, &publisher, &keys, &store).await?);
    } else {
        if !args.no_ceiling {
            eprintln!(
                "measuring the ceiling: {} quorum-queue hops of publish-confirm-consume-ack with one PostgreSQL write \
                 each, at prefetch {:?}…",
                ceiling::HOPS,
                ceiling::IN_FLIGHT
            );
            report.ceiling =
                Some(ceiling::measure(&broker, &settings, args.requests, args.window, &parties, args.half_max).await?);
        }
        // With scraping: a warm-up run (not reported: the first run on fresh tables is the
        // fastest), then plain, scraped, scraped, plain, so that a drift during the runs (tables
        // growing, a checkpoint) weighs on both sides alike.
        let variants: Vec<(usize, Option<u64>, bool)> = args
            .processes
            .iter()
            .flat_map(|&k| match args.scrape_ms {
                Some(ms) => {
                    vec![
                        (k, None, true),
                        (k, None, false),
                        (k, Some(ms), false),
                        (k, Some(ms), false),
                        (k, None, false),
                    ]
                }
                None => vec![(k, None, false)],
            })
            .collect();
        let bench =
            Bench { settings: &settings, args, broker: &broker, publisher: &publisher, keys: &keys, parties: &parties };
        let rounds = usize::from(args.rounds);
        let pace = args.rate.map_or(Pace::Window(args.window), Pace::Rate);
        for round in 1..=rounds {
            for &(k, scrape_ms, warm_up) in &variants {
                if warm_up && round > 1 {
                    continue;
                }
                let mut run = bench.run(k, scrape_ms, pace).await?;
                if warm_up {
                    eprintln!("warm-up run: {:.1} req/s (not reported)", run.throughput);
                    anyhow::ensure!(
                        run.lost == 0 && run.answered_twice == 0,
                        "the warm-up run lost or doubled requests"
                    );
                    continue;
                }
                run.round = (rounds > 1).then_some(round);
                if args.half_max && scrape_ms.is_none() {
                    let half = run.throughput / 2.0;
                    eprintln!("{}: again at half its maximum, {half:.1} requests/s offered…", run.label());
                    run.at_half_max = Some(Box::new(bench.run(k, None, Pace::Rate(half)).await?));
                }
                report.runs.push(run);
            }
            if let Some(c) = report.ceiling.as_mut().filter(|_| !report.runs.is_empty()) {
                let again =
                    ceiling::again(&broker, &settings, args.requests, args.window, &parties, c.in_flight).await?;
                c.again.push(again);
            }
        }
        if let Some(c) = &report.ceiling {
            for run in &mut report.runs {
                run.ratio_to_ceiling = Some(run.throughput / c.around(run.round.unwrap_or(1)));
            }
            report.rounds = over_rounds(&report.runs);
        }
    }
    broker.close().await;
    store.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if let Some(dir) = &args.plot {
        for file in plot::write(&report, dir)? {
            eprintln!("chart written: {}", file.display());
        }
    }
    let every_run = || report.runs.iter().flat_map(|r| std::iter::once(r).chain(r.at_half_max.as_deref()));
    let lost: usize = every_run().map(|r| r.lost).sum::<usize>() + report.backlog.as_ref().map_or(0, |b| b.unfinished);
    let twice: usize = every_run().map(|r| r.answered_twice).sum();
    anyhow::ensure!(
        lost == 0 && twice == 0,
        "{lost} request(s) without a final outcome (lost, or still queued when the bench stopped waiting), {twice} answered twice"
    );
    Ok(())
}

async fn backlog(
    settings: &Settings,
    args: &BenchArgs,
    n: usize,
    broker: &Arc<Broker>,
    publisher: &Arc<Publisher>,
    keys: &Arc<Mutex<Keys>>,
    store: &Store,
) -> anyhow::Result<Backlog> {
    let size_before = store.database_bytes().await?;
    let board = Arc::new(Mutex::new(Board::default()));
    let listener = outcome_listener(broker.clone(), board.clone(), keys.clone(), publisher.clone()).await?;
    eprintln!("backlog: publishing {n} requests with the pools stopped…");
    let pace = args.rate.map_or(Pace::FlatOut, Pace::Rate);
    let (published_at, _) = drive("backlog publish", args, n, keys, None, publisher, &board, pace).await?;
    let publish_rate = n as f64 / published_at.elapsed().as_secs_f64().max(0.001);
    eprintln!("backlog: starting {} and draining…", args.layout.label(1));
    let workers = Workers::start(settings, 1, args.layout, args.concurrency, broker, None).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut rss = Vec::new();
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let mut per_minute = Vec::new();
    let (mut minute_started, mut finished_before) = (Instant::now(), 0);
    loop {
        let (finished, refused) = {
            let b = board.lock().await;
            (b.finished, b.refused)
        };
        if last_sample.elapsed() >= Duration::from_secs(5) {
            rss.push(workers.largest_rss_mib().await);
            last_sample = Instant::now();
        }
        if minute_started.elapsed() >= Duration::from_secs(60) {
            per_minute.push((finished - finished_before) as f64 / minute_started.elapsed().as_secs_f64());
            (minute_started, finished_before) = (Instant::now(), finished);
        }
        progress("backlog drain", n, n, finished, refused, started);
        if finished >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let drain_secs = started.elapsed().as_secs_f64();
    let _ = workers.stop().await;
    listener.abort();
    let b = board.lock().await;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for t in b.tracks.values().filter(|t| t.final_at.is_some()) {
        *outcomes.entry(t.outcome.clone()).or_default() += 1;
    }
    let seen: HashSet<&Uuid> = b.tracks.iter().filter(|(_, t)| t.final_at.is_some()).map(|(id, _)| id).collect();
    let grown = store.database_bytes().await? - size_before;
    Ok(Backlog {
        database_bytes_per_request: grown as f64 / n.max(1) as f64,
        outbox_rows_after: store.outbox_backlog().await?,
        requests: n,
        publish_rate,
        drain_rate: b.finished as f64 / drain_secs.max(0.001),
        unfinished: n - seen.len(),
        drain_seconds: drain_secs,
        rss_mib_over_time: rss,
        drain_rate_per_minute: per_minute,
        outcomes,
    })
}

/// With `--half-max`: each run's latency at half its maximum beside the ceiling's at half its
/// own, and how busy the machine was meanwhile.
fn print_half_max(r: &Report) {
    let halves: Vec<(String, &Run)> =
        r.runs.iter().filter_map(|run| run.at_half_max.as_deref().map(|h| (run.label(), h))).collect();
    let ceiling = r.ceiling.as_ref().and_then(|c| c.at_half_max.as_ref());
    if halves.is_empty() && ceiling.is_none() {
        return;
    }
    let busy = |cpu: &CpuSplit, unit: &str| {
        format!(
            "machine busy {:.2} cores (steal {:.2}), {:.2} ms CPU per {unit}",
            cpu.machine_s / cpu.wall_s.max(0.001),
            cpu.steal_s / cpu.wall_s.max(0.001),
            1000.0 * cpu.machine_s / cpu.requests.max(1) as f64,
        )
    };
    println!("\nlatency at half the maximum (open loop, in this bench; warm-up left out as above):");
    if let Some(c) = ceiling {
        let l = &c.end_to_end_ms;
        println!(
            "  {:>17} {:>6.0} msg/s offered: p50 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1} ms; {}",
            "ceiling",
            c.rate,
            l.p50,
            l.p95,
            l.p99,
            l.max,
            busy(&c.cpu, "message")
        );
    }
    for (label, h) in halves {
        let l = &h.end_to_end_ms;
        let against = ceiling
            .map(|c| format!(" (×{:.2} the ceiling's)", l.p99 / c.end_to_end_ms.p99.max(0.001)))
            .unwrap_or_default();
        println!(
            "  {:>17} {:>6.0} req/s offered: p50 {:.1}, p95 {:.1}, p99 {:.1}{against}, max {:.1} ms; lost {}; {}",
            label,
            h.offered_rate.unwrap_or_default(),
            l.p50,
            l.p95,
            l.p99,
            l.max,
            h.lost,
            h.cpu.as_ref().map(|cpu| busy(cpu, "request")).unwrap_or_default()
        );
    }
}

/// The ratios to the ceiling of the runs of each process count (and scraping) over the
/// bench's rounds, in the order they ran, with their median; none when it ran one round.
fn over_rounds(runs: &[Run]) -> Vec<Rounds> {
    let mut by: Vec<(String, Vec<f64>)> = Vec::new();
    for run in runs.iter().filter(|run| run.round.is_some()) {
        let Some(ratio) = run.ratio_to_ceiling else { continue };
        let label = format!("{}{}", run.layout.label(run.processes), run.scraping());
        match by.iter_mut().find(|(l, _)| *l == label) {
            Some((_, ratios)) => ratios.push(ratio),
            None => by.push((label, vec![ratio])),
        }
    }
    by.into_iter().map(|(label, ratios)| Rounds { median: median(&ratios), label, ratios }).collect()
}

/// The median of `xs` (the mean of the middle two for an even count); 0 for none.
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn print_report(r: &Report) {
    println!("\nqyzmet bench — {}\nmachine: {}\n", r.load, r.machine);
    for (queue, waiting) in &r.readers {
        println!("reader queue {queue} also got this run's Outcomes ({waiting} waiting at the start)");
    }
    if let Some(c) = &r.ceiling {
        println!(
            "ceiling ({} quorum-queue hops, publish-confirm-consume-ack + 1 PostgreSQL write per hop): {:.0} msg/s \
             at prefetch {} (tried {}), p50 {:.1} ms, p99 {:.1} ms",
            c.hops,
            c.throughput,
            c.in_flight,
            c.tried.iter().map(|(p, t)| format!("{p}: {t:.0}")).collect::<Vec<_>>().join(", "),
            c.end_to_end_ms.p50,
            c.end_to_end_ms.p99
        );
        if let [after] = c.again.as_slice() {
            let drift = after / c.throughput.max(0.001);
            println!(
                "ceiling again after the runs: {after:.0} msg/s (×{drift:.2} the first); each run's ÷ceiling is \
                 against their mean, {:.0}{}",
                c.around(1),
                if (drift - 1.0).abs() > 0.1 {
                    ": the machine's speed changed while the runs went on, so read the ratios with that spread"
                } else {
                    ""
                }
            );
        } else if !c.again.is_empty() {
            let all = std::iter::once(c.throughput).chain(c.again.iter().copied());
            let (low, high) = all.fold((f64::MAX, 0.0_f64), |(l, h), t| (l.min(t), h.max(t)));
            println!(
                "ceiling again after each round: {} msg/s (from ×{:.2} to ×{:.2} the first); each run's ÷ceiling is \
                 against the mean of the ceiling just before and just after its round",
                c.again.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(", "),
                low / c.throughput.max(0.001),
                high / c.throughput.max(0.001)
            );
        }
    }
    if !r.runs.is_empty() {
        println!(
            "\n{:>20} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>12}",
            "processes",
            "req/s",
            "÷ceiling",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "lost",
            "twice",
            "dup",
            "peak RSS MiB"
        );
        for run in &r.runs {
            let rss = run.peak_rss_mib.values().copied().fold(0.0, f64::max);
            println!(
                "{:>20} {:>10.1} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6} {:>6} {:>6} {:>12.1}",
                run.label(),
                run.throughput,
                run.ratio_to_ceiling.map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_else(|| "-".into()),
                run.end_to_end_ms.p50,
                run.end_to_end_ms.p95,
                run.end_to_end_ms.p99,
                run.end_to_end_ms.max,
                run.lost,
                run.answered_twice,
                run.duplicate_deliveries,
                rss
            );
        }
        for run in &r.runs {
            if let Some(w) = &run.warmup_ms {
                println!(
                    "{:>20} warm-up, not in the figures above: {} requests, p50 {:.1}, p99 {:.1}, max {:.1} ms",
                    run.label(),
                    w.n,
                    w.p50,
                    w.p99,
                    w.max
                );
            }
        }
        for rounds in &r.rounds {
            let each = rounds.ratios.iter().map(|x| format!("×{x:.2}")).collect::<Vec<_>>().join(", ");
            println!(
                "{}: median ÷ceiling over {} rounds ×{:.2} ({each})",
                rounds.label,
                rounds.ratios.len(),
                rounds.median
            );
        }
        print_cpu(r);
        print_half_max(r);
        let plain: Vec<&Run> = r.runs.iter().filter(|run| run.scraped_every_ms.is_none()).collect();
        let first_of = |k: usize| plain.iter().find(|p| p.processes == k);
        let mut counts: Vec<usize> = plain.iter().map(|p| p.processes).collect();
        counts.dedup();
        if let (Some(a), Some(b)) =
            (counts.first().and_then(|k| first_of(*k)), counts.get(1).and_then(|k| first_of(*k)))
        {
            println!("\nscaling {} → {}: ×{:.2}", a.label(), b.label(), b.throughput / a.throughput.max(0.001));
        }
        for k in counts {
            let mean = |scraped: bool| {
                let t: Vec<f64> = r
                    .runs
                    .iter()
                    .filter(|run| run.processes == k && run.scraped_every_ms.is_some() == scraped)
                    .map(|run| run.throughput)
                    .collect();
                (!t.is_empty()).then(|| t.iter().sum::<f64>() / t.len() as f64)
            };
            let scraped: Vec<&Run> =
                r.runs.iter().filter(|run| run.processes == k && run.scraped_every_ms.is_some()).collect();
            if let (Some(with), Some(without), Some(first)) = (mean(true), mean(false), scraped.first()) {
                let ratio = with / without.max(0.001);
                println!(
                    "metrics overhead, {}, /metrics of every worker scraped every {} ms ({} scrapes): \
                     throughput {with:.1} vs {without:.1} req/s without, ×{ratio:.3} ({:+.1} %)",
                    first.layout.label(k),
                    first.scraped_every_ms.unwrap_or_default(),
                    scraped.iter().map(|run| run.scrapes).sum::<usize>(),
                    (ratio - 1.0) * 100.0
                );
            }
        }
        for run in &r.runs {
            println!("\nper-step latency, {} (ms, p50 / p95 / p99):", run.label());
            for (step, l) in &run.step_ms {
                println!("  {step:<9} {:>8.1} {:>8.1} {:>8.1}   ({} samples)", l.p50, l.p95, l.p99, l.n);
            }
            println!(
                "  outcomes: {}",
                run.outcomes.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            );
            println!(
                "  peak RSS by pool (MiB): {}",
                run.peak_rss_mib.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", ")
            );
            let mut slowest: Vec<(usize, &Latency)> =
                run.end_to_end_by_second.iter().enumerate().filter(|(_, l)| l.n > 0).collect();
            slowest.sort_by(|a, b| b.1.max.total_cmp(&a.1.max));
            println!(
                "  slowest seconds (published then; max / p99 ms, requests): {}",
                slowest
                    .iter()
                    .take(3)
                    .map(|(t, l)| format!("t={t}s {:.0} / {:.0}, {}", l.max, l.p99, l.n))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    if let Some(b) = &r.backlog {
        println!(
            "\nbacklog of {}: published at {:.0}/s with the pools stopped; drained at {:.1}/s for {:.0} s; {} without a final outcome when the bench stopped waiting",
            b.requests, b.publish_rate, b.drain_rate, b.drain_seconds, b.unfinished
        );
        println!("worker RSS over the drain (MiB, largest process, every 5 s): {:?}", b.rss_mib_over_time);
        let rates: Vec<String> = b.drain_rate_per_minute.iter().map(|r| format!("{r:.0}")).collect();
        println!("drain rate in each minute (final outcomes/s): {}", rates.join(" "));
        println!(
            "database grew {:.0} bytes per request (rows, audit trail, outcomes, indexes); {} outbox rows left",
            b.database_bytes_per_request, b.outbox_rows_after
        );
        println!("outcomes: {}", b.outcomes.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "));
    }
}

/// Where the machine's CPU went, per request, for the ceiling and every run.
fn print_cpu(r: &Report) {
    let ceiling_ms = r.ceiling.as_ref().map(|c| c.cpu.per_request_ms());
    println!(
        "\nmachine CPU per request (ms; broker, database, workers, bench, other — the sum over all cores):\n{:>22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "", "broker", "database", "workers", "bench", "other", "total", "÷ceiling"
    );
    let row = |label: String, c: &CpuSplit| {
        println!(
            "{label:>22} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9}",
            c.ms(c.broker_s),
            c.ms(c.database_s),
            c.ms(c.workers_s),
            c.ms(c.bench_s),
            c.ms(c.other_s),
            c.per_request_ms(),
            ceiling_ms.map(|m| format!("×{:.2}", c.per_request_ms() / m.max(0.001))).unwrap_or_else(|| "-".into())
        );
    };
    if let Some(c) = &r.ceiling {
        row("ceiling".into(), &c.cpu);
        if !c.cpu.broker_seen || !c.cpu.database_seen {
            println!(
                "{:>22} (the broker or the database is not on this machine: its share is in none of the columns)",
                ""
            );
        }
    }
    for run in &r.runs {
        if let Some(c) = &run.cpu {
            let scraped = if run.scraped_every_ms.is_some() { ", scraped" } else { "" };
            row(format!("{}{scraped}", run.label()), c);
        }
    }
    for run in &r.runs {
        if let Some(c) = &run.cpu {
            println!(
                "{:>22} workers by pool, {} (ms per request): {}",
                "",
                run.label(),
                c.workers_by_pool.iter().map(|(p, s)| format!("{p} {:.2}", c.ms(*s))).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if let Some(c) = r.runs.iter().rev().find_map(|run| run.cpu.as_ref()) {
        let busy = c.machine_s / c.wall_s.max(0.001);
        println!(
            "{:>22} over the last run the machine was busy {busy:.2} cores of {}; workers {:.0} %, broker {:.0} %, \
             database {:.0} % of the busy time; the hypervisor took {:.2} cores (steal)",
            "",
            std::thread::available_parallelism().map_or(0, usize::from),
            100.0 * c.workers_s / c.machine_s.max(0.001),
            100.0 * c.broker_s / c.machine_s.max(0.001),
            100.0 * c.database_s / c.machine_s.max(0.001),
            c.steal_s / c.wall_s.max(0.001),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{median, mix};

    fn services(only: Option<&str>) -> Vec<(&'static str, usize)> {
        mix(only).iter().map(|t| (t.service, t.weight)).collect()
    }

    #[test]
    fn a_list_of_services_keeps_only_those_with_their_weights_in_the_mix() {
        let whole = services(None);
        let two = services(Some("medical-licence, archive-certificate"));
        let expected: Vec<_> =
            whole.iter().copied().filter(|(s, _)| ["medical-licence", "archive-certificate"].contains(s)).collect();
        assert_eq!(two, expected);
        assert_eq!(two.iter().map(|(_, w)| w).sum::<usize>(), 10);
        assert!(services(Some("doctor-appointment")).iter().all(|(s, _)| *s == "doctor-appointment"));
    }

    #[test]
    fn the_median_of_the_rounds_is_the_middle_ratio_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[0.72, 0.61, 0.66]), 0.66);
        assert!((median(&[0.8, 0.6, 0.7, 0.64]) - 0.67).abs() < 1e-12);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn a_name_that_is_no_service_of_the_mix_is_refused_before_anything_runs() {
        let e = super::chosen_mix(Some("doctor-appointment,doctor-apointment")).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "--service doctor-apointment: no such service in the mix (it has doctor-appointment, \
                 phc-attachment, home-doctor-call, medical-licence, archive-certificate)"
            )
        );
        assert!(super::chosen_mix(Some("phc-attachment")).is_ok());
    }
}
