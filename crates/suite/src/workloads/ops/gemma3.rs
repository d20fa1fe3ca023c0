#[allow(unused_imports)]
use super::*;

/// A builder of the rows: rows with the same kind, op and shape are one row with their calls
/// added up.
pub(super) struct Rows {
    pub(super) benches: Vec<(Bench, Option<GgmlOp>)>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        kind: &str,
        op: &str,
        shape: String,
        calls: usize,
        bytes: f64,
        flops: Option<f64>,
        ggml: Option<GgmlOp>,
        run: Box<dyn FnMut() -> candle_core::Result<()>>,
    ) -> Option<usize> {
        if calls == 0 {
            return None;
        }
        if let Some(i) = self
            .benches
            .iter()
            .position(|(b, _)| b.row.kind == kind && b.row.op == op && b.row.shape == shape)
        {
            self.benches[i].0.row.calls += calls;
            return Some(i);
        }
        self.benches.push((
            Bench {
                row: OpRow {
                    kind: kind.to_string(),
                    op: op.to_string(),
                    shape,
                    calls,
                    us: f64::NAN,
                    ci_us: None,
                    bytes,
                    flops,
                    ggml: None,
                    ggml_us: None,
                    seq_us: None,
                    seq_ci_us: None,
                },
                run,
            },
            ggml,
        ));
        Some(self.benches.len() - 1)
    }
}

/// A quantized matmul's ggml type and (n, k).
pub(super) type MatKey = (String, usize, usize);

pub(super) fn randn(shape: &[usize], dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::randn(0f32, 1f32, shape, dev)
}

