//! `atm-hook`: forwards an agent's hook or status-line JSON to atm's ingest socket.
//! Thin on purpose: everything lives in `atm_cli::hook`.

use std::panic::{AssertUnwindSafe, catch_unwind};

fn main() {
    // The exit status is part of the contract with the agents (non-zero blocks or reports an
    // error): even a bug must end in status 0. And silently: Gemini CLI shows a hook's stderr
    // to the user, so the default panic message must not reach it either.
    std::panic::set_hook(Box::new(|_| {}));
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let args = atm_cli::hook::HookArgs::parse(std::env::args_os().skip(1));
        atm_cli::hook::run(args, std::io::stdin(), &mut std::io::stdout().lock());
    }));
}
