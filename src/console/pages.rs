//! The console's pages, rendered on the server (maud escapes every value). Reading needs no
//! JavaScript; actions are plain forms carrying the session's CSRF token.

use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::broker::{QUEUE_DEAD, queue_stats};
use crate::contract::{Channel, Region, ServiceCode, to_local};
use crate::store::{RequestFilter, RequestSummary, SearchKey, SlaRow};

use super::dead_letters::{self, masked_preview};
use super::{Console, ConsoleError, Principal, SESSION_COOKIE, SESSION_HOURS, auth};

/// The style sheet, served from the binary (no CDN: the console works offline).
const CSS: &str = include_str!("console.css");

/// Steps in route order, for filters.
const STEPS: &[&str] = &["intake", "registry", "payment", "review", "result"];
/// Request states, for filters.
const STATES: &[&str] = &["queued", "waiting", "retry", "completed", "refused"];

type Page = Result<Response, ConsoleError>;

/// The pages' routes.
pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/static/console.css", get(css))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console", get(overview))
        .route("/console/requests", get(requests))
        .route("/console/requests/{id}", get(request_page))
        .route("/console/requests/{id}/document", get(document))
        .route("/console/deadlines", get(deadlines))
        .route("/console/deadlines.csv", get(deadlines_csv))
        .route("/console/waiting", get(waiting))
        .route("/console/dead-letters", get(dead_letter_list))
        .route("/console/dead-letters/replay-group", post(replay_group))
        .route("/console/dead-letters/{id}", get(dead_letter_page))
        .route("/console/dead-letters/{id}/replay", post(replay_one))
        .route("/console/dead-letters/{id}/discard", post(discard_one))
        .route("/console/audit", get(audit))
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], CSS).into_response()
}

// ---- layout and formatting -------------------------------------------------------------------

const NAV: &[(&str, &str)] = &[
    ("/console", "Overview"),
    ("/console/requests", "Requests"),
    ("/console/deadlines", "Deadlines"),
    ("/console/waiting", "Waiting for staff"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/audit", "Audit"),
];

fn layout(title: &str, who: &Principal, active: &str, refresh: Option<u32>, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                title { (title) " — qyzmet" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body {
                header {
                    span.brand { "qyzmet" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(*href == active).then_some("active")] { (label) }
                        }
                    }
                    span.who {
                        (who.name) " · " (who.role.as_str())
                        @if let Some(csrf) = &who.csrf {
                            form.inline method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    html_response(StatusCode::OK, page)
}

fn html_response(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'",
            ),
        ],
        page.into_string(),
    )
        .into_response()
}

/// A page saying what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (status.as_u16()) " — qyzmet" }
                   link rel="stylesheet" href="/console/static/console.css"; }
            body { main {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.error { (message) }
                p { a href="/console" { "Back to the overview" } }
            } }
        }
    };
    html_response(status, page)
}

/// Local time (Asia/Almaty), to the second.
fn at(t: DateTime<Utc>) -> String {
    to_local(t).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn at_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(at).unwrap_or_else(|| "—".into())
}

/// A duration for people: "850 ms", "12 s", "4 min", "3 h 05 min", "2 d 4 h".
fn span(seconds: f64) -> String {
    let s = seconds.abs();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 86_400.0 {
        format!("{} h {:02} min", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    } else {
        format!("{} d {} h", (s / 86_400.0) as u64, ((s % 86_400.0) / 3600.0) as u64)
    }
}

/// Time left until a deadline, or how late.
fn left(deadline: Option<DateTime<Utc>>) -> Markup {
    match deadline {
        None => html! { "—" },
        Some(d) => {
            let secs = (d - Utc::now()).num_milliseconds() as f64 / 1000.0;
            if secs >= 0.0 {
                html! { span.ok { "in " (span(secs)) } }
            } else {
                html! { span.late { "overdue by " (span(secs)) } }
            }
        }
    }
}

/// "1 request", "2 requests".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn share(v: Option<f64>) -> Markup {
    match v {
        None => html! { "—" },
        Some(v) => {
            let pct = v * 100.0;
            html! { span class=(if pct >= 95.0 { "ok" } else { "late" }) { (format!("{pct:.1} %")) } }
        }
    }
}

