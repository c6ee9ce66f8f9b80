//! A short smoke run of `qyzmet bench` so the benchmark cannot rot: it must finish, lose
//! nothing, answer nothing twice and report the ceiling ratio (round by round, against the
//! ceiling around each), where the CPU went and its charts. (Figures are not asserted.)

use serde_json::Value;

use crate::common::*;

/// Runs `qyzmet bench` with `args` (and its own PKI directory) against the test's services;
/// its JSON report.
async fn bench(env: &TestEnv, pki_dir: &std::path::Path, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .arg("bench")
        .args(args)
        .args(["--json", "--timeout-secs", "120", "--demo-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/demo")])
        .arg("--pki-dir")
        .arg(pki_dir)
        .envs(env.child_env())
        .output()
        .await
        .expect("run qyzmet bench");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("qyzmet-bench-smoke-{}", uuid::Uuid::new_v4().simple()))
}

/// Where a run given `--plot` writes its charts (inside its PKI directory), and that path as the
/// argument.
fn charts_dir(pki_dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let charts = pki_dir.join("charts");
    let arg = charts.to_string_lossy().into_owned();
    (charts, arg)
}

/// Two rounds: each run is divided by the mean of the ceiling measured just before and just
/// after it, and the report gives the rounds' median.
#[tokio::test]
async fn bench_smoke_run_reports_every_request_the_ceiling_ratio_round_by_round_the_cpu_split_and_charts() {
    let env = TestEnv::new().await;
    let pki_dir = scratch_dir();
    let (charts, charts_arg) = charts_dir(&pki_dir);
    let report = bench(
        &env,
        &pki_dir,
        &[
            "--requests",
            "40",
            "--processes",
            "1",
            "--rounds",
            "2",
            "--concurrency",
            "4",
            "--window",
            "16",
            "--plot",
            &charts_arg,
        ],
    )
    .await;
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "one run per round: {report:#}");
    let run = &runs[0];
    assert_eq!(run["requests"], 40);
    assert!(report["ceiling"]["throughput"].as_f64().is_some_and(|t| t > 0.0));
    assert!(run["peak_rss_mib"]["intake"].as_f64().is_some_and(|m| m > 1.0), "worker memory was sampled: {run:#}");
    let ceiling = &report["ceiling"];
    assert_eq!(ceiling["tried"].as_array().map(Vec::len), Some(3), "three in-flight settings tried: {ceiling:#}");
    assert!(matches!(ceiling["in_flight"].as_u64(), Some(16 | 64 | 256)), "{ceiling:#}");
    // Measured again after each round, and each round's ratio taken against the ceiling
    // just before and just after it.
    let first = ceiling["throughput"].as_f64().unwrap_or(0.0);
    let again: Vec<f64> = ceiling["again"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
    assert!(
        again.len() == 2 && again.iter().all(|t| *t > 0.0),
        "the ceiling is measured again after each round: {ceiling:#}"
    );
    let around = [(first + again[0]) / 2.0, (again[0] + again[1]) / 2.0];
    let mut ratios = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["round"], i + 1, "{run:#}");
        assert_eq!(run["finished"], 40, "{run:#}");
        assert_eq!(run["lost"], 0);
        assert_eq!(run["answered_twice"], 0);
        let ratio = run["ratio_to_ceiling"].as_f64().unwrap_or(0.0);
        let throughput = run["throughput"].as_f64().unwrap_or(0.0);
        assert!((ratio - throughput / around[i]).abs() < 1e-9, "{run:#} {ceiling:#}");
        ratios.push(ratio);
    }
    let rounds = &report["rounds"][0];
    assert_eq!(rounds["label"], "1 proc/pool", "{report:#}");
    assert_eq!(rounds["ratios"], serde_json::json!(ratios));
    assert!((rounds["median"].as_f64().unwrap_or(0.0) - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-9, "{rounds:#}");
    assert!(run["cpu"]["machine_s"].as_f64().is_some_and(|s| s > 0.0), "machine CPU was sampled: {run:#}");
    assert!(run["cpu"]["workers_by_pool"]["intake"].as_f64().is_some_and(|s| s >= 0.0), "{run:#}");
    let chart = std::fs::read_to_string(charts.join("throughput.svg")).expect("throughput chart");
    assert!(
        chart.starts_with("<svg") && chart.contains("ceiling") && chart.contains("1 proc/pool, round 2"),
        "{chart}"
    );
    assert!(chart.contains("ceiling after round 2"), "{chart}");
    let at = |label: &str| chart.find(&format!(">{label}<")).unwrap_or_else(|| panic!("{label} in {chart}"));
    assert!(
        at("1 proc/pool, round 1") < at("ceiling after round 1")
            && at("ceiling after round 1") < at("1 proc/pool, round 2"),
        "the bars in the order they were measured: {chart}"
    );
    let fill = |label: &str| chart[at(label)..].split("fill=\"").nth(1).and_then(|f| f.split('"').next()).unwrap_or("");
    assert_eq!(fill("ceiling after round 1"), fill("ceiling"), "the ceiling measured again is drawn as the ceiling");
    assert_ne!(fill("1 proc/pool, round 1"), fill("ceiling"), "a run is not drawn as the ceiling");
    assert!(charts.join("steps.svg").exists(), "per-step latency chart");
    assert_eq!(report["readers"], serde_json::json!([]), "no other reader on the test's own virtual host");
    env.cleanup().await;
}

