//! Configuration, from command-line flags or environment variables, with loopback defaults
//! that match `make services-up` (RabbitMQ on 5673, PostgreSQL on 5433).

use std::path::PathBuf;
use std::time::Duration;

/// Settings every command that touches the services shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    /// AMQP URL of RabbitMQ, including the virtual host (`%2f` is `/`); for a cluster, every
    /// node's URL separated by commas (a lost node is replaced by the next).
    #[arg(long, env = "QYZMET_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5673/%2f")]
    pub amqp_url: String,

    /// File holding the broker password; it replaces the password in `QYZMET_AMQP_URL`, so the
    /// password appears in no environment variable or process list.
    #[arg(long, env = "QYZMET_AMQP_PASSWORD_FILE")]
    pub amqp_password_file: Option<PathBuf>,

    /// Where the process serves `/healthz`, `/readyz` and `/metrics`. Loopback by default; when
    /// the port is taken (another process on this host), an ephemeral one is used and logged.
    #[arg(long, env = "QYZMET_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: String,

    /// The operator accounts and API tokens of the console and status API
    /// (`qyzmet operators --help`). Without it, `qyzmet run` serves no console.
    #[arg(long, env = "QYZMET_OPERATORS_FILE")]
    pub operators_file: Option<PathBuf>,

    /// Mark the console's session cookie `Secure` (sent over HTTPS only): set it when a TLS
    /// proxy serves the console.
    #[arg(long, env = "QYZMET_CONSOLE_SECURE_COOKIE", default_value_t = false)]
    pub console_secure_cookie: bool,

    /// PEM file of the CA certificates an `amqps://` broker's certificate must chain to. The
    /// certificate must name the URL's host; the connection fails otherwise.
    #[arg(long, env = "QYZMET_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,

    /// The systems file: every upstream system's broker user and what it may submit, pay or
    /// decide (`qyzmet systems check FILE`). Without it, senders are recorded but not checked.
    #[arg(long, env = "QYZMET_SYSTEMS_FILE")]
    pub systems_file: Option<PathBuf>,

    /// PostgreSQL URL of qyzmet's database, as the role request handling uses (a member of
    /// `qyzmet_worker` in production: README «PostgreSQL roles»).
    #[arg(long, env = "QYZMET_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5433/qyzmet")]
    pub database_url: String,

    /// PostgreSQL URL as the database's owner, for migrations (`qyzmet migrate`, `qyzmet run`);
    /// `QYZMET_DATABASE_URL` when unset (small installs where one role owns and works).
    #[arg(long, env = "QYZMET_MIGRATION_DATABASE_URL")]
    pub migration_database_url: Option<String>,

    /// Directory with the regulation data (service files, common.toml, calendar.toml).
    #[arg(long, env = "QYZMET_REGULATIONS_DIR", default_value = "regulations")]
    pub regulations_dir: PathBuf,

    /// Largest message accepted; larger ones are dead-lettered as `oversized`.
    #[arg(long, env = "QYZMET_MAX_MESSAGE_BYTES", default_value_t = 262_144)]
    pub max_message_bytes: usize,

    /// PostgreSQL connections per process.
    #[arg(long, env = "QYZMET_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// How often the fleet sweeps for overdue requests and due retries, in milliseconds: every
    /// process asks this often, and the one that takes the turn sweeps.
    #[arg(long, env = "QYZMET_SWEEP_INTERVAL_MS", default_value_t = 500)]
    pub sweep_interval_ms: u64,

    /// Seconds after which the outbox relay re-publishes messages a process committed but did not
    /// confirm as published (after a crash); the fleet's relay looks four times per this age.
    #[arg(long, env = "QYZMET_OUTBOX_RELAY_SECS", default_value_t = 30)]
    pub outbox_relay_secs: u64,

    /// A delivery handed out this many times without being settled is dead-lettered before it
    /// is handled (`delivery_limit`): its consumer crashed or was killed on it each time. At most
    /// 19; the queues' own `x-delivery-limit` (20) is the broker-side backstop.
    #[arg(long, env = "QYZMET_MAX_DELIVERIES", default_value_t = 10)]
    pub max_deliveries: u32,

    /// Seconds a delivery whose handling fails transiently (database unreachable) is retried in
    /// the process before it goes back to its queue (counting as one more delivery).
    #[arg(long, env = "QYZMET_RETRY_BUDGET_SECS", default_value_t = 300)]
    pub retry_budget_secs: u64,

    /// Seconds a consumer waits for lapin to recover its channel after the broker went away
    /// before it consumes on a new connection instead (the abandoned one is closed once it is
    /// back, so it holds no deliveries).
    #[arg(long, env = "QYZMET_RECOVERY_PATIENCE_SECS", default_value_t = 20)]
    pub recovery_patience_secs: u64,

    /// Milliseconds a publish waits for the broker's confirms; then it fails and the outbox
    /// relay publishes later (a broker under a resource alarm blocks publishers).
    #[arg(long, env = "QYZMET_CONFIRM_TIMEOUT_MS", default_value_t = 10_000)]
    pub confirm_timeout_ms: u64,

    /// PostgreSQL `statement_timeout` for qyzmet's connections, in milliseconds.
    #[arg(long, env = "QYZMET_DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub db_statement_timeout_ms: u64,

    /// PostgreSQL `idle_in_transaction_session_timeout` for qyzmet's connections, in milliseconds.
    #[arg(long, env = "QYZMET_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 60_000)]
    pub db_idle_in_transaction_timeout_ms: u64,

    /// PEM file of the trusted root certificates; signer chains must lead to one of them.
    #[arg(long, env = "QYZMET_TRUST_BUNDLE")]
    pub trust_bundle: Option<PathBuf>,

    /// CRL file or directory of CRLs (PEM or DER); reloaded when the files change. Without a
    /// CRL for an issuer, signatures are refused (`crl_missing`).
    #[arg(long, env = "QYZMET_CRL_PATH")]
    pub crl_path: Option<PathBuf>,

    /// Directory of result-signing keys: `<BIN>.key.pem` (PKCS#8, not readable by others) with
    /// `<BIN>.chain.pem`, and optionally `default.*` for providers without their own key.
    #[arg(long, env = "QYZMET_SIGNING_KEYS")]
    pub signing_keys: Option<PathBuf>,

    /// Staff role OIDs accepted on Decisions and staff-signed requests (comma-separated; a
    /// trailing `.*` accepts the subtree).
    #[arg(long, env = "QYZMET_STAFF_ROLE_OIDS", value_delimiter = ',', default_value = "1.2.398.3.3.4.1.2.*")]
    pub staff_role_oids: Vec<String>,

    /// BINs of the public service centres (ЦОН/ХҚКО) whose operators sign centre-channel
    /// requests (comma-separated). Required: there is no default.
    #[arg(long, env = "QYZMET_CENTRE_BINS", value_delimiter = ',')]
    pub centre_bins: Vec<String>,

    /// BINs of shared signers: organisations whose certificate signs result documents for
    /// providers without a key of their own (the `default` key). A verifier accepts a document
    /// for any provider from these signers only; qyzmet refuses to start when the default key's
    /// certificate is not listed, since its documents would fail verification.
    #[arg(long, env = "QYZMET_SHARED_SIGNER_BINS", value_delimiter = ',')]
    pub shared_signer_bins: Vec<String>,

    /// Drills and benchmarks only: make every step of a pool due this long after receipt, e.g.
    /// `registry=2s,review=5s` (comma-separated). Never set in production.
    #[arg(long, env = "QYZMET_DEADLINE_OVERRIDES", value_delimiter = ',')]
    pub deadline_overrides: Vec<String>,
}

