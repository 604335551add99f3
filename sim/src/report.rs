//! The report: a readable summary for the terminal, JSON for machines, and a chart of
//! latency over the run (SVG) beside the JSON. Also the progress shown while it runs: a
//! live line on a terminal, plain lines per phase off one.

use crate::Args;
use crate::player::{World, lock};
use crate::stats::{Percentiles, Second, Stats};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often, off a terminal, a plain line tells how far the load or the checks are.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What the run is doing, for whoever watches it. On a terminal (stdout and stderr
/// both), one live line; off one (CI, `| tee`), where a live line would be noise, one
/// plain line on stdout per phase, and during the load and the checks one every few
/// seconds, each with the time since the run began, so that a log shows where the time
/// went.
#[derive(Debug)]
pub struct Progress {
    shown: Shown,
    began: Instant,
    /// Requests and events at the last second of the load.
    last: Mutex<(u64, u64)>,
}

#[derive(Debug)]
enum Shown {
    Nothing,
    LiveLine(ProgressBar),
    PlainLines(Mutex<Plain>),
}

struct Plain {
    out: Box<dyn Write + Send>,
    progress_every: Duration,
    last_line_at: Instant,
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Plain")
            .field("progress_every", &self.progress_every)
            .field("last_line_at", &self.last_line_at)
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// Nothing with `quiet`; a live line on a terminal; plain lines on stdout off one.
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            return Progress::hidden();
        }
        if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(200));
            return Progress::with(Shown::LiveLine(bar));
        }
        Progress::plain(Box::new(std::io::stdout()), PLAIN_PROGRESS_EVERY)
    }

    pub fn hidden() -> Progress {
        Progress::with(Shown::Nothing)
    }

    /// Plain lines into `out`, progress lines at most once per `progress_every`.
    pub fn plain(out: Box<dyn Write + Send>, progress_every: Duration) -> Progress {
        Progress::with(Shown::PlainLines(Mutex::new(Plain {
            out,
            progress_every,
            last_line_at: Instant::now(),
        })))
    }

    fn with(shown: Shown) -> Progress {
        Progress {
            shown,
            began: Instant::now(),
            last: Mutex::new((0, 0)),
        }
    }

    /// A new phase of the run.
    pub fn phase(&self, message: &str) {
        match &self.shown {
            Shown::Nothing => {}
            Shown::LiveLine(bar) => bar.set_message(message.to_owned()),
            Shown::PlainLines(plain) => self.write(&mut lock(plain), message),
        }
    }

    /// How far a phase is: live at once, plain at most once per its period.
    fn progress(&self, message: impl FnOnce() -> String) {
        match &self.shown {
            Shown::Nothing => {}
            Shown::LiveLine(bar) => bar.set_message(message()),
            Shown::PlainLines(plain) => {
                let mut plain = lock(plain);
                if plain.last_line_at.elapsed() >= plain.progress_every {
                    self.write(&mut plain, &message());
                }
            }
        }
    }

    fn write(&self, plain: &mut Plain, message: &str) {
        plain.last_line_at = Instant::now();
        let elapsed = self.began.elapsed().as_secs_f64();
        // A log that cannot be written to is no reason to stop the run.
        let _ = writeln!(plain.out, "playtree-sim [{elapsed:>7.1} s] {message}");
        let _ = plain.out.flush();
    }

    pub fn connecting(&self, started: usize) {
        if let Shown::LiveLine(bar) = &self.shown {
            bar.set_message(format!("connecting: {started} started"));
        }
    }

    /// Called once a second during the load.
    pub fn running(&self, stats: &Stats, world: &World, elapsed: Duration, total: Duration) {
        let requests = stats.requests_sent.load(Ordering::Relaxed);
        let events = stats.events.load(Ordering::Relaxed);
        let mut last = lock(&self.last);
        let (requests_per_second, events_per_second) = (requests - last.0, events - last.1);
        *last = (requests, events);
        drop(last);
        self.progress(|| {
            format!(
                "load: {}/{} s · {} connected · {requests_per_second} requests/s · {events_per_second} events/s · {} errors · {} kills",
                elapsed.as_secs(),
                total.as_secs(),
                world.connected.load(Ordering::Relaxed),
                stats.errors.load(Ordering::Relaxed),
                world.crashes.load(Ordering::Relaxed),
            )
        });
    }

    /// The checks began: `n_checks` of them, at most `in_flight_max` at once.
    pub fn checks_started(&self, n_checks: usize, in_flight_max: usize) {
        if let Shown::LiveLine(bar) = &self.shown {
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] checks {pos}/{len} {wide_bar} {per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_length(n_checks as u64);
            bar.set_position(0);
        }
        self.phase(&format!(
            "checks: {n_checks} started, at most {in_flight_max} at once"
        ));
    }

    /// `n_done` of `n_checks` checks have ended.
    pub fn checked(&self, n_done: usize, n_checks: usize) {
        match &self.shown {
            Shown::LiveLine(bar) => bar.set_position(n_done as u64),
            Shown::Nothing | Shown::PlainLines(_) => {
                self.progress(|| format!("checks: {n_done}/{n_checks} done"));
            }
        }
    }

    pub fn checks_done(&self, checks: &Checks) {
        if let Shown::LiveLine(bar) = &self.shown {
            bar.set_style(spinner_style());
        }
        self.phase(&format!("checks done: {}", checks.summary()));
    }

    pub fn finish(&self) {
        if let Shown::LiveLine(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// A run that ends early, by an error, leaves no live line behind either.
    fn drop(&mut self) {
        self.finish();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// What the checks at the end took.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// From the first check started to the last ended.
    pub seconds: f64,
    /// Wallets and influencers' referee counts checked.
    pub checks: u64,
    /// Requests they made to the server (wallets, and referral stats through the
    /// partner).
    pub requests: u64,
    /// Wallets asked for again because they did not hold yet.
    pub asked_again: u64,
    /// Checks that ran at once at most.
    pub in_flight_max: usize,
    /// Failure lines they reported.
    pub failures: usize,
    /// CPU seconds the server (when the sim owns it) and the sim used meanwhile: near
    /// `seconds`, that one is what limits the checks.
    pub server_cpu_seconds: Option<f64>,
    pub sim_cpu_seconds: Option<f64>,
}

impl Checks {
    pub fn summary(&self) -> String {
        let per_second = if self.seconds > 0.0 {
            self.checks as f64 / self.seconds
        } else {
            0.0
        };
        let share = |cpu: Option<f64>| match cpu {
            Some(cpu) if self.seconds > 0.0 => format!("{:.0} %", 100.0 * cpu / self.seconds),
            _ => "-".to_owned(),
        };
        format!(
            "{} in {:.1} s ({per_second:.0}/s), {} requests ({} wallets asked again), at most {} at once, {} failure lines; CPU (100 % = one core): server {}, sim {}",
            self.checks,
            self.seconds,
            self.requests,
            self.asked_again,
            self.in_flight_max,
            self.failures,
            share(self.server_cpu_seconds),
            share(self.sim_cpu_seconds),
        )
    }
}

/// The measured part of the load (after the warm-up).
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub seconds: f64,
    pub server_cpu_seconds: Option<f64>,
    /// The sim's own CPU: near `seconds` × its cores, the sim is what limits the run.
    pub sim_cpu_seconds: Option<f64>,
    pub deliveries: u64,
}

/// The server's memory at points of the run (bytes), when the sim owns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub rss_before: Option<u64>,
    pub rss_connected: Option<u64>,
    pub rss_idle: Option<u64>,
    pub rss_in_rooms: Option<u64>,
    pub rss_end: Option<u64>,
    pub peak_rss: Option<u64>,
    /// (RSS connected − before) / players.
    pub per_connection_connected: Option<f64>,
    /// Idle connections in rooms, sessions passivated (after --idle-ms): with one wave,
    /// (RSS − before) / players, which counts memory the allocator kept from the
    /// passivated sessions too (an upper bound); with --waves 2 or more, the last wave's
    /// RSS growth over its players.
    pub per_connection_idle: Option<f64>,
    /// (RSS in rooms − before) / players.
    pub per_connection_in_rooms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: crate::script::Scenario,
    pub seed: u64,
    pub players: usize,
    pub seconds: u64,
    pub connect_seconds: f64,
    pub requests: u64,
    pub events: u64,
    pub deliveries: u64,
    pub spins: u64,
    pub chats: u64,
    pub claims: u64,
    pub answers: u64,
    pub reconnects: u64,
    /// Claims acknowledged per second, from the first claim sent to the last answered.
    pub claims_per_second: Option<f64>,
    pub kills: u32,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Requests the server carried out, by kind.
    pub acknowledged: BTreeMap<String, u64>,
    pub request_latency: BTreeMap<String, Percentiles>,
    pub fanout_latency: Percentiles,
    pub measured: Option<Measured>,
    /// Deliveries per second in the measured part.
    pub deliveries_per_second: Option<f64>,
    /// Server CPU microseconds per delivered message (fanout), when the sim owns it.
    pub server_cpu_us_per_delivery: Option<f64>,
    pub memory: Memory,
    pub series: Vec<Second>,
    /// The checks at the end: how long they took and what they asked.
    pub checks: Checks,
    /// Invariants that did not hold (empty: all held).
    pub failures: Vec<String>,
}

