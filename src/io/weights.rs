//! Network weights as safetensors files with PyTorch's names and layouts, so a checkpoint moves
//! both ways between this engine and the paper's PyTorch code.
//!
//! PyTorch stores convolution weights `(K, C, kd, kh, kw)` and transposed-convolution weights
//! `(C_in, C_out, kd, kh, kw)`; the engine stores both channels-last, `(K, kd, kh, kw, C)` and
//! `(C_out, kd, kh, kw, C_in)`. [`Layout`] converts between them at this boundary only.
//!
//! Files are written atomically (a temporary file in the same folder, then a rename), so a crash
//! never leaves a half-written checkpoint under the real name.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::tensor::layout;
use crate::{Error, Result};

/// How a stored tensor's PyTorch layout maps to the engine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same order in both (biases, norm weights, running statistics, PReLU slopes).
    Plain,
    /// Convolution weight: PyTorch `(K, C, kd, kh, kw)`, engine `(K, kd, kh, kw, C)`.
    Conv,
    /// Transposed-convolution weight: PyTorch `(C_in, C_out, kd, kh, kw)`, engine
    /// `(C_out, kd, kh, kw, C_in)`.
    ConvTranspose,
}

impl Layout {
    /// The engine dims of a tensor whose PyTorch dims are `torch`.
    pub fn engine_dims(self, torch: &[usize]) -> Vec<usize> {
        match (self, torch) {
            (Layout::Conv, &[k, c, d, h, w]) => vec![k, d, h, w, c],
            (Layout::ConvTranspose, &[ci, co, d, h, w]) => vec![co, d, h, w, ci],
            _ => torch.to_vec(),
        }
    }

    /// The PyTorch dims of a tensor whose engine dims are `engine`.
    pub fn torch_dims(self, engine: &[usize]) -> Vec<usize> {
        match (self, engine) {
            (Layout::Conv, &[k, d, h, w, c]) => vec![k, c, d, h, w],
            (Layout::ConvTranspose, &[co, d, h, w, ci]) => vec![ci, co, d, h, w],
            _ => engine.to_vec(),
        }
    }

    /// Reorders PyTorch-layout values (dims `torch`) into the engine layout.
    pub fn to_engine(self, data: &[f32], torch: &[usize]) -> Vec<f32> {
        match (self, torch) {
            (Layout::Conv, &[k, c, d, h, w]) => layout::kcdhw_to_kdhwc(data, [k, c, d, h, w]),
            (Layout::ConvTranspose, &[ci, co, d, h, w]) => {
                // (C_in, C_out, S) -> (C_out, S, C_in) with S = d*h*w.
                let s = d * h * w;
                let mut out = vec![0.0; data.len()];
                for i in 0..ci {
                    for o in 0..co {
                        for p in 0..s {
                            out[(o * s + p) * ci + i] = data[(i * co + o) * s + p];
                        }
                    }
                }
                out
            }
            _ => data.to_vec(),
        }
    }

    /// Reorders engine-layout values (dims `engine`) into PyTorch's layout.
    pub fn to_torch(self, data: &[f32], engine: &[usize]) -> Vec<f32> {
        match (self, engine) {
            (Layout::Conv, &[k, d, h, w, c]) => layout::kdhwc_to_kcdhw(data, [k, d, h, w, c]),
            (Layout::ConvTranspose, &[co, d, h, w, ci]) => {
                let s = d * h * w;
                let mut out = vec![0.0; data.len()];
                for o in 0..co {
                    for p in 0..s {
                        for i in 0..ci {
                            out[(i * co + o) * s + p] = data[(o * s + p) * ci + i];
                        }
                    }
                }
                out
            }
            _ => data.to_vec(),
        }
    }
}

