// Transposed (channel) attention (MODELS_SPEC section 2) behind the C API of edge_derain/kernels.h.
//
// Four launches per call, each over the N*heads (batch item, head) pairs "nh", with L = H*W:
//   1. gram_partials   split-K over L: block (split, nh) accumulates, over its slice of L, the C_h x C_h
//                      Gram matrix q k^T and the squared row norms of q and k in FP32 registers. 32-position
//                      tiles of q and k are staged in shared memory as FP32 (FP16 inputs are widened on
//                      load: the sums of squares of 1080p-sized rows overflow FP16, spec section 2.4), the
//                      next tile's loads in flight in registers meanwhile. Each thread owns 4x4
//                      micro-tiles of the Gram matrix, so per position it does two float4 shared loads
//                      for 16 FMAs; small heads spread a tile's positions over several thread groups.
//   2. reduce_partials sums the splits' partials in a fixed order: deterministic, no atomics.
//   3. attention_rows  one warp per query row: logits, each sparse branch's threshold (the k-th largest,
//                      ties kept), masked softmax, weighted sum of the branches -> A (C_h x C_h, FP32).
//   4. apply_attention out = A v with A and 32-row chunks of v staged in shared memory (v read once).
//
// Traffic: q and k are read once (stage 1), v once and the output written once (stage 4): four passes
// over N*C*L elements, the minimum for an operator whose softmax needs all of L before any output
// exists; the small stages move O(N * heads * C_h^2 * splits) floats. The decomposed ONNX chain
// (spec section 2.5) adds a pass for normalising q and k and materialises them in FP32.

#include "edge_derain/kernels.h"
#include "common.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using edr::from_float;
using edr::to_float;

constexpr int kMaxCh = EDR_MAX_HEAD_CHANNELS;
constexpr int kMaxBranches = EDR_MAX_ATTENTION_BRANCHES;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMicro = 4;                 // Gram micro-tile edge
constexpr int kMaxMicroSlots = ((kMaxCh / kMicro) * (kMaxCh / kMicro) + kThreads - 1) / kThreads;
constexpr int kSmallHead = 64; // heads up to this size need one micro-tile slot per thread in stage 1
constexpr int kApplyVec = 4;                        // consecutive positions per thread in stage 4
constexpr int kApplyWarps = kThreads / 32;          // output rows are dealt round-robin to the warps
constexpr int kApplyPositions = 32 * kApplyVec;     // positions per block-iteration in stage 4
constexpr int kMaxApplyRows = kMaxCh / kApplyWarps;
constexpr int kApplyChunkRows = 32;                 // rows of v staged in shared memory at a time
constexpr int kMinSplitPositions = 1024;  // below this a split's partial costs more than it saves
constexpr int kTargetBlocks = 1024;       // several waves of resident blocks on the largest GPUs
constexpr int kMaxSplits = 1024;
constexpr int kMaxGridY = 65535;
constexpr int64_t kAlignFloats = 64;      // 256-byte alignment of each workspace region

static_assert(kMaxCh % kMicro == 0 && 2 * kMaxCh <= kThreads, "row norms use one thread per q or k row");
static_assert(kMaxCh / 32 * 32 == kMaxCh, "attention rows are spread over the 32 lanes of a warp");
static_assert(kMaxCh % kApplyWarps == 0 && kApplyChunkRows % kMicro == 0, "apply-stage tiling");

// Branches in summation order; topk 0 marks the dense branch.
struct Branches {
    int count;
    int topk[kMaxBranches];
};

// Sizes and workspace layout (in floats) of one call; a pure function of the shapes, so the plugin can
// size its workspace at build time from the profile's maximum dims.
struct Geometry {
    int64_t pairs;     // N * heads
    int heads;
    int ch;            // channels per head
    int ch4;           // ch rounded up to a multiple of kMicro (padding rows/columns are zero)
    int64_t length;    // L = H * W
    int splits;        // split-K slices of L in stage 1
    int64_t chunk;     // positions per slice
    int64_t stats;     // floats per (nh[, split]) record: Gram ch*ch, then |q_i|^2 ch, then |k_j|^2 ch
    int64_t partials;  // offsets of the three regions
    int64_t reduced;
    int64_t attention; // (pairs, ch, ch4)
    int64_t total;
};

int64_t align_up(int64_t value, int64_t to) { return (value + to - 1) / to * to; }

