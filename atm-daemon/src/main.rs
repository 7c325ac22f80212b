//! `atmd`: the atm daemon with every built-in plugin. Everything, the command line included,
//! lives in the library ([`atm_daemon::cli`]), so a custom build with more plugins is the same
//! one line plus a `use my_plugin as _;`.

fn main() -> std::process::ExitCode {
    atm_daemon::cli::main()
}
