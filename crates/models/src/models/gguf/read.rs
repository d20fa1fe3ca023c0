//! Reading a GGUF tensor straight into the buffer it lives in. candle-core 0.11.1's
//! `Content::tensor` reads a tensor into a byte `Vec`, then copies it into the typed block
//! `Vec` of its `QTensor` (ggml_file.rs `from_raw_data`: `data.to_vec()`), so every tensor is
//! briefly held twice: loading Gemma 3 270M's 178 MB embedding that way peaks 178 MB above the
//! weights. [`tensor`] reads the file's bytes once, into the block `Vec` the `QTensor` keeps,
//! so a load's peak is the weights themselves (llama.cpp maps the file: the same bytes).

use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QStorage, QTensor, QuantizedType};
use candle_core::{bail, Device, Result};

/// The tensor `name` of the file `ct` was read from (`r` open on that file), on `device`. On
/// a CPU it is read once into its final buffer; elsewhere candle's reader uploads it.
pub fn tensor<R: Read + Seek>(
    ct: &Content,
    r: &mut R,
    name: &str,
    device: &Device,
) -> Result<QTensor> {
    let Some(info) = ct.tensor_infos.get(name) else {
        bail!("cannot find tensor info for {name}")
    };
    if !device.is_cpu() {
        return info.read(r, ct.tensor_data_offset, device);
    }
    let dt = info.ggml_dtype;
    let elems = info.shape.elem_count();
    if !elems.is_multiple_of(dt.block_size()) {
        bail!(
            "tensor {name}: {elems} elements is not a multiple of {dt:?}'s block size {}",
            dt.block_size()
        )
    }
    let blocks = elems / dt.block_size();
    r.seek(SeekFrom::Start(ct.tensor_data_offset + info.offset))?;
    let storage: Box<dyn QuantizedType> = match dt {
        GgmlDType::F32 => read_blocks::<f32, _>(r, blocks)?,
        GgmlDType::F16 => read_blocks::<half::f16, _>(r, blocks)?,
        GgmlDType::BF16 => read_blocks::<half::bf16, _>(r, blocks)?,
        GgmlDType::Q4_0 => read_blocks::<BlockQ4_0, _>(r, blocks)?,
        GgmlDType::Q4_1 => read_blocks::<BlockQ4_1, _>(r, blocks)?,
        GgmlDType::Q5_0 => read_blocks::<BlockQ5_0, _>(r, blocks)?,
        GgmlDType::Q5_1 => read_blocks::<BlockQ5_1, _>(r, blocks)?,
        GgmlDType::Q8_0 => read_blocks::<BlockQ8_0, _>(r, blocks)?,
        GgmlDType::Q2K => read_blocks::<BlockQ2K, _>(r, blocks)?,
        GgmlDType::Q3K => read_blocks::<BlockQ3K, _>(r, blocks)?,
        GgmlDType::Q4K => read_blocks::<BlockQ4K, _>(r, blocks)?,
        GgmlDType::Q5K => read_blocks::<BlockQ5K, _>(r, blocks)?,
        GgmlDType::Q6K => read_blocks::<BlockQ6K, _>(r, blocks)?,
        // Not a type GGUF files store weights in (candle's reader refuses them too).
        other => {
            return info.read(r, ct.tensor_data_offset, device).map_err(|e| {
                candle_core::Error::Msg(format!("tensor {name} of type {other:?}: {e}"))
            })
        }
    };
    QTensor::new(QStorage::Cpu(storage), info.shape.clone())
}

/// `blocks` ggml blocks of type `T` read from `r` into a `Vec<T>` of exactly that length.
fn read_blocks<T, R>(r: &mut R, blocks: usize) -> Result<Box<dyn QuantizedType>>
where
    T: GgmlType + Send + Sync + 'static,
    R: Read,
{
    let bytes = blocks * std::mem::size_of::<T>();
    let mut v: Vec<T> = Vec::with_capacity(blocks);
    // SAFETY: ggml blocks are plain data (integers, f16 and byte arrays; candle's own
    // reader casts raw file bytes to them): any bytes are a valid `T`. The capacity holds
    // `blocks` of them; they are zeroed before a slice is made over them and the length is
    // set only after every byte was read.
    unsafe {
        std::ptr::write_bytes(v.as_mut_ptr(), 0, blocks);
        let buf = std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), bytes);
        r.read_exact(buf)?;
        v.set_len(blocks);
    }
    Ok(Box::new(v))
}

