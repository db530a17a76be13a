//! `reelhouse-fuzz`: fuzz a running reelhouse server's entry points (GraphQL over
//! HTTP POST/GET and graphql-transport-ws, tus, `/media`, `/storage`) and fail on any
//! broken rule (see `reelhouse_load::fuzz`). Prints its seed; `--seed` replays a run.
//!
//! Exit status: 0 when every rule held, 1 when one broke (or the run could not be
//! set up), 2 for bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use futures_util::FutureExt;
use reelhouse_load::api::{errors_to_anyhow, rss_from_proc, str_at, Api, UploadMethod};
use reelhouse_load::fuzz::{self, graphql, media, schema, tus, Tally};
use reelhouse_load::stats::Stats;
use serde_json::{json, Value};
use tokio::sync::RwLock;

#[derive(Debug, Parser)]
#[command(name = "reelhouse-fuzz", about = "Fuzz a reelhouse server's GraphQL, tus, /media and /storage entry points")]
struct Cli {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    target: String,
    /// The schema to generate documents from.
    #[arg(long, default_value = "schema.graphql")]
    schema: PathBuf,
    /// The run's seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// GraphQL documents to send (over POST, GET and WebSocket together).
    #[arg(long, default_value_t = 10_000)]
    graphql_cases: u64,
    /// tus sequences (each a creation and up to a dozen steps).
    #[arg(long, default_value_t = 300)]
    tus_sequences: u64,
    /// Requests at /media and /storage.
    #[arg(long, default_value_t = 3000)]
    media_cases: u64,
    /// Replay only this GraphQL case (with the run's --seed).
    #[arg(long)]
    only: Option<u64>,
    /// Concurrent requests per target.
    #[arg(long, default_value_t = 6)]
    concurrency: u64,
    /// The server's pid, to read its RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Fail when the server's RSS grew by more than this over the run (MiB).
    #[arg(long, default_value_t = 128)]
    rss_bound_mib: u64,
    /// The clip to upload for /media (default: a 2 s 320x240 one made with GStreamer).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// How long the clip may take to become READY.
    #[arg(long, default_value_t = 300)]
    ready_timeout_secs: u64,
    /// The seed corpus (graphql/*.graphql, media-paths.txt), sent before the generated cases.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Write the report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("reelhouse-fuzz: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("reelhouse-fuzz: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Split `0..n` (or just `only`) among `workers`.
fn shares(n: u64, workers: u64, only: Option<u64>) -> Vec<Vec<u64>> {
    if let Some(only) = only {
        return vec![vec![only]];
    }
    let workers = workers.max(1);
    (0..workers).map(|w| (w..n).step_by(workers as usize).collect()).collect()
}

async fn login(api: &Api, email: &str, password: &str) -> anyhow::Result<String> {
    let data = api
        .gql(
            None,
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": email, "password": password } }),
        )
        .await
        .map_err(errors_to_anyhow)?;
    str_at(&data, "/login/accessToken")
}

async fn create_video(api: &Api, token: &str, title: &str) -> anyhow::Result<String> {
    api.create_video(token, title, "PRIVATE").await
}

/// The owner's READY private video and its files, fetched through the URLs handed out.
async fn ready_video(
    api: &Api,
    token: &str,
    clip: &[u8],
    timeout: Duration,
) -> anyhow::Result<(String, Vec<media::KnownFile>, String)> {
    let video = create_video(api, token, "fuzz target").await?;
    api.upload(token, &video, clip, UploadMethod::TusCreate).await.context("uploading the clip")?;
    let started = Instant::now();
    let data = loop {
        let data = api
            .gql(
                Some(token),
                "query($id: ID!) { video(id: $id) { status error playbackUrl mp4Url thumbnailUrl storyboardUrl renditions { playlistUrl } } }",
                json!({ "id": video }),
            )
            .await
            .map_err(errors_to_anyhow)?;
        match data.pointer("/video/status").and_then(Value::as_str) {
            Some("READY") => break data,
            Some("FAILED") => bail!("the clip FAILED: {}", data["video"]["error"]),
            _ if started.elapsed() > timeout => bail!("the clip is not READY after {timeout:?}: {data}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let v = &data["video"];
    let mut urls: Vec<String> = ["playbackUrl", "mp4Url", "thumbnailUrl", "storyboardUrl"]
        .iter()
        .filter_map(|k| v[*k].as_str().map(str::to_string))
        .collect();
    if let Some(renditions) = v["renditions"].as_array() {
        urls.extend(renditions.iter().filter_map(|r| r["playlistUrl"].as_str().map(str::to_string)));
    }
    let signed_query = urls
        .first()
        .and_then(|u| u.split_once('?'))
        .map(|(_, q)| q.to_string())
        .ok_or_else(|| anyhow!("the private video's URLs carry no signature: {urls:?}"))?;
    // Fetch every file, following playlists and the storyboard's sprite to their parts.
    let mut files: Vec<media::KnownFile> = Vec::new();
    let mut queue = urls;
    while let Some(url) = queue.pop() {
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("URL {url}"))?;
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        if files.iter().any(|f| f.target == target) || files.len() > 200 {
            continue;
        }
        let response = api.http.get(parsed.clone()).send().await.with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url} answered {}", response.status());
        }
        let body = response.bytes().await?.to_vec();
        let text = String::from_utf8_lossy(&body).to_string();
        // A relative reference without a query of its own needs the parent's signature
        // (the storyboard's WebVTT cues are not rewritten as playlists are).
        let with_parent_query = |mut next: reqwest::Url| {
            if next.query().is_none() {
                next.set_query(parsed.query());
            }
            next.to_string()
        };
        if target.contains(".m3u8") {
            for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
                if let Ok(next) = parsed.join(line.trim()) {
                    queue.push(with_parent_query(next));
                }
            }
            // Storyboard cues: `sprite.jpg#xywh=…`.
            for line in text.lines().filter(|l| l.contains("#xywh=")) {
                if let Some(file) = line.split('#').next() {
                    if let Ok(next) = parsed.join(file.trim()) {
                        queue.push(with_parent_query(next));
                    }
                }
            }
        }
        files.push(media::KnownFile { target, body });
    }
    Ok((video, files, signed_query))
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("reelhouse-fuzz: seed {seed} (replay: --seed {seed})");
    let sdl = std::fs::read_to_string(&cli.schema).with_context(|| format!("reading {}", cli.schema.display()))?;
    let parsed_schema = schema::Schema::parse(&sdl)?;
    let base = cli.target.trim_end_matches('/').to_string();
    let stats = Arc::new(Stats::default());
    let api = Api::new(&base, stats)?;
    let tally = Arc::new(Tally::default());

