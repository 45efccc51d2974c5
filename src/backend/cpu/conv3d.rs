//! CPU 3-D convolution over channels-last data: forward, gradient of the input, gradient of the
//! weight. Three implementations, picked per call:
//!
//! - `direct` (x86-64 with AVX2+FMA or AVX-512F, detected at run time): a register-blocked
//!   microkernel reads the zero-padded input in place. Used for the forward pass, the stride-1
//!   input gradient (a forward convolution of `grad_out` with the flipped weight) and the weight
//!   gradient whenever the channel counts fill its 16-wide tiles reasonably.
//! - im2col + `gemm` (everything else, and every CPU): a tile of output (or input) voxels gathers
//!   its receptive fields into a thread-local patch matrix `[rows, kd*kh*kw*C]` (zeros where the
//!   window hangs over the padding) and one single-threaded `gemm` call multiplies it by the
//!   weight matrix. Channels-last makes every `kw*C` run of a receptive field one contiguous
//!   slice, so a patch row is `kd*kh` copies. Non-overlapping windows (2x2x2 stride 2, 1x1x1)
//!   need no patch for the input gradient: one GEMM and a block copy.
//!
//! - `winograd` (tape-free forwards only, AVX2+FMA): the large 5x5x5 stride-1 layers as
//!   `F(4x4x4, 5x5x5)`, 15.6x fewer multiply-adds at a different f32 rounding; see
//!   [`fwd_inference`].
//!
//! Tiles run in parallel on rayon, so the GEMM crate's own threading stays off.
//!
//! Layouts: `x (N, D, H, W, C)`, `w (K, kd, kh, kw, C)` (= a `(K, kvol*C)` matrix),
//! `out (N, D', H', W', K)`. The transposed convolution reuses these kernels (see
//! [`super::conv_transpose3d`]).

use std::cell::RefCell;

use rayon::prelude::*;

use super::profile;

mod direct;
mod winograd;

/// Output voxels per forward / weight-gradient tile: enough rows that a GEMM call amortises
/// packing the weight, few enough that the patch (`rows * kvol * C` floats) stays near L2.
const TILE_ROWS: usize = 128;

/// Everything about one convolution's geometry, checked once in `crate::ops`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input spatial dims `[D, H, W]`.
    pub input: [usize; 3],
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel dims `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    pub stride: usize,
    pub padding: usize,
    /// Output spatial dims `[D', H', W']`.
    pub output: [usize; 3],
}

impl ConvGeom {
    /// The geometry of a convolution, or `None` when the stride is zero or the kernel does not
    /// fit the padded input on some axis.
    pub fn new(
        n: usize,
        input: [usize; 3],
        c: usize,
        k: usize,
        kernel: [usize; 3],
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        if stride == 0 {
            return None;
        }
        let mut output = [0; 3];
        for a in 0..3 {
            let padded = input[a] + 2 * padding;
            if kernel[a] == 0 || kernel[a] > padded {
                return None;
            }
            output[a] = (padded - kernel[a]) / stride + 1;
        }
        Some(ConvGeom { n, input, c, k, kernel, stride, padding, output })
    }

