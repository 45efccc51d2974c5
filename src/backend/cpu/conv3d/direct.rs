//! Direct (patch-free) convolution kernels for x86-64 with AVX-512F or AVX2 + FMA, chosen at run
//! time (`DNVS_CPU_NO_AVX512=1` forces AVX2).
//!
//! The im2col path spends as long copying patches (and `gemm` packing them again) as it does
//! multiplying when the channel count is small: a 16-channel 5x5x5 patch element feeds only 32
//! FLOPs. Here a register-blocked microkernel (`nj` rows x 16 output channels: 6 or 4 rows
//! with AVX2, 16, 8 or 4 with AVX-512) reads the zero-padded input in place instead:
//!
//! - forward: `nj` consecutive output voxels x 16 output channels; the reduction walks the
//!   `kd*kh` window rows, each a contiguous `kw*C` run of the padded input (channels-last);
//! - weight gradient: `nj` consecutive input channels x 16 output channels of one tap; the
//!   reduction walks the output voxels of a group of output rows.
//!
//! Both are `acc[j][0..16] += sum over runs, q: a[run.a + j*a_js + q*a_qs] * b[run.b + q*b_qs ..]`,
//! so one kernel serves both. Output channels are padded to a multiple of 16 in the `b` operand
//! and row tails read (finite) neighbouring values whose results are dropped, which keeps the
//! kernel free of tail cases; the padded input carries slack at its end for those reads.

use std::sync::Mutex;

use rayon::prelude::*;

use super::ConvGeom;

/// Columns (output channels) of the microkernel's tile.
const NK: usize = 16;
/// Most rows (voxels or channels) a microkernel tile has on any ISA.
const MAX_NJ: usize = 16;
/// Output rows per forward task (they share the task's pass over the weight).
const FWD_GROUP_ROWS: usize = 4;
/// Output rows whose voxels one weight-gradient accumulation walks before storing its tile.
const GROUP_ROWS: usize = 16;

/// The instruction set the microkernel uses, detected once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    /// 6 rows x 16 columns in 12 ymm accumulators.
    Avx2,
    /// 16, 8 or 4 rows x 16 columns in zmm accumulators, one broadcast per FMA.
    Avx512,
    None,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
            *ISA.get_or_init(|| {
                if std::env::var_os("DNVS_CPU_NO_AVX512").is_none()
                    && is_x86_feature_detected!("avx512f")
                {
                    Isa::Avx512
                } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    Isa::Avx2
                } else {
                    Isa::None
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa::None
        }
    }

    /// Rows of the microkernel tile for an axis of `extent` rows: AVX-512 takes 16 (one weight
    /// line feeds 16 FMAs) unless that would leave much of the last tile empty, then 8 or 4.
    fn nj(self, extent: usize) -> usize {
        match self {
            Isa::Avx512 if extent.is_multiple_of(16) || extent > 40 => 16,
            // The V-Net's deepest level is 4 voxels wide.
            Isa::Avx512 if extent <= 4 => 4,
            Isa::Avx512 => 8,
            _ => 6,
        }
    }

    /// `(start, rows)` tiles covering an axis of `extent` rows (the last may hang over it). With
    /// AVX2, 6- and 4-row tiles are mixed so the V-Net's row lengths (4, 8, 16, 32, 64) waste
    /// no rows: 6-row tiles alone fill only 2/3 of the tiles of an 8- or 4-voxel row (the deep
    /// levels). A 4-row tile is counted 10 % dearer per row (fewer FMAs per load).
    fn tiles(self, extent: usize) -> Vec<(usize, usize)> {
        let sizes: Vec<usize> = match self {
            Isa::Avx2 => {
                let plan = |fours: usize| {
                    let sixes = extent.saturating_sub(4 * fours).div_ceil(6);
                    (60 * sixes + 44 * fours, sixes, fours)
                };
                let (_, sixes, fours) = (0..=2).map(plan).min().expect("three plans");
                std::iter::repeat_n(6, sixes).chain(std::iter::repeat_n(4, fours)).collect()
            }
            _ => {
                let nj = self.nj(extent);
                vec![nj; extent.div_ceil(nj)]
            }
        };
        let mut at = 0;
        sizes
            .into_iter()
            .filter_map(|nj| {
                let tile = (at < extent).then_some((at, nj));
                at += nj;
                tile
            })
            .collect()
    }
}

