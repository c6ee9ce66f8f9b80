//! `qyzmet regulations trace`: for every behaviour P-1…P-52 of the regulations, where it lives
//! in the regulation data, in the code and in the tests, or the recorded reason qyzmet does not
//! implement it (`regulations/behaviours.toml`).
//!
//! A behaviour counts as tested when a test's name starts with its number (`p30_…`, or
//! `p30_p29_…` for several); code is any «P-n» mention in `src/` or `workers/`; data is every
//! `behaviours` list of the loaded regulations. `--strict` fails when a behaviour is neither
//! tested nor recorded as outside qyzmet or pending, so CI catches a behaviour that lost its
//! test or was never given one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use qyzmet::regulations::Regulations;

/// `regulations/behaviours.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BehavioursFile {
    behaviour: Vec<Behaviour>,
}

/// One behaviour of regulations.md §13.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Behaviour {
    id: String,
    title: String,
    /// Why qyzmet does not implement it: it happens outside qyzmet.
    outside: Option<String>,
    /// qyzmet should implement it and does not yet: the open work.
    pending: Option<String>,
}

/// How a behaviour is accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    /// At least one test carries its number.
    Tested,
    /// Outside qyzmet, with the reason recorded.
    Outside,
    /// Not built yet, with the open work recorded.
    Pending,
    /// In the data or code, but no test and no recorded reason: `--strict` fails.
    Untested,
    /// Nowhere at all: `--strict` fails.
    Missing,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Tested => "tested",
            Status::Outside => "outside",
            Status::Pending => "pending",
            Status::Untested => "UNTESTED",
            Status::Missing => "MISSING",
        }
    }
}

/// Where one behaviour was found.
#[derive(Debug, Default)]
struct Found {
    data: Vec<String>,
    code: Vec<String>,
    tests: Vec<String>,
}

/// The trace of every behaviour, in P-number order.
pub struct Trace {
    rows: Vec<(Behaviour, Found, Status)>,
}

impl Trace {
    /// Builds the trace of the repository at `root` (its `regulations/`, `src/`, `workers/`
    /// and `tests/`).
    pub fn of_repository(root: &Path) -> anyhow::Result<Trace> {
        let dir = root.join("regulations");
        let regs = Regulations::load(&dir).map_err(|e| anyhow::anyhow!("regulation data is not valid: {e}"))?;
        let path = dir.join("behaviours.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: BehavioursFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        check_list(&file.behaviour).with_context(|| format!("{}", path.display()))?;

        let mut found: BTreeMap<u32, Found> = BTreeMap::new();
        for (number, place) in data_citations(&regs) {
            found.entry(number).or_default().data.push(place);
        }
        for source_dir in ["src", "workers"] {
            for file in rust_files(&root.join(source_dir))? {
                let text = std::fs::read_to_string(&file)?;
                let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
                for number in mentions(&text) {
                    let f = found.entry(number).or_default();
                    if !f.code.contains(&shown) {
                        f.code.push(shown.clone());
                    }
                }
            }
        }
        for test_dir in ["tests", "src", "workers"] {
            for file in rust_files(&root.join(test_dir))? {
                let text = std::fs::read_to_string(&file)?;
                for name in test_names(&text) {
                    for number in numbers_of_test(&name) {
                        found.entry(number).or_default().tests.push(name.clone());
                    }
                }
            }
        }
        let rows = file
            .behaviour
            .into_iter()
            .map(|b| {
                let number = number_of(&b.id).unwrap_or(0);
                let f = found.remove(&number).unwrap_or_default();
                let status = if !f.tests.is_empty() {
                    Status::Tested
                } else if b.outside.is_some() {
                    Status::Outside
                } else if b.pending.is_some() {
                    Status::Pending
                } else if f.data.is_empty() && f.code.is_empty() {
                    Status::Missing
                } else {
                    Status::Untested
                };
                (b, f, status)
            })
            .collect();
        Ok(Trace { rows })
    }

    /// How many behaviours have each status.
    fn counts(&self) -> BTreeMap<Status, usize> {
        let mut counts = BTreeMap::new();
        for (_, _, s) in &self.rows {
            *counts.entry(*s).or_insert(0) += 1;
        }
        counts
    }

    /// The behaviours `--strict` fails on.
    pub fn unaccounted(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|(_, _, s)| matches!(s, Status::Untested | Status::Missing))
            .map(|(b, _, _)| b.id.as_str())
            .collect()
    }

    /// The report: one block per behaviour, then the counts.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (b, f, status) in &self.rows {
            let _ = writeln!(out, "{:<5} {:<8} {}", b.id, status.label(), b.title);
            if let Some(reason) = b.outside.as_deref().or(b.pending.as_deref()) {
                let _ = writeln!(out, "      why:   {reason}");
            }
            let _ = writeln!(out, "      data:  {}", summary(&f.data, 3));
            let _ = writeln!(out, "      code:  {}", summary(&f.code, 4));
            let _ = writeln!(out, "      tests: {}", summary(&f.tests, 3));
        }
        let counts = self.counts();
        let n = |s: Status| counts.get(&s).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "\n{} behaviours: {} tested, {} outside qyzmet (reason recorded), {} pending, {} untested, {} missing",
            self.rows.len(),
            n(Status::Tested),
            n(Status::Outside),
            n(Status::Pending),
            n(Status::Untested),
            n(Status::Missing)
        );
        out
    }
}

