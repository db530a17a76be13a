//! `videoProgress` and `videoEvents` over a real graphql-transport-ws socket: the
//! snapshot comes first, stored events are never lost or doubled (gaps are filled
//! from the outbox, `after:` resumes), and only those allowed receive anything.
//!
//! Events are produced the way the server produces them: `repo::outbox::record` in a
//! transaction, then `Publisher::publish` on the app's real bus.

use chrono::Utc;
use entities::{video, VideoStatus, Visibility};
use reelhouse::events::{self, EventDetail, EventKind, ProgressInfo, Publisher};
use sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp, TestUser};
use crate::subscriptions::{connect, next_json, send, Socket};

const EVENT_FIELDS: &str =
    "cursor videoId kind seq status snapshot error rendition { name } progress { percent stage }";

async fn app() -> TestApp {
    spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.ws_recheck_ms = 100;
    })
    .await
}

pub(crate) async fn insert_video(
    app: &TestApp,
    owner: &TestUser,
    visibility: Visibility,
    status: VideoStatus,
) -> video::Model {
    let now = Utc::now();
    video::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(Uuid::parse_str(&owner.id).unwrap()),
        title: Set("clip".into()),
        description: Set(String::new()),
        tags: Set(video::Tags::default()),
        visibility: Set(visibility),
        status: Set(status),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap()
}

/// Change the video's status, store the event and (unless `publish` is false,
/// simulating a lost publish) put it on the bus. Returns the stored event.
pub(crate) async fn transition(
    app: &TestApp,
    video_id: Uuid,
    status: VideoStatus,
    kind: EventKind,
    rendition: Option<&str>,
    publish: bool,
) -> events::DomainEvent {
    let txn = app.state.db.begin().await.unwrap();
    let current = video::Entity::find_by_id(video_id).one(&txn).await.unwrap().unwrap();
    let mut active: video::ActiveModel = current.into();
    active.status = Set(status);
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await.unwrap();
    let detail = EventDetail { rendition: rendition.map(str::to_string), ..Default::default() };
    let event = reelhouse::repo::outbox::record(&txn, &updated, kind, detail).await.unwrap();
    txn.commit().await.unwrap();
    if publish {
        publisher(app).publish(event.clone());
    }
    event
}

fn publisher(app: &TestApp) -> Publisher {
    app.state.publisher()
}

/// A published transition on `app` (used across instances by the fan-out tests).
pub(crate) async fn transition_on(
    app: &TestApp,
    video_id: Uuid,
    status: VideoStatus,
    kind: EventKind,
    rendition: Option<&str>,
) -> events::DomainEvent {
    transition(app, video_id, status, kind, rendition, true).await
}

