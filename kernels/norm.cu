// norm.cu: batch norm (batch statistics with the running-average update, or running statistics)
// and group norm, forward and backward, sharing one apply pass.
//
// Statistics are two-pass (sum, then the sum of squared deviations from that mean): V-Net
// activations have means far from zero next to their spread, where sum-of-squares minus
// mean-squared in f32 would cancel catastrophically. Each pass is a reduction with f32
// accumulation per thread and per block and one atomicAdd per block.
//
// Both norms end as y = x * scale + shift with a per-channel (batch norm) or per-(sample, channel)
// (group norm) affine, which norm_apply_fwd_f32 applies in one pass.
//
// Backward, with xhat = (x - mean) * invstd and gw = g * weight, over the elements of one
// statistic (a channel for batch norm, a (sample, group) for group norm), count n:
//   gx = invstd * (gw - sum(gw) / n - xhat * sum(gw * xhat) / n)
//   gweight[ch] = sum g * xhat, gbias[ch] = sum g.
// With running statistics the mean and invstd are constants: gx = g * weight * invstd.
#include "common.cuh"

// ---- batch norm ----------------------------------------------------------------------------------

// m2[ch] += sum over rows of (x - sum[ch] / rows)^2. Block (32, 8), grid (row blocks, ceil(C/32)).
extern "C" __global__ void batch_norm_fwd_var_f32(i64 rows, int c,
                                                  const float* __restrict__ x,    // (rows, C)
                                                  const float* __restrict__ sum,  // (C)
                                                  float* __restrict__ m2) {       // (C), zeroed
    int ch = blockIdx.y * CHANNEL_REDUCE_BLOCK_X + threadIdx.x;
    float acc = 0.0f;
    if (ch < c) {
        float mean = sum[ch] / (float)rows;
        for (i64 r = (i64)blockIdx.x * CHANNEL_REDUCE_BLOCK_Y + threadIdx.y; r < rows;
             r += (i64)gridDim.x * CHANNEL_REDUCE_BLOCK_Y) {
            float d = x[r * c + ch] - mean;
            acc += d * d;
        }
    }
    channel_reduce_commit(acc, ch, c, m2);
}

// Per channel: the statistics used (batch: sum / rows and m2 / rows; running: rmean, rvar), the
// affine (scale = weight * invstd, shift = bias - mean * scale), the saved mean and invstd for the
// backward, and with batch statistics and rmean_out non-null the running update
// r = (1 - momentum) r + momentum * stat, with the unbiased variance as PyTorch keeps it.
// Thread per channel.
extern "C" __global__ void batch_norm_fwd_affine_f32(
    int c, i64 rows, int use_running, float eps, float momentum,
    const float* __restrict__ sum,        // (C) batch sums (batch mode)
    const float* __restrict__ m2,         // (C) batch squared deviations (batch mode)
    const float* __restrict__ rmean,      // (C) running mean
    const float* __restrict__ rvar,       // (C) running variance
    const float* __restrict__ weight,     // (C) or null (1)
    const float* __restrict__ bias,       // (C) or null (0)
    float* __restrict__ scale,            // (C)
    float* __restrict__ shift,            // (C)
    float* __restrict__ mean_out,         // (C)
    float* __restrict__ invstd_out,       // (C)
    float* __restrict__ rmean_out,        // (C) or null
    float* __restrict__ rvar_out) {       // (C) or null
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float mean, var;
    if (use_running) {
        mean = rmean[ch];
        var = rvar[ch];
    } else {
        mean = sum[ch] / (float)rows;
        var = m2[ch] / (float)rows;
        if (rmean_out != nullptr) {
            float unbiased = rows > 1 ? m2[ch] / (float)(rows - 1) : var;
            rmean_out[ch] = (1.0f - momentum) * rmean[ch] + momentum * mean;
            rvar_out[ch] = (1.0f - momentum) * rvar[ch] + momentum * unbiased;
        }
    }
    float invstd = 1.0f / sqrtf(var + eps);
    float s = (weight ? weight[ch] : 1.0f) * invstd;
    scale[ch] = s;
    shift[ch] = (bias ? bias[ch] : 0.0f) - mean * s;
    mean_out[ch] = mean;
    invstd_out[ch] = invstd;
}

