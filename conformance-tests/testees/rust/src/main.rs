//! `blipmq-testee-rust`: the conformance testee for the Rust client.
//!
//! Reads requests from stdin and writes one reply per request to stdout, one
//! JSON object per line, in order (see `conformance-tests/README.md`, "The
//! testee contract"). Requests are handled one at a time. Logs go to stderr.
//! At the end of stdin every client is closed and the process exits 0.

mod protocol;
mod testee;

use std::io::Write;
use std::process::ExitCode;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::protocol::{parse_request, Outcome, Reply};
use crate::testee::Testee;

#[tokio::main]
async fn main() -> ExitCode {
    let mut testee = Testee::default();
    let code = serve(&mut testee).await;
    testee.close_all().await;
    code
}

/// Answer requests until stdin ends (success) or stdin or stdout fails.
async fn serve(testee: &mut Testee) -> ExitCode {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdout = std::io::stdout();
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                eprintln!("blipmq-testee-rust: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match parse_request(&line) {
            Ok(request) => {
                let id = request.id.clone();
                let op = request.op.clone();
                let outcome = testee.handle(request).await;
                if let Outcome::Err(failure) = &outcome {
                    eprintln!(
                        "blipmq-testee-rust: {id} {op}: {} {}",
                        failure.code, failure.message
                    );
                }
                Reply { id, outcome }
            }
            Err((id, failure)) => {
                eprintln!("blipmq-testee-rust: bad request: {}", failure.message);
                Reply {
                    id,
                    outcome: Outcome::Err(failure),
                }
            }
        };
        if let Err(e) = write_reply(&mut stdout, &reply) {
            eprintln!("blipmq-testee-rust: writing stdout: {e}");
            return ExitCode::FAILURE;
        }
    }
}

fn write_reply(stdout: &mut std::io::Stdout, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply)?;
    text.push(b'\n');
    let mut out = stdout.lock();
    out.write_all(&text)?;
    out.flush()
}