/// One stored tensor: PyTorch dims and f32 values in PyTorch's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads every floating-point tensor of a safetensors file (F32 as is; F64, F16 and BF16 converted
/// to f32), keyed by name. Integer tensors (PyTorch's `num_batches_tracked`) are skipped.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Format`] when it is not safetensors.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Stored>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytemuck::pod_collect_to_vec(raw),
            Dtype::F64 => {
                raw.chunks_exact(8).map(|b| f64::from_le_bytes(array8(b)) as f32).collect()
            }
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => continue,
        };
        out.insert(name, Stored { dims: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// The largest safetensors header this reader accepts (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The `__metadata__` of a safetensors file (empty when it has none), reading only the header:
/// its declared length is checked against the file's size before anything is allocated.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Format`] naming the file when the header
/// length lies or the header is not the JSON object safetensors writes.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut word = [0u8; 8];
    f.read_exact(&mut word).map_err(|_| {
        Error::format(path, format!("not a safetensors file: {size} bytes, no header length"))
    })?;
    let n = u64::from_le_bytes(word);
    if n > size.saturating_sub(8) || n > MAX_HEADER {
        return Err(Error::format(
            path,
            format!("not a safetensors file: header length {n} but the file has {size} bytes"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| Error::format(path, format!("safetensors header is not JSON: {e}")))?;
    let mut out = BTreeMap::new();
    if let Some(meta) = json.get("__metadata__") {
        let obj = meta.as_object().ok_or_else(|| {
            Error::format(path, "safetensors __metadata__ is not an object of strings")
        })?;
        for (k, v) in obj {
            let v = v.as_str().ok_or_else(|| {
                Error::format(path, format!("safetensors __metadata__[{k}] is not a string"))
            })?;
            out.insert(k.clone(), v.to_string());
        }
    }
    Ok(out)
}

fn array8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

/// Writes `tensors` (PyTorch names, dims and layout) as an f32 safetensors file, atomically.
///
/// # Errors
/// [`Error::Shape`] when a tensor's values do not fill its dims; [`Error::Io`] on write failure.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Stored>) -> Result<()> {
    write_safetensors_with(path, tensors, &BTreeMap::new())
}

/// [`write_safetensors`] with string entries in the header's `__metadata__` (where a model card
/// lives, see `crate::nn::model`). No metadata writes no `__metadata__` at all.
///
/// # Errors
/// As [`write_safetensors`].
pub fn write_safetensors_with(
    path: &Path,
    tensors: &BTreeMap<String, Stored>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut bytes: Vec<(&str, Vec<u8>, &[usize])> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if t.dims.iter().product::<usize>() != t.data.len() {
            return Err(Error::shape("write_safetensors", &t.dims, t.data.len()));
        }
        let le: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((name.as_str(), le, &t.dims));
    }
    let mut views = Vec::with_capacity(bytes.len());
    for (name, le, dims) in &bytes {
        let view = TensorView::new(Dtype::F32, dims.to_vec(), le)
            .map_err(|e| Error::format(path, format!("{name}: {e}")))?;
        views.push((*name, view));
    }
    let meta: Option<std::collections::HashMap<String, String>> =
        (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect());
    let serialized = safetensors::serialize(views, &meta)
        .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &serialized)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary file is useless once the write failed.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_transpose_layout_round_trip() {
        let torch = [3, 2, 2, 2, 2];
        let data: Vec<f32> = (0..48).map(|i| i as f32).collect();
        let eng = Layout::ConvTranspose.to_engine(&data, &torch);
        let edims = Layout::ConvTranspose.engine_dims(&torch);
        assert_eq!(edims, vec![2, 2, 2, 2, 3]);
        // engine (o=1, p=0, i=2) is torch (i=2, o=1, p=0)
        assert_eq!(eng[(8) * 3 + 2], data[(2 * 2 + 1) * 8]);
        assert_eq!(Layout::ConvTranspose.to_torch(&eng, &edims), data);
        assert_eq!(Layout::ConvTranspose.torch_dims(&edims), torch.to_vec());
    }

    #[test]
    fn metadata_round_trips_and_a_lying_header_is_refused() {
        let dir = std::env::temp_dir().join(format!("dnvs_weights_meta_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.safetensors");
        let mut t = BTreeMap::new();
        t.insert("a".to_string(), Stored { dims: vec![2], data: vec![1.0, 2.0] });
        let mut meta = BTreeMap::new();
        meta.insert("dnvs".to_string(), "{\"format\":1}".to_string());
        write_safetensors_with(&p, &t, &meta).unwrap();
        assert_eq!(read_metadata(&p).unwrap(), meta);
        assert_eq!(read_safetensors(&p).unwrap(), t);
        write_safetensors(&p, &t).unwrap();
        assert!(read_metadata(&p).unwrap().is_empty());
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = read_metadata(&p).unwrap_err().to_string();
        assert!(e.contains("header length") && e.contains("w.safetensors"), "{e}");
    }

    #[test]
    fn conv_layout_round_trip() {
        let torch = [4, 3, 1, 2, 2];
        let data: Vec<f32> = (0..48).map(|i| i as f32).collect();
        let edims = Layout::Conv.engine_dims(&torch);
        let eng = Layout::Conv.to_engine(&data, &torch);
        assert_eq!(Layout::Conv.to_torch(&eng, &edims), data);
    }
}
