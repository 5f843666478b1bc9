//! Per-epoch progress of `train` on stderr.

use super::text::{epoch_line, prints_step};
use cross_entropy_tch::training::EpochMetrics;

/// Per-epoch progress on stderr: a bar on a terminal, plain lines (at most
/// about [`MAX_STEP_LINES`] of them) otherwise, nothing with `--quiet`.
pub struct Progress {
    epochs: usize,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(epochs: usize, quiet: bool, terminal: bool) -> Progress {
        let bar = (!quiet && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(epochs as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("epoch {pos:>5}/{len} [{bar:30}] {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Progress { epochs, quiet, bar }
    }

    pub fn epoch(&mut self, m: &EpochMetrics) {
        let line = epoch_line(m, self.epochs);
        match &self.bar {
            Some(bar) => {
                bar.set_position(m.epoch as u64);
                bar.set_message(
                    line.split_once(": ").map_or(line.clone(), |(_, rest)| rest.to_string()),
                );
            }
            None if !self.quiet && prints_step(m.epoch, self.epochs) => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
