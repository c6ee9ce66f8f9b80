//! Configuration, from command-line flags or environment variables, with loopback defaults
//! that match `make services-up` (RabbitMQ on 5673, PostgreSQL on 5433).

use std::path::PathBuf;
use std::time::Duration;

/// Settings every command that touches the services shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    /// AMQP URL of RabbitMQ, including the virtual host (`%2f` is `/`).
    #[arg(
        long,
        env = "QYZMET_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5673/%2f"
    )]
    pub amqp_url: String,

    /// PostgreSQL URL of qyzmet's database.
    #[arg(
        long,
        env = "QYZMET_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5433/qyzmet"
    )]
    pub database_url: String,

    /// Directory with the regulation data (service files, common.toml, calendar.toml).
    #[arg(long, env = "QYZMET_REGULATIONS_DIR", default_value = "regulations")]
    pub regulations_dir: PathBuf,

    /// Largest message accepted; larger ones are dead-lettered as `oversized`.
    #[arg(long, env = "QYZMET_MAX_MESSAGE_BYTES", default_value_t = 262_144)]
    pub max_message_bytes: usize,

    /// PostgreSQL connections per process.
    #[arg(long, env = "QYZMET_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// How often the deadline sweeper and outbox relay run, in milliseconds.
    #[arg(long, env = "QYZMET_SWEEP_INTERVAL_MS", default_value_t = 500)]
    pub sweep_interval_ms: u64,
}

impl Settings {
    /// Defaults for the given service URLs (tests, tools).
    pub fn for_urls(amqp_url: &str, database_url: &str, regulations_dir: PathBuf) -> Settings {
        Settings {
            amqp_url: amqp_url.to_owned(),
            database_url: database_url.to_owned(),
            regulations_dir,
            max_message_bytes: 262_144,
            db_pool_size: 16,
            sweep_interval_ms: 500,
        }
    }

    /// Sweep interval as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(10))
    }
}