/// candle-transformers 0.11.1's quantized_llama reads experts only in the legacy per-expert
/// layout (`blk.N.ffn_gate.E.weight`, one 2-D tensor per expert, as GGUF files from before
/// llama.cpp merged them in 2024); llama.cpp reads only the stacked layout its converter
/// writes today (`blk.N.ffn_gate_exps.weight`, E x ff x hidden, experts contiguous). Each
/// expert of a stacked tensor is a contiguous byte range, so the stacked file is presented to
/// candle as per-expert tensors at those offsets: no byte of the file changes, candle's own
/// code computes. The project's own mixture-of-experts models read their experts the same
/// way, one 2-D quantized matmul each ([`crate::models::quantized::llama`]).
pub fn split_stacked_experts(ct: &mut Content) -> candle_core::Result<()> {
    let stacked: Vec<_> = ct
        .tensor_infos
        .iter()
        .filter(|(n, _)| n.ends_with("_exps.weight"))
        .map(|(n, i)| (n.clone(), i.ggml_dtype, i.shape.clone(), i.offset))
        .collect();
    for (name, dt, shape, offset) in stacked {
        let (e, rows, cols) = shape.dims3()?;
        let elems = rows * cols;
        if elems % dt.block_size() != 0 {
            bail!("{name}: an expert of {rows} x {cols} is not whole blocks of {dt:?}");
        }
        let bytes = (elems / dt.block_size() * dt.type_size()) as u64;
        let legacy = name.replace("_exps.weight", "");
        for x in 0..e {
            ct.tensor_infos.insert(
                format!("{legacy}.{x}.weight"),
                candle_core::quantized::gguf_file::TensorInfo {
                    ggml_dtype: dt,
                    shape: (rows, cols).into(),
                    offset: offset + x as u64 * bytes,
                },
            );
        }
    }
    Ok(())
}

/// A fused 2-D weight (`name`, rows x columns, as llama.cpp's converter writes Phi-3's
/// `attn_qkv` and `ffn_up`) presented as the tensors it fuses: `parts` names each and gives its
/// rows, in order; each part is a contiguous byte range of the fused tensor (a row is whole
/// blocks), so no byte of the file changes and each part is read as a tensor of its own. The
/// parts must cover the rows exactly. A part may reuse the fused tensor's name.
pub fn split_fused_rows(ct: &mut Content, name: &str, parts: &[(String, usize)]) -> Result<()> {
    let Some(info) = ct.tensor_infos.get(name) else {
        bail!("cannot find tensor info for {name}")
    };
    let (rows, cols) = info.shape.dims2()?;
    let (dt, offset) = (info.ggml_dtype, info.offset);
    let want: usize = parts.iter().map(|p| p.1).sum();
    if want != rows {
        bail!("{name} has {rows} rows; its parts need {want}");
    }
    if !cols.is_multiple_of(dt.block_size()) {
        bail!("{name}: a row of {cols} is not whole blocks of {dt:?}");
    }
    let row_bytes = (cols / dt.block_size() * dt.type_size()) as u64;
    let mut at = offset;
    for (part, n) in parts {
        ct.tensor_infos.insert(
            part.clone(),
            candle_core::quantized::gguf_file::TensorInfo {
                ggml_dtype: dt,
                shape: (*n, cols).into(),
                offset: at,
            },
        );
        at += *n as u64 * row_bytes;
    }
    Ok(())
}

/// A copy of a parsed header (candle 0.11.1's `Content` is not `Clone`): what a model
/// builder consumes, taken from the header a resolved source carries instead of reading the
/// file again.
pub fn copy_content(
    ct: &candle_core::quantized::gguf_file::Content,
) -> candle_core::quantized::gguf_file::Content {
    use candle_core::quantized::gguf_file::{Content, TensorInfo};
    Content {
        magic: ct.magic,
        metadata: ct.metadata.clone(),
        tensor_infos: ct
            .tensor_infos
            .iter()
            .map(|(k, t)| {
                let t = TensorInfo {
                    ggml_dtype: t.ggml_dtype,
                    shape: t.shape.clone(),
                    offset: t.offset,
                };
                (k.clone(), t)
            })
            .collect(),
        tensor_data_offset: ct.tensor_data_offset,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};

    use super::*;

    /// Every type the writer makes reads back to the bytes candle's reader gives.
    #[test]
    fn reads_what_candles_reader_reads() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (4, 256), &dev).unwrap();
        let types = [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ];
        let qs: Vec<(String, QTensor)> = types
            .iter()
            .map(|t| (format!("{t:?}"), QTensor::quantize(&x, *t).unwrap()))
            .collect();
        let dir = std::env::temp_dir().join(format!("modelbench-gguf-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        {
            let mut f = std::fs::File::create(&path).unwrap();
            let refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            gguf_file::write(&mut f, &[], &refs).unwrap();
        }
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        for (name, _) in &qs {
            let ours = tensor(&ct, &mut f, name, &dev).unwrap();
            let theirs = ct.tensor(&mut f, name, &dev).unwrap();
            assert_eq!(ours.dtype(), theirs.dtype(), "{name}");
            assert_eq!(ours.shape(), theirs.shape(), "{name}");
            assert_eq!(ours.data().unwrap(), theirs.data().unwrap(), "{name}");
        }
        let e = tensor(&ct, &mut f, "absent", &dev).unwrap_err().to_string();
        assert!(e.contains("absent"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
