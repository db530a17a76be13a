//! `/media` and `/storage` with random paths (traversal, encoded slashes, NULs, CR/LF,
//! long segments), random, tampered and expired signatures and query strings, and
//! random `Range` and conditional headers, against a real READY private video. Sent
//! over a raw HTTP/1.1 connection, so paths reach the server exactly as written.
//!
//! Rules: no 5xx; a 4xx with a body is JSON with a `code`; nothing of a private video
//! without its valid signature; every 2xx body is (a slice of) one of the video's own
//! files, fetched beforehand through the URLs the API handed out (so no other
//! object, the source included, ever leaks); a 206 has a `Content-Range` that matches
//! its bytes, a 416 `bytes */{size}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{case_rng, forbidden_status, Tally};

pub const STREAM: u64 = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

/// One of the video's files as the API handed it out.
#[derive(Debug, Clone)]
pub struct KnownFile {
    /// Path and query, e.g. `/media/{id}/{version}/mp4/video.mp4?exp=…&sig=…`.
    pub target: String,
    pub body: Vec<u8>,
}

pub struct Target {
    /// `127.0.0.1:port`
    pub authority: String,
    pub video_id: String,
    pub files: Vec<KnownFile>,
    /// The valid `exp=…&sig=…` of the video.
    pub signed_query: String,
    /// A presigned `/storage/...` URL (path and query) of the embedded store, if any.
    pub storage_put: Option<String>,
    /// Another video, not READY, of another user.
    pub other_video: String,
    /// More paths to try under the video (the seed corpus's `media-paths.txt`).
    pub extra_paths: Vec<String>,
    /// `Range` headers sent with the valid signature at every file before the
    /// random cases, and drawn among them after (the corpus's `media-ranges.txt`).
    pub extra_ranges: Vec<String>,
    pub tally: Arc<Tally>,
    pub seed: u64,
}

/// An HTTP answer read from a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Send one request as written (request line and headers) and read the answer.
pub async fn raw_request(
    authority: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<RawAnswer> {
    let mut stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "PUT" {
        request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw)).await.map_err(|_| anyhow!("answer timed out"))??;
    parse_answer(&raw, method == "HEAD")
}