/// The open loop offers requests on a schedule (request `k` due `(k + 1) / rate` after the
/// start), not as fast as the pipeline takes them: 40 requests at 20 per second cannot all have
/// been published, let alone answered, in under two seconds. Its latency is also reported by
/// the second of publication, the warm-up's apart from the steady state's, and the hypervisor's
/// steal apart from the machine's own work.
#[tokio::test]
async fn open_loop_smoke_run_keeps_to_the_offered_rate_answers_every_request_and_reports_by_second_and_warm_up_apart() {
    let env = TestEnv::new().await;
    let pki_dir = scratch_dir();
    let report = bench(
        &env,
        &pki_dir,
        &[
            "--requests",
            "40",
            "--rate",
            "20",
            "--warmup-secs",
            "1",
            "--processes",
            "1",
            "--concurrency",
            "4",
            "--no-ceiling",
        ],
    )
    .await;
    let run = &report["runs"][0];
    assert_eq!(run["finished"], 40, "{run:#}");
    assert_eq!(run["lost"], 0);
    assert_eq!(run["answered_twice"], 0);
    assert!(run["seconds"].as_f64().is_some_and(|s| s >= 1.95), "paced at 20 per second: {run:#}");
    assert!(run["end_to_end_ms"]["p50"].as_f64().is_some_and(|ms| ms > 0.0), "{run:#}");
    let seconds = run["end_to_end_by_second"].as_array().expect("latency by second of publication");
    assert!(seconds.len() >= 2, "40 requests at 20 per second span two seconds: {run:#}");
    let counted: u64 = seconds.iter().filter_map(|l| l["n"].as_u64()).sum();
    assert_eq!(counted, 40, "every answered request in the second it was published: {run:#}");
    assert!(run["cpu"]["steal_s"].as_f64().is_some_and(|s| s >= 0.0), "steal reported apart: {run:#}");
    // Requests 0..=18 are due before 1 s: the warm-up, left out of the steady state's figures.
    let warm = run["warmup_ms"]["n"].as_u64().expect("warm-up reported apart");
    let steady = run["end_to_end_ms"]["n"].as_u64().expect("steady state");
    assert!((18..=20).contains(&warm), "{run:#}");
    assert_eq!(warm + steady, 40, "{run:#}");
    env.cleanup().await;
}

/// A reader queue of the demo's systems file that exists on the bench's virtual host gets every
/// Outcome of the run too, so the broker's figures include that work: the report names it.
#[tokio::test]
async fn bench_names_a_reader_queue_that_gets_the_runs_outcomes_too() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let env = TestEnv::new().await;
    let ch = env.broker().channel().await.expect("channel");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("demo.outcomes".into(), durable, FieldTable::default()).await.expect("declare the reader");
    ch.queue_bind(
        "demo.outcomes".into(),
        qyzmet::contract::EXCHANGE_OUTCOMES.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind the reader");
    let pki_dir = scratch_dir();
    let report = bench(
        &env,
        &pki_dir,
        &["--requests", "10", "--no-ceiling", "--processes", "1", "--concurrency", "4", "--window", "8"],
    )
    .await;
    assert_eq!(report["readers"], serde_json::json!([["demo.outcomes", 0]]), "{:#}", report["readers"]);
    assert_eq!(report["runs"][0]["finished"], 10);
    let copies = env.queue_ready("demo.outcomes").await;
    assert!(copies >= 10, "the reader got at least every final Outcome of the run: {copies}");
    env.cleanup().await;
}

