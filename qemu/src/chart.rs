//! The boot chart: where a boot's time went, from its `step.done` events (the boot runner's
//! timings), as a text table and as an SVG. `make bench` prints the table for the median boot
//! and writes the SVG into `out/bench/`; anything holding a [`Boot`] can do the same.

use crate::{Boot, Event};
use std::fmt::Write;

/// One bar of the chart: a runner step (or the kernel, before `init.start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub step: String,
    /// 1 or 2; 0 for the kernel.
    pub stage: u8,
    /// Guest CLOCK_BOOTTIME when the step started.
    pub start_ms: u64,
    pub ms: u64,
    /// False when the step failed and the boot went on without it.
    pub ok: bool,
}

/// A milestone event drawn as a tick on the time axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    pub t_ms: u64,
}

/// A boot's timeline: bars in the order the steps ran, and the milestones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chart {
    pub spans: Vec<Span>,
    pub marks: Vec<Mark>,
}

impl Chart {
    /// Bars from `step.done` events (start = `t_ms - ms`), led by the kernel (boot to
    /// `init.start`); every other event is a milestone.
    pub fn from_events(events: &[Event]) -> Chart {
        let mut chart = Chart::default();
        if let Some(start) = events.iter().find(|e| e.name == "init.start") {
            chart.spans.push(Span {
                step: "kernel".into(),
                stage: 0,
                start_ms: 0,
                ms: start.t_ms,
                ok: true,
            });
        }
        for e in events {
            if e.name != "step.done" {
                chart.marks.push(Mark {
                    name: e.name.clone(),
                    t_ms: e.t_ms,
                });
                continue;
            }
            let ms = e.fields["ms"].as_u64().unwrap_or(0);
            chart.spans.push(Span {
                step: e.str("step").unwrap_or("?").to_string(),
                stage: e.fields["stage"].as_u64().unwrap_or(0) as u8,
                start_ms: e.t_ms.saturating_sub(ms),
                ms,
                ok: e.fields["ok"].as_bool().unwrap_or(true),
            });
        }
        chart
    }

    /// The last instant the chart covers.
    pub fn end_ms(&self) -> u64 {
        let spans = self.spans.iter().map(|s| s.start_ms + s.ms);
        let marks = self.marks.iter().map(|m| m.t_ms);
        spans.chain(marks).max().unwrap_or(0)
    }

