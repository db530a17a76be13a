//! The workload a fault runs through, and the invariants checked after it.
//!
//! Each user (registered before the fault) has a webhook endpoint on a receiver of
//! the test's own, follows `videoEvents(after:)` over graphql-transport-ws on some
//! replica (on any close or error it reconnects to the next replica and resumes
//! after the last cursor it got), and uploads its videos one after another over
//! tus in slow PATCHes (each body trickles in over about half a second, so a fault
//! lands mid-request). A failed call is retried on the next replica with back-off
//! (at most `Retry-After`, capped to a second); a failed PATCH asks `HEAD` for the
//! offset and resumes from there. An upload is *accepted* once `POST /uploads/`
//! answered 201.
//!
//! Every 5xx answer that is not a typed 503 (`Retry-After` and a JSON body with a
//! code) is a wrong answer and fails the run, as does a refusal that is not one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use bytes::Bytes;
use entities::{event_outbox, job, upload, video, webhook_delivery, JobStatus, UploadStatus, VideoStatus};
use futures::{SinkExt, StreamExt};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::cluster::{Balancer, Cluster, Scale};

/// How long one call keeps retrying before the workload gives up on it.
const CALL_DEADLINE: Duration = Duration::from_secs(240);
/// tus PATCH size, and how it trickles in.
const PATCH_BYTES: usize = 48 * 1024;
const PIECES_PER_PATCH: usize = 4;
const PIECE_GAP: Duration = Duration::from_millis(120);

#[derive(Clone)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) token: String,
}

/// An upload the server accepted (answered 201 to its creation).
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) video: Uuid,
    pub(crate) path: String,
    pub(crate) token: String,
}

/// What the clients saw, shared by every task of the workload.
#[derive(Default)]
pub(crate) struct Observed {
    pub(crate) accepted: Mutex<Vec<Accepted>>,
    /// Uploads whose every byte the server has (PATCHes answered up to the length).
    pub(crate) sent: AtomicUsize,
    /// Bytes accepted by PATCHes so far.
    pub(crate) bytes: AtomicU64,
    /// PATCHes in flight per replica address.
    pub(crate) in_flight: Mutex<HashMap<String, usize>>,
    /// PATCHes that failed mid-request (connection lost or refused), with when and where.
    pub(crate) interrupted: Mutex<Vec<(Instant, String)>>,
    /// Successful PATCHes that resumed an upload after an interruption.
    pub(crate) resumed: Mutex<Vec<Instant>>,
    /// Typed 503 answers (UNAVAILABLE with Retry-After) met and retried.
    pub(crate) unavailable: AtomicU64,
    /// Typed 507 answers (STORAGE_FULL with Retry-After) met and retried.
    pub(crate) storage_full: AtomicU64,
    /// When the last of them came.
    pub(crate) last_storage_full: Mutex<Option<Instant>>,
    /// Answers that break the contract (an untyped 5xx, an unexpected refusal).
    pub(crate) wrong: Mutex<Vec<String>>,
    /// Calls given up on.
    pub(crate) gave_up: Mutex<Vec<String>>,
}

impl Observed {
    fn wrong(&self, what: String) {
        eprintln!("chaos: wrong answer: {what}");
        self.wrong.lock().unwrap().push(what);
    }

    pub(crate) fn in_flight_on(&self, address: &str) -> usize {
        self.in_flight.lock().unwrap().get(address).copied().unwrap_or(0)
    }

    pub(crate) fn resumed_after(&self, at: Instant) -> Option<Duration> {
        self.resumed.lock().unwrap().iter().find(|t| **t > at).map(|t| t.duration_since(at))
    }

    pub(crate) fn interrupted_after(&self, at: Instant) -> Vec<String> {
        self.interrupted.lock().unwrap().iter().filter(|(t, _)| *t >= at).map(|(_, a)| a.clone()).collect()
    }
}

