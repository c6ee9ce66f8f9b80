//! The chaos drill, small: 1,000 messages of the realistic mix with 5 % poison of every kind,
//! while worker processes are SIGKILLed and RabbitMQ and PostgreSQL restart. It restarts the
//! shared services, so it runs alone (`exclusive_`).

use crate::common::*;

#[tokio::test]
async fn exclusive_the_chaos_drill_loses_nothing_and_every_poison_message_meets_its_fate() {
    let env = TestEnv::new().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qyzmet"))
        .args(["drill", "--requests", "1000", "--rate", "100", "--kill-every-secs", "2", "--timeout-secs", "240"])
        .args([
            "--pki-dir",
            &std::env::temp_dir().join(format!("qyzmet-drill-{}", env.db_name())).display().to_string(),
        ])
        .args([
            "--logs",
            &std::env::temp_dir().join(format!("qyzmet-drill-logs-{}", env.db_name())).display().to_string(),
        ])
        .envs(env.child_env())
        .env("QYZMET_LOG", "warn,lapin=off")
        .output()
        .await
        .expect("qyzmet drill runs");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(out.status.success(), "the drill failed: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("drill passed"), "{report}");
    assert!(report.contains("RabbitMQ restarted") && report.contains("PostgreSQL restarted"), "{report}");
    env.cleanup().await;
}
