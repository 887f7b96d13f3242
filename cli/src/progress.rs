//! Progress bars on stderr (only when it is a terminal and not --quiet).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws one bar per phase the store reports.
pub struct Bars {
    bar: Mutex<Option<(ProgressBar, Instant)>>,
}

/// A phase shorter than this never draws a bar.
const SHOW_AFTER: Duration = Duration::from_secs(1);

impl Bars {
    /// Bars if stderr is a terminal and `quiet` is off, else `None`.
    pub fn new(quiet: bool) -> Option<Bars> {
        (!quiet && std::io::stderr().is_terminal()).then(|| Bars {
            bar: Mutex::new(None),
        })
    }
}

impl cairn_store::Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        let bar = if total > 0 {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
                    .expect("valid template")
                    .progress_chars("=> "),
            )
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_message(phase.to_string());
        bar.set_draw_target(ProgressDrawTarget::hidden());
        *self.bar.lock().expect("bar lock") = Some((bar, Instant::now()));
    }
    fn advance(&self, n: u64) {
        if let Some((b, started)) = &*self.bar.lock().expect("bar lock") {
            b.inc(n);
            if b.is_hidden() && started.elapsed() > SHOW_AFTER {
                b.set_draw_target(ProgressDrawTarget::stderr());
                b.enable_steady_tick(Duration::from_millis(200));
            }
        }
    }
    fn finish(&self) {
        if let Some((b, _)) = self.bar.lock().expect("bar lock").take() {
            b.finish_and_clear();
        }
    }
}