/// `P-1`…`P-52`, each once, in order.
fn check_list(list: &[Behaviour]) -> anyhow::Result<()> {
    let ids: Vec<Option<u32>> = list.iter().map(|b| number_of(&b.id)).collect();
    let expected: Vec<Option<u32>> = (1..=52).map(Some).collect();
    anyhow::ensure!(ids == expected, "must list P-1…P-52, each once and in order");
    for b in list {
        anyhow::ensure!(
            !(b.outside.is_some() && b.pending.is_some()),
            "{}: outside and pending exclude each other",
            b.id
        );
        anyhow::ensure!(!b.title.trim().is_empty(), "{}: the title is empty", b.id);
    }
    Ok(())
}

fn number_of(id: &str) -> Option<u32> {
    id.strip_prefix("P-").and_then(|n| n.parse().ok())
}

/// Every `behaviours` list of the data, as (number, where).
fn data_citations(regs: &Regulations) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut cite = |list: &[String], place: String| {
        for b in list {
            if let Some(n) = number_of(b) {
                out.push((n, place.clone()));
            }
        }
    };
    for service in regs.services() {
        let f = &service.file;
        for (key, r) in &f.refusals {
            cite(&r.behaviours, format!("{} refusal {key}", f.code));
        }
        for (kind, d) in &f.documents {
            cite(&d.behaviours, format!("{} document {kind}", f.code));
        }
        for v in &f.variants {
            for ch in &v.channels {
                cite(&ch.behaviours, format!("{} {} {}", f.code, v.region, ch.channel));
                for s in &ch.steps {
                    let pool = qyzmet::broker::pool_name(s.pool);
                    cite(&s.behaviours, format!("{} {} {} {pool}", f.code, v.region, ch.channel));
                    for r in &s.rules {
                        cite(&r.behaviours, format!("{} {} {} {pool} rule", f.code, v.region, ch.channel));
                    }
                }
            }
        }
    }
    for kind in ["invalid_request", "unsupported_service", "deadline_exceeded"] {
        if let Some(r) = regs.common(kind) {
            cite(&r.behaviours, format!("common {kind}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `.rs` files under `dir`, sorted (none if it does not exist).
fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every behaviour number mentioned as «P-n» in a text (each once).
fn mentions(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("P-") {
        let start = i + at;
        let digits: String = text[start + 2..].chars().take_while(char::is_ascii_digit).collect();
        let word_before = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if let Ok(n) = digits.parse::<u32>()
            && !word_before
            && (1..=52).contains(&n)
            && !out.contains(&n)
        {
            out.push(n);
        }
        i = start + 2;
    }
    out
}

/// Names of the test functions in a Rust file: a `fn` within three lines after `#[test]` or
/// `#[tokio::test]`.
fn test_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut since_attribute: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
            since_attribute = Some(0);
            continue;
        }
        let Some(n) = since_attribute else { continue };
        if let Some(rest) = line.strip_prefix("async fn ").or_else(|| line.strip_prefix("fn ")) {
            names.push(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
            since_attribute = None;
        } else {
            since_attribute = (n < 3).then_some(n + 1);
        }
    }
    names
}

/// The behaviours a test name claims: its leading `p<n>_` parts (`d<n>_` defect numbers may be
/// mixed in and are skipped), e.g. `p29_d27_p22_…` → 29, 22.
fn numbers_of_test(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in name.split('_') {
        let (kind, digits) = part.split_at(part.len().min(1));
        match (kind, digits.parse::<u32>()) {
            ("p", Ok(n)) if (1..=52).contains(&n) => out.push(n),
            ("d", Ok(_)) => {}
            _ => break,
        }
    }
    out
}

fn summary(items: &[String], shown: usize) -> String {
    match items.len() {
        0 => "—".into(),
        n if n <= shown => items.join("; "),
        n => format!("{} … ({n} in all)", items[..shown].join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_name_claims_its_leading_behaviour_numbers_only() {
        assert_eq!(numbers_of_test("p30_p29_p22_only_the_attachment"), vec![30, 29, 22]);
        assert_eq!(numbers_of_test("p29_d27_without_a_sourced_ground"), vec![29]);
        assert_eq!(numbers_of_test("a_worker_killed_mid_step"), Vec::<u32>::new());
        assert_eq!(numbers_of_test("p53_out_of_range"), Vec::<u32>::new());
        assert_eq!(numbers_of_test("deadline_p46"), Vec::<u32>::new());
    }

    #[test]
    fn mentions_are_whole_behaviour_numbers() {
        assert_eq!(mentions("P-30 and P-3, not XP-4 nor P-99; P-30 again"), vec![30, 3]);
    }

    #[test]
    fn test_functions_are_found_after_their_attribute() {
        let text = "#[test]\nfn p1_a() {}\nfn p2_not_a_test() {}\n#[tokio::test]\nasync fn p3_b() {}\n";
        assert_eq!(test_names(text), vec!["p1_a".to_owned(), "p3_b".to_owned()]);
    }
}
