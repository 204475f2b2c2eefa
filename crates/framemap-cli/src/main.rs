//! `framemap`: run WebAssembly modules on framemap linear memories.
//!
//! Every subcommand returns an exit status; every failure is reported as a
//! single `framemap: error: <message>` line on stderr with exit status
//! [`EXIT_ERROR`] ([`EXIT_TRAP`] for a guest trap, as `wasmtime run`),
//! never as a panic or backtrace.

mod bench;
mod cache;
mod inspect;
mod invoke_component;
mod run;
mod run_component;
mod serve;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for every error the CLI itself reports (bad flags, unreadable
/// or invalid modules, host failures) but guest traps.
pub const EXIT_ERROR: u8 = 1;

/// Exit status for a guest trap: 128 + SIGABRT, what `wasmtime run` exits
/// with on Unix when the guest traps (so scripts written for it read the
/// same status).
pub const EXIT_TRAP: u8 = 134;

/// A guest trapped: reported as one error line, with status [`EXIT_TRAP`].
#[derive(Debug)]
pub struct GuestTrapped(pub String);

impl std::fmt::Display for GuestTrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuestTrapped {}

/// Command-line interface of the `framemap` binary.
#[derive(Debug, Parser)]
#[command(name = "framemap", version, about, propagate_version = true)]
struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    command: Command,
}

/// The `framemap` subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WASI preview1 command module (.wasm or .wat) or a preview 2
    /// command component on framemap memories.
    Run(run::RunArgs),
    /// Benchmark framemap against wasmtime's allocators (instantiation,
    /// footprint, guest speed) on a built-in workload or on --module.
    Bench(bench::BenchArgs),
    /// Serve HTTP with a wasi:http component: a new prepared instance on
    /// recycled framemap memories per request.
    Serve(serve::ServeArgs),
    /// Show what a snapshot file holds (memories, pages per source, parent,
    /// working set, globals) and whether its data matches its checksum.
    Inspect(inspect::InspectArgs),
}

impl Command {
    /// Executes the subcommand, returning the process exit status.
    fn execute(self) -> anyhow::Result<u8> {
        match self {
            Command::Run(args) => run::run(args),
            Command::Bench(args) => bench::bench(args),
            Command::Inspect(args) => inspect::inspect(args),
            Command::Serve(args) => serve::serve(args),
        }
    }
}

/// Parses the command line, runs the subcommand and turns its outcome into
/// the process exit status.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_error(&err),
    };
    match cli.command.execute() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            report_error(&format!("{err:#}"));
            let trapped = err.chain().any(|cause| cause.is::<GuestTrapped>());
            ExitCode::from(if trapped { EXIT_TRAP } else { EXIT_ERROR })
        }
    }
}

/// Handles a command-line parse failure: `--help`/`--version` print as usual
/// and succeed; real usage errors become one error line.
fn clap_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Printing help can only fail if stdout is gone; nothing to do then.
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            report_error("no subcommand given (see `framemap --help`)");
            ExitCode::from(EXIT_ERROR)
        }
        _ => {
            // clap renders "error: <what>", sometimes continued on indented
            // lines (e.g. the missing arguments), then a blank line, usage
            // and a hint: keep only the first paragraph.
            let rendered = err.to_string();
            let paragraph = rendered.trim_start().split("\n\n").next().unwrap_or_default();
            let message = paragraph.strip_prefix("error:").unwrap_or(paragraph);
            report_error(&format!("{} (see `framemap --help`)", message.trim()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Prints `message` to stderr as exactly one `framemap: error: ...` line.
///
/// Multi-line messages are folded onto one line. `.wat` parse errors quote
/// the offending source in `N | text` / `| ^` lines after the
/// `--> file:line:col` location; those quoted lines are dropped.
fn report_error(message: &str) {
    let folded = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_source_quote(line))
        .collect::<Vec<_>>()
        .join(" ");
    let mut stderr = std::io::stderr().lock();
    // If stderr is gone there is nowhere left to report to.
    let _ = writeln!(stderr, "framemap: error: {folded}");
}

/// Whether `line` (trimmed) is a quoted source line of a `.wat` parse error:
/// `|`, `| ^`, or `<line number> | <source>`.
fn is_source_quote(line: &str) -> bool {
    let rest = line.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.trim_start().starts_with('|')
}
