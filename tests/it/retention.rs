//! Retention (issue 13): a pass removes exactly the finished rows older than their windows (windows of
//! seconds, rows backdated through the store), keeps every unfinished delivery, its attempts and its
//! event and every unpublished event whatever their age, clears response bodies at their own window;
//! ingestion and delivery carry on during a pass over many expired rows; the dry run (library and
//! `herald retention run --dry-run`) counts exactly what a pass removes and removes nothing; on
//! PostgreSQL one instance at a time holds the retention lock.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use herald::{
    config::HumanDuration,
    retention::{Pass, Removed, Retention},
    store::{
        Attempt, AttemptClass, AttemptOutcome, DeliveryStatus, DynStore, NewDelivery, NewEvent, NextStep,
        RetentionKind, WebhookChanges,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        receiver::{Accepts, Receiver},
    },
};

in_both_modes!(
    a_pass_removes_exactly_the_expired_finished_rows,
    ingestion_and_delivery_carry_on_during_a_pass,
    the_stage_runs_by_itself_and_one_instance_holds_the_lock,
    statistics_go_with_the_attempts_window,
);

/// What a seeded delivery is left as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Succeeded,
    Dead,
    /// Waiting for a retry (one attempt made).
    Pending,
    /// Handed to the queue, never attempted (in flight).
    Queued,
}

/// One seeded event and its delivery, if any.
#[derive(Debug, Clone, Copy)]
struct Seeded {
    event: Uuid,
    delivery: Option<Uuid>,
}

/// Test windows: events (and finished deliveries) 20 s, attempts 10 s, response bodies 5 s.
fn windows(settings: &mut herald::config::Settings, enabled: bool) {
    let r = &mut settings.retention;
    r.enabled = enabled;
    r.events = HumanDuration(Duration::from_secs(20));
    r.attempts = HumanDuration(Duration::from_secs(10));
    r.response_bodies = HumanDuration(Duration::from_secs(5));
    r.batch_size = 7;
    r.batch_pause = HumanDuration(Duration::from_millis(1));
    // Backdated unpublished events stay unpublished (the relay takes only those older than this).
    settings.events.relay_after = HumanDuration(Duration::from_secs(3600));
}

fn ago(seconds: i64) -> DateTime<Utc> {
    herald::domain::now() - chrono::Duration::seconds(seconds)
}

/// A webhook no live event reaches (inactive), to hang backdated deliveries on.
async fn archive_webhook(app: &TestApp) -> Uuid {
    let id = app.store_webhook("http://127.0.0.1:9/never", |sealed| sealed).await;
    let changes =
        WebhookChanges { is_active: Some(false), updated_at: herald::domain::now(), ..Default::default() };
    app.state.store.update_webhook(id, &changes).await.expect("deactivated").expect("exists");
    id
}

/// `count` events created at `at` (published unless `published` is false), each with a delivery to
/// `webhook` left as `left` (none when `left` is `None`), its one attempt started at `at` with a body.
async fn seed(
    app: &TestApp,
    webhook: Uuid,
    count: usize,
    at: DateTime<Utc>,
    published: bool,
    left: Option<Left>,
) -> Vec<Seeded> {
    let store = &app.state.store;
    let mut seeded = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let events: Vec<NewEvent> = chunk
            .iter()
            .map(|_| NewEvent {
                id: Uuid::now_v7(),
                organization_id: app.organization_id,
                event_type: "item.created".into(),
                payload: r#"{"backdated":true}"#.into(),
                idempotency_key: None,
                request_hash: None,
                created_at: at,
                only_webhook: None,
            })
            .collect();
        store.insert_events(&events, at).await.expect("events stored");
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        if published {
            store.mark_events_published(&ids, at).await.expect("published");
        }
        let Some(left) = left else {
            seeded.extend(ids.iter().map(|&event| Seeded { event, delivery: None }));
            continue;
        };
        let deliveries: Vec<NewDelivery> = ids
            .iter()
            .map(|&event_id| NewDelivery {
                id: Uuid::now_v7(),
                event_id,
                webhook_id: webhook,
                organization_id: app.organization_id,
                created_at: at,
                // Not due for an hour: no scheduler takes them during the test.
                lease_until: herald::domain::now() + chrono::Duration::hours(1),
            })
            .collect();
        store.create_deliveries(&deliveries).await.expect("deliveries stored");
        seeded.extend(deliveries.iter().map(|d| Seeded { event: d.event_id, delivery: Some(d.id) }));
        let next = match left {
            Left::Queued => continue,
            Left::Succeeded => NextStep::Succeeded,
            Left::Dead => NextStep::Dead,
            Left::Pending => NextStep::Retry(herald::domain::now() + chrono::Duration::hours(1)),
        };
        let outcomes: Vec<AttemptOutcome> = deliveries
            .iter()
            .map(|d| AttemptOutcome {
                attempt: Attempt {
                    id: Uuid::now_v7(),
                    delivery_id: d.id,
                    attempt_number: 1,
                    started_at: at,
                    duration_ms: 5,
                    status_code: Some(if left == Left::Succeeded { 200 } else { 500 }),
                    response_body: Some("a response body".into()),
                    error: None,
                },
                webhook_id: webhook,
                organization_id: d.organization_id,
                event_id: d.event_id,
                event_type: "item.created".into(),
                class: if left == Left::Succeeded {
                    AttemptClass::Status2xx
                } else {
                    AttemptClass::Status5xx
                },
                next: next.clone(),
                creates_delivery: false,
            })
            .collect();
        // Never disabling (0), as the seeded webhook must keep its deliveries as they are.
        let rules = herald::worker::RecordingRules { disable: herald::worker::DisableRule::new(0) };
        store.record_outcomes(&outcomes, &rules).await.expect("outcomes recorded");
    }
    seeded
}

