//! The `tdsguard` command line: see `tdsguard --help`.

use std::process::ExitCode;

use clap::Parser;

use tdsguard::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tdsguard: {err:#}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
