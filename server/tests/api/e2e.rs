//! The whole path through the public API only: create a video, upload it (presigned
//! PUT or tus), watch it over a graphql-ws subscription until exactly one READY,
//! and play the result with a stock HLS player. Hostile uploads end FAILED with a
//! reason, and no job is created for them.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_with, TestApp, TestUser};
use crate::runner::landscape_clip;
use crate::video_events::{next_event, progress_query, subscribe};

async fn app() -> TestApp {
    spawn_app_with(|s| {
        crate::uploads::short_s3_prefix(s);
        s.media.speed_preset = "ultrafast".into();
        s.media.segment_seconds = 1;
        s.jobs.poll_interval_ms = 100;
        s.uploads.part_size_bytes = 5 * 1024 * 1024;
    })
    .await
}

pub(crate) async fn gql(app: &TestApp, user: &TestUser, query: &str, variables: Value) -> Value {
    let (status, body) = app.graphql_as(&user.bearer(), query, variables).await;
    assert_eq!(status, 200, "{body}");
    body
}

pub(crate) async fn create_video(app: &TestApp, user: &TestUser, visibility: &str) -> String {
    let body = gql(
        app,
        user,
        "mutation($input: CreateVideoInput!) { createVideo(input: $input) { id status } }",
        json!({ "input": { "title": "End to end", "visibility": visibility } }),
    )
    .await;
    assert_eq!(body["data"]["createVideo"]["status"], "DRAFT", "{body}");
    body["data"]["createVideo"]["id"].as_str().unwrap().to_string()
}

