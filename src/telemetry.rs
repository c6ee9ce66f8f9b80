//! Logging. Identifiers of people and organisations are never logged in clear: code logs
//! [`crate::ident::mask`]ed values only, and request bodies are never logged.

use tracing_subscriber::EnvFilter;

/// Default filter for long-running processes.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn";

/// Installs the global subscriber: `QYZMET_LOG` (env-filter syntax) chooses what is logged,
/// otherwise `default`; `QYZMET_LOG_FORMAT=json` switches to JSON lines for log shippers.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_env("QYZMET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("QYZMET_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only for a person at a terminal: a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.compact().try_init() };
}