    /// Kernel taps `kd * kh * kw`.
    pub fn kvol(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Length of one patch row (= one weight row): `kvol * C`.
    pub fn patch_len(&self) -> usize {
        self.kvol() * self.c
    }

    /// Output voxels over the batch.
    pub fn out_voxels(&self) -> usize {
        self.n * self.output.iter().product::<usize>()
    }

    /// Input voxels over the batch.
    pub fn in_voxels(&self) -> usize {
        self.n * self.input.iter().product::<usize>()
    }

    /// Multiply-adds times two of one forward pass (the same count for each backward pass).
    pub fn flops(&self) -> f64 {
        2.0 * self.out_voxels() as f64 * self.k as f64 * self.patch_len() as f64
    }

    /// `k5 s1 C256->256 4x4x2`: the kernel, stride, channels and input size, for profiles.
    pub fn label(&self) -> String {
        let [kd, kh, kw] = self.kernel;
        let k = if kd == kh && kh == kw { format!("k{kd}") } else { format!("k{kd}x{kh}x{kw}") };
        let [d, h, w] = self.input;
        let n = if self.n == 1 { String::new() } else { format!(" N{}", self.n) };
        format!("{k} s{} C{}->{} {d}x{h}x{w}{n}", self.stride, self.c, self.k)
    }

    /// Windows tile the input without overlap or gaps between them (`kernel == stride`, no
    /// padding): the 2x2x2 stride-2 down/up convolutions and every 1x1x1 convolution.
    fn non_overlapping(&self) -> bool {
        self.padding == 0 && self.kernel.iter().all(|&k| k == self.stride)
    }
}

// ---- GEMM -------------------------------------------------------------------------------------

/// A strided view of a matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// Index of the last element of an `rows x cols` matrix with strides `rs`, `cs`.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `dst (m x n, strides drs, dcs) = [dst +] a (m x k) * b (k x n)`, single-threaded: callers
/// parallelise over tiles.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    (drs, dcs): (usize, usize),
    acc: bool,
    a: Mat,
    b: Mat,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(last_index(m, n, drs, dcs) < dst.len(), "matmul: dst too short");
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    dst[i * drs + j * dcs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(last_index(m, k, a.rs, a.cs) < a.data.len(), "matmul: lhs too short");
    assert!(last_index(k, n, b.rs, b.cs) < b.data.len(), "matmul: rhs too short");
    // SAFETY: the asserts above bound every element the call reads or writes inside its slice;
    // `dst` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dcs as isize,
            drs as isize,
            acc,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out (rows x n, row-major) = [bias +] a (rows x k) * b (k x n)` for a tile with few columns
/// (output channels). The GEMM writes a column-major scratch copy first, so the microkernel's
/// 16-float side runs along the tile's rows whatever `n` is: this path serves K = 2..11, where a
/// row-major destination would leave most of it idle. The transpose back costs `rows * n` moves.
#[allow(clippy::too_many_arguments)]
fn tile_matmul(
    rows: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    if scratch.len() < rows * n {
        scratch.resize(rows * n, 0.0);
    }
    let col = &mut scratch[..rows * n];
    matmul(rows, n, k, col, (1, rows), false, a, b);
    for (r, o) in out.chunks_exact_mut(n).take(rows).enumerate() {
        for (j, v) in o.iter_mut().enumerate() {
            *v = col[j * rows + r];
        }
        if let Some(bias) = bias {
            o.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    }
}

/// Per-thread scratch: the patch matrix and the column-major GEMM result of a tile.
#[derive(Default)]
struct Scratch {
    patch: Vec<f32>,
    col: Vec<f32>,
}

thread_local! {
    /// One scratch per rayon worker, reused across tiles and calls.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on this thread's patch buffer of `len` floats (contents unspecified: callers overwrite
/// every element they read) and its column scratch.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32], &mut Vec<f32>) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch { patch, col } = &mut *s;
        if patch.len() < len {
            patch.resize(len, 0.0);
        }
        f(&mut patch[..len], col)
    })
}

/// Output voxel index -> `(n, [od, oh, ow])`.
fn decode(v: usize, dims: [usize; 3]) -> (usize, [usize; 3]) {
    let [d, h, w] = dims;
    let ow = v % w;
    let oh = (v / w) % h;
    let od = (v / (w * h)) % d;
    (v / (w * h * d), [od, oh, ow])
}

// ---- im2col -----------------------------------------------------------------------------------

/// Fills `row` (`kvol * C` floats) with the receptive field of output voxel `v`, zeros outside.
fn gather_patch_row(x: &[f32], g: &ConvGeom, v: usize, row: &mut [f32]) {
    let (b, o) = decode(v, g.output);
    let [d, h, w] = g.input;
    let [kd, kh, kw] = g.kernel;
    let c = g.c;
    let run = kw * c;
    // First input coordinate of the window on each axis (may be negative: padding).
    let start = |a: usize| (o[a] * g.stride) as isize - g.padding as isize;
    let (z0, y0, x0) = (start(0), start(1), start(2));
    // Taps along W that land inside the input: one contiguous slice of x per (a, b).
    let e_lo = (-x0).clamp(0, kw as isize) as usize;
    let e_hi = (w as isize - x0).clamp(0, kw as isize) as usize;
    for a in 0..kd {
        let z = z0 + a as isize;
        for bb in 0..kh {
            let y = y0 + bb as isize;
            let dst = &mut row[(a * kh + bb) * run..][..run];
            if z < 0 || z >= d as isize || y < 0 || y >= h as isize || e_lo >= e_hi {
                dst.fill(0.0);
                continue;
            }
            let base = (((b * d + z as usize) * h + y as usize) * w) as isize + x0;
            let src_lo = (base + e_lo as isize) as usize * c;
            dst[..e_lo * c].fill(0.0);
            dst[e_lo * c..e_hi * c].copy_from_slice(&x[src_lo..src_lo + (e_hi - e_lo) * c]);
            dst[e_hi * c..].fill(0.0);
        }
    }
}

/// Fills rows `v0 .. v0 + rows` of the patch matrix.
fn gather_patches(x: &[f32], g: &ConvGeom, v0: usize, patch: &mut [f32]) {
    let p = g.patch_len();
    for (r, row) in patch.chunks_exact_mut(p).enumerate() {
        gather_patch_row(x, g, v0 + r, row);
    }
}

/// When the patch matrix is `x` itself (1x1x1 kernel, stride 1, no padding).
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kvol() == 1 && g.stride == 1 && g.padding == 0
}

// ---- forward ----------------------------------------------------------------------------------

/// Forward convolution.
///
/// # Shapes
/// `x (N, D, H, W, C)`, `w (K, kd, kh, kw, C)`, `bias (K)` -> `(N, D', H', W', K)`.
pub fn fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv3d_fwd {}", g.label()));
    if direct_fwd_pays(g) {
        direct::fwd(x, w, bias, g)
    } else if !is_pointwise(g) && direct::few_available(g) {
        direct::fwd_few(x, w, bias, g)
    } else {
        fwd_gemm(x, w, bias, g)
    }
}

/// Forward convolution for a tape-free pass: [`fwd`], except that 5x5x5 stride-1 padding-2
/// layers where it pays go through Winograd (`conv3d/winograd.rs`), whose f32 rounding differs from the
/// direct sum (see `winograd_f`), so training keeps the direct kernels.
///
/// # Shapes
/// As [`fwd`].
pub fn fwd_inference(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    match winograd_f(g) {
        Some(m) => {
            let _t = profile::scope(|| format!("conv3d_fwd {} F{m}", g.label()));
            winograd::fwd(x, w, bias, g, m)
        }
        None => fwd(x, w, bias, g),
    }
}

/// The Winograd tile size `m` for a tape-free forward of `g`, or `None` for the direct kernel.
/// The weight transform costs `n^3 * C * K` however small the volume, and the direct kernel
/// skips the taps that fall in the padding, which on a small volume are most of them: measured
/// on the V-Net at 64x64x32 (2 cores, AVX2, docs/PERF.md), F(4,5) is 1.8-3.8x faster than the
/// direct kernel from 16x16x8 (2048 voxels) up, while at 8x8x4 (256 voxels, C128/256) F(2,5)
/// is 1.7x slower. F(4,5) is taken when its 4-voxel tiles cover the output with at most 1.5x
/// padding, else F(2,5).
fn winograd_f(g: &ConvGeom) -> Option<usize> {
    const MIN_VOXELS: usize = 2048;
    if !winograd::applies(g) || g.c < 16 || g.k < 16 || g.out_voxels() < MIN_VOXELS {
        return None;
    }
    let covered = |m: usize| g.output.iter().map(|&o| o.div_ceil(m) * m).product::<usize>();
    let voxels: usize = g.output.iter().product();
    Some(if covered(4) * 2 <= voxels * 3 { 4 } else { 2 })
}

/// The direct kernel pads output channels to a multiple of 16: worth it unless that wastes more
/// than a quarter of the work (K = 2 or 8 stay on the GEMM path), and not for pointwise
/// convolutions, where the GEMM reads the input in place anyway.
fn direct_fwd_pays(g: &ConvGeom) -> bool {
    direct::available() && !is_pointwise(g) && g.k * 4 >= g.k.div_ceil(16) * 16 * 3
}

/// Forward convolution through im2col tiles and `gemm`.
fn fwd_gemm(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let (k, p) = (g.k, g.patch_len());
    let mut out = vec![0.0; g.out_voxels() * k];
    if out.is_empty() {
        return out;
    }
    // out_tile (rows x K) = patches (rows x P) * w^T (P x K).
    let wt = Mat { data: w, rs: 1, cs: p };
    out.par_chunks_mut(TILE_ROWS * k).enumerate().for_each(|(t, tile)| {
        let v0 = t * TILE_ROWS;
        let rows = tile.len() / k;
        let len = if is_pointwise(g) { 0 } else { rows * p };
        with_scratch(len, |patch, col| {
            let a = if is_pointwise(g) {
                Mat { data: &x[v0 * p..(v0 + rows) * p], rs: p, cs: 1 }
            } else {
                gather_patches(x, g, v0, patch);
                Mat { data: patch, rs: p, cs: 1 }
            };
            tile_matmul(rows, k, p, a, wt, bias, tile, col);
        });
    });
    out
}

// ---- gradient of the input --------------------------------------------------------------------

/// Gradient of the input: `grad_in = sum over windows of grad_out * w`.
///
/// # Shapes
/// `grad_out (N, D', H', W', K)`, `w (K, kd, kh, kw, C)` -> `(N, D, H, W, C)`.
pub fn bwd_input(grad_out: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv3d_bwd_input {}", g.label()));
    let mut gi = vec![0.0; g.in_voxels() * g.c];
    if gi.is_empty() || g.k == 0 {
        return gi;
    }
    if g.non_overlapping() {
        bwd_input_blocks(grad_out, w, g, &mut gi);
    } else if let Some(flipped) = flipped_geometry(g).filter(direct_fwd_pays) {
        return direct::fwd_blocked(grad_out, &direct::flipped_blocks(w, g), None, &flipped);
    } else {
        bwd_input_gather(grad_out, w, g, &mut gi);
    }
    gi
}

/// For stride 1 and a cubic kernel no smaller than `padding + 1`, the input gradient is the
/// forward convolution of `grad_out`, padded by `k - 1 - padding`, with the weight flipped in
/// space and its channel axes swapped: this geometry.
fn flipped_geometry(g: &ConvGeom) -> Option<ConvGeom> {
    let ks = g.kernel[0];
    if g.stride != 1 || g.kernel.iter().any(|&k| k != ks) || g.padding + 1 > ks {
        return None;
    }
    let f = ConvGeom::new(g.n, g.output, g.k, g.c, g.kernel, 1, ks - 1 - g.padding)?;
    (f.output == g.input).then_some(f)
}

/// Non-overlapping windows: every output voxel's `kvol*C` gradient block is one GEMM row
/// (`grad_out (rows x K) * w (K x kvol*C)`), scattered into its own window. Work is split by
/// output depth slice, whose windows cover disjoint input depth slabs.
fn bwd_input_blocks(grad_out: &[f32], w: &[f32], g: &ConvGeom, gi: &mut [f32]) {
    let (k, c, p, s) = (g.k, g.c, g.patch_len(), g.stride);
    let [d, h, wd] = g.input;
    let [od, oh, ow] = g.output;
    let slab = s * h * wd * c; // input floats under one output depth slice
    let plane = oh * ow; // output voxels in one depth slice
    let wm = Mat { data: w, rs: p, cs: 1 };
    for (b, gi_b) in gi.chunks_mut(d * h * wd * c).enumerate() {
        // Input depths past od*s lie under no window: their gradient stays zero.
        gi_b[..od * slab].par_chunks_mut(slab).enumerate().for_each(|(z, gslab)| {
            let v_base = (b * od + z) * plane;
            for r0 in (0..plane).step_by(TILE_ROWS) {
                let rows = TILE_ROWS.min(plane - r0);
                let go = &grad_out[(v_base + r0) * k..(v_base + r0 + rows) * k];
                with_scratch(rows * p, |blocks, _| {
                    let go = Mat { data: go, rs: k, cs: 1 };
                    matmul(rows, p, k, blocks, (p, 1), false, go, wm);
                    for (r, block) in blocks.chunks_exact(p).enumerate() {
                        let (y, xw) = ((r0 + r) / ow, (r0 + r) % ow);
                        scatter_block(block, g, y, xw, gslab);
                    }
                });
            }
        });
    }
}

/// Writes one `(kd, kh, kw, C)` block into window `(·, y, x)` of an input depth slab.
fn scatter_block(block: &[f32], g: &ConvGeom, y: usize, x: usize, gslab: &mut [f32]) {
    let [_, h, wd] = g.input;
    let [kd, kh, kw] = g.kernel;
    let (c, s) = (g.c, g.stride);
    let run = kw * c;
    for a in 0..kd {
        for bb in 0..kh {
            let dst = ((a * h + y * s + bb) * wd + x * s) * c;
            gslab[dst..dst + run].copy_from_slice(&block[(a * kh + bb) * run..][..run]);
        }
    }
}

/// General case: for each input voxel gather the `grad_out` rows of every window that covers it
/// (zeros where none does) and multiply by the weight rearranged to `(kvol*K, C)`. Gathering
/// instead of scattering keeps the tiles independent. Taps are walked in reverse so that, for
/// stride 1, each `kw` run of the gather reads consecutive output voxels.
fn bwd_input_gather(grad_out: &[f32], w: &[f32], g: &ConvGeom, gi: &mut [f32]) {
    let (k, c, kvol) = (g.k, g.c, g.kvol());
    // wr[(t', kk), c] = w[kk, t, c] with t' the reversed tap index.
    let mut wr = vec![0.0; kvol * k * c];
    for kk in 0..k {
        for t in 0..kvol {
            let tr = kvol - 1 - t;
            wr[(tr * k + kk) * c..][..c].copy_from_slice(&w[(kk * kvol + t) * c..][..c]);
        }
    }
    let q = kvol * k;
    let wm = Mat { data: &wr, rs: c, cs: 1 };
    gi.par_chunks_mut(TILE_ROWS * c).enumerate().for_each(|(t, tile)| {
        let v0 = t * TILE_ROWS;
        let rows = tile.len() / c;
        with_scratch(rows * q, |patch, col| {
            for (r, row) in patch.chunks_exact_mut(q).enumerate() {
                gather_grad_row(grad_out, g, v0 + r, row);
            }
            tile_matmul(rows, c, q, Mat { data: patch, rs: q, cs: 1 }, wm, None, tile, col);
        });
    });
}

/// Fills `row` (`kvol * K`) with the `grad_out` rows that input voxel `v` feeds, reversed taps.
fn gather_grad_row(grad_out: &[f32], g: &ConvGeom, v: usize, row: &mut [f32]) {
    let (b, i) = decode(v, g.input);
    let [kd, kh, kw] = g.kernel;
    let [od, oh, ow] = g.output;
    let (k, s, pad) = (g.k, g.stride as isize, g.padding as isize);
    // Output index on one axis reached through reversed tap `tr`, if any.
    let out_at = |i: usize, tr: usize, ksz: usize, osz: usize| -> Option<usize> {
        let num = i as isize + pad - (ksz - 1 - tr) as isize;
        (num >= 0 && num % s == 0 && ((num / s) as usize) < osz).then(|| (num / s) as usize)
    };
    let mut chunks = row.chunks_exact_mut(k);
    for a in 0..kd {
        let z = out_at(i[0], a, kd, od);
        for bb in 0..kh {
            let y = out_at(i[1], bb, kh, oh);
            for e in 0..kw {
                let dst = chunks.next().expect("row holds kvol*K floats");
                match (z, y, out_at(i[2], e, kw, ow)) {
                    (Some(z), Some(y), Some(xx)) => {
                        let src = (((b * od + z) * oh + y) * ow + xx) * k;
                        dst.copy_from_slice(&grad_out[src..src + k]);
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

// ---- gradient of the weight and bias ----------------------------------------------------------

/// Gradient of the weight: `dW (K x kvol*C) = sum over tiles grad_out_tile^T * patches`. Each
/// rayon task owns a partial `dW` over a contiguous run of tiles; the partials are summed at the
/// end (at most a few per thread, so the reduction is cheap next to the GEMMs).
///
/// # Shapes
/// `x (N, D, H, W, C)`, `grad_out (N, D', H', W', K)` -> `(K, kd, kh, kw, C)`.
pub fn bwd_weight(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv3d_bwd_weight {}", g.label()));
    // The direct kernel tiles input channels by 6: below that it would mostly multiply padding.
    if direct::available() && !is_pointwise(g) && g.c >= 6 {
        direct::bwd_weight(x, grad_out, g)
    } else {
        bwd_weight_gemm(x, grad_out, g)
    }
}

/// Gradient of the weight through im2col tiles and `gemm`.
fn bwd_weight_gemm(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (k, p) = (g.k, g.patch_len());
    let voxels = g.out_voxels();
    if voxels == 0 || k == 0 || p == 0 {
        return vec![0.0; k * p];
    }
    let tiles = voxels.div_ceil(TILE_ROWS);
    let parts = weight_grad_parts(tiles, k * p);
    let per_part = tiles.div_ceil(parts);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut dw = vec![0.0; k * p];
            let first = part * per_part;
            for t in first..(first + per_part).min(tiles) {
                let v0 = t * TILE_ROWS;
                let rows = TILE_ROWS.min(voxels - v0);
                // lhs = grad_out_tile^T: element (kk, r) at go[r * K + kk].
                let go = Mat { data: &grad_out[v0 * k..(v0 + rows) * k], rs: 1, cs: k };
                if is_pointwise(g) {
                    let xs = Mat { data: &x[v0 * p..(v0 + rows) * p], rs: p, cs: 1 };
                    matmul(k, p, rows, &mut dw, (p, 1), true, go, xs);
                    continue;
                }
                with_scratch(rows * p, |patch, _| {
                    gather_patches(x, g, v0, patch);
                    let a = Mat { data: patch, rs: p, cs: 1 };
                    matmul(k, p, rows, &mut dw, (p, 1), true, go, a);
                });
            }
            dw
        })
        .collect();
    let mut parts_iter = partials.into_iter();
    let mut dw = parts_iter.next().expect("at least one part");
    for part in parts_iter {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += b;
        }
    }
    dw
}

/// How many partial weight gradients of `len` floats to split `units` of work into: two per
/// thread for load balance, fewer when the partials would pass 64 MiB together (a 256-channel
/// 5x5x5 layer has 8 M weights).
fn weight_grad_parts(units: usize, len: usize) -> usize {
    const BUDGET_FLOATS: usize = 16 << 20;
    let by_memory = (BUDGET_FLOATS / len.max(1)).max(1);
    (rayon::current_num_threads() * 2).min(by_memory).clamp(1, units.max(1))
}

/// Gradient of a per-channel bias: `grad_out` summed over every voxel.
///
/// # Shapes
/// `grad_out (voxels, K)` -> `(K)`.
pub fn bwd_bias(grad_out: &[f32], k: usize) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv_bwd_bias K{k}"));
    if k == 0 {
        return Vec::new();
    }
    grad_out
        .par_chunks(TILE_ROWS * 64 * k)
        .map(|chunk| {
            let mut acc = vec![0.0f64; k];
            for row in chunk.chunks_exact(k) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += *v as f64;
                }
            }
            acc
        })
        .reduce(
            || vec![0.0; k],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        let g = ConvGeom::new(1, [56, 72, 32], 16, 16, [5, 5, 5], 1, 2).unwrap();
        assert_eq!(g.output, [56, 72, 32]);
        let g = ConvGeom::new(1, [7, 6, 5], 4, 8, [2, 2, 2], 2, 0).unwrap();
        assert_eq!(g.output, [3, 3, 2]);
        assert!(g.non_overlapping());
        assert!(ConvGeom::new(1, [3, 3, 3], 1, 1, [5, 5, 5], 1, 0).is_none());
        assert!(ConvGeom::new(1, [3, 3, 3], 1, 1, [1, 1, 1], 0, 0).is_none());
    }

    /// The stride-1 input gradient through the flipped forward convolution agrees with the
    /// gather path, including deep layers whose windows lie mostly in the padding.
    #[test]
    fn flipped_input_gradient_matches_gather() {
        let cases = [
            (1, [2, 2, 2], 32, 48, 5, 2),
            (1, [4, 4, 2], 16, 32, 5, 2),
            (2, [3, 5, 4], 16, 17, 3, 1),
            (1, [6, 5, 7], 20, 16, 5, 2),
        ];
        for (i, &(n, dims, c, k, ks, pad)) in cases.iter().enumerate() {
            let g = ConvGeom::new(n, dims, c, k, [ks; 3], 1, pad).unwrap();
            if flipped_geometry(&g).filter(direct_fwd_pays).is_none() {
                eprintln!("case {i}: no direct kernel on this CPU, skipped");
                continue;
            }
            let val = |j: usize, s: usize| ((j * 2_654_435_761 + s) % 1999) as f32 / 1000.0 - 1.0;
            let go: Vec<f32> = (0..g.out_voxels() * k).map(|j| val(j, 7)).collect();
            let w: Vec<f32> = (0..k * g.patch_len()).map(|j| val(j, 3)).collect();
            let mut want = vec![0.0; g.in_voxels() * c];
            bwd_input_gather(&go, &w, &g, &mut want);
            let got = bwd_input(&go, &w, &g);
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-3 + 1e-4 * b.abs(), "case {i} [{j}]: {a} vs {b}");
            }
        }
    }

    #[test]
    fn matmul_small() {
        // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut d = [0.0; 4];
        matmul(
            2,
            2,
            2,
            &mut d,
            (2, 1),
            false,
            Mat { data: &a, rs: 2, cs: 1 },
            Mat { data: &b, rs: 2, cs: 1 },
        );
        assert_eq!(d, [19.0, 22.0, 43.0, 50.0]);
    }
}
