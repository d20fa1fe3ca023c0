//! The one suite loop. A [`Suite`] is a list of cases that each load once (a model) and then
//! hand out one workload per point (a scenario, a depth); [`run_suite`] resolves and
//! preflights every case before any weights load, loads each case once, measures its points
//! in order (with any records measured beside each point, [`Suite::beside`]), and unloads it
//! before the next one loads ([`Suite::unload`]). What measures is a [`Driver`]: criterion
//! (the benches, `harness::CriterionDriver`) or the CLI's fixed warm-ups and trials. Neither
//! the suites nor this loop know criterion.

use std::time::Duration;

use crate::error::Result;
use crate::output::record::Record;
use crate::output::report::RunDir;

use super::Workload;

/// How a suite's workloads are measured.
pub trait Driver {
    /// True where a measurement is sized from an estimate of one iteration (criterion): the
    /// loop then asks the suite for its estimates ([`Suite::estimates`]).
    fn sizes_by_estimate(&self) -> bool;

    /// Only listing the benchmarks (`cargo bench -- --list`): nothing runs, so no probe.
    fn listing(&self) -> bool {
        false
    }

    /// True where the driver prints no timing of its own (the CLI): suites then print their
    /// full result lines and preflight estimates; under criterion, only what criterion's own
    /// block does not show.
    fn verbose(&self) -> bool;

    /// How many points the suite will measure (for progress).
    fn begin(&mut self, points: usize) {
        let _ = points;
    }

    /// Before a case's weights load.
    fn loading(&self, label: &str, source: &str) {
        let _ = (label, source);
    }

    /// Measures `w` (`est`: one iteration's duration where known) and returns its record,
    /// stamped with the harness that measured it; None where it was not measured (criterion's
    /// list and test modes, or a filter that leaves it out).
    fn measure<W: Workload>(&mut self, w: &mut W, est: Option<Duration>) -> Result<Option<Record>>;

    /// Keeps a measured record in the run folder.
    fn keep(&mut self, run: &mut RunDir, r: Record) -> Result<()> {
        run.push(r)
    }

    /// A line for the person watching (loads, warnings, results).
    fn say(&self, line: &str);

    /// After the last point.
    fn end(&mut self) {}
}

/// Cases that load once and hand out one workload per point.
pub trait Suite {
    /// What is resolved and preflighted before anything loads (a resolved model).
    type Case;
    /// What a case loads (a model with its tokenizer).
    type Loaded;
    /// The workload of one point on a loaded case.
    type Work<'a>: Workload
    where
        Self: 'a;

    /// Every case, resolved and preflighted: a bad one fails before any weights load.
    fn cases(&self, driver: &dyn Say) -> Result<Vec<Self::Case>>;

    /// Loads a case (once).
    fn load(&self, case: Self::Case, driver: &dyn Say) -> Result<Self::Loaded>;

    /// Points per case.
    fn points(&self) -> usize;

    /// One iteration's duration at each point, where it can be told without running one
    /// (criterion sizes its window from it); None: the driver measures one untimed iteration.
    fn estimates(&self, loaded: &mut Self::Loaded, listing: bool) -> Result<Vec<Option<Duration>>> {
        let _ = (loaded, listing);
        Ok(vec![None; self.points()])
    }

    /// The workload of point `p` (`say`: for what its preparation has to tell).
    fn workload<'a>(
        &'a self,
        loaded: &'a mut Self::Loaded,
        p: usize,
        say: &dyn Say,
    ) -> Result<Self::Work<'a>>;

    /// The line printed after point `p` was measured (`verbose`: see [`Driver::verbose`]).
    fn result_line(&self, p: usize, r: &Record, verbose: bool) -> Option<String> {
        let _ = (p, r, verbose);
        None
    }

    /// Records measured beside point `p`'s own record `r` by its workload `w` (other engines
    /// run in alternation with its trials: `modelbench peers`), kept right after `r`.
    fn beside<'a>(
        &'a self,
        w: &mut Self::Work<'a>,
        r: &Record,
        say: &dyn Say,
    ) -> Result<Vec<Record>> {
        let _ = (w, r, say);
        Ok(Vec::new())
    }

    /// Ends a case after its last point (its model dropped); returns the records that could
    /// only be made then (a peer process's peak memory over all the points), kept after the
    /// case's others.
    fn unload(&self, loaded: Self::Loaded, say: &dyn Say) -> Result<Vec<Record>> {
        let _ = (loaded, say);
        Ok(Vec::new())
    }
}

/// The part of a [`Driver`] a suite's preparation and loading use: telling the person
/// watching.
pub trait Say {
    /// See [`Driver::say`].
    fn say(&self, line: &str);
    /// See [`Driver::verbose`].
    fn verbose(&self) -> bool;
    /// See [`Driver::loading`].
    fn loading(&self, label: &str, source: &str);
}

impl<D: Driver> Say for D {
    fn say(&self, line: &str) {
        Driver::say(self, line)
    }
    fn verbose(&self) -> bool {
        Driver::verbose(self)
    }
    fn loading(&self, label: &str, source: &str) {
        Driver::loading(self, label, source)
    }
}

/// The loop: every case resolved and preflighted, then each loaded once and measured at
/// every point; records go into `run` through the driver.
pub fn run_suite<S: Suite, D: Driver>(suite: &S, driver: &mut D, run: &mut RunDir) -> Result<()> {
    let cases = suite.cases(&*driver)?;
    driver.begin(cases.len() * suite.points());
    for case in cases {
        let mut loaded = suite.load(case, &*driver)?;
        let est = if driver.sizes_by_estimate() {
            suite.estimates(&mut loaded, driver.listing())?
        } else {
            vec![None; suite.points()]
        };
        for (p, est) in est.into_iter().enumerate() {
            let mut w = suite.workload(&mut loaded, p, &*driver)?;
            let Some(r) = driver.measure(&mut w, est)? else {
                continue;
            };
            if let Some(line) = suite.result_line(p, &r, driver.verbose()) {
                driver.say(&line);
            }
            let beside = suite.beside(&mut w, &r, &*driver)?;
            drop(w);
            driver.keep(run, r)?;
            for r in beside {
                driver.keep(run, r)?;
            }
        }
        for r in suite.unload(loaded, &*driver)? {
            driver.keep(run, r)?;
        }
    }
    driver.end();
    Ok(())
}

/// Measures `w` with `driver` and keeps its record in `run`; returns the record where it was
/// measured. The grids (moe, arch, psann, overhead), whose points build their own weights,
/// measure through it.
pub fn measure_into<W: Workload, D: Driver>(
    driver: &mut D,
    w: &mut W,
    est: Option<Duration>,
    run: &mut RunDir,
) -> Result<Option<Record>> {
    let Some(r) = driver.measure(w, est)? else {
        return Ok(None);
    };
    driver.keep(run, r.clone())?;
    Ok(Some(r))
}

/// Where and how a grid's workloads run: the device (as named and opened), the precision,
/// the seed, and the machine's calibration for utilisation figures.
pub struct Setup {
    pub device: crate::measure::device::DeviceSpec,
    pub dev: candle_core::Device,
    pub dtype: candle_core::DType,
    pub seed: u64,
    pub calibration: Option<crate::measure::calibration::Calibration>,
}
