// implicit_gemm.cuh: the implicit-GEMM convolution body shared by conv3d.cu and
// conv_transpose3d.cu (see conv3d.cu for the why). Each .cu instantiates the modes it needs, so a
// module compiles only its own kernels.
#pragma once
#include "common.cuh"

// ---- modes -------------------------------------------------------------------------------------
// mode             rows (M)            cols (N)      reduction (R)      A gathered from       B
// CONV_FWD         out voxels          k             taps*c             x, forward taps       w[col][r]
// CONV_BWD_INPUT   x voxels            c             taps*k             gout, reversed taps   w[ko][tap][col]
// CONV_BWD_WEIGHT  k                   taps*c        out voxels         gout[r][row]          x, forward taps
// TCONV_FWD        out voxels          k             taps*c             x, reversed taps      w[col][r]
// TCONV_BWD_INPUT  x voxels            c             taps*k             gout, forward taps    w[ko][tap][col]
// TCONV_BWD_WEIGHT k (per tap: grid z) c             x voxels           gout, forward taps    x[r][col]
// TCONV_FWD_TAP    x voxels (per tap)  k             c                  x[m][r]               w[col][tap][r]
// CONV_BWD_INPUT_TAP out voxels (per tap) c          k                  gout[m][r]            w[r][tap][col]
// The two *_TAP modes are the plain GEMMs of kernel == stride, padding 0 (the 2x2x2 stride-2
// up and down convolutions): every output voxel then receives exactly one tap, so the reversed
// gather of TCONV_FWD / CONV_BWD_INPUT would multiply 7 zeros for each useful product. Instead
// grid z walks the taps and each tap is a dense GEMM whose rows scatter to voxel q * stride + tap.
// "forward taps": source position = q*stride - pad + tap; "reversed taps": source position
// = (q + pad - tap) / stride when that divides exactly.
#define CONV_FWD 0
#define CONV_BWD_INPUT 1
#define CONV_BWD_WEIGHT 2
#define TCONV_FWD 3
#define TCONV_BWD_INPUT 4
#define TCONV_BWD_WEIGHT 5
#define TCONV_FWD_TAP 6
#define CONV_BWD_INPUT_TAP 7

#define BM 64
#define BN 64
#define BK 32
#define THREADS 256
#define PAD_H 8  // bf16 row padding: 80-byte rows put the 8 fragment rows on distinct banks
#define PAD_F 4

// Reads src (N, SD, SH, SW, SC) at voxel (b, q) shifted by the kernel tap (tz, ty, tx), channel
// ch; 0 outside the volume or (reversed) where the stride does not divide.
__device__ __forceinline__ float gather_at(const float* __restrict__ src, int sd, int sh, int sw,
                                           int sc, int b, int qz, int qy, int qx, int tz, int ty,
                                           int tx, int ch, const ConvParams& p, bool reversed) {
    int z, y, x;
    if (!reversed) {
        z = qz * p.stride - p.pad + tz;
        y = qy * p.stride - p.pad + ty;
        x = qx * p.stride - p.pad + tx;
    } else {
        int az = qz + p.pad - tz, ay = qy + p.pad - ty, ax = qx + p.pad - tx;
        if (p.stride == 1) {
            // Every stride-1 layer (all of the V-Net's 5x5x5 ones) skips the six divisions.
            z = az;
            y = ay;
            x = ax;
        } else {
            if (az < 0 || ay < 0 || ax < 0) return 0.0f;
            if (az % p.stride || ay % p.stride || ax % p.stride) return 0.0f;
            z = az / p.stride;
            y = ay / p.stride;
            x = ax / p.stride;
        }
    }
    if (z < 0 || y < 0 || x < 0 || z >= sd || y >= sh || x >= sw) return 0.0f;
    return src[((((i64)b * sd + z) * sh + y) * sw + x) * sc + ch];
}

// gather_at with the flat tap index `tap` (z-major, as the weights store it).
__device__ __forceinline__ float gather(const float* __restrict__ src, int sd, int sh, int sw,
                                        int sc, int b, int qz, int qy, int qx, int tap, int ch,
                                        const ConvParams& p, bool reversed) {
    int tx = tap % p.kw;
    int t2 = tap / p.kw;
    return gather_at(src, sd, sh, sw, sc, b, qz, qy, qx, t2 / p.kh, t2 % p.kh, tx, ch, p,
                     reversed);
}