/// A feed's record: every cursor received, in order.
#[derive(Default)]
pub(crate) struct FeedLog {
    pub(crate) cursors: Vec<i64>,
    pub(crate) reconnects: u32,
}

/// The `webhook-id` of every delivery received (while up).
type Received = Arc<Mutex<Vec<String>>>;

/// The webhook receiver: records ids, or answers 503 while `down`.
#[derive(Clone, Default)]
struct Hook {
    received: Received,
    down: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<AtomicU64>,
}

async fn receive(req: HttpRequest, hook: web::Data<Hook>) -> HttpResponse {
    if hook.down.load(Ordering::SeqCst) {
        hook.refused.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::ServiceUnavailable().finish();
    }
    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    hook.received.lock().unwrap().push(id);
    HttpResponse::Ok().finish()
}

pub(crate) struct Workload {
    pub(crate) name: String,
    pub(crate) users: Vec<User>,
    pub(crate) videos_per_user: usize,
    pub(crate) observed: Arc<Observed>,
    feeds: Vec<(User, Arc<Mutex<FeedLog>>, tokio::task::JoinHandle<()>)>,
    uploaders: Vec<tokio::task::JoinHandle<()>>,
    hook: Hook,
    endpoints: Vec<Uuid>,
    start_cursor: i64,
    pub(crate) started: Instant,
}

/// How a call went.
enum Outcome<T> {
    Done(T),
    /// Try again (on the next replica) after this long.
    Retry(Duration),
    Fatal(String),
}

