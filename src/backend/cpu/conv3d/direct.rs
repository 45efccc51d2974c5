//! Direct (patch-free) convolution kernels for x86-64 with AVX-512F or AVX2 + FMA, chosen at run
//! time (`DNVS_CPU_NO_AVX512=1` forces AVX2).
//!
//! The im2col path spends as long copying patches (and `gemm` packing them again) as it does
//! multiplying when the channel count is small: a 16-channel 5x5x5 patch element feeds only 32
//! FLOPs. Here a register-blocked microkernel (`nj` rows x 16 output channels: 6 rows with
//! AVX2, 16, 8 or 4 with AVX-512) reads the zero-padded input in place instead:
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
}

/// Whether the direct kernels can run on this CPU.
pub fn available() -> bool {
    Isa::detect() != Isa::None
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

// ---- operands ---------------------------------------------------------------------------------

/// The input zero-padded by `g.padding` on every spatial side, `(N, Dp, Hp, Wp, C)`, plus slack
/// at the end for the microkernel's dropped tail reads.
struct Padded {
    data: Vec<f32>,
    dims: [usize; 3],
}

fn pad_input(x: &[f32], g: &ConvGeom) -> Padded {
    let [d, h, w] = g.input;
    let (p, c) = (g.padding, g.c);
    let dims = [d + 2 * p, h + 2 * p, w + 2 * p];
    let [dp, hp, wp] = dims;
    let slack = (MAX_NJ * g.stride + g.kernel[2] + MAX_NJ) * c + NK;
    let mut data = vec![0.0; g.n * dp * hp * wp * c + slack];
    let plane = hp * wp * c;
    if plane == 0 {
        return Padded { data, dims };
    }
    data[..g.n * dp * plane].par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
        let (b, z) = (i / dp, i % dp);
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

/// `(K, kvol*C)` weight -> `(K16 / 16, kvol*C, 16)`, zero-padded to `K16 = round_up(K, 16)`
/// output channels: each 16-channel block the microkernel reads is one contiguous slice.
fn weight_blocks(w: &[f32], k: usize, p: usize, k16: usize) -> Vec<f32> {
    let mut out = vec![0.0; p * k16];
    for kk in 0..k {
        let (blk, col) = (kk / NK, kk % NK);
        for q in 0..p {
            out[(blk * p + q) * NK + col] = w[kk * p + q];
        }
    }
    out
}

// ---- forward ----------------------------------------------------------------------------------

/// Forward convolution (any stride and padding). Same contract as [`super::fwd`].
pub fn fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let (k, c, s) = (g.k, g.c, g.stride);
    let [kd, kh, kw] = g.kernel;
    let [od, oh, ow] = g.output;
    let mut out = vec![0.0; g.out_voxels() * k];
    if out.is_empty() {
        return out;
    }
    let k16 = round_up(k, NK);
    let xp = pad_input(x, g);
    let [dp, hp, wp] = xp.dims;
    let p = g.patch_len();
    let wc = weight_blocks(w, k, p, k16);
    let run = kw * c;
    // Output rows go to rayon in groups; inside a group the 16-channel weight block is the
    // outer loop so that its slice (`kvol*C*16` floats) is reused from cache by every row.
    out.par_chunks_mut(FWD_GROUP_ROWS * ow * k).enumerate().for_each(|(grp, out_rows)| {
        let mut acc = [0.0f32; MAX_NJ * NK];
        let nj_tile = Isa::detect().nj(ow);
        let rows = out_rows.len() / (ow * k);
        for kb in (0..k).step_by(NK) {
            let nk = NK.min(k - kb);
            let bm = Operand { data: &wc, base: kb * p, js: 0, qs: NK };
            for r in 0..rows {
                let row = grp * FWD_GROUP_ROWS + r;
                let (b, z, y) = (row / (od * oh), (row / oh) % od, row % oh);
                // One run per (a, b) window row: `kw*C` consecutive floats of the padded input.
                let runs: Vec<(usize, usize)> = (0..kd * kh)
                    .map(|t| {
                        let (ta, tb) = (t / kh, t % kh);
                        let a = ((b * dp + z * s + ta) * hp + y * s + tb) * wp * c;
                        (a, t * run * NK)
                    })
                    .collect();
                let out_row = &mut out_rows[r * ow * k..][..ow * k];
                for x0 in (0..ow).step_by(nj_tile) {
                    acc.fill(0.0);
                    let a = Operand { data: &xp.data, base: x0 * s * c, js: s * c, qs: 1 };
                    micro(a, bm, &runs, run, nj_tile, &mut acc);
                    for j in 0..nj_tile.min(ow - x0) {
                        let dst = &mut out_row[(x0 + j) * k + kb..][..nk];
                        dst.copy_from_slice(&acc[j * NK..j * NK + nk]);
                        if let Some(bias) = bias {
                            dst.iter_mut().zip(&bias[kb..]).for_each(|(v, bb)| *v += bb);
                        }
                    }
                }
            }
        }
    });
    out
}

// ---- weight gradient --------------------------------------------------------------------------

/// Gradient of the weight (any stride and padding). Same contract as [`super::bwd_weight`].
pub fn bwd_weight(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
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
            (Isa::Avx2, 6) => unsafe { micro_avx2(pa, pb, runs, len, strides, acc) },
            _ => panic!("micro: no {nj}-row kernel for {isa:?}; check available()"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    panic!("micro: the direct kernels need x86-64; check available() {isa:?} {strides:?}");
}

/// The 6x16 AVX2 microkernel: twelve accumulators, two weight vectors and one broadcast live in
/// the sixteen ymm registers; per reduction step 2 loads + 6 broadcasts feed 12 FMAs.
///
/// # Safety
/// The CPU supports AVX2 and FMA; every address `a + ra + j*a_js + q*a_qs` (j < 6, q < len) and
/// `b + rb + q*b_qs + 0..16` is readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2(
    a: *const f32,
    b: *const f32,
    runs: &[(usize, usize)],
    len: usize,
    [a_js, a_qs, b_qs]: [usize; 3],
    acc: &mut [f32; MAX_NJ * NK],
) {
    use std::arch::x86_64::*;
    let o = acc.as_mut_ptr();
    let mut c = [[_mm256_setzero_ps(); 2]; 6];
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
            // Unrolled by hand (a macro would hide less): one broadcast per row.
            let x = _mm256_broadcast_ss(&*pa);
            c[0][0] = _mm256_fmadd_ps(x, b0, c[0][0]);
            c[0][1] = _mm256_fmadd_ps(x, b1, c[0][1]);
            let x = _mm256_broadcast_ss(&*pa.add(a_js));
            c[1][0] = _mm256_fmadd_ps(x, b0, c[1][0]);
            c[1][1] = _mm256_fmadd_ps(x, b1, c[1][1]);
            let x = _mm256_broadcast_ss(&*pa.add(2 * a_js));
            c[2][0] = _mm256_fmadd_ps(x, b0, c[2][0]);
            c[2][1] = _mm256_fmadd_ps(x, b1, c[2][1]);
            let x = _mm256_broadcast_ss(&*pa.add(3 * a_js));
            c[3][0] = _mm256_fmadd_ps(x, b0, c[3][0]);
            c[3][1] = _mm256_fmadd_ps(x, b1, c[3][1]);
            let x = _mm256_broadcast_ss(&*pa.add(4 * a_js));
            c[4][0] = _mm256_fmadd_ps(x, b0, c[4][0]);
            c[4][1] = _mm256_fmadd_ps(x, b1, c[4][1]);
            let x = _mm256_broadcast_ss(&*pa.add(5 * a_js));
            c[5][0] = _mm256_fmadd_ps(x, b0, c[5][0]);
            c[5][1] = _mm256_fmadd_ps(x, b1, c[5][1]);
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

    /// The direct kernels agree with the im2col + gemm path at odd sizes, strides and paddings.
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
        ];
        for (i, &(n, dims, c, k, ks, s, p)) in cases.iter().enumerate() {
            let g = ConvGeom::new(n, dims, c, k, ks, s, p).unwrap();
            let x = rand(g.in_voxels() * c, i as u32);
            let w = rand(k * g.patch_len(), 10 + i as u32);
            let bias = rand(k, 20);
            let go = rand(g.out_voxels() * k, 30 + i as u32);
            let what = format!("case {i}");
            close(
                &what,
                &fwd(&x, &w, Some(&bias), &g),
                &super::super::fwd_gemm(&x, &w, Some(&bias), &g),
            );
            close(&what, &bwd_weight(&x, &go, &g), &super::super::bwd_weight_gemm(&x, &go, &g));
        }
    }
}
