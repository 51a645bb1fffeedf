//! What a chaos run found: the providers' records and the database's rows, attributed to faults.
//!
//! The run's timeline is cut into segments, one per fault from its injection to the next fault's
//! (the first, `steady`, before any fault). A delivery belongs to the segment of its first send,
//! a request to the segment it was sent in. Per segment: the 503s and other failed attempts and
//! how long they went on, how long after the injection a 202 came back, the p99 latency of the
//! steady part (from one second after recovery to the next fault), and the invariants: lost (an
//! accepted delivery with no row in `events` and no dead letter), duplicated (more than one row), two ids (answered
//! with two different event ids), dead-lettered, not accepted.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context as _;

use super::provider::{Request, Sequence};
use super::{Plan, Window};

/// What the database holds, per delivery id.
#[derive(Debug, Default)]
pub struct Stored {
    /// Rows in `events` per delivery.
    pub rows: HashMap<String, u64>,
    /// `dead_letters` rows: delivery id and reason.
    pub dead: Vec<(String, String)>,
    /// Messages left in the parking queue.
    pub parked: u64,
}

pub fn read_sequences(path: &Path) -> anyhow::Result<Vec<Sequence>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad line in {}", path.display())))
        .collect()
}

pub fn read_requests(path: &Path) -> anyhow::Result<Vec<Request>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(Request::parse).collect())
}

#[derive(Debug, Default, Clone)]
pub struct Row {
    pub name: String,
    pub deliveries: u64,
    pub status_503: u64,
    pub other_errors: u64,
    /// First to last failed attempt, seconds.
    pub unavailable_s: Option<f64>,
    /// From the injection to the first 202 answered after the last failure, seconds.
    pub accepted_again_s: Option<f64>,
    pub p99_steady_ms: Option<f64>,
    pub lost: u64,
    pub duplicated: u64,
    pub two_ids: u64,
    pub dead_lettered: u64,
    pub not_accepted: u64,
    pub trouble: Vec<String>,
}

