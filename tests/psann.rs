//! PSANN-LM: shapes, parameter counts, SineParam, causality, gradients, learning, and
//! gradient checkpointing.

use candle_core::{Device, Module, Tensor};
use modelbench::models::training::psann::train::{grads, TrainConfig, Trainer};
use modelbench::models::training::psann::{
    gpu03_shape, random_ids, softplus_inverse, Base, PsannConfig, PsannLm,
};

const BASES: [Base; 3] = [Base::Respsann, Base::Sgrpsann, Base::Waveresnet];

fn tiny(base: Base) -> PsannConfig {
    let mut c = PsannConfig::new(base, 50, 32, 2, 4);
    c.k_fft = 8;
    c
}

/// The largest absolute element of a tensor, as f32.
trait MaxAbs {
    fn max_abs(&self) -> f32;
}

impl MaxAbs for Tensor {
    fn max_abs(&self) -> f32 {
        self.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}

#[test]
fn parameter_counts_match_the_spec() {
    assert_eq!(
        PsannConfig::medium(Base::Respsann, 32000).param_count(),
        58_012_168
    );
    assert_eq!(
        PsannConfig::medium(Base::Waveresnet, 32000).param_count(),
        58_012_168
    );
    assert_eq!(
        PsannConfig::medium(Base::Sgrpsann, 32000).param_count(),
        58_151_432
    );
    assert_eq!(
        PsannConfig::new(Base::Waveresnet, 31, 128, 2, 4).param_count(),
        406_146,
        "GPU-04"
    );
    assert_eq!(
        PsannConfig::gpu03(Base::Respsann).param_count(),
        19_549_444,
        "GPU-03"
    );
    // and the built model has exactly those parameters
    for base in BASES {
        let m = PsannLm::new(PsannConfig::medium(base, 32000), 1, &Device::Cpu, true).unwrap();
        assert_eq!(m.built_params(), m.cfg.param_count(), "{base:?}");
    }
}

#[test]
fn gpu03_shapes() {
    assert_eq!(gpu03_shape(65536, 4096, 64), (16, 4096));
    assert_eq!(gpu03_shape(131072, 4096, 64), (32, 4096));
    assert_eq!(gpu03_shape(262144, 4096, 64), (64, 4096));
    assert_eq!(gpu03_shape(1024, 256, 64), (4, 256));
}

#[test]
fn logits_shape_and_causality() {
    for base in BASES {
        let m = PsannLm::new(tiny(base), 3, &Device::Cpu, false).unwrap();
        let ids = random_ids(2, 12, 50, 1, &Device::Cpu).unwrap();
        let a = m.forward(&ids).unwrap();
        assert_eq!(a.dims(), &[2, 12, 50]);
        if base == Base::Sgrpsann {
            continue; // its gate is non-causal inside the window, as in the original
        }
        let mut v: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
        v[11] = (v[11] + 1) % 50; // change the last token of the first row
        let b = m
            .forward(&Tensor::from_vec(v, (2, 12), &Device::Cpu).unwrap())
            .unwrap();
        let diff = (a.narrow(1, 0, 11).unwrap() - b.narrow(1, 0, 11).unwrap())
            .unwrap()
            .max_abs();
        assert_eq!(
            diff, 0.0,
            "{base:?}: earlier positions must not see a later token"
        );
        let last = (a.narrow(1, 11, 1).unwrap() - b.narrow(1, 11, 1).unwrap())
            .unwrap()
            .max_abs();
        assert!(last > 0.0);
    }
}

#[test]
fn sine_param_matches_its_formula() {
    let cfg = tiny(Base::Respsann);
    let m = PsannLm::new(cfg, 3, &Device::Cpu, true).unwrap();
    let get = |n: &str| {
        m.vars
            .iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()[0]
    };
    let (a_raw, f_raw, d_raw) = (
        get("blocks.0.mlp.act._A"),
        get("blocks.0.mlp.act._f"),
        get("blocks.0.mlp.act._d"),
    );
    assert!((a_raw - 0.541_324_9).abs() < 1e-6 && (d_raw - (-4.600_166)).abs() < 1e-4);
    let sp = |x: f32| (1.0 + x.exp()).ln();
    let act = modelbench::models::training::psann::SineParam {
        a_raw: Tensor::full(a_raw, 128, &Device::Cpu).unwrap(),
        f_raw: Tensor::full(f_raw, 128, &Device::Cpu).unwrap(),
        d_raw: Tensor::full(d_raw, 128, &Device::Cpu).unwrap(),
    };
    let z: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) * 0.37).collect();
    let y = act
        .forward(&Tensor::new(z.as_slice(), &Device::Cpu).unwrap())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (zi, yi) in z.iter().zip(&y) {
        let want = sp(a_raw) * (-sp(d_raw) * zi.abs()).exp() * ((sp(f_raw) + 1e-6) * zi).sin();
        assert!((want - yi).abs() < 1e-5, "z={zi}: {yi} vs {want}");
    }
    assert!((softplus_inverse(1.0) - 0.541_324_9).abs() < 1e-6);
}