/// Whether the direct kernels can run on this CPU.
pub fn available() -> bool {
    Isa::detect() != Isa::None
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

// ---- reusable buffers -------------------------------------------------------------------------

/// Buffers kept for reuse between calls. A 256-channel 5x5x5 layer's relaid weight is 32 MB and
/// the padded input of a 64x64x32 level 10 MB: allocated fresh on every call they cost page
/// faults and zeroing comparable to the convolution itself on the small deep levels.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Most buffers the pool keeps (the largest ones): one convolution uses at most three at once.
const POOL_KEEP: usize = 4;

/// A buffer of `len` initialised floats with unspecified contents (callers write every element
/// they read), returned to [`POOL`] when dropped.
pub(super) struct Scratch(Vec<f32>, usize);

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<f32>>> {
    // The pool only holds plain buffers: one left by a panicking thread is still usable.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Scratch {
    pub(super) fn new(len: usize) -> Scratch {
        let mut pool = pool();
        // The smallest kept buffer that is long enough, else a new one.
        let best = (0..pool.len()).filter(|&i| pool[i].len() >= len).min_by_key(|&i| pool[i].len());
        match best {
            Some(i) => Scratch(pool.swap_remove(i), len),
            None => Scratch(vec![0.0; len], len),
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0[..self.1]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0[..self.1]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut pool = pool();
        pool.push(std::mem::take(&mut self.0));
        if pool.len() > POOL_KEEP {
            let smallest = (0..pool.len()).min_by_key(|&i| pool[i].len()).expect("not empty");
            pool.swap_remove(smallest);
        }
    }
}

// ---- operands ---------------------------------------------------------------------------------

/// The input zero-padded by `g.padding` on every spatial side, `(N, Dp, Hp, Wp, C)`, plus slack
/// at the end for the microkernel's dropped tail reads.
struct Padded {
    data: Scratch,
    dims: [usize; 3],
}

fn pad_input(x: &[f32], g: &ConvGeom) -> Padded {
    let [d, h, w] = g.input;
    let (p, c) = (g.padding, g.c);
    let dims = [d + 2 * p, h + 2 * p, w + 2 * p];
    let [dp, hp, wp] = dims;
    let slack = (MAX_NJ * g.stride + g.kernel[2] + MAX_NJ) * c + NK;
    let body = g.n * dp * hp * wp * c;
    let mut data = Scratch::new(body + slack);
    data[body..].fill(0.0);
    let plane = hp * wp * c;
    if plane == 0 {
        return Padded { data, dims };
    }
    data[..body].par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
        let (b, z) = (i / dp, i % dp);
        // A reused buffer holds old values: zero the plane (the padding) before the interior.
        dst.fill(0.0);
        if z < p || z >= p + d {
            return;
        }
        for y in 0..h {
            let src = ((b * d + z - p) * h + y) * w * c;
            let at = ((y + p) * wp + p) * c;
            dst[at..at + w * c].copy_from_slice(&x[src..src + w * c]);
        }
    });
    Padded { data, dims }
}

/// Reduction steps (`q`) per task of the weight relayouts: enough to amortise a rayon task,
/// small enough that a 256-channel layer splits into dozens of tasks.
const RELAYOUT_Q: usize = 2048;

/// `(K, kvol*C)` weight -> `(K16 / 16, kvol*C, 16)`, zero-padded to `K16 = round_up(K, 16)`
/// output channels: each 16-channel block the microkernel reads is one contiguous slice. A
/// 256-channel 5x5x5 layer has 8 M weights, so the relayout runs in parallel, 16 x `RELAYOUT_Q`
/// tiles at a time (16 read streams, one write stream).
fn weight_blocks(w: &[f32], k: usize, p: usize) -> Scratch {
    let k16 = round_up(k, NK);
    let mut out = Scratch::new(p * k16);
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(p * NK).enumerate().for_each(|(blk, ob)| {
        let kb = blk * NK;
        let nk = NK.min(k - kb);
        ob.par_chunks_mut(RELAYOUT_Q * NK).enumerate().for_each(|(qc, tile)| {
            let q0 = qc * RELAYOUT_Q;
            // 16 x 16 transposes: 64-byte reads from 16 weight rows, 64-byte writes.
            for (t, dst) in tile.chunks_mut(NK * NK).enumerate() {
                let qs = q0 + t * NK;
                let nq = dst.len() / NK;
                let mut sq = [[0.0f32; NK]; NK];
                for (col, row) in sq.iter_mut().enumerate().take(nk) {
                    row[..nq].copy_from_slice(&w[(kb + col) * p + qs..][..nq]);
                }
                for (qq, d) in dst.chunks_exact_mut(NK).enumerate() {
                    for (col, v) in d.iter_mut().enumerate() {
                        *v = sq[col][qq];
                    }
                }
            }
        });
    });
    out
}

/// The weight of the input gradient's forward convolution, already in block layout: `w (K,
/// taps, C)` flipped in space with its channel axes swapped, `(C16 / 16, kvol*K, 16)` with
/// element `[cb][(t', kk)][cc] = w[kk, kvol-1-t', cb*16 + cc]`. One parallel pass of 16-float
/// copies (`C` is the contiguous axis on both sides) instead of a scalar flip and a relayout.
pub fn flipped_blocks(w: &[f32], g: &ConvGeom) -> impl std::ops::Deref<Target = [f32]> {
    let (k, c, kvol) = (g.k, g.c, g.kvol());
    let c16 = round_up(c, NK);
    let mut out = Scratch::new(kvol * k * c16);
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(kvol * k * NK).enumerate().for_each(|(cb, ob)| {
        let c0 = cb * NK;
        let nc = NK.min(c - c0);
        ob.par_chunks_mut(k * NK).enumerate().for_each(|(tf, rows)| {
            let t = kvol - 1 - tf;
            for (kk, dst) in rows.chunks_exact_mut(NK).enumerate() {
                dst[..nc].copy_from_slice(&w[(kk * kvol + t) * c + c0..][..nc]);
                dst[nc..].fill(0.0);
            }
        });
    });
    out
}