struct Voxel {
    int b, z, y, x;
};

__device__ __forceinline__ Voxel split_voxel(i64 m, int dd, int hh, int ww) {
    Voxel v;
    v.x = (int)(m % ww);
    i64 t = m / ww;
    v.y = (int)(t % hh);
    t /= hh;
    v.z = (int)(t % dd);
    v.b = (int)(t / dd);
    return v;
}

// GEMM extents of a mode.
__device__ __forceinline__ void gemm_dims(int mode, const ConvParams& p, i64& M, int& N, i64& R) {
    int taps = p.kd * p.kh * p.kw;
    i64 out_vox = (i64)p.n * p.od * p.oh * p.ow;
    i64 in_vox = (i64)p.n * p.d * p.h * p.w;
    switch (mode) {
        case CONV_FWD: case TCONV_FWD: M = out_vox; N = p.k; R = (i64)taps * p.c; break;
        case CONV_BWD_INPUT: case TCONV_BWD_INPUT: M = in_vox; N = p.c; R = (i64)taps * p.k; break;
        case CONV_BWD_WEIGHT: M = p.k; N = taps * p.c; R = out_vox; break;
        case TCONV_FWD_TAP: M = in_vox; N = p.k; R = p.c; break;
        case CONV_BWD_INPUT_TAP: M = out_vox; N = p.c; R = p.k; break;
        default: M = p.k; N = p.c; R = in_vox; break;  // TCONV_BWD_WEIGHT, one tap
    }
}

// Operand A at (row m, reduction r). `rv` is the decomposed row voxel (valid for the modes whose
// rows are voxels); `a` is the gathered tensor, `tap_z` the tap of TCONV_BWD_WEIGHT.
template <int MODE>
__device__ __forceinline__ float load_a(const float* __restrict__ a, const ConvParams& p, i64 m,
                                        const Voxel& rv, i64 r, int tap_z) {
    if (MODE == CONV_FWD || MODE == TCONV_FWD) {
        int tap = (int)(r / p.c), ch = (int)(r % p.c);
        return gather(a, p.d, p.h, p.w, p.c, rv.b, rv.z, rv.y, rv.x, tap, ch, p,
                      MODE == TCONV_FWD);
    } else if (MODE == CONV_BWD_INPUT || MODE == TCONV_BWD_INPUT) {
        int tap = (int)(r / p.k), ko = (int)(r % p.k);
        return gather(a, p.od, p.oh, p.ow, p.k, rv.b, rv.z, rv.y, rv.x, tap, ko, p,
                      MODE == CONV_BWD_INPUT);
    } else if (MODE == CONV_BWD_WEIGHT) {
        return a[r * p.k + m];  // gout (out voxels, k): row m is the output channel
    } else if (MODE == TCONV_FWD_TAP) {
        return a[m * p.c + r];  // x (x voxels, c)
    } else if (MODE == CONV_BWD_INPUT_TAP) {
        return a[m * p.k + r];  // gout (out voxels, k)
    } else {  // TCONV_BWD_WEIGHT: r is an x voxel, the tap moves it into gout
        Voxel v = split_voxel(r, p.d, p.h, p.w);
        return gather(a, p.od, p.oh, p.ow, p.k, v.b, v.z, v.y, v.x, tap_z, (int)m, p, false);
    }
}

// Operand B at (reduction r, col n).
template <int MODE>
__device__ __forceinline__ float load_b(const float* __restrict__ bsrc, const ConvParams& p, i64 r,
                                        int n, int tap_z) {
    if (MODE == CONV_FWD || MODE == TCONV_FWD) {
        int taps = p.kd * p.kh * p.kw;
        return bsrc[(i64)n * taps * p.c + r];  // w (k, taps*c)
    } else if (MODE == CONV_BWD_INPUT || MODE == TCONV_BWD_INPUT) {
        int taps = p.kd * p.kh * p.kw;
        int tap = (int)(r / p.k), ko = (int)(r % p.k);
        return bsrc[((i64)ko * taps + tap) * p.c + n];
    } else if (MODE == CONV_BWD_WEIGHT) {
        Voxel v = split_voxel(r, p.od, p.oh, p.ow);
        int tap = n / p.c, ch = n % p.c;
        return gather(bsrc, p.d, p.h, p.w, p.c, v.b, v.z, v.y, v.x, tap, ch, p, false);
    } else if (MODE == TCONV_FWD_TAP) {
        int taps = p.kd * p.kh * p.kw;
        return bsrc[((i64)n * taps + tap_z) * p.c + r];  // w[col][tap][r]
    } else if (MODE == CONV_BWD_INPUT_TAP) {
        int taps = p.kd * p.kh * p.kw;
        return bsrc[(r * taps + tap_z) * p.c + n];  // w[r][tap][col]
    } else {
        return bsrc[r * p.c + n];  // x (x voxels, c)
    }
}

