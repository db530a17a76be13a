//! The scenarios. Each drives the public API only, registers its own users, and fills
//! the shared [`Stats`]; [`run`] turns them into a [`Report`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures_util::stream::{self, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;
use serde_json::{json, Value};

use crate::api::{errors_to_anyhow, str_at, Api, Creds, Session, UploadMethod};
use crate::report::{ApiBench, FanoutSide, FanoutSummary, LoadPoint, Report, RssSummary};
use crate::stats::{Latencies, Stats};
use crate::ws::{settle, FanoutBook, Feed, SubscribeSpec, Subscriber, TrackView};

/// WebSocket connects in flight at once (a burst of 10k SYNs overflows accept queues).
const CONNECT_CONCURRENCY: usize = 128;
/// Registrations in flight at once (password hashing is deliberately slow).
const REGISTER_CONCURRENCY: usize = 8;
/// Longest a fan-out round waits for every subscriber to get its events.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Mixed reads and writes with JWTs; with --baseline, the API benchmark.
    Api,
    /// Concurrent uploads (presigned PUT, the ticket's tus URL, tus `POST /uploads/`, in turn).
    Uploads,
    /// N users each upload and wait for READY while M subscribers watch.
    Encodes,
    /// M subscribers on one busy video; with --baseline and --redis-url, the fan-out benchmark.
    Fanout,
    /// All of it at once for a long time, sampling the server's RSS.
    Soak,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Api => "api",
            Scenario::Uploads => "uploads",
            Scenario::Encodes => "encodes",
            Scenario::Fanout => "fanout",
            Scenario::Soak => "soak",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub target: String,
    pub scenario: Scenario,
    pub users: usize,
    pub subscribers: usize,
    pub duration: Duration,
    pub clip: Option<PathBuf>,
    /// Longest an upload may take to become READY before it counts as an error.
    pub ready_timeout: Duration,
    /// A `reelhouse-baseline` to compare against (API and fan-out benchmarks).
    pub baseline: Option<String>,
    /// The fan-out peer stack to compare against (load-tests/peer-node).
    pub peer: Option<String>,
    /// A second API process of the same deployment: in fanout, every other
    /// subscriber connects there (two instances sharing Redis).
    pub also_target: Option<String>,
    /// Redis the baseline subscribes to (fan-out benchmark).
    pub redis_url: Option<String>,
    /// The server's pid, for RSS when /metrics has none.
    pub server_pid: Option<u32>,
    /// Draw progress bars (only on a terminal).
    pub progress: bool,
    /// Longest one call waits in all on rate-limit refusals before it counts as an error.
    pub rate_limit_wait: Duration,
}

/// What every task of a run shares.
#[derive(Clone)]
struct Ctx {
    cfg: Arc<Config>,
    api: Api,
    stats: Arc<Stats>,
    clip: Arc<Vec<u8>>,
    run_id: String,
    bars: MultiProgress,
    /// Set when the run's duration is over; loops finish their current iteration.
    over: Arc<AtomicBool>,
}

impl Ctx {
    fn ws_url(&self) -> anyhow::Result<String> {
        self.api.ws_url()
    }

    fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }
}

