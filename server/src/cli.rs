//! Command line: `serve | worker | worker-token | migrate | export-schema | create-admin | config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "reelhouse",
    version,
    about = "Self-hosted media server: uploads in, adaptive HLS out, live progress over GraphQL"
)]
pub struct Cli {
    /// Settings file (default: ./reelhouse.toml when present).
    #[arg(long, global = true, env = "REELHOUSE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Listen address, e.g. 127.0.0.1:8080 (port 0 picks a free one). Env: REELHOUSE_BIND.
    #[arg(long, global = true, value_name = "ADDR")]
    pub bind: Option<String>,

    /// Data directory for embedded mode (SQLite, objects, generated keys). Env: REELHOUSE_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP/GraphQL server (and, in embedded mode, the workers).
    Serve,
    /// Run only the transcode workers: against the shared database and storage, or,
    /// with `--server URL`, as a remote worker that needs only the server's URL and a
    /// worker token (`REELHOUSE_WORKER_TOKEN`, or a file named by
    /// `REELHOUSE_WORKER_TOKEN_FILE` / `--token-file`; never on the command line).
    Worker {
        /// The API server's base URL, e.g. http://host:8080 (remote worker mode).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// A file whose first line is the worker token. Env: REELHOUSE_WORKER_TOKEN_FILE.
        #[arg(long, env = "REELHOUSE_WORKER_TOKEN_FILE", value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// A PEM file of CA certificates to trust besides the web PKI roots, for an
        /// https:// server with a private or self-signed certificate.
        #[arg(long, env = "REELHOUSE_WORKER_CA_FILE", value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// Tags to be routed by (comma-separated), a subset of the token's; none:
        /// the token's. Env: REELHOUSE_WORKER_TAGS.
        #[arg(long, env = "REELHOUSE_WORKER_TAGS", value_name = "TAGS")]
        tags: Option<String>,
    },
    /// Worker tokens for remote workers (admin bootstrap; GraphQL `createWorkerToken`
    /// does the same).
    #[command(subcommand)]
    WorkerToken(WorkerTokenCommand),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) to stdout.
    ExportSchema,
    /// Create an administrator account. The password comes from the environment
    /// variable `REELHOUSE_ADMIN_PASSWORD`, or from the first line of standard input
    /// with `--password-stdin`; never from the command line, which other users of
    /// the machine can read (`ps`, `/proc/*/cmdline`, shell history).
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
    /// Print the merged settings with secrets redacted.
    Config,
    /// Internal: the media jail child (probe or transcode one file). Started by
    /// reelhouse itself with a request on stdin; not for people.
    #[command(hide = true)]
    Media,
}

#[derive(Debug, Subcommand)]
pub enum WorkerTokenCommand {
    /// Mint a token and print it (shown once; only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// Jobs one worker with this token may run at once (default 1).
        #[arg(long)]
        capacity: Option<i32>,
        /// Routing tags, e.g. --tag gpu (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
}

impl Cli {
    pub fn overrides(&self) -> Overrides {
        Overrides { bind: self.bind.clone(), data_dir: self.data_dir.clone() }
    }
}

/// The password for `create-admin`: the first line of `stdin` with `--password-stdin`,
/// else `REELHOUSE_ADMIN_PASSWORD` (passed in as `env`).
pub fn admin_password(from_stdin: bool, stdin: impl std::io::BufRead, env: Option<String>) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        let mut stdin = stdin;
        stdin.read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            anyhow::bail!("--password-stdin: standard input has no password on its first line");
        }
        return Ok(password);
    }
    match env {
        Some(password) if !password.is_empty() => Ok(password),
        _ => anyhow::bail!("set REELHOUSE_ADMIN_PASSWORD or pass --password-stdin (a password on the command line is visible to other users)"),
    }
}
