//! Random tus sequences: POST/HEAD/PATCH/DELETE (and the method override) with
//! random or adversarial `Upload-Length`, `Upload-Offset`, `Upload-Metadata`,
//! `Upload-Checksum`, `Upload-Concat`, `Content-Type`, `Tus-Resumable` and bodies,
//! checked against the protocol's rules:
//! - no 5xx (a 503 with `Retry-After` excepted), error bodies typed JSON;
//! - the offset never goes backwards and never passes the length;
//! - a well-formed PATCH at the wrong offset is 409;
//! - a well-formed PATCH whose checksum does not match is 460 and keeps no byte;
//! - a 204 PATCH moves the offset by exactly its body, and HEAD agrees;
//! - another user (or nobody) never reads or moves someone's upload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::seq::SliceRandom;
use rand::Rng;
use sha1::Digest as _;

use super::{case_rng, forbidden_status, Tally};

pub const STREAM: u64 = 2;
const NAME: &str = "tus";
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Target {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    /// Another user's token (their requests on our uploads must be refused).
    pub stranger_token: String,
    /// Make a fresh DRAFT video of the uploading user for a sequence.
    pub new_video: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, anyhow::Result<String>> + Send + Sync>,
    pub tally: Arc<Tally>,
    pub seed: u64,
}

/// What the fuzzer believes of one upload, from the server's own answers.
#[derive(Debug, Clone)]
struct Upload {
    url: String,
    length: Option<u64>,
    offset: u64,
    gone: bool,
}

struct Answer {
    status: u16,
    offset: Option<u64>,
    length: Option<u64>,
    location: Option<String>,
    retry_after: bool,
    body: String,
    json_code: Option<String>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn send(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let response = request.timeout(TIMEOUT).send().await.map_err(|e| format!("no answer: {e}"))?;
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let offset = header("upload-offset").and_then(|v| v.parse().ok());
    let length = header("upload-length").and_then(|v| v.parse().ok());
    let location = header("location");
    let retry_after = header("retry-after").is_some();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let json_code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string));
    Ok(Answer { status, offset, length, location, retry_after, body, json_code })
}

/// Judge what every answer must be: no 5xx; an error with a body is typed JSON.
fn judge_common(target: &Target, case: &str, what: &str, input: &str, answer: &Answer) -> bool {
    target.tally.answer(&format!("{NAME} {what}"), answer.status);
    if forbidden_status(answer.status, answer.retry_after) {
        target.tally.fail(NAME, case, format!("{what}: HTTP {}", answer.status), input, &answer.body);
        return false;
    }
    if answer.status >= 400 && !answer.body.is_empty() && answer.json_code.is_none() {
        target.tally.fail(
            NAME,
            case,
            format!("{what}: HTTP {} without a typed JSON error", answer.status),
            input,
            &answer.body,
        );
        return false;
    }
    true
}

fn random_length(rng: &mut impl Rng) -> (String, Option<u64>) {
    match rng.gen_range(0..14) {
        0..=7 => {
            let n = rng.gen_range(1..20_000u64);
            (n.to_string(), Some(n))
        }
        8 => ("0".to_string(), Some(0)),
        9 => ("-1".to_string(), None),
        10 => (u64::MAX.to_string(), None),
        11 => ("18446744073709551616".to_string(), None),
        12 => (" 12 ".to_string(), Some(12)),
        _ => (["abc", "1e3", "0x10", "", "1,2", "٣"].choose(rng).copied().unwrap_or("x").to_string(), None),
    }
}

