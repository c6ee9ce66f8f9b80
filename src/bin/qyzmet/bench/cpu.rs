//! Where the machine's CPU time goes during a measured run, read from `/proc`.
//!
//! The parties are found on this machine, not configured: the broker is the process listening
//! on the AMQP port, the database the postmaster listening on its port with its backends (its
//! children), the workers the processes this bench started, the bench itself this process.
//! Whatever else was busy (the kernel's network work, other programs) is "other". A party on
//! another machine is not seen and counts as zero; the report then says so.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on every Linux architecture qyzmet
/// builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// The processes whose time is counted.
#[derive(Debug, Clone, Default)]
pub struct Parties {
    /// The broker's process (RabbitMQ's `beam.smp`).
    pub broker: Option<u32>,
    /// The database's postmaster; its children are the backends.
    pub postmaster: Option<u32>,
    /// Worker processes started by the bench, with their pool.
    pub workers: Vec<(String, u32)>,
}

impl Parties {
    /// Finds the broker and the database by the ports of their URLs.
    pub fn find(amqp_url: &str, database_url: &str) -> Parties {
        Parties {
            broker: port_of(amqp_url, 5672).and_then(listener_pid),
            postmaster: port_of(database_url, 5432).and_then(listener_pid),
            workers: Vec::new(),
        }
    }

    /// The same parties with these workers.
    pub fn with_workers(&self, workers: Vec<(String, u32)>) -> Parties {
        Parties { workers, ..self.clone() }
    }

    /// Reads every party's CPU time now.
    pub fn snapshot(&self) -> Snapshot {
        let postmaster = self.postmaster.map_or(0, |pm| {
            // Exited backends are in the postmaster's reaped-children times; live ones are read.
            let children: u64 = children_of(pm).into_iter().filter_map(proc_times).map(|t| t.own).sum();
            proc_times(pm).map_or(0, |t| t.own + t.reaped) + children
        });
        let (busy, steal) = machine_ticks();
        Snapshot {
            at: Instant::now(),
            busy,
            steal,
            broker: self.broker.and_then(proc_times).map_or(0, |t| t.own + t.reaped),
            database: postmaster,
            workers: self.workers.iter().map(|(pool, pid)| (pool.clone(), proc_times(*pid).map_or(0, |t| t.own))).fold(
                BTreeMap::new(),
                |mut by_pool, (pool, ticks)| {
                    *by_pool.entry(pool).or_insert(0) += ticks;
                    by_pool
                },
            ),
            bench: proc_times(std::process::id()).map_or(0, |t| t.own),
            seen_broker: self.broker.is_some(),
            seen_database: self.postmaster.is_some(),
        }
    }
}

/// CPU times at one moment, in clock ticks.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    busy: u64,
    steal: u64,
    broker: u64,
    database: u64,
    workers: BTreeMap<String, u64>,
    bench: u64,
    seen_broker: bool,
    seen_database: bool,
}

/// CPU seconds spent between two snapshots, by party, and per request.
#[derive(Debug, Clone, Serialize)]
pub struct CpuSplit {
    /// Wall time between the snapshots.
    pub wall_s: f64,
    /// Every core's busy time on the machine (steal not included).
    pub machine_s: f64,
    /// Time the hypervisor gave to other guests while this one had work (a virtual machine's
    /// `steal`): not ours, so not in `machine_s`, but it delays everything while it lasts.
    pub steal_s: f64,
    /// The broker.
    pub broker_s: f64,
    /// The database (postmaster and backends).
    pub database_s: f64,
    /// The worker processes.
    pub workers_s: f64,
    /// The worker processes by pool: where a larger machine's cores would go.
    pub workers_by_pool: BTreeMap<String, f64>,
    /// The bench itself (publishing, the outcome listener; the ceiling's hops).
    pub bench_s: f64,
    /// The rest of the machine's busy time (kernel network work, anything else running).
    pub other_s: f64,
    /// Requests (or ceiling messages) completed in between.
    pub requests: usize,
    /// Whether the broker and the database were found on this machine.
    pub broker_seen: bool,
    /// See `broker_seen`.
    pub database_seen: bool,
}