/// Taps `lo..hi` of a `ksize` window, applied at input coordinates `start + tap - pad` for
/// `start` in `first..=last`, that land inside `0..size` for at least one start: the window
/// taps worth multiplying (the rest read only zero padding).
fn live_taps(first: usize, last: usize, ksize: usize, pad: usize, size: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(last).min(ksize);
    let hi = (pad + size).saturating_sub(first).min(ksize);
    (lo, hi.max(lo))
}

// ---- forward ----------------------------------------------------------------------------------

/// Forward convolution (any stride and padding). Same contract as [`super::fwd`].
pub fn fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    fwd_blocked(x, &weight_blocks(w, g.k, g.patch_len()), bias, g)
}

/// Forward convolution with the weight already in [`weight_blocks`] layout.
///
/// Work items are (16-channel output block, group of output rows), so a deep layer with few
/// voxels (256 channels at 4x4x2: 16 rows) still gives every thread work. Window rows and
/// columns that lie wholly in the zero padding are skipped: at 4x4x2 with a 5x5x5 kernel four
/// fifths of the taps would only multiply zeros.
pub fn fwd_blocked(x: &[f32], wc: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let (k, ow) = (g.k, g.output[2]);
    let voxels = g.out_voxels();
    if voxels * k == 0 {
        return vec![0.0; voxels * k];
    }
    let nblk = k.div_ceil(NK);
    let p = g.patch_len();
    assert_eq!(wc.len(), nblk * NK * p, "fwd_blocked: weight blocks");
    let xp = pad_input(x, g);
    let rows = voxels / ow;
    // Rows per task: up to FWD_GROUP_ROWS, fewer when that would leave threads idle.
    let want_tasks = 4 * rayon::current_num_threads();
    let gr = (rows * nblk / want_tasks).clamp(1, FWD_GROUP_ROWS);
    let run_block = |blk: usize, r0: usize, ob: &mut [f32]| {
        let mut acc = [0.0f32; MAX_NJ * NK];
        let mut runs = Vec::with_capacity(g.kernel[0] * g.kernel[1]);
        let kb = blk * NK;
        let nk = NK.min(k - kb);
        for (i, orow) in ob.chunks_exact_mut(ow * NK).enumerate() {
            fwd_row(&xp, wc, g, blk, r0 + i, &mut runs, &mut acc, orow);
            if let Some(bias) = bias {
                for v in orow.chunks_exact_mut(NK) {
                    v[..nk].iter_mut().zip(&bias[kb..]).for_each(|(o, b)| *o += b);
                }
            }
        }
    };
    if k == NK {
        // One block whose layout is the output's own.
        let mut out = vec![0.0; voxels * k];
        out.par_chunks_mut(gr * ow * NK)
            .enumerate()
            .for_each(|(grp, ob)| run_block(0, grp * gr, ob));
        return out;
    }
    // Every element is written by the tasks below.
    let mut blocked = Scratch::new(nblk * voxels * NK);
    blocked.par_chunks_mut(voxels * NK).enumerate().for_each(|(blk, ob)| {
        ob.par_chunks_mut(gr * ow * NK)
            .enumerate()
            .for_each(|(grp, rows)| run_block(blk, grp * gr, rows));
    });
    unblock(&blocked, k, voxels)
}

/// One output row of one 16-channel block: `orow (ow, 16)`.
#[allow(clippy::too_many_arguments)]
fn fwd_row(
    xp: &Padded,
    wc: &[f32],
    g: &ConvGeom,
    blk: usize,
    row: usize,
    runs: &mut Vec<(usize, usize)>,
    acc: &mut [f32; MAX_NJ * NK],
    orow: &mut [f32],
) {
    let (c, s, pad) = (g.c, g.stride, g.padding);
    let [kd, kh, kw] = g.kernel;
    let [d, h, w] = g.input;
    let [od, oh, ow] = g.output;
    let [dp, hp, wp] = xp.dims;
    let p = g.patch_len();
    let run = kw * c;
    let (b, z, y) = (row / (od * oh), (row / oh) % od, row % oh);
    // One run per live (a, b) window row: `kw*C` consecutive floats of the padded input.
    let (a_lo, a_hi) = live_taps(z * s, z * s, kd, pad, d);
    let (b_lo, b_hi) = live_taps(y * s, y * s, kh, pad, h);
    runs.clear();
    for ta in a_lo..a_hi {
        for tb in b_lo..b_hi {
            let a = ((b * dp + z * s + ta) * hp + y * s + tb) * wp * c;
            runs.push((a, (ta * kh + tb) * run * NK));
        }
    }
    for (x0, nj_tile) in Isa::detect().tiles(ow) {
        let x1 = (x0 + nj_tile).min(ow);
        acc.fill(0.0);
        let (e_lo, e_hi) = live_taps(x0 * s, (x1 - 1) * s, kw, pad, w);
        if e_hi > e_lo {
            let a = Operand { data: &xp.data, base: (x0 * s + e_lo) * c, js: s * c, qs: 1 };
            let bm = Operand { data: wc, base: (blk * p + e_lo * c) * NK, js: 0, qs: NK };
            micro(a, bm, runs, (e_hi - e_lo) * c, nj_tile, acc);
        }
        orow[x0 * NK..x1 * NK].copy_from_slice(&acc[..(x1 - x0) * NK]);
    }
}