Geometry make_geometry(int n, int c, int h, int w, int heads) {
    Geometry g;
    g.pairs = static_cast<int64_t>(n) * heads;
    g.heads = heads;
    g.ch = c / heads;
    g.ch4 = (g.ch + kMicro - 1) / kMicro * kMicro;
    g.length = static_cast<int64_t>(h) * w;
    const int64_t by_length = (g.length + kMinSplitPositions - 1) / kMinSplitPositions;
    const int64_t by_occupancy = (kTargetBlocks + g.pairs - 1) / g.pairs;
    int64_t splits = by_length < by_occupancy ? by_length : by_occupancy;
    splits = splits < kMaxSplits ? splits : kMaxSplits;
    g.splits = static_cast<int>(splits > 1 ? splits : 1);
    g.chunk = (g.length + g.splits - 1) / g.splits;
    g.stats = static_cast<int64_t>(g.ch) * g.ch + 2 * g.ch;
    // The partials region is sized by a bound on pairs * splits that never decreases as N, H or W grow
    // (pairs * splits itself can: 3 * 342 > 4 * 256), so the workspace a plugin reserves for a profile's
    // largest shape covers every shape of the profile.
    const int64_t records_by_length = g.pairs * by_length;
    const int64_t records_bound = g.pairs + kTargetBlocks;
    const int64_t records = records_by_length < records_bound ? records_by_length : records_bound;
    g.partials = 0;
    g.reduced = align_up(records * g.stats, kAlignFloats);
    g.attention = g.reduced + align_up(g.pairs * g.stats, kAlignFloats);
    g.total = g.attention + align_up(g.pairs * g.ch * g.ch4, kAlignFloats);
    return g;
}

// ---- per-element code shared by the kernels and the host path -------------------------------------

__host__ __device__ __forceinline__ float reduce_element(const float* partials, const Geometry& g, int64_t nh,
                                                         int64_t e) {
    const float* src = partials + nh * g.splits * g.stats + e;
    float sum = 0.0f;
    for (int s = 0; s < g.splits; ++s) {
        sum += src[s * g.stats];
    }
    return sum;
}

// P[i, j] from the reduced record of one (nh): the Gram entry scaled by tau over the clamped norms.
__host__ __device__ __forceinline__ float attention_logit(const float* stats, int ch, int i, int j, float tau,
                                                          float eps) {
    const float q_norm = fmaxf(sqrtf(stats[ch * ch + i]), eps);
    const float k_norm = fmaxf(sqrtf(stats[ch * ch + ch + j]), eps);
    return stats[i * ch + j] * (tau / (q_norm * k_norm));
}

// Whether `value` (an entry of `row`) is the row's kth-largest: fewer than kth entries lie above it and
// at least kth at or above it. Every entry >= it is then kept (threshold semantics, ties included).
__host__ __device__ __forceinline__ bool is_kth_largest(const float* row, int ch, float value, int kth) {
    int above = 0;
    int at_or_above = 0;
    for (int j = 0; j < ch; ++j) {
        above += row[j] > value;
        at_or_above += row[j] >= value;
    }
    return above < kth && kth <= at_or_above;
}

template <typename P>
__host__ __device__ __forceinline__ float branch_weight(const P* weights, int m) {
    return weights != nullptr ? to_float(weights[m]) : 1.0f;
}

// ---- kernels --------------------------------------------------------------------------------------

// Stage 1's global -> register staging of one tile. Thread t loads position t % TileL of the rows
// t / TileL, + kThreads / TileL, ... of the stacked [q rows | k rows] (2 * ch4 rows), so consecutive
// threads read consecutive positions of one row (coalesced). Rows past ch, positions past `end` are 0.
template <int TileL, int Staged, typename T>
__device__ __forceinline__ void load_tile(const T* __restrict__ q_head, const T* __restrict__ k_head,
                                          const Geometry& g, int64_t l0, int64_t end, float (&staged)[Staged]) {
    static_assert(kThreads % TileL == 0, "a thread keeps one position of the tile");
    const int64_t pos = l0 + threadIdx.x % TileL;
    const int first_row = threadIdx.x / TileL;
#pragma unroll
    for (int s = 0; s < Staged; ++s) {
        const int r = first_row + s * (kThreads / TileL);
        const bool is_k = r >= g.ch4;
        const int row = is_k ? r - g.ch4 : r;
        staged[s] = r < 2 * g.ch4 && row < g.ch && pos < end
                        ? to_float((is_k ? k_head : q_head)[row * g.length + pos])
                        : 0.0f;
    }
}

template <int TileL, int Staged>
__device__ __forceinline__ void store_tile(const Geometry& g, const float (&staged)[Staged],
                                           float (*q_tile)[kMaxCh + 4], float (*k_tile)[kMaxCh + 4]) {
    const int l = threadIdx.x % TileL;
    const int first_row = threadIdx.x / TileL;
#pragma unroll
    for (int s = 0; s < Staged; ++s) {
        const int r = first_row + s * (kThreads / TileL);
        if (r < 2 * g.ch4) {
            if (r >= g.ch4) {
                k_tile[l][r - g.ch4] = staged[s];
            } else {
                q_tile[l][r] = staged[s];
            }
        }
    }
}