#[test]
fn every_parameter_gets_a_gradient_and_training_lowers_the_loss() {
    for base in BASES {
        let m = PsannLm::new(tiny(base), 5, &Device::Cpu, true).unwrap();
        let ids = random_ids(2, 16, 50, 2, &Device::Cpu).unwrap();
        let (_, g) = grads(&m, &ids, &ids, false).unwrap();
        for (name, v) in &m.vars {
            let gn = g
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{base:?}: {name} has no gradient"));
            let n = gn
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{base:?}: {name} has a zero gradient");
        }
        // A tiny repeated text: next-token prediction of a cycle.
        let text: Vec<u32> = (0..33).map(|i| (i % 7) as u32 + 3).collect();
        let x = Tensor::new(&text[..32], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let y = Tensor::new(&text[1..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut t = Trainer::new(
            m,
            TrainConfig {
                lr: 3e-3,
                ..Default::default()
            },
        )
        .unwrap();
        let first = t.step(&x, &y).unwrap();
        let mut last = first;
        for _ in 0..15 {
            last = t.step(&x, &y).unwrap();
        }
        assert!(last < first * 0.7, "{base:?}: loss {first} -> {last}");
    }
}

#[test]
fn checkpointed_gradients_equal_plain_ones() {
    // Tolerance: 1e-5 relative to each gradient's scale (the same f32 ops, recomputed).
    for base in BASES {
        let m = PsannLm::new(tiny(base), 9, &Device::Cpu, true).unwrap();
        let ids = random_ids(2, 16, 50, 4, &Device::Cpu).unwrap();
        let (l1, g1) = grads(&m, &ids, &ids, false).unwrap();
        let (l2, g2) = grads(&m, &ids, &ids, true).unwrap();
        assert_eq!(l1, l2);
        for (name, v) in &m.vars {
            let a = g1.get(v.as_tensor()).unwrap();
            let b = g2
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name} missing with checkpointing"));
            let scale = a.max_abs().max(1e-12);
            let diff = (a - b).unwrap().max_abs();
            assert!(
                diff <= 1e-5 * scale,
                "{base:?} {name}: {diff} at scale {scale}"
            );
        }
    }
}

#[test]
fn spectral_gate_at_init_is_half_the_window() {
    // With mask 0 (sigmoid 0.5) and mix 1 the gate returns 0.5 u on the last k_fft positions
    // and 0 before them; for T < k_fft the left-padded window gives 0.5 u everywhere. This
    // checks the forward and inverse DFT matrices.
    let m = PsannLm::new(tiny(Base::Sgrpsann), 11, &Device::Cpu, false).unwrap();
    for t in [12usize, 5] {
        let u = modelbench::util::fill::seeded(
            &(2, t, 32).into(),
            1,
            "u",
            modelbench::util::fill::Dist::Normal(0.0, 1.0),
            &Device::Cpu,
        )
        .unwrap();
        let g = m.blocks[0].spectral_gate(&u).unwrap().unwrap();
        assert_eq!(g.dims(), u.dims());
        let w = t.min(8);
        let want = (u.narrow(1, t - w, w).unwrap() * 0.5).unwrap();
        let diff = (g.narrow(1, t - w, w).unwrap() - want).unwrap().max_abs();
        assert!(diff < 1e-5, "T={t}: {diff}");
        if t > w {
            let before = g.narrow(1, 0, t - w).unwrap().max_abs();
            assert_eq!(before, 0.0);
        }
    }
    assert!(PsannLm::new(tiny(Base::Respsann), 11, &Device::Cpu, false)
        .unwrap()
        .blocks[0]
        .spectral_gate(&Tensor::zeros((1, 2, 32), candle_core::DType::F32, &Device::Cpu).unwrap())
        .is_none());
}

#[test]
fn bf16_autocast_trains_and_checkpointing_still_matches() {
    // f32 master weights, bf16 matmuls. Tolerance 1e-3 relative: the recompute repeats the
    // same bf16 ops, so the gradients should agree to rounding.
    let m = PsannLm::with_compute(
        tiny(Base::Waveresnet),
        5,
        &Device::Cpu,
        true,
        candle_core::DType::BF16,
    )
    .unwrap();
    let ids = random_ids(2, 16, 50, 2, &Device::Cpu).unwrap();
    let (l1, g1) = grads(&m, &ids, &ids, false).unwrap();
    let (l2, g2) = grads(&m, &ids, &ids, true).unwrap();
    assert!(l1.is_finite() && (l1 - l2).abs() < 1e-4, "{l1} vs {l2}");
    let f32m = PsannLm::new(tiny(Base::Waveresnet), 5, &Device::Cpu, true).unwrap();
    let (lf, _) = grads(&f32m, &ids, &ids, false).unwrap();
    assert!(
        (l1 - lf).abs() < 0.05 * lf,
        "bf16 loss {l1} near f32 loss {lf}"
    );
    assert_ne!(l1, lf, "the matmuls really ran in bf16");
    for (name, v) in &m.vars {
        let a = g1
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(
            a.dtype(),
            candle_core::DType::F32,
            "{name}: f32 master gradient"
        );
        let b = g2.get(v.as_tensor()).unwrap();
        let scale = a.max_abs().max(1e-12);
        let diff = (a - b).unwrap().max_abs();
        assert!(
            scale > 0.0 && diff <= 1e-3 * scale,
            "{name}: {diff} at scale {scale}"
        );
    }
}
