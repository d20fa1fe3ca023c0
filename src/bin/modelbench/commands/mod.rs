//! One file per subcommand.

pub mod bisect;
pub mod calibrate;
pub mod compare;
pub mod continuous;
pub mod db;
pub mod depth;
pub mod dequantize;
pub mod generate;
pub mod history;
pub mod instructions;
pub mod list;
pub mod load;
pub mod moe;
pub mod noise;
pub mod paired;
pub mod peers;
pub mod perplexity;
pub mod power;
pub mod report;
pub mod run;
pub mod sensitivity;
pub mod serve;
pub mod sweep;
pub mod train;
pub mod train_sweep;
pub mod verify;
