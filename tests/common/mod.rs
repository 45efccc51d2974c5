//! Helpers shared by the integration tests: golden files, comparisons, devices.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use dnvs_engine::tensor::layout;
use dnvs_engine::{Device, Tensor};

/// `tests/data/NAME`.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A golden safetensors file: name -> (f32 values, PyTorch shape).
pub struct Golden(HashMap<String, (Vec<f32>, Vec<usize>)>);

impl Golden {
    pub fn load(file: &str) -> Golden {
        let path = data_path(&format!("golden/{file}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let mut map = HashMap::new();
        for (name, view) in st.tensors() {
            let data: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
            map.insert(name.to_string(), (data, view.shape().to_vec()));
        }
        Golden(map)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.0.keys().cloned().collect();
        k.sort();
        k
    }

    /// Values and shape exactly as stored (PyTorch layout).
    pub fn raw(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        self.0.get(key).unwrap_or_else(|| panic!("golden key {key} missing")).clone()
    }

    /// A stored tensor as the engine holds it: 5-D `(N, C, D, H, W)` activations and
    /// `(K, C, kd, kh, kw)` weights become channels-last; others are unchanged.
    pub fn engine(&self, key: &str) -> Tensor {
        let (v, s) = self.raw(key);
        if s.len() == 5 {
            let d: [usize; 5] = s.clone().try_into().unwrap();
            Tensor::from_vec(layout::ncdhw_to_ndhwc(&v, d), layout::dims_ncdhw_to_ndhwc(d).to_vec())
                .unwrap()
        } else {
            Tensor::from_vec(v, s).unwrap()
        }
    }
}

/// Panics, listing the first five mismatches, unless `|a - b| <= atol + rtol * |b|` everywhere.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let bad: Vec<(usize, f32, f32)> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| (*g - *w).abs().is_nan() || (*g - *w).abs() > atol + rtol * w.abs())
        .map(|(i, (g, w))| (i, *g, *w))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ (rtol {rtol}, atol {atol}); first: {:?}",
        bad.len(),
        got.len(),
        &bad[..bad.len().min(5)]
    );
}

/// The devices a test body runs on: always the CPU; CUDA when usable. Without a GPU it prints
/// why CUDA is skipped, and panics instead when `DNVS_REQUIRE_GPU=1`.
pub fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    match dnvs_engine::backend::cuda::probe(0) {
        Ok(_) => d.push(Device::Cuda(0)),
        Err(why) => {
            if std::env::var("DNVS_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("DNVS_REQUIRE_GPU=1 but CUDA is unusable: {why}");
            }
            eprintln!("skipping CUDA: {why}");
        }
    }
    d
}

/// Only the CUDA device, or `None` (with the printed reason) when there is none.
pub fn cuda_device() -> Option<Device> {
    devices().into_iter().find(|d| d.is_cuda())
}

/// Deterministic pseudo-random f32 in [-1, 1).
///
/// Kept as its own tiny xorshift rather than `dnvs_engine::rng` on purpose: its values are the
/// inputs of the gradcheck and golden-comparison tests, which must not change (new inputs could
/// land on a kink of relu/max-pool and fail a finite-difference check for no real reason).
pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Pearson correlation of two equally long volumes.
pub fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
        b.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
    );
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}
