//! The GGUF format, below every model that reads it: the bounded, checked read of a file's
//! header ([`check`]: a GGUF file is untrusted input), tensors read into candle's quantized
//! storage and header rewrites ([`read`]), and the names of the ggml tensor types
//! ([`ggml_types`]). Nothing here knows a family: the checks against a family's spec are
//! [`super::families::check`]'s, and the quantized fixtures are written by
//! [`super::families::fixture`].

pub mod check;
pub mod ggml_types;
pub mod read;