// Where output (row m, col n) lives; `tap_z` for the per-tap modes, `rv` the row's voxel.
template <int MODE>
__device__ __forceinline__ i64 out_index(const ConvParams& p, i64 m, int n, int N, int tap_z,
                                         const Voxel& rv) {
    if (MODE == TCONV_BWD_WEIGHT) {
        int taps = p.kd * p.kh * p.kw;
        return (m * taps + tap_z) * p.c + n;
    }
    if (MODE == TCONV_FWD_TAP || MODE == CONV_BWD_INPUT_TAP) {
        // Row voxel q lands on q * stride + tap in the op's output (TCONV_FWD_TAP: out dims) or
        // input (CONV_BWD_INPUT_TAP: x dims); kernel == stride keeps it inside.
        int tx = tap_z % p.kw, ty = (tap_z / p.kw) % p.kh, tz = tap_z / (p.kw * p.kh);
        int z = rv.z * p.stride + tz, y = rv.y * p.stride + ty, x = rv.x * p.stride + tx;
        if (MODE == TCONV_FWD_TAP) return ((((i64)rv.b * p.od + z) * p.oh + y) * p.ow + x) * N + n;
        return ((((i64)rv.b * p.d + z) * p.h + y) * p.w + x) * N + n;
    }
    return m * N + n;
}

// ---- the implicit-GEMM kernel body ---------------------------------------------------------------