    // Accounts: the owner of the READY video, the fuzzing user, a stranger.
    let run_id = seed % 1_000_000_007;
    let password = "fuzz-Password-123!";
    let register = |who: &str| {
        let email = format!("fuzz-{who}-{run_id}@example.com");
        let api = api.clone();
        async move {
            let session =
                api.register(&email, password, "Fuzz").await.with_context(|| format!("registering {email}"))?;
            anyhow::Ok((email, session))
        }
    };
    let (_, owner) = register("owner").await?;
    let (fuzzer_email, fuzzer) = register("user").await?;
    let (_, stranger) = register("stranger").await?;
    // tus runs as its own user: fuzzed mutations (logout, revokeAllSessions) may
    // sign the GraphQL fuzzing user out at any moment.
    let (_, uploader) = register("uploader").await?;

    let media_target = if cli.media_cases > 0 {
        let (_, clip) = reelhouse_load::clip::load_or_generate(cli.clip.as_deref())?;
        eprintln!("reelhouse-fuzz: uploading a {}-byte clip and waiting for READY", clip.len());
        let (video, files, signed_query) =
            ready_video(&api, &owner.access_token, &clip, Duration::from_secs(cli.ready_timeout_secs)).await?;
        eprintln!("reelhouse-fuzz: video {video} READY with {} files", files.len());
        Some((video, files, signed_query))
    } else {
        None
    };

    // What the generator may aim at: real ids of both users' videos and accounts.
    let own_video = create_video(&api, &fuzzer.access_token, "fuzz own").await?;
    let mut known =
        schema::Known { ids: vec![own_video.clone(), owner.user_id.clone(), fuzzer.user_id.clone()], cursors: vec![] };
    if let Some((video, _, _)) = &media_target {
        known.ids.push(video.clone());
    }
    // A presigned /storage URL (embedded store) to tamper with.
    let ticket = api
        .gql(
            Some(&fuzzer.access_token),
            "mutation($i: CreateUploadInput!) { createUpload(input: $i) { method url } }",
            json!({ "i": { "videoId": own_video, "filename": "f.mp4", "contentType": "video/mp4", "size": 1000 } }),
        )
        .await
        .ok();
    let storage_put = ticket
        .as_ref()
        .and_then(|t| t.pointer("/createUpload/url").and_then(Value::as_str))
        .and_then(|u| reqwest::Url::parse(u).ok())
        .filter(|u| u.path().starts_with("/storage/"))
        .map(|u| format!("{}?{}", u.path(), u.query().unwrap_or("")));

