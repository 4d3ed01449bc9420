//! The `herald` binary: parse the command line, run it, print a failure as one line.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, parser::ValueSource};

fn main() -> ExitCode {
    let matches = herald::cli::Cli::command().get_matches();
    let cli = herald::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if matches!(matches.value_source("config_dir"), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        && let Err(error) = herald::config::check_config_dir_flag(&cli.config_dir)
    {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(herald::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
