//! The ceiling: what the broker and the database allow, measured in the same run on the same
//! services, so that the pipeline's figures read as a share of it on any machine.
//!
//! Five hops, each a quorum queue (the pipeline's queue type) consumed with manual acks by a
//! task that writes one PostgreSQL row (an upsert, its own transaction, from a pool of its own;
//! the table is the bench's, made and dropped by it as the database owner, in no migration)
//! and publishes to the next hop with a publisher confirm before it acks. No business logic,
//! no parsing. Tried at several in-flight settings (prefetch per hop); the best is the ceiling
//! and the report says which setting won. With `--half-max` the best setting is then offered
//! half its throughput as an open loop, the yardstick for the pipeline's latency at its half.
//! After the pipeline's runs the best setting is measured once more ([`again`]): a shared
//! machine's speed can change by a third within minutes, and the two figures bracket the runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use uuid::Uuid;

use qyzmet::broker::{Broker, Message};
use qyzmet::config::Settings;
use qyzmet::store::Store;

use super::cpu::{CpuSplit, Parties};
use super::{Confirming, Latency, Pace, Schedule, latency};

/// Hops per message, as many as the longest route's (intake, registry, payment, review, result).
pub const HOPS: usize = 5;

/// Prefetch settings tried per hop.
pub const IN_FLIGHT: [u16; 3] = [16, 64, 256];

/// Database connections per hop (as many as the independent ceiling in `../shared/bench` uses).
const CONNECTIONS_PER_HOP: u32 = 4;

/// The ceiling as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Hops per message.
    pub hops: usize,
    /// Messages per measured setting.
    pub messages: usize,
    /// The prefetch per hop that gave the best throughput.
    pub in_flight: u16,
    /// Messages per second through all hops, at the best setting.
    pub throughput: f64,
    /// First publish to last hop, at the best setting.
    pub end_to_end_ms: Latency,
    /// Throughput at every setting tried: (prefetch, messages per second).
    pub tried: Vec<(u16, f64)>,
    /// Where the CPU went at the best setting.
    pub cpu: CpuSplit,
    /// With `--half-max`: the best setting again, offered half its throughput.
    pub at_half_max: Option<OpenCeiling>,
    /// The best setting measured again after each round of the pipeline's runs (`--rounds`),
    /// messages per second. On a shared machine the ceiling can move by a third within minutes;
    /// a run's ratio is taken against the mean of the ceiling just before and just after it, and
    /// the report shows how far apart they were, so that a ratio is read with its spread.
    pub again: Vec<f64>,
}

impl Ceiling {
    /// What the throughput of a run of `round` (from 1) is divided by: the mean of the ceiling
    /// measured just before that round (the first measurement, or the one after the round
    /// before) and just after it, or the one before when it was not measured again.
    pub fn around(&self, round: usize) -> f64 {
        bracketing(self.throughput, &self.again, round)
    }
}

/// The mean of the ceiling measured just before round `round` (from 1) — `first`, or `again`
/// after the round before — and just after it; the one before alone when none followed.
fn bracketing(first: f64, again: &[f64], round: usize) -> f64 {
    let round = round.max(1);
    let before = if round == 1 { first } else { again.get(round - 2).copied().unwrap_or(first) };
    again.get(round - 1).map_or(before, |after| (before + after) / 2.0)
}

/// The ceiling as an open loop: messages offered at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct OpenCeiling {
    /// Messages per second offered.
    pub rate: f64,
    /// Due time to last hop (not first publish, so that a stalled publish counts).
    pub end_to_end_ms: Latency,
    /// Where the CPU went.
    pub cpu: CpuSplit,
}

fn queue(h: usize) -> String {
    format!("qyzmet.bench.ceiling.hop{h}")
}

