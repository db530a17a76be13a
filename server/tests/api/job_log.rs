//! `subscription jobLog(jobId, after)` and `Job.log(after:)`: a job's log lines, live,
//! resumable by cursor with no gap and no duplicate, bounded (lines per job, line
//! length, lines per second) with markers saying what was dropped, for the job's
//! owner and admins only. On PostgreSQL the job runs in a separate `reelhouse
//! worker` process and its lines reach the API's subscriber through Redis.

use std::time::Duration;

use entities::{job, JobKind, JobStatus, Role};
use futures::StreamExt;
use reelhouse::jobs::runner::{JobError, JobReporter};
use reelhouse::jobs::{enqueue, queue, NewJob, DEFAULT_PRIORITY};
use sea_orm::{DatabaseConnection, EntityTrait};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{backend, eventually, spawn_app_with, Backend, TestApp, TestUser};
use crate::subscriptions::{connect, send, Socket};

const LEASE: Duration = Duration::from_secs(60);
const LOG_QUERY: &str = "subscription($job: ID!, $after: String) { jobLog(jobId: $job, after: $after) { cursor at level message dropped jobStatus } }";

async fn subscribe_log(app: &TestApp, user: Option<&TestUser>, job: &str, after: Option<&str>) -> Socket {
    let mut socket = connect(app, "graphql-transport-ws").await;
    let payload = match user {
        Some(user) => json!({ "authorization": format!("Bearer {}", user.access_token) }),
        None => json!({}),
    };
    send(&mut socket, json!({ "type": "connection_init", "payload": payload })).await;
    assert_eq!(crate::subscriptions::next_json(&mut socket).await["type"], "connection_ack");
    let variables = json!({ "job": job, "after": after });
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": LOG_QUERY, "variables": variables } }),
    )
    .await;
    socket
}

/// The next line of the stream; `Err` with the message for an error or the end
/// (`complete`). A real encode may go quiet for a while between stages: the wait is
/// long, and only bounds a hang.
async fn next_line(socket: &mut Socket) -> Result<Value, Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(180), socket.next())
            .await
            .expect("a message within the timeout")
            .expect("socket open")
            .expect("valid frame");
        let message: Value = match frame {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        };
        return match message["type"].as_str() {
            Some("next") if message["payload"]["errors"].is_null() => Ok(message["payload"]["data"]["jobLog"].clone()),
            _ => Err(message),
        };
    }
}

/// Every line up to and including the final one (`jobStatus` set), then the end.
async fn lines_until_final(socket: &mut Socket) -> Vec<Value> {
    let mut lines = Vec::new();
    loop {
        let line =
            next_line(socket).await.unwrap_or_else(|end| panic!("ended before the final line: {end}\n{lines:#?}"));
        let last = !line["jobStatus"].is_null();
        lines.push(line);
        if last {
            break;
        }
    }
    let end = next_line(socket).await.expect_err("nothing after the final line");
    assert_eq!(end["type"], "complete", "{end}");
    lines
}

fn error_code(message: &Value) -> Option<&str> {
    message["payload"]["errors"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| message["payload"][0]["extensions"]["code"].as_str())
}

fn cursors(lines: &[Value]) -> Vec<i64> {
    lines.iter().map(|l| l["cursor"].as_str().unwrap().parse().unwrap()).collect()
}

async fn job_status(db: &DatabaseConnection, id: Uuid) -> JobStatus {
    job::Entity::find_by_id(id).one(db).await.unwrap().unwrap().status
}

async fn leased_job(app: &TestApp, owner: Uuid) -> (Uuid, Uuid) {
    let job = enqueue(
        &app.state.db,
        NewJob {
            kind: JobKind::Transcode,
            video_id: None,
            owner_id: Some(owner),
            priority: DEFAULT_PRIORITY,
            payload: json!({ "preset": "MEDIUM" }),
            max_attempts: 3,
        },
    )
    .await
    .unwrap();
    let leased = queue::lease(&app.state.db, "box-7f3a", LEASE, &app.state.settings.jobs).await.unwrap().unwrap();
    assert_eq!(leased.job.id, job.id);
    (job.id, leased.token)
}

async fn user(app: &TestApp, role: Role) -> (TestUser, Uuid) {
    let user = app.create_user_with_role(role).await;
    let id = Uuid::parse_str(&user.id).unwrap();
    (user, id)
}

