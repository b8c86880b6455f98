//! The interactive prompt driven as a person would: in a real terminal
//! (tmux), typing statements, commands and Tab, and reading the screen.
//! Piped standard input runs as a batch.

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::repo_root;

#[test]
fn piped_statements_run_as_a_batch() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segql"))
        .args(["--format", "csv"])
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*) AS n\nFROM orders;\nSELECT 'a;b' AS s;\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "n\n25900\n\ns\na;b\n"
    );
}

/// A tmux session running segql in a 200-column terminal.
struct Terminal {
    name: String,
}

impl Terminal {
    fn start(history: &std::path::Path) -> Option<Self> {
        let name = format!("segql-test-{}", std::process::id());
        let command = format!(
            "cd {} && SEGQL_HISTORY={} {} --as-of 2011-12-10",
            repo_root().display(),
            history.display(),
            env!("CARGO_BIN_EXE_segql")
        );
        let started = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "200",
                "-y",
                "50",
                &command,
            ])
            .status()
            .ok()?;
        started.success().then_some(Self { name })
    }

    /// Types `text` literally (tmux would read a trailing `;` as its own
    /// command separator), then presses each key of `keys` (`Enter`, `Tab`,
    /// `C-c`).
    fn keys(&self, input: &[&str]) {
        let (text, keys) = input.split_first().unwrap();
        // tmux reads a `;` ending an argument as a command separator
        // unless escaped.
        let text = match text.strip_suffix(';') {
            Some(head) => format!("{head}\\;"),
            None => text.to_string(),
        };
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, "-l", &text])
            .status()
            .unwrap();
        assert!(status.success(), "tmux send-keys failed");
        for key in keys {
            let status = Command::new("tmux")
                .args(["send-keys", "-t", &self.name, key])
                .status()
                .unwrap();
            assert!(status.success(), "tmux send-keys {key} failed");
        }
    }

    /// [`Terminal::keys`] when the session may have ended meanwhile (then
    /// the keys go nowhere).
    fn retype(&self, input: &[&str]) {
        for (i, key) in input.iter().enumerate() {
            let mut args = vec!["send-keys", "-t", &self.name];
            if i == 0 {
                args.push("-l");
            }
            args.push(key);
            let _ = Command::new("tmux").args(args).status();
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name, "-S", "-200"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the prompt is back after the last `text` on the screen.
    fn wait_for_prompt_after(&self, text: &str) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            let after = screen.rfind(text).map(|at| &screen[at + text.len()..]);
            if after.is_some_and(|after| after.contains("segql>")) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the prompt never came back after {text:?}:\n{screen}"
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen shows `text`, or fails with the screen.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the screen never showed {text:?}:\n{screen}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

#[test]
fn interactive_session_in_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        // .ci/run installs tmux; a developer machine without it skips.
        eprintln!("tmux is not installed: skipping the terminal test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let term = Terminal::start(&history).expect("tmux starts");
    term.wait_for("\\? for help");

    // A statement over two lines runs when the `;` arrives.
    term.keys(&["SELECT count(*) AS n", "Enter"]);
    term.keys(&["FROM orders;", "Enter"]);
    term.wait_for("25900");

    // Backslash commands.
    term.keys(&["\\d", "Enter"]);
    term.wait_for("order_items");
    term.keys(&["\\d customers", "Enter"]);
    term.wait_for("n_countries");
    term.keys(&["\\df rfm_code", "Enter"]);
    term.wait_for("rfm_code(r, f, m)");
    term.keys(&["\\segments", "Enter"]);
    term.wait_for("lapsed_big_spenders");
    term.keys(&["\\timing", "Enter"]);
    term.wait_for("timing is on");
    term.keys(&["\\format csv", "Enter"]);
    term.wait_for("output format is csv");

    // Tab completes a table name.
    term.keys(&["SELECT count(*) AS c FROM order_it", "Tab"]);
    term.keys(&[";", "Enter"]);
    term.wait_for("541909");
    term.wait_for("time: ");

    // Segment statements, and an error that keeps the session.
    term.keys(&["PREVIEW SEGMENT country = 'Iceland';", "Enter"]);
    term.wait_for("12347,2010-12-07T14:57:00,Iceland");
    term.keys(&["SELECT nope FROM orders;", "Enter"]);
    term.wait_for("error:");
    term.keys(&["SELECT 40 + 2 AS answer;", "Enter"]);
    term.wait_for("42");

    // Ctrl-C cancels a statement that would run for hours (541,909 squared
    // pairs) and keeps the session.
    term.keys(&[
        "SELECT count(*) AS pairs FROM order_items a, order_items b WHERE a.quantity + b.quantity = -99999;",
        "Enter",
    ]);
    sleep(Duration::from_millis(1500));
    term.keys(&["", "C-c"]);
    term.wait_for("cancelled");
    term.keys(&["SELECT 6 * 7 + 1000 AS after_cancel;", "Enter"]);
    term.wait_for("1042");
    // Keys typed before the prompt is back reach the terminal in line mode,
    // where Ctrl-C would not drop the line: wait for the new prompt.
    term.wait_for_prompt_after("1042");

    // Ctrl-C while typing drops the line; \q quits and saves history.
    term.keys(&["SELECT 'never", "C-c"]);
    // The editor may drop keys that arrive while it sets the terminal up for
    // the next line: type `\\q` once the new prompt shows.
    term.wait_for_prompt_after("never");
    term.keys(&["\\q", "Enter"]);
    let start = Instant::now();
    let mut typed = Instant::now();
    while !history.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no history file written after \\q:\n{}",
            term.screen()
        );
        // On a busy machine the editor can still drop the `\q` (the Enter
        // alone then shows an empty prompt): type it again while the
        // session waits at a prompt.
        if typed.elapsed() > Duration::from_secs(3) && term.screen().trim_end().ends_with("segql>")
        {
            term.retype(&["\\q", "Enter"]);
            typed = Instant::now();
        }
        sleep(Duration::from_millis(100));
    }
    sleep(Duration::from_millis(200));
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(
        saved.contains("PREVIEW SEGMENT country = 'Iceland';"),
        "{saved}"
    );
    assert!(!saved.contains("never"), "{saved}");
}