fn request_rows(rows: &[RequestSummary]) -> Markup {
    html! {
        table {
            thead { tr { th { "Number" } th { "Service" } th { "Region" } th { "Channel" } th { "Applicant" }
                         th { "Status" } th { "Step" } th { "Step deadline" } th { "Service deadline" } th { "Received" } } }
            tbody {
                @for r in rows {
                    tr {
                        td { a href={ "/console/requests/" (r.request_id) } {
                            (r.request_number.as_deref().unwrap_or("(not registered)")) } }
                        td { (r.service) } td { (r.region) } td { (r.channel) }
                        td.mono { (r.applicant_masked) }
                        td { span class={ "state " (r.state) } { (r.state) }
                             @if let Some(c) = &r.code { " " span.code { (c) } } }
                        td { (r.step.as_deref().unwrap_or("—")) }
                        td { @if r.finished_at.is_none() { (left(r.step_deadline)) } @else { "—" } }
                        td { (at_opt(r.service_deadline)) }
                        td { (at(r.received_at)) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="10" { "Nothing matches." } } }
            }
        }
    }
}

/// An empty form field is no filter.
fn given(s: &Option<String>) -> Option<String> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A `YYYY-MM-DD` local date as the instant it starts.
fn local_day(s: &str) -> Result<DateTime<Utc>, ConsoleError> {
    crate::report::local_day(s).map_err(ConsoleError::BadRequest)
}

fn today_start() -> DateTime<Utc> {
    crate::report::day_start(to_local(Utc::now()).date_naive())
}

// ---- sign-in -----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only a console path is a place to go back to (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains("://") => n.to_owned(),
        _ => "/console".into(),
    }
}

fn login_page(status: StatusCode, next: &str, problem: Option<&str>) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Sign in — qyzmet" }
                   link rel="stylesheet" href="/console/static/console.css"; }
            body.login { main {
                h1 { "qyzmet console" }
                @if let Some(p) = problem { p.error { (p) } }
                form method="post" action="/console/login" {
                    input type="hidden" name="next" value=(next);
                    label { "Account " input type="text" name="name" autocomplete="username" required autofocus; }
                    label { "Password " input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
            } }
        }
    };
    html_response(status, page)
}

