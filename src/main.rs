use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = nautes_install::cli::parse();
    ExitCode::from(nautes_install::commands::run(cli))
}
