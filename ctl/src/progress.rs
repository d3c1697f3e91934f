//! Progress bars on stderr, only when it is a terminal (never in pipes, logs or CI).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with a message that a callback refreshes, or nothing off a terminal.
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    /// Starts a spinner showing `message` if stderr is a terminal.
    pub fn start(message: &str) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner { bar: Some(bar) }
    }

    /// Whether anything is drawn.
    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Replaces the message.
    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `work` while a spinner shows what `status` says every 100 ms.
pub fn with_spinner<T>(
    initial: &str,
    status: impl Fn() -> String + Sync,
    work: impl FnOnce() -> T,
) -> T {
    let spinner = Spinner::start(initial);
    if !spinner.is_visible() {
        return work();
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                spinner.set_message(status());
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let result = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

/// A byte count for people: "1.2 GiB".
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