/// Classify an answer that is not the expected success.
fn judge<T>(
    observed: &Observed,
    what: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> Outcome<T> {
    if status == 503 {
        let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let typed = serde_json::from_str::<Value>(body)
            .ok()
            .is_some_and(|b| b["code"].is_string() || b["errors"][0]["extensions"]["code"].is_string());
        if retry_after.is_none() || !typed {
            observed.wrong(format!("{what}: 503 without Retry-After or a typed body: {body}"));
        }
        observed.unavailable.fetch_add(1, Ordering::Relaxed);
        let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(Duration::from_secs(1));
        return Outcome::Retry(wait);
    }
    if status == 507 {
        // Local storage full: typed, with Retry-After; nothing half-written was kept
        // beyond the recorded offset, so the client resumes (sooner than told, to
        // measure when space is back).
        let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let code = serde_json::from_str::<Value>(body).ok().map(|b| {
            b["code"].as_str().or(b["errors"][0]["extensions"]["code"].as_str()).unwrap_or_default().to_string()
        });
        if retry_after.is_none() || code.as_deref() != Some("STORAGE_FULL") {
            observed.wrong(format!("{what}: 507 without Retry-After or code STORAGE_FULL: {body}"));
        }
        observed.storage_full.fetch_add(1, Ordering::Relaxed);
        *observed.last_storage_full.lock().unwrap() = Some(Instant::now());
        return Outcome::Retry(Duration::from_millis(500));
    }
    if status >= 500 {
        observed.wrong(format!("{what}: {status}: {body}"));
        return Outcome::Retry(Duration::from_millis(500));
    }
    Outcome::Fatal(format!("{what}: {status}: {body}"))
}

/// GraphQL over HTTP as `token`, on the next replica, until it answers (or the
/// deadline); `UNAVAILABLE` (503 or in the body) is retried.
async fn graphql(
    client: &reqwest::Client,
    balancer: &Balancer,
    observed: &Observed,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let deadline = Instant::now() + CALL_DEADLINE;
    loop {
        let base = balancer.pick();
        let mut request =
            client.post(format!("{base}/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let outcome = match request.send().await {
            Err(_) => Outcome::Retry(Duration::from_millis(200)),
            Ok(res) => {
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let text = res.text().await.unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if status == 200 && body["errors"].is_null() {
                    Outcome::Done(body["data"].clone())
                } else if status == 200 && body["errors"][0]["extensions"]["code"] == "UNAVAILABLE" {
                    observed.unavailable.fetch_add(1, Ordering::Relaxed);
                    Outcome::Retry(Duration::from_secs(1))
                } else {
                    judge(observed, query, status, &headers, &text)
                }
            }
        };
        match outcome {
            Outcome::Done(data) => return Ok(data),
            Outcome::Fatal(message) => return Err(message),
            Outcome::Retry(wait) => {
                if Instant::now() > deadline {
                    return Err(format!("gave up after {CALL_DEADLINE:?}: {query}"));
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Workload {
    /// Register the users, their webhook endpoints and feeds, then start uploading.
    pub(crate) async fn start(cluster: &Cluster, scale: Scale) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let observed = Arc::new(Observed::default());
        let balancer = cluster.balancer.clone();

        let hook = Hook::default();
        let data = web::Data::new(hook.clone());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).route("/hook", web::post().to(receive)))
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
        let hook_url = format!("http://{}/hook", server.addrs()[0]);
        actix_rt::spawn(server.run());

        let start_cursor = max_outbox_id(cluster).await;
        let mut users = Vec::new();
        let mut endpoints = Vec::new();
        for _ in 0..scale.users() {
            let email = format!("{}@example.com", Uuid::new_v4().simple());
            let data = graphql(
                &client,
                &balancer,
                &observed,
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
                json!({ "input": { "email": email, "password": crate::helpers::TEST_PASSWORD, "displayName": "Chaos" } }),
            )
            .await
            .expect("register");
            let user = User {
                id: Uuid::parse_str(data["register"]["user"]["id"].as_str().unwrap()).unwrap(),
                token: data["register"]["accessToken"].as_str().unwrap().to_string(),
            };
            let data = graphql(
                &client,
                &balancer,
                &observed,
                Some(user.token.as_str()),
                "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id } } }",
                json!({ "input": { "url": hook_url, "events": ["UPLOADED", "PROCESSING", "RENDITION_READY", "READY", "FAILED"], "global": false } }),
            )
            .await
            .expect("create the webhook endpoint");
            endpoints.push(Uuid::parse_str(data["createWebhook"]["webhook"]["id"].as_str().unwrap()).unwrap());
            users.push(user);
        }

        let mut feeds = Vec::new();
        for user in &users {
            let log = Arc::new(Mutex::new(FeedLog::default()));
            let task = tokio::spawn(follow(balancer.clone(), user.token.clone(), start_cursor, log.clone()));
            feeds.push((user.clone(), log, task));
        }
        // Let the feeds subscribe before anything happens.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let clip = Arc::new(std::fs::read(crate::runner::landscape_clip()).unwrap());
        let mut uploaders = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let (client, balancer, observed, user, clip) =
                (client.clone(), balancer.clone(), observed.clone(), user.clone(), clip.clone());
            let videos = scale.videos_per_user();
            uploaders.push(tokio::spawn(async move {
                // Staggered, so uploads and encodes overlap.
                tokio::time::sleep(Duration::from_millis(700 * i as u64)).await;
                for n in 0..videos {
                    if let Err(err) = upload_one(&client, &balancer, &observed, &user, &clip, n).await {
                        eprintln!("chaos: upload gave up: {err}");
                        observed.gave_up.lock().unwrap().push(err);
                    }
                }
            }));
        }
        let name = format!(
            "{} users × {} tus uploads (slow PATCHes), {} feeds, webhooks",
            scale.users(),
            scale.videos_per_user(),
            scale.users()
        );
        Self {
            name,
            users,
            videos_per_user: scale.videos_per_user(),
            observed,
            feeds,
            uploaders,
            hook,
            endpoints,
            start_cursor,
            started: Instant::now(),
        }
    }

    /// Make the webhook target answer 503 (down) or 200 again.
    pub(crate) fn set_webhook_target_down(&self, down: bool) {
        self.hook.down.store(down, Ordering::SeqCst);
    }

    /// Deliveries the target refused while down.
    pub(crate) fn webhooks_refused(&self) -> u64 {
        self.hook.refused.load(Ordering::Relaxed)
    }

    /// Every delivery of the workload's endpoints has succeeded.
    pub(crate) async fn webhooks_all_delivered(&self, cluster: &Cluster) -> bool {
        let rows = deliveries(&cluster.db, &self.endpoints).await;
        !rows.is_empty() && rows.iter().all(|d| d.status == webhook_delivery::WebhookDeliveryStatus::Succeeded)
    }

    /// Wait for the workload to end, let the system settle, and check every
    /// invariant; returns the table row (the caller asserts it is clean).
    pub(crate) async fn finish(self, cluster: &Cluster, fault: &str, recovery: Option<Duration>) -> Row {
        self.finish_with(cluster, fault, recovery, Vec::new()).await
    }

    /// As [`Workload::finish`], with the fault's own findings added to the row.
    pub(crate) async fn finish_with(
        self,
        cluster: &Cluster,
        fault: &str,
        recovery: Option<Duration>,
        mut problems: Vec<String>,
    ) -> Row {
        let (mut lost, mut duplicated) = (0usize, 0usize);
        for task in self.uploaders {
            if let Err(err) = task.await {
                problems.push(format!("an uploader panicked: {err}"));
            }
        }
        let db = &cluster.db;

        // Jobs: none left QUEUED or RUNNING, except the deferred removal of outputs a
        // retried transcode replaced (a DELETE_OBJECTS job due hours from now, so
        // players holding the old URLs keep playing): waiting by design, not stuck.
        let unsettled = |j: &job::Model| match j.status {
            JobStatus::Running => true,
            JobStatus::Queued => {
                !(j.kind == entities::JobKind::DeleteObjects
                    && j.run_after > chrono::Utc::now() + chrono::TimeDelta::minutes(30))
            }
            _ => false,
        };
        let settled = super::cluster::time_until(Duration::from_secs(240), || async {
            job::Entity::find()
                .filter(job::Column::Status.is_in([JobStatus::Queued, JobStatus::Running]))
                .all(db)
                .await
                .map(|rows| !rows.iter().any(unsettled))
                .unwrap_or(false)
        })
        .await;
        let jobs = job::Entity::find().all(db).await.unwrap();
        if settled.is_none() {
            for job in jobs.iter().filter(|j| unsettled(j)) {
                lost += 1;
                problems.push(format!("job {} stuck {:?} (attempts {})", job.id, job.status, job.attempts));
            }
        }
        for job in &jobs {
            let typed = job.last_error.as_deref().is_some_and(|e| !e.is_empty());
            if matches!(job.status, JobStatus::Failed | JobStatus::Dead) && !typed {
                problems.push(format!("job {} {:?} without a reason", job.id, job.status));
            }
        }

        // Accepted uploads: completed (READY, or FAILED with a reason) or resumable.
        let accepted = self.observed.accepted.lock().unwrap().clone();
        let client = reqwest::Client::new();
        let mut failed = 0usize;
        let mut ready_videos = HashSet::new();
        for upload in &accepted {
            let row = video::Entity::find_by_id(upload.video).one(db).await.unwrap().unwrap();
            match row.status {
                VideoStatus::Ready => {
                    ready_videos.insert(row.id);
                }
                VideoStatus::Failed if row.error.as_deref().is_some_and(|e| !e.is_empty()) => failed += 1,
                status => {
                    let rows = upload::Entity::find().filter(upload::Column::VideoId.eq(row.id)).all(db).await.unwrap();
                    let open = rows.iter().find(|u| u.status == UploadStatus::Open);
                    let resumable = match open {
                        Some(open) => head_offset(&client, &cluster.balancer.pick(), upload)
                            .await
                            .is_some_and(|offset| offset == open.offset_bytes as u64),
                        None => false,
                    };
                    if !resumable {
                        lost += 1;
                        problems.push(format!(
                            "accepted upload of video {} is neither completed nor resumable: video {status:?}, uploads {:?}",
                            row.id,
                            rows.iter().map(|u| (u.status, u.offset_bytes, u.declared_size)).collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }

        // Exactly one READY per READY video.
        let ready_events =
            event_outbox::Entity::find().filter(event_outbox::Column::Kind.eq("READY")).all(db).await.unwrap();
        let mut readies: HashMap<Uuid, usize> = HashMap::new();
        for event in &ready_events {
            *readies.entry(event.video_id).or_default() += 1;
        }
        for id in &ready_videos {
            match readies.get(id).copied().unwrap_or(0) {
                1 => {}
                0 => {
                    lost += 1;
                    problems.push(format!("video {id} is READY without a READY event"));
                }
                n => {
                    duplicated += n - 1;
                    problems.push(format!("video {id} has {n} READY events"));
                }
            }
        }

        // Feeds: every stored event of the user's videos after the start, once, in order.
        let mut reconnects = 0;
        for (user, log, task) in &self.feeds {
            let videos: HashSet<Uuid> = video::Entity::find()
                .filter(video::Column::OwnerId.eq(user.id))
                .all(db)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.id)
                .collect();
            let owed_rows: Vec<(i64, Uuid)> = event_outbox::Entity::find()
                .filter(event_outbox::Column::Id.gt(self.start_cursor))
                .order_by_asc(event_outbox::Column::Id)
                .all(db)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| videos.contains(&e.video_id))
                .map(|e| (e.id, e.video_id))
                .collect();
            let owed: Vec<i64> = owed_rows.iter().map(|(id, _)| *id).collect();
            let video_of: std::collections::HashMap<i64, Uuid> = owed_rows.into_iter().collect();
            let complete = super::cluster::time_until(Duration::from_secs(60), || async {
                let got: HashSet<i64> = log.lock().unwrap().cursors.iter().copied().collect();
                owed.iter().all(|c| got.contains(c))
            })
            .await;
            task.abort();
            let log = log.lock().unwrap();
            reconnects += log.reconnects;
            let got: HashSet<i64> = log.cursors.iter().copied().collect();
            if complete.is_none() {
                let missing: Vec<i64> = owed.iter().filter(|c| !got.contains(c)).copied().collect();
                lost += missing.len();
                problems.push(format!("feed of user {} missed events {missing:?}", user.id));
            }
            let dups = log.cursors.len() - got.len();
            if dups > 0 {
                duplicated += dups;
                problems.push(format!("feed of user {} got {dups} events twice: {:?}", user.id, log.cursors));
            }
            // In cursor order, across videos too: a client resumes after the last
            // cursor it received, so an older event sent after a newer one would be
            // lost to it (see `events::sequencer`).
            if !log.cursors.windows(2).all(|w| w[0] < w[1]) {
                let order: Vec<String> = log
                    .cursors
                    .iter()
                    .map(|c| {
                        format!(
                            "{c}@{}",
                            video_of.get(c).map_or_else(|| "?".to_string(), |v| v.to_string()[..8].to_string())
                        )
                    })
                    .collect();
                problems.push(format!("feed of user {} out of cursor order: {order:?}", user.id));
            }
        }

        // Webhooks: every delivery received, under its own id.
        let delivered = super::cluster::time_until(Duration::from_secs(120), || async {
            deliveries(db, &self.endpoints)
                .await
                .iter()
                .all(|d| d.status != webhook_delivery::WebhookDeliveryStatus::Pending)
        })
        .await;
        let rows = deliveries(db, &self.endpoints).await;
        let received: Vec<String> = self.hook.received.lock().unwrap().clone();
        let received_set: HashSet<&str> = received.iter().map(String::as_str).collect();
        let row_ids: HashSet<String> = rows.iter().map(|d| d.id.to_string()).collect();
        if delivered.is_none() {
            problems.push("webhook deliveries still pending".into());
        }
        for row in &rows {
            if !received_set.contains(row.id.to_string().as_str()) {
                lost += 1;
                problems
                    .push(format!("webhook delivery {} ({}) never received: {:?}", row.id, row.event_kind, row.status));
            }
        }
        for id in &received {
            if !row_ids.contains(id) {
                problems.push(format!("a webhook arrived with an unknown id {id:?}"));
            }
        }
        let redelivered = received.len() - received_set.len();

        problems.extend(self.observed.wrong.lock().unwrap().iter().cloned());
        problems.extend(self.observed.gave_up.lock().unwrap().iter().map(|g| format!("gave up: {g}")));
        problems.extend(cluster.panics().into_iter().map(|p| format!("panic: {p}")));
        if accepted.is_empty() {
            problems.push("no upload was accepted".into());
        }

        let row = Row {
            fault: fault.to_string(),
            workload: self.name,
            accepted: accepted.len(),
            lost,
            duplicated,
            recovery_secs: recovery.map(|d| d.as_secs_f64()),
            notes: format!(
                "{} READY, {failed} typed FAILED, {} jobs, {} feed events, {} feed reconnects, {} webhooks ({} redelivered), {} typed 503s retried, {} PATCHes interrupted",
                ready_videos.len(),
                jobs.len(),
                self.feeds.iter().map(|(_, l, _)| l.lock().unwrap().cursors.len()).sum::<usize>(),
                reconnects,
                rows.len(),
                redelivered,
                self.observed.unavailable.load(Ordering::Relaxed),
                self.observed.interrupted.lock().unwrap().len(),
            ) + &match self.observed.storage_full.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!(", {n} typed 507 STORAGE_FULL retried"),
            },
            problems,
            elapsed_secs: self.started.elapsed().as_secs_f64(),
        };
        row.report();
        row
    }
}

async fn deliveries(db: &sea_orm::DatabaseConnection, endpoints: &[Uuid]) -> Vec<webhook_delivery::Model> {
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.is_in(endpoints.to_vec()))
        .all(db)
        .await
        .unwrap()
}

pub(crate) async fn max_outbox_id(cluster: &Cluster) -> i64 {
    event_outbox::Entity::find()
        .order_by_desc(event_outbox::Column::Id)
        .one(&cluster.db)
        .await
        .ok()
        .flatten()
        .map_or(0, |row| row.id)
}

/// `HEAD` of an upload: its offset, or `None` when the call failed.
async fn head_offset(client: &reqwest::Client, base: &str, upload: &Accepted) -> Option<u64> {
    let res = client
        .head(format!("{base}{}", upload.path))
        .bearer_auth(&upload.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .ok()?;
    if res.status() != 200 {
        return None;
    }
    res.headers().get("upload-offset")?.to_str().ok()?.parse().ok()
}

/// One video: create it, open a tus upload, send every byte (resuming anywhere).
async fn upload_one(
    client: &reqwest::Client,
    balancer: &Balancer,
    observed: &Observed,
    user: &User,
    clip: &[u8],
    n: usize,
) -> Result<(), String> {
    let data = graphql(
        client,
        balancer,
        observed,
        Some(user.token.as_str()),
        "mutation($input: CreateVideoInput!) { createVideo(input: $input) { id } }",
        json!({ "input": { "title": format!("chaos {n}"), "visibility": "PRIVATE" } }),
    )
    .await?;
    let video = data["createVideo"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + CALL_DEADLINE;

    // Creation.
    let path = loop {
        let base = balancer.pick();
        let res = client
            .post(format!("{base}/uploads/"))
            .bearer_auth(&user.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", clip.len().to_string())
            .header(
                "Upload-Metadata",
                format!("videoId {},filename {},filetype {}", b64(&video), b64("clip.mp4"), b64("video/mp4")),
            )
            .send()
            .await;
        let outcome = match res {
            Err(_) => Outcome::Retry(Duration::from_millis(200)),
            Ok(res) if res.status() == 201 => {
                let location = res.headers()["location"].to_str().unwrap().to_string();
                let path = match url::Url::parse(&location) {
                    Ok(url) => url.path().to_string(),
                    Err(_) => location,
                };
                Outcome::Done(path)
            }
            Ok(res) => {
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                judge(observed, "tus POST", status, &headers, &res.text().await.unwrap_or_default())
            }
        };
        match outcome {
            Outcome::Done(path) => break path,
            Outcome::Fatal(message) => return Err(message),
            Outcome::Retry(wait) if Instant::now() < deadline => tokio::time::sleep(wait).await,
            Outcome::Retry(_) => return Err(format!("gave up creating the upload of {video}")),
        }
    };
    let accepted = Accepted { video: Uuid::parse_str(&video).unwrap(), path: path.clone(), token: user.token.clone() };
    observed.accepted.lock().unwrap().push(accepted.clone());

    // The bytes.
    let mut offset: Option<u64> = Some(0);
    let mut interrupted = false;
    // The server answered 204 to a PATCH that reached the end (so it completed).
    let mut completed = false;
    loop {
        if Instant::now() > deadline {
            return Err(format!("gave up sending the bytes of {video}"));
        }
        let base = balancer.pick();
        let at = match offset {
            Some(at) => at,
            None => match head_offset(client, &base, &accepted).await {
                Some(at) => at,
                None => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            },
        };
        if at == clip.len() as u64 && completed {
            observed.sent.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Every byte is in but the PATCH that carried the last ones was not answered
        // 204 (completion failed, e.g. on a full disk, and the session reopened): an
        // empty PATCH at the end completes it (204 if it already was).
        let end = (at as usize + PATCH_BYTES).min(clip.len());
        let piece = (end - at as usize).div_ceil(PIECES_PER_PATCH).max(1);
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            clip[at as usize..end].chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let body = futures::stream::iter(pieces).then(|piece| async move {
            tokio::time::sleep(PIECE_GAP).await;
            piece
        });
        *observed.in_flight.lock().unwrap().entry(base.clone()).or_default() += 1;
        let res = client
            .patch(format!("{base}{path}"))
            .bearer_auth(&user.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", at.to_string())
            .header("Content-Length", (end - at as usize).to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        *observed.in_flight.lock().unwrap().entry(base.clone()).or_default() -= 1;
        match res {
            Err(_) => {
                observed.interrupted.lock().unwrap().push((Instant::now(), base.clone()));
                interrupted = true;
                offset = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(res) if res.status() == 204 => {
                let new: u64 = res.headers()["upload-offset"].to_str().unwrap().parse().unwrap();
                completed = new == clip.len() as u64;
                observed.bytes.fetch_add(new - at, Ordering::Relaxed);
                offset = Some(new);
                if interrupted {
                    observed.resumed.lock().unwrap().push(Instant::now());
                    interrupted = false;
                }
            }
            Ok(res) if res.status() == 409 => {
                // An empty PATCH at the end meeting a completion under way (on another
                // replica, maybe one killed mid-way) is as far as a client can take it.
                completed |= at == clip.len() as u64;
                offset = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(res) => {
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                // A body cut short by the server (e.g. draining) keeps what arrived.
                let text = res.text().await.unwrap_or_default();
                match judge::<()>(observed, "tus PATCH", status, &headers, &text) {
                    Outcome::Fatal(message) if status != 408 => return Err(message),
                    Outcome::Retry(wait) => {
                        interrupted = true;
                        tokio::time::sleep(wait).await;
                    }
                    _ => {}
                }
                offset = None;
            }
        }
    }
}

/// Follow `videoEvents(after:)` on any replica, resuming after the last cursor.
async fn follow(balancer: Balancer, token: String, start: i64, log: Arc<Mutex<FeedLog>>) {
    let query = "subscription($after: String) { videoEvents(after: $after) { cursor videoId kind snapshot } }";
    let mut cursor = start;
    loop {
        let base = balancer.pick();
        let mut request = format!("{}/graphql/ws", base.replacen("http://", "ws://", 1)).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        if let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request)).await
        {
            let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
            let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": { "after": cursor.to_string() } } });
            let mut acked = false;
            if socket.send(Message::Text(init.to_string().into())).await.is_ok() {
                loop {
                    let message = match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(text)))) => {
                            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
                        }
                        Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => break,
                        Ok(Some(Ok(_))) => continue,
                    };
                    match message["type"].as_str() {
                        Some("connection_ack") if !acked => {
                            acked = true;
                            if socket.send(Message::Text(subscribe.to_string().into())).await.is_err() {
                                break;
                            }
                        }
                        Some("next") if message["payload"]["errors"].is_null() => {
                            let event = &message["payload"]["data"]["videoEvents"];
                            if event["snapshot"] == true {
                                continue;
                            }
                            if let Some(c) = event["cursor"].as_str().and_then(|c| c.parse::<i64>().ok()) {
                                log.lock().unwrap().cursors.push(c);
                                cursor = cursor.max(c);
                            }
                        }
                        Some("ping") => {
                            let _ = socket.send(Message::Text(json!({ "type": "pong" }).to_string().into())).await;
                        }
                        // An error, `complete`, or anything else: start over elsewhere.
                        _ => break,
                    }
                }
            }
        }
        log.lock().unwrap().reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One row of the fault table.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Row {
    pub(crate) fault: String,
    pub(crate) workload: String,
    pub(crate) accepted: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    /// From the end of the fault (or the kill) until the system served again, as the
    /// fault defines it; `None` when it never did.
    pub(crate) recovery_secs: Option<f64>,
    pub(crate) notes: String,
    pub(crate) problems: Vec<String>,
    pub(crate) elapsed_secs: f64,
}

impl Row {
    /// A fault that could not be set up here: recorded (and printed) as SKIPPED,
    /// never as survived; `scripts/test-chaos.sh` lists it loudly.
    pub(crate) fn skipped(fault: &str, why: &str) {
        eprintln!("\n!!! chaos: {fault}: SKIPPED: {why}\n");
        Row {
            fault: format!("{fault} (SKIPPED)"),
            workload: "none".into(),
            accepted: 0,
            lost: 0,
            duplicated: 0,
            recovery_secs: None,
            notes: format!("SKIPPED: {why}"),
            problems: Vec::new(),
            elapsed_secs: 0.0,
        }
        .report();
    }

    /// Print the row and append it (one JSON line) to `$REELHOUSE_CHAOS_REPORT`.
    fn report(&self) {
        let recovery = self.recovery_secs.map_or("never".to_string(), |s| format!("{s:.1} s"));
        eprintln!(
            "\nchaos | {} | {} | accepted {} | lost {} | duplicated {} | recovery {recovery} | {}",
            self.fault, self.workload, self.accepted, self.lost, self.duplicated, self.notes
        );
        for problem in &self.problems {
            eprintln!("chaos problem: {problem}");
        }
        if let Ok(path) = std::env::var("REELHOUSE_CHAOS_REPORT") {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            writeln!(file, "{}", serde_json::to_string(self).unwrap()).unwrap();
        }
    }

    /// The fault was survived: nothing lost, nothing duplicated, no broken promise.
    pub(crate) fn assert_survived(&self, cluster: &Cluster) {
        assert!(
            self.lost == 0 && self.duplicated == 0 && self.problems.is_empty() && self.recovery_secs.is_some(),
            "{}: lost {}, duplicated {}, recovery {:?}, problems: {:#?}\n{}",
            self.fault,
            self.lost,
            self.duplicated,
            self.recovery_secs,
            self.problems,
            cluster.logs()
        );
    }
}