fn parse_answer(raw: &[u8], head: bool) -> anyhow::Result<RawAnswer> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if head {
        body.clear();
    } else if chunked {
        body = dechunk(&body)?;
    }
    Ok(RawAnswer { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

const PATH_ATTACKS: &[&str] = &[
    "../../../../etc/passwd",
    "hls/../../source",
    "hls/../../../../../../etc/passwd",
    "hls/..%2f..%2fsource",
    "hls/%2e%2e/%2e%2e/source",
    "hls/%252e%252e%252fsource",
    "mp4/..\\..\\source",
    "hls/%00/master.m3u8",
    "hls/master.m3u8%00.jpg",
    "hls/%0d%0aX-Injected:%20yes",
    "hls/\u{0}",
    "thumbs/poster.jpg/../../source",
    "source",
    "staging/x",
    "hls/",
    "hls",
    "",
    "/",
    "//hls//master.m3u8",
    "hls/./master.m3u8",
    "hls/%2fmaster.m3u8",
    "HLS/master.m3u8",
    "hls/master.m3u8/",
    "hls/master.m3u8?x",
    "hls/master.m3u8#frag",
    "hls/%ff%fe",
    "hls/%",
    "hls/%zz",
    "hls/💥",
    "mp4/;jsessionid=1",
];

const RANGES: &[&str] = &[
    "bytes=0-0",
    "bytes=0-",
    "bytes=-1",
    "bytes=-0",
    "bytes=5-4",
    "bytes=0-1,2-3",
    "bytes=0-1,0-1,0-1",
    "bytes=",
    "bytes=-",
    "bytes=abc",
    "items=0-1",
    "BYTES=0-10",
    " bytes = 0 - 10",
    "bytes=0-1,,",
    "bytes=18446744073709551615-",
    "bytes=-18446744073709551616",
    "bytes=0-99999999999999999999",
    "bytes=1-1-1",
    "bytes=\u{0}",
];

fn random_range(rng: &mut impl Rng, size: usize) -> String {
    match rng.gen_range(0..6) {
        0 | 1 => RANGES.choose(rng).copied().unwrap_or("bytes=0-0").to_string(),
        2 => {
            let a = rng.gen_range(0..=size + 10);
            let b = rng.gen_range(a..=size + 20);
            format!("bytes={a}-{b}")
        }
        3 => format!("bytes=-{}", rng.gen_range(0..=size + 10)),
        4 => format!("bytes={}-", rng.gen_range(0..=size + 10)),
        _ => {
            let n = rng.gen_range(2..2000);
            let parts: Vec<String> = (0..n).map(|i| format!("{i}-{i}")).collect();
            format!("bytes={}", parts.join(","))
        }
    }
}

/// A tampered version of a valid `exp=…&sig=…` (and whether it is still the valid one).
fn mutate_query(rng: &mut impl Rng, valid: &str) -> (String, bool) {
    let (exp, sig) = {
        let mut exp = "";
        let mut sig = "";
        for pair in valid.split('&') {
            if let Some(v) = pair.strip_prefix("exp=") {
                exp = v;
            }
            if let Some(v) = pair.strip_prefix("sig=") {
                sig = v;
            }
        }
        (exp.to_string(), sig.to_string())
    };
    let flip = |s: &str, rng: &mut dyn rand::RngCore| -> String {
        let mut chars: Vec<char> = s.chars().collect();
        if chars.is_empty() {
            return "0".to_string();
        }
        let i = rng.gen_range(0..chars.len());
        chars[i] = if chars[i] == '0' { '1' } else { '0' };
        chars.into_iter().collect()
    };
    match rng.gen_range(0..16) {
        0..=3 => (valid.to_string(), true),
        4 => (format!("exp={exp}&sig={}", flip(&sig, rng)), false),
        5 => (format!("exp={}&sig={sig}", exp.parse::<i64>().map(|e| e + 1).unwrap_or(0)), false),
        6 => (format!("exp=1&sig={sig}"), false),
        7 => (format!("exp={exp}&sig={}", &sig[..sig.len() / 2]), false),
        8 => (format!("exp={exp}&sig={}", sig.to_uppercase()), true), // hex compares case-insensitively
        9 => (format!("exp={exp}&sig={sig}&sig={sig}"), false),
        10 => (format!("exp={exp}"), false),
        11 => (format!("sig={sig}"), false),
        12 => (format!("exp=-9223372036854775808&sig={sig}"), false),
        13 => (format!("exp=99999999999999999999&sig={sig}"), false),
        14 => (format!("exp={exp}&sig={}", "0".repeat(64)), false),
        _ => (format!("{valid}&x=%00&y=%zz&&=&exp"), false),
    }
}

/// Judge one answer; `signed`: the request carried the video's valid signature.
fn judge(t: &Target, name: &str, case: &str, input: &str, answer: &RawAnswer, signed: bool, method: &str) {
    t.tally.answer(name, answer.status);
    let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(500)]).to_string();
    if forbidden_status(answer.status, answer.header("retry-after").is_some()) {
        t.tally.fail(name, case, format!("HTTP {}", answer.status), input, &text);
        return;
    }
    if answer.status >= 400 && !answer.body.is_empty() {
        let typed = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .is_some_and(|v| v.get("code").is_some_and(serde_json::Value::is_string));
        if !typed {
            t.tally.fail(name, case, format!("HTTP {} without a typed JSON error", answer.status), input, &text);
        }
    }
    if !(200..300).contains(&answer.status) || method == "HEAD" || method == "PUT" {
        return;
    }
    if name == "media" && !signed {
        t.tally.fail(
            name,
            case,
            format!("HTTP {}: a private video's bytes without its valid signature", answer.status),
            input,
            &text,
        );
        return;
    }
    if name == "storage" {
        t.tally.fail(
            name,
            case,
            format!("HTTP {}: /storage served bytes to a forged request", answer.status),
            input,
            &text,
        );
        return;
    }
    // Whatever was served must be (part of) one of the video's own files.
    if answer.status == 206 {
        let Some((start, end, size)) = answer.header("content-range").and_then(parse_content_range) else {
            // A multipart/byteranges answer would have no single Content-Range.
            t.tally.fail(name, case, "206 without a single Content-Range", input, "");
            return;
        };
        let fits = end >= start
            && end - start + 1 == answer.body.len() as u64
            && t.files.iter().any(|f| {
                f.body.len() as u64 == size && f.body.get(start as usize..=end as usize) == Some(&answer.body[..])
            });
        if !fits {
            t.tally.fail(
                name,
                case,
                format!(
                    "206 bytes {start}-{end}/{size} ({} sent) are not that part of any of the video's files",
                    answer.body.len()
                ),
                input,
                "",
            );
        }
    } else if answer.status == 200 && !t.files.iter().any(|f| same_file(f, &answer.body)) {
        t.tally.fail(
            name,
            case,
            format!("200 with {} bytes that are none of the video's files", answer.body.len()),
            input,
            &text,
        );
    }
}