fn random_metadata(rng: &mut impl Rng, video: &str) -> Option<String> {
    let good = format!("videoId {},filename {},filetype {}", b64(video), b64("fuzz.mp4"), b64("video/mp4"));
    Some(match rng.gen_range(0..14) {
        0..=6 => good,
        7 => return None,
        8 => format!("videoId {}", b64("not-a-uuid")),
        9 => format!("videoId {},videoId {}", b64(video), b64(video)),
        10 => format!("videoId !!!notbase64,{}", "x ".repeat(rng.gen_range(0..3000))),
        11 => format!("{good},filename {}", b64(&"../".repeat(200))),
        12 => format!("videoId {},filetype {}", b64(video), b64("application/x-msdownload")),
        _ => format!("{good},,,  , {}", b64("\u{0}")),
    })
}

fn random_body(rng: &mut impl Rng, room: u64) -> Vec<u8> {
    let len = match rng.gen_range(0..10) {
        0 => 0,
        1 => room.saturating_add(rng.gen_range(1..100)),
        2 => room,
        _ => rng.gen_range(0..=room.min(8192)),
    };
    let len = usize::try_from(len.min(64 * 1024)).unwrap_or(0);
    let mut body = vec![0u8; len];
    rng.fill(&mut body[..]);
    body
}

enum Checksum {
    None,
    Right,
    Wrong,
    Garbage(String),
}

fn checksum_header(body: &[u8], kind: &Checksum, rng: &mut impl Rng) -> Option<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let sha256 = rng.gen_bool(0.5);
    let digest = |data: &[u8]| -> Vec<u8> {
        if sha256 {
            sha2::Sha256::digest(data).to_vec()
        } else {
            sha1::Sha1::digest(data).to_vec()
        }
    };
    let algo = if sha256 { "sha256" } else { "sha1" };
    match kind {
        Checksum::None => None,
        Checksum::Right => Some(format!("{algo} {}", engine.encode(digest(body)))),
        Checksum::Wrong => {
            let mut other = body.to_vec();
            other.push(1);
            Some(format!("{algo} {}", engine.encode(digest(&other))))
        }
        Checksum::Garbage(g) => Some(g.clone()),
    }
}

