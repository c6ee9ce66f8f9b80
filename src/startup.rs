//! Starting a qyzmet process: connect, declare, spawn the chosen pools and the sweeper, and
//! return a handle that stops them gracefully.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::broker::{Broker, task_queue};
use crate::config::Settings;
use crate::pipeline::runtime;
use crate::pipeline::task::TaskHandler;
use crate::pipeline::{Ctx, Outbox, sweeper};
use crate::registry::{PgRegistry, Registry};
use crate::regulations::{PoolName, Regulations};
use crate::shutdown::{self, Trigger};
use crate::signature::keys::Keyring;
use crate::signature::x509::X509Verifier;
use crate::signature::{Signer, Verifier};
use crate::store::Store;

/// Every pool, in route order.
pub const ALL_POOLS: [PoolName; 5] =
    [PoolName::Intake, PoolName::Registry, PoolName::Payment, PoolName::Review, PoolName::Result];

/// What this process runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pools and their concurrency (in-flight deliveries per queue).
    pub pools: Vec<(PoolName, usize)>,
    /// Run the deadline sweeper and outbox relay (every process should, unless a test wants
    /// to observe a process without one).
    pub sweeper: bool,
    /// Name shown in the broker's connection list.
    pub name: String,
    /// Serve the operator console and status API, and move dead letters into PostgreSQL, when
    /// an operators file is configured (`QYZMET_OPERATORS_FILE`).
    pub console: bool,
}

impl Options {
    /// All pools with the same concurrency, plus the sweeper.
    pub fn all(concurrency: usize) -> Options {
        Options {
            pools: ALL_POOLS.iter().map(|p| (*p, concurrency)).collect(),
            sweeper: true,
            name: "qyzmet run".into(),
            console: true,
        }
    }

    /// The console alone: no pools, no sweeper (`qyzmet console`).
    pub fn console_only() -> Options {
        Options { pools: Vec::new(), sweeper: false, name: "qyzmet console".into(), console: true }
    }
}

/// Replaceable dependencies (the seams for signatures and registries).
pub struct Deps {
    /// Signature verification.
    pub verifier: Arc<dyn Verifier>,
    /// Document signing.
    pub signer: Arc<dyn Signer>,
    /// Registries; `None` means the PostgreSQL tables.
    pub registry: Option<Arc<dyn Registry>>,
}

impl Deps {
    /// The real verifier and signer from the settings. Nothing has a default: the process does
    /// not start without a trust bundle, CRLs, signing keys and the centre list, when a key file
    /// is readable by others, or when the default key's certificate is not a listed shared
    /// signer (its documents would not verify).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Deps> {
        let trust = settings
            .trust_bundle
            .as_deref()
            .context("QYZMET_TRUST_BUNDLE is not set: signatures cannot be verified")?;
        let crls = settings
            .crl_path
            .clone()
            .context("QYZMET_CRL_PATH is not set: revoked certificates could not be recognised")?;
        if settings.centre_bins.iter().all(|b| b.trim().is_empty()) {
            anyhow::bail!("QYZMET_CENTRE_BINS is not set: centre-channel requests could not be checked");
        }
        let verifier = X509Verifier::new(trust, Some(crls), settings.staff_role_oids.clone())
            .context("cannot configure signature verification")?;
        let keys = settings
            .signing_keys
            .as_deref()
            .context("QYZMET_SIGNING_KEYS is not set: result documents cannot be signed")?;
        let keyring = Keyring::load(keys).context("cannot load the result-signing keys")?;
        if let Some(bin) = keyring.default_signer_bin().context("cannot use the default signing key")?
            && !settings.shared_signer_bins.contains(&bin)
        {
            anyhow::bail!(
                "the default signing key's certificate names BIN {} but QYZMET_SHARED_SIGNER_BINS does not list it: \
                 documents it signs would fail verification",
                crate::ident::mask(&bin)
            );
        }
        Ok(Deps { verifier: Arc::new(verifier), signer: Arc::new(keyring), registry: None })
    }

    /// What the console alone needs (`qyzmet console`): the verifier, to check documents on a
    /// request's page, and no signing keys — a process that signs nothing holds no provider's
    /// private key.
    pub fn for_console(settings: &Settings) -> anyhow::Result<Deps> {
        let trust =
            settings.trust_bundle.as_deref().context("QYZMET_TRUST_BUNDLE is not set: documents cannot be verified")?;
        let verifier = X509Verifier::new(trust, settings.crl_path.clone(), settings.staff_role_oids.clone())
            .context("cannot configure signature verification")?;
        Ok(Deps { verifier: Arc::new(verifier), signer: Arc::new(NoSigner), registry: None })
    }
}