// Two instantiations keep the registers within two resident blocks per SM (acc + staged, no spills):
// heads up to kSmallHead channels use one micro-tile slot and 32-position tiles, larger ones
// kMaxMicroSlots slots and 8-position tiles.
template <typename T, int Slots, int TileL>
__global__ void __launch_bounds__(kThreads, 2) gram_partials_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                 float* __restrict__ partials, Geometry g) {
    constexpr int kStaged = 2 * (Slots == 1 ? kSmallHead : kMaxCh) * TileL / kThreads;
    // Row stride kMaxCh + 4 keeps float4 alignment and spreads the tile's column writes over 8 banks.
    __shared__ __align__(16) float tiles[2][TileL][kMaxCh + 4];
    float(*q_tile)[kMaxCh + 4] = tiles[0];
    float(*k_tile)[kMaxCh + 4] = tiles[1];
    const int64_t nh = blockIdx.y;
    const int split = blockIdx.x;
    const int ch = g.ch;
    const int ch4 = g.ch4;
    const T* q_head = q + nh * ch * g.length;
    const T* k_head = k + nh * ch * g.length;
    const int64_t begin = split * g.chunk;
    const int64_t end = begin + g.chunk < g.length ? begin + g.chunk : g.length;

    // Work items: (position group, micro-tile). Large heads have more micro-tiles than threads (up to
    // kMaxMicroSlots per thread, one group); small heads would leave most threads idle, so the tile's
    // positions are dealt round-robin to `groups` copies of the micro-tile set instead, and the copies'
    // sums are added at the end.
    const int tiles_per_row = ch4 / kMicro;
    const int micro_tiles = tiles_per_row * tiles_per_row;
    int groups = micro_tiles >= kThreads ? 1 : kThreads / micro_tiles;
    groups = groups < TileL ? groups : TileL;
    float acc[Slots][kMicro * kMicro];
#pragma unroll
    for (int s = 0; s < Slots; ++s) {
#pragma unroll
        for (int e = 0; e < kMicro * kMicro; ++e) {
            acc[s][e] = 0.0f;
        }
    }
    float norm = 0.0f; // thread t < ch4: |q_t|^2; ch4 <= t < 2*ch4: |k_{t-ch4}|^2

    // Software pipeline: the next tile's global loads are in flight while this tile is multiplied.
    float staged[kStaged];
    load_tile<TileL>(q_head, k_head, g, begin, end, staged);
    for (int64_t l0 = begin; l0 < end; l0 += TileL) {
        store_tile<TileL>(g, staged, q_tile, k_tile);
        __syncthreads();
        if (l0 + TileL < end) {
            load_tile<TileL>(q_head, k_head, g, l0 + TileL, end, staged);
        }
#pragma unroll
        for (int s = 0; s < Slots; ++s) {
            const int item = threadIdx.x + s * kThreads;
            const int group = item / micro_tiles;
            if (group < groups) {
                const int t = item - group * micro_tiles;
                const int i0 = (t / tiles_per_row) * kMicro;
                const int j0 = (t % tiles_per_row) * kMicro;
                for (int l = group; l < TileL; l += groups) {
                    const float4 a = *reinterpret_cast<const float4*>(&q_tile[l][i0]);
                    const float4 b = *reinterpret_cast<const float4*>(&k_tile[l][j0]);
                    const float av[4] = {a.x, a.y, a.z, a.w};
                    const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
                    for (int x = 0; x < kMicro; ++x) {
#pragma unroll
                        for (int y = 0; y < kMicro; ++y) {
                            acc[s][x * kMicro + y] = fmaf(av[x], bv[y], acc[s][x * kMicro + y]);
                        }
                    }
                }
            }
        }
        if (threadIdx.x < 2 * ch4) {
            const bool is_k = threadIdx.x >= ch4;
            const int row = is_k ? threadIdx.x - ch4 : threadIdx.x;
#pragma unroll 8
            for (int l = 0; l < TileL; ++l) {
                const float x = (is_k ? k_tile : q_tile)[l][row];
                norm = fmaf(x, x, norm);
            }
        }
        __syncthreads();
    }

    float* record = partials + (nh * g.splits + split) * g.stats;
    if (threadIdx.x < ch) {
        record[ch * ch + threadIdx.x] = norm;
    } else if (threadIdx.x >= ch4 && threadIdx.x < ch4 + ch) {
        record[ch * ch + ch + (threadIdx.x - ch4)] = norm;
    }
    if (Slots > 1 || groups == 1) {
#pragma unroll
        for (int s = 0; s < Slots; ++s) {
            const int t = threadIdx.x + s * kThreads;
            if (t < micro_tiles) {
                const int i0 = (t / tiles_per_row) * kMicro;
                const int j0 = (t % tiles_per_row) * kMicro;
#pragma unroll
                for (int x = 0; x < kMicro; ++x) {
#pragma unroll
                    for (int y = 0; y < kMicro; ++y) {
                        if (i0 + x < ch && j0 + y < ch) {
                            record[(i0 + x) * ch + j0 + y] = acc[s][x * kMicro + y];
                        }
                    }
                }
            }
        }
        return;
    }
    // Add the groups' copies in group order (deterministic) through shared memory: groups *
    // micro_tiles <= kThreads items of 16 floats fit in the tiles, which the loop no longer needs.
    float* sums = &tiles[0][0][0];
    static_assert(Slots > 1 || kThreads * kMicro * kMicro <= 2 * TileL * (kMaxCh + 4), "group sums must fit");
    if (threadIdx.x < groups * micro_tiles) {
#pragma unroll
        for (int e = 0; e < kMicro * kMicro; ++e) {
            sums[threadIdx.x * kMicro * kMicro + e] = acc[0][e];
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < micro_tiles * kMicro * kMicro; e += kThreads) {
        const int t = e / (kMicro * kMicro);
        const int x = e % (kMicro * kMicro) / kMicro;
        const int y = e % kMicro;
        const int i = (t / tiles_per_row) * kMicro + x;
        const int j = (t % tiles_per_row) * kMicro + y;
        if (i < ch && j < ch) {
            float total = 0.0f;
            for (int group = 0; group < groups; ++group) {
                total += sums[(group * micro_tiles + t) * kMicro * kMicro + x * kMicro + y];
            }
            record[i * ch + j] = total;
        }
    }
}

__global__ void __launch_bounds__(kThreads) reduce_partials_kernel(const float* __restrict__ partials,
                                                                   float* __restrict__ reduced, Geometry g) {
    const int64_t nh = blockIdx.y;
    const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (e < g.stats) {
        reduced[nh * g.stats + e] = reduce_element(partials, g, nh, e);
    }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

template <typename P>
__global__ void __launch_bounds__(kThreads) attention_rows_kernel(const float* __restrict__ reduced,
                                                                  const P* __restrict__ temperature,
                                                                  const P* __restrict__ weights,
                                                                  float* __restrict__ attention, Geometry g,
                                                                  Branches branches, float eps) {
    constexpr int kPerLane = kMaxCh / 32;
    __shared__ float rows[kWarps][kMaxCh];
    const int64_t nh = blockIdx.x;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int ch = g.ch;
    const float* stats = reduced + nh * g.stats;
    const float tau = to_float(temperature[nh % g.heads]);
    float* row = rows[warp];

    for (int i = warp; i < ch; i += kWarps) {
        float p[kPerLane];
        float a[kPerLane];
#pragma unroll
        for (int r = 0; r < kPerLane; ++r) {
            const int j = lane + 32 * r;
            p[r] = j < ch ? attention_logit(stats, ch, i, j, tau, eps) : -INFINITY;
            a[r] = 0.0f;
            if (j < ch) {
                row[j] = p[r];
            }
        }
        __syncwarp();
        for (int m = 0; m < branches.count; ++m) {
            const int kth = branches.topk[m];
            float threshold = -INFINITY;
            if (kth > 0) {
                float candidate = -INFINITY;
#pragma unroll
                for (int r = 0; r < kPerLane; ++r) {
                    if (lane + 32 * r < ch && is_kth_largest(row, ch, p[r], kth)) {
                        candidate = p[r];
                    }
                }
                threshold = warp_max(candidate); // every lane that found it found the same value
            }
            float row_max = -INFINITY;
#pragma unroll
            for (int r = 0; r < kPerLane; ++r) {
                if (lane + 32 * r < ch && p[r] >= threshold) {
                    row_max = fmaxf(row_max, p[r]);
                }
            }
            row_max = warp_max(row_max);
            float e[kPerLane];
            float sum = 0.0f;
#pragma unroll
            for (int r = 0; r < kPerLane; ++r) {
                e[r] = lane + 32 * r < ch && p[r] >= threshold ? expf(p[r] - row_max) : 0.0f;
                sum += e[r];
            }
            sum = warp_sum(sum);
            const float w = branch_weight(weights, m);
#pragma unroll
            for (int r = 0; r < kPerLane; ++r) {
                a[r] = fmaf(w, e[r] / sum, a[r]);
            }
        }
        float* out_row = attention + (nh * ch + i) * g.ch4;
#pragma unroll
        for (int r = 0; r < kPerLane; ++r) {
            const int j = lane + 32 * r;
            if (j < g.ch4) {
                out_row[j] = j < ch ? a[r] : 0.0f; // zero padding columns: stage 4 reads float4s
            }
        }
        __syncwarp(); // the row buffer is rewritten for the warp's next row
    }
}

// Stage 4 moves 4 consecutive positions per thread: one 16-byte (FP32) or 8-byte (FP16) access when
// rows are aligned (`vectorized`: L % 4 == 0 and 16-byte aligned buffers), else 4 bounds-checked ones.
template <typename T>
__device__ __forceinline__ void load_positions(const T* __restrict__ row, int64_t pos, int64_t length,
                                               bool vectorized, float (&out)[kApplyVec]) {
    if (vectorized && pos + kApplyVec <= length) {
        if constexpr (sizeof(T) == 4) {
            const float4 x = *reinterpret_cast<const float4*>(row + pos);
            out[0] = x.x, out[1] = x.y, out[2] = x.z, out[3] = x.w;
        } else {
            const uint2 raw = *reinterpret_cast<const uint2*>(row + pos);
            const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
            const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
            out[0] = lo.x, out[1] = lo.y, out[2] = hi.x, out[3] = hi.y;
        }
        return;
    }
#pragma unroll
    for (int p = 0; p < kApplyVec; ++p) {
        out[p] = pos + p < length ? to_float(row[pos + p]) : 0.0f;
    }
}

template <typename T>
__device__ __forceinline__ void store_positions(T* __restrict__ row, int64_t pos, int64_t length, bool vectorized,
                                                const float (&in)[kApplyVec]) {
    if (vectorized && pos + kApplyVec <= length) {
        if constexpr (sizeof(T) == 4) {
            *reinterpret_cast<float4*>(row + pos) = make_float4(in[0], in[1], in[2], in[3]);
        } else {
            const __half2 lo = __floats2half2_rn(in[0], in[1]);
            const __half2 hi = __floats2half2_rn(in[2], in[3]);
            uint2 raw;
            raw.x = *reinterpret_cast<const unsigned*>(&lo);
            raw.y = *reinterpret_cast<const unsigned*>(&hi);
            *reinterpret_cast<uint2*>(row + pos) = raw;
        }
        return;
    }
#pragma unroll
    for (int p = 0; p < kApplyVec; ++p) {
        if (pos + p < length) {
            row[pos + p] = from_float<T>(in[p]);
        }
    }
}

// Per block-iteration (128 positions), the block stages v in shared memory kApplyChunkRows rows at a
// time with coalesced 4-wide loads, each element read from DRAM once; warp w accumulates output rows
// w, w + kApplyWarps, ... over the chunks, 4 positions per lane: each step reads 4 staged rows (float4,
// conflict-free) and one float4 of A per output row (a broadcast) for 16 FMAs per row.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2) apply_attention_kernel(const T* __restrict__ v,
                                                                      const float* __restrict__ attention,
                                                                      T* __restrict__ out, Geometry g,
                                                                      bool vectorized) {
    extern __shared__ __align__(16) float apply_shared[];
    const int ch = g.ch;
    const int ch4 = g.ch4;
    float* a_shared = apply_shared;            // (ch, ch4)
    float* v_shared = apply_shared + ch * ch4; // (kApplyChunkRows, kApplyPositions); offset keeps 16-B alignment
    const int64_t nh = blockIdx.y;
    const float4* a_src = reinterpret_cast<const float4*>(attention + nh * ch * ch4);
    for (int e = threadIdx.x; e < ch * ch4 / 4; e += kThreads) {
        reinterpret_cast<float4*>(a_shared)[e] = a_src[e];
    }

    const T* v_head = v + nh * ch * g.length;
    T* out_head = out + nh * ch * g.length;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int rows = warp < ch ? (ch - warp + kApplyWarps - 1) / kApplyWarps : 0;
    constexpr int kChunks = kApplyPositions / kApplyVec; // 4-position pieces per staged row
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * kApplyPositions; base < g.length;
         base += static_cast<int64_t>(gridDim.x) * kApplyPositions) {
        const int64_t pos = base + lane * kApplyVec;
        const bool active = rows > 0 && pos < g.length;
        float acc[kMaxApplyRows][kApplyVec];
#pragma unroll
        for (int r = 0; r < kMaxApplyRows; ++r) {
#pragma unroll
            for (int p = 0; p < kApplyVec; ++p) {
                acc[r][p] = 0.0f;
            }
        }
        for (int c0 = 0; c0 < ch4; c0 += kApplyChunkRows) {
            const int chunk_rows = ch4 - c0 < kApplyChunkRows ? ch4 - c0 : kApplyChunkRows;
            for (int item = threadIdx.x; item < chunk_rows * kChunks; item += kThreads) {
                const int row = item / kChunks;
                const int piece = item % kChunks;
                float values[kApplyVec] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (c0 + row < ch) {
                    load_positions(v_head + (c0 + row) * g.length, base + piece * kApplyVec, g.length, vectorized,
                                   values);
                }
                *reinterpret_cast<float4*>(&v_shared[row * kApplyPositions + piece * kApplyVec]) =
                    make_float4(values[0], values[1], values[2], values[3]);
            }
            __syncthreads(); // the first pass also orders the copy of A before its use
            if (active) {
                for (int j = 0; j < chunk_rows; j += kMicro) {
                    float vj[kMicro][kApplyVec];
#pragma unroll
                    for (int x = 0; x < kMicro; ++x) {
                        const float4 t = *reinterpret_cast<const float4*>(
                            &v_shared[(j + x) * kApplyPositions + lane * kApplyVec]);
                        vj[x][0] = t.x, vj[x][1] = t.y, vj[x][2] = t.z, vj[x][3] = t.w;
                    }
#pragma unroll
                    for (int r = 0; r < kMaxApplyRows; ++r) {
                        if (r < rows) {
                            const float4 a = *reinterpret_cast<const float4*>(
                                &a_shared[(warp + kApplyWarps * r) * ch4 + c0 + j]);
#pragma unroll
                            for (int p = 0; p < kApplyVec; ++p) {
                                acc[r][p] = fmaf(a.x, vj[0][p], fmaf(a.y, vj[1][p], fmaf(a.z, vj[2][p],
                                                                                         fmaf(a.w, vj[3][p],
                                                                                              acc[r][p]))));
                            }
                        }
                    }
                }
            }
            __syncthreads(); // the next chunk overwrites v_shared
        }
        if (active) {
#pragma unroll
            for (int r = 0; r < kMaxApplyRows; ++r) {
                if (r < rows) {
                    store_positions(out_head + (warp + kApplyWarps * r) * g.length, pos, g.length, vectorized,
                                    acc[r]);
                }
            }
        }
    }
}

