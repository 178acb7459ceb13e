use std::process::ExitCode;

use clap::Parser;
use tracer::cli::{Cli, Command};

fn main() -> ExitCode {
    tracer::cmd::logging::init();
    let cli = Cli::try_parse().unwrap_or_else(|e| tracer::cli::exit_with(e));
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => tracer::cmd::run::main(args),
        Command::Check(args) => tracer::cmd::check::main(&args),
        Command::Top(args) => tracer::cmd::top::main(args),
        Command::Schema => {
            print!("{}", tracer::SCHEMA);
            ExitCode::SUCCESS
        }
    }
}
