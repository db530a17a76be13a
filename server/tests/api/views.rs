//! Views, stats and moderation: a view counts once per viewer per window (also
//! under 20 concurrent calls), watch time is clamped, stats are for owners and
//! moderators, and a hidden video stops playing for everyone else.

use std::time::Duration;

use entities::{video, video_view, Role, VideoStatus};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{error_code, spawn_app, spawn_app_with, Credentials, TestApp, TestUser};

const RECORD: &str = "mutation($id: ID!, $watched: Float) { recordView(videoId: $id, watchedSeconds: $watched) { \
    counted watchSecondsAdded } }";
const STATS: &str = "query($id: ID!) { video(id: $id) { stats { views watchSeconds } } }";
const DAILY: &str = "query($id: ID!, $from: Date, $to: Date) { videoStats(videoId: $id, from: $from, to: $to) { \
    day views watchSeconds } }";
const HIDE: &str =
    "mutation($id: ID!, $reason: String!) { hideVideo(id: $id, reason: $reason) { id hidden hiddenReason } }";
const UNHIDE: &str =
    "mutation($id: ID!, $reason: String) { unhideVideo(id: $id, reason: $reason) { id hidden hiddenReason } }";
const MODERATION: &str = "query($id: ID!) { video(id: $id) { hidden hiddenReason \
    moderationLog { action reason at moderator { id } } } }";
const PLAYBACK: &str = "query($id: ID!) { video(id: $id) { id hidden hiddenReason playbackUrl } }";