template <int MODE, bool BF16>
__device__ __forceinline__ void conv_gemm(const ConvParams& p,
                                          const float* __restrict__ a,   // gathered operand
                                          const float* __restrict__ b,   // second operand
                                          const float* __restrict__ bias,  // (N) or null
                                          float* __restrict__ out) {
    i64 M, R;
    int N;
    gemm_dims(MODE, p, M, N, R);
    const int tid = threadIdx.x;
    const i64 m0 = (i64)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;
    int split = p.split_k > 0 ? p.split_k : 1;
    int slice = blockIdx.z % split;
    int tap_z = blockIdx.z / split;

    // Reduction tiles of this slice.
    i64 tiles = (R + BK - 1) / BK;
    i64 per = (tiles + split - 1) / split;
    i64 t_begin = slice * per;
    i64 t_end = t_begin + per < tiles ? t_begin + per : tiles;

    __shared__ Voxel row_vox[BM];
    const bool rows_are_voxels = MODE == CONV_FWD || MODE == TCONV_FWD ||
                                 MODE == CONV_BWD_INPUT || MODE == TCONV_BWD_INPUT ||
                                 MODE == TCONV_FWD_TAP || MODE == CONV_BWD_INPUT_TAP;
    if (tid < BM) {
        i64 m = m0 + tid;
        Voxel v = {0, 0, 0, 0};
        if (rows_are_voxels && m < M) {
            if (MODE == CONV_FWD || MODE == TCONV_FWD || MODE == CONV_BWD_INPUT_TAP)
                v = split_voxel(m, p.od, p.oh, p.ow);
            else
                v = split_voxel(m, p.d, p.h, p.w);
        }
        row_vox[tid] = v;
    }

    // Staging: thread tid owns reduction column kk = tid % 32 and rows (tid / 32) + 8 i of A,
    // cols (tid / 32) + 8 i of B, i < 8.
    const int kk = tid & 31;
    const int rbase = tid >> 5;
    float ra[8], rb[8];

    __shared__ __align__(16) bf16_t sa_h[BF16 ? BM : 1][BK + PAD_H];
    __shared__ __align__(16) bf16_t sb_h[BF16 ? BN : 1][BK + PAD_H];
    __shared__ float sa_f[BF16 ? 1 : BK][BM + PAD_F];
    __shared__ float sb_f[BF16 ? 1 : BK][BN + PAD_F];
    __syncthreads();

    auto load_tile = [&](i64 t) {
        i64 r = t * BK + kk;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int row = rbase + 8 * i;
            i64 m = m0 + row;
            ra[i] = (m < M && r < R) ? load_a<MODE>(a, p, m, row_vox[row], r, tap_z) : 0.0f;
            int n = n0 + row;
            rb[i] = (n < N && r < R) ? load_b<MODE>(b, p, r, n, tap_z) : 0.0f;
        }
    };
    auto store_tile = [&]() {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int row = rbase + 8 * i;
            if constexpr (BF16) {
                sa_h[row][kk] = f32_to_bf16(ra[i]);
                sb_h[row][kk] = f32_to_bf16(rb[i]);
            } else {
                sa_f[kk][row] = ra[i];
                sb_f[kk][row] = rb[i];
            }
        }
    };

    // Accumulators. bf16: warp (wm, wn) in a 2 x 4 grid owns rows wm*32 + {0,16} + [0,16) and
    // cols wn*16 + {0,8} + [0,8); mma fragment element e of tile (i, j) sits at row
    // g + 8 (e / 2), col 2 t + (e % 2) with g = lane / 4, t = lane % 4.
    // fp32: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 i and cols tx + 16 j.
    float acc[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) acc[i] = 0.0f;
    const int warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int g = lane >> 2, tq = lane & 3;
    const int ty = tid >> 4, tx = tid & 15;

    // CONV_BWD_WEIGHT gathers B = x at (output voxel r, column n = (tap, channel)). A thread
    // stages the same 8 columns (n0 + rbase + 8 i) in every reduction tile, so their tap offsets
    // and channels are decomposed once here; per tile only the row's voxel is split. Without
    // this each element paid six integer divisions, and the weight gradients took 45 % of an
    // H200's V-Net step (2026-11-30 profile).
    int col_dz[8], col_dy[8], col_dx[8], col_ch[8];
    if constexpr (MODE == CONV_BWD_WEIGHT) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int n = n0 + rbase + 8 * i;
            int tap = n / p.c;
            int tx_ = tap % p.kw, t2 = tap / p.kw;
            col_dx[i] = tx_ - p.pad;
            col_dy[i] = t2 % p.kh - p.pad;
            col_dz[i] = t2 / p.kh - p.pad;
            col_ch[i] = n < N ? n % p.c : -1;
        }
    }
    auto load_tile_bwd_weight = [&](i64 t) {
        i64 r = t * BK + kk;
        bool live = r < R;
        Voxel v = split_voxel(live ? r : 0, p.od, p.oh, p.ow);
        int bz = v.z * p.stride, by = v.y * p.stride, bx = v.x * p.stride;
        i64 base = (i64)v.b * p.d;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int row = rbase + 8 * i;
            i64 m = m0 + row;
            ra[i] = (m < M && live) ? a[r * p.k + m] : 0.0f;
            int z = bz + col_dz[i], y = by + col_dy[i], x = bx + col_dx[i];
            bool in = live && col_ch[i] >= 0 && z >= 0 && y >= 0 && x >= 0 && z < p.d &&
                      y < p.h && x < p.w;
            rb[i] = in ? b[(((base + z) * p.h + y) * p.w + x) * p.c + col_ch[i]] : 0.0f;
        }
    };
    // The four gathered-row modes: the reduction index r = (tap, channel) is the same for the
    // 8 rows and 8 columns a thread stages, so it is decomposed once per tile, not per element.
    constexpr bool gathered_rows = MODE == CONV_FWD || MODE == TCONV_FWD ||
                                   MODE == CONV_BWD_INPUT || MODE == TCONV_BWD_INPUT;
    auto load_tile_gathered_rows = [&](i64 t) {
        i64 r = t * BK + kk;
        bool live = r < R;
        constexpr bool fwd = MODE == CONV_FWD || MODE == TCONV_FWD;
        constexpr bool reversed = MODE == TCONV_FWD || MODE == CONV_BWD_INPUT;
        int inner = fwd ? p.c : p.k;  // channels of the gathered tensor
        int rr = live ? (int)r : 0;
        int tap = rr / inner, ch = rr % inner;
        int tx_ = tap % p.kw, t2 = tap / p.kw;
        int ty_ = t2 % p.kh, tz_ = t2 / p.kh;
        int taps = p.kd * p.kh * p.kw;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int row = rbase + 8 * i;
            i64 m = m0 + row;
            const Voxel& v = row_vox[row];
            if (fwd)
                ra[i] = (m < M && live) ? gather_at(a, p.d, p.h, p.w, p.c, v.b, v.z, v.y, v.x,
                                                    tz_, ty_, tx_, ch, p, reversed)
                                        : 0.0f;
            else
                ra[i] = (m < M && live) ? gather_at(a, p.od, p.oh, p.ow, p.k, v.b, v.z, v.y, v.x,
                                                    tz_, ty_, tx_, ch, p, reversed)
                                        : 0.0f;
            int n = n0 + row;
            // fwd: w (k, taps*c) at [n][r]; bwd-input: w[ko = ch][tap][n]
            i64 bi = fwd ? (i64)n * taps * p.c + r : ((i64)ch * taps + tap) * p.c + n;
            rb[i] = (n < N && live) ? b[bi] : 0.0f;
        }
    };
    auto next_tile = [&](i64 t) {
        if constexpr (MODE == CONV_BWD_WEIGHT)
            load_tile_bwd_weight(t);
        else if constexpr (gathered_rows)
            load_tile_gathered_rows(t);
        else
            load_tile(t);
    };

    if (t_begin < t_end) next_tile(t_begin);
    for (i64 t = t_begin; t < t_end; ++t) {
        store_tile();
        __syncthreads();
        if (t + 1 < t_end) next_tile(t + 1);
        if constexpr (BF16) {
#pragma unroll
            for (int ks = 0; ks < BK; ks += 16) {
                unsigned af[2][4], bfr[2][2];
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    int r0 = wm * 32 + i * 16 + g;
                    af[i][0] = *(const unsigned*)&sa_h[r0][ks + 2 * tq];
                    af[i][1] = *(const unsigned*)&sa_h[r0 + 8][ks + 2 * tq];
                    af[i][2] = *(const unsigned*)&sa_h[r0][ks + 2 * tq + 8];
                    af[i][3] = *(const unsigned*)&sa_h[r0 + 8][ks + 2 * tq + 8];
                }
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    int c0 = wn * 16 + j * 8 + g;
                    bfr[j][0] = *(const unsigned*)&sb_h[c0][ks + 2 * tq];
                    bfr[j][1] = *(const unsigned*)&sb_h[c0][ks + 2 * tq + 8];
                }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int j = 0; j < 2; ++j) {
                        float* d = &acc[(i * 2 + j) * 4];
                        asm volatile(
                            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                            : "r"(af[i][0]), "r"(af[i][1]), "r"(af[i][2]), "r"(af[i][3]),
                              "r"(bfr[j][0]), "r"(bfr[j][1]));
                    }
