//! A short smoke run of `qyzmet bench` so the benchmark cannot rot: it must finish, lose
//! nothing, answer nothing twice and report the ceiling ratio, where the CPU went and its charts.
//! (Figures are not asserted.)

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn bench_smoke_run_reports_every_request_the_ceiling_ratio_the_cpu_split_and_charts() {
    let env = TestEnv::new().await;
    let pki_dir = std::env::temp_dir().join(format!("qyzmet-bench-smoke-{}", uuid::Uuid::new_v4().simple()));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["bench", "--requests", "40", "--processes", "1", "--concurrency", "4", "--window", "16", "--json"])
        .args(["--timeout-secs", "120", "--demo-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/demo")])
        .arg("--pki-dir")
        .arg(&pki_dir)
        .arg("--plot")
        .arg(pki_dir.join("charts"))
        .envs(env.child_env())
        .output()
        .await
        .expect("run qyzmet bench");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let run = &report["runs"][0];
    assert_eq!(run["requests"], 40);
    assert_eq!(run["finished"], 40, "{run:#}");
    assert_eq!(run["lost"], 0);
    assert_eq!(run["answered_twice"], 0);
    assert!(run["ratio_to_ceiling"].as_f64().is_some_and(|r| r > 0.0), "{run:#}");
    assert!(report["ceiling"]["throughput"].as_f64().is_some_and(|t| t > 0.0));
    assert!(run["peak_rss_mib"]["intake"].as_f64().is_some_and(|m| m > 1.0), "worker memory was sampled: {run:#}");
    let ceiling = &report["ceiling"];
    assert_eq!(ceiling["tried"].as_array().map(Vec::len), Some(3), "three in-flight settings tried: {ceiling:#}");
    assert!(matches!(ceiling["in_flight"].as_u64(), Some(16 | 64 | 256)), "{ceiling:#}");
    assert!(run["cpu"]["machine_s"].as_f64().is_some_and(|s| s > 0.0), "machine CPU was sampled: {run:#}");
    assert!(run["cpu"]["workers_by_pool"]["intake"].as_f64().is_some_and(|s| s >= 0.0), "{run:#}");
    let chart = std::fs::read_to_string(pki_dir.join("charts").join("throughput.svg")).expect("throughput chart");
    assert!(chart.starts_with("<svg") && chart.contains("ceiling") && chart.contains("1 proc/pool"), "{chart}");
    assert!(pki_dir.join("charts").join("steps.svg").exists(), "per-step latency chart");
    env.cleanup().await;
}