#[derive(Debug)]
pub struct Report {
    pub rate: u64,
    pub seconds: f64,
    pub rows: Vec<Row>,
    pub total: Row,
    pub parked: u64,
    pub dead_reasons: HashMap<String, u64>,
    pub violations: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        plan: &Plan,
        load_start: u64,
        load_end: u64,
        windows: &[Window],
        sequences: &[Sequence],
        requests: &[Request],
        stored: &Stored,
        final_trouble: Vec<String>,
    ) -> Self {
        // Segment boundaries: steady from the start, then one per fault.
        let mut starts = vec![load_start];
        starts.extend(windows.iter().map(|w| w.start_ms));
        let segment_of = |t: u64| -> usize {
            match starts.binary_search(&t) {
                Ok(i) => i,
                Err(0) => 0,
                Err(i) => i - 1,
            }
        };
        let mut rows: Vec<Row> = std::iter::once("steady".to_owned())
            .chain(windows.iter().map(|w| w.fault.name().to_owned()))
            .map(|name| Row {
                name,
                ..Row::default()
            })
            .collect();
        for (row, w) in rows.iter_mut().skip(1).zip(windows) {
            row.trouble = w.trouble.clone();
        }

        let dead: HashSet<&str> = stored.dead.iter().map(|(d, _)| d.as_str()).collect();
        // Deliveries: every id answered, and where each delivery belongs.
        let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
        let mut home: HashMap<&str, usize> = HashMap::new();
        for s in sequences {
            let set = ids.entry(&s.delivery).or_default();
            set.extend(s.accepted_ids.iter().map(String::as_str));
            set.extend(s.duplicate_ids.iter().map(String::as_str));
            if !s.resend {
                home.insert(&s.delivery, segment_of(s.first_ms));
            }
        }
        for s in sequences {
            let seg = home
                .get(s.delivery.as_str())
                .copied()
                .unwrap_or_else(|| segment_of(s.first_ms));
            let row = &mut rows[seg];
            if !matches!(s.status, 200 | 202) {
                row.not_accepted += 1;
            }
            if s.resend {
                continue;
            }
            row.deliveries += 1;
            let n = stored.rows.get(&s.delivery).copied().unwrap_or(0);
            // Dead-lettered is counted as such, not as lost: the event is parked, not gone.
            if matches!(s.status, 200 | 202) && n == 0 && !dead.contains(s.delivery.as_str()) {
                row.lost += 1;
            }
            if n > 1 {
                row.duplicated += 1;
            }
            if ids.get(s.delivery.as_str()).is_some_and(|i| i.len() > 1) {
                row.two_ids += 1;
            }
        }

        let mut dead_reasons: HashMap<String, u64> = HashMap::new();
        for (delivery, reason) in &stored.dead {
            *dead_reasons.entry(reason.clone()).or_default() += 1;
            let seg = home.get(delivery.as_str()).copied().unwrap_or(0);
            rows[seg].dead_lettered += 1;
        }

        // Requests: failures, recovery, steady latency.
        let mut by_seg: Vec<Vec<&Request>> = vec![Vec::new(); rows.len()];
        for r in requests {
            by_seg[segment_of(r.sent_ms)].push(r);
        }
        for (i, reqs) in by_seg.iter().enumerate() {
            let row = &mut rows[i];
            let failed = |r: &&&Request| r.status == 0 || r.status >= 500;
            row.status_503 = reqs.iter().filter(|r| r.status == 503).count() as u64;
            row.other_errors = reqs.iter().filter(failed).count() as u64 - row.status_503;
            let first_fail = reqs.iter().filter(failed).map(|r| r.sent_ms).min();
            let last_fail = reqs.iter().filter(failed).map(|r| r.sent_ms).max();
            let seg_start = starts[i];
            if let (Some(a), Some(b)) = (first_fail, last_fail) {
                row.unavailable_s = Some((b - a) as f64 / 1000.0);
                row.accepted_again_s = reqs
                    .iter()
                    .filter(|r| r.status == 202 && r.sent_ms >= b)
                    .map(|r| r.sent_ms + r.latency_us / 1000)
                    .min()
                    .map(|t| t.saturating_sub(seg_start) as f64 / 1000.0);
            }
            let steady_from = if i == 0 {
                seg_start
            } else {
                windows[i - 1].recovered_ms + 1000
            };
            let mut lat: Vec<u64> = reqs
                .iter()
                .filter(|r| r.sent_ms >= steady_from)
                .map(|r| r.latency_us)
                .collect();
            lat.sort_unstable();
            if !lat.is_empty() {
                let k = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
                row.p99_steady_ms = Some(lat[k] as f64 / 1000.0);
            }
        }

        let mut total = Row {
            name: "total".to_owned(),
            ..Row::default()
        };
        for r in &rows {
            total.deliveries += r.deliveries;
            total.status_503 += r.status_503;
            total.other_errors += r.other_errors;
            total.lost += r.lost;
            total.duplicated += r.duplicated;
            total.two_ids += r.two_ids;
            total.dead_lettered += r.dead_lettered;
            total.not_accepted += r.not_accepted;
            total.trouble.extend(r.trouble.iter().cloned());
        }
        total.trouble.extend(final_trouble);
        let mut all_lat: Vec<u64> = Vec::new();
        for (i, reqs) in by_seg.iter().enumerate() {
            let from = if i == 0 {
                starts[0]
            } else {
                windows[i - 1].recovered_ms + 1000
            };
            all_lat.extend(
                reqs.iter()
                    .filter(|r| r.sent_ms >= from)
                    .map(|r| r.latency_us),
            );
        }
        all_lat.sort_unstable();
        if !all_lat.is_empty() {
            let k = ((all_lat.len() as f64 * 0.99).ceil() as usize).clamp(1, all_lat.len()) - 1;
            total.p99_steady_ms = Some(all_lat[k] as f64 / 1000.0);
        }

        let mut violations = Vec::new();
        let mut check = |n: u64, what: &str| {
            if n > 0 {
                violations.push(format!("{n} {what}"));
            }
        };
        check(total.not_accepted, "deliveries never accepted");
        check(
            total.lost,
            "accepted deliveries with no row in `events` (lost)",
        );
        check(total.duplicated, "deliveries stored more than once");
        check(
            total.two_ids,
            "deliveries answered with two different event ids",
        );
        check(
            total.dead_lettered,
            "dead letters (none may come from an outage)",
        );
        check(stored.parked, "messages left in the parking queue");
        for t in &total.trouble {
            violations.push(format!("a process needed help: {t}"));
        }
        let _ = plan;
        Self {
            rate: plan.rate,
            seconds: load_end.saturating_sub(load_start) as f64 / 1000.0,
            rows,
            total,
            parked: stored.parked,
            dead_reasons,
            violations,
        }
    }

    /// The Markdown table the README shows.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} deliveries/s for {:.0} s (10% re-sent), 2 ingress, 2 workers, 3 RabbitMQ nodes\n\n",
            self.rate, self.seconds
        );
        s.push_str(
            "| fault | deliveries | 503s | other errors | failing for | accepted again after | \
             p99 outside faults | lost | duplicated | two ids | dead-lettered | not accepted |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let secs = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} s"));
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} ms"));
        for r in self.rows.iter().chain(std::iter::once(&self.total)) {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.name,
                r.deliveries,
                r.status_503,
                r.other_errors,
                secs(r.unavailable_s),
                secs(r.accepted_again_s),
                ms(r.p99_steady_ms),
                r.lost,
                r.duplicated,
                r.two_ids,
                r.dead_lettered,
                r.not_accepted,
            ));
        }
        if !self.dead_reasons.is_empty() {
            let mut reasons: Vec<_> = self.dead_reasons.iter().collect();
            reasons.sort();
            s.push_str(&format!("\ndead-letter reasons: {reasons:?}\n"));
        }
        if self.parked > 0 {
            s.push_str(&format!("parked queue: {} messages\n", self.parked));
        }
        if self.violations.is_empty() {
            s.push_str("\nall invariants held\n");
        } else {
            s.push_str("\nviolated:\n");
            for v in &self.violations {
                s.push_str(&format!("- {v}\n"));
            }
        }
        s
    }
}