async fn login_form(Query(q): Query<NextQuery>) -> Response {
    login_page(StatusCode::OK, &safe_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

async fn login(State(c): State<Arc<Console>>, Form(f): Form<LoginForm>) -> Page {
    let next = safe_next(f.next.as_deref());
    let name = crate::contract::storable_text(f.name.trim(), 64);
    // Password hashing is deliberately slow: off the async threads.
    let checked = {
        let c = c.clone();
        let (name, password) = (name.clone(), f.password);
        tokio::task::spawn_blocking(move || c.operators.check_password(&name, &password)).await.ok().flatten()
    };
    let Some(role) = checked else {
        c.ctx.store.record_action(&name, "-", "sign_in_failed", None, None, None).await?;
        return Ok(login_page(StatusCode::UNAUTHORIZED, &next, Some("Wrong account or password.")));
    };
    let token = auth::random_hex(32).map_err(ConsoleError::BadRequest)?;
    let csrf = auth::random_hex(16).map_err(ConsoleError::BadRequest)?;
    let expires = Utc::now() + Duration::hours(SESSION_HOURS);
    c.ctx.store.create_session(&auth::digest(&token), &name, role.as_str(), &csrf, expires).await?;
    c.ctx.store.record_action(&name, role.as_str(), "sign_in", None, None, None).await?;
    let secure = if c.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    who: Principal,
    headers: axum::http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Page {
    who.check_csrf(&f.csrf)?;
    if let Some(token) = super::cookie(&headers, SESSION_COOKIE) {
        c.ctx.store.end_session(&auth::digest(&token)).await?;
    }
    who.record(&c, "sign_out", None, None, None).await?;
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/console/login")).into_response())
}

// ---- overview ----------------------------------------------------------------------------------

/// The window the overview's rates are measured over.
const RATE_WINDOW_MINUTES: i64 = 5;

async fn overview(State(c): State<Arc<Console>>, who: Principal) -> Page {
    let store = &c.ctx.store;
    let now = Utc::now();
    let queues = queue_stats(&c.broker).await;
    let activity = store.step_activity(now - Duration::minutes(RATE_WINDOW_MINUTES)).await?;
    let today = store.service_days(today_start()).await?;
    let codes = store.refusal_codes(today_start()).await?;
    let groups = store.dead_letter_groups().await?;
    let backlog = store.outbox_backlog().await?;
    let processes = store.heartbeats(now - Duration::minutes(10)).await?;
    let per_min = |n: i64| format!("{:.1}", n as f64 / RATE_WINDOW_MINUTES as f64);
    let dead_open: i64 = groups.iter().map(|g| g.count).sum();
    let dead_queued = queues.iter().find(|q| q.queue == QUEUE_DEAD).map_or(0, |q| q.messages);
    let body = html! {
        section.cards {
            div.card { span.big { (dead_open) } " open dead letters"
                       @if dead_queued > 0 { br; small { (dead_queued) " still on the broker" } } }
            div.card { span.big { (backlog) } " outbox rows unpublished" }
            div.card { span.big { (processes.iter().filter(|p| now - p.last_seen < Duration::seconds(30)).count()) }
                       " live processes" }
        }
        h2 { "Pools" }
        p.note { "Rates over the last " (RATE_WINDOW_MINUTES) " minutes, per minute. Oldest: the request longest queued at the step." }
        table id="pools" {
            thead { tr { th { "Queue" } th { "Ready" } th { "Consumers" } th { "In /min" } th { "Out /min" }
                         th { "Open at step" } th { "Oldest" } th { "Errors" } } }
            tbody {
                @for q in &queues {
                    @let step = q.queue.strip_prefix("qyzmet.").unwrap_or(&q.queue);
                    @let a = activity.iter().find(|a| a.step == step);
                    tr {
                        td { (q.queue) } td.num { (q.messages) }
                        td.num class=[(q.consumers == 0 && q.queue != QUEUE_DEAD).then_some("late")] { (q.consumers) }
                        td.num { (a.map(|a| per_min(a.arrived)).unwrap_or_default()) }
                        td.num { (a.map(|a| per_min(a.finished)).unwrap_or_default()) }
                        td.num { (a.map(|a| a.open).unwrap_or_default()) }
                        td { (a.and_then(|a| a.oldest_seconds).map(span).unwrap_or_default()) }
                        td.num { (a.map(|a| a.errors).unwrap_or_default()) }
                    }
                }
            }
        }
        h2 { "Services today" }
        table id="services" {
            thead { tr { th { "Service" } th { "Received" } th { "Completed" } th { "Refused" } th { "Refusals by code" } th { "On time" } } }
            tbody {
                @for s in &today {
                    tr {
                        td { (s.service) } td.num { (s.received) } td.num { (s.completed) } td.num { (s.refused) }
                        td { @for (svc, code, n) in &codes { @if *svc == s.service { span.code { (code) " × " (n) } " " } } }
                        td { (share(s.on_time_share)) }
                    }
                }
                @if today.is_empty() { tr { td colspan="6" { "No requests today yet." } } }
            }
        }
        h2 { "Dead letters" }
        @if groups.is_empty() { p { "None open." } } @else {
            table {
                thead { tr { th { "Reason" } th { "From queue" } th { "Open" } th { "Newest" } } }
                tbody { @for g in &groups { tr {
                    td { a href={ "/console/dead-letters?reason=" (super::percent_encode(&g.reason)) "&queue=" (super::percent_encode(&g.source_queue)) } { (g.reason) } }
                    td { (g.source_queue) } td.num { (g.count) } td { (at(g.last)) } } } }
            }
        }
        h2 { "Worker processes" }
        table id="processes" {
            thead { tr { th { "Host" } th { "PID" } th { "Pools" } th { "Concurrency" } th { "Version" } th { "Started" } th { "Last seen" } } }
            tbody {
                @for p in &processes {
                    @let age = (now - p.last_seen).num_seconds();
                    tr class=[(age >= 30).then_some("stale")] {
                        td { (p.host) } td.num { (p.pid) } td { (p.pools) } td.num { (p.concurrency) }
                        td { (p.version) } td { (at(p.started_at)) } td { (age) " s ago" }
                    }
                }
                @if processes.is_empty() { tr { td colspan="7" { "No heartbeat in the last 10 minutes." } } }
            }
        }
    };
    Ok(layout("Overview", &who, "/console", Some(15), body))
}

// ---- requests ----------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct RequestsQuery {
    q: Option<String>,
    reason: Option<String>,
    service: Option<String>,
    region: Option<String>,
    channel: Option<String>,
    status: Option<String>,
    step: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// What a search box holds: a request id (UUID), an IIN/BIN (12 digits) or a request number.
pub fn search_key(q: &str) -> SearchKey {
    let q = q.trim();
    if let Ok(id) = Uuid::parse_str(q) {
        SearchKey::Id(id)
    } else if q.len() == 12 && q.bytes().all(|b| b.is_ascii_digit()) {
        SearchKey::Applicant(q.to_owned())
    } else {
        SearchKey::Number(q.to_owned())
    }
}

/// Runs a search by IIN/BIN only with a stated reason, and records it.
pub async fn audited_key(
    c: &Console,
    who: &Principal,
    key: SearchKey,
    reason: Option<&str>,
) -> Result<SearchKey, ConsoleError> {
    if let SearchKey::Applicant(id) = &key {
        let why = reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ConsoleError::BadRequest("a search by IIN/BIN needs a reason (it is recorded)".into()))?;
        who.record(c, "search_applicant", Some(&crate::ident::mask(id)), Some(why), None).await?;
    }
    Ok(key)
}

fn select(name: &str, options: &[&str], chosen: &Option<String>) -> Markup {
    html! {
        select name=(name) {
            option value="" { "any " (name) }
            @for o in options { option value=(o) selected[chosen.as_deref() == Some(*o)] { (o) } }
        }
    }
}

async fn requests(State(c): State<Arc<Console>>, who: Principal, Query(q): Query<RequestsQuery>) -> Page {
    let filter = RequestFilter {
        service: given(&q.service),
        region: given(&q.region),
        channel: given(&q.channel),
        status: given(&q.status),
        step: given(&q.step),
        from: given(&q.from).map(|d| local_day(&d)).transpose()?,
        to: given(&q.to).map(|d| local_day(&d).map(|t| t + Duration::days(1))).transpose()?,
    };
    let mut problem = None;
    let key = match given(&q.q) {
        None => None,
        Some(text) => match audited_key(&c, &who, search_key(&text), q.reason.as_deref()).await {
            Ok(k) => Some(k),
            Err(ConsoleError::BadRequest(p)) => {
                problem = Some(p);
                None
            }
            Err(e) => return Err(e),
        },
    };
    let rows =
        if problem.is_some() { Vec::new() } else { c.ctx.store.search_requests(key.as_ref(), &filter, 200).await? };
    let services: Vec<&str> = ServiceCode::ALL.iter().map(|s| s.as_str()).collect();
    let regions: Vec<&str> = Region::ALL.iter().map(|s| s.as_str()).collect();
    let channels: Vec<&str> = Channel::ALL.iter().map(|s| s.as_str()).collect();
    let body = html! {
        form.search method="get" action="/console/requests" {
            input type="search" name="q" value=[q.q.as_deref()] placeholder="request number, request id or IIN/BIN" size="40";
            input type="text" name="reason" value=[q.reason.as_deref()] placeholder="reason (needed for IIN/BIN)" size="28";
            (select("service", &services, &q.service))
            (select("region", &regions, &q.region))
            (select("channel", &channels, &q.channel))
            (select("status", STATES, &q.status))
            (select("step", STEPS, &q.step))
            label { "from " input type="date" name="from" value=[q.from.as_deref()]; }
            label { "to " input type="date" name="to" value=[q.to.as_deref()]; }
            button type="submit" { "Search" }
        }
        @if let Some(p) = &problem { p.error { (p) } }
        p.note { (rows.len()) " shown (newest first, at most 200). Applicants are shown masked; a search by IIN/BIN is recorded with its reason." }
        (request_rows(&rows))
    };
    Ok(layout("Requests", &who, "/console/requests", None, body))
}

async fn request_page(State(c): State<Arc<Console>>, who: Principal, Path(id): Path<Uuid>) -> Page {
    let store = &c.ctx.store;
    let Some(r) = store.request_summary(id).await? else {
        return Err(ConsoleError::NotFound(format!("no request {id}")));
    };
    let history = store.history_of(id).await?;
    let payments = store.payments_of(id).await?;
    let decisions = store.decision_rows(id).await?;
    let outcome = store.outcome_of(id).await?;
    let document = outcome.as_ref().and_then(|o| o.get("document")).filter(|d| d.is_object()).cloned();
    let verified = document.as_ref().map(|d| crate::report::verify_value(&*c.ctx.verifier, &c.shared_signer_bins, d));
    let reason = outcome.as_ref().and_then(|o| o.get("reason")).filter(|r| !r.is_null()).cloned();
    let title = format!("Request {}", r.request_number.as_deref().unwrap_or("(not registered)"));
    let body = html! {
        dl.facts {
            dt { "Request id" } dd.mono { (r.request_id) }
            dt { "Applicant" } dd.mono { (r.applicant_masked) }
            dt { "Service" } dd { (r.service) " / " (r.region) " / " (r.channel) }
            dt { "Status" } dd { span class={ "state " (r.state) } { (r.state) } @if let Some(s) = &r.step { " at " (s) } }
            dt { "Received" } dd { (at(r.received_at)) }
            dt { "Service deadline" } dd { (at_opt(r.service_deadline))
                 @if r.finished_at.is_none() { " (" (left(r.service_deadline)) ")" } }
            dt { "Finished" } dd { (at_opt(r.finished_at)) }
        }
        @if let Some(reason) = &reason {
            h2 { "Refusal" }
            p { span.code { (reason.get("code").and_then(Value::as_str).unwrap_or("-")) } " "
                (reason.get("kind").and_then(Value::as_str).unwrap_or("")) }
            p lang="ru" { (reason.get("ru").and_then(Value::as_str).unwrap_or("")) }
            p lang="kk" { (reason.get("kk").and_then(Value::as_str).unwrap_or("")) }
        }
        h2 { "Timeline" }
        p.note { "Every step with its legal deadline (P-46) and when it actually happened." }
        table id="timeline" {
            thead { tr { th { "#" } th { "Step" } th { "Event" } th { "At" } th { "Deadline" } th { "" } th { "Outcome sent" } th { "Detail" } } }
            tbody {
                @for (i, h) in history.iter().enumerate() {
                    @let late = h.deadline.is_some_and(|d| h.at > d);
                    @let previous = i.checked_sub(1).and_then(|p| history.get(p)).map(|p| p.event.as_str());
                    tr class=[late.then_some("late")] {
                        td.num { (h.step_index) } td { (h.step) } td { (h.event) } td { (at(h.at)) }
                        td { (at_opt(h.deadline)) }
                        td { @if h.deadline.is_some() { @if late { span.late { "late" } } @else { span.ok { "on time" } } } }
                        td { @if let Some(s) = outcome_sent(&h.event, previous) { code { (s) } } }
                        td.mono.small { (h.detail.as_ref().map(|d| dead_letters::mask_digits(&d.to_string())).unwrap_or_default()) }
                    }
                }
            }
        }
        h2 { "Payments" }
        @if payments.is_empty() { p { "None." } } @else {
            table { thead { tr { th { "Payment" } th { "Amount" } th { "Paid at" } th { "Payer" } th { "Sent by" } } }
                tbody { @for p in &payments { tr { td.mono { (p.payment_id) } td.num { (p.amount) " " (p.currency) }
                    td { (at(p.paid_at)) } td.mono { (p.payer_masked) } td { (p.submitter.as_deref().unwrap_or("—")) } } } } }
        }
        h2 { "Staff decisions" }
        @if decisions.is_empty() { p { "None." } } @else {
            table { thead { tr { th { "Decision" } th { "Verdict" } th { "Decided at" } th { "Signer" } th { "Applied" } th { "Sent by" } } }
                tbody { @for d in &decisions { tr { td.mono { (d.decision_id) } td { (d.verdict) } td { (at(d.decided_at)) }
                    td.mono { (d.signer_masked.as_deref().unwrap_or("—")) }
                    td { @if d.applied { "yes" } @else { span.late { "no: " (d.rejection.as_deref().unwrap_or("")) } } }
                    td { (d.submitter.as_deref().unwrap_or("—")) } } } } }
        }
        h2 { "Document" }
        @match (&document, &verified) {
            (Some(d), Some(v)) => {
                p { (d.get("kind").and_then(Value::as_str).unwrap_or("document")) " "
                    span.mono { (d.get("number").and_then(Value::as_str).unwrap_or("")) } " · "
                    a href={ "/console/requests/" (r.request_id) "/document" } download { "download (JSON)" } }
                @match v {
                    Ok(text) => p.ok id="verification" { (text) },
                    Err(text) => p.late id="verification" { (text) },
                }
            }
            _ => p { "No document (yet)." },
        }
    };
    Ok(layout(&title, &who, "/console/requests", None, body))
}

/// The Outcome status the pipeline publishes in the same transaction as an audit-trail event:
/// `registered` at intake, `in_progress` whenever a later step is queued (the first step after
/// registration is announced by `registered` itself), and the final status.
fn outcome_sent(event: &str, previous: Option<&str>) -> Option<&'static str> {
    match event {
        "registered" => Some("registered"),
        "queued" if previous != Some("registered") => Some("in_progress"),
        "completed" => Some("completed"),
        "refused" => Some("refused"),
        _ => None,
    }
}

async fn document(State(c): State<Arc<Console>>, who: Principal, Path(id): Path<Uuid>) -> Page {
    let outcome = c.ctx.store.outcome_of(id).await?;
    let Some(doc) = outcome.as_ref().and_then(|o| o.get("document")).filter(|d| d.is_object()) else {
        return Err(ConsoleError::NotFound(format!("request {id} has no document")));
    };
    who.record(&c, "download_document", Some(&id.to_string()), None, None).await?;
    let name = format!("attachment; filename=\"qyzmet-{id}-document.json\"");
    let body = serde_json::to_string_pretty(doc).unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "application/json".to_owned()), (header::CONTENT_DISPOSITION, name)], body)
        .into_response())
}

