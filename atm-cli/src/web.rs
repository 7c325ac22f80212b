//! `atmctl web`: where the web board is (the `http` sink) and how to log in to it.
//!
//! The sink writes its address to `<runtime dir>/web.url` while it listens, and keeps its
//! token `0600` in `<state dir>/web-token`. This prints both, with the one step a browser
//! needs: paste the token into the board's login form (the browser then keeps it in an
//! `HttpOnly` cookie). The token is never put in a URL: URLs end up in history, in `ps`
//! output of the browser's command line and in proxies' logs. `--open` opens the board's
//! address (without the token) in the desktop's browser; `--token` prints the token alone, for
//! scripts (`curl -H "Authorization: Bearer $(atmctl web --token)" ...`).
//!
//! Exit codes: 0 printed, 2 the board is not running (no address file), 1 no readable token.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::client::{ClientError, out_err, run};

#[derive(Debug, clap::Args)]
pub struct WebArgs {
    /// Print the token only (for scripts' `Authorization: Bearer` header).
    #[arg(long, conflicts_with = "open")]
    pub token: bool,
    /// Also open the board's address (no token in it) with `xdg-open`.
    #[arg(long)]
    pub open: bool,
    /// The token file. Default: `<state dir>/web-token` (the http sink's `token_file`).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

fn token_path(args: &WebArgs) -> Result<PathBuf, ClientError> {
    match &args.token_file {
        Some(p) => Ok(p.clone()),
        None => atm_core::paths::default_state_dir()
            .map(|d| d.join(atm_core::paths::WEB_TOKEN_FILE))
            .map_err(|e| ClientError::Usage(e.to_string())),
    }
}

/// The token in `path`, refused when other users can read it (they may know it too).
fn read_token(path: &Path) -> Result<String, ClientError> {
    let unreadable = |e: std::io::Error| {
        ClientError::Usage(format!(
            "cannot read the web board's token {}: {e}; the http sink makes it at its first start (is it enabled in plugins.toml?), or pass --token-file",
            path.display()
        ))
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.mode() & 0o077 != 0 {
        return Err(ClientError::Usage(format!(
            "the web token {} can be read by other users (mode {:o}); remove it and restart atmd for a new one",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let token = text.trim();
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Usage(format!(
            "{} does not hold a token; remove it and restart atmd for a new one",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

/// The board's address, as the running sink wrote it.
fn board_url() -> Result<String, ClientError> {
    let path = atm_core::paths::default_runtime_dir().join(atm_core::paths::WEB_ADDRESS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(url) if url.starts_with("http://") => Ok(url.trim().to_owned()),
        _ => Err(ClientError::NoBoard { path }),
    }
}

pub fn web(args: &WebArgs) -> anyhow::Result<ExitCode> {
    run(|out| {
        if args.token {
            let token = read_token(&token_path(args)?)?;
            return writeln!(out, "{token}").map_err(out_err);
        }
        let url = board_url()?;
        let token = read_token(&token_path(args)?)?;
        writeln!(
            out,
            "The board: {url}\n\nLog in by pasting this token into its form (the browser then keeps it in a cookie):\n\n    {token}\n\nFor scripts: curl -H \"Authorization: Bearer $(atmctl web --token)\" {url}api/sessions"
        )
        .map_err(out_err)?;
        if args.open {
            std::process::Command::new("xdg-open")
                .arg(&url)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| {
                    ClientError::Usage(format!(
                        "cannot run xdg-open ({e}); open {url} in a browser yourself"
                    ))
                })?;
        }
        Ok(())
    })
}