/// Whether the event, the delivery and its attempt exist, and the attempt's body.
async fn state_of(store: &DynStore, seeded: Seeded) -> (bool, bool, usize, Option<String>) {
    let event = store.get_event(seeded.event).await.expect("read").is_some();
    let Some(id) = seeded.delivery else { return (event, false, 0, None) };
    let delivery = store.get_delivery(id).await.expect("read").is_some();
    let attempts = store.list_attempts(id).await.expect("read");
    let body = attempts.first().and_then(|a| a.response_body.clone());
    (event, delivery, attempts.len(), body)
}

async fn assert_all(
    store: &DynStore,
    group: &[Seeded],
    expected: (bool, bool, usize, Option<&str>),
    what: &str,
) {
    for seeded in group {
        let (event, delivery, attempts, body) = state_of(store, *seeded).await;
        assert_eq!(
            (event, delivery, attempts, body.as_deref()),
            expected,
            "{what}: (event kept, delivery kept, attempts, body) of {seeded:?}"
        );
    }
}

fn retention_of(app: &TestApp) -> Retention {
    Retention::new(app.state.store.clone(), app.state.settings.retention.clone())
}

/// `herald retention run --dry-run` against the app's database: its counts by kind.
fn cli_dry_run(database_url: &str) -> Vec<(String, u64)> {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["retention", "run", "--dry-run"])
        .env_remove("RUST_LOG")
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
        .env("HERALD__DATABASE__URL", database_url)
        .env("HERALD__RETENTION__EVENTS", "20s")
        .env("HERALD__RETENTION__ATTEMPTS", "10s")
        .env("HERALD__RETENTION__RESPONSE_BODIES", "5s")
        .env("HERALD__LOG__LEVEL", "warn")
        .output()
        .expect("herald runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("dry run: nothing was removed"), "{stdout}");
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.parse().ok()?))
        })
        .collect()
}