#[actix_web::test]
async fn a_transcodes_log_streams_live_resumes_by_cursor_without_gap_or_repeat_and_ends_with_its_state() {
    // PostgreSQL: the API runs no worker; a `reelhouse worker` process runs the job
    // and its lines reach this subscriber through Redis. SQLite: the in-process
    // worker. The API's own look at the table is made rare (one a minute), so the
    // lines arrive by the notices of the process that wrote them.
    let distributed = backend() == Backend::Postgres;
    let app = spawn_app_with(|s| {
        s.workers.embedded = !distributed;
        s.jobs.log_poll_ms = 60_000;
        s.media.speed_preset = "ultrafast".into();
        s.media.segment_seconds = 1;
        crate::uploads::short_s3_prefix(s);
    })
    .await;
    let db = app.state.db.clone();
    let owner = app.register_user().await;
    let video = crate::e2e::create_video(&app, &owner, "PRIVATE").await;
    crate::worker_process::upload_landscape_clip(&app, &owner, &video).await;
    let body = crate::e2e::gql(&app, &owner, "{ jobs(first: 1) { nodes { id videoId } } }", json!({})).await;
    assert_eq!(body["data"]["jobs"]["nodes"][0]["videoId"], video.as_str(), "{body}");
    let job_id = body["data"]["jobs"]["nodes"][0]["id"].as_str().unwrap().to_string();
    let id = Uuid::parse_str(&job_id).unwrap();

    let mut first = subscribe_log(&app, Some(&owner), &job_id, None).await;
    let worker = if distributed {
        let redis_url = app.state.settings.redis.url.as_ref().unwrap().expose().to_string();
        Some(crate::worker_process::quick_redis_worker(&app.state.settings, &redis_url))
    } else {
        None
    };

    // Live: the encoding stage's line arrives while the job is still running.
    let mut seen = Vec::new();
    loop {
        let line = next_line(&mut first).await.unwrap_or_else(|end| panic!("{end}\n{seen:#?}"));
        assert!(line["jobStatus"].is_null(), "the job ended before its encoding was seen: {seen:#?}");
        let encoding = line["message"].as_str().unwrap().starts_with("encoding:");
        seen.push(line);
        if encoding {
            assert_eq!(job_status(&db, id).await, JobStatus::Running, "a line of a running job, live");
            break;
        }
    }
    drop(first);
    let last_seen = cursors(&seen).last().copied().unwrap();
    // Lines are written while nobody listens.
    assert!(
        eventually(1200, || async {
            reelhouse::repo::job_logs::lines(&db, id).await.unwrap().last().is_some_and(|l| l.seq > last_seen + 1)
        })
        .await,
        "the job logs on"
    );

    // Resume after the last line seen: the rest, once each, then the final state.
    let mut second = subscribe_log(&app, Some(&owner), &job_id, Some(&last_seen.to_string())).await;
    let rest = lines_until_final(&mut second).await;
    if let Some((mut child, dir)) = worker {
        crate::worker_process::sigterm(&child);
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default());
    }
    let (last, rest) = rest.split_last().unwrap();
    assert_eq!(last["jobStatus"], "SUCCEEDED", "{last}");
    assert_eq!(last["message"], "job ended: SUCCEEDED");
    assert_eq!(last["cursor"], rest.last().unwrap()["cursor"], "the final line repeats the last cursor");

    let streamed: Vec<Value> = seen.iter().chain(rest).cloned().collect();
    let numbers = cursors(&streamed);
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "no gap, no repeat: {streamed:#?}");
    assert!(streamed.iter().all(|l| l["dropped"].is_null()), "nothing was dropped");

    // Exactly the stored log, which `Job.log` also serves.
    let body = crate::e2e::gql(
        &app,
        &owner,
        "query($id: ID!) { job(id: $id) { status log { cursor level message } } }",
        json!({ "id": job_id }),
    )
    .await;
    let stored = body["data"]["job"]["log"].as_array().unwrap();
    let pairs = |lines: &[Value]| -> Vec<(String, String)> {
        lines.iter().map(|l| (l["cursor"].as_str().unwrap().into(), l["message"].as_str().unwrap().into())).collect()
    };
    assert_eq!(pairs(&streamed), pairs(stored));
    let messages: Vec<&str> = streamed.iter().map(|l| l["message"].as_str().unwrap()).collect();
    for wanted in
        ["attempt 1 of", "probing:", "probed:", "encoding:", "encoders: HLS ladder x264enc", "uploading:", "done:"]
    {
        assert!(messages.iter().any(|m| m.starts_with(wanted)), "no {wanted:?} line: {messages:#?}");
    }
    // The owner is not told which worker host ran it.
    assert!(messages.iter().any(|m| m.contains("leased by a worker")), "{messages:#?}");

    // A job that has ended: what is after the cursor, then its state, then the end.
    let mut again = subscribe_log(&app, Some(&owner), &job_id, Some(&numbers.last().unwrap().to_string())).await;
    let tail = lines_until_final(&mut again).await;
    assert_eq!(tail.len(), 1, "{tail:#?}");
    assert_eq!(tail[0]["jobStatus"], "SUCCEEDED");
}

