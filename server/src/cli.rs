//! Command line: `serve | worker | migrate | export-schema | create-admin | config`.

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
    /// Run only the transcode workers against the shared database and storage.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) to stdout.
    ExportSchema,
    /// Create an administrator account.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Prefer the environment variable: command lines are visible to other users.
        #[arg(long, env = "REELHOUSE_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
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

impl Cli {
    pub fn overrides(&self) -> Overrides {
        Overrides { bind: self.bind.clone(), data_dir: self.data_dir.clone() }
    }
}
