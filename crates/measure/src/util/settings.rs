//! The settings of the knob table that layers below `config` need: where run folders and
//! fixtures go, the results database, offline mode (`MODELBENCH_REPORTS`,
//! `MODELBENCH_FIXTURE_CACHE`, `MODELBENCH_DB`, `MODELBENCH_OFFLINE`). Those layers cannot
//! import the table (`config` sits above them), so they never read these variables
//! themselves: `config::knobs::install` parses them through the table and installs the result
//! here, process-wide, at the start of every bench, every CLI command and every plan's
//! `from_env` (as `measure::inject` is installed). Until something installs them (a library
//! caller that never touched `config`), the typed defaults below apply, i.e. the values of an
//! environment without these knobs.

use std::path::PathBuf;
use std::sync::RwLock;

/// The installed values (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where run folders go (`MODELBENCH_REPORTS`; default `<crate>/target-reports`).
    pub reports_root: PathBuf,
    /// Where fixture models are written, an HF hub cache of their own
    /// (`MODELBENCH_FIXTURE_CACHE`; default `<target dir>/modelbench-fixtures/hub`).
    pub fixture_cache: PathBuf,
    /// The results database as written (`MODELBENCH_DB`, checked by the knob table's parser;
    /// `output::db::DbTarget::resolve` reads it). None: SQLite beside the run folders.
    pub db: Option<String>,
    /// `MODELBENCH_OFFLINE` (HF_HUB_OFFLINE, the hub's own variable, is read where the hub is).
    pub offline: bool,
}

impl Default for Settings {
    /// The typed defaults of the four knobs (the knob table's `default` column describes them).
    fn default() -> Settings {
        Settings {
            reports_root: crate::util::root().join("target-reports"),
            fixture_cache: crate::util::fsio::target_dir()
                .join("modelbench-fixtures")
                .join("hub"),
            db: None,
            offline: false,
        }
    }
}

static INSTALLED: RwLock<Option<Settings>> = RwLock::new(None);

/// Installs `s` process-wide (replacing what was installed).
pub fn install(s: Settings) {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(s);
}

/// The installed settings, or [`Settings::default`] when none were installed.
pub fn current() -> Settings {
    INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}
