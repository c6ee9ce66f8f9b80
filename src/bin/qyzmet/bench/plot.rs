//! `qyzmet bench --plot DIR`: the report as SVG charts a README or a browser shows as they are.
//!
//! - `throughput.svg`: requests per second of every run beside the ceiling, with each run's p99;
//! - `steps.svg`: p50 / p95 / p99 of every step, per run;
//! - `half-max.svg` (with `--half-max`): p99 of every run and of the ceiling at half their maximum;
//! - `rss.svg`: the largest worker's resident memory over a backlog drain;
//! - `drain.svg`: the drain rate in each minute of a backlog drain.
//!
//! Plain SVG written by hand (bars, a line, text): nothing here needs a plotting library, and
//! every value is a number the report also prints.

use std::fmt::Write as _;
use std::path::Path;

use super::{Report, Run};

const WIDTH: f64 = 960.0;
const BAR_AREA: f64 = 440.0;
const ROW: f64 = 28.0;
const LEFT: f64 = 200.0;
const COLOURS: [&str; 3] = ["#4c78a8", "#f58518", "#e45756"];

/// Writes the charts the report has data for into `dir`; returns the files written.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut save = |name: &str, svg: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, svg)?;
        written.push(path);
        Ok(())
    };
    if !report.runs.is_empty() {
        save("throughput.svg", throughput(report))?;
        save("steps.svg", steps(report))?;
    }
    if report.runs.iter().any(|run| run.at_half_max.is_some()) {
        save("half-max.svg", half_max(report))?;
    }
    if let Some(b) = &report.backlog
        && !b.rss_mib_over_time.is_empty()
    {
        let title =
            format!("Largest worker's RSS (MiB) while draining a backlog of {} requests, every 5 s", b.requests);
        save("rss.svg", line(&title, "MiB", &b.rss_mib_over_time))?;
    }
    if let Some(b) = &report.backlog
        && !b.drain_rate_per_minute.is_empty()
    {
        let title =
            format!("Final outcomes per second in each minute of draining a backlog of {} requests", b.requests);
        save("drain.svg", line(&title, "/s", &b.drain_rate_per_minute))?;
    }
    Ok(written)
}

fn run_label(run: &Run) -> String {
    format!("{}{}", run.label(), run.scraping())
}

/// The colour of the ceiling's bars, so that a reader tells the yardstick from the runs.
const CEILING_GREY: &str = "#9d9d9d";

/// One horizontal bar of a chart.
struct Bar {
    /// What was measured ("ceiling after round 2", "1 proc/pool, round 2").
    label: String,
    /// Its length, in the chart's unit.
    value: f64,
    /// Printed after the value: the figures a reader needs beside it (prefetch, share, p99).
    note: String,
    /// Drawn grey: the ceiling and its re-measurements, not the pipeline.
    ceiling: bool,
}

