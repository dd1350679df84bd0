//! The README's shell examples as a test (issue 14): every ```sh block of README.md, except those
//! preceded by `<!-- readme-test: skip -->`, runs in order in one `bash` (`set -euo pipefail`)
//! against a fresh real server started the way the README says: the `labcron` binary in an empty
//! directory (so its data is `./data`), the admin password the README's start command sets, on a
//! free port instead of 8080 (the blocks' `127.0.0.1:8080` / `localhost:8080` are rewritten to it).
//! The shell is a newcomer's: no `LABCRON_ADMIN_PASSWORD` (the README must set it), `labcron` on
//! its `PATH`, and `LABCRON_BIND` naming the test server so the administration commands find it.
//! A failing example fails the test naming its README line and first line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{BINARY, Launch, Server, clean_command};

const SKIP_MARKER: &str = "<!-- readme-test: skip -->";

/// One shell block of a README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// 1-based line of the block's first line of code in the README.
    pub line: usize,
    /// The code, with the fence's indentation removed.
    pub code: String,
    /// Preceded by the skip marker.
    pub skipped: bool,
}

impl Block {
    fn first_line(&self) -> &str {
        self.code.lines().next().unwrap_or("").trim()
    }
}

/// Every ```sh block of `readme`, in order. A fence may be indented (a block inside a list item);
/// that indentation is removed from its lines. The skip marker must be the last non-blank line
/// before the opening fence.
pub fn sh_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let indent = lines[i].len() - trimmed.len();
        if let Some(info) = trimmed.strip_prefix("```") {
            let is_sh = matches!(info.trim(), "sh" | "bash" | "shell");
            let skipped = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim() == SKIP_MARKER);
            let mut code = String::new();
            let mut j = i + 1;
            while j < lines.len() && !lines[j].trim_start().starts_with("```") {
                let line = lines[j];
                let cut = line.len() - line.trim_start().len();
                code.push_str(&line[cut.min(indent)..]);
                code.push('\n');
                j += 1;
            }
            if is_sh {
                blocks.push(Block {
                    line: i + 2,
                    code,
                    skipped,
                });
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    blocks
}

/// The admin password of the README's start command (the skipped block running `cargo run`).
pub fn start_password(blocks: &[Block]) -> Option<String> {
    blocks
        .iter()
        .filter(|b| b.code.contains("cargo run"))
        .flat_map(|b| b.code.split_whitespace())
        .find_map(|word| word.strip_prefix("LABCRON_ADMIN_PASSWORD="))
        .map(str::to_string)
}

/// The `labcron` binary running in `dir` the README's way (its default data directory there, no
/// flags but the address), killed when dropped.
fn start_server(dir: &Path, admin_password: &str) -> Server {
    Launch::bare()
        .current_dir(dir)
        .env("LABCRON_ADMIN_PASSWORD", admin_password)
        .start()
}

