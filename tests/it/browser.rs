//! The console as a person uses it, in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`) against a real pipeline with traffic: sign in, the overview shows the
//! traffic, a search finds a request whose timeline shows its steps with their deadlines
//! (P-46), a dead letter replayed from the page reaches intake again, and the action appears
//! in the audit list. Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use qyzmet::contract::{EXCHANGE_REQUESTS, Status};

use crate::common::*;
use crate::console::{OPERATOR, VIEWER};

/// chromedriver, started for one test on a free loopback port and killed with it.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

fn program(var: &str, default: &str) -> String {
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

async fn chromedriver() -> Driver {
    let bin = program("QYZMET_CHROMEDRIVER", "chromedriver");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = tokio::process::Command::new(&bin)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into(), "--log-level=WARNING".into()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e}): the browser test needs Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver), or QYZMET_CHROMEDRIVER and QYZMET_CHROMIUM"
            )
        });
    let up = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), up).await.expect("chromedriver listens");
    Driver { _child: child, url: format!("http://127.0.0.1:{port}") }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = program("QYZMET_CHROMIUM", "/usr/bin/chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-extensions", "--no-first-run",
                     "--disable-sync", "--window-size=1440,1000"],
        },
    });
    let caps = caps.as_object().cloned().unwrap_or_default();
    // chromedriver speaks plain HTTP on loopback: no TLS stack for the WebDriver client.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session (is the chromium package installed?)")
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Reloads `url` until its page contains `text` (the console has no live updates to wait on).
async fn until_page_has(c: &Client, url: &str, text: &str) -> String {
    let wait = async {
        loop {
            c.goto(url).await.expect("goto");
            let source = c.source().await.expect("source");
            if source.contains(text) {
                return source;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait).await.unwrap_or_else(|_| panic!("{url} never showed {text:?}"))
}

/// The text of the element `css` names. A page that refreshes itself (the replay progress)
/// may replace the element between finding and reading it: then it is found again.
async fn text_of(c: &Client, css: &str) -> String {
    let read = async {
        loop {
            let element = c.wait().for_element(Locator::Css(css)).await.expect(css);
            match element.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, read).await.unwrap_or_else(|_| panic!("{css} kept going stale"))
}

/// The text of the element `css` names once `done` holds for it. After a click that submits a
/// form, the page being left is still there for a moment, with the same element on it.
async fn text_once(c: &Client, css: &str, done: impl Fn(&str) -> bool) -> String {
    let wait = async {
        loop {
            let text = text_of(c, css).await;
            if done(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    match tokio::time::timeout(EVENT_TIMEOUT, wait).await {
        Ok(text) => text,
        Err(_) => panic!("{css} still shows {:?}", text_of(c, css).await),
    }
}

#[tokio::test]
async fn a_person_signs_in_sees_the_traffic_finds_a_request_with_its_deadlines_and_replays_a_dead_letter() {
    let mut env = TestEnv::new().await;
    env.enable_console(&[OPERATOR, VIEWER], &[]).await;
    let app = env.start_all().await;
    let base = format!("http://{}", app.http_addr);

    // Traffic: completed, refused, one waiting for a staff decision, and an unreadable message.
    let ok =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    let unknown = request(
        "doctor-appointment",
        "akmola",
        "portal",
        json!({ "iin": who::UNKNOWN_PERSON }),
        who::AKMOLA_PHC,
        json!({}),
    );
    let licence = licence_request("portal", "issue");
    for r in [&ok, &unknown, &licence] {
        env.publish_request(r).await;
    }
    let done = env.final_outcome(id_of(&ok)).await;
    assert_eq!(done.status, Status::Completed);
    assert_eq!(env.final_outcome(id_of(&unknown)).await.status, Status::Refused);
    env.wait_step(id_of(&licence), "payment").await;
    env.publish_payment(&payment(id_of(&licence), "PSHEP-browser-1")).await;
    env.wait_step(id_of(&licence), "review").await;
    env.publish_raw(EXCHANGE_REQUESTS, "doctor-appointment", b"{\"request_id\": oops".to_vec()).await;
    let number = done.request_number.clone().expect("number");

    let driver = chromedriver().await;
    let c = browser(&driver).await;

    // Sign in: the console sends a stranger to the sign-in page and back.
    c.goto(&format!("{base}/console")).await.expect("goto");
    c.wait().for_element(Locator::Css("input[name=name]")).await.expect("the sign-in form");
    shot(&c, "1-sign-in").await;
    c.find(Locator::Css("input[name=name]")).await.expect("name").send_keys(OPERATOR.0).await.expect("type");
    c.find(Locator::Css("input[name=password]")).await.expect("pw").send_keys(OPERATOR.2).await.expect("type");
    c.find(Locator::Css("button[type=submit]")).await.expect("button").click().await.expect("click");
    c.wait().for_element(Locator::Css("table#pools")).await.expect("the overview after sign-in");

    // The overview shows the traffic.
    let services = text_of(&c, "table#services").await;
    assert!(services.contains("doctor-appointment") && services.contains("medical-licence"), "{services}");
    let processes = text_of(&c, "table#processes").await;
    assert!(processes.contains("intake,registry,payment,review,result"), "{processes}");
    shot(&c, "2-overview").await;

    // A search by number finds the request; its timeline shows every step against its deadline.
    c.goto(&format!("{base}/console/requests")).await.expect("goto");
    c.find(Locator::Css("input[name=q]")).await.expect("search box").send_keys(&number).await.expect("type");
    c.find(Locator::Css("form.search button")).await.expect("search").click().await.expect("click");
    // The unfiltered list already shows the request: wait for the results page, or the link
    // found could belong to the page being left.
    let searched = async {
        while !c.current_url().await.expect("url").as_str().contains("q=") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, searched).await.expect("the search results load");
    c.wait()
        .for_element(Locator::LinkText(&number))
        .await
        .expect("the request in the results")
        .click()
        .await
        .expect("click");
    let timeline = text_of(&c, "table#timeline").await;
    for step in ["intake", "review", "result"] {
        assert!(timeline.contains(step), "the timeline lacks {step}: {timeline}");
    }
    assert!(timeline.contains("on time"), "{timeline}");
    assert!(text_of(&c, "#verification").await.starts_with("valid"), "the document verifies");
    shot(&c, "3-timeline").await;

    c.goto(&format!("{base}/console/deadlines")).await.expect("goto");
    assert!(text_of(&c, "table#sla").await.contains("doctor-appointment"));
    shot(&c, "4-deadlines").await;
    c.goto(&format!("{base}/console/waiting")).await.expect("goto");
    let waiting = c.source().await.expect("source");
    assert!(waiting.contains(who::AKTOBE_HEALTH), "the licence waits for the Aktobe licensor's staff");
    shot(&c, "5-waiting").await;

    // The unreadable message is a dead letter; replaying it from the page sends it to intake,
    // which dead-letters it again (a second letter with the same message id).
    let list = until_page_has(&c, &format!("{base}/console/dead-letters"), "not_json").await;
    assert!(list.contains("qyzmet.intake"));
    shot(&c, "6-dead-letters").await;
    c.find(Locator::Css("table#letters tbody a")).await.expect("a letter").click().await.expect("click");
    let preview = text_of(&c, "pre#preview").await;
    assert!(preview.contains("oops"), "{preview}");
    c.find(Locator::Css("button#replay")).await.expect("replay button").click().await.expect("click");
    // The letter's page before the replay says "open" in the same place.
    let state = text_once(&c, "#state", |s| !s.starts_with("open")).await;
    assert!(state.starts_with("replayed by aigerim"), "{state}");
    shot(&c, "7-replayed").await;
    let (message_id,): (Option<String>,) = sqlx::query_as("SELECT message_id FROM dead_letters ORDER BY id LIMIT 1")
        .fetch_one(env.store.pool())
        .await
        .expect("first");
    let again = async {
        loop {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM dead_letters WHERE message_id = $1 AND source_queue = 'qyzmet.intake'",
            )
            .bind(&message_id)
            .fetch_one(env.store.pool())
            .await
            .expect("count");
            if n == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, again).await.expect("the replayed letter reached intake again");

    // The action is in the audit list.
    c.goto(&format!("{base}/console/audit")).await.expect("goto");
    let audit = text_of(&c, "table#audit").await;
    assert!(audit.contains("replay") && audit.contains("aigerim") && audit.contains("sign_in"), "{audit}");
    shot(&c, "8-audit").await;

    c.close().await.expect("close the browser");
    app.shutdown(Duration::from_secs(5)).await;
    env.cleanup().await;
}