/// A video of `owner`, made READY (30 s long) directly in the database.
async fn ready_video(app: &TestApp, owner: &TestUser, visibility: &str) -> Uuid {
    let (status, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation($input: CreateVideoInput!) { createVideo(input: $input) { id } }",
            json!({ "input": { "title": "Watch me", "visibility": visibility } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = Uuid::parse_str(body["data"]["createVideo"]["id"].as_str().unwrap()).unwrap();
    let row = video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap();
    let mut active: video::ActiveModel = row.into();
    active.status = Set(VideoStatus::Ready);
    active.duration_ms = Set(Some(30_000));
    active.update(&app.state.db).await.unwrap();
    id
}

async fn record(app: &TestApp, who: &Credentials, id: Uuid, watched: Option<f64>) -> Value {
    let (status, body) = app.graphql_as(who, RECORD, json!({ "id": id.to_string(), "watched": watched })).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// recordView as an anonymous client with this User-Agent.
async fn record_anonymous(app: &TestApp, user_agent: &str, id: Uuid) -> Value {
    let res = app
        .client
        .post(app.url("/graphql"))
        .header("User-Agent", user_agent)
        .json(&json!({ "query": RECORD, "variables": { "id": id.to_string() } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn counted(body: &Value) -> bool {
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["recordView"]["counted"].as_bool().unwrap()
}

fn added(body: &Value) -> f64 {
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["recordView"]["watchSecondsAdded"].as_f64().unwrap()
}

async fn stats(app: &TestApp, who: &Credentials, id: Uuid) -> (i64, f64) {
    let (status, body) = app.graphql_as(who, STATS, json!({ "id": id.to_string() })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let stats = &body["data"]["video"]["stats"];
    (stats["views"].as_i64().unwrap(), stats["watchSeconds"].as_f64().unwrap())
}

#[actix_web::test]
async fn a_view_counts_once_per_viewer_per_window() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PUBLIC").await;
    let alice = app.register_user().await;
    let bob = app.register_user().await;

    assert!(counted(&record(&app, &alice.bearer(), id, None).await));
    assert!(!counted(&record(&app, &alice.bearer(), id, None).await), "same user, same window");
    assert_eq!(stats(&app, &owner.bearer(), id).await.0, 1);
    assert!(counted(&record(&app, &bob.bearer(), id, None).await));
    assert_eq!(stats(&app, &owner.bearer(), id).await.0, 2);

    // Anonymous viewers are told apart by address and User-Agent.
    assert!(counted(&record_anonymous(&app, "Player/1.0", id).await));
    assert!(!counted(&record_anonymous(&app, "Player/1.0", id).await));
    assert!(counted(&record_anonymous(&app, "OtherPlayer/2.0", id).await));
    assert_eq!(stats(&app, &Credentials::Anonymous, id).await.0, 4);

    // The raw address is never stored as the viewer.
    let keys: Vec<String> = video_view::Entity::find()
        .filter(video_view::Column::VideoId.eq(id))
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.viewer_key)
        .collect();
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|key| !key.contains("127.0.0.1")), "{keys:?}");
    assert!(keys.contains(&format!("u:{}", alice.id)), "{keys:?}");
}

#[actix_web::test]
async fn a_view_counts_again_after_the_window() {
    let app = spawn_app_with(|s| s.views.dedupe_window_secs = 1).await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PUBLIC").await;
    let viewer = app.register_user().await;

    assert!(counted(&record(&app, &viewer.bearer(), id, None).await));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(counted(&record(&app, &viewer.bearer(), id, None).await), "a new window counts a new view");
    assert_eq!(stats(&app, &owner.bearer(), id).await.0, 2);
}

#[actix_web::test]
async fn watch_time_is_added_and_clamped() {
    let app = spawn_app_with(|s| s.views.heartbeat_slack_secs = 5).await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PUBLIC").await;
    let viewer = app.register_user().await.bearer();

    // Within what wall-clock time allows: accepted as reported.
    assert_eq!(added(&record(&app, &viewer, id, Some(3.0)).await), 3.0);
    // Far more than has passed: the window's total may not outrun the clock by more
    // than the slack, so this call gets only the rest of the 5 s slack.
    let clamped = added(&record(&app, &viewer, id, Some(1_000.0)).await);
    assert!((2.0..3.0).contains(&clamped), "clamped to about 2 s, got {clamped}");
    assert_eq!(added(&record(&app, &viewer, id, Some(1_000.0)).await).round(), 0.0, "no slack left");

    // An hour later, a huge report is still capped at the video's 30 s per window.
    let hour_ago = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    video_view::Entity::update_many()
        .col_expr(video_view::Column::CreatedAt, sea_orm::sea_query::Expr::value(hour_ago))
        .col_expr(video_view::Column::UpdatedAt, sea_orm::sea_query::Expr::value(hour_ago))
        .filter(video_view::Column::VideoId.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
    assert!(added(&record(&app, &viewer, id, Some(1_000.0)).await) > 20.0);
    assert_eq!(added(&record(&app, &viewer, id, Some(1_000.0)).await), 0.0, "the window holds the whole video");
    let (views, watched) = stats(&app, &owner.bearer(), id).await;
    assert_eq!(views, 1);
    assert!((29.999..=30.0).contains(&watched), "capped at the duration: {watched}");

    // The daily row carries the same numbers.
    let (_, body) = app.graphql_as(&owner.bearer(), DAILY, json!({ "id": id.to_string() })).await;
    let days = body["data"]["videoStats"].as_array().unwrap_or_else(|| panic!("{body}"));
    let today = days.last().unwrap();
    assert_eq!(today["views"], 1);
    assert_eq!(today["watchSeconds"].as_f64().unwrap(), watched);

    // Negative watch time is the client's mistake.
    let body = record(&app, &viewer, id, Some(-1.0)).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
}

#[actix_web::test]
async fn concurrent_record_views_from_one_viewer_count_once() {
    let app = spawn_app_with(|s| s.views.heartbeat_slack_secs = 5).await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PUBLIC").await;
    let viewer = app.register_user().await.bearer();

    let calls = (0..20).map(|_| record(&app, &viewer, id, Some(10.0)));
    let results = futures::future::join_all(calls).await;
    let counted_calls = results.iter().filter(|body| counted(body)).count();
    let added_total: f64 = results.iter().map(added).sum();
    assert_eq!(counted_calls, 1, "exactly one call counts the view");

    let (views, watched) = stats(&app, &owner.bearer(), id).await;
    assert_eq!(views, 1);
    assert!((watched - added_total).abs() < 1e-6, "stats {watched} vs accepted {added_total}");
    // Twenty heartbeats at once cannot claim 200 s: only slack plus the wall-clock
    // time the burst itself took.
    assert!(watched < 30.0, "inflated watch time: {watched}");
    let rows =
        video_view::Entity::find().filter(video_view::Column::VideoId.eq(id)).count(&app.state.db).await.unwrap();
    assert_eq!(rows, 1);
}

#[actix_web::test]
async fn stats_are_for_the_owner_and_moderators_only() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let public = ready_video(&app, &owner, "PUBLIC").await;
    let private = ready_video(&app, &owner, "PRIVATE").await;
    let stranger = app.register_user().await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    assert!(counted(&record(&app, &stranger.bearer(), public, Some(2.0)).await));

    let today = chrono::Utc::now().date_naive();
    let yesterday = today - chrono::TimeDelta::days(1);
    let range = json!({ "id": public.to_string(), "from": yesterday.to_string(), "to": today.to_string() });
    for who in [&owner, &moderator] {
        let (status, body) = app.graphql_as(&who.bearer(), DAILY, range.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["errors"].is_null(), "{body}");
        assert_eq!(
            body["data"]["videoStats"],
            json!([
                { "day": yesterday.to_string(), "views": 0, "watchSeconds": 0.0 },
                { "day": today.to_string(), "views": 1, "watchSeconds": 2.0 },
            ])
        );
    }

    // A stranger may read the public video and its total, not its daily stats...
    assert_eq!(stats(&app, &stranger.bearer(), public).await, (1, 2.0));
    let (_, body) = app.graphql_as(&stranger.bearer(), DAILY, range.clone()).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    // ...and learns nothing about the private one.
    let (_, body) = app.graphql_as(&stranger.bearer(), DAILY, json!({ "id": private.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let (_, body) = app.graphql_as(&Credentials::Anonymous, DAILY, range.clone()).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");

    // Ranges are bounded.
    let backwards = json!({ "id": public.to_string(), "from": today.to_string(), "to": yesterday.to_string() });
    let (_, body) = app.graphql_as(&owner.bearer(), DAILY, backwards).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
}

#[actix_web::test]
async fn recording_a_view_of_a_private_video_is_not_found_for_strangers() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PRIVATE").await;
    let stranger = app.register_user().await;

    let body = record(&app, &stranger.bearer(), id, None).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let body = record(&app, &Credentials::Anonymous, id, None).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    assert!(counted(&record(&app, &owner.bearer(), id, None).await));
    assert_eq!(stats(&app, &owner.bearer(), id).await.0, 1);
}

#[actix_web::test]
async fn moderators_hide_and_unhide_with_recorded_reasons() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PUBLIC").await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let vars = |reason: &str| json!({ "id": id.to_string(), "reason": reason });

    // Plain users, owners included, may not moderate.
    for who in [&owner, &app.register_user().await] {
        let (_, body) = app.graphql_as(&who.bearer(), HIDE, vars("mine")).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    }
    let (_, body) = app.graphql_as(&Credentials::Anonymous, HIDE, vars("anon")).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");

    let (_, body) = app.graphql_as(&moderator.bearer(), HIDE, vars("  ")).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "a reason is required: {body}");
    let (_, body) = app.graphql_as(&moderator.bearer(), HIDE, vars(" spam ")).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["hideVideo"]["hidden"], true);
    assert_eq!(body["data"]["hideVideo"]["hiddenReason"], "spam");

    let (_, body) = app.graphql_as(&admin.bearer(), UNHIDE, vars("appeal accepted")).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["unhideVideo"]["hidden"], false);
    assert!(body["data"]["unhideVideo"]["hiddenReason"].is_null());
    let (_, body) = app.graphql_as(&admin.bearer(), UNHIDE, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "not hidden any more: {body}");

    let (_, body) = app.graphql_as(&moderator.bearer(), MODERATION, json!({ "id": id.to_string() })).await;
    assert!(body["errors"].is_null(), "{body}");
    let log = body["data"]["video"]["moderationLog"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{body}");
    assert_eq!(log[0]["action"], "HIDE");
    assert_eq!(log[0]["reason"], "spam");
    assert_eq!(log[0]["moderator"]["id"], moderator.id.as_str());
    assert_eq!(log[1]["action"], "UNHIDE");
    assert_eq!(log[1]["reason"], "appeal accepted");
    assert_eq!(log[1]["moderator"]["id"], admin.id.as_str());

    // The log is for moderators: the owner gets FORBIDDEN on that field only.
    let (_, body) = app.graphql_as(&owner.bearer(), MODERATION, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    assert_eq!(body["data"]["video"]["hidden"], false, "{body}");
    assert!(body["data"]["video"]["moderationLog"].is_null());
}

#[actix_web::test]
async fn a_hidden_video_stops_playing_for_everyone_but_owner_and_moderators() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let id = ready_video(&app, &owner, "PUBLIC").await;
    let stranger = app.register_user().await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    let vars = json!({ "id": id.to_string() });

    let (_, body) = app.graphql_as(&stranger.bearer(), PLAYBACK, vars.clone()).await;
    let public_url = body["data"]["video"]["playbackUrl"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    assert!(!public_url.contains("sig="), "{public_url}");
    assert_eq!(body["data"]["video"]["hidden"], false);

    let (_, body) = app.graphql_as(&moderator.bearer(), HIDE, json!({ "id": id.to_string(), "reason": "abuse" })).await;
    assert!(body["errors"].is_null(), "{body}");

    // The plain URL handed out earlier stops working (before storage is read).
    let res = app.client.get(&public_url).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let reason: Value = res.json().await.unwrap();
    assert_eq!(reason["code"], "FORBIDDEN");

    // Strangers and anonymous callers no longer see it, by id or in lists, nor can
    // they record views of it.
    for who in [stranger.bearer(), Credentials::Anonymous] {
        let (_, body) = app.graphql_as(&who, PLAYBACK, vars.clone()).await;
        assert!(body["errors"].is_null(), "{body}");
        assert!(body["data"]["video"].is_null(), "{body}");
        let (_, body) = app.graphql_as(&who, "{ videos { edges { node { id } } } }", json!({})).await;
        let listed = body["data"]["videos"]["edges"].as_array().unwrap_or_else(|| panic!("{body}"));
        assert!(listed.iter().all(|edge| edge["node"]["id"] != id.to_string()), "{body}");
        let body = record(&app, &who, id, None).await;
        assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    }

    // Owner and moderator still see it, with a signed playback URL and the reason.
    for who in [&owner, &moderator] {
        let (_, body) = app.graphql_as(&who.bearer(), PLAYBACK, vars.clone()).await;
        assert!(body["errors"].is_null(), "{body}");
        let video = &body["data"]["video"];
        assert_eq!(video["hidden"], true, "{body}");
        assert_eq!(video["hiddenReason"], "abuse");
        let url = video["playbackUrl"].as_str().unwrap();
        assert!(url.contains("sig="), "hidden media need a signed URL: {url}");
        assert_ne!(app.client.get(url).send().await.unwrap().status(), 403, "the signed URL is accepted");
    }
}
