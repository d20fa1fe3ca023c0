//! The CLI's driver of the suite loop (`crate::workloads::suite::run_suite`): each
//! workload gets `warmup` untimed and `trials` timed iterations through the shared trial loop,
//! its record stamped `cli`; lines go above a progress bar, or to stdout without one.

use std::time::Duration;

use crate::output::record::Record;
use crate::output::report::RunDir;
use crate::workloads::suite::Driver;
use crate::workloads::Workload;

pub struct Trials {
    pub warmup: usize,
    pub trials: usize,
    /// Write each record into the run folder (`--no-save`: kept in memory only).
    pub save: bool,
    /// A progress bar over every warm-up and trial (its lines print above it).
    pub bar: Option<indicatif::ProgressBar>,
}

impl Trials {
    /// Without a progress bar: lines go to stdout.
    pub fn new(warmup: usize, trials: usize, save: bool) -> Trials {
        Trials {
            warmup,
            trials,
            save,
            bar: None,
        }
    }

    /// With a progress bar of `{bar} {pos}/{len} runs {msg}`.
    pub fn with_bar(mut self) -> Trials {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs {msg}")
                .expect("valid template"),
        );
        self.bar = Some(bar);
        self
    }
}

impl Driver for Trials {
    fn sizes_by_estimate(&self) -> bool {
        false
    }
    fn verbose(&self) -> bool {
        true
    }
    fn begin(&mut self, points: usize) {
        if let Some(b) = &self.bar {
            b.set_length((points * (self.warmup + self.trials)) as u64);
        }
    }
    fn loading(&self, label: &str, _source: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loading {label}"));
        }
    }
    fn measure<W: Workload>(
        &mut self,
        w: &mut W,
        _est: Option<Duration>,
    ) -> crate::Result<Option<Record>> {
        let (name, group, id) = (w.name(), w.group(), w.id());
        let bar = self.bar.as_ref();
        crate::workloads::run_trials_with(w, self.warmup, self.trials, &mut |_, warm| {
            if let Some(b) = bar {
                b.set_message(format!(
                    "{name} {group} {}",
                    if warm { "warm-up" } else { "trial" }
                ));
                b.inc(1);
            }
        })
        .map(Some)
        .map_err(|e| crate::Error::Report(format!("{id}: {e}")))
    }
    fn keep(&mut self, run: &mut RunDir, r: Record) -> crate::Result<()> {
        if self.save {
            run.push(r)
        } else {
            run.push_unsaved(r);
            Ok(())
        }
    }
    fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => println!("{line}"),
        }
    }
    fn end(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