pub(crate) async fn subscribe(app: &TestApp, user: Option<&TestUser>, query: &str, variables: Value) -> Socket {
    let mut socket = connect(app, "graphql-transport-ws").await;
    let payload = match user {
        Some(user) => json!({ "authorization": format!("Bearer {}", user.access_token) }),
        None => json!({}),
    };
    send(&mut socket, json!({ "type": "connection_init", "payload": payload })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
    socket
}

/// The next subscription event, or `Err(message)` for `error`/`complete`.
pub(crate) async fn next_event(socket: &mut Socket) -> Result<Value, Value> {
    let message = next_json(socket).await;
    match message["type"].as_str() {
        Some("next") if message["payload"]["errors"].is_null() => {
            let data = &message["payload"]["data"];
            Ok(data.as_object().and_then(|o| o.values().next()).cloned().unwrap_or(Value::Null))
        }
        _ => Err(message),
    }
}

/// `extensions.code` of an error delivered as a `next` message.
fn error_code_of(message: &Value) -> Option<&str> {
    assert_eq!(message["type"], "next", "{message}");
    message["payload"]["errors"][0]["extensions"]["code"].as_str()
}

pub(crate) fn progress_query() -> String {
    format!("subscription($id: ID!) {{ videoProgress(videoId: $id) {{ {EVENT_FIELDS} }} }}")
}

pub(crate) fn events_query() -> String {
    format!("subscription($id: ID, $after: String) {{ videoEvents(videoId: $id, after: $after) {{ {EVENT_FIELDS} }} }}")
}

/// Wait until the bus has `n` subscribers, so a publish cannot race the subscribe.
pub(crate) async fn wait_for_subscribers(app: &TestApp, n: usize) {
    let ok = crate::helpers::eventually(100, || async {
        app.state.hubs.event_bus.addr().send(reelhouse::events::bus::SubscriberCount).await.unwrap() >= n
    })
    .await;
    assert!(ok, "subscriber never attached");
}

#[actix_web::test]
async fn progress_starts_with_a_snapshot_and_ends_with_exactly_one_ready() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    transition(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;

    let mut socket = subscribe(&app, Some(&owner), &progress_query(), json!({ "id": video.id.to_string() })).await;
    let snapshot = next_event(&mut socket).await.unwrap();
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["status"], "PROCESSING");
    assert_eq!(snapshot["kind"], "UPLOADED");
    assert_eq!(snapshot["seq"], 1);
    wait_for_subscribers(&app, 1).await;
    // Connected subscribers are visible to operators.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let connected = metrics
        .lines()
        .find_map(|l| l.strip_prefix("reelhouse_subscribers ").and_then(|v| v.trim().parse::<f64>().ok()));
    assert!(connected.is_some_and(|n| n >= 1.0), "reelhouse_subscribers missing or zero in /metrics");

    let stored = transition(&app, video.id, VideoStatus::Processing, EventKind::Processing, None, true).await;
    let progress = ProgressInfo { percent: 42.0, stage: "encoding".into(), ..Default::default() };
    publisher(&app).publish(events::progress_event(
        &stored_video(&app, video.id).await,
        stored.seq,
        Uuid::now_v7(),
        progress,
    ));
    transition(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p"), true).await;
    // Published twice (a retried publish): delivered once.
    let ready = transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    publisher(&app).publish(ready.clone());

    let kinds: Vec<Value> = vec![
        next_event(&mut socket).await.unwrap(),
        next_event(&mut socket).await.unwrap(),
        next_event(&mut socket).await.unwrap(),
        next_event(&mut socket).await.unwrap(),
    ];
    let names: Vec<&str> = kinds.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["PROCESSING", "PROGRESS", "RENDITION_READY", "READY"]);
    assert_eq!(kinds[1]["progress"]["percent"], 42.0);
    assert_eq!(kinds[2]["rendition"]["name"], "360p");
    assert_eq!(kinds[3]["cursor"], ready.cursor.unwrap().to_string());
    assert!(kinds.iter().all(|e| e["snapshot"] == false));
    // The stream completes after READY: no second READY can follow.
    let end = next_event(&mut socket).await.unwrap_err();
    assert_eq!(end["type"], "complete", "{end}");
}

async fn stored_video(app: &TestApp, id: Uuid) -> video::Model {
    video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap()
}

#[actix_web::test]
async fn a_late_subscriber_to_a_ready_video_gets_one_ready_snapshot_and_the_end() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;

    // Anonymous viewers may watch a public video.
    let mut socket = subscribe(&app, None, &progress_query(), json!({ "id": video.id.to_string() })).await;
    let snapshot = next_event(&mut socket).await.unwrap();
    assert_eq!((snapshot["kind"].as_str(), snapshot["status"].as_str()), (Some("READY"), Some("READY")));
    assert_eq!(snapshot["snapshot"], true);
    assert_eq!(next_event(&mut socket).await.unwrap_err()["type"], "complete");
}

