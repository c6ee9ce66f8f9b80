//! A short smoke run of `qyzmet bench` so the benchmark cannot rot: it must finish, lose
//! nothing, answer nothing twice and report the ceiling ratio. (Figures are not asserted.)

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn bench_smoke_run_reports_every_request_and_the_ceiling_ratio() {
    let env = TestEnv::new().await;
    let pki_dir = std::env::temp_dir().join(format!("qyzmet-bench-smoke-{}", uuid::Uuid::new_v4().simple()));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["bench", "--requests", "40", "--processes", "1", "--concurrency", "4", "--window", "16", "--json"])
        .args(["--timeout-secs", "120", "--demo-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/demo")])
        .arg("--pki-dir")
        .arg(&pki_dir)
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
    env.cleanup().await;
}
