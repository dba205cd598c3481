//! The udptun binary: parses the command line, sets up logging, runs [`udptun::daemon`] and
//! turns the outcome into an exit status (`udptun::exit`). See ARCHITECTURE.md.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::CommandFactory;
use tracing_subscriber::EnvFilter;

use udptun::cli::{self, Action, Cli};
use udptun::logging::{self, LogFormat};
use udptun::{daemon, exit, manual};

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(error) => return parse_failed(&error),
    };
    if cli.generate_man {
        return print_generated(|out| manual::render(Cli::command(), out));
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
    init_logging(cli.log_format.resolve(), cli.verbose);

    match daemon::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(exit::status(&error))
        }
    }
}

/// Says why the command line, the environment or the config file is wrong (exit 78), or prints
/// `--help` or `--version` (exit 0).
fn parse_failed(error: &anyhow::Error) -> ExitCode {
    let Some(clap_error) = error.downcast_ref::<clap::Error>() else {
        logging::print_early_error(&format!("udptun: {error:#}"));
        return ExitCode::from(exit::CONFIG);
    };
    if !clap_error.use_stderr() {
        let _ = clap_error.print();
        return ExitCode::SUCCESS;
    }
    if logging::stderr_is_journal() {
        logging::print_early_error(&clap_error.render().to_string());
    } else {
        let _ = clap_error.print();
    }
    ExitCode::from(exit::CONFIG)
}

/// Log lines go to stderr in `format` (not `Auto`), at info (`-v` debug, `-vv` trace) unless
/// RUST_LOG says otherwise.
fn init_logging(format: LogFormat, verbose: u8) {
    let default_level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Auto | LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Journal => builder.with_ansi(false).event_format(logging::Journal).init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
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