// ---- argument checks and launches -----------------------------------------------------------------

bool valid_dtype(int dtype) { return dtype == EDR_FLOAT32 || dtype == EDR_FLOAT16; }

// Checks every argument before any CUDA call, so bad calls fail the same way with or without a GPU.
cudaError_t validate(const void* q, const void* k, const void* v, const void* temperature,
                     const void* branch_weights, const void* output, int dtype, int param_dtype, int n, int c,
                     int h, int w, int heads, int mode, const int* topk, int num_topk, float eps,
                     Branches* branches) {
    if (q == nullptr || k == nullptr || v == nullptr || temperature == nullptr || output == nullptr) {
        return cudaErrorInvalidValue;
    }
    if (!valid_dtype(dtype) || !valid_dtype(param_dtype)) {
        return cudaErrorInvalidValue;
    }
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || heads <= 0 || c % heads != 0 || c / heads > kMaxCh) {
        return cudaErrorInvalidValue;
    }
    if (static_cast<int64_t>(n) * heads > kMaxGridY) {
        return cudaErrorInvalidValue;
    }
    if (static_cast<double>(n) * c * h * w > 9.0e18) {
        return cudaErrorInvalidValue;
    }
    if (!(eps > 0.0f) || !std::isfinite(eps)) {
        return cudaErrorInvalidValue;
    }
    if (num_topk < 0 || num_topk > kMaxBranches || (num_topk > 0 && topk == nullptr)) {
        return cudaErrorInvalidValue;
    }
    branches->count = 0;
    switch (mode) {
    case EDR_ATTENTION_DENSE:
        if (num_topk != 0) {
            return cudaErrorInvalidValue;
        }
        branches->topk[branches->count++] = 0;
        break;
    case EDR_ATTENTION_SPARSE:
    case EDR_ATTENTION_DUAL:
        if (num_topk != 1 || (mode == EDR_ATTENTION_DUAL && branch_weights == nullptr)) {
            return cudaErrorInvalidValue;
        }
        if (mode == EDR_ATTENTION_DUAL) {
            branches->topk[branches->count++] = 0;
        }
        branches->topk[branches->count++] = topk[0];
        break;
    case EDR_ATTENTION_MULTI:
        if (num_topk < 1 || branch_weights == nullptr) {
            return cudaErrorInvalidValue;
        }
        for (int m = 0; m < num_topk; ++m) {
            branches->topk[branches->count++] = topk[m];
        }
        break;
    default:
        return cudaErrorInvalidValue;
    }
    for (int m = 0; m < num_topk; ++m) {
        if (topk[m] < 1 || topk[m] > c / heads) {
            return cudaErrorInvalidValue;
        }
    }
    return cudaSuccess;
}