/// Measures the ceiling at every setting of [`IN_FLIGHT`] with `n` messages each and `window`
/// in flight from the driver, and keeps the best; with `half_max`, then offers the best setting
/// half its throughput.
pub async fn measure(
    broker: &Arc<Broker>,
    settings: &Settings,
    n: usize,
    window: usize,
    parties: &Parties,
    half_max: bool,
) -> anyhow::Result<Ceiling> {
    let admin = set_up(settings).await?;
    let mut best: Option<Ceiling> = None;
    let mut tried = Vec::new();
    for prefetch in IN_FLIGHT {
        sqlx::query("TRUNCATE bench_ceiling").execute(admin.pool()).await?;
        let (throughput, lat, cpu) = once(broker, settings, n, Pace::Window(window), prefetch, parties).await?;
        eprintln!("  ceiling at prefetch {prefetch}: {throughput:.0} msg/s, p99 {:.0} ms", lat.p99);
        tried.push((prefetch, throughput));
        if best.as_ref().is_none_or(|b| throughput > b.throughput) {
            best = Some(Ceiling {
                hops: HOPS,
                messages: n,
                in_flight: prefetch,
                throughput,
                end_to_end_ms: lat,
                tried: Vec::new(),
                cpu,
                at_half_max: None,
                again: Vec::new(),
            });
        }
    }
    if let Some(best) = best.as_mut().filter(|_| half_max) {
        let rate = best.throughput / 2.0;
        sqlx::query("TRUNCATE bench_ceiling").execute(admin.pool()).await?;
        let (_, end_to_end_ms, cpu) = once(broker, settings, n, Pace::Rate(rate), best.in_flight, parties).await?;
        eprintln!("  ceiling at half its maximum, {rate:.0} msg/s offered: p99 {:.0} ms", end_to_end_ms.p99);
        best.at_half_max = Some(OpenCeiling { rate, end_to_end_ms, cpu });
    }
    clean_up(admin, broker).await?;
    let mut best = best.ok_or_else(|| anyhow::anyhow!("no ceiling setting ran"))?;
    best.tried = tried;
    Ok(best)
}

/// The best setting once more, as [`measure`] ran it (`n` messages, `window` in flight):
/// messages per second.
pub async fn again(
    broker: &Arc<Broker>,
    settings: &Settings,
    n: usize,
    window: usize,
    parties: &Parties,
    prefetch: u16,
) -> anyhow::Result<f64> {
    let admin = set_up(settings).await?;
    let (throughput, _, _) = once(broker, settings, n, Pace::Window(window), prefetch, parties).await?;
    clean_up(admin, broker).await?;
    eprintln!("  ceiling again, at prefetch {prefetch}: {throughput:.0} msg/s");
    Ok(throughput)
}

/// The bench's own table, made as the database owner; the connection that made it.
async fn set_up(settings: &Settings) -> anyhow::Result<Store> {
    let admin = Store::connect(settings.migration_url(), 1).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_ceiling (id uuid PRIMARY KEY, hop integer NOT NULL, at timestamptz NOT NULL)",
    )
    .execute(admin.pool())
    .await?;
    Ok(admin)
}

/// Drops the table and the hops' queues.
async fn clean_up(admin: Store, broker: &Arc<Broker>) -> anyhow::Result<()> {
    sqlx::query("DROP TABLE bench_ceiling").execute(admin.pool()).await?;
    admin.close().await;
    let ch = broker.channel().await?;
    for h in 0..=HOPS {
        ch.queue_delete(queue(h).as_str().into(), QueueDeleteOptions::default()).await?;
    }
    Ok(())
}

