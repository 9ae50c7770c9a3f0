//! The supervisor on the host: restarts with health recorded, a killed run restarts, and
//! shutdown stops tasks in reverse start order.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

fn names(events: &EventLog, name: &str) -> Vec<String> {
    events
        .recorded()
        .timeline
        .iter()
        .filter(|e| e["event"] == name)
        .map(|e| e["task"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn failures_restart_with_backoff_and_health_records_them() {
    let events = Arc::new(EventLog::new());
    let mut sup = Supervisor::new(events.clone());
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    sup.spawn("flaky", RestartPolicy::UntilSuccess, move || {
        let r = r.clone();
        task(async move {
            match r.fetch_add(1, Ordering::SeqCst) {
                0 => Err("boom".into()),
                1 => panic!("deliberate"),
                _ => Ok(()),
            }
        })
    });
    let health = sup.health();
    until("flaky done", || {
        health.snapshot().first().map(|h| h.state) == Some(TaskState::Done)
    })
    .await;
    let h = &health.snapshot()[0];
    assert_eq!((h.task.as_str(), h.restarts), ("flaky", 2));
    assert_eq!(h.last_error.as_deref(), Some("panic"));
    let rec = events.recorded();
    let failed: Vec<_> = rec
        .timeline
        .iter()
        .filter(|e| e["event"] == "task.failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["reason"], "error: boom");
    // Second consecutive failure: delay within [100, 200] ms (ceiling 200 ms).
    let delay = failed[1]["restart_in_ms"].as_u64().unwrap_or(0);
    assert!((100..=200).contains(&delay), "{delay}");
    assert_eq!(names(&events, "task.restarted"), ["flaky", "flaky"]);
    assert_eq!(names(&events, "task.done"), ["flaky"]);
}

#[tokio::test]
async fn a_killed_run_restarts() {
    let events = Arc::new(EventLog::new());
    let mut sup = Supervisor::new(events.clone());
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    sup.spawn("node", RestartPolicy::Forever, move || {
        r.fetch_add(1, Ordering::SeqCst);
        task(std::future::pending())
    });
    let health = sup.health();
    until("first run", || runs.load(Ordering::SeqCst) == 1).await;
    assert!(health.kill("node"));
    assert!(!health.kill("no-such-task"));
    until("second run", || runs.load(Ordering::SeqCst) == 2).await;
    let h = &health.snapshot()[0];
    assert_eq!((h.state, h.restarts), (TaskState::Running, 1));
    assert_eq!(h.last_error.as_deref(), Some("killed"));
    sup.stop(Duration::from_secs(1)).await;
    assert_eq!(health.snapshot()[0].state, TaskState::Stopped);
}

#[tokio::test]
async fn stop_goes_in_reverse_start_order() {
    let events = Arc::new(EventLog::new());
    let mut sup = Supervisor::new(events.clone());
    for name in ["signals", "provider", "node", "status"] {
        sup.spawn(
            name,
            RestartPolicy::Forever,
            || task(std::future::pending()),
        );
    }
    // One that finished for good is not stopped again.
    sup.spawn("oneshot", RestartPolicy::UntilSuccess, || {
        task(async { Ok(()) })
    });
    let health = sup.health();
    until("oneshot done", || {
        health.snapshot().iter().any(|h| h.state == TaskState::Done)
    })
    .await;
    sup.stop(Duration::from_secs(1)).await;
    assert_eq!(
        names(&events, "task.stopped"),
        ["status", "node", "provider", "signals"]
    );
    let states: Vec<_> = health.snapshot().iter().map(|h| h.state).collect();
    assert_eq!(states[..4], [TaskState::Stopped; 4]);
}
