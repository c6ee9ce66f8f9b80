//! Retention (P-48): once a finished request's final outcome is older than its service's
//! retention period (regulation data, `[retention] keep_days`), its personal data are purged —
//! the signed body, registry facts, applicant identifier, the result document and staff
//! reasons — and the audit skeleton stays (number, service, region, channel, step history with
//! times, outcome status and code). Run by every process's sweeper about hourly and by
//! `qyzmet retention run`.

use chrono::Duration;

use crate::contract::ServiceCode;
use crate::regulations::Regulations;
use crate::store::{Store, StoreError};

/// How many requests one pass purges per service at most (the next pass takes the rest).
pub const BATCH: i64 = 500;

/// What a pass found or did for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The service.
    pub service: ServiceCode,
    /// Its retention period.
    pub keep: Duration,
    /// Requests past it (at most [`BATCH`]).
    pub due: usize,
    /// Requests purged (0 in a dry run).
    pub purged: usize,
}

/// One pass over every service: purges (unless `dry_run`) what is past its retention period.
pub async fn run_once(store: &Store, regs: &Regulations, dry_run: bool) -> Result<Vec<Purged>, StoreError> {
    let mut report = Vec::new();
    for service in ServiceCode::ALL {
        let Some(keep) = regs.retention(*service) else { continue };
        let due = store.due_for_purge(service.as_str(), keep, BATCH).await?;
        let mut purged = 0;
        if !dry_run {
            for id in &due {
                if store.purge_personal_data(*id, keep).await? {
                    purged += 1;
                }
            }
        }
        if purged > 0 {
            tracing::info!(service = %service, purged, keep_days = keep.num_days(), "personal data purged after the retention period");
        }
        report.push(Purged { service: *service, keep, due: due.len(), purged });
    }
    Ok(report)
}
