//! Where verdicts are made (issue 63 item 4): numbers in, verdict out, nothing else. Every
//! command, the `cargo bench` summary, the site and the server call these functions and none
//! makes a verdict of its own; reading records, joining runs, running models and rendering
//! stay where they are.
//!
//! - [`speed`]: two sample sets of one benchmark (bootstrap interval of the ratio of medians
//!   against a threshold, then against the benchmark's run-to-run noise), and every word a
//!   speed verdict is written with;
//! - [`noise`]: a benchmark's run-to-run noise threshold from repeated runs, and the one rule
//!   that picks the threshold of a benchmark id;
//! - [`paired`]: a paired metric's interval against a threshold, and the sequential design's
//!   looks and stop rule;
//! - [`outputs`]: whether two runs computed the same thing (the output verdict);
//! - [`kld`]: the KL-divergence gate's limits and checks against llama.cpp;
//! - [`quality`]: the greedy-agreement and perplexity gate's rules;
//! - [`gate`]: the exit rules (what fails a command) and the instruction-count tolerance.
//!
//! It sits above `measure` (it reads `measure::stats`, `measure::paired`, `measure::outputs`
//! and `measure::hardware`) and below `models`, so every layer above can call it.

pub mod gate;
pub mod kld;
pub mod noise;
pub mod outputs;
pub mod paired;
pub mod quality;
pub mod speed;