/// Is `body` this file? Playlists and the storyboard index carry the request's own
/// signature in their URLs, which the server compares case-insensitively, so they
/// compare without case.
fn same_file(file: &KnownFile, body: &[u8]) -> bool {
    let rewritten = file.target.contains(".m3u8") || file.target.contains(".vtt");
    file.body == body || (rewritten && file.body.eq_ignore_ascii_case(body))
}

fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, size.parse().ok()?))
}

/// One random request at `/media` or `/storage`.
async fn one_case(t: &Target, index: u64, rng: &mut impl Rng) {
    let case = format!("media#{index}");
    let mut headers: Vec<(String, String)> = Vec::new();
    let method = *["GET", "GET", "GET", "HEAD", "PUT", "DELETE", "OPTIONS"].choose(rng).unwrap_or(&"GET");
    let file = t.files.choose(rng).cloned();
    let (name, target, signed) = if rng.gen_bool(0.85) {
        let (base_path, valid_query) = match &file {
            Some(f) => f
                .target
                .split_once('?')
                .map_or((f.target.clone(), String::new()), |(p, q)| (p.to_string(), q.to_string())),
            None => (format!("/media/{}/mp4/video.mp4", t.video_id), t.signed_query.clone()),
        };
        let valid_query = if valid_query.is_empty() { t.signed_query.clone() } else { valid_query };
        let (query, mut signed) = mutate_query(rng, &valid_query);
        let path = match rng.gen_range(0..10) {
            0..=5 => base_path,
            6 | 7 => {
                // The video's prefix, then an attack (built in, or from the corpus).
                let extra = t.extra_paths.choose(rng).filter(|_| rng.gen_bool(0.3)).map(String::as_str);
                let attack = extra.unwrap_or_else(|| PATH_ATTACKS.choose(rng).copied().unwrap_or(".."));
                format!("/media/{}/{}", t.video_id, attack)
            }
            8 => {
                signed = false; // the signature covers only its own video
                let video = [
                    t.other_video.clone(),
                    uuid::Uuid::from_u128(rng.gen()).to_string(),
                    "not-a-uuid".into(),
                    "..".into(),
                ]
                .choose(rng)
                .cloned()
                .unwrap_or_default();
                let rest = base_path.splitn(4, '/').nth(3).unwrap_or("hls/master.m3u8").to_string();
                format!("/media/{video}/{rest}")
            }
            _ => format!("/media/{}/{}/{}", t.video_id, "a".repeat(rng.gen_range(200..9000)), "x.ts"),
        };
        let target = if rng.gen_bool(0.1) { path } else { format!("{path}?{query}") };
        // Without a query the request carries no signature at all.
        let signed = signed && target.contains('?');
        ("media", target, signed)
    } else {
        let target = match (&t.storage_put, rng.gen_range(0..4)) {
            (Some(url), 0 | 1) => {
                let (path, query) = url.split_once('?').unwrap_or((url, ""));
                let (query, _) = mutate_storage_query(rng, query);
                let path = if rng.gen_bool(0.3) {
                    format!("/storage/{}", PATH_ATTACKS.choose(rng).copied().unwrap_or(".."))
                } else {
                    path.to_string()
                };
                format!("{path}?{query}")
            }
            _ => {
                let attack = PATH_ATTACKS.choose(rng).copied().unwrap_or("..");
                format!(
                    "/storage/users/{}/videos/{}/{attack}?m=GET&e=99999999999&s={}",
                    uuid::Uuid::from_u128(rng.gen()),
                    t.video_id,
                    "0".repeat(64)
                )
            }
        };
        ("storage", target, false)
    };
    let size = file.as_ref().map_or(1000, |f| f.body.len());
    if rng.gen_bool(0.6) {
        let range = match t.extra_ranges.choose(rng) {
            Some(range) if rng.gen_bool(0.1) => range.clone(),
            _ => random_range(rng, size),
        };
        headers.push(("Range".into(), range));
    }
    if rng.gen_bool(0.15) {
        let value = ["\"x\"", "*", "W/\"x\"", "\"", "Thu, 01 Jan 1970 00:00:00 GMT", "garbage"]
            .choose(rng)
            .copied()
            .unwrap_or("*");
        let header = ["If-None-Match", "If-Match", "If-Range", "If-Modified-Since", "If-Unmodified-Since"]
            .choose(rng)
            .copied()
            .unwrap_or("If-Range");
        headers.push((header.into(), value.into()));
    }
    let body: Vec<u8> =
        if method == "PUT" { (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect() } else { Vec::new() };
    let input = format!("{method} {target}\n{headers:?}");
    match raw_request(&t.authority, method, &target, &headers, &body).await {
        Ok(answer) => judge(t, name, &case, &input, &answer, signed, method),
        Err(err) => {
            t.tally.answer(name, "no-answer");
            // A request line the server refuses may be closed without an answer; a
            // request it should have answered may not.
            let printable = target.bytes().all(|b| (0x21..0x7f).contains(&b));
            if printable {
                t.tally.fail(name, &case, format!("no answer: {err:#}"), &input, "");
            }
        }
    }
    let _ = size;
}

fn mutate_storage_query(rng: &mut impl Rng, valid: &str) -> (String, bool) {
    let pairs: Vec<&str> = valid.split('&').collect();
    match rng.gen_range(0..6) {
        0 => {
            // Flip one character of one value.
            let mut pairs: Vec<String> = pairs.iter().map(|p| p.to_string()).collect();
            if let Some(p) = pairs.choose_mut(rng) {
                p.push('0');
            }
            (pairs.join("&"), false)
        }
        1 => (pairs.iter().filter(|_| rng.gen_bool(0.7)).copied().collect::<Vec<_>>().join("&"), false),
        2 => (format!("{valid}&{valid}"), false),
        3 => (valid.replace("PUT", "GET"), false),
        4 => (format!("{valid}&e=1"), false),
        _ => (String::new(), false),
    }
}

/// Every corpus `Range` at every file of the video, signed, GET and HEAD.
pub async fn run_corpus(t: Arc<Target>, sent: Arc<AtomicU64>) {
    for range in &t.extra_ranges {
        for file in &t.files {
            for method in ["GET", "HEAD"] {
                t.tally.class("media corpus");
                let case = format!("media corpus {range:?}");
                let headers = vec![("Range".to_string(), range.clone())];
                let input = format!("{method} {}\n{headers:?}", file.target);
                match raw_request(&t.authority, method, &file.target, &headers, &[]).await {
                    Ok(answer) => judge(&t, "media", &case, &input, &answer, true, method),
                    Err(err) => {
                        t.tally.answer("media", "no-answer");
                        t.tally.fail("media", &case, format!("no answer: {err:#}"), &input, "");
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub async fn run_worker(t: Arc<Target>, cases: Vec<u64>, sent: Arc<AtomicU64>) {
    for index in cases {
        let mut rng = case_rng(t.seed, STREAM, index);
        t.tally.class("media/storage request");
        one_case(&t, index, &mut rng).await;
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_and_without_chunks() {
        let a = parse_answer(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/10\r\n\r\nab", false).unwrap();
        assert_eq!(a.status, 206);
        assert_eq!(a.body, b"ab");
        assert_eq!(parse_content_range(a.header("content-range").unwrap()), Some((0, 1, 10)));
        let c = parse_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(c.body, b"abcde");
    }

    #[test]
    fn the_unmutated_query_is_the_only_signed_one() {
        let valid = "exp=2000000000&sig=abcdef0123";
        let mut rng = case_rng(1, STREAM, 1);
        for _ in 0..500 {
            let (query, signed) = mutate_query(&mut rng, valid);
            if signed {
                assert!(
                    query == valid
                        || query == valid.to_uppercase().replace("EXP", "exp").replace("SIG", "sig")
                        || query.eq_ignore_ascii_case(valid)
                );
            }
        }
    }
}