/// With `--layout together` the run's worker processes each run every pool, as `qyzmet run`
/// does on a small install: the report names the layout, the one process carries the workers'
/// CPU and memory, and every request is answered once.
#[tokio::test]
async fn bench_runs_every_pool_in_one_process_with_layout_together() {
    let env = TestEnv::new().await;
    let pki_dir = scratch_dir();
    let report = bench(
        &env,
        &pki_dir,
        &["--requests", "20", "--no-ceiling", "--processes", "1", "--layout", "together", "--concurrency", "4"],
    )
    .await;
    let run = &report["runs"][0];
    assert_eq!(run["layout"], "together", "{run:#}");
    assert_eq!(
        (run["finished"].as_u64(), run["lost"].as_u64(), run["answered_twice"].as_u64()),
        (Some(20), Some(0), Some(0))
    );
    let pools: Vec<&String> = run["cpu"]["workers_by_pool"].as_object().expect("CPU by process").keys().collect();
    assert_eq!(pools, ["all pools"], "one process ran every pool: {run:#}");
    assert!(run["peak_rss_mib"]["all pools"].as_f64().is_some_and(|m| m > 1.0), "its memory was sampled: {run:#}");
    env.cleanup().await;
}

/// `--half-max` measures each run again as an open loop offered half the throughput it reached,
/// and the ceiling at half its own best, so that a p99 "at half the maximum rate" is read in one
/// bench beside what the bare broker and database give at their half. Both are paced: 60
/// requests due `(k + 1) / rate` after the start cannot all be answered before `60 / rate`.
#[tokio::test]
async fn half_max_offers_each_run_and_the_ceiling_half_their_maximum_and_reports_both_latencies() {
    let env = TestEnv::new().await;
    let pki_dir = scratch_dir();
    let (charts, charts_arg) = charts_dir(&pki_dir);
    let report = bench(
        &env,
        &pki_dir,
        &[
            "--requests",
            "60",
            "--processes",
            "1",
            "--concurrency",
            "4",
            "--window",
            "16",
            "--half-max",
            "--plot",
            &charts_arg,
        ],
    )
    .await;
    let run = &report["runs"][0];
    assert_eq!(run["offered_rate"], serde_json::Value::Null, "the first run is the closed loop: {run:#}");
    let half = &run["at_half_max"];
    assert_eq!(
        (half["finished"].as_u64(), half["lost"].as_u64(), half["answered_twice"].as_u64()),
        (Some(60), Some(0), Some(0)),
        "{half:#}"
    );
    let max = run["throughput"].as_f64().expect("the closed loop's throughput");
    let offered = half["offered_rate"].as_f64().expect("the open loop's offered rate");
    assert!((offered - max / 2.0).abs() <= max * 1e-9, "offered half of {max}: {offered}");
    let seconds = half["seconds"].as_f64().expect("the open loop's duration");
    assert!(seconds >= 0.95 * 60.0 / offered, "paced at {offered}/s, not as fast as it could: {seconds} s");
    assert!(half["end_to_end_ms"]["p99"].as_f64().is_some_and(|ms| ms > 0.0), "{half:#}");
    assert!(half["cpu"]["machine_s"].as_f64().is_some_and(|s| s > 0.0), "its CPU was sampled: {half:#}");
    let ceiling = &report["ceiling"];
    let best = ceiling["throughput"].as_f64().expect("the ceiling's best");
    let open = &ceiling["at_half_max"];
    assert!(open["rate"].as_f64().is_some_and(|r| (r - best / 2.0).abs() <= best * 1e-9), "{ceiling:#}");
    assert_eq!(open["end_to_end_ms"]["n"], 60, "every measured ceiling message answered: {open:#}");
    assert!(open["end_to_end_ms"]["p99"].as_f64().is_some_and(|ms| ms > 0.0), "{open:#}");
    let chart = std::fs::read_to_string(charts.join("half-max.svg")).expect("the half-maximum chart");
    assert!(chart.contains("ceiling") && chart.contains("1 proc/pool") && chart.contains("offered"), "{chart}");

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["bench", "--half-max", "--rate", "10"])
        .output()
        .await
        .expect("run qyzmet bench");
    assert!(!refused.status.success(), "--half-max offers its own rate; with --rate it is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rate"), "the error names the conflict");
    env.cleanup().await;
}