// ---- deadlines (P-46) --------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The period a deadline page covers: `[from, to]` as local dates, today by default.
fn period(q: &PeriodQuery) -> Result<(DateTime<Utc>, DateTime<Utc>), ConsoleError> {
    crate::report::period(q.from.as_deref(), q.to.as_deref()).map_err(ConsoleError::BadRequest)
}

fn sla_table(rows: &[SlaRow]) -> Markup {
    html! {
        table id="sla" {
            thead { tr { th { "Service" } th { "Region" } th { "Channel" } th { "Step" } th { "Count" } th { "On time" }
                         th { "p50" } th { "p95" } th { "Legal deadline (median)" } } }
            tbody {
                @for r in rows {
                    tr {
                        td { (r.service) } td { (r.region) } td { (r.channel) } td { (r.step) } td.num { (r.count) }
                        td { (share(Some(r.on_time_share))) } td { (span(r.p50_seconds)) } td { (span(r.p95_seconds)) }
                        td { (r.deadline_seconds.map(span).unwrap_or_else(|| "—".into())) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="9" { "No step ended in this period." } } }
            }
        }
    }
}

async fn deadlines(State(c): State<Arc<Console>>, who: Principal, Query(q): Query<PeriodQuery>) -> Page {
    let (from, to) = period(&q)?;
    let store = &c.ctx.store;
    let rows = store.sla(from, to).await?;
    let now = Utc::now();
    let cal = c.ctx.regs.calendar();
    let working_day_end = cal.add_working_days(now, 1);
    let within_hour = store.due_requests(now + Duration::hours(1), false).await?;
    let within_day: Vec<RequestSummary> = store
        .due_requests(working_day_end, false)
        .await?
        .into_iter()
        .filter(|r| r.step_deadline.is_some_and(|d| d >= now + Duration::hours(1)))
        .collect();
    let overdue = store.due_requests(now, true).await?;
    let (qf, qt) = (
        to_local(from).format("%Y-%m-%d").to_string(),
        to_local(to - Duration::days(1)).format("%Y-%m-%d").to_string(),
    );
    let body = html! {
        form.search method="get" action="/console/deadlines" {
            label { "from " input type="date" name="from" value=(qf); }
            label { "to " input type="date" name="to" value=(qt); }
            button type="submit" { "Show" }
            " " a href={ "/console/deadlines.csv?from=" (qf) "&to=" (qt) } { "CSV" }
        }
        p.note { "Every step that ended in the period, per service, region, channel and step (P-46): how many, the share that ended by the step's legal deadline, and the durations against that deadline. Same figures: " code { "qyzmet report sla" } "." }
        (sla_table(&rows))
        h2 id="overdue" { "Overdue (" (overdue.len()) ")" }
        (request_rows(&overdue))
        h2 { "Due within the next hour (" (within_hour.len()) ")" }
        (request_rows(&within_hour))
        h2 { "Due by the end of the next working day, " (at(working_day_end)) " (" (within_day.len()) ")" }
        (request_rows(&within_day))
    };
    Ok(layout("Deadlines", &who, "/console/deadlines", Some(60), body))
}

async fn deadlines_csv(State(c): State<Arc<Console>>, _who: Principal, Query(q): Query<PeriodQuery>) -> Page {
    let (from, to) = period(&q)?;
    let rows = c.ctx.store.sla(from, to).await?;
    let name = format!("attachment; filename=\"qyzmet-sla-{}.csv\"", to_local(from).format("%Y-%m-%d"));
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, name)],
        crate::report::sla_csv(&rows),
    )
        .into_response())
}