/// `(K16 / 16, voxels, 16)` -> `(voxels, K)`.
fn unblock(blocked: &[f32], k: usize, voxels: usize) -> Vec<f32> {
    let mut out = vec![0.0; voxels * k];
    out.par_chunks_mut(256 * k).enumerate().for_each(|(i, chunk)| {
        let v0 = i * 256;
        for (v, o) in chunk.chunks_exact_mut(k).enumerate() {
            for (blk, dst) in o.chunks_mut(NK).enumerate() {
                let src = &blocked[(blk * voxels + v0 + v) * NK..];
                dst.copy_from_slice(&src[..dst.len()]);
            }
        }
    });
    out
}

// ---- forward with few output channels ---------------------------------------------------------

/// Voxels of one output row per few-channel tile (they share each weight load).
const FEW_NV: usize = 4;
/// Most output channels the few-channel forward takes (`FEW_NV * K` accumulators + `K` weight
/// vectors + one input vector fit the sixteen ymm registers up to 3).
pub const FEW_MAX_K: usize = 3;

/// Whether [`fwd_few`] serves `g`: 1 to [`FEW_MAX_K`] output channels (the V-Net's two-class
/// output convolution), input channels a multiple of 8 (whole ymm vectors), AVX2 + FMA.
pub fn few_available(g: &ConvGeom) -> bool {
    #[cfg(target_arch = "x86_64")]
    let isa = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let isa = false;
    isa && (1..=FEW_MAX_K).contains(&g.k) && g.c.is_multiple_of(8)
}

/// Forward convolution for few output channels (see [`few_available`]). The 16-channel
/// microkernel would multiply 14 of 16 lanes by padding at K = 2, and im2col copies every
/// receptive field (4000 floats per voxel for 5x5x5 x 32 channels) to use each once or twice.
/// Here each window row of a voxel is a contiguous `kw*C` run of the padded input, dotted with
/// the matching contiguous run of each output channel's weight: `FEW_NV` voxels x K channels of
/// 8-lane partial sums, reduced once per voxel at the end.
pub fn fwd_few(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let (k, c, s, pad, p) = (g.k, g.c, g.stride, g.padding, g.patch_len());
    let [kd, kh, kw] = g.kernel;
    let [d, h, wi] = g.input;
    let [od, oh, ow] = g.output;
    let mut out = vec![0.0; g.out_voxels() * k];
    if out.is_empty() || p == 0 {
        return out;
    }
    let xp = pad_input(x, g);
    let [dp, hp, wp] = xp.dims;
    out.par_chunks_mut(ow * k).enumerate().for_each(|(row, orow)| {
        let (b, z, y) = (row / (od * oh), (row / oh) % od, row % oh);
        let (a_lo, a_hi) = live_taps(z * s, z * s, kd, pad, d);
        let (b_lo, b_hi) = live_taps(y * s, y * s, kh, pad, h);
        let mut runs = Vec::with_capacity(kd * kh);
        for x0 in (0..ow).step_by(FEW_NV) {
            let nv = FEW_NV.min(ow - x0);
            let (e_lo, e_hi) = live_taps(x0 * s, (x0 + nv - 1) * s, kw, pad, wi);
            let mut sums = [[0.0f32; FEW_MAX_K]; FEW_NV];
            runs.clear();
            for ta in a_lo..a_hi {
                for tb in b_lo..b_hi {
                    let xa = (((b * dp + z * s + ta) * hp + y * s + tb) * wp + x0 * s + e_lo) * c;
                    runs.push((xa, ((ta * kh + tb) * kw + e_lo) * c));
                }
            }
            few_dots(&xp.data, w, &runs, (e_hi.saturating_sub(e_lo) * c, s * c, p, k), &mut sums);
            for (v, o) in orow[x0 * k..].chunks_exact_mut(k).take(nv).enumerate() {
                for (kk, ov) in o.iter_mut().enumerate() {
                    *ov = sums[v][kk] + bias.map_or(0.0, |bs| bs[kk]);
                }
            }
        }
    });
    out
}