/// What running the blocks gave.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    /// The README line of the block that failed, and the README line (about) of the failing command.
    pub failed_block: Option<Block>,
    pub failed_line: Option<usize>,
    pub ran: usize,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    fn report(&self) -> String {
        let failed = match (&self.failed_block, self.failed_line) {
            (Some(block), line) => format!(
                "the README block at line {} (`{}`) failed{}",
                block.line,
                block.first_line(),
                line.map(|l| format!(", at README line {l}"))
                    .unwrap_or_default()
            ),
            (None, _) => "the blocks did not run to the end".to_string(),
        };
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "{failed}\n--- stdout (last lines) ---\n{}\n--- stderr (last lines) ---\n{}",
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs the unskipped blocks of `readme` in `dir` against a fresh server; see the module docs.
pub fn run_readme(readme: &str, dir: &Path) -> Outcome {
    let blocks = sh_blocks(readme);
    let password = start_password(&blocks).unwrap_or_else(|| {
        panic!(
            "the README's start command (a block running `cargo run`) sets no LABCRON_ADMIN_PASSWORD"
        )
    });
    let server = start_server(dir, &password);
    let address = format!("127.0.0.1:{}", server.port);
    let runnable: Vec<&Block> = blocks.iter().filter(|b| !b.skipped).collect();

    // One script: a marker before each block (which block is running), an ERR trap writing the
    // failing command's script line, and the blocks themselves.
    let mark_file = dir.join(".readme-block");
    let line_file = dir.join(".readme-line");
    let mut script =
        String::from("set -euo pipefail\ntrap 'echo \"$LINENO\" > \"$README_LINE_FILE\"' ERR\n");
    let mut starts = Vec::new();
    for (index, block) in runnable.iter().enumerate() {
        script.push_str(&format!("echo {index} > \"$README_BLOCK_FILE\"\n"));
        starts.push(script.lines().count() + 1);
        let code = block
            .code
            .replace("127.0.0.1:8080", &address)
            .replace("localhost:8080", &address);
        script.push_str(&code);
    }
    script.push_str("echo done > \"$README_BLOCK_FILE\"\n");
    let script_file = dir.join(".readme.sh");
    std::fs::write(&script_file, &script).expect("write the script");

    let binary_dir = Path::new(BINARY)
        .parent()
        .expect("binary dir")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(binary_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let stdout_file = dir.join(".readme.stdout");
    let stderr_file = dir.join(".readme.stderr");
    let mut child = clean_command("bash")
        .arg(&script_file)
        .current_dir(dir)
        .env("PATH", path)
        .env("LABCRON_BIND", &address)
        .env("README_BLOCK_FILE", &mark_file)
        .env("README_LINE_FILE", &line_file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("run bash");
    // Generous: the examples wait for runs (a 30 s one is cancelled) on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(server);
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let mark = read(&mark_file).trim().to_string();
    let success = status.is_some_and(|s| s.success()) && mark == "done";
    let failed_index: Option<usize> = mark.parse().ok();
    let failed_block = failed_index.map(|i| runnable[i].clone());
    let failed_line = failed_index.and_then(|i| {
        let script_line: usize = read(&line_file).trim().parse().ok()?;
        let offset = script_line.checked_sub(starts[i])?;
        Some(runnable[i].line + offset)
    });
    let mut stderr = read(&stderr_file);
    if status.is_none() {
        stderr.push_str("\n(killed: the blocks ran for more than 300 s)");
    }
    Outcome {
        success,
        failed_block: if success { None } else { failed_block },
        failed_line: if success { None } else { failed_line },
        ran: if success {
            runnable.len()
        } else {
            failed_index.unwrap_or(0)
        },
        stdout: read(&stdout_file),
        stderr,
    }
}

#[test]
fn every_readme_example_works_when_pasted_in_order_on_a_fresh_install() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let dir = tempfile::tempdir().expect("temp dir");
    let outcome = run_readme(&readme, dir.path());
    assert!(outcome.success, "{}", outcome.report());
    // The examples did what they say: the result files they download are there.
    let counts = std::fs::read_to_string(dir.path().join("counts.csv")).expect("counts.csv");
    assert_eq!(counts, "site,specimens\nMain,42\n");
    let downloaded: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        downloaded
            .iter()
            .any(|n| n.starts_with("scheduled_query_") && n.ends_with(".csv")),
        "the saved query's CSV was downloaded: {downloaded:?}"
    );
    assert!(
        outcome.ran >= 8,
        "only {} blocks ran: is the skip marker overused?",
        outcome.ran
    );
}

#[test]
fn a_failing_example_fails_naming_its_block_and_line() {
    let readme = "# Test\n\n<!-- readme-test: skip -->\n```sh\nLABCRON_ADMIN_PASSWORD=pw-for-the-runner cargo run --release\n```\n\n\
                  ```sh\nexport LABCRON_ADMIN_PASSWORD=pw-for-the-runner\ncurl -fsS http://127.0.0.1:8080/health >/dev/null\n```\n\n\
                  ```toml\nnot = \"run\"\n```\n\n\
                  ```sh\n# Sign in, then ask for a job that does not exist\necho first\n\
                  curl -fsS -u \"admin:$LABCRON_ADMIN_PASSWORD\" http://localhost:8080/rest/ng/scheduled-jobs/424242\necho never\n```\n\n\
                  ```sh\necho not reached\n```\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let outcome = run_readme(readme, dir.path());
    assert!(!outcome.success);
    let block = outcome.failed_block.clone().expect("the failing block");
    assert_eq!(block.line, 18, "{outcome:?}");
    assert_eq!(
        block.first_line(),
        "# Sign in, then ask for a job that does not exist"
    );
    assert_eq!(outcome.failed_line, Some(20), "{outcome:?}");
    assert_eq!(outcome.ran, 1, "the first block ran and succeeded");
    assert!(outcome.stdout.contains("first") && !outcome.stdout.contains("never"));
    assert!(
        outcome.stderr.contains("400"),
        "curl -f reports the status: {}",
        outcome.stderr
    );
    assert!(outcome.report().contains("line 18"), "{}", outcome.report());
}

#[test]
fn blocks_are_found_with_their_lines_indentation_and_skip_markers() {
    let readme = "intro\n```sh\necho a\n```\n<!-- readme-test: skip -->\n\n```sh\necho b\n```\n\
                  - item\n\n  ```sh\n  echo c\n    indented\n  ```\n```text\necho d\n```\n";
    let blocks = sh_blocks(readme);
    assert_eq!(
        blocks,
        vec![
            Block {
                line: 3,
                code: "echo a\n".into(),
                skipped: false
            },
            Block {
                line: 8,
                code: "echo b\n".into(),
                skipped: true
            },
            Block {
                line: 13,
                code: "echo c\n  indented\n".into(),
                skipped: false
            },
        ]
    );
    assert_eq!(start_password(&blocks), None);
    let with_start =
        sh_blocks("```sh\nLABCRON_ADMIN_PASSWORD=s3cret-pw cargo run --release\n```\n");
    assert_eq!(start_password(&with_start).as_deref(), Some("s3cret-pw"));
}