#[actix_web::test]
async fn a_stranger_gets_an_error_and_no_events_for_a_private_video() {
    let app = app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;

    for user in [Some(&stranger), None] {
        let mut socket = subscribe(&app, user, &progress_query(), json!({ "id": video.id.to_string() })).await;
        let error = next_event(&mut socket).await.unwrap_err();
        assert_eq!(error_code_of(&error), Some("NOT_FOUND"), "{error}");
        assert_eq!(next_event(&mut socket).await.unwrap_err()["type"], "complete");
    }
    // The all-videos feed of a stranger never carries the private video's events.
    let mut feed = subscribe(&app, Some(&stranger), &events_query(), json!({})).await;
    wait_for_subscribers(&app, 1).await;
    transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    let public = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition(&app, public.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    let first = next_event(&mut feed).await.unwrap();
    assert_eq!(first["videoId"], public.id.to_string(), "the first event the stranger sees is the public one");

    // Made private since: a stranger replaying the outbox no longer sees its past
    // events; a video still public is replayed.
    let mut active: video::ActiveModel = stored_video(&app, public.id).await.into();
    active.visibility = Set(Visibility::Private);
    active.update(&app.state.db).await.unwrap();
    let still_public = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    transition(&app, still_public.id, VideoStatus::Ready, EventKind::Ready, None, false).await;
    let mut replay = subscribe(&app, Some(&stranger), &events_query(), json!({ "after": "0" })).await;
    let first = next_event(&mut replay).await.unwrap();
    assert_eq!(first["videoId"], still_public.id.to_string(), "{first}");
}

#[actix_web::test]
async fn after_cursor_resumes_with_no_gap_and_no_duplicate() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let first = transition(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;
    transition(&app, video.id, VideoStatus::Processing, EventKind::Processing, None, true).await;
    let third =
        transition(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p"), true).await;

    let vars = json!({ "id": video.id.to_string(), "after": first.cursor.unwrap().to_string() });
    let mut socket = subscribe(&app, Some(&owner), &events_query(), vars).await;
    let replayed = [next_event(&mut socket).await.unwrap(), next_event(&mut socket).await.unwrap()];
    assert_eq!(replayed.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    wait_for_subscribers(&app, 1).await;
    // Live: the third event again (a duplicate publish) and then the fourth.
    publisher(&app).publish(third);
    let ready = transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    let live = next_event(&mut socket).await.unwrap();
    assert_eq!((live["seq"].as_i64(), live["kind"].as_str()), (Some(ready.seq), Some("READY")));

    // A bad cursor is a clear error.
    let mut bad = subscribe(&app, Some(&owner), &events_query(), json!({ "after": "not-a-cursor" })).await;
    let error = next_event(&mut bad).await.unwrap_err();
    assert_eq!(error_code_of(&error), Some("BAD_USER_INPUT"), "{error}");
}

/// A client that reconnects after a dropped socket (e.g. its token expired) with the
/// cursor of the newest event has nothing to replay: the re-checks must not mistake
/// that for a gap back to the first event and send the history again.
#[actix_web::test]
async fn resuming_at_the_newest_cursor_replays_nothing_and_then_goes_on_live() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    transition(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;
    let newest = transition(&app, video.id, VideoStatus::Processing, EventKind::Processing, None, true).await;

    let vars = json!({ "id": video.id.to_string(), "after": newest.cursor.unwrap().to_string() });
    let mut socket = subscribe(&app, Some(&owner), &events_query(), vars).await;
    wait_for_subscribers(&app, 1).await;
    // Several re-checks (every 100 ms here) pass with nothing new to send.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ready = transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    let live = next_event(&mut socket).await.unwrap();
    assert_eq!((live["seq"].as_i64(), live["kind"].as_str()), (Some(ready.seq), Some("READY")), "{live}");
    assert_eq!(live["snapshot"], false);
}

#[actix_web::test]
async fn a_stored_event_whose_publish_was_lost_is_filled_in_from_the_outbox() {
    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let mut socket = subscribe(&app, Some(&owner), &progress_query(), json!({ "id": video.id.to_string() })).await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
    wait_for_subscribers(&app, 1).await;

    // RENDITION_READY is stored but never published; READY arrives live.
    transition(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p"), false).await;
    transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    let kinds = [
        next_event(&mut socket).await.unwrap()["kind"].clone(),
        next_event(&mut socket).await.unwrap()["kind"].clone(),
    ];
    assert_eq!(kinds, [json!("RENDITION_READY"), json!("READY")]);
}

#[actix_web::test]
async fn making_the_video_private_ends_a_strangers_stream() {
    let app = app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    let mut socket = subscribe(&app, Some(&stranger), &progress_query(), json!({ "id": video.id.to_string() })).await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);

    let mut active: video::ActiveModel = stored_video(&app, video.id).await.into();
    active.visibility = Set(Visibility::Private);
    active.update(&app.state.db).await.unwrap();
    // The periodic re-check (100 ms here) ends the stream with NOT_FOUND.
    let end = next_event(&mut socket).await.unwrap_err();
    assert_eq!(error_code_of(&end), Some("NOT_FOUND"), "{end}");
    assert_eq!(next_event(&mut socket).await.unwrap_err()["type"], "complete");
}

#[actix_web::test]
async fn pruned_events_keep_sequences_going_and_expire_older_cursors_with_a_clear_code() {
    use entities::event_outbox;
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};

    let app = app().await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Processing).await;
    let first = transition_on(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("240p")).await;
    let second = transition_on(&app, video.id, VideoStatus::Processing, EventKind::RenditionReady, Some("360p")).await;
    // The first two are past retention; then a fresh one.
    age_every_stored_event(&app).await;
    let ready = transition_on(&app, video.id, VideoStatus::Ready, EventKind::Ready, None).await;
    let cutoff = Utc::now() - chrono::TimeDelta::days(30);
    assert_eq!(reelhouse::repo::outbox::prune(&app.state.db, cutoff).await.unwrap(), 2);
    assert_eq!(reelhouse::repo::outbox::prune(&app.state.db, cutoff).await.unwrap(), 0, "pruning again finds nothing");
    let kept: Vec<i64> = event_outbox::Entity::find()
        .filter(event_outbox::Column::VideoId.eq(video.id))
        .order_by_asc(event_outbox::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.seq)
        .collect();
    assert_eq!(kept, [ready.seq]);

    // The video's sequence goes on from where it was, not from the kept rows.
    let failed = transition_on(&app, video.id, VideoStatus::Failed, EventKind::Failed, None).await;
    assert_eq!((first.seq, second.seq, ready.seq, failed.seq), (1, 2, 3, 4));

    // A cursor whose successors were pruned cannot resume gap-free: a clear code.
    let cursor = |event: &events::DomainEvent| event.cursor.unwrap().to_string();
    let vars = json!({ "id": video.id.to_string(), "after": cursor(&first) });
    let mut stale = subscribe(&app, Some(&owner), &events_query(), vars).await;
    let error = next_event(&mut stale).await.unwrap_err();
    assert_eq!(error_code_of(&error), Some("CURSOR_EXPIRED"), "{error}");
    // The newest pruned cursor is still whole: everything after it is kept.
    let vars = json!({ "id": video.id.to_string(), "after": cursor(&second) });
    let mut resumed = subscribe(&app, Some(&owner), &events_query(), vars).await;
    let got = [next_event(&mut resumed).await.unwrap(), next_event(&mut resumed).await.unwrap()];
    assert_eq!(got.iter().map(|e| e["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["READY", "FAILED"]);

    // Everything old: the newest row of all is still kept, so cursors stay checkable.
    age_every_stored_event(&app).await;
    assert_eq!(reelhouse::repo::outbox::prune(&app.state.db, cutoff).await.unwrap(), 1);
    let vars = json!({ "id": video.id.to_string(), "after": cursor(&second) });
    let mut stale = subscribe(&app, Some(&owner), &events_query(), vars).await;
    let error = next_event(&mut stale).await.unwrap_err();
    assert_eq!(error_code_of(&error), Some("CURSOR_EXPIRED"), "{error}");
    // A snapshot still knows the sequence.
    let mut fresh = subscribe(&app, Some(&owner), &progress_query(), json!({ "id": video.id.to_string() })).await;
    assert_eq!(next_event(&mut fresh).await.unwrap()["seq"], failed.seq);
}

/// Backdate every stored event past any retention.
async fn age_every_stored_event(app: &TestApp) {
    use sea_orm::sea_query::Expr;
    let long_ago = Utc::now() - chrono::TimeDelta::days(40);
    entities::event_outbox::Entity::update_many()
        .col_expr(entities::event_outbox::Column::CreatedAt, Expr::value(long_ago))
        .exec(&app.state.db)
        .await
        .unwrap();
}

/// `reelhouse_subscription_rechecks_total{source}` from `/metrics`.
async fn rechecks(app: &TestApp, source: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("reelhouse_subscription_rechecks_total{{source=\"{source}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Many subscriptions to one video share one database read per re-check period
/// (issue 18 item 4), and each still decides for its own viewer: a stranger's stream
/// ends when the video turns private while the owner's goes on.
#[actix_web::test]
async fn periodic_rechecks_of_one_video_share_one_read() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.ws_recheck_ms = 400;
    })
    .await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    let variables = json!({ "id": video.id.to_string() });
    let mut sockets = Vec::new();
    for _ in 0..8 {
        let mut socket = subscribe(&app, Some(&owner), &progress_query(), variables.clone()).await;
        assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
        sockets.push(socket);
    }
    let mut strangers = subscribe(&app, Some(&stranger), &progress_query(), variables.clone()).await;
    assert_eq!(next_event(&mut strangers).await.unwrap()["snapshot"], true);

    // A few periods of 9 subscriptions re-checking the same video.
    let shared = crate::helpers::eventually(100, || async { rechecks(&app, "shared").await >= 18.0 }).await;
    let (from_db, from_shared) = (rechecks(&app, "database").await, rechecks(&app, "shared").await);
    assert!(shared, "no shared re-checks: {from_db} from the database, {from_shared} shared");
    assert!(from_db * 2.0 < from_shared, "{from_db} reads from the database for {from_shared} shared ones");

    let mut active: video::ActiveModel = stored_video(&app, video.id).await.into();
    active.visibility = Set(Visibility::Private);
    active.update(&app.state.db).await.unwrap();
    let end = next_event(&mut strangers).await.unwrap_err();
    assert_eq!(error_code_of(&end), Some("NOT_FOUND"), "{end}");
    // The owner's streams go on: an event still reaches them.
    transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    for socket in &mut sockets {
        assert_eq!(next_event(socket).await.unwrap()["kind"], "READY");
    }
}

/// Store an event for `video_id` in a transaction left open (committed or rolled
/// back by the caller), the way two requests racing each other do.
async fn record_in(txn: &sea_orm::DatabaseTransaction, video_id: Uuid, kind: EventKind) -> events::DomainEvent {
    let current = video::Entity::find_by_id(video_id).one(txn).await.unwrap().unwrap();
    reelhouse::repo::outbox::record(txn, &current, kind, EventDetail::default()).await.unwrap()
}

async fn user_wide_feed(app: &TestApp, owner: &TestUser) -> Socket {
    let socket = subscribe(app, Some(owner), &events_query(), json!({})).await;
    wait_for_subscribers(app, 1).await;
    socket
}

async fn next_cursors(socket: &mut Socket, n: usize) -> Vec<i64> {
    let mut cursors = Vec::new();
    for _ in 0..n {
        let event = next_event(socket).await.unwrap();
        cursors.push(event["cursor"].as_str().unwrap().parse().unwrap());
    }
    cursors
}

/// A client resumes a user-wide feed after the last cursor it received: had it been
/// sent a newer video's event before an older one's, it would never get the older.
#[actix_web::test]
async fn a_user_wide_feed_gets_events_in_cursor_order_whatever_order_they_are_published_in() {
    let app = app().await;
    let owner = app.register_user().await;
    let first_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let second_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let mut socket = user_wide_feed(&app, &owner).await;

    let older = transition(&app, first_video.id, VideoStatus::Processing, EventKind::Uploaded, None, false).await;
    let newer = transition(&app, second_video.id, VideoStatus::Processing, EventKind::Uploaded, None, false).await;
    // The newer one is published first (it came straight from this process; the
    // older one a moment later through Redis).
    publisher(&app).publish(newer.clone());
    publisher(&app).publish(older.clone());
    assert_eq!(next_cursors(&mut socket, 2).await, [older.cursor.unwrap(), newer.cursor.unwrap()]);

    // A duplicate publish of either is not delivered again: the next event is new.
    publisher(&app).publish(older);
    let third = transition(&app, first_video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    assert_eq!(next_cursors(&mut socket, 1).await, [third.cursor.unwrap()]);
}

/// Redis forgot a publish (it restarted): the event is read from the outbox, before
/// the newer events of other videos, even though none of its own video comes after.
#[actix_web::test]
async fn a_stored_event_whose_publish_was_lost_reaches_a_user_wide_feed_in_order() {
    let app = app().await;
    let owner = app.register_user().await;
    let lost_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let other_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let mut socket = user_wide_feed(&app, &owner).await;

    let lost = transition(&app, lost_video.id, VideoStatus::Processing, EventKind::Uploaded, None, false).await;
    let live = transition(&app, other_video.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;
    assert_eq!(next_cursors(&mut socket, 2).await, [lost.cursor.unwrap(), live.cursor.unwrap()]);

    // Lost with nothing after it: the periodic outbox read delivers it.
    let alone = transition(&app, lost_video.id, VideoStatus::Ready, EventKind::Ready, None, false).await;
    assert_eq!(next_cursors(&mut socket, 1).await, [alone.cursor.unwrap()]);
}

/// A transaction that stored an event and rolled back leaves a cursor that never
/// comes (PostgreSQL does not give ids back): after `events.order_grace_ms` the
/// events behind it are delivered.
#[actix_web::test]
async fn a_rolled_back_event_does_not_hold_back_the_ones_after_it() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.events.order_grace_ms = 200;
    })
    .await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let other = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let mut socket = user_wide_feed(&app, &owner).await;

    let txn = app.state.db.begin().await.unwrap();
    record_in(&txn, video.id, EventKind::Uploaded).await;
    txn.rollback().await.unwrap();
    let after = transition(&app, other.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;
    let next = transition(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;
    assert_eq!(next_cursors(&mut socket, 2).await, [after.cursor.unwrap(), next.cursor.unwrap()]);
}

/// Two transactions storing events commit in the other order from the one their
/// cursors were handed out in (only PostgreSQL runs writers side by side; SQLite
/// has one writer, so there cursors always follow commits).
#[actix_web::test]
async fn events_committed_out_of_cursor_order_reach_a_user_wide_feed_in_cursor_order() {
    if crate::helpers::backend() != crate::helpers::Backend::Postgres {
        eprintln!("SQLite has one writer at a time: its cursors follow commit order (the PostgreSQL run checks this)");
        return;
    }
    let app = app().await;
    let owner = app.register_user().await;
    let slow_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let fast_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let mut socket = user_wide_feed(&app, &owner).await;

    let slow = app.state.db.begin().await.unwrap();
    let older = record_in(&slow, slow_video.id, EventKind::Uploaded).await;
    let fast = app.state.db.begin().await.unwrap();
    let newer = record_in(&fast, fast_video.id, EventKind::Uploaded).await;
    assert!(newer.cursor > older.cursor);
    fast.commit().await.unwrap();
    publisher(&app).publish(newer.clone());
    // The older transaction is still open a while after the newer one's publish.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    slow.commit().await.unwrap();
    publisher(&app).publish(older.clone());
    assert_eq!(next_cursors(&mut socket, 2).await, [older.cursor.unwrap(), newer.cursor.unwrap()]);
}

/// PROGRESS that comes while stored events wait for a missing cursor waits behind
/// them (it must not overtake the state change it follows), and only a video's
/// newest is sent.
#[actix_web::test]
async fn progress_waits_behind_held_back_events_and_only_the_newest_is_sent() {
    let app = app().await;
    let owner = app.register_user().await;
    let lost_video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let encoding = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    let mut socket = user_wide_feed(&app, &owner).await;

    let lost = transition(&app, lost_video.id, VideoStatus::Processing, EventKind::Uploaded, None, false).await;
    let processing = transition(&app, encoding.id, VideoStatus::Processing, EventKind::Processing, None, false).await;
    let row = stored_video(&app, encoding.id).await;
    // No await between these: the sequencer sees them all before it can read the
    // outbox for the missing cursor.
    let publisher = publisher(&app);
    publisher.publish(processing.clone());
    for percent in [10.0, 20.0] {
        let progress = ProgressInfo { percent, stage: "encoding".into(), ..Default::default() };
        publisher.publish(events::progress_event(&row, processing.seq, Uuid::now_v7(), progress));
    }
    assert_eq!(next_cursors(&mut socket, 2).await, [lost.cursor.unwrap(), processing.cursor.unwrap()]);
    let progress = next_event(&mut socket).await.unwrap();
    assert_eq!((progress["kind"].as_str(), progress["progress"]["percent"].as_f64()), (Some("PROGRESS"), Some(20.0)));
    // Nothing else was held: the next stored event comes next.
    let ready = transition(&app, encoding.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    assert_eq!(next_cursors(&mut socket, 1).await, [ready.cursor.unwrap()]);
}

/// A graphql-transport-ws socket whose receive buffer is as small as the kernel
/// allows, so a client that stops reading backs the server up after kilobytes.
async fn connect_small_window(app: &TestApp) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(format!("127.0.0.1:{}", app.port).parse().unwrap()).await.unwrap();
    let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
    socket
}

/// A subscriber that stops reading is not held forever and loses nothing: once its
/// queue has stayed full for `ws_slow_consumer_ms`, its feed ends (the bus loses the
/// subscriber), the socket still delivers what was queued and then `SLOW_CONSUMER`
/// with `extensions.resumeAfter` = the cursor of the last stored event it got, and
/// resuming after that cursor yields every later stored event once, in order.
async fn slow_consumer_is_closed_typed_and_resumes_with_no_gap(shared_frames: bool) {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.ws_recheck_ms = 2000;
        s.graphql.ws_slow_consumer_ms = 300;
        s.graphql.ws_shared_frames = shared_frames;
    })
    .await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Private, VideoStatus::Uploading).await;
    transition(&app, video.id, VideoStatus::Processing, EventKind::Uploaded, None, true).await;

    let mut socket = connect_small_window(&app).await;
    let auth = json!({ "authorization": format!("Bearer {}", owner.access_token) });
    send(&mut socket, json!({ "type": "connection_init", "payload": auth })).await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let subscribe = |id: &str, variables: Value| json!({ "id": id, "type": "subscribe", "payload": { "query": events_query(), "variables": variables } });
    send(&mut socket, subscribe("1", json!({ "id": video.id.to_string() }))).await;
    let snapshot = next_event(&mut socket).await.unwrap();
    assert_eq!((snapshot["snapshot"].as_bool(), snapshot["seq"].as_i64()), (Some(true), Some(1)), "{snapshot}");
    // The feed subscribed to the bus before it sent the snapshot.
    let subscribed = app.state.hubs.event_bus.addr().send(reelhouse::events::bus::SubscriberCount).await.unwrap();
    assert!(subscribed >= 1);

    // The client reads nothing more. Stored events and bursts of progress until the
    // server gives up on it (its feed drops its bus subscription).
    let job = Uuid::now_v7();
    let started = std::time::Instant::now();
    let mut last_seq;
    loop {
        last_seq = transition(&app, video.id, VideoStatus::Processing, EventKind::Processing, None, true).await.seq;
        let current = stored_video(&app, video.id).await;
        for i in 0..400 {
            let progress = ProgressInfo { percent: f64::from(i) / 4.0, stage: "encoding".into(), ..Default::default() };
            publisher(&app).publish(events::progress_event(&current, last_seq, job, progress));
        }
        let subscribers = app.state.hubs.event_bus.addr().send(reelhouse::events::bus::SubscriberCount).await.unwrap();
        if subscribers < subscribed {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the server kept feeding a subscriber that stopped reading ({last_seq} stored events)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Stored after the feed ended: only a resume can deliver these.
    for _ in 0..3 {
        last_seq = transition(&app, video.id, VideoStatus::Processing, EventKind::Processing, None, true).await.seq;
    }

    // The client reads again: what was queued, then the typed end.
    let mut seqs: Vec<i64> = Vec::new();
    let mut last_cursor = snapshot["cursor"].as_str().map(str::to_string);
    let end = loop {
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        if !message["payload"]["errors"].is_null() {
            break message;
        }
        let event = &message["payload"]["data"]["videoEvents"];
        if event["kind"] != "PROGRESS" {
            seqs.push(event["seq"].as_i64().unwrap());
            last_cursor = event["cursor"].as_str().map(str::to_string);
        }
    };
    assert_eq!(error_code_of(&end), Some("SLOW_CONSUMER"), "{end}");
    let resume_after = end["payload"]["errors"][0]["extensions"]["resumeAfter"].as_str().map(str::to_string);
    assert_eq!(resume_after, last_cursor, "resumeAfter must be the last stored event delivered: {end}");
    assert_eq!(next_json(&mut socket).await, json!({ "type": "complete", "id": "1" }));
    assert!(seqs.last().is_none_or(|s| *s < last_seq), "the feed ended before the last events");

    // The socket goes on: resume after the named cursor, on the same connection.
    let resume = json!({ "id": video.id.to_string(), "after": resume_after.unwrap() });
    send(&mut socket, subscribe("2", resume)).await;
    while seqs.last() != Some(&last_seq) {
        let message = next_json(&mut socket).await;
        assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("next"), Some("2")), "{message}");
        let event = &message["payload"]["data"]["videoEvents"];
        assert_eq!(event["snapshot"], false, "{event}");
        if event["kind"] != "PROGRESS" {
            seqs.push(event["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, (2..=last_seq).collect::<Vec<_>>(), "every stored event once, in order");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("reelhouse_slow_consumers_total")), "no slow-consumer metric");
}

#[actix_web::test]
async fn a_slow_consumer_of_shared_frames_is_closed_typed_and_resumes_with_no_gap() {
    slow_consumer_is_closed_typed_and_resumes_with_no_gap(true).await;
}

#[actix_web::test]
async fn a_slow_consumer_of_per_subscriber_events_is_closed_typed_and_resumes_with_no_gap() {
    slow_consumer_is_closed_typed_and_resumes_with_no_gap(false).await;
}

/// Make `video_id` private through the API as `owner` (on `app`), as a client would.
pub(crate) async fn make_private(app: &TestApp, owner: &TestUser, video_id: Uuid) {
    let (status, body) = app
        .graphql_as(
            &crate::helpers::Credentials::Bearer(owner.access_token.clone()),
            "mutation($id: ID!) { updateVideo(id: $id, input: { visibility: PRIVATE }) { visibility } }",
            json!({ "id": video_id.to_string() }),
        )
        .await;
    assert_eq!((status, &body["data"]["updateVideo"]["visibility"]), (200, &json!("PRIVATE")), "{body}");
}

/// The change is pushed to the open subscriptions of the video: with the periodic
/// re-check ten minutes away, only the announcement can end the stranger's stream.
/// Two strangers watch, and the one database read of the row is shared.
#[actix_web::test]
async fn making_the_video_private_ends_strangers_streams_at_once_not_at_the_next_poll() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.ws_recheck_ms = 600_000;
    })
    .await;
    let owner = app.register_user().await;
    let video = insert_video(&app, &owner, Visibility::Public, VideoStatus::Processing).await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let stranger = app.register_user().await;
        let mut socket =
            subscribe(&app, Some(&stranger), &progress_query(), json!({ "id": video.id.to_string() })).await;
        assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
        sockets.push(socket);
    }
    // The owner's own stream goes on.
    let mut own = subscribe(&app, Some(&owner), &events_query(), json!({ "id": video.id.to_string() })).await;
    assert_eq!(next_event(&mut own).await.unwrap()["snapshot"], true);
    wait_for_subscribers(&app, 3).await;

    make_private(&app, &owner, video.id).await;
    for socket in &mut sockets {
        let end = next_event(socket).await.unwrap_err();
        assert_eq!(error_code_of(&end), Some("NOT_FOUND"), "{end}");
        assert_eq!(next_event(socket).await.unwrap_err()["type"], "complete");
    }
    let ready = transition(&app, video.id, VideoStatus::Ready, EventKind::Ready, None, true).await;
    let got = next_event(&mut own).await.unwrap();
    assert_eq!((got["kind"].as_str(), got["seq"].as_i64()), (Some("READY"), Some(ready.seq)), "{got}");
}