    let rss_start = cli.server_pid.and_then(rss_from_proc);
    let token = Arc::new(RwLock::new(fuzzer.access_token.clone()));
    // Fuzzed mutations may sign the fuzzing user out (logout, revokeAllSessions): sign in
    // again every few seconds so signed-in cases stay signed in.
    let refresher = {
        let (api, token, email) = (api.clone(), token.clone(), fuzzer_email.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Ok(fresh) = login(&api, &email, password).await {
                    *token.write().await = fresh;
                }
            }
        })
    };

    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .context("HTTP client")?;
    let gql_target = Arc::new(graphql::Target {
        http: http.clone(),
        base: base.clone(),
        schema: parsed_schema,
        known,
        token: token.clone(),
        tally: tally.clone(),
        seed,
    });
    if let (Some(dir), None) = (&cli.corpus, cli.only) {
        let corpus = graphql::load_corpus(&dir.join("graphql"))?;
        eprintln!("reelhouse-fuzz: {} corpus documents", corpus.len());
        graphql::run_corpus(gql_target.clone(), corpus, sent.clone()).await;
    }
    for share in shares(cli.graphql_cases, cli.concurrency, cli.only) {
        tasks.push(tokio::spawn(graphql::run_worker(gql_target.clone(), share, sent.clone())));
    }
    if cli.only.is_none() {
        let api_for_videos = api.clone();
        let uploader_token = uploader.access_token.clone();
        let tus_target = Arc::new(tus::Target {
            http: http.clone(),
            base: base.clone(),
            token: uploader.access_token.clone(),
            stranger_token: stranger.access_token.clone(),
            new_video: Box::new(move || {
                let (api, token) = (api_for_videos.clone(), uploader_token.clone());
                async move { create_video(&api, &token, "fuzz tus").await }.boxed()
            }),
            tally: tally.clone(),
            seed,
        });
        if let Some(dir) = &cli.corpus {
            let corpus = tus::load_corpus(&dir.join("tus"))?;
            eprintln!("reelhouse-fuzz: {} tus corpus sequences", corpus.len());
            tus::run_corpus(tus_target.clone(), corpus, sent.clone()).await;
        }
        for share in shares(cli.tus_sequences, cli.concurrency.div_ceil(2), None) {
            tasks.push(tokio::spawn(tus::run_worker(tus_target.clone(), share, sent.clone())));
        }
        if let Some((video, files, signed_query)) = media_target {
            let authority = reqwest::Url::parse(&base)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
                .ok_or_else(|| anyhow!("no host:port in {base}"))?;
            let other_video = create_video(&api, &stranger.access_token, "fuzz stranger").await?;
            let media_target = Arc::new(media::Target {
                authority,
                video_id: video,
                files,
                signed_query,
                storage_put,
                other_video,
                extra_paths: cli
                    .corpus
                    .as_ref()
                    .and_then(|dir| std::fs::read_to_string(dir.join("media-paths.txt")).ok())
                    .map(|text| text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
                extra_ranges: cli
                    .corpus
                    .as_ref()
                    .and_then(|dir| std::fs::read_to_string(dir.join("media-ranges.txt")).ok())
                    .map(|text| text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
                tally: tally.clone(),
                seed,
            });
            media::run_corpus(media_target.clone(), sent.clone()).await;
            for share in shares(cli.media_cases, cli.concurrency.div_ceil(2), None) {
                tasks.push(tokio::spawn(media::run_worker(media_target.clone(), share, sent.clone())));
            }
        }
    }
    let progress = {
        let sent = sent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                eprintln!("reelhouse-fuzz: {} requests so far", sent.load(Ordering::Relaxed));
            }
        })
    };
    for task in tasks {
        task.await.context("a fuzz worker panicked")?;
    }
    progress.abort();
    refresher.abort();
    let elapsed = started.elapsed();

    let mut healthy = true;
    if let Err(err) = graphql::still_answers(&http, &base).await {
        eprintln!("reelhouse-fuzz: FAIL {err:#}");
        healthy = false;
    }
    let rss_end = cli.server_pid.and_then(rss_from_proc);
    let rss_grew_mib = match (rss_start, rss_end) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) / 1024),
        _ => None,
    };
    if rss_grew_mib.is_some_and(|g| g > cli.rss_bound_mib) {
        eprintln!(
            "reelhouse-fuzz: FAIL the server's RSS grew by {} MiB (bound {} MiB)",
            rss_grew_mib.unwrap_or(0),
            cli.rss_bound_mib
        );
        healthy = false;
    }
    let failures = tally.failures();
    let report = json!({
        "seed": seed,
        "seconds": elapsed.as_secs_f64(),
        "graphql_documents": tally.total("graphql POST") + tally.total("graphql GET") + tally.total("graphql WebSocket"),
        "requests": sent.load(Ordering::Relaxed),
        "rss_start_kib": rss_start,
        "rss_end_kib": rss_end,
        "summary": tally.summary(),
        "failures": failures,
        "server_answers_after": healthy,
    });
    eprintln!("reelhouse-fuzz: {}", serde_json::to_string_pretty(&report["summary"]).unwrap_or_default());
    eprintln!(
        "reelhouse-fuzz: seed {seed}: {} GraphQL documents, {} requests in {:.0} s; RSS {} → {} KiB; {} failure(s)",
        report["graphql_documents"],
        report["requests"],
        elapsed.as_secs_f64(),
        rss_start.map_or("?".to_string(), |v| v.to_string()),
        rss_end.map_or("?".to_string(), |v| v.to_string()),
        failures.len()
    );
    if let Some(path) = &cli.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = fuzz::findings_dir() {
        let _ = std::fs::create_dir_all(&dir);
        for (i, failure) in failures.iter().enumerate() {
            let _ = std::fs::write(
                dir.join(format!("{seed}-{i}.json")),
                serde_json::to_vec_pretty(failure).unwrap_or_default(),
            );
        }
    }
    Ok(healthy && failures.is_empty())
}
