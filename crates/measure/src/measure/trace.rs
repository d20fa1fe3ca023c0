//! The op trace of one forward (issue 41): while a trace runs ([`start`] .. [`take`]), every op
//! the project's models make through [`traced!`](crate::traced) is recorded with what it reads
//! (shapes, types, bytes: [`Arg`]), what it writes, and a call that runs the same op again on
//! the same inputs (the same weights, the same activations, the same kernel). `modelbench ops`
//! builds its per-op table from that record, so the op list is the forward's own, for every
//! family the project implements, instead of a second hand-written description of one model.
//!
//! Outside a trace, `traced!` is [`around_op`](super::inject::around_op) around the op's body
//! with its inputs borrowed: one relaxed atomic load more, nothing cloned. Inside one, the
//! inputs are cloned (tensors and weights are reference-counted: no data is copied) into the
//! recorded call. A trace records on the thread that started it; an op inside another traced
//! op is not recorded twice (the outer one's replay runs it).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

/// What an op reads or writes: one tensor (its dims, element strides where it is a strided
/// view, type and bytes), or a scalar setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub dims: Vec<usize>,
    /// Element strides of a view that is not contiguous (None: contiguous, or a scalar).
    pub stride: Option<Vec<usize>>,
    pub ty: ArgType,
    /// Bytes the op reads (or writes) of it.
    pub bytes: usize,
    /// A model weight (held by the model for its life) rather than an activation.
    pub weight: bool,
}

/// An [`Arg`]'s element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgType {
    Dense(DType),
    Quant(GgmlDType),
    /// A number the op takes (a scale, a position).
    Scalar(f64),
}

impl Arg {
    pub fn scalar(x: f64) -> Arg {
        Arg {
            dims: Vec::new(),
            stride: None,
            ty: ArgType::Scalar(x),
            bytes: 0,
            weight: false,
        }
    }

    /// A quantized weight of `dims` holding `bytes`.
    pub fn quant(dims: &[usize], ty: GgmlDType, bytes: usize) -> Arg {
        Arg {
            dims: dims.to_vec(),
            stride: None,
            ty: ArgType::Quant(ty),
            bytes,
            weight: true,
        }
    }

    pub fn is_tensor(&self) -> bool {
        !matches!(self.ty, ArgType::Scalar(_))
    }

    pub fn elems(&self) -> usize {
        self.dims.iter().product()
    }
}

/// What a value contributes to an op's description.
pub trait Describe {
    fn describe(&self, out: &mut Vec<Arg>);
}

fn dense(t: &Tensor, weight: bool) -> Arg {
    Arg {
        dims: t.dims().to_vec(),
        stride: (!t.is_contiguous()).then(|| t.stride().to_vec()),
        ty: ArgType::Dense(t.dtype()),
        bytes: t.elem_count() * t.dtype().size_in_bytes(),
        weight,
    }
}

impl Describe for Tensor {
    fn describe(&self, out: &mut Vec<Arg>) {
        out.push(dense(self, false));
    }
}

impl Describe for QTensor {
    fn describe(&self, out: &mut Vec<Arg>) {
        out.push(Arg::quant(
            self.shape().dims(),
            self.dtype(),
            self.storage_size_in_bytes(),
        ));
    }
}

impl Describe for QMatMul {
    fn describe(&self, out: &mut Vec<Arg>) {
        match self {
            QMatMul::QTensor(q) => q.describe(out),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => out.push(dense(t, true)),
        }
    }
}

impl<T: Describe + ?Sized> Describe for Arc<T> {
    fn describe(&self, out: &mut Vec<Arg>) {
        (**self).describe(out)
    }
}

impl<T: Describe> Describe for Option<T> {
    fn describe(&self, out: &mut Vec<Arg>) {
        if let Some(x) = self {
            x.describe(out)
        }
    }
}

impl<T: Describe> Describe for Vec<T> {
    fn describe(&self, out: &mut Vec<Arg>) {
        for x in self {
            x.describe(out)
        }
    }
}

impl<A: Describe, B: Describe> Describe for (A, B) {
    fn describe(&self, out: &mut Vec<Arg>) {
        self.0.describe(out);
        self.1.describe(out);
    }
}

impl Describe for f64 {
    fn describe(&self, out: &mut Vec<Arg>) {
        out.push(Arg::scalar(*self))
    }
}

impl Describe for usize {
    fn describe(&self, out: &mut Vec<Arg>) {
        out.push(Arg::scalar(*self as f64))
    }
}

impl Describe for u32 {
    fn describe(&self, out: &mut Vec<Arg>) {
        out.push(Arg::scalar(*self as f64))
    }
}