template <typename T, typename P>
cudaError_t launch(const void* q, const void* k, const void* v, const void* temperature, const void* weights,
                   void* output, const Geometry& g, const Branches& branches, float eps, float* workspace,
                   cudaStream_t stream) {
    const unsigned pairs = static_cast<unsigned>(g.pairs);
    const dim3 gram_grid(static_cast<unsigned>(g.splits), pairs);
    if (g.ch4 <= kSmallHead) {
        gram_partials_kernel<T, 1, 32><<<gram_grid, kThreads, 0, stream>>>(
            static_cast<const T*>(q), static_cast<const T*>(k), workspace + g.partials, g);
    } else {
        gram_partials_kernel<T, kMaxMicroSlots, 8><<<gram_grid, kThreads, 0, stream>>>(
            static_cast<const T*>(q), static_cast<const T*>(k), workspace + g.partials, g);
    }
    const unsigned stat_blocks = static_cast<unsigned>((g.stats + kThreads - 1) / kThreads);
    reduce_partials_kernel<<<dim3(stat_blocks, pairs), kThreads, 0, stream>>>(workspace + g.partials,
                                                                               workspace + g.reduced, g);
    attention_rows_kernel<P><<<pairs, kThreads, 0, stream>>>(workspace + g.reduced, static_cast<const P*>(temperature),
                                                             static_cast<const P*>(weights), workspace + g.attention,
                                                             g, branches, eps);
    // Enough position tiles per block to amortise loading A, enough blocks to fill the GPU.
    const int64_t tiles = (g.length + kApplyPositions - 1) / kApplyPositions;
    const int64_t wanted = (kTargetBlocks + g.pairs - 1) / g.pairs;
    const unsigned blocks = static_cast<unsigned>(tiles < wanted ? tiles : wanted);
    const size_t shared =
        (static_cast<size_t>(g.ch) * g.ch4 + static_cast<size_t>(kApplyChunkRows) * kApplyPositions) * sizeof(float);
    if (shared > 48 * 1024) { // above the default the kernel must opt in: <= 52 KiB, within every GPU's limit
        const cudaError_t status = cudaFuncSetAttribute(apply_attention_kernel<T>,
                                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                        static_cast<int>(shared));
        if (status != cudaSuccess) {
            return status;
        }
    }
    const bool vectorized = g.length % kApplyVec == 0 && reinterpret_cast<uintptr_t>(v) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(output) % 16 == 0;
    apply_attention_kernel<T><<<dim3(blocks, pairs), kThreads, shared, stream>>>(
        static_cast<const T*>(v), workspace + g.attention, static_cast<T*>(output), g, vectorized);
    return cudaGetLastError();
}

