//! candle-transformers' quantized models behind [`GgufModel`]: one wrapper for all of them.

use candle_core::{Result, Tensor};

use super::GgufModel;

/// A candle-transformers model with its forward, its cache reset (None: a forward at
/// position 0 replaces every cache) and its copy (None: the type is not `Clone`).
pub(super) struct CandleModel<M: Send + 'static> {
    pub m: M,
    pub forward: fn(&mut M, &Tensor, usize) -> Result<Tensor>,
    pub clear: Option<fn(&mut M)>,
    pub copy: Option<fn(&M) -> M>,
}

impl<M: Send + 'static> GgufModel for CandleModel<M> {
    fn forward(&mut self, x: &Tensor, pos: usize) -> Result<Tensor> {
        (self.forward)(&mut self.m, x, pos)
    }
    fn reset(&mut self) {
        if let Some(c) = self.clear {
            c(&mut self.m)
        }
    }
    fn can_snapshot(&self) -> bool {
        self.copy.is_some()
    }
    fn snapshot(&self) -> Option<Box<dyn GgufModel>> {
        let copy = self.copy?;
        Some(Box::new(CandleModel {
            m: copy(&self.m),
            forward: self.forward,
            clear: self.clear,
            copy: self.copy,
        }))
    }
}

/// Boxes a candle-transformers model.
pub(super) fn boxed<M: Send + 'static>(
    m: M,
    forward: fn(&mut M, &Tensor, usize) -> Result<Tensor>,
    clear: Option<fn(&mut M)>,
    copy: Option<fn(&M) -> M>,
) -> Box<dyn GgufModel> {
    Box::new(CandleModel {
        m,
        forward,
        clear,
        copy,
    })
}