/// `sums[v][kk] = sum over runs (ra, rb), q < len: x[ra + v*xs + q] * w[rb + kk*wk + q]` for
/// `v < FEW_NV`, `kk < k`, with every read bounds-checked first (a panic here is a bug in this
/// file, not a user error).
fn few_dots(
    x: &[f32],
    w: &[f32],
    runs: &[(usize, usize)],
    (len, xs, wk, k): (usize, usize, usize, usize),
    sums: &mut [[f32; FEW_MAX_K]; FEW_NV],
) {
    if len == 0 || runs.is_empty() {
        return;
    }
    assert!(len.is_multiple_of(8) && (1..=FEW_MAX_K).contains(&k), "few_dots: {len} {k}");
    let max_ra = runs.iter().map(|r| r.0).max().expect("runs is not empty");
    let max_rb = runs.iter().map(|r| r.1).max().expect("runs is not empty");
    assert!(max_ra + (FEW_NV - 1) * xs + len <= x.len(), "few_dots: x");
    assert!(max_rb + (k - 1) * wk + len <= w.len(), "few_dots: w");
    #[cfg(target_arch = "x86_64")]
    {
        let (px, pw, st) = (x.as_ptr(), w.as_ptr(), [len, xs, wk]);
        match k {
            // SAFETY (three arms): the asserts bound every read; few_available() checked AVX2
            // and FMA before any caller got here.
            1 => unsafe { few_avx2::<1>(px, pw, runs, st, sums) },
            2 => unsafe { few_avx2::<2>(px, pw, runs, st, sums) },
            _ => unsafe { few_avx2::<3>(px, pw, runs, st, sums) },
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    panic!("few_dots: needs x86-64; check few_available() ({xs} {wk} {sums:?})");
}

/// The AVX2 body of [`few_dots`] for `K` output channels: `FEW_NV * K` ymm accumulators, per
/// 8-float step `K` weight loads and `FEW_NV` input loads feed `FEW_NV * K` FMAs.
///
/// # Safety
/// The CPU supports AVX2 and FMA; every `x + ra + v*xs + q` and `w + rb + kk*wk + q` (v <
/// FEW_NV, kk < K, q < len) is readable; `len` is a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn few_avx2<const K: usize>(
    x: *const f32,
    w: *const f32,
    runs: &[(usize, usize)],
    [len, xs, wk]: [usize; 3],
    sums: &mut [[f32; FEW_MAX_K]; FEW_NV],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); K]; FEW_NV];
    for &(ra, rb) in runs {
        let (px, pw) = (x.add(ra), w.add(rb));
        for q in (0..len).step_by(8) {
            let mut wv = [_mm256_setzero_ps(); K];
            for (kk, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(pw.add(kk * wk + q));
            }
            for (v, av) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(px.add(v * xs + q));
                for (a, wvk) in av.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, *wvk, *a);
                }
            }
        }
    }
    for (sv, av) in sums.iter_mut().zip(&acc) {
        for (s, a) in sv.iter_mut().zip(av) {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            *s = lanes.iter().sum();
        }
    }
}

// ---- weight gradient --------------------------------------------------------------------------

/// Gradient of the weight (any stride and padding). Same contract as [`super::bwd_weight`].
pub fn bwd_weight(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
    if g.c.is_multiple_of(NK) {
        bwd_weight_kc(x, grad_out, g)
    } else {
        bwd_weight_ck(x, grad_out, g)
    }
}

/// Weight gradient for `C` a multiple of 16, tiled `nj` output channels x 16 input channels of
/// one tap, so each tile is `nj` contiguous 16-float runs of the `(K, kvol*C)` result: no
/// transpose at the end. Work items are (tile of output channels, share of the output voxels);
/// the voxel shares (only as many as keep both threads busy) sum at the end. For each tap only
/// the output voxels whose window tap lies inside the input are walked.
fn bwd_weight_kc(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (k, p, ow) = (g.k, g.patch_len(), g.output[2]);
    let voxels = g.out_voxels();
    if voxels == 0 || k == 0 || p == 0 {
        return vec![0.0; k * p];
    }
    let xp = pad_input(x, g);
    let nj = Isa::detect().nj(k);
    // The last channel tile reads up to nj - 1 floats past the last voxel: give it slack.
    let slack_go;
    let go: &[f32] = if k.is_multiple_of(nj) {
        grad_out
    } else {
        let mut v = Vec::with_capacity(grad_out.len() + MAX_NJ);
        v.extend_from_slice(grad_out);
        v.resize(grad_out.len() + MAX_NJ, 0.0);
        slack_go = v;
        &slack_go
    };
    let rows = voxels / ow;
    let groups = rows.div_ceil(GROUP_ROWS);
    let ktiles = k.div_ceil(nj);
    let threads = rayon::current_num_threads();
    let parts = if ktiles >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(ktiles).min(super::weight_grad_parts(groups, k * p)).max(1)
    };
    let per_part = groups.div_ceil(parts);
    let mut dws: Vec<Vec<f32>> = (0..parts).map(|_| vec![0.0; k * p]).collect();
    dws.par_iter_mut().enumerate().for_each(|(part, dw)| {
        let g0 = part * per_part;
        let g1 = ((part + 1) * per_part).min(groups);
        dw.par_chunks_mut(nj * p).enumerate().for_each(|(kt, dw_rows)| {
            let mut acc = [0.0f32; MAX_NJ * NK];
            let mut runs = Vec::with_capacity(GROUP_ROWS);
            for grp in g0..g1 {
                let r1 = ((grp + 1) * GROUP_ROWS).min(rows);
                let rows_span = grp * GROUP_ROWS..r1;
                for tap in 0..g.kvol() {
                    let span = rows_span.clone();
                    let a = (go, kt * nj);
                    bwd_weight_tap(&xp, a, g, span, tap, nj, &mut runs, &mut acc, dw_rows);
                }
            }
        });
    });
    let mut iter = dws.into_iter();
    let mut dw = iter.next().expect("at least one part");
    for part in iter {
        dw.par_chunks_mut(1 << 14)
            .zip(part.par_chunks(1 << 14))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
    }
    dw
}