// The host path: the kernels' stages in the same order, through the same workspace layout and the
// shared per-element helpers above.
template <typename T, typename P>
void run_on_host(const void* q_ptr, const void* k_ptr, const void* v_ptr, const void* temperature_ptr,
                 const void* weights_ptr, void* out_ptr, const Geometry& g, const Branches& branches, float eps) {
    const T* q = static_cast<const T*>(q_ptr);
    const T* k = static_cast<const T*>(k_ptr);
    const T* v = static_cast<const T*>(v_ptr);
    const P* temperature = static_cast<const P*>(temperature_ptr);
    const P* weights = static_cast<const P*>(weights_ptr);
    T* out = static_cast<T*>(out_ptr);
    std::vector<float> workspace(static_cast<size_t>(g.total), 0.0f);
    const int ch = g.ch;
    for (int64_t nh = 0; nh < g.pairs; ++nh) {
        const T* q_head = q + nh * ch * g.length;
        const T* k_head = k + nh * ch * g.length;
        for (int split = 0; split < g.splits; ++split) {
            float* record = workspace.data() + g.partials + (nh * g.splits + split) * g.stats;
            const int64_t begin = split * g.chunk;
            const int64_t end = begin + g.chunk < g.length ? begin + g.chunk : g.length;
            for (int64_t pos = begin; pos < end; ++pos) {
                for (int i = 0; i < ch; ++i) {
                    const float qi = to_float(q_head[i * g.length + pos]);
                    const float ki = to_float(k_head[i * g.length + pos]);
                    record[ch * ch + i] = fmaf(qi, qi, record[ch * ch + i]);
                    record[ch * ch + ch + i] = fmaf(ki, ki, record[ch * ch + ch + i]);
                    for (int j = 0; j < ch; ++j) {
                        record[i * ch + j] = fmaf(qi, to_float(k_head[j * g.length + pos]), record[i * ch + j]);
                    }
                }
            }
        }
        float* stats = workspace.data() + g.reduced + nh * g.stats;
        for (int64_t e = 0; e < g.stats; ++e) {
            stats[e] = reduce_element(workspace.data() + g.partials, g, nh, e);
        }
        const float tau = to_float(temperature[nh % g.heads]);
        std::vector<float> row(static_cast<size_t>(ch));
        for (int i = 0; i < ch; ++i) {
            float* a = workspace.data() + g.attention + (nh * ch + i) * g.ch4;
            for (int j = 0; j < ch; ++j) {
                row[j] = attention_logit(stats, ch, i, j, tau, eps);
            }
            for (int m = 0; m < branches.count; ++m) {
                float threshold = -INFINITY;
                if (branches.topk[m] > 0) {
                    for (int j = 0; j < ch; ++j) {
                        if (is_kth_largest(row.data(), ch, row[j], branches.topk[m])) {
                            threshold = row[j];
                        }
                    }
                }
                float row_max = -INFINITY;
                for (int j = 0; j < ch; ++j) {
                    if (row[j] >= threshold) {
                        row_max = fmaxf(row_max, row[j]);
                    }
                }
                float sum = 0.0f;
                for (int j = 0; j < ch; ++j) {
                    sum += row[j] >= threshold ? expf(row[j] - row_max) : 0.0f;
                }
                const float w = branch_weight(weights, m);
                for (int j = 0; j < ch; ++j) {
                    const float e = row[j] >= threshold ? expf(row[j] - row_max) : 0.0f;
                    a[j] = fmaf(w, e / sum, a[j]);
                }
            }
        }
        const float* a_head = workspace.data() + g.attention + nh * ch * g.ch4;
        const T* v_head = v + nh * ch * g.length;
        T* out_head = out + nh * ch * g.length;
        for (int i = 0; i < ch; ++i) {
            for (int64_t pos = 0; pos < g.length; ++pos) {
                float acc = 0.0f;
                for (int j = 0; j < ch; ++j) {
                    acc = fmaf(a_head[i * g.ch4 + j], to_float(v_head[j * g.length + pos]), acc);
                }
                out_head[i * g.length + pos] = from_float<T>(acc);
            }
        }
    }
}

