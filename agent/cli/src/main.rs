//! `ipvs-migrate`: thin main. Parses the command line, sets up logging, runs one command and
//! maps its error to a documented exit code (with a JSON error object on stderr under `-o json`).

mod audit;
mod cli;
mod commands;
mod exit;
mod finalize;
mod html;
mod inputs;
mod kube_api;
mod migrate;
mod node;
mod serve;
mod table;
mod waves;

use std::process::ExitCode as ProcessExit;

use clap::Parser;

use crate::exit::{CliError, ExitCode};

fn main() -> ProcessExit {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::Usage.code()
            } else {
                0
            };
            let _ = e.print();
            return ProcessExit::from(code);
        }
    };
    // The daemon logs its phase changes (info) by default; commands only warnings.
    let verbose = match cli.command {
        cli::Command::Serve { .. } => cli.common.verbose.max(1),
        _ => cli.common.verbose,
    };
    init_logging(verbose);
    let json = commands::wants_json(&cli.command);
    match commands::run(&cli) {
        Ok(code) => ProcessExit::from(code.code()),
        Err(e) => {
            report(&e, json);
            ProcessExit::from(e.code.code())
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // kube-client logs a failed request at error level itself; the error we return names the
    // server and the call, and under `-o json` stderr must hold only the JSON error object.
    let default = match verbose {
        0 => "warn,kube_client=off",
        1 => "info,kube_client=off",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal: `kubectl logs` and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn report(e: &CliError, json: bool) {
    if json {
        let mut v = serde_json::json!({
            "apiVersion": ipvsmig_engine::inventory::API_VERSION,
            "kind": "Error",
            "exitCode": e.code.code(),
            "reason": e.code.as_str(),
            "message": e.message,
        });
        // Absent fields are omitted, as everywhere in ipvs-migrate's JSON.
        if let Some(obj) = v.as_object_mut() {
            if let Some(input) = &e.input {
                obj.insert("input".into(), serde_json::Value::from(input.clone()));
            }
            if let Some(line) = e.line {
                obj.insert("line".into(), serde_json::Value::from(line));
            }
        }
        eprintln!("{v}");
    } else {
        eprintln!("ipvs-migrate: error: {}", e.message);
    }
}