/// Adds one tap's contribution over output rows `rows` to `dw_rows (nj, kvol*C)`, the rows of
/// output channels `k0 .. k0 + nj` (`go` = (grad_out with slack, k0)).
#[allow(clippy::too_many_arguments)]
fn bwd_weight_tap(
    xp: &Padded,
    (go, k0): (&[f32], usize),
    g: &ConvGeom,
    rows: std::ops::Range<usize>,
    tap: usize,
    nj: usize,
    runs: &mut Vec<(usize, usize)>,
    acc: &mut [f32; MAX_NJ * NK],
    dw_rows: &mut [f32],
) {
    let (k, c, s, pad, p) = (g.k, g.c, g.stride, g.padding, g.patch_len());
    let [_, kh, kw] = g.kernel;
    let [d, h, w] = g.input;
    let [od, oh, ow] = g.output;
    let [dp, hp, wp] = xp.dims;
    let (ta, tb, te) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
    // Output columns x whose tap lands inside the input: pad <= x*s + te < pad + w.
    let x_lo = pad.saturating_sub(te).div_ceil(s);
    let x_hi = if pad + w > te { ((pad + w - 1 - te) / s + 1).min(ow) } else { 0 };
    if x_lo >= x_hi {
        return;
    }
    runs.clear();
    for r in rows {
        let (b, z, y) = (r / (od * oh), (r / oh) % od, r % oh);
        let (zi, yi) = (z * s + ta, y * s + tb);
        if zi < pad || zi >= pad + d || yi < pad || yi >= pad + h {
            continue;
        }
        let xa = (((b * dp + zi) * hp + yi) * wp + x_lo * s + te) * c;
        runs.push(((r * ow + x_lo) * k, xa));
    }
    if runs.is_empty() {
        return;
    }
    let nrows = dw_rows.len() / p;
    let a = Operand { data: go, base: k0, js: 1, qs: k };
    for c0 in (0..c).step_by(NK) {
        let at = tap * c + c0;
        for j in 0..nrows {
            acc[j * NK..][..NK].copy_from_slice(&dw_rows[j * p + at..][..NK]);
        }
        let b = Operand { data: &xp.data, base: c0, js: 0, qs: s * c };
        micro(a, b, runs, x_hi - x_lo, nj, acc);
        for j in 0..nrows {
            dw_rows[j * p + at..][..NK].copy_from_slice(&acc[j * NK..][..NK]);
        }
    }
}

/// Weight gradient for any `C`, tiled `nj` input channels x 16 output channels (output channels
/// padded to 16), accumulated in `(kvol*C, K16)` and transposed at the end.
fn bwd_weight_ck(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (k, c, s, kvol) = (g.k, g.c, g.stride, g.kvol());
    let [kd, kh, kw] = g.kernel;
    let [od, oh, ow] = g.output;
    let p = g.patch_len();
    if g.out_voxels() == 0 || k == 0 || p == 0 {
        return vec![0.0; k * p];
    }
    let k16 = round_up(k, NK);
    let xp = pad_input(x, g);
    let [dp, hp, wp] = xp.dims;
    // grad_out with its channels padded to K16 (borrowed when already a multiple).
    let padded_go;
    let go: &[f32] = if k == k16 {
        grad_out
    } else {
        let mut v = vec![0.0; g.out_voxels() * k16];
        for (dst, src) in v.chunks_exact_mut(k16).zip(grad_out.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
        }
        padded_go = v;
        &padded_go
    };
    let rows = g.n * od * oh;
    let groups = rows.div_ceil(GROUP_ROWS);
    let parts = super::weight_grad_parts(groups, kvol * c * k16);
    let per_part = groups.div_ceil(parts);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            // dwt[(tap * C + c) * K16 + k]: the microkernel's tile is 6 channels x 16 outputs.
            let mut dwt = vec![0.0f32; kvol * c * k16];
            let mut acc = [0.0f32; MAX_NJ * NK];
            let nj_tile = Isa::detect().nj(c);
            for grp in part * per_part..((part + 1) * per_part).min(groups) {
                let r0 = grp * GROUP_ROWS;
                // One run per output row: its `ow` voxels, stride `s*C` in the padded input.
                let runs: Vec<(usize, usize)> = (r0..(r0 + GROUP_ROWS).min(rows))
                    .map(|r| {
                        let (b, z, y) = (r / (od * oh), (r / oh) % od, r % oh);
                        ((((b * dp + z * s) * hp + y * s) * wp) * c, r * ow * k16)
                    })
                    .collect();
                // The 16-channel block of grad_out is the outer loop: its slice of the group
                // (GROUP_ROWS * ow lines of 64 bytes) then stays in L1 across all taps.
                for kb in (0..k16).step_by(NK) {
                    let bm = Operand { data: go, base: kb, js: 0, qs: k16 };
                    for tap in 0..kvol {
                        let (ta, tb, te) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
                        debug_assert!(ta < kd);
                        let tap_off = ((ta * hp + tb) * wp + te) * c;
                        for c0 in (0..c).step_by(nj_tile) {
                            let nj = nj_tile.min(c - c0);
                            let tile = |j: usize| (tap * c + c0 + j) * k16 + kb;
                            for j in 0..nj {
                                acc[j * NK..][..NK].copy_from_slice(&dwt[tile(j)..][..NK]);
                            }
                            let a =
                                Operand { data: &xp.data, base: tap_off + c0, js: 1, qs: s * c };
                            micro(a, bm, &runs, ow, nj_tile, &mut acc);
                            for j in 0..nj {
                                dwt[tile(j)..][..NK].copy_from_slice(&acc[j * NK..][..NK]);
                            }
                        }
                    }
                }
            }
            dwt
        })
        .collect();
    let mut iter = partials.into_iter();
    let mut dwt = iter.next().expect("at least one part");
    for part in iter {
        dwt.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    // (kvol*C, K16) -> (K, kvol*C).
    let mut dw = vec![0.0; k * p];
    for q in 0..p {
        for kk in 0..k {
            dw[kk * p + q] = dwt[q * k16 + kk];
        }
    }
    dw
}