#[actix_web::test]
async fn a_stranger_gets_the_answer_of_a_job_that_does_not_exist() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let (owner, owner_id) = user(&app, Role::User).await;
    let (stranger, _) = user(&app, Role::User).await;
    let (admin, _) = user(&app, Role::Admin).await;
    let (job_id, _) = leased_job(&app, owner_id).await;
    let job_id = job_id.to_string();

    let mut refusals = Vec::new();
    for (who, job) in [
        (&stranger, job_id.clone()),
        (&stranger, Uuid::now_v7().to_string()),
        (&owner, Uuid::now_v7().to_string()),
        (&stranger, "not-an-id".to_string()),
    ] {
        let mut socket = subscribe_log(&app, Some(who), &job, None).await;
        let error = next_line(&mut socket).await.expect_err("refused");
        assert_eq!(error_code(&error), Some("NOT_FOUND"), "{error}");
        refusals.push(error["payload"]["errors"][0]["message"].clone());
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "one answer for all: {refusals:?}");

    let mut anonymous = subscribe_log(&app, None, &job_id, None).await;
    let error = next_line(&mut anonymous).await.expect_err("refused");
    assert_eq!(error_code(&error), Some("UNAUTHENTICATED"), "{error}");
    let mut bad_cursor = subscribe_log(&app, Some(&owner), &job_id, Some("yesterday")).await;
    let error = next_line(&mut bad_cursor).await.expect_err("refused");
    assert_eq!(error_code(&error), Some("BAD_USER_INPUT"), "{error}");

    // The owner and admins read it; the worker's host only admins.
    let mut as_owner = subscribe_log(&app, Some(&owner), &job_id, None).await;
    let line = next_line(&mut as_owner).await.unwrap();
    assert_eq!(line["message"], "attempt 1 of 3 leased by a worker");
    assert_eq!(line["cursor"], "1");
    let mut as_admin = subscribe_log(&app, Some(&admin), &job_id, None).await;
    let line = next_line(&mut as_admin).await.unwrap();
    assert_eq!(line["message"], "attempt 1 of 3 leased by box-7f3a");
    // Nor does `Job.log` show a stranger anything.
    let (_, body) = app
        .graphql_as(&stranger.bearer(), "query($id: ID!) { job(id: $id) { log { message } } }", json!({ "id": job_id }))
        .await;
    assert_eq!(body["data"]["job"], Value::Null, "{body}");
}