pub(super) fn shape_str(dims: &[usize]) -> String {
    format!(
        "({})",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Enumerates the ops of one forward of the project's Gemma 3 in `path` at the plan's shape,
/// each with its runnable call (weights read from the file: one tensor per distinct type and
/// shape) and its ggml counterpart.
pub fn gemma3_ops(path: &Path, plan: &OpsPlan, dev: &Device) -> Result<OpsSet> {
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let ct = gguf_file::Content::read(&mut f).map_err(|e| Error::weights(path.display(), e))?;
    let cfg = Config::from_gguf(&ct)?;
    let load = |f: &mut std::fs::File, name: &str| -> Result<QTensor> {
        ct.tensor(f, name, dev)
            .map_err(|e| Error::weights(path.display(), format!("tensor `{name}`: {e}")))
    };
    let (m, depth) = (plan.tokens, plan.depth);
    let (h, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads);
    let rep = nh / nkv;
    let eps = cfg.rms_norm_eps;
    let mut rows = Rows {
        benches: Vec::new(),
    };
    let f4 = 4.0f64;

    // The quantized matmuls: per distinct (type, n, k), every tensor of that type and shape,
    // called in turn as the forward calls them, so each call reads other weights than the one
    // before it (as in the model) instead of one tensor kept hot in cache.
    let roles = crate::models::quantized_parts::PROJECTION_NAMES;
    // (type, n, k) -> (the tensors of that shape in call order, their roles, calls per step)
    let mut mm: BTreeMap<MatKey, (Vec<String>, Vec<&str>, usize)> = BTreeMap::new();
    for l in 0..cfg.layers {
        for r in roles {
            let name = format!("blk.{l}.{r}.weight");
            let info = ct
                .tensor_infos
                .get(&name)
                .ok_or_else(|| Error::weights(path.display(), format!("no tensor `{name}`")))?;
            let (n, k) = info
                .shape
                .dims2()
                .map_err(|e| Error::weights(path.display(), e))?;
            let e = mm
                .entry((ggml_type(info.ggml_dtype), n, k))
                .or_insert_with(|| (Vec::new(), Vec::new(), 0));
            e.0.push(name.clone());
            if !e.1.contains(&r) {
                e.1.push(r);
            }
            e.2 += 1;
        }
    }
    let matmul = |rows: &mut Rows,
                  kind: &str,
                  what: String,
                  qs: Vec<QTensor>,
                  m: usize,
                  calls: usize|
     -> Result<Option<usize>> {
        let (n, k) = qs[0].shape().dims2()?;
        let ty = ggml_type(qs[0].dtype());
        let wbytes = qs[0].storage_size_in_bytes() as f64;
        let qms = qs
            .into_iter()
            .map(QMatMul::from_qtensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut next = 0usize;
        let x = randn(&[1, m, k], dev)?;
        let g = GgmlOp {
            op: "MUL_MAT",
            unary: None,
            out: "f32",
            ne: [n, m, 1, 1],
            params: vec![],
            srcs: vec![Src::new(&ty, [k, n, 1, 1]), Src::new("f32", [k, m, 1, 1])],
        };
        Ok(rows.add(
            kind,
            &format!("{what} ({ty})"),
            format!("m={m} n={n} k={k}"),
            calls,
            wbytes + f4 * (m * k + m * n) as f64,
            Some(2.0 * (m * n * k) as f64),
            Some(g),
            Box::new(move || {
                let qm = &qms[next % qms.len()];
                next = next.wrapping_add(1);
                qm.forward(&x).map(drop)
            }),
        ))
    };
    // The row of each weight tensor, for the forward's order.
    let mut row_of: BTreeMap<String, Option<usize>> = BTreeMap::new();
    for ((_, _, _), (names, rs, calls)) in mm {
        let qs = names
            .iter()
            .map(|name| load(&mut f, name))
            .collect::<Result<Vec<_>>>()?;
        let i = matmul(&mut rows, "matmul", rs.join(", "), qs, m, calls)?;
        for name in names {
            row_of.insert(name, i);
        }
    }
    // The output projection (the last position only), tied to the embedding when absent.
    let out_name = if ct.tensor_infos.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let out_q = load(&mut f, out_name)?;
    let i_lm_head = matmul(
        &mut rows,
        "lm_head",
        out_name.replace(".weight", ""),
        vec![out_q],
        1,
        1,
    )?;

    // Host side of the model's forward: the ids tensor, the embedding rows, the scale.
    let ids: Vec<u32> = prompt_ids(m, 1000.min(cfg_vocab(&ct)), plan.seed, 0);
    let i_host = {
        let ids = ids.clone();
        let dev2 = dev.clone();
        rows.add(
            "host",
            "ids tensor",
            format!("({m})"),
            1,
            f4 * m as f64,
            None,
            None,
            Box::new(move || Tensor::new(ids.as_slice(), &dev2)?.unsqueeze(0).map(drop)),
        )
    };
    let embd = Arc::new(load(&mut f, "token_embd.weight")?);
    let ety = ggml_type(embd.dtype());
    let (vocab, _) = embd.shape().dims2()?;
    let row_bytes = embd.storage_size_in_bytes() as f64 / vocab as f64;
    let emb = Embedding::new(embd, dev)?;
    let ids_t = Tensor::new(ids.as_slice(), dev)?.unsqueeze(0)?;
    let i_embd = rows.add(
        "embedding",
        &format!("token_embd rows ({ety})"),
        format!("({m},{h})"),
        1,
        row_bytes * m as f64 + f4 * (m * h) as f64,
        None,
        Some(GgmlOp {
            op: "GET_ROWS",
            unary: None,
            out: "f32",
            ne: [h, m, 1, 1],
            params: vec![],
            srcs: vec![
                Src::new(&ety, [h, vocab, 1, 1]),
                Src::new("i32", [m, 1, 1, 1]),
            ],
        }),
        Box::new(move || emb.forward(&ids_t).map(drop)),
    );
    let xh = randn(&[1, m, h], dev)?;
    let scale_op = |ne: [usize; 4], s: f32| GgmlOp {
        op: "SCALE",
        unary: None,
        out: "f32",
        ne,
        params: vec![fbits(s), fbits(0.0)],
        srcs: vec![Src::new("f32", ne)],
    };
    let i_escale = {
        let x = xh.clone();
        let s = (h as f64).sqrt();
        rows.add(
            "scale",
            "embedding * sqrt(hidden)",
            format!("(1,{m},{h})"),
            1,
            2.0 * f4 * (m * h) as f64,
            None,
            Some(scale_op([h, m, 1, 1], s as f32)),
            Box::new(move || (&x * s).map(drop)),
        )
    };

    // Norms: four per layer on (1, m, hidden), q/k norms per head, the final norm (1 row).
    let norm = |f: &mut std::fs::File, name: &str| -> Result<RmsNorm> {
        Ok(RmsNorm::from_qtensor(load(f, name)?, eps)?)
    };
    let rms_ggml = |d: usize, rows: usize| GgmlOp {
        op: "RMS_NORM",
        unary: None,
        out: "f32",
        ne: [d, rows, 1, 1],
        params: vec![fbits(eps as f32)],
        srcs: vec![Src::new("f32", [d, rows, 1, 1])],
    };
    let add_norm = |rows: &mut Rows, what: &str, n: RmsNorm, x: Tensor, calls: usize| {
        let d = *x.dims().last().expect("rank >= 1");
        let r = x.elem_count() / d;
        rows.add(
            "rms_norm",
            what,
            shape_str(x.dims()),
            calls,
            f4 * (2 * x.elem_count() + d) as f64,
            None,
            Some(rms_ggml(d, r)),
            Box::new(move || n.forward(&x).map(drop)),
        )
    };
    let layers = cfg.layers;
    let i_norm4 = add_norm(
        &mut rows,
        "attn_norm, post_attention_norm, ffn_norm, post_ffw_norm",
        norm(&mut f, "blk.0.attn_norm.weight")?,
        xh.clone(),
        4 * layers,
    );
    let i_qnorm = add_norm(
        &mut rows,
        "attn_q_norm",
        norm(&mut f, "blk.0.attn_q_norm.weight")?,
        randn(&[1, m, nh, hd], dev)?,
        layers,
    );
    let i_knorm = add_norm(
        &mut rows,
        "attn_k_norm",
        norm(&mut f, "blk.0.attn_k_norm.weight")?,
        randn(&[1, m, nkv, hd], dev)?,
        layers,
    );
    let i_final_norm = add_norm(
        &mut rows,
        if m == 1 {
            "attn_norm, post_attention_norm, ffn_norm, post_ffw_norm"
        } else {
            "output_norm"
        },
        norm(&mut f, "output_norm.weight")?,
        randn(&[1, 1, h], dev)?,
        1,
    );

    // q, k, v to (1, heads, m, head_dim): a copy when m > 1 (a view otherwise).
    let mut i_transpose = Vec::new();
    for (what, heads, calls) in [
        ("q transpose", nh, layers),
        ("k, v transpose", nkv, 2 * layers),
    ] {
        let x = randn(&[1, m, heads, hd], dev)?;
        let nb = [4, 4 * hd * heads, 4 * hd, 4 * hd * heads * m];
        i_transpose.push(rows.add(
            "copy",
            what,
            format!("(1,{m},{heads},{hd})->(1,{heads},{m},{hd})"),
            calls,
            2.0 * f4 * x.elem_count() as f64,
            None,
            Some(GgmlOp {
                op: "CONT",
                unary: None,
                out: "f32",
                ne: [hd, m, heads, 1],
                params: vec![],
                srcs: vec![Src {
                    ty: "f32".into(),
                    ne: [hd, m, heads, 1],
                    nb: Some(nb),
                }],
            }),
            Box::new(move || x.transpose(1, 2)?.contiguous().map(drop)),
        ));
    }

    // RoPE (NeoX) on q and k at positions depth..depth+m.
    let rope = Rope::new(hd, cfg.rope_base, cfg.rope_scale_global, depth + m, dev)?;
    let mut i_rope = Vec::new();
    for (what, heads) in [("q", nh), ("k", nkv)] {
        let x = randn(&[1, heads, m, hd], dev)?;
        let r = rope.clone();
        i_rope.push(rows.add(
            "rope",
            &format!("rope {what} (neox)"),
            shape_str(x.dims()),
            layers,
            f4 * (2 * x.elem_count() + m * hd) as f64,
            None,
            Some(GgmlOp {
                op: "ROPE",
                unary: None,
                out: "f32",
                ne: [hd, heads, m, 1],
                params: vec![
                    0,
                    hd as i32,
                    2, // GGML_ROPE_TYPE_NEOX
                    0,
                    fbits(cfg.rope_base),
                    fbits(1.0 / cfg.rope_scale_global),
                    fbits(0.0),
                    fbits(1.0),
                    fbits(32.0),
                    fbits(1.0),
                ],
                srcs: vec![
                    Src::new("f32", [hd, heads, m, 1]),
                    Src::new("i32", [m, 1, 1, 1]),
                ],
            }),
            Box::new(move || r.apply(&x, depth).map(drop)),
        ));
    }

    // Attention per layer type: keys seen, the cache update, QK^T, scale, mask, softmax, AV.
    let window = cfg.sliding_window.max(1);
    let sliding_len = depth.min(window - 1);
    let n_sliding = (0..layers).filter(|&l| cfg.is_sliding(l)).count();
    let n_global = layers - n_sliding;
    let kv_elems = |len: usize| nkv * len * hd;
    // The cache update: global layers write k and v into the preallocated cache (slice_set at
    // `depth`); sliding layers concatenate the kept window with the new positions.
    let (mut i_append, mut i_cat) = (None, None);
    if n_global > 0 {
        let cache = Tensor::zeros((1, nkv, depth + m, hd), DType::F32, dev)?;
        let k = randn(&[1, nkv, m, hd], dev)?;
        i_append = rows.add(
            "kv_cache",
            "k, v append (global layers)",
            format!("(1,{nkv},{m},{hd}) at {depth}"),
            2 * n_global,
            2.0 * f4 * kv_elems(m) as f64,
            None,
            Some(GgmlOp {
                op: "CPY",
                unary: None,
                out: "f32",
                ne: [hd, m, nkv, 1],
                params: vec![],
                srcs: vec![
                    Src::new("f32", [hd, m, nkv, 1]),
                    Src::new("f32", [hd, m, nkv, 1]),
                ],
            }),
            Box::new(move || cache.slice_set(&k, 2, depth)),
        );
    }
    if n_sliding > 0 && sliding_len > 0 {
        let ck = randn(&[1, nkv, sliding_len, hd], dev)?;
        let k = randn(&[1, nkv, m, hd], dev)?;
        i_cat = rows.add(
            "kv_cache",
            "k, v cat (sliding layers)",
            format!("(1,{nkv},{sliding_len},{hd})+(1,{nkv},{m},{hd})"),
            2 * n_sliding,
            2.0 * f4 * kv_elems(sliding_len + m) as f64,
            None,
            Some(GgmlOp {
                op: "CONCAT",
                unary: None,
                out: "f32",
                ne: [hd, sliding_len + m, nkv, 1],
                params: vec![1],
                srcs: vec![
                    Src::new("f32", [hd, sliding_len, nkv, 1]),
                    Src::new("f32", [hd, m, nkv, 1]),
                ],
            }),
            Box::new(move || Tensor::cat(&[&ck, &k], 2).map(drop)),
        );
    }
    let scale = 1.0 / (hd as f64).sqrt();
    let groups: Vec<(usize, usize, usize, Option<usize>)> = [
        (n_global, 0, depth + m, None),
        (
            n_sliding,
            depth - sliding_len,
            sliding_len + m,
            Some(window),
        ),
    ]
    .into_iter()
    .filter(|g| g.0 > 0)
    .collect();
    // Per layer type (sliding or not), the rows of its attention ops.
    let mut i_attn: Vec<(bool, AttnRows)> = Vec::new();
    for (calls, k0, keys, win) in groups {
        let rows_q = rep * m;
        let q = randn(&[1, nkv, rows_q, hd], dev)?;
        let k = randn(&[1, nkv, keys, hd], dev)?;
        let v = randn(&[1, nkv, keys, hd], dev)?;
        let att = randn(&[1, nkv, rows_q, keys], dev)?;
        let att_ne = [keys, rows_q, nkv, 1];
        let sh = format!("(1,{nkv},{rows_q},{keys})");
        let qk = {
            let (q, k) = (q.clone(), k.clone());
            rows.add(
                "attn_qk",
                "q k^T",
                format!("(1,{nkv},{rows_q},{hd})x(1,{nkv},{hd},{keys})"),
                calls,
                f4 * (q.elem_count() + k.elem_count() + att.elem_count()) as f64,
                Some(2.0 * (nkv * rows_q * keys * hd) as f64),
                Some(GgmlOp {
                    op: "MUL_MAT",
                    unary: None,
                    out: "f32",
                    ne: att_ne,
                    params: vec![],
                    srcs: vec![
                        Src::new("f32", [hd, keys, nkv, 1]),
                        Src::new("f32", [hd, rows_q, nkv, 1]),
                    ],
                }),
                Box::new(move || q.matmul(&k.t()?).map(drop)),
            )
        };
        let scale_row = {
            let a = att.clone();
            rows.add(
                "scale",
                "scores * 1/sqrt(head_dim)",
                sh.clone(),
                calls,
                2.0 * f4 * att.elem_count() as f64,
                None,
                Some(scale_op(att_ne, scale as f32)),
                Box::new(move || (&a * scale).map(drop)),
            )
        };
        let (mask_build, mask_add) = if let Some(mv) = attention_mask(depth, m, k0, keys, win) {
            // Built on the host once per forward per layer type, added in every layer.
            let dev2 = dev.clone();
            let mv2 = mv.clone();
            let build = rows.add(
                "mask",
                "mask build (host)",
                format!("({m},{keys})"),
                1,
                f4 * (m * keys) as f64,
                None,
                None,
                Box::new(move || {
                    let v = attention_mask(depth, m, k0, keys, win).unwrap_or_else(|| mv2.clone());
                    Tensor::from_vec(v, (m, keys), &dev2).map(drop)
                }),
            );
            let mask = Tensor::from_vec(mv, (m, keys), dev)?;
            let a = att.clone();
            let add = rows.add(
                "mask",
                "scores + mask",
                sh.clone(),
                calls,
                f4 * (2 * att.elem_count() + m * keys) as f64,
                None,
                Some(GgmlOp {
                    op: "ADD",
                    unary: None,
                    out: "f32",
                    ne: [keys, m, rep, nkv],
                    params: vec![],
                    srcs: vec![
                        Src::new("f32", [keys, m, rep, nkv]),
                        Src::new("f32", [keys, m, 1, 1]),
                    ],
                }),
                Box::new(move || {
                    a.reshape((1, nkv, rep, m, keys))?
                        .broadcast_add(&mask)?
                        .reshape((1, nkv, rep * m, keys))
                        .map(drop)
                }),
            );
            (build, add)
        } else {
            (None, None)
        };
        let softmax = {
            let a = att.clone();
            rows.add(
                "softmax",
                "softmax_last_dim",
                sh.clone(),
                calls,
                2.0 * f4 * att.elem_count() as f64,
                None,
                Some(GgmlOp {
                    op: "SOFT_MAX",
                    unary: None,
                    out: "f32",
                    ne: att_ne,
                    params: vec![fbits(1.0), fbits(0.0)],
                    srcs: vec![Src::new("f32", att_ne)],
                }),
                Box::new(move || candle_nn::ops::softmax_last_dim(&a).map(drop)),
            )
        };
        let av = rows.add(
            "attn_av",
            "scores v",
            format!("(1,{nkv},{rows_q},{keys})x(1,{nkv},{keys},{hd})"),
            calls,
            f4 * (att.elem_count() + v.elem_count() + q.elem_count()) as f64,
            Some(2.0 * (nkv * rows_q * keys * hd) as f64),
            Some(GgmlOp {
                op: "MUL_MAT",
                unary: None,
                out: "f32",
                ne: [hd, rows_q, nkv, 1],
                params: vec![],
                srcs: vec![
                    Src::new("f32", [keys, hd, nkv, 1]),
                    Src::new("f32", [keys, rows_q, nkv, 1]),
                ],
            }),
            Box::new(move || att.matmul(&v).map(drop)),
        );
        i_attn.push((
            win.is_some(),
            AttnRows {
                qk,
                scale: scale_row,
                mask_build,
                mask_add,
                softmax,
                av,
            },
        ));
    }
    // The attention output back to (1, m, heads * head_dim): a copy when m > 1.
    let i_otr = {
        let o = randn(&[1, nh, m, hd], dev)?;
        rows.add(
            "copy",
            "attention output transpose",
            format!("(1,{nh},{m},{hd})->(1,{m},{})", nh * hd),
            layers,
            2.0 * f4 * o.elem_count() as f64,
            None,
            Some(GgmlOp {
                op: "CONT",
                unary: None,
                out: "f32",
                ne: [hd, nh, m, 1],
                params: vec![],
                srcs: vec![Src {
                    ty: "f32".into(),
                    ne: [hd, nh, m, 1],
                    nb: Some([4, 4 * hd * m, 4 * hd, 4 * hd * m * nh]),
                }],
            }),
            Box::new(move || o.transpose(1, 2)?.reshape((1, m, nh * hd)).map(drop)),
        )
    };

    // The MLP's elementwise ops and the residual adds.
    let ffn = ct
        .tensor_infos
        .get("blk.0.ffn_gate.weight")
        .map(|i| i.shape.dims()[0])
        .unwrap_or(4 * h);
    let xf = randn(&[1, m, ffn], dev)?;
    let yf = randn(&[1, m, ffn], dev)?;
    let ne_f = [ffn, m, 1, 1];
    let i_gelu = {
        let x = xf.clone();
        rows.add(
            "activation",
            "gelu (tanh)",
            format!("(1,{m},{ffn})"),
            layers,
            2.0 * f4 * (m * ffn) as f64,
            None,
            Some(GgmlOp {
                op: "UNARY",
                unary: Some("GELU"),
                out: "f32",
                ne: ne_f,
                params: vec![],
                srcs: vec![Src::new("f32", ne_f)],
            }),
            Box::new(move || x.gelu().map(drop)),
        )
    };
    let binary = |op: &'static str, ne: [usize; 4]| GgmlOp {
        op,
        unary: None,
        out: "f32",
        ne,
        params: vec![],
        srcs: vec![Src::new("f32", ne), Src::new("f32", ne)],
    };
    let i_mul = rows.add(
        "mul",
        "gate * up",
        format!("(1,{m},{ffn})"),
        layers,
        3.0 * f4 * (m * ffn) as f64,
        None,
        Some(binary("MUL", ne_f)),
        Box::new(move || (&xf * &yf).map(drop)),
    );
    let i_add = {
        let (a, b) = (xh.clone(), randn(&[1, m, h], dev)?);
        rows.add(
            "add",
            "residual",
            format!("(1,{m},{h})"),
            2 * layers,
            3.0 * f4 * (m * h) as f64,
            None,
            Some(binary("ADD", [h, m, 1, 1])),
            Box::new(move || (&a + &b).map(drop)),
        )
    };
    let i_softcap = if let Some(cap) = cfg.final_logit_softcapping {
        let l = randn(&[1, vocab], dev)?;
        rows.add(
            "activation",
            "final logit soft-cap",
            format!("(1,{vocab})"),
            1,
            2.0 * f4 * vocab as f64,
            None,
            None,
            Box::new(move || ((&l / cap)?.tanh()? * cap).map(drop)),
        )
    } else {
        None
    };
    // The pick: greedy argmax on the device, one u32 back to the host.
    let logits = randn(&[vocab], dev)?;
    let i_sampling = rows.add(
        "sampling",
        "argmax + to host",
        format!("({vocab})"),
        1,
        f4 * vocab as f64,
        None,
        Some(GgmlOp {
            op: "ARGMAX",
            unary: None,
            out: "i32",
            ne: [1, 1, 1, 1],
            params: vec![],
            srcs: vec![Src::new("f32", [vocab, 1, 1, 1])],
        }),
        Box::new(move || logits.argmax(0)?.to_scalar::<u32>().map(drop)),
    );

    // The forward's order, one entry per call (Gemma3Model::forward and Layer::attention/mlp).
    let mut order: Vec<Option<usize>> = vec![i_host, i_embd, i_escale];
    let group = |sliding: bool| i_attn.iter().find(|(s, _)| *s == sliding).map(|(_, r)| r);
    for sliding in [false, true] {
        order.push(group(sliding).and_then(|g| g.mask_build));
    }
    for l in 0..layers {
        let sliding = cfg.is_sliding(l);
        let w = |role: &str| {
            row_of
                .get(&format!("blk.{l}.{role}.weight"))
                .copied()
                .flatten()
        };
        let (q_tr, kv_tr) = (i_transpose[0], i_transpose[1]);
        order.extend([
            i_norm4,
            w("attn_q"),
            w("attn_k"),
            w("attn_v"),
            i_qnorm,
            q_tr,
            i_knorm,
            kv_tr,
            kv_tr,
            i_rope[0],
            i_rope[1],
        ]);
        let cache = if sliding { i_cat } else { i_append };
        order.extend([cache, cache]);
        if let Some(g) = group(sliding) {
            order.extend([g.qk, g.scale, g.mask_add, g.softmax, g.av]);
        }
        order.extend([
            i_otr,
            w("attn_output"),
            i_norm4,
            i_add,
            i_norm4,
            w("ffn_gate"),
            i_gelu,
            w("ffn_up"),
            i_mul,
            w("ffn_down"),
            i_norm4,
            i_add,
        ]);
    }
    order.extend([i_final_norm, i_lm_head, i_softcap, i_sampling]);
    let order: Vec<usize> = order.into_iter().flatten().collect();
    let order = check_order(&rows.benches, order);
    Ok(OpsSet {
        benches: rows.benches,
        order,
    })
}

/// The rows of one layer type's attention ops.
pub(super) struct AttnRows {
    qk: Option<usize>,
    scale: Option<usize>,
    mask_build: Option<usize>,
    mask_add: Option<usize>,
    softmax: Option<usize>,
    av: Option<usize>,
}