impl CpuSplit {
    /// The split from `a` to `b` over `requests` requests.
    pub fn between(a: &Snapshot, b: &Snapshot, requests: usize) -> CpuSplit {
        let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / TICKS_PER_SECOND;
        let machine_s = s(a.busy, b.busy);
        let (broker_s, database_s) = (s(a.broker, b.broker), s(a.database, b.database));
        let workers_by_pool: BTreeMap<String, f64> = b
            .workers
            .iter()
            .map(|(pool, &t)| (pool.clone(), s(a.workers.get(pool).copied().unwrap_or(0), t)))
            .collect();
        let (workers_s, bench_s) = (workers_by_pool.values().sum(), s(a.bench, b.bench));
        CpuSplit {
            wall_s: (b.at - a.at).as_secs_f64(),
            machine_s,
            steal_s: s(a.steal, b.steal),
            broker_s,
            database_s,
            workers_s,
            workers_by_pool,
            bench_s,
            other_s: (machine_s - broker_s - database_s - workers_s - bench_s).max(0.0),
            requests,
            broker_seen: b.seen_broker,
            database_seen: b.seen_database,
        }
    }

    /// Machine CPU milliseconds per request.
    pub fn per_request_ms(&self) -> f64 {
        self.machine_s * 1000.0 / self.requests.max(1) as f64
    }

    /// One party's milliseconds per request.
    pub fn ms(&self, seconds: f64) -> f64 {
        seconds * 1000.0 / self.requests.max(1) as f64
    }
}

/// The port of a URL (`scheme://user:pass@host:port/path`), or the scheme's default.
fn port_of(url: &str, default: u16) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => port.parse().ok(),
        _ => Some(default),
    }
}

/// The process owning the socket listening on `port` (IPv4 or IPv6), if this user may see it.
fn listener_pid(port: u16) -> Option<u32> {
    let mut wanted = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"].iter().filter_map(|f| std::fs::read_to_string(f).ok()) {
        wanted.extend(table.lines().skip(1).filter_map(|line| listening_socket(line, port)));
    }
    pids().into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        })
    })
}

/// The `socket:[inode]` link of a `/proc/net/tcp` line's socket if it listens on `port`.
fn listening_socket(line: &str, port: u16) -> Option<String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
    let listening = *f.get(3)? == "0A";
    (listening && local_port == port).then(|| f.get(9).map(|inode| format!("socket:[{inode}]")))?
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// A process's own CPU ticks and those of its reaped children.
struct Times {
    own: u64,
    reaped: u64,
    parent: u32,
}

fn proc_times(pid: u32) -> Option<Times> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces and parentheses.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(Times { own: n(11) + n(12), reaped: n(13) + n(14), parent: n(1) as u32 })
}

fn children_of(parent: u32) -> Vec<u32> {
    pids().into_iter().filter(|&p| proc_times(p).is_some_and(|t| t.parent == parent)).collect()
}

/// Busy ticks of all cores (user, nice, system, interrupts) and steal ticks, from `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (at(0) + at(1) + at(2) + at(5) + at(6), at(7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_urls_with_and_without_credentials() {
        assert_eq!(port_of("amqp://u:p@127.0.0.1:5673/%2f", 5672), Some(5673));
        assert_eq!(port_of("postgres://u@localhost/db", 5432), Some(5432));
        assert_eq!(port_of("postgres://u:p@127.0.0.1:5433/qyzmet?sslmode=disable", 5432), Some(5433));
    }

    #[test]
    fn only_a_listening_socket_on_the_port_is_taken() {
        let line = "   0: 0100007F:1629 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 12345 1";
        assert_eq!(listening_socket(line, 5673), Some("socket:[12345]".into()));
        assert_eq!(listening_socket(line, 5672), None);
        assert_eq!(listening_socket(&line.replace(" 0A ", " 01 "), 5673), None, "an established connection");
    }

    #[test]
    fn this_process_has_cpu_times() {
        let t = proc_times(std::process::id()).expect("own /proc/self/stat");
        assert!(t.parent > 0);
    }
}
