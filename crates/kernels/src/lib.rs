//! modelbench's own CPU kernels, the bottom layer (candle-core only): packed Q8_0 / Q4_K /
//! Q6_K matmuls with AVX-512 VNNI and their portable references ([`q8_matmul`]), and the
//! element-wise ops computed on the host ([`host_ops`]). The batched models of
//! `modelbench-models` reach them as `models::q8_matmul` and `models::host_ops`.

pub mod host_ops;
pub mod pool;
pub mod q8_matmul;
