//! The status report (PURE): what `/status` serves as JSON, its Prometheus text form
//! (`/metrics`, text exposition format 0.0.4), and the summary `phase status` prints.

use crate::events::Recorded;
use crate::supervise::health::{Health, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything the endpoint tells about the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The `phase` binary's version.
    pub version: String,
    /// The release running (from `stage2.start` or `rootfs.mounted`), if any.
    pub release: Option<u64>,
    /// `uname -r`.
    pub kernel: String,
    pub mode: String,
    pub stage: u8,
    /// ms since the kernel started (the events' clock).
    pub uptime_ms: u64,
    /// Supervised tasks, in start order.
    pub tasks: Vec<Health>,
    /// `job.done` events by outcome.
    pub jobs: BTreeMap<String, u64>,
    /// Peers the node's libp2p host is connected to (peer ids).
    pub peers: Vec<String>,
    /// The boot timeline: the first events, each `{"event","t_ms",fields…}`.
    pub timeline: Vec<serde_json::Value>,
    /// Events after those.
    pub timeline_omitted: u64,
}

/// What the report is built from, besides the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub version: String,
    pub kernel: String,
    pub mode: String,
    pub stage: u8,
    pub uptime_ms: u64,
    pub peers: Vec<String>,
}

/// Assemble the report.
pub fn build(node: Node, tasks: Vec<Health>, recorded: Recorded) -> Report {
    let release = recorded.timeline.iter().rev().find_map(|e| {
        matches!(e["event"].as_str(), Some("stage2.start" | "rootfs.mounted"))
            .then(|| e["release"].as_u64())
            .flatten()
    });
    Report {
        version: node.version,
        release,
        kernel: node.kernel,
        mode: node.mode,
        stage: node.stage,
        uptime_ms: node.uptime_ms,
        tasks,
        jobs: recorded.jobs,
        peers: node.peers,
        timeline: recorded.timeline,
        timeline_omitted: recorded.omitted,
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of the report.
pub fn metrics(r: &Report) -> String {
    let mut s = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(s, "{name}{labels} {value}");
        }
    };
    let release = r.release.map(|v| v.to_string()).unwrap_or_default();
    family(
        "phase_info",
        "gauge",
        "The running node (always 1).",
        &[(
            format!(
                "{{version=\"{}\",release=\"{}\",kernel=\"{}\",mode=\"{}\",stage=\"{}\"}}",
                label(&r.version),
                label(&release),
                label(&r.kernel),
                label(&r.mode),
                r.stage
            ),
            "1".into(),
        )],
    );
    family(
        "phase_uptime_seconds",
        "gauge",
        "Time since the kernel started.",
        &[(String::new(), format!("{:.3}", r.uptime_ms as f64 / 1000.0))],
    );
    let by_task = |f: &dyn Fn(&Health) -> String| -> Vec<(String, String)> {
        r.tasks
            .iter()
            .map(|h| (format!("{{task=\"{}\"}}", label(&h.task)), f(h)))
            .collect()
    };
    family(
        "phase_task_up",
        "gauge",
        "1 while the supervised task runs, 0 otherwise.",
        &by_task(&|h| u8::from(h.state == TaskState::Running).to_string()),
    );
    family(
        "phase_task_restarts_total",
        "counter",
        "Runs of the supervised task after its first.",
        &by_task(&|h| h.restarts.to_string()),
    );
    let jobs: Vec<_> = r
        .jobs
        .iter()
        .map(|(o, n)| (format!("{{outcome=\"{}\"}}", label(o)), n.to_string()))
        .collect();
    family(
        "phase_jobs_total",
        "counter",
        "Job requests answered, by outcome.",
        &jobs,
    );
    family(
        "phase_peers",
        "gauge",
        "Peers connected to the node's libp2p host.",
        &[(String::new(), r.peers.len().to_string())],
    );
    // First occurrence of each milestone: the boot timeline as gauges.
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &r.timeline {
        if let (Some(name), Some(t)) = (e["event"].as_str(), e["t_ms"].as_u64()) {
            first.entry(name).or_insert(t);
        }
    }
    let events: Vec<_> = first
        .iter()
        .map(|(n, t)| {
            (
                format!("{{event=\"{}\"}}", label(n)),
                format!("{:.3}", *t as f64 / 1000.0),
            )
        })
        .collect();
    family(
        "phase_boot_event_seconds",
        "gauge",
        "When each boot event was first emitted, since the kernel started.",
        &events,
    );
    s
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The report for a person (`phase status`).
pub fn for_person(r: &Report, addr: &str) -> String {
    let mut s = String::new();
    let release = r
        .release
        .map(|v| v.to_string())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        s,
        "node {addr}: phase {}, release {release}, kernel {}, mode {}, stage {}, up {}",
        r.version,
        r.kernel,
        r.mode,
        r.stage,
        secs(r.uptime_ms)
    );
    let _ = writeln!(s, "\ntasks:");
    let _ = writeln!(
        s,
        "  {:<16} {:<8} {:>8}  {:>10}  last error",
        "task", "state", "restarts", "since"
    );
    for h in &r.tasks {
        let state = serde_json::to_value(h.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<16} {:<8} {:>8}  {:>10}  {}",
            h.task,
            state,
            h.restarts,
            secs(r.uptime_ms.saturating_sub(h.since_ms)) + " ago",
            h.last_error.as_deref().unwrap_or("-")
        );
    }
    let jobs = if r.jobs.is_empty() {
        "none".to_string()
    } else {
        r.jobs
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "\njobs: {jobs}");
    let _ = writeln!(s, "peers: {}", r.peers.len());
    let _ = writeln!(s, "\nboot timeline:");
    for e in &r.timeline {
        if let (Some(name), Some(t)) = (e["event"].as_str(), e["t_ms"].as_u64()) {
            let _ = writeln!(s, "  {:>9}  {name}", secs(t));
        }
    }
    if r.timeline_omitted > 0 {
        let _ = writeln!(s, "  (+{} later events)", r.timeline_omitted);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Report {
        let recorded = Recorded {
            timeline: vec![
                json!({"event":"init.start","t_ms":2000}),
                json!({"event":"rootfs.mounted","t_ms":3000,"release":1}),
                json!({"event":"stage2.start","t_ms":3500,"release":2}),
                json!({"event":"task.failed","t_ms":4000,"task":"node"}),
                json!({"event":"task.failed","t_ms":4500,"task":"node"}),
            ],
            omitted: 3,
            jobs: [("exit".to_string(), 2), ("refused".to_string(), 1)].into(),
        };
        let tasks = vec![
            Health {
                task: "signals".into(),
                state: TaskState::Running,
                restarts: 0,
                last_error: None,
                since_ms: 3600,
            },
            Health {
                task: "no\"de".into(),
                state: TaskState::Backoff,
                restarts: 2,
                last_error: Some("killed".into()),
                since_ms: 4500,
            },
        ];
        build(
            Node {
                version: "0.1.0".into(),
                kernel: "6.1.0-28-amd64".into(),
                mode: "internet".into(),
                stage: 2,
                uptime_ms: 5000,
                peers: vec!["12D3KooA".into()],
            },
            tasks,
            recorded,
        )
    }

    #[test]
    fn release_is_the_one_switched_into() {
        assert_eq!(sample().release, Some(2));
        let none = build(
            Node {
                version: "v".into(),
                kernel: "k".into(),
                mode: "private".into(),
                stage: 1,
                uptime_ms: 1,
                peers: vec![],
            },
            vec![],
            Recorded::default(),
        );
        assert_eq!(none.release, None);
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["tasks"][1]["state"], "backoff");
        assert_eq!(v["tasks"][1]["restarts"], 2);
        assert_eq!(v["jobs"]["exit"], 2);
    }

    #[test]
    fn metrics_text() {
        let m = metrics(&sample());
        for want in [
            "# TYPE phase_task_restarts_total counter\n",
            "phase_task_restarts_total{task=\"signals\"} 0\n",
            // Label values are escaped.
            "phase_task_restarts_total{task=\"no\\\"de\"} 2\n",
            "phase_task_up{task=\"signals\"} 1\n",
            "phase_task_up{task=\"no\\\"de\"} 0\n",
            "phase_jobs_total{outcome=\"exit\"} 2\n",
            "phase_jobs_total{outcome=\"refused\"} 1\n",
            "phase_peers 1\n",
            "phase_uptime_seconds 5.000\n",
            "phase_info{version=\"0.1.0\",release=\"2\",kernel=\"6.1.0-28-amd64\",mode=\"internet\",stage=\"2\"} 1\n",
            // First occurrence only.
            "phase_boot_event_seconds{event=\"task.failed\"} 4.000\n",
        ] {
            assert!(m.contains(want), "missing {want:?} in\n{m}");
        }
        // Every line is a comment or `name{labels} value`.
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn summary_for_a_person() {
        let s = for_person(&sample(), "10.0.2.15:8090");
        for want in [
            "node 10.0.2.15:8090: phase 0.1.0, release 2, kernel 6.1.0-28-amd64, mode internet, stage 2, up 5.0 s",
            "  no\"de            backoff         2   0.5 s ago  killed",
            "jobs: exit 2, refused 1",
            "peers: 1",
            "      2.0 s  init.start",
            "(+3 later events)",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }
}
