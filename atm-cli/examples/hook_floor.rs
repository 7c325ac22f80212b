//! The speed floor `atm-hook` is measured against (see `benches/hook_latency.rs`): the least a
//! native hook client can do. It reads stdin, connects to `$ATM_HOOKS_SOCKET` and writes the input
//! as one line, with no parsing, no process lookup and no timeouts.

use std::io::{Read, Write};

fn main() {
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    input.push(b'\n');
    let Some(path) = std::env::var_os("ATM_HOOKS_SOCKET") else {
        return;
    };
    if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(path) {
        let _ = stream.write_all(&input);
    }
}
