// scan.cu: exclusive prefix sum of u32 counts, the step between marching cubes' classify and
// generate passes (per-sample edge counts -> vertex ids, per-cube triangle counts -> offsets).
//
// Classic three-phase scan: each block scans SCAN_TILE consecutive values (SCAN_PER_THREAD per
// thread, sequential, then a Hillis-Steele scan of the 256 thread totals in shared memory) and
// writes its total; the launcher scans the block totals the same way (recursively) and adds each
// block's offset back. Marching cubes needs a few scans of at most (D+2)(H+2)(W+2) values per
// mesh, so simplicity wins over a decoupled look-back scan here.
#include "common.cuh"

#define SCAN_THREADS 256
#define SCAN_PER_THREAD 4
#define SCAN_TILE (SCAN_THREADS * SCAN_PER_THREAD)

// One block per tile of SCAN_TILE values; blockDim.x == SCAN_THREADS.
extern "C" __global__ void scan_fwd_block_u32(i64 n,
                                              const unsigned int* __restrict__ in,  // (n,)
                                              unsigned int* __restrict__ out,       // (n,)
                                              unsigned int* __restrict__ block_sums)  // (tiles,)
{
    __shared__ unsigned int sums[SCAN_THREADS];
    i64 start = (i64)blockIdx.x * SCAN_TILE + (i64)threadIdx.x * SCAN_PER_THREAD;
    unsigned int local[SCAN_PER_THREAD];
    unsigned int total = 0;
    for (int e = 0; e < SCAN_PER_THREAD; ++e) {
        i64 i = start + e;
        local[e] = total;
        total += i < n ? in[i] : 0u;
    }
    sums[threadIdx.x] = total;
    __syncthreads();
    // Inclusive Hillis-Steele scan of the thread totals.
    for (int o = 1; o < SCAN_THREADS; o <<= 1) {
        unsigned int add = threadIdx.x >= o ? sums[threadIdx.x - o] : 0u;
        __syncthreads();
        sums[threadIdx.x] += add;
        __syncthreads();
    }
    unsigned int before = threadIdx.x > 0 ? sums[threadIdx.x - 1] : 0u;
    for (int e = 0; e < SCAN_PER_THREAD; ++e) {
        i64 i = start + e;
        if (i < n) out[i] = before + local[e];
    }
    if (threadIdx.x == SCAN_THREADS - 1) block_sums[blockIdx.x] = sums[SCAN_THREADS - 1];
}

// Adds each tile's exclusive offset to its values.
extern "C" __global__ void scan_fwd_add_u32(i64 n, unsigned int* __restrict__ out,  // (n,)
                                            const unsigned int* __restrict__ offsets)  // (tiles,)
{
    GRID_STRIDE(i, n) out[i] += offsets[i / SCAN_TILE];
}