#[actix_web::test]
async fn the_log_keeps_its_newest_lines_cuts_long_ones_and_says_what_a_reader_missed() {
    // Lines written with no notice at all (as by a process that cannot reach this
    // one) reach the subscriber through its own look at the table.
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.jobs.log_max_lines = 5;
        s.jobs.log_max_line_chars = 100;
        s.jobs.log_poll_ms = 100;
    })
    .await;
    let db = app.state.db.clone();
    let bounds = queue::LogBounds::of(&app.state.settings.jobs);
    let (owner, owner_id) = user(&app, Role::User).await;
    let (id, token) = leased_job(&app, owner_id).await;
    let job_id = id.to_string();
    // The lease line is 1; then 2..=10, the 6th of them 500 characters long.
    for n in 2..=10 {
        let message = if n == 7 { format!("long {}", "x".repeat(495)) } else { format!("line {n}") };
        queue::append_log(&db, id, entities::LogLevel::Info, message, bounds).await.unwrap();
    }

    let mut socket = subscribe_log(&app, Some(&owner), &job_id, None).await;
    let marker = next_line(&mut socket).await.unwrap();
    assert_eq!(marker["dropped"], 5, "lines 1..=5 are gone: {marker}");
    assert_eq!(marker["cursor"], "5");
    assert_eq!(marker["level"], "WARN");
    let kept: Vec<Value> = {
        let mut kept = Vec::new();
        for _ in 6..=10 {
            kept.push(next_line(&mut socket).await.unwrap());
        }
        kept
    };
    assert_eq!(cursors(&kept), vec![6, 7, 8, 9, 10]);
    let long = kept[1]["message"].as_str().unwrap();
    assert!(long.starts_with("long xxx"), "{long}");
    assert!(long.ends_with(" … [400 more characters dropped]"), "{long}");
    assert_eq!(long.chars().count(), 100 + " … [400 more characters dropped]".chars().count());

    // Live, with no notice: found by the subscriber's poll.
    queue::append_log(&db, id, entities::LogLevel::Warn, "line 11\nwith a newline".into(), bounds).await.unwrap();
    let line = next_line(&mut socket).await.unwrap();
    assert_eq!((line["cursor"].as_str(), line["message"].as_str()), (Some("11"), Some("line 11 with a newline")));
    assert_eq!(line["level"], "WARN");

    // Resuming inside what is kept: no marker. Before it: one marker for the rest.
    let mut resumed = subscribe_log(&app, Some(&owner), &job_id, Some("8")).await;
    let lines = [
        next_line(&mut resumed).await.unwrap(),
        next_line(&mut resumed).await.unwrap(),
        next_line(&mut resumed).await.unwrap(),
    ];
    assert_eq!(cursors(&lines), vec![9, 10, 11]);
    assert!(lines.iter().all(|l| l["dropped"].is_null()));
    let mut late = subscribe_log(&app, Some(&owner), &job_id, Some("2")).await;
    let marker = next_line(&mut late).await.unwrap();
    assert_eq!(
        (marker["dropped"].as_i64(), marker["cursor"].as_str()),
        (Some(4), Some("6")),
        "3..=6 are gone: {marker}"
    );
    assert_eq!(next_line(&mut late).await.unwrap()["cursor"], "7");
    let body = crate::e2e::gql(
        &app,
        &owner,
        "query($id: ID!) { job(id: $id) { log(after: \"8\") { cursor } all: log { cursor dropped } } }",
        json!({ "id": job_id }),
    )
    .await;
    assert_eq!(
        body["data"]["job"]["log"],
        json!([{ "cursor": "9" }, { "cursor": "10" }, { "cursor": "11" }]),
        "{body}"
    );
    assert_eq!(body["data"]["job"]["all"][0], json!({ "cursor": "6", "dropped": 6 }), "{body}");

    // The job ends (cancelled while running): its last line, then its state, then the end.
    queue::fail(&db, &app.state.publisher(), &app.state.settings.jobs, id, token, &JobError::Cancelled).await.unwrap();
    let rest = lines_until_final(&mut socket).await;
    let (last, before) = rest.split_last().unwrap();
    assert_eq!(cursors(before), vec![12], "{rest:#?}");
    assert_eq!(last["jobStatus"], "CANCELLED", "{last}");
    assert_eq!(last["cursor"], "12");
}

#[actix_web::test]
async fn a_chatty_run_is_held_to_its_line_rate_and_the_log_says_how_many_lines_were_suppressed() {
    use reelhouse::jobs::reporter::QueueReporter;

    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.jobs.log_lines_per_sec = 1;
        s.jobs.log_burst = 3;
    })
    .await;
    let db = app.state.db.clone();
    let (owner, owner_id) = user(&app, Role::User).await;
    let (id, token) = leased_job(&app, owner_id).await;
    let mut socket = subscribe_log(&app, Some(&owner), &id.to_string(), None).await;
    assert_eq!(next_line(&mut socket).await.unwrap()["cursor"], "1");

    let reporter = QueueReporter::start(db.clone(), app.state.publisher(), id, None, token, &app.state.settings.jobs);
    for n in 0..40 {
        reporter.log(entities::LogLevel::Debug, format!("chatter {n}"));
    }
    // The end of the run reports what it held back.
    drop(reporter);
    let mut chatter: u64 = 0;
    let suppressed = loop {
        let line = next_line(&mut socket).await.unwrap();
        let message = line["message"].as_str().unwrap();
        if message.starts_with("chatter ") {
            chatter += 1;
            continue;
        }
        let count: u64 = message.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{message}"));
        assert!(
            message.ends_with("log line(s) suppressed: more than 1 a second (jobs.log_lines_per_sec)"),
            "{message}"
        );
        assert_eq!(line["level"], "WARN");
        break count;
    };
    assert!(chatter >= 3, "the burst goes through: {chatter}");
    assert!(chatter < 40, "not every line: {chatter}");
    assert_eq!(chatter + suppressed, 40, "every line is stored or counted");
    let stored = reelhouse::repo::job_logs::lines(&db, id).await.unwrap();
    assert_eq!(stored.len() as u64, 1 + chatter + 1);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reelhouse_job_log_lines_suppressed_total"), "{metrics}");
}