// gsum[ch] += sum g; gxhat[ch] += sum g * xhat. Block (32, 8), grid (row blocks, ceil(C/32)).
extern "C" __global__ void batch_norm_bwd_weight_f32(i64 rows, int c,
                                                     const float* __restrict__ x,       // (rows, C)
                                                     const float* __restrict__ g,       // (rows, C)
                                                     const float* __restrict__ mean,    // (C)
                                                     const float* __restrict__ invstd,  // (C)
                                                     float* __restrict__ gsum,          // (C), zeroed
                                                     float* __restrict__ gxhat) {       // (C), zeroed
    int ch = blockIdx.y * CHANNEL_REDUCE_BLOCK_X + threadIdx.x;
    float a = 0.0f, b = 0.0f;
    if (ch < c) {
        float mu = mean[ch], is = invstd[ch];
        for (i64 r = (i64)blockIdx.x * CHANNEL_REDUCE_BLOCK_Y + threadIdx.y; r < rows;
             r += (i64)gridDim.x * CHANNEL_REDUCE_BLOCK_Y) {
            float gv = g[r * c + ch];
            a += gv;
            b += gv * (x[r * c + ch] - mu) * is;
        }
    }
    channel_reduce_commit(a, ch, c, gsum);
    channel_reduce_commit(b, ch, c, gxhat);
}

// Thread per element. Batch statistics use gsum and gxhat from batch_norm_bwd_weight_f32.
extern "C" __global__ void batch_norm_bwd_input_f32(i64 n, int c, i64 rows, int use_running,
                                                    const float* __restrict__ x,       // (rows, C)
                                                    const float* __restrict__ g,       // (rows, C)
                                                    const float* __restrict__ weight,  // (C) or null
                                                    const float* __restrict__ mean,    // (C)
                                                    const float* __restrict__ invstd,  // (C)
                                                    const float* __restrict__ gsum,    // (C)
                                                    const float* __restrict__ gxhat,   // (C)
                                                    float* __restrict__ gx) {          // (rows, C)
    GRID_STRIDE(i, n) {
        int ch = (int)(i % c);
        float ws = (weight ? weight[ch] : 1.0f) * invstd[ch];
        if (use_running) {
            gx[i] = g[i] * ws;
        } else {
            float xhat = (x[i] - mean[ch]) * invstd[ch];
            float inv_rows = 1.0f / (float)rows;
            gx[i] = ws * (g[i] - gsum[ch] * inv_rows - xhat * gxhat[ch] * inv_rows);
        }
    }
}

// ---- group norm ----------------------------------------------------------------------------------
// x is (N, V, C) with V = D*H*W voxels per sample and C = groups * cg; statistic (s, grp) covers
// V * cg elements. Grid (blocks per statistic, N * groups), block 256.

__device__ __forceinline__ i64 group_elem(int s, int grp, i64 j, i64 vox, int c, int cg) {
    i64 v = j / cg;
    int ch = grp * cg + (int)(j % cg);
    return ((i64)s * vox + v) * c + ch;
}

// pass 0: sum[s, grp] += sum x. pass 1: m2[s, grp] += sum (x - sum / count)^2.
extern "C" __global__ void group_norm_fwd_stats_f32(i64 vox, int c, int groups, int pass,
                                                    const float* __restrict__ x,  // (N, V, C)
                                                    float* __restrict__ sum,      // (N, G)
                                                    float* __restrict__ m2) {     // (N, G)
    __shared__ float scratch[32];
    int stat = blockIdx.y;
    int s = stat / groups, grp = stat % groups, cg = c / groups;
    i64 count = vox * cg;
    float mean = pass ? sum[stat] / (float)count : 0.0f;
    float acc = 0.0f;
    for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < count;
         j += (i64)gridDim.x * blockDim.x) {
        float v = x[group_elem(s, grp, j, vox, c, cg)];
        if (pass) {
            float d = v - mean;
            acc += d * d;
        } else {
            acc += v;
        }
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) atomicAdd(pass ? m2 + stat : sum + stat, acc);
}

// Thread per (sample, channel): scale/shift (N, C) and, once per statistic, mean/invstd (N, G).
extern "C" __global__ void group_norm_fwd_affine_f32(int n, int c, int groups, i64 vox, float eps,
                                                     const float* __restrict__ sum,     // (N, G)
                                                     const float* __restrict__ m2,      // (N, G)
                                                     const float* __restrict__ weight,  // (C) or null
                                                     const float* __restrict__ bias,    // (C) or null
                                                     float* __restrict__ scale,         // (N, C)
                                                     float* __restrict__ shift,         // (N, C)
                                                     float* __restrict__ mean_out,      // (N, G)
                                                     float* __restrict__ invstd_out) {  // (N, G)
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * c) return;
    int s = i / c, ch = i % c, cg = c / groups, grp = ch / cg;
    int stat = s * groups + grp;
    float count = (float)(vox * cg);
    float mean = sum[stat] / count;
    float invstd = 1.0f / sqrtf(m2[stat] / count + eps);
    float sc = (weight ? weight[ch] : 1.0f) * invstd;
    scale[i] = sc;
    shift[i] = (bias ? bias[ch] : 0.0f) - mean * sc;
    if (ch % cg == 0) {
        mean_out[stat] = mean;
        invstd_out[stat] = invstd;
    }
}

