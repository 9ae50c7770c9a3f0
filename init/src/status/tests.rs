//! The endpoint on loopback: `/status` parses back into a report with the live task
//! health and the timeline, `/metrics` is Prometheus text, anything else is refused.

use super::cli;
use super::server::{serve, Sources};
use crate::events::{Event, EventLog};
use crate::supervise::{task, RestartPolicy, Supervisor, TaskState};
use std::sync::Arc;

#[tokio::test]
async fn endpoint_serves_status_and_metrics() {
    let events = Arc::new(EventLog::new());
    events.emit(Event::InitReady {
        mode: "local".into(),
        stage: 2,
        debug: false,
    });
    let mut sup = Supervisor::new(events.clone());
    sup.spawn("node", RestartPolicy::Forever, || {
        task(std::future::pending())
    });
    let health = sup.health();
    // Its first run starts when the runtime polls it.
    let mut killed = false;
    for _ in 0..1000 {
        killed = health.kill("node");
        if killed {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(killed, "node never ran");
    let src = Arc::new(Sources {
        events: events.clone(),
        health: health.clone(),
        peers: Default::default(),
        mode: "local".into(),
        stage: 2,
        kernel: "6.1.0-test".into(),
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(serve(l, src));
    // Wait for the restart, then read as a host would (blocking client off the runtime).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while health.snapshot()[0].restarts == 0 {
        assert!(tokio::time::Instant::now() < deadline, "node not restarted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let a = addr.clone();
    let (report, metrics, missing, not_http) = tokio::task::spawn_blocking(move || {
        (
            cli::fetch(&a),
            cli::get(&a, "/metrics"),
            cli::get(&a, "/nope"),
            cli::get(&a, "bad"),
        )
    })
    .await
    .unwrap();
    let r = report.unwrap();
    assert_eq!(
        (r.mode.as_str(), r.stage, r.kernel.as_str()),
        ("local", 2, "6.1.0-test")
    );
    let node = &r.tasks[0];
    assert_eq!(
        (node.task.as_str(), node.state, node.restarts),
        ("node", TaskState::Running, 1)
    );
    assert_eq!(node.last_error.as_deref(), Some("killed"));
    let names: Vec<_> = r.timeline.iter().map(|e| e["event"].clone()).collect();
    assert_eq!(names, ["init.ready", "task.failed", "task.restarted"]);
    let m = metrics.unwrap();
    assert!(
        m.contains("phase_task_restarts_total{task=\"node\"} 1\n"),
        "{m}"
    );
    assert_eq!(missing.unwrap_err().reason(), "http_status");
    assert_eq!(not_http.unwrap_err().reason(), "http_status");
    sup.stop(std::time::Duration::from_secs(1)).await;
}
