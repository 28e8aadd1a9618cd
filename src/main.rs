//! The `bedside` binary: command line, configuration, wiring, shutdown.

mod cli;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use api::audit::Actor;
use api::config::Config;
use api::model::StaffRole;
use clap::Parser as _;
use figment::Figment;
use figment::providers::Serialized;

use cli::{ApikeyCommand, AuditCommand, Cli, Command, ConfigCommand, RoleArg, TenantCommand};

/// How long the runtime may take to stop its blocking threads once `run` returned.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

/// Exit status for a configuration error (API.md: "a bad value fails at start naming the key").
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match &cli.command {
        Command::Serve(args) => {
            let mut figment = Figment::new();
            if let Some(http) = args.http {
                figment = figment.merge(Serialized::default("http.addr", http));
            }
            if let Some(udp) = args.udp {
                figment = figment.merge(Serialized::default("sfu.udp", udp));
            }
            if let Some(tcp) = args.tcp {
                figment = figment.merge(Serialized::default("sfu.tcp", tcp));
            }
            if let Some(ip) = args.announce_ip {
                figment = figment.merge(Serialized::default("sfu.announce_ip", ip));
            }
            figment
        }
        _ => Figment::new(),
    };
    let config = match Config::load(cli.global.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("bedside: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match build_runtime(&config) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bedside: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bedside: {err:#}");
            ExitCode::FAILURE
        }
    };
    // Everything was drained within its bound already; a blocking task still running (a
    // stuck DNS lookup, say) must not hold the exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// The runtime for HTTP, signaling, the database and the CLI, with `http.worker_threads`
/// threads (0 = one per core). The SFU workers run on threads of their own
/// (`sfu-worker-N`, see `sfu::driver`), so media is not capped by this number. Set here
/// explicitly, so `TOKIO_WORKER_THREADS` has no effect.
fn build_runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http.runtime_threads(cores))
        .thread_name("bedside-http")
        .enable_all()
        .build()
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let data_dir = cli.global.data_dir.clone();
    let cli_actor = Actor::local("cli");
    match cli.command {
        Command::Serve(_) => serve::run(config, &data_dir)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Config(ConfigCommand::Check) => {
            // Secrets are `Secret`s (and database URLs lose their password): they serialise
            // as `<redacted>`.
            println!("{}", serde_json::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let app = api::App::open(config, &data_dir)
                .await
                .context("opening the data directory")?;
            let code = admin(&app, command, &cli_actor).await;
            app.store.close().await;
            code
        }
    }
}

async fn admin(app: &Arc<api::App>, command: Command, actor: &Actor) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate => {
            println!("migrations applied");
        }
        Command::Tenant(TenantCommand::Create { name, json }) => {
            let (tenant_id, key) = app.create_tenant(&name, actor).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tenant_id": tenant_id, "admin_api_key": key.expose()})
                );
            } else {
                println!(
                    "tenant {tenant_id} created\nadmin API key (shown once): {}",
                    key.expose()
                );
            }
        }
        Command::Apikey(ApikeyCommand::Create {
            tenant,
            role,
            staff,
            json,
        }) => {
            let role = match role {
                RoleArg::Admin => StaffRole::Admin,
                RoleArg::Scheduler => StaffRole::Scheduler,
                RoleArg::Clinician => StaffRole::Clinician,
            };
            let (id, key) = app
                .create_api_key(&tenant, role, staff.as_deref(), actor)
                .await?;
            if json {
                println!("{}", serde_json::json!({"id": id, "api_key": key.expose()}));
            } else {
                println!("key {id} created\nAPI key (shown once): {}", key.expose());
            }
        }
        Command::Apikey(ApikeyCommand::Revoke { id }) => {
            app.revoke_api_key(&id, actor).await?;
            println!("key {id} revoked");
        }
        Command::Audit(AuditCommand::Verify { tenant }) => {
            match app.verify_audit(tenant.as_deref()).await? {
                Ok(report) => {
                    for (tenant_id, rows) in report {
                        println!("tenant {tenant_id}: {rows} rows checked, chain intact");
                    }
                }
                Err(broken) => {
                    println!("{broken}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Serve(_) | Command::Config(_) => unreachable!("handled by run"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_has_the_configured_thread_count() {
        let mut config = Config::default();
        config.http.worker_threads = 3;
        let runtime = build_runtime(&config).expect("runtime");
        assert_eq!(runtime.metrics().num_workers(), 3);
        config.http.worker_threads = 0;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = build_runtime(&config).expect("runtime");
        assert_eq!(runtime.metrics().num_workers(), cores.max(1));
    }
}