impl Settings {
    /// Defaults for the given service URLs (tests, tools).
    pub fn for_urls(amqp_url: &str, database_url: &str, regulations_dir: PathBuf) -> Settings {
        Settings {
            amqp_url: amqp_url.to_owned(),
            amqp_password_file: None,
            amqp_ca_file: None,
            http_addr: "127.0.0.1:0".into(),
            operators_file: None,
            console_secure_cookie: false,
            systems_file: None,
            database_url: database_url.to_owned(),
            migration_database_url: None,
            regulations_dir,
            max_message_bytes: 262_144,
            db_pool_size: 16,
            sweep_interval_ms: 500,
            outbox_relay_secs: 30,
            max_deliveries: 10,
            retry_budget_secs: 300,
            recovery_patience_secs: 20,
            confirm_timeout_ms: 10_000,
            db_statement_timeout_ms: 30_000,
            db_idle_in_transaction_timeout_ms: 60_000,
            trust_bundle: None,
            crl_path: None,
            signing_keys: None,
            staff_role_oids: vec!["1.2.398.3.3.4.1.2.*".into()],
            centre_bins: Vec::new(),
            shared_signer_bins: Vec::new(),
            deadline_overrides: Vec::new(),
        }
    }

    /// Applies `deadline_overrides` to loaded regulations.
    pub fn apply_overrides(&self, regs: &mut crate::regulations::Regulations) -> anyhow::Result<()> {
        for o in self.deadline_overrides.iter().filter(|o| !o.trim().is_empty()) {
            let (pool, span) =
                o.split_once('=').ok_or_else(|| anyhow::anyhow!("deadline override {o:?}: use pool=span"))?;
            let pool = crate::broker::parse_pool(pool.trim())?;
            let span = crate::regulations::parse_span(span.trim())
                .ok_or_else(|| anyhow::anyhow!("deadline override {o:?}: span like 2s or 500ms"))?;
            tracing::warn!(?pool, %span, "deadline override in force (drill or benchmark)");
            regs.override_step_deadline(pool, span);
        }
        Ok(())
    }

