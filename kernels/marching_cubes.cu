// marching_cubes.cu: the GPU twin of src/geometry/marching_cubes.rs, as classify -> exclusive scan
// (scan.cu) -> generate.
//
// The case table is NOT written here: the launcher uploads the one table the CPU builds
// (`marching_cubes::flat_case_table`), so CPU and GPU cannot disagree on a case. Everything else
// mirrors the CPU: the volume is padded by one virtual background layer (sample s along an axis is
// voxel s - 1), foreground is value > level (NaN is background), each padded sample owns its +i,
// +j, +k edges, a crossing sits at the linear interpolation t = (level - v0) / (v1 - v0) clamped to
// [0, 1] (0.5 on edges into the padding or when t is not finite), and loops the table marks get a
// centroid vertex. Vertex ids follow the CPU's order too: slice si's edge vertices (in (j, k, axis)
// order), then the centroids of the cubes between slices si and si + 1, then slice si + 1; so an
// edge vertex's id is its scanned edge id plus the centroids of all earlier slabs, and a centroid's
// id is the edges of slices 0..=si plus its scanned centroid id. With the triangles in cube order
// as well, the GPU mesh is the CPU's, vertex for vertex.
//
// One thread per padded sample in both passes; the cube of a sample is the one whose corner 0 it
// is (it exists when the sample is not on the last padded plane of any axis).
#include "common.cuh"

// Mirrors `McParams` in src/backend/cuda/marching_cubes.rs.
struct McParams {
    int p[3];           // padded extents dims + 2
    int dims[3];        // (D, H, W)
    float level;
    unsigned int edge_vertices;  // total edge vertices (informational)
    i64 samples;        // p[0] * p[1] * p[2]
};

// Corner c of a cube sits at offset (c & 1, (c >> 1) & 1, (c >> 2) & 1) along (i, j, k).
__device__ __forceinline__ int mc_inside(const McParams& P, const float* __restrict__ field, int si,
                                         int j, int k) {
    if (si == 0 || j == 0 || k == 0 || si > P.dims[0] || j > P.dims[1] || k > P.dims[2]) return 0;
    float v = field[((i64)(si - 1) * P.dims[1] + (j - 1)) * P.dims[2] + (k - 1)];
    return v > P.level ? 1 : 0;
}

// Crossing flags of the three edges sample (si, j, k) owns: bit a for axis a.
__device__ __forceinline__ int mc_crossings(const McParams& P, const float* __restrict__ field,
                                            int si, int j, int k) {
    int a = mc_inside(P, field, si, j, k);
    int bits = 0;
    if (si + 1 < P.p[0] && a != mc_inside(P, field, si + 1, j, k)) bits |= 1;
    if (j + 1 < P.p[1] && a != mc_inside(P, field, si, j + 1, k)) bits |= 2;
    if (k + 1 < P.p[2] && a != mc_inside(P, field, si, j, k + 1)) bits |= 4;
    return bits;
}

__device__ __forceinline__ int mc_case(const McParams& P, const float* __restrict__ field, int si,
                                       int j, int k) {
    int c = 0;
    for (int b = 0; b < 8; ++b)
        c |= mc_inside(P, field, si + (b & 1), j + ((b >> 1) & 1), k + ((b >> 2) & 1)) << b;
    return c;
}

__device__ __forceinline__ bool mc_has_cube(const McParams& P, int si, int j, int k) {
    return si + 1 < P.p[0] && j + 1 < P.p[1] && k + 1 < P.p[2];
}

// Field value at padded sample s, or false for the padding.
__device__ __forceinline__ bool mc_value(const McParams& P, const float* __restrict__ field,
                                         const int s[3], float* v) {
    for (int a = 0; a < 3; ++a)
        if (s[a] == 0 || s[a] > P.dims[a]) return false;
    *v = field[((i64)(s[0] - 1) * P.dims[1] + (s[1] - 1)) * P.dims[2] + (s[2] - 1)];
    return true;
}

// Voxel coordinates of the crossing on the edge from padded sample s along `axis`.
__device__ __forceinline__ void mc_crossing(const McParams& P, const float* __restrict__ field,
                                            const int s[3], int axis, float out[3]) {
    int s1[3] = {s[0], s[1], s[2]};
    s1[axis] += 1;
    float v0, v1, t = 0.5f;
    if (mc_value(P, field, s, &v0) && mc_value(P, field, s1, &v1)) {
        t = __fdiv_rn(P.level - v0, v1 - v0);
        t = isfinite(t) ? fminf(fmaxf(t, 0.0f), 1.0f) : 0.5f;
    }
    for (int a = 0; a < 3; ++a) out[a] = (float)s[a] - 1.0f;
    out[axis] += t;
}

// Edge e = 4 * axis + m runs along axis from the corner whose other two bits are m.
__device__ __forceinline__ void mc_edge_origin(int e, int* axis, int off[3]) {
    int a = e / 4, m = e % 4;
    int b = a == 0 ? 1 : 0, c = a == 2 ? 1 : 2;
    int corner = ((m & 1) << b) | (((m >> 1) & 1) << c);
    *axis = a;
    off[0] = corner & 1;
    off[1] = (corner >> 1) & 1;
    off[2] = (corner >> 2) & 1;
}

// ---- classify ---------------------------------------------------------------------------------

