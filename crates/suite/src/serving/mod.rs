//! Serving: an OpenAI-compatible server over the suite's models and a load generator for any
//! such server.
//!
//! - [`chat`]: chat prompts: the model's chat template (minijinja), BOS as llama.cpp adds it;
//! - [`protocol`]: the OpenAI wire format (request parsing, chunks, logprobs, error bodies);
//! - [`scheduler`]: the model thread, continuous batching with chunked prefill;
//! - [`prefix`]: prefix caching, the slots' caches reused by prompts that begin alike;
//! - [`server`]: the HTTP side (axum), the bounded queue and `/metrics`;
//! - [`load`]: `modelbench load`, closed- and open-loop load against one or more servers.
//!
//! A layer between `workloads` and `config`: it uses models, the engine's sampler and the
//! output records; the binary's `serve` and `load` commands only parse their flags.

pub mod chat;
pub mod load;
pub mod prefix;
pub mod protocol;
pub mod scheduler;
pub mod server;
mod tokens;
