//! ggml's tensor-type names and the types candle reads: shared by the GGUF validation
//! ([`crate::models::gguf::check`]) and the GGUF models ([`crate::models::sources::gguf`]).

/// The tensor types candle 0.11.1 reads and runs (quantized matmuls on CPU and CUDA).
pub const CANDLE_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// ggml's name of a tensor type id (ggml/include/ggml.h, `enum ggml_type`).
pub fn ggml_type_name(t: u32) -> String {
    const NAMES: [(u32, &str); 36] = [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (30, "BF16"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
        (40, "NVFP4"),
        (41, "Q1_0"),
        (42, "Q2_0"),
        (31, "Q4_0_4_4 (removed from GGUF)"),
    ];
    NAMES
        .iter()
        .find(|(i, _)| *i == t)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("unknown ({t})"))
}

/// ggml's name of one of candle's tensor types (`Q4_K`, not candle's `Q4K`).
pub fn dtype_name(d: candle_core::quantized::GgmlDType) -> &'static str {
    use candle_core::quantized::GgmlDType as G;
    match d {
        G::F32 => "F32",
        G::F16 => "F16",
        G::BF16 => "BF16",
        G::Q4_0 => "Q4_0",
        G::Q4_1 => "Q4_1",
        G::Q5_0 => "Q5_0",
        G::Q5_1 => "Q5_1",
        G::Q8_0 => "Q8_0",
        G::Q8_1 => "Q8_1",
        G::Q2K => "Q2_K",
        G::Q3K => "Q3_K",
        G::Q4K => "Q4_K",
        G::Q5K => "Q5_K",
        G::Q6K => "Q6_K",
        G::Q8K => "Q8_K",
    }
}
