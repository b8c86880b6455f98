//! Progress on a terminal: bars and spinners on standard error that stay
//! hidden when standard error is not a terminal (piped, redirected, CI).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Whether progress is drawn at all.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with `message`, ticking until finished.
pub fn spinner(message: String) -> ProgressBar {
    if !enabled() {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    // Dropped early (an error), it clears itself rather than stay on screen.
    let bar = ProgressBar::new_spinner()
        .with_message(message)
        .with_finish(ProgressFinish::AndClear);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar of `total` steps with `message`.
pub fn bar(total: u64, message: String) -> ProgressBar {
    if !enabled() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(total)
        .with_message(message)
        .with_finish(ProgressFinish::AndClear);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed}, {eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
