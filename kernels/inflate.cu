// inflate.cu: the negative volume's two parallel steps, the GPU twin of src/geometry/inflate.rs
// (ARCHITECTURE.md, "The negative volume, precisely"):
//   march:     thread per MC surface point p with outward normal n: sphere-trace p + t n through
//              TB's signed distance field (trilinear, mm) and return the first t where it turns
//              negative (refined linearly between the last two samples), NaN for no hit;
//   voxelise:  thread per voxel: outside MC and TB, its nearest surface point (feature transform
//              of the seed voxels, edt.cu) has a hit h, the voxel is on the normal side and within
//              h + e/2 of p, e being the voxel's extent along n.
// The math is the CPU's line for line, in f64, with multiply-adds spelt __dmul_rn/__dadd_rn so
// that --fmad=true cannot round them differently; the NV voxels then agree exactly.
#include "common.cuh"

// Mirrors `InflateParams` in src/backend/cuda/inflate.rs.
struct InflateParams {
    i64 n;              // points (march) or voxels (voxelise)
    int dims[3];        // (D, H, W)
    int pad;
    double spacing[3];  // mm
    double t_max;       // longest march (mm)
    double reach;       // longest hit (mm), voxelise only
    double slack;       // voxel diagonal (mm), voxelise only
};

// Trilinear value of phi at x (mm); false outside the voxel-centre box.
__device__ bool inflate_at(const InflateParams& P, const float* __restrict__ phi,
                           const double x[3], double* out) {
    int base[3];
    double frac[3];
    for (int a = 0; a < 3; ++a) {
        double u = x[a] / P.spacing[a];
        double top = (double)(P.dims[a] - 1);
        if (!(u >= 0.0 && u <= top)) return false;
        int hi = P.dims[a] >= 2 ? P.dims[a] - 2 : 0;
        int b = min((int)floor(u), hi);
        base[a] = b;
        frac[a] = u - (double)b;
    }
    double v = 0.0;
    for (int c = 0; c < 8; ++c) {
        int o[3] = {c & 1, (c >> 1) & 1, (c >> 2) & 1};
        double wgt = 1.0;
        int idx[3];
        for (int a = 0; a < 3; ++a) {
            idx[a] = min(base[a] + o[a], P.dims[a] - 1);
            wgt = __dmul_rn(wgt, o[a] == 1 ? frac[a] : 1.0 - frac[a]);
        }
        if (wgt != 0.0) {
            double f = (double)phi[((i64)idx[0] * P.dims[1] + idx[1]) * P.dims[2] + idx[2]];
            v = __dadd_rn(v, __dmul_rn(wgt, f));
        }
    }
    *out = v;
    return true;
}

// ---- march ------------------------------------------------------------------------------------

extern "C" __global__ void inflate_fwd_march_f32(InflateParams P,
                                                 const float* __restrict__ phi,      // (D, H, W)
                                                 const float* __restrict__ points,   // (n, 3) mm
                                                 const float* __restrict__ normals,  // (n, 3)
                                                 double* __restrict__ hits)          // (n,) NaN: none
{
    const double nan = __longlong_as_double(0x7ff8000000000000ll);
    double smin = fmin(P.spacing[0], fmin(P.spacing[1], P.spacing[2]));
    double smax = fmax(P.spacing[0], fmax(P.spacing[1], P.spacing[2]));
    GRID_STRIDE(i, P.n) {
        double p[3], nr[3];
        for (int a = 0; a < 3; ++a) {
            p[a] = (double)points[i * 3 + a];
            nr[a] = (double)normals[i * 3 + a];
        }
        double ph, hit = nan;
        if (inflate_at(P, phi, p, &ph) && isfinite(ph)) {
            if (ph <= 0.0) {
                hit = 0.0;
            } else {
                double t = 0.0;
                while (t < P.t_max) {
                    // Same conservative step as the CPU: half the distance beyond a voxel
                    // diagonal, at least a quarter voxel.
                    double dt = fmax(0.5 * (ph - smax), 0.25 * smin);
                    double tn = fmin(t + dt, P.t_max);
                    double x[3];
                    for (int a = 0; a < 3; ++a) x[a] = __dadd_rn(p[a], __dmul_rn(tn, nr[a]));
                    double phn;
                    if (!inflate_at(P, phi, x, &phn)) break;
                    if (phn <= 0.0) {
                        hit = t + __dmul_rn(tn - t, ph) / (ph - phn);
                        break;
                    }
                    t = tn;
                    ph = phn;
                }
            }
        }
        hits[i] = hit;
    }
}

// ---- voxelise ---------------------------------------------------------------------------------

extern "C" __global__ void inflate_fwd_voxelise_f32(
    InflateParams P,
    const unsigned char* __restrict__ mc,       // (D, H, W)
    const unsigned char* __restrict__ tb,       // (D, H, W)
    const float* __restrict__ ft_dist,          // (D, H, W) mm to the nearest seed voxel
    const unsigned int* __restrict__ ft_near,   // (D, H, W) nearest seed voxel, ~0u: none
    const unsigned int* __restrict__ owner,     // (D, H, W) surface point a seed voxel holds
    const double* __restrict__ hits,            // (points,) NaN: none
    const float* __restrict__ points,           // (points, 3) mm
    const float* __restrict__ normals,          // (points, 3)
    unsigned char* __restrict__ nv)             // (D, H, W)
{
    GRID_STRIDE(q, P.n) {
        unsigned char out = 0;
        unsigned int near = ft_near[q];
        if (!mc[q] && !tb[q] && near != 0xffffffffu &&
            !((double)ft_dist[q] > P.reach + P.slack)) {
            unsigned int vi = owner[near];
            double hp = hits[vi];
            if (hp == hp) {
                i64 hw = (i64)P.dims[1] * P.dims[2];
                i64 idx[3] = {q / hw, (q / P.dims[2]) % P.dims[1], q % P.dims[2]};
                double along = 0.0, len2 = 0.0, e2 = 0.0;
                for (int a = 0; a < 3; ++a) {
                    double nrm = (double)normals[(i64)vi * 3 + a];
                    double x = __dmul_rn((double)idx[a], P.spacing[a]) - (double)points[(i64)vi * 3 + a];
                    along = __dadd_rn(along, __dmul_rn(x, nrm));
                    len2 = __dadd_rn(len2, __dmul_rn(x, x));
                    double ns = __dmul_rn(nrm, P.spacing[a]);
                    e2 = __dadd_rn(e2, __dmul_rn(ns, ns));
                }
                // The segment ends on the TB boundary inside the cell of the last NV voxel.
                double half = 0.5 * sqrt(e2);
                out = along > 0.0 && sqrt(len2) <= hp + half;
            }
        }
        nv[q] = out;
    }
}