/// Run one scenario to the end and report.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    let stats = Arc::new(Stats::default());
    let mut api = Api::new(&cfg.target, stats.clone())?;
    api.retry.max_total = cfg.rate_limit_wait;
    // Say at once when the target limits us (a default server does), not after the run.
    let rate_limit_note = api.probe_rate_limits().await;
    let needs_clip = !matches!(cfg.scenario, Scenario::Api) || cfg.baseline.is_some();
    let clip = if needs_clip { crate::clip::load_or_generate(cfg.clip.as_deref())?.1 } else { Vec::new() };
    let bars = MultiProgress::with_draw_target(if cfg.progress {
        ProgressDrawTarget::stderr_with_hz(5)
    } else {
        ProgressDrawTarget::hidden()
    });
    let ctx = Ctx {
        cfg: Arc::new(cfg.clone()),
        api,
        stats: stats.clone(),
        clip: Arc::new(clip),
        run_id: uuid::Uuid::new_v4().simple().to_string()[..10].to_string(),
        bars,
        over: Arc::new(AtomicBool::new(false)),
    };
    let rss = RssSampler::start(&ctx);
    let started = Instant::now();
    let (fanout, api_bench) = match cfg.scenario {
        Scenario::Api if cfg.baseline.is_some() => (None, Some(api_bench(&ctx).await?)),
        Scenario::Api => {
            with_clock(&ctx, api_mix(&ctx, cfg.users)).await?;
            (None, None)
        }
        Scenario::Uploads => {
            with_clock(&ctx, uploads(&ctx)).await?;
            (None, None)
        }
        Scenario::Encodes => {
            with_clock(&ctx, encodes(&ctx, cfg.users, cfg.subscribers)).await?;
            (None, None)
        }
        Scenario::Fanout => (Some(fanout(&ctx).await?), None),
        Scenario::Soak => {
            // All of it at once: API users, uploading users with watchers, and fan-out
            // rounds on one busy video watched by the other half of the subscribers.
            let api_users = (cfg.users / 2).max(1);
            let encode_users = cfg.users.saturating_sub(api_users).max(1);
            let fan_subscribers = (cfg.subscribers / 2).max(1);
            let encode_subscribers = cfg.subscribers.saturating_sub(fan_subscribers);
            let fan_cfg = Config { subscribers: fan_subscribers, baseline: None, ..cfg.clone() };
            let fan_ctx = Ctx { cfg: Arc::new(fan_cfg), ..ctx.clone() };
            let (a, e, f) = with_clock(&ctx, async {
                tokio::join!(
                    api_mix(&ctx, api_users),
                    encodes(&ctx, encode_users, encode_subscribers),
                    fanout(&fan_ctx)
                )
            })
            .await;
            // A part that gave up is an error of the run, not the end of its report.
            for (part, outcome) in [("api", a), ("encodes", e)] {
                if let Err(err) = outcome {
                    ctx.stats.count_error(format!("soak: the {part} part stopped: {err:#}"));
                }
            }
            let fanout = f.map_err(|err| ctx.stats.count_error(format!("soak: the fanout part stopped: {err:#}"))).ok();
            (fanout, None)
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = Report::from_stats(&stats, elapsed);
    report.scenario = cfg.scenario.name().into();
    report.target = cfg.target.clone();
    report.users = cfg.users;
    report.subscribers = cfg.subscribers;
    report.fanout = fanout;
    report.api_bench = api_bench;
    report.rss = rss.finish().await;
    if report.rate_limit_note.is_none() {
        report.rate_limit_note = rate_limit_note;
    }
    let _ = ctx.bars.clear();
    Ok(report)
}

/// Run `work` while a bar shows the time left and the counters; flags the end of the duration.
async fn with_clock<T>(ctx: &Ctx, work: impl std::future::Future<Output = T>) -> T {
    let bar = ctx.bars.add(ProgressBar::new(ctx.cfg.duration.as_secs().max(1)));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(ctx.cfg.scenario.name());
    let ticker = {
        let (ctx, bar) = (ctx.clone(), bar.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let s = &ctx.stats;
                bar.set_position(started.elapsed().as_secs().min(ctx.cfg.duration.as_secs()));
                bar.set_message(format!(
                    "req {} err {} 429 {} events {} lost {} ready {}",
                    Stats::get(&s.requests),
                    Stats::get(&s.errors),
                    Stats::get(&s.rate_limited),
                    Stats::get(&s.events_received),
                    Stats::get(&s.lost_events),
                    Stats::get(&s.videos_ready)
                ));
                if started.elapsed() >= ctx.cfg.duration {
                    ctx.over.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let out = work.await;
    ticker.abort();
    bar.finish_and_clear();
    out
}

/// Register `n` users of this run (emails carry the run id and `role`); each session
/// renews itself for as long as the run lasts.
async fn register_users(ctx: &Ctx, n: usize, role: &str) -> anyhow::Result<Vec<Creds>> {
    let bar = ctx.bars.add(ProgressBar::new(n as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix("register");
    let sessions: Vec<anyhow::Result<Session>> = stream::iter(0..n)
        .map(|i| {
            let (api, run_id, role, bar) = (ctx.api.clone(), ctx.run_id.clone(), role.to_string(), bar.clone());
            async move {
                let email = format!("load-{run_id}-{role}-{i}@example.com");
                let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
                let session = api.register(&email, &password, &format!("load {role} {i}")).await;
                bar.inc(1);
                session.with_context(|| format!("registering {email}"))
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    sessions.into_iter().map(|s| s.map(|session| Creds::new(&ctx.api, session))).collect()
}

// ---------------------------------------------------------------------------------
// api: mixed reads and writes

const VIDEO_QUERY: &str = "query Video($id: ID!) { video(id: $id) { id title description tags visibility status duration width height createdAt updatedAt owner { id } } }";

async fn api_mix(ctx: &Ctx, users: usize) -> anyhow::Result<()> {
    let sessions = register_users(ctx, users, "api").await?;
    let tasks = sessions.into_iter().enumerate().map(|(i, creds)| {
        let ctx = ctx.clone();
        tokio::spawn(async move { api_user(&ctx, i, creds).await })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.map_err(|e| anyhow!("api user task: {e}"))??;
    }
    Ok(())
}

async fn api_user(ctx: &Ctx, index: usize, creds: Creds) -> anyhow::Result<()> {
    let api = &ctx.api;
    let user_id = creds.user_id().await;
    let mut videos = Vec::new();
    for n in 0..2 {
        videos.push(api.create_video(&creds.token().await, &format!("api {index}.{n}"), "PUBLIC").await?);
    }
    let mut iteration = 0u64;
    while !ctx.is_over() {
        let access_token = creds.token().await;
        let token = Some(access_token.as_str());
        let roll: u32 = rand::thread_rng().gen_range(0..100);
        let pick = videos[rand::thread_rng().gen_range(0..videos.len())].clone();
        iteration += 1;
        match roll {
            0..50 => {
                if let Ok(data) = api.gql(token, VIDEO_QUERY, json!({ "id": pick })).await {
                    if data.pointer("/video/id").and_then(Value::as_str) != Some(pick.as_str()) {
                        ctx.stats.count_error(format!("video({pick}) answered {data}"));
                    }
                }
            }
            50..70 => {
                let q = "query Videos { videos(first: 10) { edges { cursor node { id title status } } pageInfo { hasNextPage endCursor } } }";
                let _ = api.gql(token, q, json!({})).await;
            }
            70..80 => {
                if let Ok(data) = api.gql(token, "query Me { me { id email role } }", json!({})).await {
                    if data.pointer("/me/id").and_then(Value::as_str) != Some(user_id.as_str()) {
                        ctx.stats.count_error(format!("me answered {data}"));
                    }
                }
            }
            80..95 => {
                let q =
                    "mutation Update($id: ID!, $i: UpdateVideoInput!) { updateVideo(id: $id, input: $i) { id title } }";
                let title = format!("api {index} #{iteration}");
                if let Ok(data) = api.gql(token, q, json!({ "id": pick, "i": { "title": title } })).await {
                    if data.pointer("/updateVideo/title").and_then(Value::as_str) != Some(title.as_str()) {
                        ctx.stats.count_error(format!("updateVideo answered {data}"));
                    }
                }
            }
            _ => {
                // Keep the catalogue from growing without bound on long runs.
                if videos.len() < 20 {
                    if let Ok(id) =
                        api.create_video(&access_token, &format!("api {index} #{iteration}"), "PUBLIC").await
                    {
                        videos.push(id);
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// uploads: concurrent uploads, both paths

async fn uploads(ctx: &Ctx) -> anyhow::Result<()> {
    let sessions = register_users(ctx, ctx.cfg.users, "upload").await?;
    let tasks = sessions.into_iter().enumerate().map(|(i, creds)| {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let token = creds.token().await;
                let method = UploadMethod::nth(i + n);
                if let Ok(video) = ctx.api.create_video(&token, &format!("upload {i}.{n}"), "PRIVATE").await {
                    let _ = ctx.api.upload(&token, &video, &ctx.clip, method).await;
                }
                n += 1;
                if ctx.is_over() {
                    break;
                }
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.map_err(|e| anyhow!("upload task: {e}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// encodes: upload and wait for READY while subscribers watch

async fn encodes(ctx: &Ctx, users: usize, subscribers: usize) -> anyhow::Result<()> {
    let sessions = register_users(ctx, users, "encode").await?;
    // Watchers use their own accounts (the videos are PUBLIC), a few shared by many sockets.
    let watchers = if subscribers > 0 { register_users(ctx, subscribers.clamp(1, 8), "watch").await? } else { vec![] };
    let watchers = Arc::new(watchers);
    let tasks = sessions.into_iter().enumerate().map(|(i, owner)| {
        let ctx = ctx.clone();
        let watchers = watchers.clone();
        // Spread the subscribers over the users, the first ones taking the remainder.
        let mine = subscribers / users + usize::from(i < subscribers % users);
        tokio::spawn(async move { encode_user(&ctx, i, owner, mine, &watchers).await })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.map_err(|e| anyhow!("encode task: {e}"))??;
    }
    Ok(())
}

async fn encode_user(
    ctx: &Ctx,
    index: usize,
    owner: Creds,
    subscribers: usize,
    watchers: &[Creds],
) -> anyhow::Result<()> {
    let mut n = 0usize;
    loop {
        let method = UploadMethod::nth(index + n);
        let _ = encode_once(ctx, &owner, &format!("encode {index}.{n}"), method, subscribers, watchers).await;
        n += 1;
        if ctx.is_over() {
            return Ok(());
        }
    }
}

/// One video: create, subscribe (owner + `subscribers` watchers), upload, wait for READY,
/// then check every subscriber got every stored event exactly once.
async fn encode_once(
    ctx: &Ctx,
    creds: &Creds,
    title: &str,
    method: UploadMethod,
    subscribers: usize,
    watchers: &[Creds],
) -> anyhow::Result<()> {
    let api = &ctx.api;
    let token = creds.token().await;
    let video = api.create_video(&token, title, "PUBLIC").await?;
    let url = ctx.ws_url()?;
    let owner_spec = SubscribeSpec {
        url: url.clone(),
        auth: Some(creds.clone()),
        video_id: video.clone(),
        feed: Feed::Progress,
        one_ready: true,
        retry: ctx.api.retry,
    };
    let owner = Subscriber::start(owner_spec, ctx.stats.clone(), None).await?;
    let mut watching = Vec::new();
    for k in 0..subscribers {
        let auth = watchers.get(k % watchers.len().max(1)).cloned();
        let spec = SubscribeSpec {
            url: url.clone(),
            auth,
            video_id: video.clone(),
            feed: Feed::Progress,
            one_ready: true,
            retry: ctx.api.retry,
        };
        if let Ok(sub) = Subscriber::start(spec, ctx.stats.clone(), None).await {
            watching.push(sub);
        }
    }
    if let Err(err) = api.upload(&token, &video, &ctx.clip, method).await {
        for sub in std::iter::once(owner).chain(watching) {
            let _ = sub.stop().await;
        }
        return Err(err);
    }
    let uploaded = Instant::now();
    let deadline = uploaded + ctx.cfg.ready_timeout;
    let outcome = loop {
        let view = owner.snapshot();
        if let Some(kind) = view.terminal.clone() {
            break Some((kind, view));
        }
        if view.ended || Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match &outcome {
        Some((kind, view)) if kind == "READY" => {
            ctx.stats.videos_ready.fetch_add(1, Ordering::Relaxed);
            if let Some(at) = view.ready_at {
                ctx.stats.time_to_ready.record(at.saturating_duration_since(uploaded));
            }
        }
        Some((kind, _)) => ctx.stats.count_error(format!("video {video} ended {kind}, not READY")),
        None => ctx.stats.count_error(format!(
            "video {video} not READY within {}s (stream ended: {:?})",
            ctx.cfg.ready_timeout.as_secs(),
            owner.snapshot().error
        )),
    }
    // videoProgress ends after READY: give the watchers a moment to get theirs.
    let wait_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < wait_until && !watching.iter().all(|s| s.snapshot().ended) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let final_seq = final_seq(ctx, creds, &video).await?;
    for sub in std::iter::once(owner).chain(watching) {
        let track = sub.stop().await;
        settle(&ctx.stats, &track, final_seq);
    }
    Ok(())
}

/// The video's last stored `seq`, from the snapshot of a fresh subscription.
async fn final_seq(ctx: &Ctx, creds: &Creds, video: &str) -> anyhow::Result<i64> {
    let spec = SubscribeSpec {
        url: ctx.ws_url()?,
        auth: Some(creds.clone()),
        video_id: video.to_string(),
        feed: Feed::Events,
        one_ready: false,
        retry: ctx.api.retry,
    };
    // The probe is book-keeping, not load: its counters go to a scratch Stats.
    let probe = Subscriber::start(spec, Arc::new(Stats::default()), None).await?;
    let track = probe.stop().await;
    let seq = track.lock().map_err(|_| anyhow!("poisoned track"))?.snapshot_seq;
    seq.ok_or_else(|| anyhow!("no snapshot for {video}"))
}

// ---------------------------------------------------------------------------------
// fanout: M subscribers on one busy video

async fn fanout(ctx: &Ctx) -> anyhow::Result<FanoutSummary> {
    let cfg = &ctx.cfg;
    let api = &ctx.api;
    let owner = register_users(ctx, 1, "owner").await?.remove(0);
    let viewers = register_users(ctx, cfg.subscribers.clamp(1, 16), "viewer").await?;
    let token = owner.token().await;
    let video = api.create_video(&token, "fan-out", "PUBLIC").await?;
    let url = ctx.ws_url()?;
    // The owner's own feed tells when a round's events are stored and what seq they reach.
    let owner_spec = SubscribeSpec {
        url: url.clone(),
        auth: Some(owner.clone()),
        video_id: video.clone(),
        feed: Feed::Events,
        one_ready: false,
        retry: ctx.api.retry,
    };
    let owner_sub = Subscriber::start(owner_spec, Arc::new(Stats::default()), None).await?;
    api.upload(&token, &video, &ctx.clip, UploadMethod::Presigned).await?;
    wait_for(&owner_sub, cfg.ready_timeout, |v| v.terminal.is_some()).await;
    if owner_sub.snapshot().terminal.as_deref() != Some("READY") {
        return Err(anyhow!("the fan-out video did not become READY: {:?}", owner_sub.snapshot()));
    }

    let rss_before = server_rss(ctx).await;
    let book = Arc::new(FanoutBook::default());
    let started = Instant::now();
    // With a second instance, every other subscriber is served by it.
    let also_url = match &cfg.also_target {
        Some(target) => Some(crate::api::Api::new(target, ctx.stats.clone())?.ws_url()?),
        None => None,
    };
    let specs = (0..cfg.subscribers).map(|k| SubscribeSpec {
        url: match (&also_url, k % 2) {
            (Some(also), 1) => also.clone(),
            _ => url.clone(),
        },
        auth: viewers.get(k % viewers.len()).cloned(),
        video_id: video.clone(),
        feed: Feed::Events,
        one_ready: false,
        retry: ctx.api.retry,
    });
    let subs = connect_all(ctx, &ctx.stats, specs, Some(book.clone()), "connect").await;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server_rss(ctx).await;

    // Rounds: `transcode` stores PROCESSING at once; `cancelJob` stores CANCELLED (or, if
    // the job already finished, READY came instead). Both reach every subscriber.
    let rounds_started = Instant::now();
    let mut rounds = 0u64;
    let mut last_seq = owner_sub.snapshot().last_seq;
    let bar = ctx.bars.add(ProgressBar::new(cfg.duration.as_secs().max(1)));
    bar.set_prefix("fanout");
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // At least one round, however short the duration (a failing call is counted and retried).
    while rounds_started.elapsed() < cfg.duration || (rounds == 0 && rounds_started.elapsed() < ROUND_TIMEOUT) {
        let token = owner.token().await;
        let transcode = api
            .gql(
                Some(&token),
                "mutation Transcode($id: ID!) { transcode(videoId: $id, preset: LOW) { id status } }",
                json!({ "id": video }),
            )
            .await;
        let Ok(job) = transcode else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let job_id = str_at(&job, "/transcode/id")?;
        let _ = api
            .gql_expecting(
                Some(&token),
                "mutation Cancel($id: ID!) { cancelJob(id: $id) { id status } }",
                json!({ "id": job_id }),
                &["CONFLICT"],
            )
            .await;
        let before = last_seq;
        wait_for(&owner_sub, ROUND_TIMEOUT, |v| {
            v.last_seq > before && matches!(v.last_kind.as_deref(), Some("CANCELLED" | "READY" | "FAILED"))
        })
        .await;
        last_seq = owner_sub.snapshot().last_seq;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while Instant::now() < deadline && !subs.iter().all(|s| s.snapshot().last_seq >= last_seq) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rounds += 1;
        bar.set_position(rounds_started.elapsed().as_secs().min(cfg.duration.as_secs()));
        bar.set_message(format!("round {rounds}, events {}", Stats::get(&ctx.stats.events_received)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    let final_seq = owner_sub.snapshot().last_seq;
    let lost_before = Stats::get(&ctx.stats.lost_events);
    stop_all(ctx, subs, final_seq).await;
    let _ = owner_sub.stop().await;
    let reelhouse = fanout_side(
        &book,
        cfg.subscribers,
        Stats::get(&ctx.stats.lost_events) - lost_before,
        connect_s,
        rss_before,
        rss_after,
    );

    let baseline = match (&cfg.baseline, &cfg.redis_url) {
        (Some(base), Some(redis)) => {
            Some(fanout_other(ctx, Other::Baseline, base, redis, &book, rounds.max(1) * 2).await?)
        }
        _ => None,
    };
    let peer = match (&cfg.peer, &cfg.redis_url) {
        (Some(peer), Some(redis)) => Some(fanout_other(ctx, Other::Peer, peer, redis, &book, rounds.max(1) * 2).await?),
        _ => None,
    };
    let ratio = |other: &Option<FanoutSide>, f: fn(&crate::stats::Percentiles) -> f64| {
        other
            .as_ref()
            .filter(|b| f(&b.last_client_ms) > 0.0)
            .map(|b| f(&reelhouse.last_client_ms) / f(&b.last_client_ms))
    };
    Ok(FanoutSummary {
        ratio_p50: ratio(&baseline, |p| p.p50),
        ratio_p99: ratio(&baseline, |p| p.p99),
        peer_ratio_p50: ratio(&peer, |p| p.p50),
        peer_ratio_p99: ratio(&peer, |p| p.p99),
        reelhouse,
        baseline,
        peer,
    })
}

fn fanout_side(
    book: &FanoutBook,
    subscribers: usize,
    lost: u64,
    connect_s: f64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
) -> FanoutSide {
    let last = Latencies::default();
    let mut events = 0;
    for (_, deliveries, max_ms) in book.all() {
        if deliveries >= subscribers {
            events += 1;
            last.record_signed_millis(max_ms);
        }
    }
    FanoutSide {
        subscribers,
        events,
        last_client_ms: last.summary(),
        delivery_ms: book.deliveries.summary(),
        lost_events: lost,
        connect_s,
        rss_per_subscriber_kib: match (rss_before, rss_after) {
            (Some(b), Some(a)) if subscribers > 0 => Some(a.saturating_sub(b) as f64 / subscribers as f64),
            _ => None,
        },
    }
}

/// What the same fan-out is compared against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Other {
    /// `reelhouse-baseline`: a raw Redis subscriber broadcasting the bytes of a real
    /// `next` message (with a fresh `at` and cursor) to bare WebSockets.
    Baseline,
    /// The peer stack (load-tests/peer-node): the event itself, published on Redis,
    /// executed by graphql-js for each graphql-ws subscriber with the same selection.
    Peer,
}

impl Other {
    fn label(self) -> &'static str {
        match self {
            Other::Baseline => "baseline",
            Other::Peer => "peer",
        }
    }

    fn channel(self) -> &'static str {
        match self {
            Other::Baseline => "reelhouse-baseline",
            Other::Peer => "reelhouse-peer",
        }
    }
}

/// The same number of events through the baseline or the peer, published on Redis
/// one at a time as reelhouse's were (each waits for every subscriber or a timeout).
async fn fanout_other(
    ctx: &Ctx,
    other: Other,
    base: &str,
    redis_url: &str,
    sample: &FanoutBook,
    events: u64,
) -> anyhow::Result<FanoutSide> {
    let cfg = &ctx.cfg;
    let template: Value = sample
        .sample_message
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| {
            json!({ "id": "1", "type": "next", "payload": { "data": { "videoEvents": {
            "cursor": "0", "videoId": "00000000-0000-0000-0000-000000000000", "kind": "PROCESSING", "at": "", "seq": 0,
            "status": "READY", "snapshot": false, "error": null, "progress": null } } } })
        });
    let client = redis::Client::open(redis_url).context("--redis-url")?;
    let mut conn = client.get_multiplexed_async_connection().await.context("connecting to redis")?;
    let path = if other == Other::Peer { "/graphql/ws" } else { "/ws" };
    let mut ws = reqwest::Url::parse(base).with_context(|| format!("--{}", other.label()))?.join(path)?;
    let scheme = if ws.scheme() == "https" { "wss" } else { "ws" };
    ws.set_scheme(scheme).map_err(|_| anyhow!("bad --{}", other.label()))?;
    let book = Arc::new(FanoutBook::default());
    let rss_before = None;
    let started = Instant::now();
    let specs = (0..cfg.subscribers).map(|_| SubscribeSpec {
        url: ws.to_string(),
        auth: None,
        video_id: other.label().into(),
        feed: if other == Other::Peer { Feed::Events } else { Feed::Raw },
        one_ready: false,
        retry: ctx.api.retry,
    });
    // The baseline's deliveries stay out of the run's counters (they describe reelhouse);
    // its errors are added to the run's at the end.
    let scratch = Arc::new(Stats::default());
    let subs = connect_all(ctx, &scratch, specs, Some(book.clone()), other.label()).await;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for seq in 1..=events as i64 {
        let mut message = template.clone();
        if let Some(event) = message.pointer_mut("/payload/data/videoEvents") {
            event["at"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            event["cursor"] = json!(format!("b{seq}"));
            event["seq"] = json!(seq);
            event["snapshot"] = json!(false);
        }
        // The baseline sends the bytes on; the peer gets the event and renders it.
        let payload = match other {
            Other::Baseline => message.to_string(),
            Other::Peer => message.pointer("/payload/data/videoEvents").cloned().unwrap_or_default().to_string(),
        };
        let _: i64 =
            redis::cmd("PUBLISH").arg(other.channel()).arg(payload).query_async(&mut conn).await.context("PUBLISH")?;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while Instant::now() < deadline && book.deliveries(&format!("b{seq}")) < subs.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Baseline losses are reported on its side only; the run's lost_events are reelhouse's.
    let mut lost = 0;
    for sub in subs {
        let track = sub.stop().await;
        lost += settle(&scratch, &track, events as i64);
    }
    let other_errors = Stats::get(&scratch.errors);
    let first = scratch.error_samples().into_iter().next().unwrap_or_default();
    ctx.stats.count_errors(other_errors, format!("{}: {other_errors} errors, e.g. {first}", other.label()));
    Ok(fanout_side(&book, cfg.subscribers, lost, connect_s, rss_before, None))
}

/// Connect many subscribers, a bounded number at a time, with a progress bar.
async fn connect_all(
    ctx: &Ctx,
    stats: &Arc<Stats>,
    specs: impl Iterator<Item = SubscribeSpec>,
    book: Option<Arc<FanoutBook>>,
    label: &str,
) -> Vec<Subscriber> {
    let specs: Vec<SubscribeSpec> = specs.collect();
    let bar = ctx.bars.add(ProgressBar::new(specs.len() as u64));
    bar.set_prefix(label.to_string());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} subscribers")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let subs: Vec<Subscriber> = stream::iter(specs)
        .map(|spec| {
            let (stats, book, bar) = (stats.clone(), book.clone(), bar.clone());
            async move {
                let sub = Subscriber::start(spec, stats, book).await;
                bar.inc(1);
                sub.ok()
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .filter_map(|s| async move { s })
        .collect()
        .await;
    bar.finish_and_clear();
    subs
}

async fn stop_all(ctx: &Ctx, subs: Vec<Subscriber>, final_seq: i64) {
    let stats = ctx.stats.clone();
    stream::iter(subs)
        .for_each_concurrent(CONNECT_CONCURRENCY, |sub| {
            let stats = stats.clone();
            async move {
                let track = sub.stop().await;
                settle(&stats, &track, final_seq);
            }
        })
        .await;
}

async fn wait_for(sub: &Subscriber, timeout: Duration, done: impl Fn(&TrackView) -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let view = sub.snapshot();
        if done(&view) || view.ended {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------
// api benchmark: video(id) with a JWT vs the bare actix endpoint

async fn api_bench(ctx: &Ctx) -> anyhow::Result<ApiBench> {
    let cfg = &ctx.cfg;
    let base = cfg.baseline.clone().ok_or_else(|| anyhow!("--baseline is required"))?;
    let token = register_users(ctx, 1, "bench").await?.remove(0).token().await;
    let video = ctx.api.create_video(&token, "api bench", "PUBLIC").await?;
    let (result, body) = ctx.api.gql_raw(Some(&token), VIDEO_QUERY, json!({ "id": video }), &[]).await;
    result.map_err(errors_to_anyhow)?;
    let baseline = reqwest::Url::parse(&base).context("--baseline")?;
    let set = ctx.api.http.put(baseline.join("/body")?).body(body.clone()).send().await?;
    if !set.status().is_success() {
        return Err(anyhow!("the baseline refused its body: {}", set.status()));
    }
    let phase = cfg.duration;
    let concurrency = cfg.users.max(1);
    let mut target = Target { http: ctx.api.http.clone(), token: token.clone(), video: video.clone(), hash: None };
    let reel_url = ctx.api.url("/graphql")?;
    let bare_url = baseline.join("/graphql")?;
    // Warm both (connections, caches), then measure; same client, same request bytes.
    let _ = closed_loop(&target, &bare_url, &body, concurrency, Duration::from_secs(2)).await;
    let _ = closed_loop(&target, &reel_url, &body, concurrency, Duration::from_secs(2)).await;
    let baseline_max = closed_loop(&target, &bare_url, &body, concurrency, phase).await;
    let reelhouse_max = closed_loop(&target, &reel_url, &body, concurrency, phase).await;
    // The same call as an Apollo persisted query (registered once, then by hash only).
    let reelhouse_max_persisted = {
        let hash = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(VIDEO_QUERY.as_bytes()));
        let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
        let registered = target
            .http
            .post(reel_url.clone())
            .bearer_auth(&target.token)
            .json(&json!({ "query": VIDEO_QUERY, "variables": { "id": target.video }, "extensions": persisted }))
            .send()
            .await;
        let registered = match registered {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok_and(|b| b.as_ref() == body.as_slice()),
            _ => false,
        };
        if registered {
            target.hash = Some(hash);
            let _ = closed_loop(&target, &reel_url, &body, concurrency, Duration::from_secs(1)).await;
            let point = closed_loop(&target, &reel_url, &body, concurrency, phase).await;
            target.hash = None;
            Some(point)
        } else {
            // An older server without persisted queries: no row.
            None
        }
    };
    let half = reelhouse_max.rps / 2.0;
    let baseline_half = open_loop(&target, &bare_url, &body, half, phase).await;
    let reelhouse_half = open_loop(&target, &reel_url, &body, half, phase).await;
    // The same half load while uploads are encoding (a few users uploading in a loop).
    let encoding = {
        let ctx2 = ctx.clone();
        let encoders = tokio::spawn(async move { encodes(&ctx2, 2, 0).await });
        // Let the first uploads reach the encoder before measuring.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let point = open_loop(&target, &reel_url, &body, half, phase).await;
        ctx.over.store(true, Ordering::Relaxed);
        let _ = encoders.await;
        point
    };
    let ratio = if reelhouse_half.latency_ms.p99 > 0.0 {
        Some(encoding.latency_ms.p99 / reelhouse_half.latency_ms.p99)
    } else {
        None
    };
    for point in [&baseline_max, &reelhouse_max, &baseline_half, &reelhouse_half, &encoding]
        .into_iter()
        .chain(reelhouse_max_persisted.as_ref())
    {
        ctx.stats
            .count_errors(point.errors, format!("{} failed video(id) calls in an API benchmark phase", point.errors));
        ctx.stats.requests.fetch_add(point.requests, Ordering::Relaxed);
    }
    let rps_ratio_persisted =
        reelhouse_max_persisted.as_ref().map(|p| if baseline_max.rps > 0.0 { p.rps / baseline_max.rps } else { 0.0 });
    Ok(ApiBench {
        concurrency,
        response_bytes: body.len(),
        rps_ratio: if baseline_max.rps > 0.0 { reelhouse_max.rps / baseline_max.rps } else { 0.0 },
        half_load_rps: half,
        baseline_max,
        reelhouse_max,
        baseline_half,
        reelhouse_half,
        reelhouse_half_encoding: Some(encoding),
        encoding_p99_ratio: ratio,
        rps_ratio_persisted,
        reelhouse_max_persisted,
    })
}

struct Target {
    http: reqwest::Client,
    token: String,
    video: String,
    /// Send the document by this hash only (Apollo persisted query).
    hash: Option<String>,
}

impl Target {
    /// One `video(id)` call; `Ok` only for a 200 whose body is exactly the expected bytes
    /// (for reelhouse that also means no `errors`).
    async fn call(&self, url: &reqwest::Url, expected: &[u8]) -> Result<(), ()> {
        let request = match &self.hash {
            Some(hash) => json!({
                "variables": { "id": self.video },
                "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } },
            }),
            None => json!({ "query": VIDEO_QUERY, "variables": { "id": self.video } }),
        };
        let response =
            self.http.post(url.clone()).bearer_auth(&self.token).json(&request).send().await.map_err(|_| ())?;
        if !response.status().is_success() {
            return Err(());
        }
        let bytes = response.bytes().await.map_err(|_| ())?;
        if bytes.as_ref() == expected {
            Ok(())
        } else {
            Err(())
        }
    }
}

async fn closed_loop(
    target: &Target,
    url: &reqwest::Url,
    expected: &[u8],
    concurrency: usize,
    time: Duration,
) -> LoadPoint {
    let latencies = Arc::new(Latencies::default());
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (latencies, errors) = (latencies.clone(), errors.clone());
        async move {
            while started.elapsed() < time {
                let t = Instant::now();
                if target.call(url, expected).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.record(t.elapsed());
            }
        }
    });
    futures_util::future::join_all(workers).await;
    point(&latencies, errors.load(Ordering::Relaxed), started.elapsed())
}

/// Requests at a fixed rate; latency from the scheduled start (no coordinated omission).
async fn open_loop(target: &Target, url: &reqwest::Url, expected: &[u8], rps: f64, time: Duration) -> LoadPoint {
    let latencies = Latencies::default();
    let errors = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rps.max(1.0));
    let count = (time.as_secs_f64() * rps.max(1.0)) as u64;
    stream::iter(0..count)
        .for_each_concurrent(4096, |i| {
            let (latencies, errors) = (&latencies, &errors);
            async move {
                let scheduled = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                if target.call(url, expected).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.record(scheduled.elapsed());
            }
        })
        .await;
    point(&latencies, errors.load(Ordering::Relaxed), started.elapsed())
}

fn point(latencies: &Latencies, errors: u64, elapsed: Duration) -> LoadPoint {
    let summary = latencies.summary();
    LoadPoint {
        requests: summary.count,
        errors,
        rps: summary.count as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: summary,
    }
}

// ---------------------------------------------------------------------------------
// server RSS

async fn server_rss(ctx: &Ctx) -> Option<u64> {
    if let Some(kib) = ctx.api.rss_from_metrics().await {
        return Some(kib);
    }
    ctx.cfg.server_pid.and_then(crate::api::rss_from_proc)
}

/// Samples the server's RSS every few seconds for the whole run.
struct RssSampler {
    task: tokio::task::JoinHandle<Option<RssSummary>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RssSampler {
    fn start(ctx: &Ctx) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let mut summary: Option<RssSummary> = None;
            let started = Instant::now();
            loop {
                let (kib, source) = match ctx.api.rss_from_metrics().await {
                    Some(kib) => (Some(kib), "metrics"),
                    None => (ctx.cfg.server_pid.and_then(crate::api::rss_from_proc), "proc"),
                };
                if let Some(kib) = kib {
                    let s = summary.get_or_insert_with(|| RssSummary {
                        source: source.into(),
                        first_kib: kib,
                        ..Default::default()
                    });
                    s.samples += 1;
                    s.last_kib = kib;
                    s.peak_kib = s.peak_kib.max(kib);
                    let minute = (started.elapsed().as_secs() / 60) as usize;
                    if s.per_minute_peak_kib.len() <= minute {
                        s.per_minute_peak_kib.resize(minute + 1, 0);
                    }
                    s.per_minute_peak_kib[minute] = s.per_minute_peak_kib[minute].max(kib);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stopped.changed() => return summary,
                }
            }
        });
        Self { task, stop }
    }

    async fn finish(self) -> Option<RssSummary> {
        let _ = self.stop.send(true);
        self.task.await.ok().flatten()
    }
}