template <typename T>
cudaError_t launch_for_params(int param_dtype, const void* q, const void* k, const void* v, const void* temperature,
                              const void* weights, void* output, const Geometry& g, const Branches& branches,
                              float eps, float* workspace, cudaStream_t stream) {
    return param_dtype == EDR_FLOAT16
               ? launch<T, __half>(q, k, v, temperature, weights, output, g, branches, eps, workspace, stream)
               : launch<T, float>(q, k, v, temperature, weights, output, g, branches, eps, workspace, stream);
}

template <typename T>
void host_for_params(int param_dtype, const void* q, const void* k, const void* v, const void* temperature,
                     const void* weights, void* output, const Geometry& g, const Branches& branches, float eps) {
    if (param_dtype == EDR_FLOAT16) {
        run_on_host<T, __half>(q, k, v, temperature, weights, output, g, branches, eps);
    } else {
        run_on_host<T, float>(q, k, v, temperature, weights, output, g, branches, eps);
    }
}

} // namespace

extern "C" {

EDR_API size_t edr_transposed_attention_workspace_size(int n, int c, int h, int w, int num_heads) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || num_heads <= 0 || c % num_heads != 0) {
        return 0;
    }
    return static_cast<size_t>(make_geometry(n, c, h, w, num_heads).total) * sizeof(float);
}

