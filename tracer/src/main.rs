use std::process::ExitCode;

use clap::Parser;
use tracer::cli::{Cli, Command};

fn main() -> ExitCode {
    tracer::logging::init();
    let cli = Cli::try_parse().unwrap_or_else(|e| tracer::cli::exit_with(e));
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => tracer::run::main(args),
        Command::Check(args) => tracer::check::main(&args),
        Command::Top(args) => tracer::top::main(args),
        Command::Schema => {
            print!("{}", tracer::SCHEMA);
            ExitCode::SUCCESS
        }
    }
}
