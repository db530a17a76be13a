//! `reelhouse-load`: drive a reelhouse server through its public API and report.
//!
//! Exit status: 0 when the run completed (whatever it measured; judging the figures is
//! the caller's business), 1 when it could not run, 2 for bad arguments.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use reelhouse_load::scenarios::{self, Config, Scenario};

#[derive(Debug, Parser)]
#[command(name = "reelhouse-load", about = "Load harness for reelhouse: drives the public API and reports")]
struct Cli {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "REELHOUSE_LOAD_TARGET")]
    target: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Users (each registers its own account); for the API benchmark, the concurrency.
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// WebSocket subscribers watching videos.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// How long to apply load, e.g. 60s, 5m, 1h.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The clip to upload (default: a 3 s 320x240 clip made with gst-launch-1.0).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// End with one line of JSON (the report) on stdout.
    #[arg(long)]
    json: bool,
    /// How long an upload may take to become READY before it counts as an error.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// A reelhouse-baseline server to compare against (api and fanout scenarios).
    #[arg(long)]
    baseline: Option<String>,
    /// A second API process of the same deployment (fanout: every other subscriber
    /// connects there; events still start on the first).
    #[arg(long)]
    also_target: Option<String>,
    /// The fan-out peer (load-tests/peer-node: Node.js, graphql-ws,
    /// graphql-redis-subscriptions) to compare against, e.g. http://127.0.0.1:4000
    /// (fanout; it listens to --redis-url).
    #[arg(long)]
    peer: Option<String>,
    /// The Redis the baseline listens to (fanout with --baseline).
    #[arg(long)]
    redis_url: Option<String>,
    /// The server's pid, to read its RSS from /proc when /metrics has none (same host).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Longest one call waits in all on rate-limit refusals (429 / Retry-After, backing
    /// off with jitter) before it gives up and counts as an error.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    rate_limit_wait: Duration,
}

/// `500ms`, `60s`, `5m`, `2h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 60s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in `{text}` (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.users == 0 && cli.scenario != Scenario::Fanout {
        eprintln!("reelhouse-load: --users must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("reelhouse-load: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let config = Config {
        target: cli.target,
        scenario: cli.scenario,
        users: cli.users,
        subscribers: cli.subscribers,
        duration: cli.duration,
        clip: cli.clip,
        ready_timeout: cli.ready_timeout,
        baseline: cli.baseline,
        peer: cli.peer,
        also_target: cli.also_target,
        redis_url: cli.redis_url,
        server_pid: cli.server_pid,
        progress: std::io::stderr().is_terminal(),
        rate_limit_wait: cli.rate_limit_wait,
    };
    match runtime.block_on(scenarios::run(config)) {
        Ok(report) => {
            print!("{}", report.human());
            if cli.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(err) => {
                        eprintln!("reelhouse-load: cannot serialise the report: {err}");
                        return ExitCode::from(1);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("reelhouse-load: {err:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }
}
