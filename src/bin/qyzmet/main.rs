//! The `qyzmet` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use uuid::Uuid;

use qyzmet::broker::Message;
use qyzmet::config::Settings;
use qyzmet::contract::{EXCHANGE_DECISIONS, EXCHANGE_PAYMENTS, EXCHANGE_REQUESTS};
use qyzmet::registry::{RegistryKind, import_file};
use qyzmet::regulations::Regulations;
use qyzmet::startup::{self, Deps, Options};
use qyzmet::store::Store;

/// `qyzmet bench` (demo feature: it signs with the demo PKI).
#[cfg(feature = "demo")]
mod bench;
/// `qyzmet demo` (demo feature).
#[cfg(feature = "demo")]
mod demo;
/// `qyzmet drill` (demo feature).
#[cfg(feature = "demo")]
mod drill;
/// `qyzmet regulations trace`.
mod trace;

/// jemalloc instead of the system allocator (Cargo.toml says why).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// qyzmet: processes e-government service requests from RabbitMQ through worker pools, with
/// the deadlines and reasoned refusals of the regulations, keeping state in PostgreSQL.
#[derive(Parser)]
#[command(name = "qyzmet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every pool and the deadline sweeper in one process (small installs). Applies
    /// migrations first.
    Run {
        #[command(flatten)]
        settings: Settings,
        /// Deliveries in flight per queue. Each spends most of its time waiting for PostgreSQL
        /// and for the broker's confirms, so many in flight keep a process busy; the database
        /// pool (`QYZMET_DB_POOL_SIZE`) bounds how many use PostgreSQL at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Runs one pool (start more processes to add capacity); also runs the deadline sweeper.
    Worker {
        /// intake, registry, payment, review or result.
        pool: String,
        #[command(flatten)]
        settings: Settings,
        /// Deliveries in flight per queue. Each spends most of its time waiting for PostgreSQL
        /// and for the broker's confirms, so many in flight keep a process busy; the database
        /// pool (`QYZMET_DB_POOL_SIZE`) bounds how many use PostgreSQL at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Serves the operator console and the status API (and moves dead letters into
    /// PostgreSQL) without running any pool. Needs `QYZMET_OPERATORS_FILE`.
    Console {
        #[command(flatten)]
        settings: Settings,
    },
    /// Reports for operators.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Operator accounts and API tokens for the operators file.
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// Re-publishes the task message of every request queued at a step (after task queues were
    /// deleted or lost: PostgreSQL holds the state, a duplicate task is recognised and ignored).
    Requeue {
        #[command(flatten)]
        settings: Settings,
    },
    /// Applies the database migrations.
    Migrate {
        #[command(flatten)]
        settings: Settings,
    },
    /// State registries.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Publishes a JSON file to the broker: a Request, a PaymentNotice (has payment_id) or a
    /// Decision (has decision_id), with publisher confirms.
    Publish {
        /// The JSON file.
        file: PathBuf,
        #[command(flatten)]
        settings: Settings,
    },
    /// Shows a request: masked IIN/BIN, number, service, status, deadline, step history (P-41).
    Status {
        /// The request id.
        request_id: Uuid,
        #[command(flatten)]
        settings: Settings,
    },
    /// Regulation data.
    Regulations {
        #[command(subcommand)]
        command: RegulationsCommand,
    },
    /// The demonstration (built with the `demo` feature): migrates, loads demo registries, runs all pools, publishes sample
    /// requests for every service and channel (including ones that must be refused), answers
    /// payments and staff reviews, and prints every final outcome.
    #[cfg(feature = "demo")]
    Demo {
        #[command(flatten)]
        settings: Settings,
        /// Demo registry and scenario data.
        #[arg(long, env = "QYZMET_DEMO_DIR", default_value = "demo")]
        demo_dir: PathBuf,
        /// Where the demo PKI is generated.
        #[arg(long, default_value = ".qyzmet/demo-pki")]
        pki_dir: PathBuf,
        /// Password files of the systems' broker users (with `--systems-file`).
        #[arg(long, default_value = ".qyzmet/secrets")]
        passwords: PathBuf,
        /// After the demo, keep the pipeline and the console running until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Verifies a signed message offline — a result document (or an Outcome carrying one), a
    /// Request or a Decision — against the trust bundle and CRLs, and says why it fails.
    Verify {
        /// The JSON file.
        file: PathBuf,
        #[command(flatten)]
        settings: Settings,
    },
    /// Benchmark (built with the `demo` feature): throughput, latency, scaling and backlog drain of the pipeline against a bare
    /// publish-consume-write ceiling measured in the same run.
    #[cfg(feature = "demo")]
    Bench {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// The chaos drill (built with the `demo` feature): the realistic mix with poison of every
    /// kind while worker processes are killed and RabbitMQ and PostgreSQL restart; reports every
    /// message's fate and exits non-zero on any loss or contradiction.
    #[cfg(feature = "demo")]
    Drill {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: drill::DrillArgs,
    },
    /// The demonstration PKI (built with the `demo` feature).
    #[cfg(feature = "demo")]
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// The audit trail (P-49).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Retention (P-48): purges the personal data of finished requests past their service's
    /// retention period (the sweeper of every process does the same about hourly).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// The systems file: which upstream system may submit, pay, decide or read what.
    Systems {
        #[command(subcommand)]
        command: SystemsCommand,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The deadline report (P-46): per service, region, channel and step, how many steps ended
    /// in the period, the share by their legal deadline, p50/p95 duration and the deadline.
    /// The same figures as the console's Deadlines page.
    Sla {
        /// First local date (YYYY-MM-DD); today when omitted.
        #[arg(long)]
        from: Option<String>,
        /// Last local date, included; `--from` when omitted.
        #[arg(long)]
        to: Option<String>,
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// The questionnaire (P-51): per service, region and channel, how many answer sets were
    /// accepted and ignored, and how the accepted ones answered each question (1 not satisfied,
    /// 2 partly, 3 satisfied).
    Questionnaire {
        /// table or csv.
        #[arg(long, default_value = "table")]
        format: String,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum OperatorsCommand {
    /// Reads a password from standard input and prints its argon2id hash for `password_hash`.
    HashPassword,
    /// Prints a new random API token (give it to the system) and its SHA-256 (for `sha256`).
    NewToken,
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// One pass over every service: how many requests are past their period, and purges them.
    Run {
        /// Only count what is due; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks the hash chain of the audit trail (every request, or one) and lists every break:
    /// a changed row, a removed or inserted one, or a trail cut short. Exits non-zero on any.
    Verify {
        /// Only this request.
        #[arg(long)]
        request: Option<Uuid>,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum SystemsCommand {
    /// Loads and checks a systems file; prints what every system may do.
    Check {
        /// The systems file.
        file: PathBuf,
    },
    /// Writes RabbitMQ definitions (users with password hashes, permissions, topic
    /// permissions, exchanges, the readers' queues and bindings) for one virtual host. Import
    /// them with `rabbitmqctl import_definitions FILE` or `load_definitions` in rabbitmq.conf.
    Definitions {
        /// The systems file.
        file: PathBuf,
        /// Virtual host the permissions apply to.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Directory of `<user>.password` files, for systems without a `password_file`.
        #[arg(long)]
        passwords: PathBuf,
        /// Create a random password file (mode 0600) for every user that has none.
        #[arg(long)]
        generate: bool,
        /// Write here (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Imports a CSV (with header) or JSON-lines file into a registry.
    Import {
        /// The file (.csv or .jsonl).
        file: PathBuf,
        /// persons, legal-entities, powers-of-attorney or attachments; otherwise taken from a
        /// `registry` column or from the CSV header.
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
}

#[cfg(feature = "demo")]
#[derive(Subcommand)]
enum PkiCommand {
    /// Generates a demo PKI (root and signing CA, CRLs, citizen, legal-entity, representative,
    /// staff, operator and provider certificates, and certificates that must be refused) in DIR.
    Demo {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RegulationsCommand {
    /// Loads and validates the regulation data; prints a summary of every route.
    Check {
        /// The directory.
        #[arg(default_value = "regulations")]
        dir: PathBuf,
    },
    /// For every behaviour P-1…P-52: where it is in the data, the code and the tests, or why
    /// qyzmet does not implement it (`regulations/behaviours.toml`). Run in a source checkout.
    Trace {
        /// The repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Fail when a behaviour has neither a test nor a recorded reason.
        #[arg(long)]
        strict: bool,
    },
}

/// Reads a password file, or (with `generate`) creates one with a random password.
pub(crate) fn read_or_make_password(path: &std::path::Path, generate: bool) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(p) => Ok(p.trim_end_matches(['\r', '\n']).to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
            let password = qyzmet::systems::random_password()?;
            write_private(path, password.as_bytes()).map_err(|e| e.to_string())?;
            Ok(password)
        }
        Err(e) => Err(format!("cannot read the password file {}: {e}", path.display())),
    }
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn load_regulations(dir: &std::path::Path) -> anyhow::Result<Regulations> {
    Regulations::load(dir).map_err(|e| anyhow::anyhow!("regulation data is not valid: {e}"))
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(settings: Settings, opts: Options) -> anyhow::Result<()> {
    let mut regs = load_regulations(&settings.regulations_dir)?;
    settings.apply_overrides(&mut regs)?;
    let deps = if opts.pools.is_empty() { Deps::for_console(&settings)? } else { Deps::from_settings(&settings)? };
    let running = startup::start(&settings, regs, opts, deps).await?;
    tracing::info!("running; SIGTERM or Ctrl-C stops after in-flight work");
    wait_for_signal().await;
    tracing::info!("stopping");
    running.shutdown(Duration::from_secs(30)).await;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { settings, concurrency } => {
            let store = Store::connect(settings.migration_url(), 2).await.context("cannot connect to PostgreSQL")?;
            store.migrate().await.context("migrations failed")?;
            store.close().await;
            serve(settings, Options::all(concurrency)).await
        }
        Command::Worker { pool, settings, concurrency } => {
            let pool = qyzmet::broker::parse_pool(&pool)?;
            let opts = Options {
                pools: vec![(pool, concurrency)],
                sweeper: true,
                name: format!("qyzmet worker {pool:?}"),
                console: false,
            };
            serve(settings, opts).await
        }
        Command::Console { settings } => serve(settings, Options::console_only()).await,
        Command::Report { command: ReportCommand::Sla { from, to, format, settings } } => {
            let (from, to) = qyzmet::report::period(from.as_deref(), to.as_deref()).map_err(anyhow::Error::msg)?;
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            let rows = store.sla(from, to).await?;
            match format.as_str() {
                "table" => print!("{}", qyzmet::report::sla_table(&rows)),
                "csv" => print!("{}", qyzmet::report::sla_csv(&rows)),
                "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
                other => bail!("--format {other:?}: use table, csv or json"),
            }
            Ok(())
        }
        Command::Report { command: ReportCommand::Questionnaire { format, settings } } => {
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            let rows = store.questionnaire_counts().await?;
            match format.as_str() {
                "table" => print!("{}", qyzmet::report::questionnaire_table(&rows)),
                "csv" => print!("{}", qyzmet::report::questionnaire_csv(&rows)),
                other => bail!("--format {other:?}: use table or csv"),
            }
            Ok(())
        }
        Command::Operators { command: OperatorsCommand::HashPassword } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.len() < 12 {
                bail!("use a password of at least 12 characters");
            }
            println!("{}", qyzmet::console::auth::hash_password(password).map_err(anyhow::Error::msg)?);
            Ok(())
        }
        Command::Operators { command: OperatorsCommand::NewToken } => {
            let token = qyzmet::console::auth::random_hex(32).map_err(anyhow::Error::msg)?;
            println!("token   {token}");
            println!("sha256  {}", qyzmet::console::auth::to_hex(&qyzmet::console::auth::digest(&token)));
            Ok(())
        }
        Command::Requeue { settings } => {
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            let broker = settings.broker("qyzmet requeue").await?;
            let publisher = broker.publisher().await?;
            let mut published = 0usize;
            for (id, index, step, traceparent) in store.queued_tasks().await? {
                let pool = qyzmet::broker::parse_pool(&step)?;
                let task = qyzmet::pipeline::transition::task_message(id, index, pool, traceparent.as_deref());
                publisher.publish_all(&[task]).await?;
                published += 1;
            }
            broker.close().await;
            println!("{published} task message(s) re-published");
            Ok(())
        }
        Command::Migrate { settings } => {
            let store = Store::connect(settings.migration_url(), 2).await.context("cannot connect to PostgreSQL")?;
            store.migrate().await.context("migrations failed")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Registry { command: RegistryCommand::Import { file, kind, settings } } => {
            let kind = match kind {
                Some(k) => Some(RegistryKind::parse(&k).with_context(|| {
                    format!("unknown registry {k:?}: use persons, legal-entities, powers-of-attorney or attachments")
                })?),
                None => None,
            };
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            let report = import_file(&store, &file, kind).await?;
            for (k, n) in &report.accepted {
                println!("{}: {n} rows imported", k.name());
            }
            for r in &report.rejected {
                println!("{}:{}: rejected: {}", file.display(), r.line, r.reason);
            }
            println!(
                "{} imported, {} rejected",
                report.accepted.iter().map(|(_, n)| n).sum::<usize>(),
                report.rejected.len()
            );
            if report.accepted.is_empty() && !report.rejected.is_empty() {
                bail!("no row was imported");
            }
            Ok(())
        }
        Command::Publish { file, settings } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&bytes).context("the file is not JSON")?;
            let id = value.get("request_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let (exchange, key, message_id) = if let Some(p) = value.get("payment_id").and_then(|v| v.as_str()) {
                (EXCHANGE_PAYMENTS, qyzmet::contract::ROUTING_KEY_PAYMENT.to_owned(), p.to_owned())
            } else if let Some(d) = value.get("decision_id").and_then(|v| v.as_str()) {
                let service = value.get("service").and_then(|v| v.as_str()).unwrap_or("any");
                (EXCHANGE_DECISIONS, qyzmet::contract::decision_routing_key(service), d.to_owned())
            } else {
                let service = value.get("service").and_then(|v| v.as_str()).unwrap_or("unknown");
                (EXCHANGE_REQUESTS, service.to_owned(), id.clone())
            };
            let broker = settings.broker("qyzmet publish").await?;
            let publisher = broker.publisher().await?;
            let msg = Message {
                exchange: exchange.into(),
                routing_key: key.clone(),
                message_id,
                body: bytes,
                traceparent: None,
                headers: Vec::new(),
                must_route: true,
            };
            publisher.publish_all(&[msg]).await?;
            broker.close().await;
            println!("published to {exchange} with routing key {key} (confirmed)");
            Ok(())
        }
        Command::Status { request_id, settings } => {
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            print!("{}", qyzmet::report::status_report(&store, request_id).await?);
            Ok(())
        }
        Command::Regulations { command: RegulationsCommand::Check { dir } } => {
            let regs = load_regulations(&dir)?;
            print!("{}", qyzmet::report::regulations_summary(&regs));
            Ok(())
        }
        Command::Regulations { command: RegulationsCommand::Trace { root, strict } } => {
            let trace = trace::Trace::of_repository(&root)?;
            print!("{}", trace.render());
            let missing = trace.unaccounted();
            if strict && !missing.is_empty() {
                bail!(
                    "{} behaviour(s) with neither a test nor a recorded reason: {}",
                    missing.len(),
                    missing.join(", ")
                );
            }
            Ok(())
        }
        #[cfg(feature = "demo")]
        Command::Demo { settings, demo_dir, pki_dir, passwords, keep_running } => {
            demo::run(&settings, &demo_dir, &pki_dir, &passwords, keep_running).await
        }
        #[cfg(feature = "demo")]
        Command::Drill { settings, args } => drill::run(&settings, &args).await,
        #[cfg(feature = "demo")]
        Command::Bench { settings, args } => bench::run(&settings, &args).await,
        Command::Verify { file, settings } => qyzmet::report::verify_file(&settings, &file),
        Command::Retention { command: RetentionCommand::Run { dry_run, settings } } => {
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            let regs = load_regulations(&settings.regulations_dir)?;
            let report = qyzmet::pipeline::retention::run_once(&store, &regs, dry_run).await?;
            for r in &report {
                let done = if dry_run { "dry run, nothing changed".to_owned() } else { format!("{} purged", r.purged) };
                println!("{:<22} keep {:>5} days  {:>5} due  {done}", r.service.as_str(), r.keep.num_days(), r.due);
            }
            Ok(())
        }
        Command::Audit { command: AuditCommand::Verify { request, settings } } => {
            let store = Store::connect(&settings.database_url, 2).await.context("cannot connect to PostgreSQL")?;
            let breaks = store.audit_breaks(request).await.context("cannot read the audit trail")?;
            let rows = store.audit_rows(request).await?;
            for b in &breaks {
                let what = match b.problem.as_str() {
                    "changed" => "the row was changed after it was written",
                    "link" => "the row before it was removed, changed or inserted",
                    _ => "rows after it were removed: the trail stops before the request's latest event",
                };
                match b.id {
                    0 => println!("request {}: every row of its trail was removed", b.request_id),
                    id => println!("request {} row {id}: {what}", b.request_id),
                }
            }
            if breaks.is_empty() {
                println!("audit trail intact: {rows} rows checked");
                Ok(())
            } else {
                bail!("{} break(s) in the audit trail ({rows} rows checked)", breaks.len())
            }
        }
        Command::Systems { command: SystemsCommand::Check { file } } => {
            let systems = qyzmet::systems::Systems::load(&file)?;
            for line in systems.describe() {
                println!("{line}");
            }
            Ok(())
        }
        Command::Systems { command: SystemsCommand::Definitions { file, vhost, passwords, generate, out } } => {
            let systems = qyzmet::systems::Systems::load(&file)?;
            let password = |user: &str| -> Result<String, String> {
                let system = systems.by_user(user);
                let path = systems.password_path(system, &passwords);
                read_or_make_password(&path, generate)
            };
            let definitions = systems.definitions(&vhost, &password).map_err(|e| anyhow::anyhow!(e))?;
            let text = serde_json::to_string_pretty(&definitions)?;
            match out {
                Some(path) => {
                    write_private(&path, text.as_bytes())?;
                    eprintln!("definitions for vhost {vhost} written to {}", path.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        #[cfg(feature = "demo")]
        Command::Pki { command: PkiCommand::Demo { dir } } => {
            let paths = qyzmet_demo_pki::generate_demo(&dir).map_err(|e| anyhow::anyhow!(e))?;
            println!("demo PKI written to {} (demo keys: never use them for anything real)", dir.display());
            println!("  QYZMET_TRUST_BUNDLE={}", paths.trust_bundle.display());
            println!("  QYZMET_CRL_PATH={}", paths.crl_dir.display());
            println!("  QYZMET_SIGNING_KEYS={}", paths.keys_dir.display());
            println!("  QYZMET_STAFF_ROLE_OIDS={}", qyzmet_demo_pki::DEMO_STAFF_ROLES);
            println!("  QYZMET_CENTRE_BINS={}", qyzmet_demo_pki::DEMO_CENTRE_BIN);
            println!("  QYZMET_SHARED_SIGNER_BINS={}", qyzmet_demo_pki::DEMO_SHARED_SIGNER_BIN);
            println!("  request and decision signing keys: {}", paths.holders_dir.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Interactive commands print their own report; only warnings are logged unless asked.
    let default = match cli.command {
        Command::Run { .. } | Command::Worker { .. } => qyzmet::telemetry::DEFAULT_FILTER,
        #[cfg(feature = "demo")]
        Command::Drill { .. } => "error",
        // The bench looks for reader queues with passive declares; the broker answers one that
        // is missing by closing the channel, which lapin logs as an error although the bench
        // expects it (a channel failure that matters reaches the bench as an error it reports).
        #[cfg(feature = "demo")]
        Command::Bench { .. } => "warn,lapin::channel=off",
        _ => "warn",
    };
    // OTLP trace export when OTEL_EXPORTER_OTLP_ENDPOINT asks for it; flushed before exiting.
    let telemetry = qyzmet::telemetry::init_with_export(default);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
