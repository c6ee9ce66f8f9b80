//! A RabbitMQ cluster is a supported deployment: three nodes on loopback
//! (`scripts/rabbit-cluster.sh`), qyzmet given every node's URL, traffic flowing, and the node
//! that leads the intake queue — the busiest while a burst is published — killed with SIGKILL.
//! Every request still ends with exactly one final outcome, in PostgreSQL and on the wire.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use qyzmet::broker::Broker;
use qyzmet::contract::{EXCHANGE_OUTCOMES, Outcome};
use qyzmet::startup::Options;

use crate::common::*;

const REQUESTS: usize = 240;

/// The cluster for this test; stopped and removed when dropped, even if the test fails.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbit-cluster.sh"))
            .args(args)
            .env("QYZMET_CLUSTER_DIR", &self.dir)
            .env("QYZMET_CLUSTER_PORT_BASE", "5900")
            .output()
            .expect("scripts/rabbit-cluster.sh runs");
        assert!(out.status.success(), "rabbit-cluster.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts three nodes; returns their AMQP URLs.
    fn start() -> (Cluster, Vec<String>) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-cluster");
        let cluster = Cluster { dir };
        let env_file = cluster.script(&["start"]);
        let env_file = env_file.lines().last().unwrap_or_default().to_owned();
        let text = std::fs::read_to_string(&env_file).expect("cluster env file");
        let urls = text
            .lines()
            .find_map(|l| l.strip_prefix("export CLUSTER_AMQP_URLS="))
            .map(|v| v.trim_matches('\'').split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .expect("CLUSTER_AMQP_URLS");
        (cluster, urls)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbit-cluster.sh"))
            .arg("clean")
            .env("QYZMET_CLUSTER_DIR", &self.dir)
            .env("QYZMET_CLUSTER_PORT_BASE", "5900")
            .status();
    }
}

#[tokio::test]
async fn exclusive_a_cluster_node_lost_under_traffic_costs_no_request_and_doubles_none() {
    let mut env = TestEnv::new().await;
    let started = Instant::now();
    let (cluster, urls) = Cluster::start();
    eprintln!("cluster of {} nodes up in {:.1}s", urls.len(), started.elapsed().as_secs_f64());
    env.settings.amqp_url = urls.join(",");
    let app = env.start(regulations(), Options::all(8)).await;

    // A reader of every Outcome on its own quorum queue (it survives the node loss too).
    let reader = Broker::open(&urls.join(","), "cluster test reader").await.expect("reader");
    let ch = reader.channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    ch.queue_declare("test.cluster-outcomes".into(), durable, args).await.expect("outcome queue");
    ch.queue_bind(
        "test.cluster-outcomes".into(),
        EXCHANGE_OUTCOMES.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    ch.close(200, "declared".into()).await.expect("close");

    let publisher = Broker::open(&urls.join(","), "cluster test publisher").await.expect("publisher");
    let reqs: Vec<Value> = (0..REQUESTS)
        .map(|_| {
            let mut r = request(
                "doctor-appointment",
                "akmola",
                "portal",
                json!({ "iin": who::CITIZEN }),
                who::AKMOLA_PHC,
                json!({}),
            );
            sign_as(&proper_signer(&r), &mut r);
            r
        })
        .collect();
    let mut killed = None;
    for (i, r) in reqs.iter().enumerate() {
        publish_until_confirmed(&publisher, r).await;
        if i == REQUESTS / 3 {
            let leader = cluster.script(&["leader", "qyzmet.intake"]);
            eprintln!("killing {leader}, the leader of qyzmet.intake, after {i} requests");
            cluster.script(&["kill", &leader]);
            killed = Some((leader, Instant::now()));
        }
    }
    let (leader, killed_at) = killed.expect("a node was killed");

    // Every request ends with exactly one final outcome in PostgreSQL …
    let ids: Vec<uuid::Uuid> = reqs.iter().map(id_of).collect();
    let all_final = async {
        loop {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outcomes WHERE request_id = ANY($1)")
                .bind(&ids)
                .fetch_one(env.store.pool())
                .await
                .expect("count");
            if n == REQUESTS as i64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all_final).await.expect("every request reaches a final outcome");
    eprintln!("all {REQUESTS} final {:.1}s after the kill", killed_at.elapsed().as_secs_f64());

    // … and on the wire: each final Outcome arrives, repeats are identical, none contradicts.
    let finals: Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>> = Arc::default();
    let ch = reader.channel().await.expect("channel");
    ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume("test.cluster-outcomes".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let collect = async {
        while let Some(Ok(d)) = consumer.next().await {
            let id = d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
            let _ = d.acker.ack(BasicAckOptions::default()).await;
            if let Ok(o) = serde_json::from_slice::<Outcome>(&d.data)
                && o.status.is_final()
            {
                let mut f = finals.lock().await;
                f.entry(id).or_default().push(d.data.clone());
                if f.len() == REQUESTS {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect).await.expect("every final outcome is published");
    let finals = finals.lock().await;
    let repeats: usize = finals.values().map(|v| v.len() - 1).sum();
    for (id, copies) in finals.iter() {
        assert!(copies.iter().all(|c| c == &copies[0]), "{id} was published with different bodies");
    }
    eprintln!("{} distinct final outcomes, {repeats} identical redeliveries", finals.len());
    assert_eq!(finals.len(), REQUESTS);

    cluster.script(&["restart", &leader]);
    app.shutdown(Duration::from_secs(10)).await;
    publisher.close().await;
    reader.close().await;
    drop(cluster);
    env.cleanup().await;
}
