//! The suite's own trainable models, apart from the inference models under benchmark:
//! PSANN-LM ([`psann`]), the architecture sweep's backbones ([`backbone`]) and the
//! differentiable pieces they share ([`layers`]). Used by the train and architecture-sweep
//! commands and workloads; nothing else in models/ imports this room.

pub mod backbone;
pub mod layers;
pub mod psann;