    /// The environment a `qyzmet` child process needs to use the same services and keys (unset
    /// options are left out).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        vec![
            ("QYZMET_AMQP_URL", self.amqp_url.clone()),
            ("QYZMET_AMQP_PASSWORD_FILE", path(&self.amqp_password_file)),
            ("QYZMET_AMQP_CA_FILE", path(&self.amqp_ca_file)),
            ("QYZMET_HTTP_ADDR", self.http_addr.clone()),
            ("QYZMET_OPERATORS_FILE", path(&self.operators_file)),
            ("QYZMET_CONSOLE_SECURE_COOKIE", if self.console_secure_cookie { "true".into() } else { String::new() }),
            ("QYZMET_SYSTEMS_FILE", path(&self.systems_file)),
            ("QYZMET_DATABASE_URL", self.database_url.clone()),
            ("QYZMET_MIGRATION_DATABASE_URL", self.migration_database_url.clone().unwrap_or_default()),
            ("QYZMET_REGULATIONS_DIR", self.regulations_dir.display().to_string()),
            ("QYZMET_MAX_MESSAGE_BYTES", self.max_message_bytes.to_string()),
            ("QYZMET_DB_POOL_SIZE", self.db_pool_size.to_string()),
            ("QYZMET_SWEEP_INTERVAL_MS", self.sweep_interval_ms.to_string()),
            ("QYZMET_OUTBOX_RELAY_SECS", self.outbox_relay_secs.to_string()),
            ("QYZMET_MAX_DELIVERIES", self.max_deliveries.to_string()),
            ("QYZMET_RETRY_BUDGET_SECS", self.retry_budget_secs.to_string()),
            ("QYZMET_RECOVERY_PATIENCE_SECS", self.recovery_patience_secs.to_string()),
            ("QYZMET_CONFIRM_TIMEOUT_MS", self.confirm_timeout_ms.to_string()),
            ("QYZMET_DB_STATEMENT_TIMEOUT_MS", self.db_statement_timeout_ms.to_string()),
            ("QYZMET_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", self.db_idle_in_transaction_timeout_ms.to_string()),
            ("QYZMET_TRUST_BUNDLE", path(&self.trust_bundle)),
            ("QYZMET_CRL_PATH", path(&self.crl_path)),
            ("QYZMET_SIGNING_KEYS", path(&self.signing_keys)),
            ("QYZMET_STAFF_ROLE_OIDS", self.staff_role_oids.join(",")),
            ("QYZMET_CENTRE_BINS", self.centre_bins.join(",")),
            ("QYZMET_SHARED_SIGNER_BINS", self.shared_signer_bins.join(",")),
            ("QYZMET_DEADLINE_OVERRIDES", self.deadline_overrides.join(",")),
        ]
        .into_iter()
        // An unset option is left out rather than passed empty (clap refuses empty paths).
        .filter(|(_, value)| !value.is_empty())
        .collect()
    }

    /// The broker URL with the password from `amqp_password_file`, if one is set.
    pub fn amqp_url(&self) -> anyhow::Result<String> {
        let Some(file) = &self.amqp_password_file else { return Ok(self.amqp_url.clone()) };
        let password = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read QYZMET_AMQP_PASSWORD_FILE {}: {e}", file.display()))?;
        let password = password.trim_end_matches(['\r', '\n']);
        // One URL, or a cluster's nodes separated by commas: each gets the password.
        let urls: anyhow::Result<Vec<String>> =
            self.amqp_url.split(',').map(|u| with_password(u.trim(), password)).collect();
        Ok(urls?.join(","))
    }

    /// The URL migrations run with: the owner's, or the worker's when no owner URL is set.
    pub fn migration_url(&self) -> &str {
        self.migration_database_url.as_deref().filter(|u| !u.is_empty()).unwrap_or(&self.database_url)
    }

    /// The broker's CA bundle (PEM), if one is configured.
    pub fn amqp_ca(&self) -> anyhow::Result<Option<String>> {
        match &self.amqp_ca_file {
            Some(f) if !f.as_os_str().is_empty() => Ok(Some(
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read QYZMET_AMQP_CA_FILE {}: {e}", f.display()))?,
            )),
            _ => Ok(None),
        }
    }

    /// Connects to the broker as configured (URL, password file, CA bundle) and declares the
    /// topology.
    pub async fn broker(&self, name: &str) -> anyhow::Result<std::sync::Arc<crate::broker::Broker>> {
        Ok(crate::broker::Broker::connect_with(&self.amqp_url()?, name, self.amqp_ca()?).await?)
    }

    /// The systems file, loaded, if one is configured.
    pub fn systems(&self) -> anyhow::Result<Option<crate::systems::Systems>> {
        match &self.systems_file {
            Some(path) if !path.as_os_str().is_empty() => Ok(Some(crate::systems::Systems::load(path)?)),
            _ => Ok(None),
        }
    }

    /// How this process uses PostgreSQL.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            idle_in_transaction_timeout: Duration::from_millis(self.db_idle_in_transaction_timeout_ms),
            ..crate::store::StoreOptions::with_pool_size(self.db_pool_size)
        }
    }

    /// The consumer-side delivery limit, kept below the queues' own backstop.
    pub fn max_deliveries(&self) -> u32 {
        self.max_deliveries.clamp(1, crate::broker::QUEUE_DELIVERY_LIMIT - 1)
    }

    /// Sweep interval as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(10))
    }
}

/// `url` with its password replaced by `password` (percent-encoded).
pub fn with_password(url: &str, password: &str) -> anyhow::Result<String> {
    with_login(url, None, password)
}

/// `url` logged in as `user` (the URL's own user when `None`) with `password` (percent-encoded).
pub fn with_login(url: &str, user: Option<&str>, password: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| anyhow::anyhow!("the broker URL has no scheme"))?;
    let (userinfo, host) = match rest.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("guest", rest),
    };
    let user = user.unwrap_or_else(|| userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo));
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}"))
}

/// `url` without its password, for logs and messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_from_files_replace_the_url_password_and_never_show() {
        let url = with_password("amqp://qyzmet:old@127.0.0.1:5673/%2f", "s3cr/t@x").expect("url");
        assert_eq!(url, "amqp://qyzmet:s3cr%2Ft%40x@127.0.0.1:5673/%2f");
        assert_eq!(redact(&url), "amqp://qyzmet:***@127.0.0.1:5673/%2f");
        assert_eq!(redact("amqp://127.0.0.1/%2f"), "amqp://127.0.0.1/%2f");
    }
}
