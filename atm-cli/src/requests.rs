//! `atmctl pending|approve|deny|answer`: the agents waiting on their user, and answering them
//! from any terminal.
//!
//! A request is named by its id or by a unique prefix of it (`atmctl pending` shows eight
//! digits, enough on any real machine). Answers go to the daemon as protocol 1.1 `decide`
//! messages; the daemon checks them against what the agent asked and delivers them to the
//! waiting agent, so what atmctl prints as done is done. Numbers pick a question's choices
//! (`atmctl answer ID 2` is the second choice), anything else is the answer's text.
//!
//! Exit codes as for every atmctl command: 0 done, 2 the daemon is not running, 1 refused
//! (the message says why: answered already, not answerable from outside, not found).

use std::process::ExitCode;

use atm_core::view::pending_of;
use serde_json::{Value, json};

use crate::client::{ClientError, Connection, Lookup, SocketArg, find_by_id, out_err, run};

#[derive(Debug, clap::Args)]
pub struct PendingArgs {
    /// Print a JSON array (one object per request: id, session, agent, tool, detail,
    /// questions, answerable, asked_at, suggestions) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The request's id, or a unique prefix of it (`atmctl pending` lists them).
    pub id: String,
    /// Also add the rule the agent offers, so it stops asking (Claude's "always allow").
    #[arg(long)]
    pub always: bool,
    /// With --always: which of the offered rules (0-based, in `atmctl pending --json` order).
    #[arg(long, value_name = "N", requires = "always")]
    pub rule: Option<usize>,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// The request's id, or a unique prefix of it.
    pub id: String,
    /// Told to the agent, so it can do something else instead.
    #[arg(long, short, value_name = "TEXT")]
    pub message: Option<String>,
    /// Also stop the agent's turn.
    #[arg(long)]
    pub interrupt: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct AnswerArgs {
    /// The request's id, or a unique prefix of it.
    pub id: String,
    /// One answer per question, in order: a choice's number (1-based) or label, or free
    /// text; several choices of a multi-select question as `1,3`.
    #[arg(required = true, value_name = "ANSWER")]
    pub answers: Vec<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// Every pending request the daemon knows, oldest session first.
fn all_pending(conn: &mut Connection) -> Result<Vec<Value>, ClientError> {
    Ok(conn
        .list_sessions()?
        .iter()
        .filter_map(pending_of)
        .collect())
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// What a request asks, in a few words: `Bash: cargo test`, or the tool or preview alone.
fn asked(r: &Value) -> String {
    match (text(r, "tool"), text(r, "detail")) {
        ("", d) => d.to_owned(),
        (t, "") => t.to_owned(),
        (t, d) => format!("{t}: {d}"),
    }
}

/// The table `atmctl pending` prints: one request per line, its questions and offered rules
/// below it.
pub fn format_pending(requests: &[Value]) -> String {
    if requests.is_empty() {
        return "no agent is waiting for you\n".to_owned();
    }
    let mut out = String::new();
    for r in requests {
        let id = text(r, "id");
        let short = id.get(..8).unwrap_or(id);
        let how = if r["answerable"] == true {
            ""
        } else {
            "  (answer in its terminal)"
        };
        let what = asked(r);
        out.push_str(&format!(
            "{short}  {:<8} {:<12} {what}{how}\n",
            text(r, "harness"),
            text(r, "reason"),
        ));
        for (qi, q) in r["questions"].as_array().into_iter().flatten().enumerate() {
            out.push_str(&format!("    Q{}: {}\n", qi + 1, text(q, "question")));
            for (oi, o) in q["options"].as_array().into_iter().flatten().enumerate() {
                out.push_str(&format!("        {}. {}\n", oi + 1, text(o, "label")));
            }
        }
        for (i, s) in r["suggestions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push_str(&format!("    --always --rule {i}: {}\n", text(s, "label")));
        }
    }
    out
}

pub fn pending(args: &PendingArgs) -> anyhow::Result<ExitCode> {
    run(|out| {
        let mut conn = Connection::open(args.socket.socket.as_deref())?;
        let requests = all_pending(&mut conn)?;
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &requests)
                .map_err(|e| ClientError::Io(e.into()))?;
            writeln!(out).map_err(out_err)
        } else {
            out.write_all(format_pending(&requests).as_bytes())
                .map_err(out_err)
        }
    })
}

/// The pending request whose id is `id` or starts with it (a single one; ids are hex, so
/// either case).
pub fn find_request<'a>(requests: &'a [Value], id: &str) -> Result<&'a Value, ClientError> {
    find_by_id(
        requests,
        &id.trim().to_ascii_lowercase(),
        &Lookup {
            noun: "pending request",
            nouns: "pending requests",
            none_hint: ": it may have been answered; `atmctl pending` lists the open ones",
        },
    )
}