pub(crate) async fn create_upload(app: &TestApp, user: &TestUser, video: &str, size: usize) -> Value {
    let body = gql(
        app,
        user,
        "mutation($input: CreateUploadInput!) { createUpload(input: $input) { id method url headers { name value } tusUrl } }",
        json!({ "input": { "videoId": video, "filename": "clip.mp4", "contentType": "video/mp4", "size": size } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["createUpload"].clone()
}

/// Follow `videoProgress` to its end; returns the kinds seen and the last event.
pub(crate) async fn watch_until_done(socket: &mut crate::subscriptions::Socket) -> (Vec<String>, Vec<f64>, Value) {
    let mut kinds = Vec::new();
    let mut percents = Vec::new();
    let mut last = Value::Null;
    while let Ok(event) = next_event(socket).await {
        kinds.push(event["kind"].as_str().unwrap().to_string());
        if event["kind"] == "PROGRESS" && !event["progress"].is_null() {
            percents.push(event["progress"]["percent"].as_f64().unwrap());
        }
        last = event;
    }
    (kinds, percents, last)
}

async fn assert_plays(app: &TestApp, user: &TestUser, video: &str) {
    let body = gql(
        app,
        user,
        "query($id: ID!) { video(id: $id) { status playbackUrl renditions { name } } }",
        json!({ "id": video }),
    )
    .await;
    let video = &body["data"]["video"];
    assert_eq!(video["status"], "READY", "{body}");
    assert!(!video["renditions"].as_array().unwrap().is_empty(), "{body}");
    let url = video["playbackUrl"].as_str().unwrap();
    assert!(crate::playback::plays_to_the_end(url).await, "a stock HLS player plays {url}");
}

#[actix_web::test]
async fn a_presigned_upload_becomes_a_playable_ladder_with_live_progress_and_one_ready() {
    let app = app().await;
    let user = app.register_user().await;
    let video = create_video(&app, &user, "PRIVATE").await;
    let mut socket = subscribe(&app, Some(&user), &progress_query(), json!({ "id": video })).await;
    let snapshot = next_event(&mut socket).await.unwrap();
    assert_eq!((snapshot["snapshot"].as_bool(), snapshot["status"].as_str()), (Some(true), Some("DRAFT")));

    let clip = std::fs::read(landscape_clip()).unwrap();
    let ticket = create_upload(&app, &user, &video, clip.len()).await;
    assert_eq!(ticket["method"], "PUT", "{ticket}");
    let mut put = app.client.put(ticket["url"].as_str().unwrap()).body(clip.clone());
    for header in ticket["headers"].as_array().unwrap() {
        put = put.header(header["name"].as_str().unwrap(), header["value"].as_str().unwrap());
    }
    let res = put.send().await.unwrap();
    assert!(res.status().is_success(), "{:?}", res.text().await);

    let body =
        gql(&app, &user, "mutation($id: ID!) { completeUpload(id: $id) { id status } }", json!({ "id": ticket["id"] }))
            .await;
    assert_eq!(body["data"]["completeUpload"]["status"], "PROCESSING", "{body}");

    let (kinds, percents, last) = watch_until_done(&mut socket).await;
    assert_eq!(last["kind"], "READY", "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "READY").count(), 1, "exactly one READY: {kinds:?}");
    for expected in ["UPLOADED", "PROCESSING", "PLAYABLE", "RENDITION_READY"] {
        assert!(kinds.iter().any(|k| k == expected), "{expected} missing from {kinds:?}");
    }
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {percents:?}");
    let playable = kinds.iter().position(|k| k == "PLAYABLE").unwrap();
    let rendition_ready = kinds.iter().position(|k| k == "RENDITION_READY").unwrap();
    assert!(playable < rendition_ready, "playable while the lowest rung is encoded: {kinds:?}");
    assert!(rendition_ready < kinds.len() - 1, "the first rung is announced before READY");

    // One job, SUCCEEDED, visible to its owner with its log.
    let body =
        gql(&app, &user, "query { jobs(first: 10) { edges { node { status attempts videoId } } } }", json!({})).await;
    let jobs = body["data"]["jobs"]["edges"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{body}");
    assert_eq!(jobs[0]["node"]["status"], "SUCCEEDED");
    assert_eq!(jobs[0]["node"]["videoId"], video.as_str());

    assert_plays(&app, &user, &video).await;
}

#[actix_web::test]
async fn a_tus_upload_becomes_ready() {
    let app = app().await;
    let user = app.register_user().await;
    let video = create_video(&app, &user, "PUBLIC").await;
    let clip = std::fs::read(landscape_clip()).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let res = app
        .client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", clip.len().to_string())
        .header(
            "Upload-Metadata",
            format!("videoId {},filename {},filetype {}", b64(&video), b64("clip.mp4"), b64("video/mp4")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let url = if location.starts_with("http") { location } else { app.url(&location) };

    let mut socket = subscribe(&app, Some(&user), &progress_query(), json!({ "id": video })).await;
    assert_eq!(next_event(&mut socket).await.unwrap()["snapshot"], true);
    // Two PATCHes; the last byte completes the upload.
    let half = clip.len() / 2;
    for (offset, chunk) in [(0, &clip[..half]), (half, &clip[half..])] {
        let res = app
            .client
            .patch(&url)
            .bearer_auth(&user.access_token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{:?}", res.text().await);
    }
    let (kinds, _, last) = watch_until_done(&mut socket).await;
    assert_eq!(last["kind"], "READY", "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "READY").count(), 1, "{kinds:?}");
    assert_plays(&app, &user, &video).await;
}

#[actix_web::test]
async fn a_hostile_upload_fails_with_a_reason_and_never_reaches_a_worker() {
    let app = app().await;
    let user = app.register_user().await;
    let video = create_video(&app, &user, "PRIVATE").await;
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let ticket = create_upload(&app, &user, &video, garbage.len()).await;
    let mut put = app.client.put(ticket["url"].as_str().unwrap()).body(garbage);
    for header in ticket["headers"].as_array().unwrap() {
        put = put.header(header["name"].as_str().unwrap(), header["value"].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "mutation($id: ID!) { completeUpload(id: $id) { id } }",
            json!({ "id": ticket["id"] }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("UNSUPPORTED_MEDIA"), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains('/') || !message.contains("users"), "no internals: {message}");

    let body = gql(&app, &user, "query($id: ID!) { video(id: $id) { status error } }", json!({ "id": video })).await;
    assert_eq!(body["data"]["video"]["status"], "FAILED", "{body}");
    assert!(body["data"]["video"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let body = gql(&app, &user, "query { jobs(first: 10) { edges { node { id } } } }", json!({})).await;
    assert_eq!(body["data"]["jobs"]["edges"], json!([]), "no job for a refused upload: {body}");
}