async fn a_pass_removes_exactly_the_expired_finished_rows(mode: Mode) {
    let app = TestApp::spawn_with(mode, |s| windows(s, false)).await;
    let (first, second) = (archive_webhook(&app).await, archive_webhook(&app).await);
    let n = 10;
    let old_succeeded = seed(&app, first, n, ago(30), true, Some(Left::Succeeded)).await;
    let old_dead = seed(&app, first, n, ago(30), true, Some(Left::Dead)).await;
    let old_pending = seed(&app, first, n, ago(30), true, Some(Left::Pending)).await;
    let old_queued = seed(&app, first, n, ago(30), true, Some(Left::Queued)).await;
    let old_unpublished = seed(&app, first, n, ago(30), false, None).await;
    let old_alone = seed(&app, first, n, ago(30), true, None).await;
    let recent_15 = seed(&app, first, n, ago(15), true, Some(Left::Succeeded)).await;
    let recent_7 = seed(&app, first, n, ago(7), true, Some(Left::Succeeded)).await;
    let fresh = seed(&app, first, n, ago(1), true, Some(Left::Succeeded)).await;
    // Events with two deliveries: one expired and finished, one waiting for a retry.
    let shared_done = seed(&app, first, n, ago(30), true, Some(Left::Succeeded)).await;
    let mut shared_waiting = Vec::new();
    for seeded in &shared_done {
        let delivery = NewDelivery {
            id: Uuid::now_v7(),
            event_id: seeded.event,
            webhook_id: second,
            organization_id: app.organization_id,
            created_at: ago(30),
            lease_until: herald::domain::now() + chrono::Duration::hours(1),
        };
        app.state.store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("stored");
        shared_waiting.push(Seeded { event: seeded.event, delivery: Some(delivery.id) });
    }

    let expected = Removed {
        // Every attempt older than 5 s, of finished deliveries or not.
        response_bodies: 6 * n as u64,
        // Attempts older than 10 s of finished deliveries.
        attempts: 4 * n as u64,
        // Finished deliveries that ended more than 20 s ago.
        deliveries: 3 * n as u64,
        // Published events older than 20 s with no delivery left after the pass.
        events: 3 * n as u64,
        // Rollups of minutes that ended more than 10 s ago: 0 to 2 rows of the seeded minutes,
        // depending on the clock (statistics_go_with_the_attempts_window counts them exactly).
        statistics: 0,
    };
    let retention = retention_of(&app);
    let dry = retention.dry_run(herald::domain::now()).await.expect("dry run");
    let expected = Removed { statistics: dry.statistics, ..expected };
    assert_eq!(dry, expected);
    let url = app.database.url.clone();
    let cli = tokio::task::spawn_blocking(move || cli_dry_run(&url)).await.expect("cli");
    for kind in RetentionKind::ALL {
        let printed = cli.iter().find(|(name, _)| name == kind.as_str()).map(|(_, count)| *count);
        assert_eq!(printed, Some(expected.get(kind)), "herald retention run --dry-run: {kind:?} in {cli:?}");
    }
    // The dry runs removed nothing.
    assert_all(&app.state.store, &old_succeeded, (true, true, 1, Some("a response body")), "before the pass")
        .await;

    let progress = Arc::new(AtomicU64::new(0));
    let heard = progress.clone();
    let pass = retention
        .pass(herald::domain::now(), &CancellationToken::new(), &mut move |_, _| {
            heard.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .expect("pass");
    assert_eq!(pass, Pass::Done(expected));
    assert!(progress.load(Ordering::Relaxed) > 4 * 2, "several batches of 7 rows per kind");

    let store = &app.state.store;
    assert_all(store, &old_succeeded, (false, false, 0, None), "expired, succeeded").await;
    assert_all(store, &old_dead, (false, false, 0, None), "expired, dead").await;
    assert_all(store, &old_alone, (false, false, 0, None), "expired event without deliveries").await;
    assert_all(store, &old_pending, (true, true, 1, None), "pending: kept, its body cleared").await;
    assert_all(store, &old_queued, (true, true, 0, None), "queued: kept").await;
    assert_all(store, &old_unpublished, (true, false, 0, None), "unpublished: kept").await;
    assert_all(store, &recent_15, (true, true, 0, None), "ended 15 s ago: attempt gone, rest kept").await;
    assert_all(store, &recent_7, (true, true, 1, None), "7 s ago: body cleared").await;
    assert_all(store, &fresh, (true, true, 1, Some("a response body")), "1 s ago: untouched").await;
    assert_all(store, &shared_waiting, (true, true, 0, None), "an event with a waiting delivery: kept").await;
    for seeded in &shared_done {
        let delivery = store.get_delivery(seeded.delivery.expect("delivery")).await.expect("read");
        assert!(delivery.is_none(), "its expired finished delivery went");
    }
    for seeded in old_pending.iter().chain(&shared_waiting) {
        let delivery =
            store.get_delivery(seeded.delivery.expect("delivery")).await.expect("read").expect("kept");
        assert!(matches!(delivery.status, DeliveryStatus::Pending | DeliveryStatus::Queued), "{delivery:?}");
    }
    // Nothing is left to remove.
    assert_eq!(retention.dry_run(herald::domain::now()).await.expect("dry run"), Removed::default());
    let again = retention.pass(herald::domain::now(), &CancellationToken::new(), &mut |_, _| {}).await;
    assert_eq!(again.expect("pass"), Pass::Done(Removed::default()));
}

async fn ingestion_and_delivery_carry_on_during_a_pass(mode: Mode) {
    let app = TestApp::spawn_with(mode, |s| {
        windows(s, false);
        s.retention.batch_size = 100;
        s.retention.batch_pause = HumanDuration(Duration::from_millis(20));
    })
    .await;
    let archive = archive_webhook(&app).await;
    let expired = 3_000;
    let old = seed(&app, archive, expired, ago(60), true, Some(Left::Succeeded)).await;
    let receiver = Receiver::verifying(Accepts::XSignature).await;
    app.subscribe(&receiver, json!(["item.created"])).await;

    let retention = retention_of(&app);
    let batches = Arc::new(AtomicU64::new(0));
    let heard = batches.clone();
    let pass = tokio::spawn(async move {
        retention
            .pass(herald::domain::now(), &CancellationToken::new(), &mut move |_, _| {
                heard.fetch_add(1, Ordering::Relaxed);
            })
            .await
    });
    while batches.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 120 batches with 20 ms between them: the pass runs for seconds, far longer than these sends.
    let live = 40;
    for i in 0..live {
        app.send_event("item.created", json!({"i": i})).await;
    }
    assert!(!pass.is_finished(), "the events were sent while the pass ran");
    let arrivals = receiver.wait_for(live, Duration::from_secs(30)).await;
    let outcome = pass.await.expect("pass task").expect("pass");
    let n = expired as u64;
    let Pass::Done(removed) = outcome else { panic!("the pass ran to its end: {outcome:?}") };
    assert_eq!(
        removed,
        Removed { statistics: removed.statistics, response_bodies: n, attempts: n, deliveries: n, events: n }
    );
    assert!(arrivals.iter().all(|a| a.x_signature_ok && a.standard_ok), "every live delivery verified");
    let mut seen: Vec<i64> = arrivals.iter().map(|a| a.json()["data"]["i"].as_i64().expect("i")).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), live, "every live event arrived");
    assert_all(&app.state.store, &old[..5], (false, false, 0, None), "expired rows").await;
}

