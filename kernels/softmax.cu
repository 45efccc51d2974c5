// softmax.cu: softmax and log-softmax over the channel axis of (N, D, H, W, C), forward and
// backward-input.
//
// The networks end with C = 2 classes, so a thread owns one voxel and loops over its C contiguous
// channels (max, sum of exponentials, write): no cross-thread reduction is worth its sync for so
// few values. Max-subtraction keeps exp from overflowing.
#include "common.cuh"

// LOG = 0: out = softmax(x); LOG = 1: out = log_softmax(x).
template <bool LOG>
__device__ __forceinline__ void softmax_row(const float* __restrict__ x, float* __restrict__ out,
                                            int c) {
    float mx = x[0];
    for (int ch = 1; ch < c; ++ch) mx = fmaxf(mx, x[ch]);
    float s = 0.0f;
    for (int ch = 0; ch < c; ++ch) s += expf(x[ch] - mx);
    if (LOG) {
        float ls = logf(s);
        for (int ch = 0; ch < c; ++ch) out[ch] = x[ch] - mx - ls;
    } else {
        float inv = 1.0f / s;
        for (int ch = 0; ch < c; ++ch) out[ch] = expf(x[ch] - mx) * inv;
    }
}

extern "C" __global__ void softmax_channels_fwd_f32(i64 voxels, int c,
                                                    const float* __restrict__ x,  // (V, C)
                                                    float* __restrict__ out) {    // (V, C)
    GRID_STRIDE(v, voxels) softmax_row<false>(x + v * c, out + v * c, c);
}

extern "C" __global__ void log_softmax_channels_fwd_f32(i64 voxels, int c,
                                                        const float* __restrict__ x,  // (V, C)
                                                        float* __restrict__ out) {    // (V, C)
    GRID_STRIDE(v, voxels) softmax_row<true>(x + v * c, out + v * c, c);
}

// From the output y = softmax(x): gx = y (g - sum_ch g y).
extern "C" __global__ void softmax_channels_bwd_input_f32(i64 voxels, int c,
                                                          const float* __restrict__ y,  // (V, C)
                                                          const float* __restrict__ g,  // (V, C)
                                                          float* __restrict__ gx) {     // (V, C)
    GRID_STRIDE(v, voxels) {
        const float* yr = y + v * c;
        const float* gr = g + v * c;
        float dot = 0.0f;
        for (int ch = 0; ch < c; ++ch) dot += gr[ch] * yr[ch];
        for (int ch = 0; ch < c; ++ch) gx[v * c + ch] = yr[ch] * (gr[ch] - dot);
    }
}

// From the output y = log_softmax(x): gx = g - exp(y) sum_ch g.
extern "C" __global__ void log_softmax_channels_bwd_input_f32(i64 voxels, int c,
                                                              const float* __restrict__ y,  // (V, C)
                                                              const float* __restrict__ g,  // (V, C)
                                                              float* __restrict__ gx) {     // (V, C)
    GRID_STRIDE(v, voxels) {
        const float* yr = y + v * c;
        const float* gr = g + v * c;
        float s = 0.0f;
        for (int ch = 0; ch < c; ++ch) s += gr[ch];
        for (int ch = 0; ch < c; ++ch) gx[v * c + ch] = gr[ch] - expf(yr[ch]) * s;
    }
}
