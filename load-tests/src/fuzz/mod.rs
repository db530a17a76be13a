//! `reelhouse-fuzz`: generated and adversarial input against a live server's entry
//! points (GraphQL over HTTP and WebSocket, tus, `/media`, `/storage`), judged by
//! rules every answer must keep: no 5xx (a 503 with `Retry-After` excepted), every
//! error typed, the protocol's invariants, nobody's bytes to a stranger.

pub mod graphql;
pub mod media;
pub mod schema;
pub mod tus;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use rand::SeedableRng;
use serde_json::Value;

/// The generator of one case: the run's seed mixed with the case's index and its
/// target, so `--seed S --only N` replays case N alone.
pub fn case_rng(seed: u64, stream: u64, index: u64) -> rand::rngs::StdRng {
    let mixed =
        seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17);
    rand::rngs::StdRng::seed_from_u64(mixed)
}

/// What a run saw: answers by target and status, and every broken rule with the
/// input that broke it.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<TallyInner>,
}

#[derive(Default)]
struct TallyInner {
    /// (target, status or close code) → count
    answers: BTreeMap<(String, String), u64>,
    /// class of input → count
    classes: BTreeMap<String, u64>,
    failures: Vec<Failure>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub target: String,
    pub case: String,
    pub rule: String,
    pub input: String,
    pub answer: String,
}

/// Keep at most this many failures (the first ones; the rest are counted).
const MAX_FAILURES_KEPT: usize = 200;

impl Tally {
    pub fn answer(&self, target: &str, status: impl ToString) {
        if let Ok(mut t) = self.inner.lock() {
            *t.answers.entry((target.to_string(), status.to_string())).or_default() += 1;
        }
    }

    pub fn class(&self, class: &str) {
        if let Ok(mut t) = self.inner.lock() {
            *t.classes.entry(class.to_string()).or_default() += 1;
        }
    }

    pub fn fail(&self, target: &str, case: impl ToString, rule: impl ToString, input: &str, answer: &str) {
        let clip = |s: &str| {
            let mut s: String = s.chars().take(2000).collect();
            if s.len() >= 2000 {
                s.push('…');
            }
            s
        };
        let failure = Failure {
            target: target.to_string(),
            case: case.to_string(),
            rule: clip_line(&rule.to_string()),
            input: clip(input),
            answer: clip(answer),
        };
        eprintln!(
            "reelhouse-fuzz: FAIL {} case {}: {}\n  input: {}\n  answer: {}",
            failure.target,
            failure.case,
            failure.rule,
            clip_line(&failure.input),
            clip_line(&failure.answer)
        );
        if let Ok(mut t) = self.inner.lock() {
            if t.failures.len() < MAX_FAILURES_KEPT {
                t.failures.push(failure);
            }
        }
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.inner.lock().map(|t| t.failures.clone()).unwrap_or_default()
    }

    /// Total answers of one target.
    pub fn total(&self, target: &str) -> u64 {
        self.inner
            .lock()
            .map(|t| t.answers.iter().filter(|((tg, _), _)| tg == target).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }

    /// The report: per target, answers by status; the input classes.
    pub fn summary(&self) -> Value {
        let Ok(t) = self.inner.lock() else { return Value::Null };
        let mut targets: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((target, status), n) in &t.answers {
            targets.entry(target.clone()).or_default().insert(status.clone(), *n);
        }
        serde_json::json!({ "answers": targets, "classes": t.classes, "failures": t.failures.len() })
    }
}

fn clip_line(s: &str) -> String {
    let one: String = s.chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect();
    one
}

/// Is this an HTTP status the server must never send? 5xx, except 503 with
/// `Retry-After` (load shedding, a dependency down: the server says when to come back).
pub fn forbidden_status(status: u16, retry_after: bool) -> bool {
    status >= 500 && !(status == 503 && retry_after)
}

/// Every error in a GraphQL answer (`errors` of a response or of each response in a
/// batch, or a bare error array) must carry a string `extensions.code`; returns the
/// first that does not.
pub fn untyped_graphql_error(body: &Value) -> Option<Value> {
    let check = |errors: &Value| -> Option<Value> {
        errors.as_array()?.iter().find(|e| !e.pointer("/extensions/code").is_some_and(Value::is_string)).cloned()
    };
    match body {
        Value::Array(items) => items.iter().find_map(|item| match item {
            Value::Object(_) => item.get("errors").and_then(check),
            _ => None,
        }),
        Value::Object(_) => body.get("errors").and_then(check),
        _ => None,
    }
}

/// Where a run writes what it found (the failing inputs, as corpus candidates).
pub fn findings_dir() -> Option<PathBuf> {
    std::env::var_os("REELHOUSE_FUZZ_FINDINGS").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untyped_errors_are_found_in_responses_and_batches() {
        assert!(
            untyped_graphql_error(&json!({ "errors": [{ "message": "x", "extensions": { "code": "A" } }] })).is_none()
        );
        assert!(untyped_graphql_error(&json!({ "errors": [{ "message": "x" }] })).is_some());
        assert!(untyped_graphql_error(&json!([{ "data": {} }, { "errors": [{ "message": "x", "extensions": {} }] }]))
            .is_some());
        assert!(untyped_graphql_error(&json!({ "data": { "a": 1 } })).is_none());
    }

    #[test]
    fn a_503_is_allowed_only_with_retry_after() {
        assert!(forbidden_status(500, true));
        assert!(forbidden_status(503, false));
        assert!(!forbidden_status(503, true));
        assert!(!forbidden_status(429, false));
    }

    #[test]
    fn case_generators_differ_by_index_and_repeat_by_seed() {
        use rand::Rng;
        let a: u64 = case_rng(1, 0, 5).gen();
        let b: u64 = case_rng(1, 0, 5).gen();
        let c: u64 = case_rng(1, 0, 6).gen();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
