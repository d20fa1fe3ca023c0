//! Measurement: statistics, the device and its synchronisation, memory (counting allocator,
//! RSS, device memory), GPU facts and power, hardware and build (once per run), and the
//! machine's roof (calibration).

pub mod calibration;
pub mod candle_label;
pub mod candle_source;
pub mod device;
pub mod gpu;
pub mod hardware;
pub mod inject;
pub mod instructions;
pub mod latency;
pub mod memory;
pub mod outputs;
pub mod paired;
pub mod process;
pub mod stats;
pub mod system;
pub mod threads;
pub mod timing;
pub mod trace;
pub mod tree_memory;
