// upsample.cu: nearest-neighbour upsampling to a given (OD, OH, OW), forward and backward-input.
//
// The source index follows PyTorch's 'nearest' exactly, float arithmetic included:
// src = min(floor(o * (in / out)), in - 1) with the scale in f32, so the CPU reference and
// PyTorch agree voxel for voxel even where the ratio is not an integer. The backward sums the
// gradients of every output that reads an input; several outputs share one input, so it
// scatters with atomicAdd into a gx the launcher zeroed.
#include "common.cuh"

__device__ __forceinline__ int nearest_src(int o, int in, int out) {
    float scale = (float)in / (float)out;
    int s = (int)floorf((float)o * scale);
    return s < in - 1 ? s : in - 1;
}

__device__ __forceinline__ i64 upsample_src(i64 o, int d, int h, int w, int c, int od, int oh,
                                            int ow) {
    int ch = (int)(o % c);
    i64 t = o / c;
    int x = (int)(t % ow);
    t /= ow;
    int y = (int)(t % oh);
    t /= oh;
    int z = (int)(t % od);
    i64 b = t / od;
    int sz = nearest_src(z, d, od), sy = nearest_src(y, h, oh), sx = nearest_src(x, w, ow);
    return (((b * d + sz) * h + sy) * w + sx) * c + ch;
}

// Thread per output element.
extern "C" __global__ void upsample_nearest_fwd_f32(i64 n_out, int d, int h, int w, int c, int od,
                                                    int oh, int ow,
                                                    const float* __restrict__ x,  // (N, D, H, W, C)
                                                    float* __restrict__ out) {    // (N, OD, OH, OW, C)
    GRID_STRIDE(o, n_out) out[o] = x[upsample_src(o, d, h, w, c, od, oh, ow)];
}

extern "C" __global__ void upsample_nearest_bwd_input_f32(i64 n_out, int d, int h, int w, int c,
                                                          int od, int oh, int ow,
                                                          const float* __restrict__ g,  // like out
                                                          float* __restrict__ gx) {     // like x
    GRID_STRIDE(o, n_out) atomicAdd(gx + upsample_src(o, d, h, w, c, od, oh, ow), g[o]);
}
