//! The project's own implementations behind [`GgufModel`]: one wrapper; each family says only
//! how its model steps, resets and batches ([`OwnModel`]).

use candle_core::{Result, Tensor};

use super::{Build, GgufModel};
use crate::models::batched::{BatchOptions, StepModel};

/// What a project's implementation provides (its weights are shared by clones).
pub(super) trait OwnModel: Clone + Send + 'static {
    fn load(b: Build<'_>) -> Result<Self>;
    fn step(&mut self, x: &Tensor, pos: usize) -> Result<Tensor>;
    fn clear(&mut self);
    /// Its batched form with `o.slots` sequences.
    fn batch(&self, o: &BatchOptions) -> crate::error::Result<Box<dyn StepModel>>;
}

struct Own<M>(M);

/// The family table's builder of a project's implementation.
pub(super) fn build<M: OwnModel>(b: Build<'_>) -> Result<Box<dyn GgufModel>> {
    Ok(Box::new(Own(M::load(b)?)))
}

impl<M: OwnModel> GgufModel for Own<M> {
    fn forward(&mut self, x: &Tensor, pos: usize) -> Result<Tensor> {
        self.0.step(x, pos)
    }
    fn reset(&mut self) {
        self.0.clear()
    }
    fn snapshot(&self) -> Option<Box<dyn GgufModel>> {
        Some(Box::new(Own(self.0.clone())))
    }
    fn batched(&self, o: &BatchOptions) -> Option<crate::error::Result<Box<dyn StepModel>>> {
        Some(self.0.batch(o))
    }
    fn own_weights(&self) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(self.0.clone()))
    }
}