impl Describe for Device {
    fn describe(&self, _: &mut Vec<Arg>) {}
}

impl Describe for () {
    fn describe(&self, _: &mut Vec<Arg>) {}
}

/// What [`traced!`](crate::traced) calls on each input: [`Describe`] where the type has it,
/// nothing otherwise (a norm's private weight, a RoPE table), chosen by method resolution at
/// the call site (`(&Wrap(&x)).describe_into(..)`).
pub struct Wrap<'a, T>(pub &'a T);

pub trait ViaDescribe {
    fn describe_into(&self, out: &mut Vec<Arg>);
}

impl<T: Describe> ViaDescribe for Wrap<'_, T> {
    fn describe_into(&self, out: &mut Vec<Arg>) {
        self.0.describe(out)
    }
}

pub trait ViaNothing {
    fn describe_into(&self, out: &mut Vec<Arg>);
}

impl<T> ViaNothing for &Wrap<'_, T> {
    fn describe_into(&self, _: &mut Vec<Arg>) {}
}

/// One recorded op.
pub struct Traced {
    /// One of [`super::inject::OP_KINDS`].
    pub kind: &'static str,
    /// What it is in the model (`attn_q`, `residual`, `q transpose`).
    pub what: &'static str,
    pub args: Vec<Arg>,
    pub out: Vec<Arg>,
    /// Runs the op again on the same inputs (its output dropped).
    pub replay: Box<dyn FnMut() -> candle_core::Result<()>>,
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced")
            .field("kind", &self.kind)
            .field("what", &self.what)
            .field("args", &self.args)
            .field("out", &self.out)
            .finish()
    }
}

static RECORDING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TRACE: RefCell<Option<Vec<Traced>>> = const { RefCell::new(None) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Whether a trace is recording (on some thread): one relaxed atomic load.
#[inline]
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Starts recording the ops this thread's forwards make (a trace already running is dropped).
pub fn start() {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    RECORDING.store(true, Ordering::SeqCst);
}

/// Stops recording and returns the ops in the order they were made (empty when no trace ran
/// on this thread).
pub fn take() -> Vec<Traced> {
    RECORDING.store(false, Ordering::SeqCst);
    TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default()
}

fn push(t: Traced) {
    TRACE.with(|tr| {
        if let Some(v) = tr.borrow_mut().as_mut() {
            v.push(t);
        }
    });
}

/// Runs `f` (the op's body over owned inputs described by `args`) once, as the model asked,
/// inside [`around_op`](super::inject::around_op), and records it with `f` as its replay when
/// this thread is tracing and not already inside a recorded op. [`traced!`](crate::traced)'s
/// recording arm.
pub fn record<T: Describe + 'static>(
    kind: &'static str,
    what: &'static str,
    args: Vec<Arg>,
    mut f: impl FnMut() -> candle_core::Result<T> + 'static,
) -> candle_core::Result<T> {
    let outer = INSIDE.with(|i| i.replace(true));
    let out = super::inject::around_op(kind, &mut f);
    INSIDE.with(|i| i.set(outer));
    let tracing = TRACE.with(|t| t.borrow().is_some());
    if outer || !tracing {
        return out;
    }
    let out = out?;
    let mut described = Vec::new();
    out.describe(&mut described);
    push(Traced {
        kind,
        what,
        args,
        out: described,
        replay: Box::new(move || f().map(drop)),
    });
    Ok(out)
}

/// Records an op the model has just made through code that cannot be replayed as it ran (a
/// cache append that advances the cache): `replay` does the same work on the same buffers
/// (e.g. the `slice_set` the append made). Nothing happens outside a trace.
pub fn note(
    kind: &'static str,
    what: &'static str,
    args: Vec<Arg>,
    replay: impl FnMut() -> candle_core::Result<()> + 'static,
) {
    if !recording() || INSIDE.with(|i| i.get()) {
        return;
    }
    push(Traced {
        kind,
        what,
        args,
        out: Vec::new(),
        replay: Box::new(replay),
    });
}

