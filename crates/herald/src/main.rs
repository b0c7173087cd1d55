//! `herald`: the command-line entry point. Parses flags, installs logging, and hands
//! over to the gateway library or one of the tools.

mod cli;
mod config;
mod dev;
mod serve;
mod tail;
mod token;
mod tools;
mod top;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(*args).await,
            cli::Command::Gentoken(args) => tools::gentoken(args),
            cli::Command::Publish(args) => tools::publish(args).await,
            cli::Command::PublishEntity(args) => tools::publish_entity(args).await,
            cli::Command::Tail(args) => tail::run(args).await,
            cli::Command::Checkconfig(args) => tools::checkconfig(&args),
            cli::Command::Healthcheck(args) => tools::healthcheck(args).await,
            cli::Command::DevEnv => dev::print_env(),
            cli::Command::Top(args) => top::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}
