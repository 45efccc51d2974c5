// pool.cu: 2x2x2 max pooling with stride 2 (floor: a trailing odd plane is dropped, as PyTorch's
// MaxPool3d(2) does), forward and backward-input.
//
// The backward recomputes each window's argmax from x instead of saving indices: the extra 8
// reads are cheaper than writing and reading an index tensor, and since windows do not overlap
// every input receives at most one gradient, so the scatter needs no atomics (the launcher zeroes
// gx for the elements no window selects). Ties keep the first maximum in (z, y, x) order and a NaN
// propagates, as in PyTorch.
#include "common.cuh"

__device__ __forceinline__ i64 window_argmax(const float* __restrict__ x, i64 o, int d, int h,
                                             int w, int c, float* best_out) {
    int od = d / 2, oh = h / 2, ow = w / 2;
    int ch = (int)(o % c);
    i64 t = o / c;
    int ox = (int)(t % ow);
    t /= ow;
    int oy = (int)(t % oh);
    t /= oh;
    int oz = (int)(t % od);
    i64 b = t / od;
    float best = -__int_as_float(0x7f800000);  // -inf
    i64 arg = -1;
    for (int dz = 0; dz < 2; ++dz)
        for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) {
                i64 idx = (((b * d + 2 * oz + dz) * h + 2 * oy + dy) * w + 2 * ox + dx) * c + ch;
                float v = x[idx];
                if (arg < 0 || v > best || v != v) {  // PyTorch's rule: first max, NaN wins
                    best = v;
                    arg = idx;
                }
            }
    *best_out = best;
    return arg;
}

// Thread per output element. n_out = N * (D/2) * (H/2) * (W/2) * C.
extern "C" __global__ void max_pool3d_k2_fwd_f32(i64 n_out, int d, int h, int w, int c,
                                                 const float* __restrict__ x,  // (N, D, H, W, C)
                                                 float* __restrict__ out) {    // (N, D/2, H/2, W/2, C)
    GRID_STRIDE(o, n_out) {
        float best;
        window_argmax(x, o, d, h, w, c, &best);
        out[o] = best;
    }
}

// gx[argmax of window o] = g[o]; gx zeroed by the launcher.
extern "C" __global__ void max_pool3d_k2_bwd_input_f32(i64 n_out, int d, int h, int w, int c,
                                                       const float* __restrict__ x,  // (N, D, H, W, C)
                                                       const float* __restrict__ g,  // like out
                                                       float* __restrict__ gx) {     // like x
    GRID_STRIDE(o, n_out) {
        float best;
        i64 arg = window_argmax(x, o, d, h, w, c, &best);
        gx[arg] = g[o];
    }
}
