//! The JSON report is a contract for scripts (scripts/test-load.sh, scripts/bench-load.py):
//! these tests pin its field names and types.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: helpers may panic too

use reelhouse_load::report::{FanoutSide, FanoutSummary, Report, REPORT_VERSION};
use reelhouse_load::stats::Stats;
use serde_json::Value;

fn report_json(report: &Report) -> Value {
    let line = serde_json::to_string(report).unwrap();
    assert!(!line.contains('\n'), "the report is one line");
    serde_json::from_str(&line).unwrap()
}

#[test]
fn required_fields_have_the_documented_types() {
    let stats = Stats::default();
    stats.count_request(std::time::Duration::from_millis(3));
    stats.count_error("boom");
    let mut report = Report::from_stats(&stats, 2.0);
    report.scenario = "api".into();
    let v = report_json(&report);
    assert_eq!(v["version"], REPORT_VERSION);
    for key in [
        "requests",
        "errors",
        "lost_events",
        "duplicate_events",
        "events_received",
        "subscriptions",
        "reconnects",
        "videos_ready",
    ] {
        assert!(v[key].is_u64(), "{key} is a count: {v}");
    }
    assert_eq!(v["requests"], 1);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["error_samples"][0], "boom");
    assert!(v["rps"].is_f64() && v["duration_s"].is_f64());
    for hist in ["api_latency_ms", "event_delivery_ms", "time_to_ready_ms"] {
        for p in ["p50", "p95", "p99", "max", "mean"] {
            assert!(v[hist][p].is_number(), "{hist}.{p} is a number: {v}");
        }
        assert!(v[hist]["count"].is_u64());
    }
    assert!(v["api_latency_ms"]["p50"].as_f64().unwrap() >= 2.9);
    for key in ["count", "bytes"] {
        assert!(v["uploads"][key].is_u64(), "uploads.{key}");
    }
    assert!(v["uploads"]["throughput_mib_s"].is_number());
    assert!(v["uploads"]["latency_ms"]["p99"].is_number());
    assert!(v["scenario"].is_string() && v["target"].is_string());
    // Optional parts are present as null when the scenario does not produce them.
    for key in ["fanout", "api_bench", "rss"] {
        assert!(v.get(key).is_some_and(Value::is_null), "{key} is null: {v}");
    }
}

#[test]
fn fanout_section_carries_both_sides_and_ratios() {
    let side = FanoutSide { subscribers: 1000, events: 4, ..Default::default() };
    let report = Report {
        fanout: Some(FanoutSummary {
            reelhouse: side.clone(),
            baseline: Some(side.clone()),
            ratio_p50: Some(1.5),
            ratio_p99: Some(1.8),
            peer: Some(side),
            peer_ratio_p50: Some(0.5),
            peer_ratio_p99: Some(0.4),
        }),
        ..Default::default()
    };
    let v = report_json(&report);
    let f = &v["fanout"];
    for side in ["reelhouse", "baseline", "peer"] {
        assert_eq!(f[side]["subscribers"], 1000);
        for p in ["p50", "p95", "p99", "max"] {
            assert!(f[side]["last_client_ms"][p].is_number());
            assert!(f[side]["delivery_ms"][p].is_number());
        }
        assert!(f[side]["lost_events"].is_u64());
    }
    assert_eq!(f["ratio_p99"], 1.8);
    assert_eq!(f["peer_ratio_p99"], 0.4);
}

#[test]
fn the_report_round_trips() {
    let report = Report { scenario: "encodes".into(), requests: 7, lost_events: 1, ..Default::default() };
    let back: Report = serde_json::from_value(report_json(&report)).unwrap();
    assert_eq!(back, report);
}