// ---- microkernel ------------------------------------------------------------------------------

/// One operand of the microkernel: element `(j, q)` of run `(ra, rb)` is
/// `data[base + r + j*js + q*qs]`, with `r` the run's offset for this operand.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    base: usize,
    js: usize,
    qs: usize,
}

/// `acc[j][0..16] += sum over runs (ra, rb), q < len: a(ra; j, q) * b(rb; q, 0..16)`, with the
/// bounds of every read checked first (a panic here is a bug in this file, not a user error).
fn micro(
    a: Operand,
    b: Operand,
    runs: &[(usize, usize)],
    len: usize,
    nj: usize,
    acc: &mut [f32; MAX_NJ * NK],
) {
    if len == 0 || runs.is_empty() {
        return;
    }
    let isa = Isa::detect();
    let max_ra = runs.iter().map(|r| r.0).max().expect("runs is not empty");
    let max_rb = runs.iter().map(|r| r.1).max().expect("runs is not empty");
    let a_last = a.base + max_ra + (nj - 1) * a.js + (len - 1) * a.qs;
    assert!(a_last < a.data.len(), "micro: a");
    assert!(b.base + max_rb + (len - 1) * b.qs + NK <= b.data.len(), "micro: b");
    let strides = [a.js, a.qs, b.qs];
    #[cfg(target_arch = "x86_64")]
    {
        let (pa, pb) = (a.data[a.base..].as_ptr(), b.data[b.base..].as_ptr());
        match (isa, nj) {
            // SAFETY (three arms): the asserts bound every read of an `nj`-row tile; the ISA was
            // detected at run time.
            (Isa::Avx512, 16) => unsafe { micro_avx512::<16>(pa, pb, runs, len, strides, acc) },
            (Isa::Avx512, 8) => unsafe { micro_avx512::<8>(pa, pb, runs, len, strides, acc) },
            (Isa::Avx512, 4) => unsafe { micro_avx512::<4>(pa, pb, runs, len, strides, acc) },
            (Isa::Avx2, 6) => unsafe { micro_avx2::<6>(pa, pb, runs, len, strides, acc) },
            (Isa::Avx2, 4) => unsafe { micro_avx2::<4>(pa, pb, runs, len, strides, acc) },
            _ => panic!("micro: no {nj}-row kernel for {isa:?}; check available()"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    panic!("micro: the direct kernels need x86-64; check available() {isa:?} {strides:?}");
}

/// The `NJ`x16 AVX2 microkernel (`NJ` = 6 or 4): `2 * NJ` accumulators, two weight vectors and
/// one broadcast live in the sixteen ymm registers; per reduction step 2 loads + `NJ`
/// broadcasts feed `2 * NJ` FMAs. The loops over `NJ` unroll (a const bound), so the
/// accumulators stay in registers as in a hand-unrolled kernel.
///
/// # Safety
/// The CPU supports AVX2 and FMA; every address `a + ra + j*a_js + q*a_qs` (j < NJ, q < len)
/// and `b + rb + q*b_qs + 0..16` is readable; `NJ * 16 <= acc.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2<const NJ: usize>(
    a: *const f32,
    b: *const f32,
    runs: &[(usize, usize)],
    len: usize,
    [a_js, a_qs, b_qs]: [usize; 3],
    acc: &mut [f32; MAX_NJ * NK],
) {
    use std::arch::x86_64::*;
    let o = acc.as_mut_ptr();
    let mut c = [[_mm256_setzero_ps(); 2]; NJ];
    for (j, cj) in c.iter_mut().enumerate() {
        cj[0] = _mm256_loadu_ps(o.add(j * NK));
        cj[1] = _mm256_loadu_ps(o.add(j * NK + 8));
    }
    for &(ra, rb) in runs {
        let mut pa = a.add(ra);
        let mut pb = b.add(rb);
        for _ in 0..len {
            let b0 = _mm256_loadu_ps(pb);
            let b1 = _mm256_loadu_ps(pb.add(8));
            for (j, cj) in c.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*pa.add(j * a_js));
                cj[0] = _mm256_fmadd_ps(x, b0, cj[0]);
                cj[1] = _mm256_fmadd_ps(x, b1, cj[1]);
            }
            pa = pa.add(a_qs);
            pb = pb.add(b_qs);
        }
    }
    for (j, cj) in c.iter().enumerate() {
        _mm256_storeu_ps(o.add(j * NK), cj[0]);
        _mm256_storeu_ps(o.add(j * NK + 8), cj[1]);
    }
}

