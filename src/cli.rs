//! Command-line interface (API.md "Command line").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Bedside: self-hosted telehealth video visits.
#[derive(Debug, Parser)]
#[command(name = "bedside", version, about)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file (default: ./bedside.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the database and key files.
    #[arg(long, global = true, default_value = "./data")]
    pub data_dir: PathBuf,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run API, web, signaling and SFU in one process.
    Serve(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Apply database migrations and exit.
    Migrate,
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `bedside serve` flags (override the configuration).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP listen address (`http.addr`).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// UDP media address (`sfu.udp`).
    #[arg(long)]
    pub udp: Option<SocketAddr>,
    /// ICE-TCP listen address (`sfu.tcp`; default: the address of `sfu.udp`).
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// Address announced in ICE candidates (`sfu.announce_ip`).
    #[arg(long)]
    pub announce_ip: Option<IpAddr>,
}

/// `bedside tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its admin API key.
    Create {
        /// Tenant name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Staff roles as CLI values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Admin.
    Admin,
    /// Scheduler.
    Scheduler,
    /// Clinician (needs --staff).
    Clinician,
}

/// `bedside apikey …`
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key.
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Role of the key.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Staff member the key belongs to (required for clinicians).
        #[arg(long)]
        staff: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key.
    Revoke {
        /// Key id.
        id: String,
    },
}

/// `bedside audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 naming the first bad row.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `bedside config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets redacted).
    Check,
}