// ---- waiting for staff -------------------------------------------------------------------------

async fn waiting(State(c): State<Arc<Console>>, who: Principal) -> Page {
    let rows = c.ctx.store.awaiting_decisions().await?;
    // Rows come soonest deadline first; grouping keeps that order within each provider.
    let mut providers: std::collections::BTreeMap<&str, Vec<&crate::store::AwaitingDecision>> = Default::default();
    for r in &rows {
        providers.entry(r.provider.as_deref().unwrap_or("—")).or_default().push(r);
    }
    let body = html! {
        p.note { (plural(rows.len(), "request awaits", "requests await")) " a staff decision. Soonest deadline first, per provider (BIN of the organisation)." }
        @for (p, mine) in &providers {
            h2 { "Provider " span.mono { (p) } " (" (mine.len()) ")" }
            table {
                thead { tr { th { "Number" } th { "Service" } th { "Region" } th { "Waiting since" } th { "Deadline" } th { "Left" } } }
                tbody { @for r in mine.iter() { tr {
                    td { a href={ "/console/requests/" (r.request_id) } { (r.request_number.as_deref().unwrap_or("—")) } }
                    td { (r.service) } td { (r.region) } td { (at(r.since)) } td { (at_opt(r.step_deadline)) }
                    td { (left(r.step_deadline)) } } } }
            }
        }
        @if rows.is_empty() { p { "Nobody is waiting for staff." } }
    };
    Ok(layout("Waiting for staff", &who, "/console/waiting", Some(60), body))
}