EDR_API int edr_transposed_attention(const void* q, const void* k, const void* v, const void* temperature,
                                     const void* branch_weights, void* output, int dtype, int param_dtype, int n,
                                     int c, int h, int w, int num_heads, int mode, const int* topk, int num_topk,
                                     float eps, void* workspace, size_t workspace_size, void* stream) {
    Branches branches;
    cudaError_t status = validate(q, k, v, temperature, branch_weights, output, dtype, param_dtype, n, c, h, w,
                                  num_heads, mode, topk, num_topk, eps, &branches);
    if (status != cudaSuccess) {
        return static_cast<int>(status);
    }
    const Geometry g = make_geometry(n, c, h, w, num_heads);
    if (workspace == nullptr || workspace_size < static_cast<size_t>(g.total) * sizeof(float) ||
        reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    float* scratch = static_cast<float*>(workspace);
    const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
    status = dtype == EDR_FLOAT16 ? launch_for_params<__half>(param_dtype, q, k, v, temperature, branch_weights,
                                                              output, g, branches, eps, scratch, cuda_stream)
                                  : launch_for_params<float>(param_dtype, q, k, v, temperature, branch_weights,
                                                             output, g, branches, eps, scratch, cuda_stream);
    return static_cast<int>(status);
}

EDR_API int edr_transposed_attention_host(const void* q, const void* k, const void* v, const void* temperature,
                                          const void* branch_weights, void* output, int dtype, int param_dtype,
                                          int n, int c, int h, int w, int num_heads, int mode, const int* topk,
                                          int num_topk, float eps) {
    Branches branches;
    const cudaError_t status = validate(q, k, v, temperature, branch_weights, output, dtype, param_dtype, n, c,
                                        h, w, num_heads, mode, topk, num_topk, eps, &branches);
    if (status != cudaSuccess) {
        return static_cast<int>(status);
    }
    const Geometry g = make_geometry(n, c, h, w, num_heads);
    if (dtype == EDR_FLOAT16) {
        host_for_params<__half>(param_dtype, q, k, v, temperature, branch_weights, output, g, branches, eps);
    } else {
        host_for_params<float>(param_dtype, q, k, v, temperature, branch_weights, output, g, branches, eps);
    }
    return 0;
}

} // extern "C"
