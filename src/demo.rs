//! Operator-facing reports (`qyzmet status`, `qyzmet regulations check`) and the demo.

use std::fmt::Write as _;
use std::path::Path;

use uuid::Uuid;

use crate::broker::pool_name;
use crate::config::Settings;
use crate::contract::to_local;
use crate::regulations::{DeadlineSpec, Regulations};
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

/// Runs the demonstration.
pub async fn run(_settings: &Settings, _dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("demo not ready")
}
