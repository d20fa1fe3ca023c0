//! Loading a file into the decoder's weights: the family's layout decides which tensors are
//! read (norm kind, biases, fused projections, experts, post-norms, convolution blocks).

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{bail, DType, Device, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use super::attention::Rope;
use super::layout::{Biases, FamilyLayout, MlpKind, NormKind, RopeLayout};
use super::{Config, Layer, Mixer, Mlp, ModelWeights, Norm, Weights, ROUTER};
use crate::models::quantized::parts::{open_gguf, PROJECTION_NAMES};

/// A file's fused weights as the separate projections the rest of the model reads: each
/// block's `attn_qkv` (rows Q, K, V: Phi-3, Phi-2, GLM-4 files that have one) as `attn_q`,
/// `attn_k`, `attn_v`, and for the gated MLPs of Phi-3 and GLM-4 the `ffn_up` that holds
/// gate rows, then up rows (HF's `gate_up_proj`) as `ffn_gate` and `ffn_up`
/// ([`crate::models::gguf::read::split_fused_rows`]: byte ranges of the fused tensors, nothing copied).
/// A file with separate tensors is read as it is. A fused bias (`attn_qkv.bias`) is split
/// when it is read ([`qkv_biases`]).
fn split_fused(ct: &mut gguf_file::Content, cfg: &Config) -> Result<()> {
    let q = cfg.heads * cfg.head_dim;
    let kv = cfg.kv_heads * cfg.head_dim;
    let gated_up = cfg.layout.fused_gate_up;
    for i in 0..cfg.layers {
        let n = |x: &str| format!("blk.{i}.{x}.weight");
        if ct.tensor_infos.contains_key(&n("attn_qkv")) {
            let parts = [(n("attn_q"), q), (n("attn_k"), kv), (n("attn_v"), kv)];
            crate::models::gguf::read::split_fused_rows(ct, &n("attn_qkv"), &parts)?;
        }
        if gated_up && !ct.tensor_infos.contains_key(&n("ffn_gate")) {
            let Some(info) = ct.tensor_infos.get(&n("ffn_up")) else {
                bail!("cannot find tensor info for {}", n("ffn_up"))
            };
            let (rows, _) = info.shape.dims2()?;
            if rows % 2 != 0 {
                bail!(
                    "{} has {rows} rows: a fused gate and up needs an even number",
                    n("ffn_up")
                );
            }
            let parts = [(n("ffn_gate"), rows / 2), (n("ffn_up"), rows / 2)];
            crate::models::gguf::read::split_fused_rows(ct, &n("ffn_up"), &parts)?;
        }
    }
    Ok(())
}

/// Block `i`'s q, k and v biases as f32 (each its projection's width): read from
/// `attn_q.bias` .. or from a fused `attn_qkv.bias` (rows Q, K, V), `get` reading a tensor.
/// None where the file has neither.
fn qkv_biases(
    ct: &gguf_file::Content,
    get: &mut dyn FnMut(&str) -> Result<candle_core::quantized::QTensor>,
    cfg: &Config,
    i: usize,
    device: &Device,
) -> Result<Option<[Tensor; 3]>> {
    let n = |x: &str| format!("blk.{i}.{x}.bias");
    let mut f32_of =
        |name: &str| -> Result<Tensor> { get(name)?.dequantize(device)?.to_dtype(DType::F32) };
    let (q, kv) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
    if ct.tensor_infos.contains_key(&n("attn_qkv")) {
        let b = f32_of(&n("attn_qkv"))?.flatten_all()?;
        if b.dim(0)? != q + 2 * kv {
            bail!(
                "{} has {} values; q, k and v need {}",
                n("attn_qkv"),
                b.dim(0)?,
                q + 2 * kv
            );
        }
        return Ok(Some([
            b.narrow(0, 0, q)?,
            b.narrow(0, q, kv)?,
            b.narrow(0, q + kv, kv)?,
        ]));
    }
    if !ct.tensor_infos.contains_key(&n("attn_q")) {
        return Ok(None);
    }
    Ok(Some([
        f32_of(&n("attn_q"))?,
        f32_of(&n("attn_k"))?,
        f32_of(&n("attn_v"))?,
    ]))
}

impl ModelWeights {
    /// Loads the model, built for `context` positions (RoPE tables and caches).
    /// `fam`: the file's family as the family table hands it over
    /// (`families::decoder_of`).
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        fam: &FamilyLayout,
        reader: &mut R,
        device: &Device,
        context: usize,
    ) -> Result<Self> {
        let cfg = Config::from_gguf(&ct, fam)?;
        let lay = cfg.layout;
        let biases = lay.biases;
        let mut unread: Vec<&String> = ct
            .tensor_infos
            .keys()
            .filter(|n| n.ends_with(".bias") && !lay.reads_bias(n))
            .collect();
        unread.sort();
        if let Some(t) = unread.first() {
            bail!("the file has a bias tensor ({t}), which {} does not have here; this implementation does not apply it", cfg.arch);
        }
        let eps = cfg.rms_norm_eps;
        let factors = if ct.tensor_infos.contains_key("rope_freqs.weight") {
            Some(
                ct.tensor(reader, "rope_freqs.weight", &Device::Cpu)?
                    .dequantize(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        } else {
            None
        };
        let mut ct = ct;
        split_fused(&mut ct, &cfg)?;
        if cfg.experts.is_some() {
            // Each expert as a 2-D tensor of its own (`blk.N.ffn_gate.E.weight`), at its
            // offset in the stacked `ffn_gate_exps`: one quantized matmul per expert.
            crate::models::gguf::read::split_stacked_experts(&mut ct)?;
        }
        let final_norm = lay.final_norm;
        let (mut get, (embed, norm_w, output)) = open_gguf(
            &ct,
            reader,
            device,
            context,
            &format!("{final_norm}.weight"),
        )?;
        let layer_norm = lay.norm == NormKind::LayerWithBias;
        // A norm of the family's kind from its weight `<name>.weight` (and `<name>.bias`).
        let norm_of = |get: &mut dyn FnMut(&str) -> Result<QTensor>,
                       name: &str,
                       w: Option<QTensor>|
         -> Result<Norm> {
            let w = match w {
                Some(w) => w,
                None => get(&format!("{name}.weight"))?,
            };
            if layer_norm {
                let b = get(&format!("{name}.bias"))?.dequantize(device)?;
                Ok(Norm::Layer(candle_nn::LayerNorm::new(
                    w.dequantize(device)?,
                    b,
                    eps,
                )))
            } else {
                Ok(Norm::Rms(RmsNorm::from_qtensor(w, eps)?))
            }
        };
        let norm = norm_of(&mut get, final_norm, Some(norm_w))?;
        let mlp = match (cfg.experts, lay.mlp) {
            (Some(ex), _) => Mlp::Experts(ex),
            (None, MlpKind::Gelu) => Mlp::Gelu,
            (None, MlpKind::SwiGlu) => Mlp::SwiGlu,
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let mut names: Vec<&'static str> = Vec::new();
            let mut bias: Vec<Option<Tensor>> = Vec::new();
            let conv = cfg.is_conv(i);
            if conv {
                names.extend(["shortconv.in_proj", "shortconv.out_proj"]);
                bias.extend([None, None]);
            } else {
                names.extend(&PROJECTION_NAMES[..ROUTER]);
                let qkv = match biases {
                    Biases::None => None,
                    Biases::Qkv { .. } | Biases::Every => {
                        qkv_biases(&ct, &mut get, &cfg, i, device)?
                    }
                };
                match (qkv, biases) {
                    (None, Biases::Qkv { required: true } | Biases::Every) => {
                        bail!("cannot find tensor info for blk.{i}.attn_q.bias (or attn_qkv.bias): {} has q/k/v biases", cfg.arch)
                    }
                    (Some([q, k, v]), _) => bias.extend([Some(q), Some(k), Some(v)]),
                    (None, _) => bias.extend([None, None, None]),
                }
                bias.push(None);
            }
            let mlp_at = names.len();
            match mlp {
                Mlp::SwiGlu => names.extend(&PROJECTION_NAMES[ROUTER..]),
                Mlp::Gelu => names.extend(["ffn_up", "ffn_down"]),
                Mlp::Experts(ex) => {
                    names.push("ffn_gate_inp");
                    for _ in 0..ex.count {
                        names.extend(["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]);
                    }
                }
            }
            // The tensor each weight is read from.
            let files: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(j, n)| match mlp {
                    Mlp::Experts(_) if j > mlp_at => {
                        let (e, which) = ((j - mlp_at - 1) / 3, (j - mlp_at - 1) % 3);
                        let base = PROJECTION_NAMES[ROUTER + which];
                        format!("blk.{i}.{base}.{e}.weight")
                    }
                    _ => format!("blk.{i}.{n}.weight"),
                })
                .collect();
            let mut w = Vec::with_capacity(files.len());
            for f in &files {
                w.push(QMatMul::from_qtensor(get(f)?)?);
            }
            if biases == Biases::Every {
                if !conv {
                    bias[3] = Some(get(&format!("blk.{i}.attn_output.bias"))?.dequantize(device)?);
                }
                for n in &names[mlp_at..] {
                    bias.push(Some(get(&format!("blk.{i}.{n}.bias"))?.dequantize(device)?));
                }
            } else {
                bias.resize(names.len(), None);
            }
            let mut t = |n: &str| get(&format!("blk.{i}.{n}.weight"));
            let conv_taps = match conv {
                true => Some(t("shortconv.conv")?.dequantize(device)?),
                false => None,
            };
            let mut rms = |name: &str| -> Result<RmsNorm> { RmsNorm::from_qtensor(t(name)?, eps) };
            let mixer = if let Some(taps) = conv_taps {
                let (ch, n) = taps.dims2()?;
                let want = cfg.short_conv.as_ref().map_or(0, |c| c.taps);
                if ch != cfg.hidden || n != want {
                    bail!("blk.{i}.shortconv.conv.weight is {ch}x{n}; a convolution of {want} taps over {} channels needs {}x{want}", cfg.hidden, cfg.hidden);
                }
                Mixer::ShortConv {
                    taps: taps.to_dtype(DType::F32)?.t()?.contiguous()?,
                    start: Tensor::zeros((n - 1, ch), DType::F32, device)?,
                }
            } else {
                let qk_norm = match lay.qk_norm {
                    true => Some((rms("attn_q_norm")?, rms("attn_k_norm")?)),
                    false => None,
                };
                Mixer::Attention { qk_norm }
            };
            let post_norms = match lay.post_norms {
                true => Some((rms("post_attention_norm")?, rms("post_ffw_norm")?)),
                false => None,
            };
            let attn_norm = norm_of(&mut get, &format!("blk.{i}.attn_norm"), None)?;
            let ffn_norm = match lay.parallel {
                true => None,
                false => Some(norm_of(&mut get, &format!("blk.{i}.ffn_norm"), None)?),
            };
            layers.push(Layer {
                mixer,
                w,
                bias,
                names,
                mlp_at,
                attn_norm,
                ffn_norm,
                post_norms,
            });
        }
        let output_bias = match lay.output_bias {
            true => Some(get("output.bias")?.dequantize(device)?),
            false => None,
        };
        let rope = Rope::new(
            &cfg,
            factors.as_deref(),
            context,
            lay.rope == RopeLayout::Interleaved,
            device,
        )?;
        let w = Weights {
            factors,
            cfg,
            mlp,
            embed,
            layers,
            norm,
            output,
            output_bias,
            rope,
            context,
            device: device.clone(),
            wrong: None,
            gelu: Default::default(),
            candle_softmax: false,
        };
        let cache = w.new_seq();
        Ok(Self { w, cache })
    }
}