#else
                __trap();  // bf16 mma.sync needs sm_80+; the launchers refuse bf16 below that
#endif
            }
        } else {
#pragma unroll 8
            for (int k = 0; k < BK; ++k) {
                float av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) av[i] = sa_f[k][ty + 16 * i];
#pragma unroll
                for (int j = 0; j < 4; ++j) bv[j] = sb_f[k][tx + 16 * j];
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i * 4 + j] = fmaf(av[i], bv[j], acc[i * 4 + j]);
            }
        }
        __syncthreads();
    }

    // Epilogue: bias (forward only, first slice only), store or accumulate.
    const bool accumulate = split > 1;
#pragma unroll
    for (int e = 0; e < 16; ++e) {
        int row, col;
        if constexpr (BF16) {
            int tile = e >> 2, i = tile >> 1, j = tile & 1, q = e & 3;
            row = wm * 32 + i * 16 + g + 8 * (q >> 1);
            col = wn * 16 + j * 8 + 2 * tq + (q & 1);
        } else {
            row = ty + 16 * (e >> 2);
            col = tx + 16 * (e & 3);
        }
        i64 m = m0 + row;
        int n = n0 + col;
        if (m >= M || n >= N) continue;
        float v = acc[e];
        if (bias != nullptr && slice == 0) v += bias[n];
        i64 o = out_index<MODE>(p, m, n, N, tap_z, row_vox[row]);
        if (accumulate)
            atomicAdd(out + o, v);
        else
            out[o] = v;
    }
}


#define CONV_ENTRY(name, mode, bf)                                                        \
    extern "C" __global__ void __launch_bounds__(THREADS)                                \
        name(ConvParams p, const float* __restrict__ a, const float* __restrict__ b,     \
             const float* __restrict__ bias, float* __restrict__ out) {                  \
        conv_gemm<mode, bf>(p, a, b, bias, out);                                         \
    }