// ---- dead letters ------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct DeadQuery {
    reason: Option<String>,
    queue: Option<String>,
    state: Option<String>,
    job: Option<u64>,
}

async fn dead_letter_list(State(c): State<Arc<Console>>, who: Principal, Query(q): Query<DeadQuery>) -> Page {
    let store = &c.ctx.store;
    let groups = store.dead_letter_groups().await?;
    let state = given(&q.state).unwrap_or_else(|| "open".into());
    let state_filter = (state != "any").then_some(state.as_str());
    let letters =
        store.dead_letters(given(&q.reason).as_deref(), given(&q.queue).as_deref(), state_filter, 200).await?;
    let job = match q.job {
        Some(id) => c.jobs.lock().await.get(&id).cloned(),
        None => None,
    };
    let refresh = job.as_ref().filter(|j| !j.finished).map(|_| 2);
    let csrf = who.csrf.clone().unwrap_or_default();
    let operator = who.role == super::Role::Operator && who.csrf.is_some();
    let body = html! {
        @if let Some(j) = &job {
            p.progress id="replay-progress" {
                "Replaying " (j.reason) " from " (j.queue) ": " (j.replayed) " of " (j.total) " replayed"
                @if j.failed > 0 { ", " span.late { (j.failed) " failed (" (j.last_error.as_deref().unwrap_or("")) ")" } }
                @if j.finished { " — done." } @else { " …" }
            }
        }
        h2 { "Open, by reason and source queue" }
        @if groups.is_empty() { p { "No open dead letters." } } @else {
            table id="groups" {
                thead { tr { th { "Reason" } th { "From queue" } th { "Open" } th { "Oldest" } th { "Newest" } th { "" } } }
                tbody { @for g in &groups { tr {
                    td { a href={ "/console/dead-letters?reason=" (super::percent_encode(&g.reason)) "&queue=" (super::percent_encode(&g.source_queue)) } { (g.reason) } }
                    td { (g.source_queue) } td.num { (g.count) } td { (at(g.first)) } td { (at(g.last)) }
                    td { @if operator {
                        form.inline method="post" action="/console/dead-letters/replay-group" {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="reason" value=(g.reason);
                            input type="hidden" name="queue" value=(g.source_queue);
                            button type="submit" { "Replay all " (g.count) }
                        } } }
                } } }
            }
        }
        h2 { "Letters" }
        form.search method="get" action="/console/dead-letters" {
            input type="text" name="reason" value=[q.reason.as_deref()] placeholder="reason";
            input type="text" name="queue" value=[q.queue.as_deref()] placeholder="source queue";
            (select("state", &["open", "replayed", "discarded", "any"], &Some(state.clone())))
            button type="submit" { "Show" }
        }
        table id="letters" {
            thead { tr { th { "#" } th { "Reason" } th { "From queue" } th { "Message id" } th { "Sent by" } th { "Dead at" } th { "State" } } }
            tbody {
                @for d in &letters { tr {
                    td { a href={ "/console/dead-letters/" (d.id) } { (d.id) } }
                    td { (d.reason) } td { (d.source_queue) } td.mono { (d.message_id.as_deref().unwrap_or("—")) }
                    td { (d.submitter.as_deref().unwrap_or("—")) } td { (at(d.dead_at)) }
                    td { (d.state) @if let Some(by) = &d.acted_by { " by " (by) } }
                } }
                @if letters.is_empty() { tr { td colspan="7" { "None." } } }
            }
        }
    };
    Ok(layout("Dead letters", &who, "/console/dead-letters", refresh, body))
}