/// Sends `decide` for the request `id` names and prints what came of it.
fn decide(socket: &SocketArg, id: &str, decision: Value) -> anyhow::Result<ExitCode> {
    run(|out| {
        let mut conn = Connection::open(socket.socket.as_deref())?;
        let requests = all_pending(&mut conn)?;
        let request = find_request(&requests, id)?;
        let mut fields = decision;
        fields["request_id"] = request["id"].clone();
        fields["surface"] = json!("atmctl");
        let fields = resolve_answers(fields, request)?;
        conn.send("decide", fields)?;
        loop {
            let msg = conn.recv()?;
            if msg.get("type").and_then(Value::as_str) == Some("decided") {
                let what = asked(request);
                return writeln!(out, "answered {} ({what})", text(&msg, "session_id"))
                    .map_err(out_err);
            }
        }
    })
}

/// Turns choice numbers into the choices' labels (`2` -> the second option; `1,3` for a
/// multi-select question), checking there is one answer per question.
fn resolve_answers(mut fields: Value, request: &Value) -> Result<Value, ClientError> {
    let Some(given) = fields.get("answers").and_then(Value::as_array).cloned() else {
        return Ok(fields);
    };
    let questions = request["questions"].as_array().cloned().unwrap_or_default();
    if questions.is_empty() {
        return Err(ClientError::Usage(
            "this request asks no questions: use `atmctl approve` or `atmctl deny`".into(),
        ));
    }
    if given.len() != questions.len() {
        return Err(ClientError::Usage(format!(
            "{} answers for {} questions: give one per question, in order",
            given.len(),
            questions.len()
        )));
    }
    let mut answers = Vec::new();
    for (q, a) in questions.iter().zip(&given) {
        let a = a.as_str().unwrap_or_default();
        let labels: Vec<&str> = q["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| text(o, "label"))
            .collect();
        let picks: Option<Vec<&str>> = a
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| labels.get(i).copied())
            })
            .collect();
        answers.push(match picks {
            Some(p) if !labels.is_empty() => p.join(", "),
            _ => a.to_owned(),
        });
    }
    fields["answers"] = json!(answers);
    Ok(fields)
}

pub fn approve(args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    let mut d = json!({"decision": "allow", "always": args.always});
    if let Some(rule) = args.rule {
        d["rule"] = json!(rule);
    }
    decide(&args.socket, &args.id, d)
}

pub fn deny(args: &DenyArgs) -> anyhow::Result<ExitCode> {
    let mut d = json!({"decision": "deny", "interrupt": args.interrupt});
    if let Some(m) = &args.message {
        d["message"] = json!(m);
    }
    decide(&args.socket, &args.id, d)
}

pub fn answer(args: &AnswerArgs) -> anyhow::Result<ExitCode> {
    decide(
        &args.socket,
        &args.id,
        json!({"decision": "answer", "answers": args.answers}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Value {
        json!({"id": "s1", "harness": "claude", "attention": {
            "reason": "question", "tool": "AskUserQuestion", "detail": "Which?",
            "questions": [{"question": "Which?", "options": [{"label": "Postgres"},
                {"label": "SQLite"}], "multi_select": true}, {"question": "Why?"}],
            "request": {"id": "0123456789abcdef0123456789abcdef", "asked_at": "t",
                "answerable": true}}})
    }

    #[test]
    fn pending_requests_are_listed_and_found_by_prefix() {
        let all: Vec<Value> = [session(), json!({"id": "s2"})]
            .iter()
            .filter_map(pending_of)
            .collect();
        assert_eq!(all.len(), 1);
        assert_eq!(find_request(&all, "0123").unwrap()["session_id"], "s1");
        assert_eq!(
            find_request(&all, "0123456789ABCDEF").unwrap()["id"],
            all[0]["id"]
        );
        assert!(find_request(&all, "ff").is_err());
        assert!(find_request(&all, "").is_err());
        let table = format_pending(&all);
        assert!(table.starts_with("01234567  claude"), "{table}");
        assert!(table.contains("2. SQLite"), "{table}");
        assert_eq!(format_pending(&[]), "no agent is waiting for you\n");
    }

    #[test]
    fn numbers_pick_choices_and_text_stays_text() {
        let request = pending_of(&session()).unwrap();
        let fields = json!({"decision": "answer", "answers": ["1,2", "it is small"]});
        let out = resolve_answers(fields, &request).unwrap();
        assert_eq!(out["answers"], json!(["Postgres, SQLite", "it is small"]));
        let out = resolve_answers(json!({"answers": ["9", "x"]}), &request).unwrap();
        assert_eq!(out["answers"], json!(["9", "x"]));
        assert!(resolve_answers(json!({"answers": ["1"]}), &request).is_err());
    }
}