/// Horizontal bars, top to bottom in the order given.
fn bars(title: &str, unit: &str, rows: &[Bar]) -> String {
    let max = rows.iter().map(|r| r.value).fold(0.0, f64::max).max(1e-9);
    let height = 60.0 + ROW * rows.len() as f64 + 20.0;
    let mut svg = header(title, height);
    for (i, bar) in rows.iter().enumerate() {
        let y = 50.0 + ROW * i as f64;
        let value = bar.value;
        let w = BAR_AREA * value / max;
        let colour = if bar.ceiling { CEILING_GREY } else { COLOURS[0] };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{LEFT}" y="{}" width="{w:.1}" height="18" fill="{colour}"/><text x="{}" y="{}">{value:.0} {unit} {}</text>"#,
            LEFT - 8.0,
            y + 14.0,
            escape(&bar.label),
            y + 1.0,
            LEFT + w + 6.0,
            y + 14.0,
            escape(&bar.note)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The indices of the runs after which a round ends, given each run's round (`None` for a bench
/// without `--rounds`, which is one round): the ceiling was measured again there.
fn round_ends(rounds: &[Option<usize>]) -> Vec<usize> {
    (0..rounds.len()).filter(|&i| rounds.get(i + 1).is_none_or(|next| *next != rounds[i])).collect()
}

/// Every run beside the ceiling, in the order they were measured: the ceiling, then each
/// round's runs followed by the ceiling measured again after it.
fn throughput(r: &Report) -> String {
    let mut rows = Vec::new();
    let again = r.ceiling.as_ref().map(|c| c.again.as_slice()).unwrap_or_default();
    let prefetch = r.ceiling.as_ref().map(|c| c.in_flight).unwrap_or_default();
    if let Some(c) = &r.ceiling {
        rows.push(Bar {
            label: "ceiling".to_owned(),
            value: c.throughput,
            note: format!("(prefetch {prefetch}, p99 {:.0} ms)", c.end_to_end_ms.p99),
            ceiling: true,
        });
    }
    let ceiling_again = |k: usize, value: f64| Bar {
        label: match again.len() {
            1 => "ceiling after the runs".to_owned(),
            _ => format!("ceiling after round {}", k + 1),
        },
        value,
        note: format!("(prefetch {prefetch})"),
        ceiling: true,
    };
    let ends = round_ends(&r.runs.iter().map(|run| run.round).collect::<Vec<_>>());
    for (i, run) in r.runs.iter().enumerate() {
        let share = run.ratio_to_ceiling.map(|x| format!("{:.0} % of the ceiling, ", x * 100.0)).unwrap_or_default();
        rows.push(Bar {
            label: run_label(run),
            value: run.throughput,
            note: format!("({share}p99 {:.0} ms)", run.end_to_end_ms.p99),
            ceiling: false,
        });
        // The ceiling measured after round r is `again[r - 1]`, as `Ceiling::around` reads it.
        let k = run.round.unwrap_or(1) - 1;
        if ends.contains(&i)
            && let Some(&value) = again.get(k)
        {
            rows.push(ceiling_again(k, value));
        }
    }
    bars(&format!("Throughput — {}", r.load), "req/s", &rows)
}

fn half_max(r: &Report) -> String {
    let mut rows = Vec::new();
    if let Some(c) = r.ceiling.as_ref().and_then(|c| c.at_half_max.as_ref()) {
        let note = format!("({:.0} msg/s offered, p50 {:.0} ms)", c.rate, c.end_to_end_ms.p50);
        rows.push(Bar { label: "ceiling".to_owned(), value: c.end_to_end_ms.p99, note, ceiling: true });
    }
    for run in &r.runs {
        if let Some(h) = &run.at_half_max {
            let note =
                format!("({:.0} req/s offered, p50 {:.0} ms)", h.offered_rate.unwrap_or_default(), h.end_to_end_ms.p50);
            rows.push(Bar { label: run_label(run), value: h.end_to_end_ms.p99, note, ceiling: false });
        }
    }
    bars(
        &format!("p99 at half the maximum, each offered half the throughput of its closed loop — {}", r.load),
        "ms",
        &rows,
    )
}

/// A run's steps with their p50, p95 and p99.
type StepRows = Vec<(String, [f64; 3])>;

fn steps(r: &Report) -> String {
    let groups: Vec<(String, StepRows)> = r
        .runs
        .iter()
        .map(|run| {
            let steps = run.step_ms.iter().map(|(s, l)| (s.clone(), [l.p50, l.p95, l.p99])).collect();
            (run_label(run), steps)
        })
        .collect();
    let lines: usize = groups.iter().map(|(_, s)| s.len() * 3 + 1).sum();
    let max = groups.iter().flat_map(|(_, s)| s.iter().flat_map(|(_, v)| v.iter().copied())).fold(0.0, f64::max);
    let height = 80.0 + 10.0 * lines as f64 + 20.0;
    let mut svg =
        header("Latency per step (ms): p50, p95, p99 — time from the status that queued it to the next", height);
    let _ = write!(
        svg,
        r#"<rect x="{LEFT}" y="34" width="10" height="8" fill="{}"/><text x="{}" y="42">p50</text><rect x="{}" y="34" width="10" height="8" fill="{}"/><text x="{}" y="42">p95</text><rect x="{}" y="34" width="10" height="8" fill="{}"/><text x="{}" y="42">p99</text>"#,
        COLOURS[0],
        LEFT + 14.0,
        LEFT + 60.0,
        COLOURS[1],
        LEFT + 74.0,
        LEFT + 120.0,
        COLOURS[2],
        LEFT + 134.0
    );
    let mut y = 60.0;
    for (run, steps) in &groups {
        let _ = write!(svg, r#"<text x="8" y="{}" font-weight="bold">{}</text>"#, y + 8.0, escape(run));
        y += 10.0;
        for (step, values) in steps {
            let _ =
                write!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LEFT - 8.0, y + 18.0, escape(step));
            for (k, v) in values.iter().enumerate() {
                let w = BAR_AREA * v / max.max(1e-9);
                let _ = write!(
                    svg,
                    r#"<rect x="{LEFT}" y="{y}" width="{w:.1}" height="9" fill="{}"/><text x="{}" y="{}" font-size="9">{v:.0}</text>"#,
                    COLOURS[k],
                    LEFT + w + 4.0,
                    y + 8.0
                );
                y += 10.0;
            }
        }
        y += 10.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// A line over evenly spaced samples, from zero up, with its first, last and largest value.
fn line(title: &str, unit: &str, samples: &[f64]) -> String {
    let height = 300.0;
    let (top, bottom) = (50.0, height - 40.0);
    let max = samples.iter().copied().fold(0.0, f64::max).max(1.0) * 1.2;
    let mut svg = header(title, height);
    let step = BAR_AREA / (samples.len().max(2) - 1) as f64;
    let points: Vec<String> = samples
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", LEFT + step * i as f64, bottom - (bottom - top) * v / max))
        .collect();
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="grey"/><line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="grey"/><text x="{}" y="{}" text-anchor="end">{max:.0}</text><text x="{}" y="{bottom}" text-anchor="end">0</text><polyline fill="none" stroke="{}" stroke-width="2" points="{}"/><text x="{LEFT}" y="{}">{} samples; first {:.1}, last {:.1}, largest {:.1} {}</text>"#,
        LEFT + BAR_AREA,
        LEFT - 6.0,
        top + 4.0,
        LEFT - 6.0,
        COLOURS[0],
        points.join(" "),
        bottom + 24.0,
        samples.len(),
        samples.first().copied().unwrap_or(0.0),
        samples.last().copied().unwrap_or(0.0),
        samples.iter().copied().fold(0.0, f64::max),
        escape(unit)
    );
    svg.push_str("</svg>\n");
    svg
}

fn header(title: &str, height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="8" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_charts_is_escaped() {
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn the_ceiling_is_measured_again_after_each_round_or_after_all_the_runs() {
        assert_eq!(round_ends(&[Some(1), Some(1), Some(2), Some(2)]), vec![1, 3]);
        assert_eq!(round_ends(&[Some(1), Some(2), Some(3)]), vec![0, 1, 2]);
        assert_eq!(round_ends(&[None, None, None]), vec![2], "one round: after all the runs");
        assert!(round_ends(&[]).is_empty());
    }

    #[test]
    fn every_bar_of_the_ceiling_is_grey_and_the_runs_are_not() {
        let bar = |label: &str, ceiling| Bar { label: label.to_owned(), value: 1.0, note: String::new(), ceiling };
        let svg = bars(
            "t",
            "req/s",
            &[bar("ceiling", true), bar("1 proc/pool, round 1", false), bar("ceiling after round 1", true)],
        );
        let fill_after = |label: &str| {
            let at = svg.find(&format!(">{label}<")).expect("the bar's label");
            svg[at..].split("fill=\"").nth(1).and_then(|f| f.split('"').next()).map(str::to_owned)
        };
        assert_eq!(fill_after("ceiling").as_deref(), Some(CEILING_GREY));
        assert_eq!(fill_after("ceiling after round 1").as_deref(), Some(CEILING_GREY));
        assert_eq!(fill_after("1 proc/pool, round 1").as_deref(), Some(COLOURS[0]));
    }

    #[test]
    fn a_line_chart_names_its_first_last_and_largest_sample_in_its_unit() {
        let svg = line("RSS", "MiB", &[22.0, 24.5, 23.0]);
        assert!(svg.contains("first 22.0, last 23.0, largest 24.5 MiB"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
