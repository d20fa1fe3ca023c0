//! Seeded weight filling without files: a candle `SimpleBackend` that hands out tensors of
//! deterministic pseudo-random values (touched memory, never lazily-zeroed pages, which would
//! make decode look 2.4x faster than with real data: candle-facts.md), a trainable variant
//! that hands them out as [`Var`]s, and a shape-only variant used to check a checkpoint
//! against what a config expects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use rayon::prelude::*;

/// Standard deviation of the uniform fill for every non-constant tensor: the usual 0.02 of
/// HF initialisers, which keeps random-weight activations finite through deep stacks.
pub const FILL_STD: f32 = 0.02;
const CHUNK: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Seeded values.
    Seeded(u64),
    /// Lazily-zeroed tensors on the CPU: costs no memory; used only to learn names and shapes.
    ShapesOnly,
}

/// The backend. It remembers every tensor it handed out (name -> shape), with
/// [`Filler::keeping`] the tensors themselves, so a fixture can be saved as safetensors, and
/// with [`Filler::trainable`] hands each out as a [`Var`] and keeps it for the optimizer. A
/// clone shares what is remembered: give a var builder one, read back through the other.
#[derive(Clone)]
pub struct Filler {
    mode: Mode,
    keep: bool,
    trainable: bool,
    shapes: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
    kept: Arc<Mutex<BTreeMap<String, Tensor>>>,
    vars: Arc<Mutex<Vec<(String, Var)>>>,
}

impl Filler {
    pub fn seeded(seed: u64) -> Self {
        Self::new(Mode::Seeded(seed), false)
    }

    pub fn keeping(seed: u64) -> Self {
        Self::new(Mode::Seeded(seed), true)
    }

    /// Seeded values handed out as trainable [`Var`]s, kept in request order
    /// ([`Filler::take_vars`]).
    pub fn trainable(seed: u64) -> Self {
        Filler {
            trainable: true,
            ..Self::new(Mode::Seeded(seed), false)
        }
    }

    pub fn shapes_only() -> Self {
        Self::new(Mode::ShapesOnly, false)
    }

    fn new(mode: Mode, keep: bool) -> Self {
        Filler {
            mode,
            keep,
            trainable: false,
            shapes: Arc::default(),
            kept: Arc::default(),
            vars: Arc::default(),
        }
    }

    /// The variables handed out so far ([`Filler::trainable`]), by name, in request order.
    pub fn take_vars(&self) -> Vec<(String, Var)> {
        std::mem::take(&mut *self.vars.lock().expect("not poisoned"))
    }

    /// Every tensor requested so far, by name.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.shapes.lock().expect("not poisoned").clone()
    }

    pub fn take_tensors(&self) -> BTreeMap<String, Tensor> {
        std::mem::take(&mut *self.kept.lock().expect("not poisoned"))
    }
}

/// splitmix64: seeds one independent stream per (tensor, chunk), so the values do not depend
/// on the number of threads or the order tensors are requested in.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Fills `out` with values uniform in [-a, a) (xorshift64* per chunk).
fn fill_uniform<T: Send>(out: &mut [T], seed: u64, a: f32, conv: impl Fn(f32) -> T + Sync) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let mut s = splitmix(seed ^ splitmix(ci as u64)) | 1;
            for v in chunk.iter_mut() {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
                let u = (r >> 40) as f32 * (1.0 / (1u64 << 24) as f32); // [0, 1)
                *v = conv((2.0 * u - 1.0) * a);
            }
        });
}

/// A tensor of seeded values in `dtype`, filled in parallel on the host.
pub fn seeded_tensor(
    shape: &Shape,
    seed: u64,
    name: &str,
    hint: Init,
    dtype: DType,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let seed = splitmix(seed ^ name_hash(name));
    let (a, konst) = match hint {
        Init::Const(c) => (0.0, Some(c as f32)),
        _ => (FILL_STD * 3f32.sqrt(), None),
    };
    macro_rules! make {
        ($t:ty, $conv:expr) => {{
            let mut v: Vec<$t> = Vec::with_capacity(n);
            // SAFETY: every element is written by the fill below before it is read.
            #[allow(clippy::uninit_vec)]
            unsafe {
                v.set_len(n)
            };
            match konst {
                Some(c) => v.par_iter_mut().for_each(|x| *x = $conv(c)),
                None => fill_uniform(&mut v, seed, a, $conv),
            }
            Tensor::from_vec(v, shape.clone(), dev)
        }};
    }
    match dtype {
        DType::F32 => make!(f32, |x: f32| x),
        DType::F16 => make!(half::f16, half::f16::from_f32),
        DType::BF16 => make!(half::bf16, half::bf16::from_f32),
        other => make!(f32, |x: f32| x)?.to_dtype(other),
    }
}

