//! The CLI's one error type: a one-line reason and an exit code.

use std::fmt::Debug;

/// Exit 1: the broker refused, the network failed, a file was unreadable.
pub const RUNTIME: u8 = 1;
/// Exit 2: the command line asks for something impossible.
pub const USAGE: u8 = 2;

#[derive(Debug)]
pub struct CliError {
    pub exit: u8,
    /// One line, without the `blipmq-cli: ` prefix.
    pub message: String,
}

impl CliError {
    pub fn runtime(message: impl Into<String>) -> CliError {
        CliError {
            exit: RUNTIME,
            message: one_line(message.into()),
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            exit: USAGE,
            message: one_line(message.into()),
        }
    }
}

fn one_line(text: String) -> String {
    if text.contains('\n') {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        text
    }
}

/// A client error as `CodeName (number): detail`, e.g.
/// `AuthFailed (200): invalid api key`.
pub fn describe<K: Copy>(error: &blipmq::error::Error<K>) -> String {
    format!(
        "{} ({}): {}",
        error.code_name(),
        error.code().0,
        error.message()
    )
}
