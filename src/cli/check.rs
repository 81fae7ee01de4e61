//! `tdsguard check`: validate the configuration and report what it means.

use std::process::ExitCode;

use crate::config::{Config, UpstreamMode};

/// Prints a short summary of a configuration that loaded and validated.
pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    println!("configuration ok");
    println!(
        "  listen    {} (tls {:?})",
        config.listen.address, config.listen.tls
    );
    match config.upstream.mode {
        UpstreamMode::Embedded => println!("  upstream  embedded sandbox"),
        UpstreamMode::Server => println!(
            "  upstream  {}:{} ({:?})",
            config.upstream.host.as_deref().unwrap_or(""),
            config.upstream.port,
            config.upstream.encryption
        ),
    }
    println!("  columns   {} mapped", config.columns.len());
    Ok(ExitCode::SUCCESS)
}