/// One op of kind `kind` (one of `inject::OP_KINDS`) named `what`, over the inputs listed in
/// brackets (`name` or `name = expression`), computing `body` (a `candle_core::Result`):
///
/// ```ignore
/// let h = traced!("add", "residual", [a, h], a.add(h))?;
/// let q = traced!("matmul", "attn_q", [w = self.wq, x], w.forward(x))?;
/// ```
///
/// In `body` each name is a reference to its input. Outside a trace this is
/// `around_op(kind, || body)` with the inputs borrowed; inside one (see the module doc) the
/// inputs are cloned into a recorded call ([`record`]). Write the body with method calls
/// (`a.add(h)`, not `a + h`), which work on either form of reference.
#[macro_export]
macro_rules! traced {
    ($kind:expr, $what:expr, [$($name:ident $(= $e:expr)?),* $(,)?], $body:expr) => {{
        if $crate::measure::trace::recording() {
            #[allow(unused_imports)]
            use $crate::measure::trace::{ViaDescribe as _, ViaNothing as _};
            $( let $name = $crate::__traced_own!($name $(, $e)?); )*
            let mut __args = ::std::vec::Vec::new();
            $( (&$crate::measure::trace::Wrap(&$name)).describe_into(&mut __args); )*
            $crate::measure::trace::record($kind, $what, __args, move || {
                $( let $name = &$name; )*
                $body
            })
        } else {
            $( let $name = $crate::__traced_ref!($name $(, $e)?); )*
            $crate::measure::inject::around_op($kind, || $body)
        }
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __traced_own {
    ($name:ident) => {
        $name.clone()
    };
    ($name:ident, $e:expr) => {
        $e.clone()
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __traced_ref {
    ($name:ident) => {
        &$name
    };
    ($name:ident, $e:expr) => {
        &$e
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Opaque;
    impl Clone for Opaque {
        fn clone(&self) -> Self {
            Opaque
        }
    }

    fn residual(a: &Tensor, h: &Tensor, o: &Opaque) -> candle_core::Result<Tensor> {
        crate::traced!("add", "residual", [a, h, o], {
            let _ = o;
            a.add(h)
        })
    }

    #[test]
    fn a_trace_records_each_op_with_its_inputs_and_a_replay_and_nothing_outside_one() {
        let dev = Device::Cpu;
        let a = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        let h = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        // Outside a trace: computed, not recorded.
        assert_eq!(
            residual(&a, &h, &Opaque).unwrap().to_vec2::<f32>().unwrap()[0][0],
            2.0
        );
        start();
        let out = residual(&a, &h, &Opaque).unwrap();
        let w = QMatMul::from_qtensor(
            QTensor::quantize(
                &Tensor::ones((32, 32), DType::F32, &dev).unwrap(),
                GgmlDType::Q8_0,
            )
            .unwrap(),
        )
        .unwrap();
        let x = Tensor::ones((1, 32), DType::F32, &dev).unwrap();
        let y = crate::traced!("matmul", "attn_q", [w, x], {
            use candle_core::Module;
            w.forward(x)
        })
        .unwrap();
        let mut ops = take();
        assert_eq!(out.to_vec2::<f32>().unwrap()[1][2], 2.0);
        assert_eq!(y.dims(), &[1, 32]);
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].kind, ops[0].what), ("add", "residual"));
        // The opaque input describes nothing; the two tensors do, and the output.
        assert_eq!(ops[0].args.len(), 2);
        assert_eq!(ops[0].args[0].dims, vec![2, 3]);
        assert_eq!(ops[0].args[0].bytes, 24);
        assert_eq!(ops[0].out[0].dims, vec![2, 3]);
        assert_eq!(ops[1].args[0].ty, ArgType::Quant(GgmlDType::Q8_0));
        assert!(ops[1].args[0].weight && !ops[1].args[1].weight);
        assert_eq!(ops[1].args[0].bytes, 32 * 34);
        for op in &mut ops {
            (op.replay)().unwrap();
        }
        // The trace is over: nothing more is recorded.
        residual(&a, &h, &Opaque).unwrap();
        assert!(take().is_empty());
    }

    #[test]
    fn an_op_inside_a_recorded_op_is_recorded_once() {
        let dev = Device::Cpu;
        let a = Tensor::ones(4, DType::F32, &dev).unwrap();
        start();
        crate::traced!("mul", "outer", [a], {
            crate::traced!("add", "inner", [a], a.add(a))?.mul(a)
        })
        .unwrap();
        let ops = take();
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(ops[0].what, "outer");
    }

    #[test]
    fn a_strided_view_keeps_its_strides() {
        let t = Tensor::zeros((1, 3, 2, 4), DType::F32, &Device::Cpu).unwrap();
        let mut v = Vec::new();
        t.transpose(1, 2).unwrap().describe(&mut v);
        assert_eq!(v[0].dims, vec![1, 2, 3, 4]);
        assert_eq!(v[0].stride, Some(vec![24, 4, 8, 1]));
        t.describe(&mut v);
        assert_eq!(v[1].stride, None);
    }
}