/// The signer of a process that issues no documents.
struct NoSigner;

impl Signer for NoSigner {
    fn sign(
        &self,
        _provider: &str,
        _document: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        Err("this process holds no signing keys".into())
    }

    fn can_sign(&self, _provider: &str) -> bool {
        false
    }
}

/// A running process.
pub struct Running {
    trigger: Trigger,
    tasks: JoinSet<()>,
    marker: tokio::task::JoinHandle<()>,
    broker: Arc<Broker>,
    /// Shared context (store, regulations, outbox).
    pub ctx: Arc<Ctx>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_addr: std::net::SocketAddr,
}

/// How long the runtime may run no task before the process leaves ([`crate::watchdog`]): far
/// longer than any pause a busy machine causes.
const RUNTIME_STALL: Duration = Duration::from_secs(60);

/// Starts the process's watchdog, once per process however many pipelines it starts.
fn watch_the_runtime() -> anyhow::Result<()> {
    static WATCHED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    WATCHED
        .get_or_init(|| crate::watchdog::start(RUNTIME_STALL, crate::watchdog::leave))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Connects to the services (without running migrations) and starts what `opts` asks for.
pub async fn start(settings: &Settings, regs: Regulations, opts: Options, deps: Deps) -> anyhow::Result<Running> {
    let store = Store::connect_with(&settings.database_url, &settings.store_options())
        .await
        .context("cannot connect to PostgreSQL (QYZMET_DATABASE_URL)")?;
    let broker = settings.broker(&opts.name).await.context("cannot connect to RabbitMQ (QYZMET_AMQP_URL)")?;
    let publisher = Arc::new(
        broker
            .publisher_with(Duration::from_millis(settings.confirm_timeout_ms.max(1)))
            .await
            .context("cannot open a publisher channel")?,
    );
    let (outbox, marker) =
        Outbox::new(store.clone(), publisher, Duration::from_secs(settings.outbox_relay_secs.max(1)));
    let registry = deps.registry.unwrap_or_else(|| Arc::new(PgRegistry::new(store.clone())));
    let systems = settings.systems().context("cannot use the systems file (QYZMET_SYSTEMS_FILE)")?.map(Arc::new);
    if systems.is_none() {
        tracing::warn!("no systems file (QYZMET_SYSTEMS_FILE): who sends what is recorded but not checked");
    }
    use crate::pipeline::batch::{Commits, Reads};
    let (registrations, advances, endings, parks, decisions) = (
        Commits::start(store.clone()),
        Commits::start(store.clone()),
        Commits::start(store.clone()),
        Commits::start(store.clone()),
        Commits::start(store.clone()),
    );
    let reads = Reads::start(store.clone());
    let ctx = Arc::new(Ctx {
        store,
        reads,
        regs: Arc::new(regs),
        outbox,
        registrations,
        advances,
        endings,
        parks,
        decisions,
        verifier: deps.verifier,
        signer: deps.signer,
        registry,
        max_message_bytes: settings.max_message_bytes,
        sweep_interval: settings.sweep_interval(),
        centre_bins: settings.centre_bins.clone(),
        systems,
        consuming: std::sync::atomic::AtomicUsize::new(0),
        max_deliveries: settings.max_deliveries(),
        retry_budget: Duration::from_secs(settings.retry_budget_secs),
        recovery_patience: Duration::from_secs(settings.recovery_patience_secs),
        process: crate::store::Heartbeat {
            process_id: uuid::Uuid::new_v4(),
            host: host_name(),
            pid: i32::try_from(std::process::id()).unwrap_or(-1),
            pools: opts.pools.iter().map(|(p, _)| crate::broker::pool_name(*p)).collect::<Vec<_>>().join(","),
            concurrency: opts.pools.iter().map(|(_, c)| *c).max().unwrap_or(0).try_into().unwrap_or(i32::MAX),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
        },
    });
    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = JoinSet::new();
    let mut expected_consumers = 0;
    for (pool, concurrency) in &opts.pools {
        let mut consumers = crate::workers::event_consumers(*pool);
        if let Some(step) = crate::workers::step_of(*pool) {
            consumers.push((task_queue(*pool), Arc::new(TaskHandler { pool: *pool, step })));
        }
        for (queue, handler) in consumers {
            expected_consumers += 1;
            tasks.spawn(runtime::consume(ctx.clone(), broker.clone(), queue, *concurrency, handler, shutdown.clone()));
        }
    }
    if opts.sweeper {
        tasks.spawn(sweeper::run(ctx.clone(), shutdown.clone()));
    }
    let console = match (&settings.operators_file, opts.console) {
        (Some(file), true) if !file.as_os_str().is_empty() => {
            let operators =
                crate::console::Operators::load(file).map_err(|e| anyhow::anyhow!("QYZMET_OPERATORS_FILE: {e}"))?;
            let (accounts, tokens) = operators.counts();
            tracing::info!(accounts, tokens, "console and status API enabled");
            expected_consumers += 1;
            tasks.spawn(runtime::consume(
                ctx.clone(),
                broker.clone(),
                crate::broker::QUEUE_DEAD.into(),
                16,
                Arc::new(crate::console::dead_letters::DeadLetterMover),
                shutdown.clone(),
            ));
            Some(Arc::new(crate::console::Console {
                ctx: ctx.clone(),
                broker: broker.clone(),
                operators,
                shared_signer_bins: settings.shared_signer_bins.clone(),
                secure_cookie: settings.console_secure_cookie,
                jobs: Default::default(),
            }))
        }
        (_, true) if opts.pools.is_empty() => {
            anyhow::bail!("the console needs QYZMET_OPERATORS_FILE: nobody could sign in")
        }
        (_, true) => {
            tracing::warn!("no operators file (QYZMET_OPERATORS_FILE): no console or status API in this process");
            None
        }
        _ => None,
    };
    let metrics = crate::metrics::install().map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    watch_the_runtime()?;
    crate::metrics::process_info(&ctx.process.pools, ctx.process.concurrency.max(0) as usize);
    let surface = crate::http::Surface {
        ctx: ctx.clone(),
        broker: broker.clone(),
        expected_consumers,
        metrics,
        console,
        queue_stats: Default::default(),
    };
    let http_addr = crate::http::serve(&settings.http_addr, surface, shutdown.clone()).await?;
    Ok(Running { trigger, tasks, marker, broker, ctx, http_addr })
}

/// This host's name, for heartbeats.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl Running {
    /// Stops taking work, lets in-flight work finish (up to `grace`), hands the rest back to
    /// the broker and closes connections.
    pub async fn shutdown(mut self, grace: Duration) {
        self.trigger.fire();
        let drained = tokio::time::timeout(grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(?grace, "in-flight work did not finish in time; the broker will redeliver it");
            self.tasks.abort_all();
        }
        self.broker.close().await;
        let ctx = self.ctx;
        let store = ctx.store.clone();
        drop(ctx);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.marker).await;
        store.close().await;
    }

    /// Kills the process's work abruptly (tests: a worker killed mid-step).
    pub async fn abort(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.broker.close().await;
        self.marker.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_settings() -> Settings {
        let dir = std::env::temp_dir().join(format!("qyzmet-startup-{}", uuid::Uuid::new_v4().simple()));
        let pki = qyzmet_demo_pki::generate(
            &dir,
            &[],
            &qyzmet_demo_pki::demo_provider_keys(),
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .expect("pki");
        let mut settings = Settings::for_urls("amqp://127.0.0.1", "postgres://127.0.0.1/x", "regulations".into());
        settings.trust_bundle = Some(pki.trust_bundle);
        settings.crl_path = Some(pki.crl_dir);
        settings.signing_keys = Some(pki.keys_dir);
        settings.centre_bins = vec![qyzmet_demo_pki::DEMO_CENTRE_BIN.into()];
        settings.shared_signer_bins = vec![qyzmet_demo_pki::DEMO_SHARED_SIGNER_BIN.into()];
        settings
    }

    fn refusal(settings: &Settings) -> String {
        match Deps::from_settings(settings) {
            Ok(_) => String::new(),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn nothing_has_a_default_a_process_refuses_to_start_without_it() {
        let complete = demo_settings();
        assert_eq!(refusal(&complete), "", "a complete configuration starts");
        let mut s = complete.clone();
        s.trust_bundle = None;
        assert!(refusal(&s).contains("QYZMET_TRUST_BUNDLE"));
        let mut s = complete.clone();
        s.crl_path = None;
        assert!(refusal(&s).contains("QYZMET_CRL_PATH"));
        let mut s = complete.clone();
        s.signing_keys = None;
        assert!(refusal(&s).contains("QYZMET_SIGNING_KEYS"));
        let mut s = complete.clone();
        s.centre_bins.clear();
        assert!(refusal(&s).contains("QYZMET_CENTRE_BINS"));
        let mut s = complete;
        s.shared_signer_bins.clear();
        assert!(refusal(&s).contains("QYZMET_SHARED_SIGNER_BINS"), "the default key must be a listed shared signer");
    }
}