// Thread per padded sample: its crossing edges, and its cube's triangles and centroid vertices.
extern "C" __global__ void marching_cubes_fwd_count_u32(
    McParams P, const float* __restrict__ field,        // (D, H, W)
    const unsigned int* __restrict__ tri_offsets,       // (257,) triangles of case c: [c, c + 1)
    const unsigned int* __restrict__ centre_offsets,    // (257,) centroid loops of case c
    unsigned int* __restrict__ edges,                   // (samples,)
    unsigned int* __restrict__ tris,                    // (samples,)
    unsigned int* __restrict__ centres)                 // (samples,)
{
    GRID_STRIDE(s, P.samples) {
        int k = (int)(s % P.p[2]);
        int j = (int)((s / P.p[2]) % P.p[1]);
        int si = (int)(s / ((i64)P.p[1] * P.p[2]));
        edges[s] = __popc(mc_crossings(P, field, si, j, k));
        unsigned int nt = 0, nc = 0;
        if (mc_has_cube(P, si, j, k)) {
            int c = mc_case(P, field, si, j, k);
            nt = tri_offsets[c + 1] - tri_offsets[c];
            nc = centre_offsets[c + 1] - centre_offsets[c];
        }
        tris[s] = nt;
        centres[s] = nc;
    }
}

// ---- generate ---------------------------------------------------------------------------------

// Vertex id of cube edge e of the cube at (si, j, k).
__device__ __forceinline__ unsigned int mc_edge_id(const McParams& P,
                                                   const float* __restrict__ field,
                                                   const unsigned int* __restrict__ edge_ids,
                                                   const unsigned int* __restrict__ centre_ids,
                                                   int si, int j, int k, int e) {
    int axis, off[3];
    mc_edge_origin(e, &axis, off);
    int s0 = si + off[0], s1 = j + off[1], s2 = k + off[2];
    int bits = mc_crossings(P, field, s0, s1, s2);
    i64 plane = (i64)P.p[1] * P.p[2];
    i64 s = (i64)s0 * plane + (i64)s1 * P.p[2] + s2;
    return edge_ids[s] + centre_ids[(i64)s0 * plane] + __popc(bits & ((1 << axis) - 1));
}

// Thread per padded sample: writes the vertices of its crossing edges, then its cube's centroid
// vertices and triangles at the scanned offsets.
extern "C" __global__ void marching_cubes_fwd_generate_f32(
    McParams P, const float* __restrict__ field,        // (D, H, W)
    const unsigned int* __restrict__ tri_offsets,       // (257,)
    const unsigned char* __restrict__ case_tris,        // (case triangles, 3) cube edges; >= 12: centroid
    const unsigned int* __restrict__ centre_offsets,    // (257,)
    const unsigned int* __restrict__ loop_offsets,      // (loops + 1,)
    const unsigned char* __restrict__ loop_edges,       // (loop edges,)
    const unsigned int* __restrict__ edge_ids,          // (samples,) scanned edge counts
    const unsigned int* __restrict__ tri_ids,           // (samples,) scanned triangle counts
    const unsigned int* __restrict__ centre_ids,        // (samples,) scanned centroid counts
    float* __restrict__ vertices,                       // (vertices, 3) voxel coordinates
    unsigned int* __restrict__ triangles)               // (triangles, 3)
{
    GRID_STRIDE(s, P.samples) {
        int k = (int)(s % P.p[2]);
        int j = (int)((s / P.p[2]) % P.p[1]);
        int si = (int)(s / ((i64)P.p[1] * P.p[2]));
        int at[3] = {si, j, k};
        int bits = mc_crossings(P, field, si, j, k);
        i64 plane = (i64)P.p[1] * P.p[2];
        unsigned int id = edge_ids[s] + centre_ids[(i64)si * plane];
        for (int a = 0; a < 3; ++a) {
            if (!(bits & (1 << a))) continue;
            float x[3];
            mc_crossing(P, field, at, a, x);
            for (int c = 0; c < 3; ++c) vertices[(i64)id * 3 + c] = x[c];
            id += 1;
        }
        if (!mc_has_cube(P, si, j, k)) continue;
        int cs = mc_case(P, field, si, j, k);
        if (cs == 0 || cs == 255) continue;
        // A cube exists only below the last padded slice, so slice si + 1's first sample exists.
        unsigned int c0 = edge_ids[(i64)(si + 1) * plane] + centre_ids[s];
        for (unsigned int l = centre_offsets[cs]; l < centre_offsets[cs + 1]; ++l) {
            float acc[3] = {0.0f, 0.0f, 0.0f};
            unsigned int lo = loop_offsets[l], hi = loop_offsets[l + 1];
            float len = (float)(hi - lo);
            for (unsigned int q = lo; q < hi; ++q) {
                int axis, off[3];
                mc_edge_origin(loop_edges[q], &axis, off);
                int from[3] = {si + off[0], j + off[1], k + off[2]};
                float x[3];
                mc_crossing(P, field, from, axis, x);
                for (int a = 0; a < 3; ++a) acc[a] += __fdiv_rn(x[a], len);
            }
            unsigned int vid = c0 + (l - centre_offsets[cs]);
            for (int a = 0; a < 3; ++a) vertices[(i64)vid * 3 + a] = acc[a];
        }
        unsigned int t_out = tri_ids[s];
        for (unsigned int t = tri_offsets[cs]; t < tri_offsets[cs + 1]; ++t, ++t_out) {
            for (int c = 0; c < 3; ++c) {
                int e = case_tris[(i64)t * 3 + c];
                triangles[(i64)t_out * 3 + c] =
                    e >= 12 ? c0 + (unsigned int)(e - 12) : mc_edge_id(P, field, edge_ids, centre_ids, si, j, k, e);
            }
        }
    }
}
