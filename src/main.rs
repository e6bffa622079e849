use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nautes_install::cli::Cli::parse();
    ExitCode::from(nautes_install::commands::run(cli))
}
