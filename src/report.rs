//! Operator-facing reports: `qyzmet status` (the P-41 status screen) and
//! `qyzmet regulations check`.

use std::fmt::Write as _;

use uuid::Uuid;

use crate::broker::pool_name;
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
    let _ = writeln!(out, "number       {}", row.request_number.as_deref().unwrap_or("(not registered)"));
    let _ = writeln!(out, "applicant    {}", row.applicant_masked);
    let _ = writeln!(out, "service      {} / {} / {}", row.service, row.region, row.channel);
    let _ = writeln!(
        out,
        "status       {}{}",
        row.state,
        row.step.as_deref().map(|s| format!(" (step {s})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "deadline     {}",
        row.service_deadline.map(|d| to_local(d).to_rfc3339()).unwrap_or_else(|| "-".into())
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
            h.deadline.map(|d| to_local(d).format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "-".into()),
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
                                values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
                            ),
                        };
                        format!("{} [{d}]", pool_name(st.pool))
                    })
                    .collect();
                let _ = writeln!(out, "  {:<7} {:<9} {}", v.region.as_str(), c.channel.as_str(), steps.join(" → "));
            }
        }
    }
    out
}

/// `qyzmet verify FILE`: checks a signed document, Request or Decision offline and explains.
pub fn verify_file(settings: &crate::config::Settings, file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let trust = settings.trust_bundle.as_deref().context("give --trust-bundle (or QYZMET_TRUST_BUNDLE)")?;
    let verifier =
        crate::signature::x509::X509Verifier::new(trust, settings.crl_path.clone(), settings.staff_role_oids.clone())?;
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&text).context("the file is not JSON")?;
    match verify_value(&verifier, &settings.shared_signer_bins, &value) {
        Ok(lines) => {
            println!("{lines}");
            Ok(())
        }
        Err(e) => anyhow::bail!("{e}"),
    }
}

/// Verifies a signed result document (or an Outcome carrying one), Request or Decision against
/// the verifier's trust bundle and CRLs; says what was checked, or why it is not valid.
pub fn verify_value(
    verifier: &dyn crate::signature::Verifier,
    shared_signer_bins: &[String],
    value: &serde_json::Value,
) -> Result<String, String> {
    use crate::contract::SignatureBlock;
    use crate::ident::Identifier;
    use crate::regulations::IdKind;
    use crate::signature::ExpectedSigner;

    // An Outcome carries the document; verify the document itself.
    let value = match value.get("document") {
        Some(doc) if doc.is_object() => doc,
        _ => value,
    };
    let obj = value.as_object().ok_or("not a JSON object")?;
    let sig: SignatureBlock = serde_json::from_value(obj.get("signature").cloned().unwrap_or_default())
        .map_err(|_| "no readable `signature` member".to_owned())?;
    let time = |key: &str| {
        obj.get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let (what, role, subjects, kinds, signed_at): (&str, &str, Vec<Identifier>, Vec<IdKind>, _) =
        if obj.contains_key("number") && obj.contains_key("content") {
            // The provider itself, or a shared signer the verifier's configuration trusts to sign
            // for every provider (QYZMET_SHARED_SIGNER_BINS).
            let provider = value["content"]["provider"].as_str().unwrap_or_default().to_owned();
            let mut signers = vec![Identifier::Bin(provider)];
            signers.extend(shared_signer_bins.iter().map(|b| Identifier::Bin(b.clone())));
            ("result document", "provider or shared signer", signers, vec![IdKind::Bin], time("issued_at"))
        } else if obj.contains_key("decision_id") {
            ("decision", "any", Vec::new(), vec![IdKind::Iin, IdKind::Bin], time("decided_at"))
        } else {
            let applicant = match (value["applicant"]["iin"].as_str(), value["applicant"]["bin"].as_str()) {
                (Some(i), _) => vec![Identifier::Iin(i.to_owned())],
                (_, Some(b)) => vec![Identifier::Bin(b.to_owned())],
                _ => Vec::new(),
            };
            ("request", "applicant", applicant, vec![IdKind::Iin, IdKind::Bin], time("submitted_at"))
        };
    let expected = ExpectedSigner {
        role: "applicant",
        identifiers: &kinds,
        subjects: subjects.clone(),
        signed_at: signed_at.unwrap_or_else(chrono::Utc::now),
    };
    let result = match verifier.verify(obj, &sig, &expected) {
        // Without a named signer (a decision read offline), every check but the identifier applies.
        Err(crate::signature::SignatureFailure::IdentifierMismatch) if subjects.is_empty() => Ok(()),
        other => other,
    };
    match result {
        Ok(()) => {
            let mut out =
                format!("valid: {what} signed with {} by a certificate that chains to the trust bundle", sig.algorithm);
            if role != "any" {
                out.push_str(&format!("\nthe certificate names the expected {role}"));
            }
            Ok(out)
        }
        Err(f) => Err(format!("NOT valid ({what}): {f}: {}", f.explain())),
    }
}

/// The instant a local (Asia/Almaty) date starts.
pub fn day_start(d: chrono::NaiveDate) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone as _;
    let midnight = d.and_time(chrono::NaiveTime::MIN);
    chrono_tz::Asia::Almaty
        .from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| midnight.and_utc())
}

