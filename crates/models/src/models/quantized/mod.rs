//! The project's own quantized decoders and the parts they share: [`llama`] (one generic
//! decoder for the Llama-like GGUF architectures, with or without experts, driven by the
//! family's layout record), [`gemma3`] (Gemma 3, sliding-window layers), and [`parts`]
//! (embeddings, projections, RoPE tables, KV caches and batched stepping helpers of both).
//! The family table ([`super::families`]) says which of them runs a file; loading a GGUF model
//! through that table is [`super::sources::gguf`].

pub mod gemma3;
pub mod llama;
pub mod parts;
pub mod wrong;
