//! What every `blipmq-cli` test file needs: the CLI's path, the broker
//! binary beside it, and commands untouched by the test's environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const CLI: &str = env!("CARGO_BIN_EXE_blipmq-cli");

/// The `blipmq` broker binary, next to the CLI's. A dev-dependency on
/// `blipmq-broker` builds its library but not its binaries, so the binary is
/// built (or found up to date) once per test run with the same profile and
/// target directory.
pub fn broker_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cli = Path::new(CLI);
        let bin = cli.with_file_name(format!("blipmq{}", std::env::consts::EXE_SUFFIX));
        let profile_dir = cli.parent().expect("the CLI binary's directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(name) => name.to_string(),
            None => "dev".to_string(),
        };
        let target_dir = profile_dir.parent().expect("the target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let output = Command::new(cargo)
            .args(["build", "--quiet", "-p", "blipmq-broker", "--bin", "blipmq"])
            .args(["--profile", &profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .expect("run cargo to build the blipmq broker binary");
        assert!(
            output.status.success(),
            "`cargo build -p blipmq-broker --bin blipmq` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            bin.exists(),
            "the broker binary is not at {} after building it",
            bin.display()
        );
        bin
    })
}

/// A command with no BLIPMQ_* variables from the test's own environment.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BLIPMQ_") {
            cmd.env_remove(name);
        }
    }
    cmd
}