/// A `YYYY-MM-DD` local date as the instant it starts.
pub fn local_day(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map(day_start)
        .map_err(|_| format!("{s:?} is not a date like 2026-12-01"))
}

/// The period `[from, to]` of local dates as instants `[start of from, end of to)`; today when
/// `from` is not given, one day when `to` is not.
pub fn period(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), String> {
    let today = day_start(to_local(chrono::Utc::now()).date_naive());
    let from = from.filter(|s| !s.trim().is_empty()).map(local_day).transpose()?.unwrap_or(today);
    let to = match to.filter(|s| !s.trim().is_empty()) {
        Some(t) => local_day(t)? + chrono::Duration::days(1),
        None => from + chrono::Duration::days(1),
    };
    if to <= from {
        return Err("the period ends before it starts".into());
    }
    Ok((from, to))
}

/// The deadline report as CSV (one row per service, region, channel and step; seconds).
pub fn sla_csv(rows: &[crate::store::SlaRow]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "service",
        "region",
        "channel",
        "step",
        "step_index",
        "count",
        "on_time_share",
        "p50_seconds",
        "p95_seconds",
        "deadline_seconds",
    ]);
    for r in rows {
        let _ = w.write_record([
            r.service.clone(),
            r.region.clone(),
            r.channel.clone(),
            r.step.clone(),
            r.step_index.to_string(),
            r.count.to_string(),
            format!("{:.4}", r.on_time_share),
            format!("{:.3}", r.p50_seconds),
            format!("{:.3}", r.p95_seconds),
            r.deadline_seconds.map(|d| format!("{d:.0}")).unwrap_or_default(),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The deadline report as an aligned table for a terminal.
pub fn sla_table(rows: &[crate::store::SlaRow]) -> String {
    let mut out = format!(
        "{:<20} {:<7} {:<9} {:<9} {:>6} {:>8} {:>10} {:>10} {:>12}\n",
        "service", "region", "channel", "step", "count", "on time", "p50 s", "p95 s", "deadline s"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<20} {:<7} {:<9} {:<9} {:>6} {:>7.1}% {:>10.3} {:>10.3} {:>12}",
            r.service,
            r.region,
            r.channel,
            r.step,
            r.count,
            r.on_time_share * 100.0,
            r.p50_seconds,
            r.p95_seconds,
            r.deadline_seconds.map(|d| format!("{d:.0}")).unwrap_or_else(|| "-".into())
        );
    }
    if rows.is_empty() {
        out.push_str("(no step ended in this period)\n");
    }
    out
}

/// The questionnaire report as CSV: one line per service, region and channel.
pub fn questionnaire_csv(rows: &[crate::store::QuestionnaireCount]) -> String {
    let mut out = String::from(
        "service,region,channel,accepted,ignored,quality_1,quality_2,quality_3,information_1,information_2,information_3\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            r.service,
            r.region,
            r.channel,
            r.accepted,
            r.ignored,
            r.quality_1,
            r.quality_2,
            r.quality_3,
            r.information_1,
            r.information_2,
            r.information_3
        ));
    }
    out
}

/// The questionnaire report as a table: answers per question as counts of 1 / 2 / 3.
pub fn questionnaire_table(rows: &[crate::store::QuestionnaireCount]) -> String {
    let mut out = format!(
        "{:<22} {:<8} {:<9} {:>8} {:>7}  {:<14} {:<14}\n",
        "service", "region", "channel", "accepted", "ignored", "quality 1/2/3", "information 1/2/3"
    );
    for r in rows {
        let service = if r.service.is_empty() { "(unknown request)" } else { r.service.as_str() };
        out.push_str(&format!(
            "{:<22} {:<8} {:<9} {:>8} {:>7}  {:<14} {:<14}\n",
            service,
            r.region,
            r.channel,
            r.accepted,
            r.ignored,
            format!("{}/{}/{}", r.quality_1, r.quality_2, r.quality_3),
            format!("{}/{}/{}", r.information_1, r.information_2, r.information_3)
        ));
    }
    if rows.is_empty() {
        out.push_str("no questionnaire answers yet\n");
    }
    out
}
