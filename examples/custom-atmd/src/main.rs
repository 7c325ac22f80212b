//! `custom-atmd`: `atmd` with the `jsonl` example adapter linked in. A custom build is this
//! whole file: name the plugin crates so the linker keeps their registrations, and hand over to
//! the daemon's command line, which brings every subcommand and behaviour of `atmd`.

use atm_example_jsonl as _;

fn main() -> std::process::ExitCode {
    atm_daemon::cli::main()
}
