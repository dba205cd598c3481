//! The udptun binary: parses the command line, sets up logging, runs [`udptun::daemon`] and
//! turns the outcome into an exit status. See ARCHITECTURE.md.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::CommandFactory;
use tracing_subscriber::EnvFilter;

use udptun::cli::{self, Action, Cli};
use udptun::daemon;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("udptun: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if cli.generate_man {
        return print_generated(|out| clap_mangen::Man::new(Cli::command()).section("8").render(out));
    }
    if let Some(Action::Show { device, json }) = &cli.action {
        return match udptun::show::run(device.as_deref(), *json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("udptun show: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.action == Some(Action::Genkey) {
        return match daemon::new_key() {
            Ok(key) => {
                println!("{}", key.to_hex());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("udptun: genkey: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(shell) = cli.generate_completions {
        return print_generated(|out| {
            clap_complete::generate(shell, &mut Cli::command(), "udptun", out);
            Ok(())
        });
    }
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    match daemon::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_generated(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> ExitCode {
    match write(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("udptun: {error}");
            ExitCode::FAILURE
        }
    }
}