/// The `NJ`x16 AVX-512 microkernel: `NJ` zmm accumulators (the loops over them unroll), one
/// weight vector, one broadcast per FMA.
///
/// # Safety
/// The CPU supports AVX-512F; every address `a + ra + j*a_js + q*a_qs` (j < NJ, q < len) and
/// `b + rb + q*b_qs + 0..16` is readable; `NJ * 16 <= acc.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_avx512<const NJ: usize>(
    a: *const f32,
    b: *const f32,
    runs: &[(usize, usize)],
    len: usize,
    [a_js, a_qs, b_qs]: [usize; 3],
    acc: &mut [f32; MAX_NJ * NK],
) {
    use std::arch::x86_64::*;
    let o = acc.as_mut_ptr();
    let mut c = [_mm512_setzero_ps(); NJ];
    for (j, cj) in c.iter_mut().enumerate() {
        *cj = _mm512_loadu_ps(o.add(j * NK));
    }
    for &(ra, rb) in runs {
        let mut pa = a.add(ra);
        let mut pb = b.add(rb);
        for _ in 0..len {
            let w = _mm512_loadu_ps(pb);
            for (j, cj) in c.iter_mut().enumerate() {
                *cj = _mm512_fmadd_ps(_mm512_set1_ps(*pa.add(j * a_js)), w, *cj);
            }
            pa = pa.add(a_qs);
            pb = pb.add(b_qs);
        }
    }
    for (j, cj) in c.iter().enumerate() {
        _mm512_storeu_ps(o.add(j * NK), *cj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(97));
                ((v >> 8) % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 + 1e-4 * y.abs(), "{what}[{i}]: {x} vs {y}");
        }
    }

    /// The direct kernels (and the few-channel forward, where it applies) agree with the im2col
    /// + gemm path at odd sizes, strides and paddings.
    #[test]
    fn direct_matches_gemm_path() {
        if !available() {
            eprintln!("skipping: no AVX2+FMA");
            return;
        }
        let cases = [
            (2, [3, 5, 7], 3, 5, [3, 3, 3], 1, 1),
            (1, [6, 4, 9], 16, 17, [5, 3, 2], 1, 2),
            (1, [7, 6, 5], 7, 32, [3, 3, 3], 2, 1),
            (1, [1, 1, 13], 2, 3, [1, 1, 5], 1, 2),
            // 16-voxel rows and 16+ channels: the 16-row AVX-512 tile on both axes.
            (1, [2, 3, 16], 24, 16, [3, 3, 3], 1, 1),
            (1, [2, 2, 45], 16, 20, [1, 3, 3], 1, 1),
            // 4-voxel rows (4-row tile) and 2-voxel rows.
            (1, [3, 2, 4], 8, 16, [3, 3, 3], 1, 1),
            (2, [2, 3, 2], 4, 16, [3, 3, 3], 1, 1),
            // Deep, small volumes (most taps in the padding), 16-multiple channels, stride 2.
            (1, [2, 2, 2], 32, 48, [5, 5, 5], 1, 2),
            (1, [4, 4, 2], 32, 32, [5, 5, 5], 1, 2),
            (1, [5, 7, 6], 32, 20, [3, 3, 3], 2, 1),
            (2, [4, 3, 5], 16, 2, [5, 5, 5], 1, 2),
            // Few output channels (`fwd_few`, K = 1..3): rows shorter and longer than its
            // 4-voxel tile, stride 2, windows mostly in the padding.
            (1, [5, 6, 9], 32, 2, [5, 5, 5], 1, 2),
            (2, [3, 4, 3], 8, 1, [3, 3, 3], 1, 1),
            (1, [7, 5, 11], 16, 3, [3, 3, 3], 2, 1),
            (1, [2, 2, 2], 32, 2, [5, 5, 5], 1, 2),
            (1, [4, 3, 6], 24, 2, [1, 3, 5], 1, 0),
        ];
        for (i, &(n, dims, c, k, ks, s, p)) in cases.iter().enumerate() {
            let g = ConvGeom::new(n, dims, c, k, ks, s, p).unwrap();
            let x = rand(g.in_voxels() * c, i as u32);
            let w = rand(k * g.patch_len(), 10 + i as u32);
            let bias = rand(k, 20);
            let go = rand(g.out_voxels() * k, 30 + i as u32);
            let what = format!("case {i}");
            let want = super::super::fwd_gemm(&x, &w, Some(&bias), &g);
            close(&what, &fwd(&x, &w, Some(&bias), &g), &want);
            if few_available(&g) {
                close(&format!("few {what}"), &fwd_few(&x, &w, Some(&bias), &g), &want);
            }
            close(&what, &bwd_weight(&x, &go, &g), &super::super::bwd_weight_gemm(&x, &go, &g));
        }
    }
}