async fn the_stage_runs_by_itself_and_one_instance_holds_the_lock(mode: Mode) {
    let app = TestApp::spawn_with(mode, |s| {
        windows(s, true);
        s.retention.interval = HumanDuration(Duration::from_millis(200));
    })
    .await;
    let archive = archive_webhook(&app).await;
    let old = seed(&app, archive, 20, ago(30), true, Some(Left::Dead)).await;
    let waiting = seed(&app, archive, 5, ago(30), true, Some(Left::Pending)).await;
    // Until a pass that started after both were seeded has run.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.state.store.get_event(old[19].event).await.expect("read").is_some()
        || state_of(&app.state.store, waiting[4]).await.3.is_some()
    {
        assert!(std::time::Instant::now() < deadline, "the retention stage removed the expired rows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all(&app.state.store, &old, (false, false, 0, None), "removed by the stage").await;
    assert_all(&app.state.store, &waiting, (true, true, 1, None), "kept by the stage").await;

    // A second store on the same database, as a second API instance has. The stage holds the lock
    // only during its passes (milliseconds here), so it is free within a few tries.
    let other = app.database.store().await;
    let held = loop {
        if let Some(lock) = other.try_retention_lock().await.expect("lock") {
            break lock;
        }
        assert!(std::time::Instant::now() < deadline, "the stage released the retention lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let busy = Retention::new(app.state.store.clone(), app.state.settings.retention.clone());
    let pass =
        busy.pass(herald::domain::now(), &CancellationToken::new(), &mut |_, _| {}).await.expect("pass");
    match mode {
        Mode::Services => assert_eq!(pass, Pass::Busy, "PostgreSQL: one instance at a time"),
        Mode::Embedded => assert!(matches!(pass, Pass::Done(_)), "SQLite: one process per file, no lock"),
    }
    drop(held);
    // Free again once dropped (the stage may take it for a moment: try again then).
    loop {
        let pass = busy.pass(herald::domain::now(), &CancellationToken::new(), &mut |_, _| {}).await;
        if matches!(pass.expect("pass"), Pass::Done(_)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the retention lock was released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rollups behind `GET /webhooks/{id}/stats` go once their minute is older than the attempts
/// window: a webhook's 3-hour-old attempts stop counting, another's attempts of a second ago still count.
async fn statistics_go_with_the_attempts_window(mode: Mode) {
    let app = TestApp::spawn_with(mode, |s| windows(s, false)).await;
    let (old, recent) = (archive_webhook(&app).await, archive_webhook(&app).await);
    let n = 6;
    seed(&app, old, n, ago(3 * 3600), true, Some(Left::Succeeded)).await;
    seed(&app, recent, n, ago(1), true, Some(Left::Dead)).await;
    let attempts = |webhook: Uuid| {
        let app = &app;
        async move {
            let (status, stats) = app
                .admin(reqwest::Method::GET, &format!("/api/v1/webhooks/{webhook}/stats?window=24h"), None)
                .await;
            assert_eq!(status, reqwest::StatusCode::OK, "{stats}");
            stats["attempts"].as_u64().expect("attempts")
        }
    };
    assert_eq!((attempts(old).await, attempts(recent).await), (n as u64, n as u64), "both counted at first");

    let retention = retention_of(&app);
    assert_eq!(
        retention.dry_run(herald::domain::now()).await.expect("dry run").statistics,
        1,
        "one minute of one webhook"
    );
    let pass =
        retention.pass(herald::domain::now(), &CancellationToken::new(), &mut |_, _| {}).await.expect("pass");
    let Pass::Done(removed) = pass else { panic!("the pass ran to its end: {pass:?}") };
    assert_eq!(removed.statistics, 1);
    assert_eq!((attempts(old).await, attempts(recent).await), (0, n as u64), "only the expired minute went");
}
