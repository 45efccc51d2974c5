// edt.cu: exact Euclidean distance transform with anisotropic spacing, and the feature transform
// (index of the nearest seed), the GPU twin of src/geometry/edt.rs.
//
// Same separable algorithm as the CPU, pass for pass, so the two agree to the last bit on the
// squared distances:
//   1. rows along W (contiguous): two sweeps per row give the nearest seed in the row;
//   2. lines along H, then along D: Felzenszwalb-Huttenlocher lower envelope of the parabolas
//      (x - q s)^2 + f[q], intersections in f64, one thread per line.
// A thread per line is the simplest exact scheme: neighbouring threads own neighbouring k, so every
// load of a strided line is coalesced across the warp without a transpose. The envelope's
// scratch (vertex indices v, boundaries z) lives in global memory laid out [q][line], again so a
// warp touches consecutive addresses. Arithmetic that the CPU does as separate multiply and add
// goes through __dmul_rn/__dadd_rn so that --fmad=true cannot fuse it into a differently rounded
// FMA.
#include "common.cuh"

#define EDT_NO_FEATURE 0xffffffffu

// ---- pass 1: rows along W -----------------------------------------------------------------------

// Thread per row. rows = D * H. dist gets squared distances (+inf without a seed in the row).
extern "C" __global__ void edt_fwd_rows_f32(i64 rows, int w, float s, int ft,
                                            const unsigned char* __restrict__ seeds,  // (D, H, W)
                                            float* __restrict__ dist,                 // (D, H, W)
                                            unsigned int* __restrict__ feat)          // (D, H, W) or unused
{
    GRID_STRIDE(r, rows) {
        const unsigned char* seed = seeds + r * w;
        float* row = dist + r * w;
        unsigned int* frow = feat + (ft ? r * w : 0);
        int last = -1;
        for (int k = 0; k < w; ++k) {
            if (seed[k]) last = k;
            float v = __int_as_float(0x7f800000);  // +inf
            if (last >= 0) {
                float x = __fmul_rn((float)(k - last), s);
                v = __fmul_rn(x, x);
                if (ft) frow[k] = (unsigned int)(r * w + last);
            } else if (ft) {
                frow[k] = EDT_NO_FEATURE;
            }
            row[k] = v;
        }
        last = -1;
        for (int k = w - 1; k >= 0; --k) {
            if (seed[k]) last = k;
            if (last >= 0) {
                float x = __fmul_rn((float)(last - k), s);
                float x2 = __fmul_rn(x, x);
                if (x2 < row[k]) {
                    row[k] = x2;
                    if (ft) frow[k] = (unsigned int)(r * w + last);
                }
            }
        }
    }
}

// ---- passes 2 and 3: lower envelopes along H or D -----------------------------------------------

// Thread per line. Line L starts at (L / inner) * outer_stride + L % inner and steps by `stride`
// for n elements: along H, inner = W, outer_stride = H * W, stride = W; along D, inner = W,
// outer_stride = W, stride = H * W. A line without a finite value is copied unchanged (the CPU
// leaves it in place).
extern "C" __global__ void edt_fwd_lines_f32(i64 lines, int n, int inner, i64 outer_stride,
                                             i64 stride, double s, int ft,
                                             const float* __restrict__ f_in,         // (D, H, W)
                                             const unsigned int* __restrict__ fi_in,  // (D, H, W)
                                             float* __restrict__ f_out,               // (D, H, W)
                                             unsigned int* __restrict__ fi_out,       // (D, H, W)
                                             int* __restrict__ v,      // (n, lines) scratch
                                             double* __restrict__ z)   // (n + 1, lines) scratch
{
    GRID_STRIDE(L, lines) {
        i64 base = (L / inner) * outer_stride + (L % inner);
        int first = -1;
        for (int q = 0; q < n; ++q) {
            if (isfinite(f_in[base + q * stride])) {
                first = q;
                break;
            }
        }
        if (first < 0) {
            for (int q = 0; q < n; ++q) {
                f_out[base + q * stride] = f_in[base + q * stride];
                if (ft) fi_out[base + q * stride] = fi_in[base + q * stride];
            }
            continue;
        }
        int k = 0;
        v[L] = first;
        z[L] = -__longlong_as_double(0x7ff0000000000000ll);
        z[lines + L] = __longlong_as_double(0x7ff0000000000000ll);
        for (int q = first + 1; q < n; ++q) {
            double fq = (double)f_in[base + q * stride];
            if (!isfinite(fq)) continue;
            double pq = __dmul_rn((double)q, s);
            double hq = __dadd_rn(fq, __dmul_rn(pq, pq));
            while (true) {
                int vk = v[k * lines + L];
                double pv = __dmul_rn((double)vk, s);
                double fv = (double)f_in[base + vk * stride];
                double sect = (hq - __dadd_rn(fv, __dmul_rn(pv, pv))) / (2.0 * (pq - pv));
                // z[0] is -inf, so this stops at k = 0 at the latest.
                if (sect <= z[k * lines + L]) {
                    k -= 1;
                    continue;
                }
                k += 1;
                v[k * lines + L] = q;
                z[k * lines + L] = sect;
                z[(i64)(k + 1) * lines + L] = __longlong_as_double(0x7ff0000000000000ll);
                break;
            }
        }
        k = 0;
        for (int p = 0; p < n; ++p) {
            double x = __dmul_rn((double)p, s);
            while (z[(i64)(k + 1) * lines + L] < x) k += 1;
            int q = v[(i64)k * lines + L];
            double dx = x - __dmul_rn((double)q, s);
            double fq = (double)f_in[base + q * stride];
            f_out[base + p * stride] = __double2float_rn(__dadd_rn(__dmul_rn(dx, dx), fq));
            if (ft) fi_out[base + p * stride] = fi_in[base + q * stride];
        }
    }
}

// ---- finishing --------------------------------------------------------------------------------

// In place: squared distances to distances.
extern "C" __global__ void edt_fwd_sqrt_f32(i64 n, float* __restrict__ dist)  // (D, H, W)
{
    GRID_STRIDE(i, n) dist[i] = __fsqrt_rn(dist[i]);
}

// Signed distance: -distance to the background inside the mask, distance to the mask outside.
extern "C" __global__ void edt_fwd_signed_f32(i64 n,
                                              const unsigned char* __restrict__ mask,  // (D, H, W)
                                              const float* __restrict__ outside_sq,    // (D, H, W)
                                              const float* __restrict__ inside_sq,     // (D, H, W)
                                              float* __restrict__ out)                 // (D, H, W)
{
    GRID_STRIDE(i, n) out[i] = mask[i] ? -__fsqrt_rn(inside_sq[i]) : __fsqrt_rn(outside_sq[i]);
}