/// One dead letter, or 404.
async fn letter(c: &Console, id: i64) -> Result<crate::store::DeadLetter, ConsoleError> {
    c.ctx.store.dead_letter(id).await?.ok_or_else(|| ConsoleError::NotFound(format!("no dead letter {id}")))
}

/// Most characters of a body the preview shows.
const PREVIEW_CHARS: usize = 4000;

async fn dead_letter_page(State(c): State<Arc<Console>>, who: Principal, Path(id): Path<i64>) -> Page {
    let d = letter(&c, id).await?;
    let csrf = who.csrf.clone().unwrap_or_default();
    let operator = who.role == super::Role::Operator && who.csrf.is_some();
    let headers: Vec<(String, String)> = d
        .headers
        .as_object()
        .map(|m| {
            m.iter().map(|(k, v)| (k.clone(), dead_letters::mask_digits(v.as_str().unwrap_or_default()))).collect()
        })
        .unwrap_or_default();
    let body = html! {
        dl.facts {
            dt { "Reason" } dd { (d.reason) }
            dt { "From queue" } dd { (d.source_queue) " (routing key " code { (d.routing_key) } ")" }
            dt { "Message id" } dd.mono { (d.message_id.as_deref().unwrap_or("—")) }
            dt { "Sent by" } dd { (d.submitter.as_deref().unwrap_or("—")) }
            dt { "Dead at" } dd { (at(d.dead_at)) }
            dt { "State" } dd id="state" { (d.state) @if let Some(by) = &d.acted_by { " by " (by) " at " (at_opt(d.acted_at)) }
                                @if let Some(w) = &d.why { " — " (w) } }
        }
        @if d.state == "open" && operator {
            div.actions {
                form.inline method="post" action={ "/console/dead-letters/" (d.id) "/replay" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" id="replay" { "Replay to " (d.source_queue) }
                }
                form.inline method="post" action={ "/console/dead-letters/" (d.id) "/discard" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="text" name="why" placeholder="why discard (recorded)" required size="36";
                    button type="submit" { "Discard" }
                }
            }
        }
        h2 { "Headers" }
        table { tbody { @for (k, v) in &headers { tr { td.mono { (k) } td.mono.small { (v) } } } } }
        h2 { "Body (masked preview, " (d.body.len()) " bytes)" }
        pre id="preview" { (masked_preview(&d.body, PREVIEW_CHARS)) }
    };
    Ok(layout(&format!("Dead letter {id}"), &who, "/console/dead-letters", None, body))
}