#[derive(Debug)]
pub struct Inputs<'a> {
    pub args: &'a Args,
    pub stats: &'a Stats,
    pub world: &'a World,
    pub connect_seconds: f64,
    pub measured: Option<Measured>,
    pub memory_before: Option<(u64, u64)>,
    pub memory_connected: Option<(u64, u64)>,
    pub memory_idle: Option<(u64, u64)>,
    pub idle_per_connection: Option<f64>,
    pub memory_in_rooms: Option<(u64, u64)>,
    pub memory_end: Option<(u64, u64)>,
    pub kills: u32,
    pub checks: Checks,
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(inputs: Inputs<'_>) -> Report {
        let Inputs {
            args, stats, world, ..
        } = inputs;
        let players = args.players as f64;
        let rss = |point: Option<(u64, u64)>| point.map(|(rss, _)| rss);
        let per_connection = |point: Option<(u64, u64)>| {
            Some((rss(point)? as f64 - rss(inputs.memory_before)? as f64) / players)
        };
        let memory = Memory {
            rss_before: rss(inputs.memory_before),
            rss_connected: rss(inputs.memory_connected),
            rss_idle: rss(inputs.memory_idle),
            rss_in_rooms: rss(inputs.memory_in_rooms),
            rss_end: rss(inputs.memory_end),
            peak_rss: inputs.memory_end.map(|(_, peak)| peak),
            per_connection_connected: per_connection(inputs.memory_connected),
            per_connection_idle: inputs.idle_per_connection,
            per_connection_in_rooms: per_connection(inputs.memory_in_rooms),
        };
        let deliveries_per_second = inputs
            .measured
            .as_ref()
            .filter(|measured| measured.seconds > 0.0)
            .map(|measured| measured.deliveries as f64 / measured.seconds);
        let server_cpu_us_per_delivery = inputs.measured.as_ref().and_then(|measured| {
            let cpu = measured.server_cpu_seconds?;
            (measured.deliveries > 0).then(|| cpu * 1e6 / measured.deliveries as f64)
        });
        Report {
            scenario: args.scenario,
            seed: args.seed,
            players: args.players,
            seconds: args.seconds,
            connect_seconds: inputs.connect_seconds,
            requests: stats.requests_sent.load(Ordering::Relaxed),
            events: stats.events.load(Ordering::Relaxed),
            deliveries: stats.deliveries.load(Ordering::Relaxed),
            spins: world.spins.load(Ordering::Relaxed),
            chats: world.chats.load(Ordering::Relaxed),
            claims: world.claims.load(Ordering::Relaxed),
            answers: world.answers.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            claims_per_second: world.claims_per_second(),
            kills: inputs.kills,
            errors: stats.errors.load(Ordering::Relaxed),
            errors_by_code: stats.errors_by_code(),
            acknowledged: stats.acknowledged_by_op(),
            request_latency: stats.requests_by_op(),
            fanout_latency: Percentiles::of(&stats.fanout()),
            measured: inputs.measured,
            deliveries_per_second,
            server_cpu_us_per_delivery,
            memory,
            series: stats.series(),
            checks: inputs.checks,
            failures: inputs.failures,
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The summary a person reads.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "playtree-sim: {:?}, {} players, {} s, seed {}",
            self.scenario, self.players, self.seconds, self.seed
        );
        let _ = writeln!(
            out,
            "  connected in {:.1} s; {} requests, {} events ({} chat deliveries); {} spins, {} chats, {} claims, {} answers, {} reconnects, {} server kills",
            self.connect_seconds,
            self.requests,
            self.events,
            self.deliveries,
            self.spins,
            self.chats,
            self.claims,
            self.answers,
            self.reconnects,
            self.kills
        );
        let line = |p: &Percentiles| {
            format!(
                "n={:<8} p50 {:>8.2} ms  p99 {:>8.2} ms  p99.9 {:>8.2} ms  max {:>8.2} ms",
                p.count, p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms
            )
        };
        let acknowledged: Vec<String> = self
            .acknowledged
            .iter()
            .map(|(op, count)| format!("{count} {op}"))
            .collect();
        let _ = writeln!(out, "  acknowledged: {}", acknowledged.join(", "));
        let _ = writeln!(out, "  request latency (failed requests included):");
        for (op, percentiles) in &self.request_latency {
            let _ = writeln!(out, "    {op:<11} {}", line(percentiles));
        }
        if self.fanout_latency.count > 0 {
            let _ = writeln!(
                out,
                "  fanout (send → every member): {}",
                line(&self.fanout_latency)
            );
        }
        if let Some(rate) = self.claims_per_second {
            let _ = writeln!(
                out,
                "  referral claims: {rate:.0}/s acknowledged (first sent to last answered)"
            );
        }
        if let Some(rate) = self.deliveries_per_second {
            let _ = writeln!(out, "  deliveries: {rate:.0}/s measured");
        }
        if let Some(cpu) = self.server_cpu_us_per_delivery {
            let _ = writeln!(out, "  server CPU per delivered message: {cpu:.2} µs");
        }
        if let Some(measured) = self
            .measured
            .as_ref()
            .filter(|measured| measured.seconds >= 0.5)
        {
            let share = |cpu: Option<f64>| {
                cpu.map_or("-".to_owned(), |cpu| {
                    format!("{:.0} %", 100.0 * cpu / measured.seconds)
                })
            };
            let _ = writeln!(
                out,
                "  CPU over the measured {:.1} s (100 % = one core): server {}, sim {}",
                measured.seconds,
                share(measured.server_cpu_seconds),
                share(measured.sim_cpu_seconds)
            );
        }
        let kib = |bytes: f64| bytes / 1024.0;
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        if let Some(peak) = self.memory.peak_rss {
            let _ = writeln!(out, "  server peak RSS: {:.1} MiB", mib(peak));
        }
        for (what, value) in [
            ("connected", self.memory.per_connection_connected),
            (
                "in rooms, idle (after --idle-ms)",
                self.memory.per_connection_idle,
            ),
            ("in rooms", self.memory.per_connection_in_rooms),
        ] {
            if let Some(bytes) = value {
                let _ = writeln!(
                    out,
                    "  server memory per connection, {what}: {:.1} KiB",
                    kib(bytes)
                );
            }
        }
        if self.errors > 0 {
            let _ = writeln!(out, "  errors ({}):", self.errors);
            for (code, count) in &self.errors_by_code {
                let _ = writeln!(out, "    {code}: {count}");
            }
        }
        let _ = writeln!(out, "  checks: {}", self.checks.summary());
        if self.passed() {
            let _ = writeln!(out, "  invariants: all held");
        } else {
            let _ = writeln!(
                out,
                "  INVARIANTS FAILED ({}); reproduce with --seed {} and the same arguments:",
                self.failures.len(),
                self.seed
            );
            for failure in &self.failures {
                let _ = writeln!(out, "    {failure}");
            }
        }
        out
    }

    /// Writes the JSON report to `path` and the chart beside it (`.svg`).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        self.chart(&path.with_extension("svg"))
    }

    /// Latency over the run: fanout and request p50/p99 per second.
    pub fn chart(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let seconds = self.series.len().max(1) as u64;
        let top = self
            .series
            .iter()
            .flat_map(|second| [second.fanout.p99_ms, second.requests.p99_ms])
            .fold(1.0_f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "playtree-sim {:?}: {} players, seed {}",
                    self.scenario, self.players, self.seed
                ),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..seconds, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("latency (ms)")
            .draw()?;
        let series = |pick: fn(&Second) -> f64| {
            self.series
                .iter()
                .map(move |second| (second.second, pick(second)))
                .collect::<Vec<_>>()
        };
        for (label, color, points) in [
            ("fanout p50", BLUE, series(|s| s.fanout.p50_ms)),
            ("fanout p99", RED, series(|s| s.fanout.p99_ms)),
            ("request p50", GREEN, series(|s| s.requests.p50_ms)),
            ("request p99", MAGENTA, series(|s| s.requests.p99_ms)),
        ] {
            chart
                .draw_series(LineSeries::new(points, &color))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Lines written by a [`Progress`], kept for the test to read.
    #[derive(Debug, Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Written {
        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&lock(&self.0))
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn checks() -> Checks {
        Checks {
            seconds: 2.0,
            checks: 3,
            requests: 4,
            asked_again: 1,
            in_flight_max: 2,
            failures: 0,
            server_cpu_seconds: Some(1.0),
            sim_cpu_seconds: None,
        }
    }

    #[test]
    fn off_a_terminal_each_phase_is_a_timed_line_and_progress_waits_for_its_period() {
        let written = Written::default();
        let an_hour = Duration::from_secs(3600);
        let progress = Progress::plain(Box::new(written.clone()), an_hour);
        progress.phase("connecting 3 players");
        progress.checks_started(3, 2);
        for n_done in 1..=3 {
            progress.checked(n_done, 3);
        }
        progress.checks_done(&checks());
        let lines = written.lines();
        assert_eq!(lines.len(), 3, "phases only: {lines:?}");
        assert!(
            lines
                .iter()
                .all(|line| line.starts_with("playtree-sim [") && line.contains(" s] "))
        );
        assert!(lines[1].ends_with("checks: 3 started, at most 2 at once"));
        assert!(lines[2].contains("3 in 2.0 s (2/s), 4 requests (1 wallets asked again)"));
        assert!(lines[2].ends_with("server 50 %, sim -"), "{lines:?}");

        let written = Written::default();
        let progress = Progress::plain(Box::new(written.clone()), Duration::ZERO);
        for n_done in 1..=3 {
            progress.checked(n_done, 3);
        }
        let lines = written.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].ends_with("checks: 3/3 done"), "{lines:?}");
    }
}