    /// One line per step: stage, start and duration in guest milliseconds.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<12} {:>5} {:>9} {:>9}  {}\n",
            "step", "stage", "start ms", "ms", "result"
        );
        for s in &self.spans {
            let stage = match s.stage {
                0 => "-".to_string(),
                n => n.to_string(),
            };
            let result = if s.ok { "ok" } else { "failed" };
            let _ = writeln!(
                out,
                "{:<12} {stage:>5} {:>9} {:>9}  {result}",
                s.step, s.start_ms, s.ms
            );
        }
        out
    }

    /// A Gantt chart: one row per step on a shared millisecond axis, milestones as ticks
    /// with their names along the bottom.
    pub fn svg(&self, title: &str) -> String {
        const LEFT: f64 = 110.0;
        const WIDTH: f64 = 900.0;
        const ROW: f64 = 18.0;
        const TOP: f64 = 30.0;
        let end = self.end_ms().max(1) as f64;
        let x = |ms: u64| LEFT + ms as f64 / end * WIDTH;
        let rows = self.spans.len() as f64;
        let axis_y = TOP + rows * ROW + 6.0;
        let height = axis_y + 20.0 + self.marks.len() as f64 * 12.0 + 10.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\" font-family=\"monospace\" font-size=\"11\">\n",
            LEFT + WIDTH + 80.0
        );
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"16\" font-size=\"13\">{}</text>",
            escape(title)
        );
        for (i, sp) in self.spans.iter().enumerate() {
            let y = TOP + i as f64 * ROW;
            let fill = match (sp.ok, sp.stage) {
                (false, _) => "#d9534f",
                (true, 0) => "#999999",
                (true, 1) => "#4a90d9",
                _ => "#5cb85c",
            };
            let w = (x(sp.start_ms + sp.ms) - x(sp.start_ms)).max(1.0);
            let _ = writeln!(
                s,
                "<text x=\"4\" y=\"{:.0}\">{}</text><rect x=\"{:.1}\" y=\"{y:.0}\" width=\"{w:.1}\" height=\"{:.0}\" fill=\"{fill}\"><title>{} (stage {}): {} ms at {} ms</title></rect><text x=\"{:.1}\" y=\"{:.0}\">{} ms</text>",
                y + 12.0,
                escape(&sp.step),
                x(sp.start_ms),
                ROW - 4.0,
                escape(&sp.step),
                sp.stage,
                sp.ms,
                sp.start_ms,
                x(sp.start_ms) + w + 3.0,
                y + 12.0,
                sp.ms
            );
        }
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"black\"/><text x=\"{LEFT}\" y=\"{}\">0</text><text x=\"{}\" y=\"{}\">{end:.0} ms</text>",
            LEFT + WIDTH,
            axis_y + 12.0,
            LEFT + WIDTH - 40.0,
            axis_y + 12.0
        );
        for (i, m) in self.marks.iter().enumerate() {
            let mx = x(m.t_ms);
            let ly = axis_y + 26.0 + i as f64 * 12.0;
            let _ = writeln!(
                s,
                "<line x1=\"{mx:.1}\" y1=\"{TOP}\" x2=\"{mx:.1}\" y2=\"{ly:.0}\" stroke=\"#bbbbbb\" stroke-dasharray=\"2,2\"/><text x=\"{:.1}\" y=\"{ly:.0}\">{} {} ms</text>",
                mx + 2.0,
                escape(&m.name),
                m.t_ms
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The boot whose `key` is the median among those that have one (the lower middle for an
/// even count).
pub fn median_boot(boots: &[Boot], key: impl Fn(&Boot) -> Option<u64>) -> Option<&Boot> {
    let mut keyed: Vec<(u64, &Boot)> = boots.iter().filter_map(|b| Some((key(b)?, b))).collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mid = keyed.len().checked_sub(1)? / 2;
    keyed.get(mid).map(|(_, b)| *b)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_event;

    fn events(lines: &[&str]) -> Vec<Event> {
        lines
            .iter()
            .map(|l| parse_event(&format!("PHASE-EVENT {l}")).unwrap())
            .collect()
    }

    const TIMELINE: &[&str] = &[
        r#"{"event":"init.start","t_ms":1900,"pid":1}"#,
        r#"{"event":"step.done","t_ms":1905,"step":"early","stage":1,"ms":5,"ok":true}"#,
        r#"{"event":"modules.loaded","t_ms":2100}"#,
        r#"{"event":"step.done","t_ms":2101,"step":"modules","stage":1,"ms":196,"ok":true}"#,
        r#"{"event":"step.done","t_ms":2150,"step":"local","stage":1,"ms":49,"ok":false}"#,
        r#"{"event":"fallback","t_ms":2150,"step":"local","reason":"x<y"}"#,
    ];

    #[test]
    fn spans_start_where_the_step_began() {
        let c = Chart::from_events(&events(TIMELINE));
        let got: Vec<(&str, u8, u64, u64, bool)> = c
            .spans
            .iter()
            .map(|s| (s.step.as_str(), s.stage, s.start_ms, s.ms, s.ok))
            .collect();
        assert_eq!(
            got,
            [
                ("kernel", 0, 0, 1900, true),
                ("early", 1, 1900, 5, true),
                ("modules", 1, 1905, 196, true),
                ("local", 1, 2101, 49, false),
            ]
        );
        assert_eq!(
            c.marks.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["init.start", "modules.loaded", "fallback"]
        );
        assert_eq!(c.end_ms(), 2150);
    }

    #[test]
    fn table_and_svg_name_every_step() {
        let c = Chart::from_events(&events(TIMELINE));
        let t = c.table();
        assert_eq!(t.lines().count(), 5);
        assert!(t
            .lines()
            .nth(3)
            .unwrap()
            .split_whitespace()
            .eq(["modules", "1", "1905", "196", "ok"]));
        assert!(t.lines().nth(4).unwrap().ends_with("failed"));
        let svg = c.svg("a <b> & c");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect ").count(), 4);
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(!svg.contains("a <b>"));
    }

    #[test]
    fn median_boot_is_the_middle_one() {
        let boot = |t: u64| Boot {
            events: events(&[&format!(r#"{{"event":"init.ready","t_ms":{t}}}"#)]),
            console: String::new(),
            outcome: crate::Outcome::PowerOff,
            accel: crate::Accel::Tcg,
            wall: std::time::Duration::ZERO,
            qemu_status: None,
        };
        let boots = [boot(30), boot(10), boot(20), boot(40)];
        let key = |b: &Boot| b.event("init.ready").map(|e| e.t_ms);
        assert_eq!(key(median_boot(&boots, key).unwrap()), Some(20));
        assert_eq!(key(median_boot(&boots[..3], key).unwrap()), Some(20));
        assert!(median_boot(&boots[..0], key).is_none());
    }
}