async fn replay_one(
    State(c): State<Arc<Console>>,
    who: Principal,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Page {
    who.check_csrf(&f.csrf)?;
    who.require_operator()?;
    let d = letter(&c, id).await?;
    dead_letters::replay(&c, &who, &d).await?;
    Ok(Redirect::to(&format!("/console/dead-letters/{id}")).into_response())
}

#[derive(Deserialize)]
struct DiscardForm {
    csrf: String,
    why: String,
}

async fn discard_one(
    State(c): State<Arc<Console>>,
    who: Principal,
    Path(id): Path<i64>,
    Form(f): Form<DiscardForm>,
) -> Page {
    who.check_csrf(&f.csrf)?;
    who.require_operator()?;
    let d = letter(&c, id).await?;
    let why = crate::contract::storable_text(&f.why, 1000);
    dead_letters::discard(&c, &who, &d, &why).await?;
    Ok(Redirect::to(&format!("/console/dead-letters/{id}")).into_response())
}

#[derive(Deserialize)]
struct GroupForm {
    csrf: String,
    reason: String,
    queue: String,
}

async fn replay_group(State(c): State<Arc<Console>>, who: Principal, Form(f): Form<GroupForm>) -> Page {
    who.check_csrf(&f.csrf)?;
    who.require_operator()?;
    let id = dead_letters::start_group_replay(c.clone(), who, f.reason, f.queue).await?;
    Ok(Redirect::to(&format!("/console/dead-letters?job={id}")).into_response())
}

// ---- audit -------------------------------------------------------------------------------------

async fn audit(State(c): State<Arc<Console>>, who: Principal) -> Page {
    let rows = c.ctx.store.actions(500).await?;
    let body = html! {
        p.note { "Every operator action and every search by IIN/BIN, newest first (the table is append-only)." }
        table id="audit" {
            thead { tr { th { "At" } th { "Who" } th { "Role" } th { "Action" } th { "On" } th { "Why" } th { "Detail" } } }
            tbody { @for a in &rows { tr {
                td { (at(a.at)) } td { (a.operator) } td { (a.role) } td { (a.action) }
                td.mono { (a.target.as_deref().unwrap_or("—")) } td { (a.why.as_deref().unwrap_or("—")) }
                td.mono.small { (a.detail.as_ref().map(Value::to_string).unwrap_or_default()) }
            } } }
        }
    };
    Ok(layout("Audit", &who, "/console/audit", None, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_box_tells_ids_identifiers_and_numbers_apart() {
        let id = Uuid::new_v4();
        assert_eq!(search_key(&id.to_string()), SearchKey::Id(id));
        assert_eq!(search_key(" 840317000029 "), SearchKey::Applicant("840317000029".into()));
        assert_eq!(search_key("KZ-0000042"), SearchKey::Number("KZ-0000042".into()));
    }

    #[test]
    fn only_console_paths_are_returned_to_after_sign_in() {
        assert_eq!(safe_next(Some("/console/requests?q=1")), "/console/requests?q=1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/console");
        assert_eq!(safe_next(Some("//evil.example/console")), "/console");
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn spans_read_like_people_write_them() {
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(12.0), "12.0 s");
        assert_eq!(span(3900.0), "1 h 05 min");
        assert_eq!(span(2.0 * 86_400.0 + 7200.0), "2 d 2 h");
    }
}
