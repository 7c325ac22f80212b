//! Running a client program the way an agent runs it: input on stdin, output captured.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

/// Starts `cmd` with `input` on its stdin, then closes it: a client that reads its input to the
/// end and then works (as `atm-hook` does). `input` must fit in a pipe (64 KiB); for more, or a
/// program that may answer before reading it all, use [`run_with_stdin`].
pub fn spawn_with_input(cmd: &mut Command, input: &[u8]) -> Child {
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

/// Runs `cmd` to its end with `stdin` as its input and its stdout and stderr captured. The input
/// is written from a thread and a failed write is ignored: a program that answers before it
/// has read all of it (or reads none) cannot block the test, and what it did is in the output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}
