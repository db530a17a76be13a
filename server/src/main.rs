use std::process::ExitCode;

use clap::Parser;
use reelhouse::cli::{Cli, Command, WorkerTokenCommand};
use reelhouse::config::Settings;
use reelhouse::startup::Application;

fn main() -> ExitCode {
    reelhouse::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    if let Command::Media = cli.command {
        // The media jail child: no settings, no logging setup of the server's.
        return reelhouse::jail::child::main();
    }
    if let Command::Serve | Command::Worker { .. } = cli.command {
        // Long-lived processes that take big request bodies: see `memory`.
        reelhouse::memory::fix_mmap_threshold();
    }
    if let Command::ExportSchema = cli.command {
        print!("{}", reelhouse::graphql::sdl());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("reelhouse: {err}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config = cli.command {
        return match settings.to_redacted_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("reelhouse: {err}");
                ExitCode::from(2)
            }
        };
    }
    // Long-running processes export traces when OTEL_* asks for it; one-off commands do not.
    let traces = match cli.command {
        Command::Serve => Some("api"),
        Command::Worker { .. } => Some("worker"),
        _ => None,
    };
    let _telemetry = match reelhouse::telemetry::init_tracing(&settings.telemetry, traces) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("reelhouse: cannot start logging: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let system = actix_web::rt::System::new();
    let result = system.block_on(run(cli.command, settings));
    // `run` drains what it started (requests, jobs, the mail lane) before it returns.
    // Whatever is still parked in the runtime (an actor's state, a pooled connection)
    // is dropped with the runtime's context entered: sqlx and lettre destructors
    // spawn a task to close their connections and would panic outside it.
    let runtime = system.runtime().tokio_runtime().handle().clone();
    {
        let _context = runtime.enter();
        drop(system);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = ?err, "reelhouse stopped with an error");
            eprintln!("reelhouse: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => Application::build(settings).await?.run_until_stopped().await,
        Command::Worker { server: None, .. } => reelhouse::worker::run(settings).await,
        Command::Worker { server: Some(server), token_file, ca_file, tags } => {
            let token = reelhouse::jobs::remote::client::read_token(
                std::env::var("REELHOUSE_WORKER_TOKEN").ok(),
                token_file.as_deref(),
            )?;
            let mut signals = reelhouse::startup::ShutdownSignals::install()?;
            let tags = reelhouse::jobs::remote::client::parse_tags(tags.as_deref());
            reelhouse::jobs::remote::client::run(settings, &server, token, ca_file.as_deref(), tags, async move {
                let _ = signals.recv().await;
            })
            .await
        }
        Command::WorkerToken(WorkerTokenCommand::Create { name, capacity, tags }) => {
            let db = reelhouse::db::connect(&settings).await?;
            if settings.database.migrate_on_start {
                reelhouse::db::migrate(&db).await?;
            }
            let created = reelhouse::auth::worker_tokens::create_worker_token(&db, None, &name, capacity, &tags)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            let entry = reelhouse::repo::audit::AuditEntry::new(
                reelhouse::repo::audit::AuditAction::WorkerTokenCreated,
                reelhouse::repo::audit::AuditOutcome::Success,
            )
            .target(created.model.id)
            .detail(serde_json::json!({ "name": created.model.name, "prefix": created.model.prefix, "via": "cli" }));
            reelhouse::repo::audit::record_or_log(&db, &Default::default(), entry).await;
            eprintln!("worker token {} ({}) created; it is shown only once:", created.model.name, created.model.id);
            println!("{}", created.secret);
            Ok(())
        }
        Command::Migrate => {
            let db = reelhouse::db::connect(&settings).await?;
            reelhouse::db::migrate(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::CreateAdmin { email, password_stdin, display_name } => {
            let password = reelhouse::cli::admin_password(
                password_stdin,
                std::io::stdin().lock(),
                std::env::var("REELHOUSE_ADMIN_PASSWORD").ok(),
            )?;
            let db = reelhouse::db::connect(&settings).await?;
            if settings.database.migrate_on_start {
                reelhouse::db::migrate(&db).await?;
            }
            let user =
                reelhouse::auth::accounts::create_user(&db, &email, &password, &display_name, entities::Role::Admin)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            println!("created admin {} ({})", user.email, user.id);
            Ok(())
        }
        Command::ExportSchema | Command::Config | Command::Media => Ok(()),
    }
}