/// Run sequences `cases` (each: create, then up to a dozen random steps).
pub async fn run_worker(target: Arc<Target>, cases: Vec<u64>, sent: Arc<AtomicU64>) {
    for index in cases {
        let mut rng = case_rng(target.seed, STREAM, index);
        let case = format!("tus#{index}");
        target.tally.class("tus sequence");
        let video = match (target.new_video)().await {
            Ok(video) => video,
            Err(err) => {
                target.tally.fail(NAME, &case, format!("cannot create a video for the sequence: {err:#}"), "", "");
                continue;
            }
        };
        let Some(mut upload) = create(&target, &case, &mut rng, &video, &sent).await else { continue };
        let steps = rng.gen_range(1..14);
        for step in 0..steps {
            if upload.gone {
                break;
            }
            let step_case = format!("{case} step {step}");
            match rng.gen_range(0..20) {
                0..=11 => patch(&target, &step_case, &mut rng, &mut upload, false).await,
                12..=14 => {
                    head(&target, &step_case, &mut upload).await;
                }
                15 => stranger(&target, &step_case, &mut rng, &upload).await,
                16 => override_method(&target, &step_case, &mut rng, &mut upload).await,
                17 => {
                    // A second PATCH racing the first: one must lose with 409 (or
                    // both be well-formed answers); the offset rules still hold after.
                    let mut a = upload.clone();
                    let mut b = upload.clone();
                    let mut rng_b = case_rng(target.seed, STREAM, index.wrapping_add(1 << 40).wrapping_add(step));
                    let ta = target.clone();
                    tokio::join!(
                        patch(&ta, &step_case, &mut rng, &mut a, true),
                        patch(&target, &step_case, &mut rng_b, &mut b, true)
                    );
                    upload.offset = upload.offset.max(a.offset).max(b.offset);
                    upload.gone |= a.gone || b.gone;
                    head(&target, &step_case, &mut upload).await;
                }
                _ => {
                    let answer = send(
                        target.http.delete(&upload.url).bearer_auth(&target.token).header("Tus-Resumable", "1.0.0"),
                    )
                    .await;
                    if let Ok(answer) = answer {
                        judge_common(&target, &step_case, "DELETE", &upload.url, &answer);
                        if answer.status == 204 {
                            upload.gone = true;
                            let after = send(
                                target
                                    .http
                                    .head(&upload.url)
                                    .bearer_auth(&target.token)
                                    .header("Tus-Resumable", "1.0.0"),
                            )
                            .await;
                            if let Ok(after) = after {
                                judge_common(&target, &step_case, "HEAD", &upload.url, &after);
                                if (200..300).contains(&after.status) {
                                    target.tally.fail(
                                        NAME,
                                        &step_case,
                                        "HEAD after DELETE still answers 2xx",
                                        &upload.url,
                                        &after.body,
                                    );
                                }
                            }
                        }
                    }
                }
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn create(target: &Target, case: &str, rng: &mut impl Rng, video: &str, sent: &AtomicU64) -> Option<Upload> {
    let mut request = target.http.post(format!("{}/uploads/", target.base));
    if rng.gen_bool(0.95) {
        request = request.bearer_auth(&target.token);
    }
    let mut input = String::from("POST /uploads/");
    let add = |request: reqwest::RequestBuilder, name: &str, value: &str, input: &mut String| {
        input.push_str(&format!("\n{name}: {value}"));
        request.header(name, value)
    };
    let tus = match rng.gen_range(0..12) {
        0 => None,
        1 => Some("0.2.2"),
        _ => Some("1.0.0"),
    };
    if let Some(tus) = tus {
        request = add(request, "Tus-Resumable", tus, &mut input);
    }
    let deferred = rng.gen_bool(0.1);
    let mut length = None;
    if deferred {
        request = add(request, "Upload-Defer-Length", if rng.gen_bool(0.8) { "1" } else { "2" }, &mut input);
    }
    if !deferred || rng.gen_bool(0.2) {
        let (text, value) = random_length(rng);
        length = value;
        request = add(request, "Upload-Length", &text, &mut input);
    }
    if let Some(metadata) = random_metadata(rng, video) {
        request = add(request, "Upload-Metadata", &metadata, &mut input);
    }
    if rng.gen_bool(0.08) {
        let concat = match rng.gen_range(0..4) {
            0 => "partial".to_string(),
            1 => format!("final;{}/uploads/{}", target.base, uuid::Uuid::from_u128(rng.gen())),
            2 => "final;".to_string(),
            _ => "final;/uploads/../../etc/passwd /uploads/%00".to_string(),
        };
        request = add(request, "Upload-Concat", &concat, &mut input);
    }
    let mut with_body = 0;
    if rng.gen_bool(0.2) {
        let body = random_body(rng, length.unwrap_or(100));
        with_body = body.len() as u64;
        request = add(request, "Content-Type", "application/offset+octet-stream", &mut input);
        input.push_str(&format!("\n({with_body} body bytes)"));
        request = request.body(body);
    }
    sent.fetch_add(1, Ordering::Relaxed);
    let answer = match send(request).await {
        Ok(answer) => answer,
        Err(err) => {
            target.tally.answer("tus POST", "transport-error");
            target.tally.fail(NAME, case, err, &input, "");
            return None;
        }
    };
    if !judge_common(target, case, "POST", &input, &answer) || answer.status != 201 {
        return None;
    }
    let Some(location) = answer.location.clone() else {
        target.tally.fail(NAME, case, "201 without a Location", &input, &answer.body);
        return None;
    };
    let url = if location.starts_with("http") { location } else { format!("{}{location}", target.base) };
    let offset = answer.offset.unwrap_or(0);
    if let Some(length) = length {
        if offset > length {
            target.tally.fail(
                NAME,
                case,
                format!("created with offset {offset} past length {length}"),
                &input,
                &answer.body,
            );
        }
    }
    if answer.offset.is_some() && offset > with_body {
        target.tally.fail(
            NAME,
            case,
            format!("creation-with-upload took {offset} bytes of a {with_body}-byte body"),
            &input,
            "",
        );
    }
    Some(Upload { url, length, offset, gone: false })
}

/// HEAD the upload and check it against what was accepted; returns its offset.
async fn head(target: &Target, case: &str, upload: &mut Upload) -> Option<u64> {
    let answer = send(target.http.head(&upload.url).bearer_auth(&target.token).header("Tus-Resumable", "1.0.0")).await;
    let answer = match answer {
        Ok(a) => a,
        Err(err) => {
            target.tally.fail(NAME, case, err, &upload.url, "");
            return None;
        }
    };
    judge_common(target, case, "HEAD", &upload.url, &answer);
    if answer.status == 404 || answer.status == 410 {
        upload.gone = true;
        return None;
    }
    if answer.status != 200 {
        return None;
    }
    let Some(offset) = answer.offset else {
        target.tally.fail(NAME, case, "HEAD 200 without Upload-Offset", &upload.url, "");
        return None;
    };
    if offset < upload.offset {
        target.tally.fail(
            NAME,
            case,
            format!("the offset went backwards: {} then {offset}", upload.offset),
            &upload.url,
            "",
        );
    }
    if offset != upload.offset {
        target.tally.fail(
            NAME,
            case,
            format!("HEAD says offset {offset}, the PATCHes accepted {}", upload.offset),
            &upload.url,
            "",
        );
    }
    let length = answer.length.or(upload.length);
    if let Some(length) = length {
        if offset > length {
            target.tally.fail(NAME, case, format!("offset {offset} is past the length {length}"), &upload.url, "");
        }
        upload.length = Some(length);
    }
    upload.offset = upload.offset.max(offset);
    Some(offset)
}

/// One PATCH; `racing`: another runs at the same time, so HEAD is not compared here.
async fn patch(target: &Target, case: &str, rng: &mut impl Rng, upload: &mut Upload, racing: bool) {
    let room = upload.length.map_or(1000, |l| l.saturating_sub(upload.offset));
    let body = random_body(rng, room);
    let (offset_text, offset_right) = match rng.gen_range(0..12) {
        0..=7 => (upload.offset.to_string(), true),
        8 => (upload.offset.saturating_add(rng.gen_range(1..1000)).to_string(), false),
        9 if upload.offset > 0 => (rng.gen_range(0..upload.offset).to_string(), false),
        10 => (["-1", "abc", "", "1e2", "18446744073709551616"].choose(rng).copied().unwrap_or("x").to_string(), false),
        _ => (upload.offset.to_string(), true),
    };
    let content_type_right = rng.gen_bool(0.9);
    let tus_right = rng.gen_bool(0.95);
    let checksum = match rng.gen_range(0..10) {
        0..=5 => Checksum::None,
        6 | 7 => Checksum::Right,
        8 => Checksum::Wrong,
        _ => Checksum::Garbage(
            ["md5 AAAA", "sha1", "sha1 !!!", "sha256 ", " ", "crc32 AAAAAA==", "sha1 AAAA AAAA"]
                .choose(rng)
                .copied()
                .unwrap_or("")
                .to_string(),
        ),
    };
    let checksum_text = checksum_header(&body, &checksum, rng);
    let mut request = target.http.patch(&upload.url).bearer_auth(&target.token);
    let mut input = format!("PATCH {}\nUpload-Offset: {offset_text}", upload.url);
    request = request.header("Upload-Offset", &offset_text);
    if tus_right {
        request = request.header("Tus-Resumable", "1.0.0");
    } else {
        input.push_str("\n(no Tus-Resumable)");
    }
    let content_type = if content_type_right { "application/offset+octet-stream" } else { "application/octet-stream" };
    request = request.header("Content-Type", content_type);
    input.push_str(&format!("\nContent-Type: {content_type}"));
    if let Some(checksum) = &checksum_text {
        request = request.header("Upload-Checksum", checksum);
        input.push_str(&format!("\nUpload-Checksum: {checksum}"));
    }
    let length_mismatch = rng.gen_bool(0.05);
    if length_mismatch {
        request = request.header("Upload-Length", "7");
        input.push_str("\nUpload-Length: 7");
    }
    input.push_str(&format!("\n({} body bytes, {room} left)", body.len()));
    let body_len = body.len() as u64;
    let answer = match send(request.body(body)).await {
        Ok(answer) => answer,
        Err(err) => {
            target.tally.answer("tus PATCH", "transport-error");
            target.tally.fail(NAME, case, err, &input, "");
            return;
        }
    };
    if !judge_common(target, case, "PATCH", &input, &answer) {
        return;
    }
    let well_formed = content_type_right && tus_right && !length_mismatch && !matches!(checksum, Checksum::Garbage(_));
    let before = upload.offset;
    let fits = upload.length.is_none_or(|l| before + body_len <= l);
    match answer.status {
        204 => {
            let Some(offset) = answer.offset else {
                target.tally.fail(NAME, case, "204 without Upload-Offset", &input, "");
                return;
            };
            if !offset_right {
                target.tally.fail(
                    NAME,
                    case,
                    format!("a PATCH at the wrong offset was accepted (now {offset})"),
                    &input,
                    "",
                );
            }
            if matches!(checksum, Checksum::Wrong) {
                target.tally.fail(NAME, case, "a PATCH with a wrong checksum was accepted", &input, "");
            }
            if offset != before + body_len && !(upload.length == Some(offset) && body_len == 0) {
                target.tally.fail(
                    NAME,
                    case,
                    format!("the offset moved from {before} to {offset} for {body_len} bytes"),
                    &input,
                    "",
                );
            }
            if upload.length.is_some_and(|l| offset > l) {
                target.tally.fail(
                    NAME,
                    case,
                    format!("offset {offset} past the length {:?}", upload.length),
                    &input,
                    "",
                );
            }
            upload.offset = offset;
            if upload.length == Some(offset) {
                // Complete: the last byte handed the file to processing.
                upload.gone = true;
            }
        }
        409 if offset_right && well_formed && upload.length != Some(upload.offset) => {
            // Another PATCH in flight (the racing step) is the only other reason.
            target.tally.answer("tus PATCH", "409 at the right offset");
        }
        460 if !matches!(checksum, Checksum::Wrong) => {
            target.tally.fail(NAME, case, "460 for a body whose checksum matched (or had none)", &input, &answer.body);
        }
        _ => {}
    }
    if well_formed && answer.status != 204 {
        if !offset_right
            && offset_text.parse::<u64>().is_ok()
            && answer.status != 409
            && !matches!(answer.status, 404 | 410 | 413)
        {
            target.tally.fail(
                NAME,
                case,
                format!("a PATCH at the wrong offset answered {} (409 expected)", answer.status),
                &input,
                &answer.body,
            );
        }
        if offset_right
            && fits
            && matches!(checksum, Checksum::Wrong)
            && !matches!(answer.status, 460 | 409 | 404 | 410)
        {
            target.tally.fail(
                NAME,
                case,
                format!("a PATCH with a wrong checksum answered {} (460 expected)", answer.status),
                &input,
                &answer.body,
            );
        }
    }
    // After any refusal, nothing was kept unless the server says how much it kept.
    if answer.status != 204 && !upload.gone && !racing {
        let kept_by_answer = answer.offset;
        if let Some(offset) = head(target, case, upload).await {
            if kept_by_answer.is_none() && offset != before && answer.status != 409 {
                target.tally.fail(
                    NAME,
                    case,
                    format!("a refused PATCH ({}) moved the offset {before} → {offset}", answer.status),
                    &input,
                    &answer.body,
                );
            }
            if answer.status == 460 && offset != before {
                target.tally.fail(NAME, case, "460, yet bytes were kept", &input, "");
            }
        }
    }
}

/// Someone else (another user, or nobody) on our upload: never 2xx, never a move.
async fn stranger(target: &Target, case: &str, rng: &mut impl Rng, upload: &Upload) {
    let mut request = match rng.gen_range(0..3) {
        0 => target.http.head(&upload.url),
        1 => target.http.delete(&upload.url),
        _ => target
            .http
            .patch(&upload.url)
            .header("Upload-Offset", upload.offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(vec![7u8; 3]),
    };
    request = request.header("Tus-Resumable", "1.0.0");
    let who = if rng.gen_bool(0.5) {
        request = request.bearer_auth(&target.stranger_token);
        "another user"
    } else {
        "nobody"
    };
    let input = format!("{who} on {}", upload.url);
    if let Ok(answer) = send(request).await {
        judge_common(target, case, "stranger", &input, &answer);
        if (200..300).contains(&answer.status) {
            target.tally.fail(
                NAME,
                case,
                format!("{who} got {} on someone's upload", answer.status),
                &input,
                &answer.body,
            );
        }
    }
    let mut mine = upload.clone();
    if let Some(offset) = head(target, case, &mut mine).await {
        if offset != upload.offset {
            target.tally.fail(
                NAME,
                case,
                format!("{who} moved someone's upload {} → {offset}", upload.offset),
                &input,
                "",
            );
        }
    }
}

/// `POST /uploads/{id}` with `X-HTTP-Method-Override` (random, valid or not).
async fn override_method(target: &Target, case: &str, rng: &mut impl Rng, upload: &mut Upload) {
    let method =
        ["HEAD", "PATCH", "GET", "PUT", "TRACE", "", "patch", "DELETE\r\nX: y"].choose(rng).copied().unwrap_or("PATCH");
    let mut request = target.http.post(&upload.url).bearer_auth(&target.token).header("Tus-Resumable", "1.0.0");
    if let Ok(value) = reqwest::header::HeaderValue::from_str(method) {
        request = request.header("X-HTTP-Method-Override", value);
    }
    let input = format!("POST {} X-HTTP-Method-Override: {method:?}", upload.url);
    if let Ok(answer) = send(request).await {
        judge_common(target, case, "override", &input, &answer);
    }
    head(target, case, upload).await;
}

/// One step of a corpus sequence (`server/tests/fuzz-corpus/tus/*.tus`, see its README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusStep {
    /// `create [partial] LENGTH`: POST with `Upload-Length` and good metadata.
    Create { length: u64, partial: bool },
    /// `patch BYTES [checksum]`: a PATCH of that many bytes at the current offset.
    Patch { bytes: u64, checksum: bool },
    /// `head`: HEAD, checked against what was accepted.
    Head,
}

/// Parse a corpus sequence: one step a line, `#` starts a comment.
pub fn parse_corpus(text: &str) -> anyhow::Result<Vec<CorpusStep>> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |w: Option<&&str>| -> anyhow::Result<u64> {
            w.and_then(|w| w.parse().ok()).ok_or_else(|| anyhow::anyhow!("line {}: a number expected: {line}", n + 1))
        };
        steps.push(match words.first().copied() {
            Some("create") if words.get(1) == Some(&"partial") => {
                CorpusStep::Create { length: number(words.get(2))?, partial: true }
            }
            Some("create") => CorpusStep::Create { length: number(words.get(1))?, partial: false },
            Some("patch") => {
                CorpusStep::Patch { bytes: number(words.get(1))?, checksum: words.get(2) == Some(&"checksum") }
            }
            Some("head") => CorpusStep::Head,
            _ => anyhow::bail!("line {}: unknown step: {line}", n + 1),
        });
    }
    Ok(steps)
}

/// The corpus: `*.tus` files sorted by name, parsed.
pub fn load_corpus(dir: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<CorpusStep>)>> {
    use anyhow::Context as _;
    let mut paths: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tus"))
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        out.push((name, parse_corpus(&text).with_context(|| format!("parsing {}", path.display()))?));
    }
    Ok(out)
}

/// Replay every corpus sequence (on a fresh video each), judged like generated ones.
pub async fn run_corpus(target: Arc<Target>, corpus: Vec<(String, Vec<CorpusStep>)>, sent: Arc<AtomicU64>) {
    for (name, steps) in corpus {
        target.tally.class("tus corpus");
        let case = format!("tus corpus {name}");
        let video = match (target.new_video)().await {
            Ok(video) => video,
            Err(err) => {
                target.tally.fail(NAME, &case, format!("cannot create a video for the sequence: {err:#}"), "", "");
                continue;
            }
        };
        let mut upload: Option<Upload> = None;
        for (i, step) in steps.iter().enumerate() {
            let step_case = format!("{case} step {i}");
            sent.fetch_add(1, Ordering::Relaxed);
            match (step, &mut upload) {
                (CorpusStep::Create { length, partial }, _) => {
                    let metadata =
                        format!("videoId {},filename {},filetype {}", b64(&video), b64("fuzz.mp4"), b64("video/mp4"));
                    let mut request = target
                        .http
                        .post(format!("{}/uploads/", target.base))
                        .bearer_auth(&target.token)
                        .header("Tus-Resumable", "1.0.0")
                        .header("Upload-Length", length.to_string())
                        .header("Upload-Metadata", &metadata);
                    if *partial {
                        request = request.header("Upload-Concat", "partial");
                    }
                    let input = format!("POST /uploads/ Upload-Length: {length} partial: {partial}");
                    let Ok(answer) = send(request).await else { continue };
                    if judge_common(&target, &step_case, "POST", &input, &answer) && answer.status == 201 {
                        if let Some(location) = answer.location {
                            let url = if location.starts_with("http") {
                                location
                            } else {
                                format!("{}{location}", target.base)
                            };
                            upload = Some(Upload { url, length: Some(*length), offset: 0, gone: false });
                        }
                    }
                }
                (CorpusStep::Patch { bytes, checksum }, Some(upload)) => {
                    let body: Vec<u8> = (0..*bytes).map(|i| (i % 251) as u8).collect();
                    let mut request = target
                        .http
                        .patch(&upload.url)
                        .bearer_auth(&target.token)
                        .header("Tus-Resumable", "1.0.0")
                        .header("Content-Type", "application/offset+octet-stream")
                        .header("Upload-Offset", upload.offset.to_string());
                    if *checksum {
                        let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
                        request = request.header("Upload-Checksum", format!("sha256 {digest}"));
                    }
                    let input = format!(
                        "PATCH {} Upload-Offset: {} ({bytes} bytes, checksum: {checksum})",
                        upload.url, upload.offset
                    );
                    let Ok(answer) = send(request.body(body)).await else { continue };
                    if judge_common(&target, &step_case, "PATCH", &input, &answer) && answer.status == 204 {
                        upload.offset = answer.offset.unwrap_or(upload.offset);
                    }
                }
                (CorpusStep::Head, Some(upload)) => {
                    head(&target, &step_case, upload).await;
                }
                (_, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_sequences_parse() {
        let steps =
            parse_corpus("# a comment\ncreate partial 10\npatch 10\npatch 0 checksum # at the end\nhead\n").unwrap();
        assert_eq!(
            steps,
            vec![
                CorpusStep::Create { length: 10, partial: true },
                CorpusStep::Patch { bytes: 10, checksum: false },
                CorpusStep::Patch { bytes: 0, checksum: true },
                CorpusStep::Head,
            ]
        );
        assert!(parse_corpus("jump 3").is_err());
        assert!(parse_corpus("patch many").is_err());
    }
}