/// One setting: fresh queues, the hops, a warm-up, then `n` measured messages offered at `pace`
/// (a window in flight, or a rate).
async fn once(
    broker: &Arc<Broker>,
    settings: &Settings,
    n: usize,
    pace: Pace,
    prefetch: u16,
    parties: &Parties,
) -> anyhow::Result<(f64, Latency, CpuSplit)> {
    let ch = broker.channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    for h in 0..=HOPS {
        ch.queue_delete(queue(h).as_str().into(), QueueDeleteOptions::default()).await?;
        ch.queue_declare(
            queue(h).as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            args.clone(),
        )
        .await?;
    }
    let (stop_tx, stop) = qyzmet::shutdown::channel();
    let mut hops = Vec::new();
    for h in 0..HOPS {
        // Each hop has its own connections, as a separate worker process would, and runs every
        // delivery as a task of its own, so that the hops use every core.
        let store = Store::connect(settings.migration_url(), CONNECTIONS_PER_HOP).await?;
        let hop_broker = settings.broker(&format!("qyzmet bench ceiling hop {h}")).await?;
        let stop = stop.clone();
        hops.push(tokio::spawn(async move {
            let publisher = Arc::new(hop_broker.publisher().await?);
            let ch = hop_broker.channel().await?;
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let consumer = ch
                .basic_consume(
                    queue(h).as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut consumer = std::pin::pin!(consumer.take_until(stop.wait_owned()));
            while let Some(d) = consumer.next().await {
                let Ok(d) = d else { continue };
                let (publisher, store) = (publisher.clone(), store.clone());
                tokio::spawn(async move {
                    let id = Uuid::from_slice(&d.data[..16.min(d.data.len())]).unwrap_or_default();
                    let _ = sqlx::query(
                        "INSERT INTO bench_ceiling (id, hop, at) VALUES ($1, $2, now()) \
                         ON CONFLICT (id) DO UPDATE SET hop = EXCLUDED.hop, at = EXCLUDED.at",
                    )
                    .bind(id)
                    .bind(h as i32)
                    .execute(store.pool())
                    .await;
                    let _ = publisher.publish_all(&[message(h + 1, id, d.data.clone())]).await;
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                });
            }
            store.close().await;
            hop_broker.close().await;
            anyhow::Ok(())
        }));
    }
    let done_ch = broker.channel().await?;
    done_ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut done = done_ch
        .basic_consume(queue(HOPS).as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let warm_up = (n / 10).clamp(100, 1000);
    let total = warm_up + n;
    // The driver publishes as a task of its own: in a closed loop whenever the window has room,
    // a batch of whatever room there is, so that waiting for confirms never holds back the hops;
    // in an open loop whatever is due, each message stamped with when it was due and its
    // confirms awaited apart, so that a slow publish delays no later message and hides no wait.
    let window = match pace {
        Pace::Window(w) => w,
        _ => total,
    };
    let room = Arc::new(tokio::sync::Semaphore::new(window));
    let sent: Arc<std::sync::Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let driver = {
        let (room, sent, publisher) = (room.clone(), sent.clone(), Arc::new(broker.publisher().await?));
        tokio::spawn(async move {
            // A body of the size of a signed request, so the broker moves as many bytes as it would.
            let pad = vec![b' '; 1500];
            let schedule = pace.rate().map(Schedule::start);
            let mut confirming = Confirming::for_schedule(schedule);
            let mut published = 0;
            while published < total {
                let k = match schedule {
                    Some(schedule) => schedule.wait_for(published, 50.min(total - published)).await,
                    None => {
                        room.acquire().await?.forget();
                        let mut k = 1;
                        while k < total - published && room.try_acquire().map(|p| p.forget()).is_ok() {
                            k += 1;
                        }
                        k
                    }
                };
                let batch: Vec<Message> = (published..published + k)
                    .map(|j| {
                        let id = Uuid::new_v4();
                        let mut body = id.as_bytes().to_vec();
                        body.extend_from_slice(&pad);
                        let stamp = schedule.map_or_else(Instant::now, |s| s.due_at(j));
                        if let Ok(mut s) = sent.lock() {
                            s.insert(id, stamp);
                        }
                        message(0, id, body)
                    })
                    .collect();
                published += k;
                confirming.publish(&publisher, batch).await?;
            }
            confirming.finish().await?;
            anyhow::Ok(())
        })
    };
    let mut lat = Vec::with_capacity(n);
    let mut finished = 0usize;
    let (mut started, mut before) = (Instant::now(), parties.snapshot());
    while finished < total {
        match tokio::time::timeout(Duration::from_secs(30), done.next()).await {
            Ok(Some(Ok(d))) => {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                let id = Uuid::from_slice(&d.data[..16.min(d.data.len())]).unwrap_or_default();
                let Some(t) = sent.lock().ok().and_then(|mut s| s.remove(&id)) else { continue };
                room.add_permits(1);
                finished += 1;
                if finished > warm_up {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                if finished == warm_up {
                    (started, before) = (Instant::now(), parties.snapshot());
                }
            }
            _ => anyhow::bail!("the ceiling stalled after {finished} of {total} messages"),
        }
    }
    driver.await??;
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    let cpu = CpuSplit::between(&before, &parties.snapshot(), n);
    stop_tx.fire();
    for h in hops {
        let _ = h.await;
    }
    let _ = done_ch.close(200, "ok".into()).await;
    Ok((n as f64 / seconds, latency(lat), cpu))
}

fn message(hop: usize, id: Uuid, body: Vec<u8>) -> Message {
    Message {
        exchange: String::new(),
        routing_key: queue(hop),
        message_id: id.to_string(),
        body,
        traceparent: None,
        headers: Vec::new(),
        must_route: true,
    }
}

#[cfg(test)]
mod tests {
    use super::bracketing;

    #[test]
    fn a_round_is_measured_against_the_ceiling_just_before_and_just_after_it() {
        let again = [800.0, 1000.0];
        assert_eq!(bracketing(1200.0, &again, 1), 1000.0);
        assert_eq!(bracketing(1200.0, &again, 2), 900.0);
        assert_eq!(bracketing(1200.0, &[], 1), 1200.0, "not measured again: the first alone");
        assert_eq!(bracketing(1200.0, &again[..1], 2), 800.0, "no ceiling after it: the one before");
    }
}