// s1[s, grp] += sum g * w; s2[s, grp] += sum g * w * xhat. Grid as group_norm_fwd_stats_f32.
extern "C" __global__ void group_norm_bwd_input_stats_f32(i64 vox, int c, int groups,
                                                    const float* __restrict__ x,       // (N, V, C)
                                                    const float* __restrict__ g,       // (N, V, C)
                                                    const float* __restrict__ weight,  // (C) or null
                                                    const float* __restrict__ mean,    // (N, G)
                                                    const float* __restrict__ invstd,  // (N, G)
                                                    float* __restrict__ s1,            // (N, G), zeroed
                                                    float* __restrict__ s2) {          // (N, G), zeroed
    __shared__ float scratch[32];
    int stat = blockIdx.y;
    int s = stat / groups, grp = stat % groups, cg = c / groups;
    i64 count = vox * cg;
    float mu = mean[stat], is = invstd[stat];
    float a = 0.0f, b = 0.0f;
    for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < count;
         j += (i64)gridDim.x * blockDim.x) {
        i64 e = group_elem(s, grp, j, vox, c, cg);
        int ch = grp * cg + (int)(j % cg);
        float gw = g[e] * (weight ? weight[ch] : 1.0f);
        a += gw;
        b += gw * (x[e] - mu) * is;
    }
    a = block_sum(a, scratch);
    b = block_sum(b, scratch);
    if (threadIdx.x == 0) {
        atomicAdd(s1 + stat, a);
        atomicAdd(s2 + stat, b);
    }
}

// Thread per element.
extern "C" __global__ void group_norm_bwd_input_f32(i64 n, i64 vox, int c, int groups,
                                                    const float* __restrict__ x,       // (N, V, C)
                                                    const float* __restrict__ g,       // (N, V, C)
                                                    const float* __restrict__ weight,  // (C) or null
                                                    const float* __restrict__ mean,    // (N, G)
                                                    const float* __restrict__ invstd,  // (N, G)
                                                    const float* __restrict__ s1,      // (N, G)
                                                    const float* __restrict__ s2,      // (N, G)
                                                    float* __restrict__ gx) {          // (N, V, C)
    int cg = c / groups;
    float inv_count = 1.0f / (float)(vox * cg);
    GRID_STRIDE(i, n) {
        int ch = (int)(i % c);
        int s = (int)(i / c / vox);
        int stat = s * groups + ch / cg;
        float is = invstd[stat];
        float xhat = (x[i] - mean[stat]) * is;
        float gw = g[i] * (weight ? weight[ch] : 1.0f);
        gx[i] = is * (gw - s1[stat] * inv_count - xhat * s2[stat] * inv_count);
    }
}

// gweight[ch] += sum g * xhat; gbias[ch] += sum g. Block (32, 8), grid (row blocks, ceil(C/32)).
extern "C" __global__ void group_norm_bwd_weight_f32(i64 rows, i64 vox, int c, int groups,
                                                     const float* __restrict__ x,       // (rows, C)
                                                     const float* __restrict__ g,       // (rows, C)
                                                     const float* __restrict__ mean,    // (N, G)
                                                     const float* __restrict__ invstd,  // (N, G)
                                                     float* __restrict__ gweight,       // (C), zeroed
                                                     float* __restrict__ gbias) {       // (C), zeroed
    int ch = blockIdx.y * CHANNEL_REDUCE_BLOCK_X + threadIdx.x;
    float a = 0.0f, b = 0.0f;
    if (ch < c) {
        int grp = ch / (c / groups);
        for (i64 r = (i64)blockIdx.x * CHANNEL_REDUCE_BLOCK_Y + threadIdx.y; r < rows;
             r += (i64)gridDim.x * CHANNEL_REDUCE_BLOCK_Y) {
            int stat = (int)(r / vox) * groups + grp;
            float gv = g[r * c + ch];
            a += gv * (x[r * c + ch] - mean[stat]) * invstd[stat];
            b += gv;
        }
    }
    channel_reduce_commit(a, ch, c, gweight);
    channel_reduce_commit(b, ch, c, gbias);
}

// ---- apply ---------------------------------------------------------------------------------------

// out = x * scale + shift. scale/shift are (C) when vox == 0, else (N, C) with V = vox voxels per
// sample. Thread per element.
extern "C" __global__ void norm_apply_fwd_f32(i64 n, int c, i64 vox,
                                              const float* __restrict__ x,      // (N, V, C)
                                              const float* __restrict__ scale,  // (C) | (N, C)
                                              const float* __restrict__ shift,  // (C) | (N, C)
                                              float* __restrict__ out) {        // like x
    GRID_STRIDE(i, n) {
        int ch = (int)(i % c);
        i64 a = vox > 0 ? (i / c / vox) * c + ch : ch;
        out[i] = fmaf(x[i], scale[a], shift[a]);
    }
}