impl SimpleBackend for Filler {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.shapes
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), s.dims().to_vec());
        let mut t = match self.mode {
            Mode::ShapesOnly => Tensor::zeros(s, dtype, &Device::Cpu)?,
            Mode::Seeded(seed) => seeded_tensor(&s, seed, name, h, dtype, dev)?,
        };
        if self.trainable {
            let v = Var::from_tensor(&t)?;
            t = v.as_tensor().clone();
            self.vars
                .lock()
                .expect("not poisoned")
                .push((name.to_string(), v));
        }
        if self.keep {
            self.kept
                .lock()
                .expect("not poisoned")
                .insert(name.to_string(), t.clone());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("seeded fill cannot produce `{name}` without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_distributions_have_their_moments() {
        let s = Shape::from(100_000);
        let v = |d| {
            seeded(&s, 1, "t", d, &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let n = v(Dist::Normal(0.0, 0.02));
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let std = (n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32).sqrt();
        assert!(
            mean.abs() < 5e-4 && (std - 0.02).abs() < 5e-4,
            "{mean} {std}"
        );
        let u = v(Dist::Uniform(-0.1, 0.3));
        assert!(u.iter().all(|x| (-0.1..0.3).contains(x)));
        assert!(v(Dist::Const(2.5)).iter().all(|x| *x == 2.5));
    }

    #[test]
    fn fill_is_deterministic_nonzero_and_bounded() {
        let s = Shape::from((300, 700));
        let draw = |name: &str| {
            let hint = Init::Randn {
                mean: 0.,
                stdev: 1.,
            };
            seeded_tensor(&s, 42, name, hint, DType::F32, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (a, b, c) = (draw("w"), draw("w"), draw("v"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = FILL_STD * 3f32.sqrt();
        assert!(a.iter().all(|x| x.abs() <= bound));
        let zeros = a.iter().filter(|x| **x == 0.0).count();
        assert!(zeros < 10);
        let var = a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32;
        assert!((var.sqrt() - FILL_STD).abs() < 0.001, "std {}", var.sqrt());
        let ones = seeded_tensor(&s, 1, "n", Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            ones.sum_all().unwrap().to_scalar::<f32>().unwrap(),
            210000.0
        );
    }
}

/// An explicit distribution for [`seeded`] (model code that specifies its own init).
#[derive(Debug, Clone, Copy)]
pub enum Dist {
    Const(f32),
    Uniform(f32, f32),
    /// Normal(mean, std) by Box-Muller.
    Normal(f32, f32),
}

/// An f32 tensor of seeded values from `dist`, deterministic in (seed, name).
pub fn seeded(
    shape: &Shape,
    seed: u64,
    name: &str,
    dist: Dist,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let seed = splitmix(seed ^ name_hash(name));
    let mut v = vec![0f32; n];
    match dist {
        Dist::Const(c) => v.iter_mut().for_each(|x| *x = c),
        Dist::Uniform(lo, hi) => {
            let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
            fill_uniform(&mut v, seed, half, |x| mid + x);
        }
        Dist::Normal(mean, std) => {
            let mut u = vec![0f32; n + 1];
            fill_uniform(&mut u, seed, 0.5, |x| x + 0.5); // [0, 1)
            for (i, pair) in v.chunks_mut(2).enumerate() {
                let u1 = u[2 * i].max(1e-7);
                let u2 = u[2 * i + 1];
                let r = (-2.0 * u1.ln()).sqrt();
                let th = 2.0 * std::f32::consts::PI * u2;
                pair[0] = mean + std * r * th.cos();
                if pair.len() > 1 {
                    pair[1] = mean + std * r * th.sin();
                }
            }
        }
    }
    Tensor::from_vec(v, shape.clone(), dev)
}

/// `n` ids uniform in `[lo, hi)`, a function of `(seed, trial)` only.
pub fn uniform_ids(n: usize, lo: u32, hi: u32, seed: u64, trial: u64) -> Vec<u32> {
    use rand::{Rng, SeedableRng};
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ trial.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}
