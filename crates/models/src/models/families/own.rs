//! The project's own implementations behind [`GgufModel`]: one wrapper; each family says only
//! how its model loads and batches ([`OwnModel`]); it steps and resets as every one of them
//! does ([`SingleSeq`]).

use candle_core::{Result, Tensor};

use super::{Build, GgufModel};
use crate::models::batched::{BatchOptions, StepModel};
use crate::models::quantized::parts::SingleSeq;

/// What a project's implementation provides (its weights are shared by clones).
pub(super) trait OwnModel: SingleSeq + Clone + Send + 'static {
    fn load(b: Build<'_>) -> Result<Self>;
    /// Its batched form with `o.slots` sequences, from this model itself (with
    /// `o.fast_weights` it is the last holder of its weights, so a weight the batched form
    /// re-encodes can be freed once re-encoded).
    fn batch(self, o: &BatchOptions) -> crate::error::Result<Box<dyn StepModel>>;
    /// See [`crate::models::CausalLm::match_ggml_gelu`].
    fn match_ggml_gelu(&mut self) -> bool {
        false
    }
    /// See [`crate::models::CausalLm::match_candle_arithmetic`].
    fn match_candle_arithmetic(&mut self) -> bool {
        false
    }
}

/// The model, or None once `--fast-weights` moved its weights into a batched form.
struct Own<M>(Option<M>);

/// The family table's builder of a project's implementation.
pub(super) fn build<M: OwnModel>(b: Build<'_>) -> Result<Box<dyn GgufModel>> {
    Ok(Box::new(Own(Some(M::load(b)?))))
}

impl<M: OwnModel> Own<M> {
    fn model(&mut self) -> Result<&mut M> {
        self.0.as_mut().ok_or_else(|| {
            candle_core::Error::Msg(
                "the weights moved to the batched model (--fast-weights); load the model again"
                    .into(),
            )
        })
    }
}

impl<M: OwnModel> GgufModel for Own<M> {
    fn forward(&mut self, x: &Tensor, pos: usize) -> Result<Tensor> {
        self.model()?.forward(x, pos)
    }
    fn reset(&mut self) {
        if let Some(m) = self.0.as_mut() {
            m.reset()
        }
    }
    fn snapshot(&self) -> Option<Box<dyn GgufModel>> {
        Some(Box::new(Own(Some(self.0.clone()?))))
    }
    fn batched(&mut self, o: &BatchOptions) -> Option<crate::error::Result<Box<dyn StepModel>>> {
        let m = if o.fast_weights {
            self.0.take()
        } else {
            self.0.clone()
        };
        m.map(|m| m.batch(o))
    }
    fn own_weights(&self) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(self.0.clone()?))
    }
    fn match_ggml_gelu(&mut self) -> bool {
        self.0.as_mut().is_some_and(M::match_ggml_gelu)
    }
    fn match_candle_arithmetic(&mut self) -> bool {
        self.0.as_mut().is_some_and(M::match_candle_arithmetic)
    }
}
