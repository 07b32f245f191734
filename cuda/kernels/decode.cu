// Decode attention on a FibQuant KV cache: one query position per sequence, every query head of
// a kv head together (GQA), over the cache's parts in position order (fp16 sinks, codec slots,
// fp16 tail), split over the context (flash-decoding) and merged by `combine`.
//
// Compiled by NVRTC with the configuration's constants defined before this text (see
// src/source.rs, which is the one place that writes them):
//   D, G, THREADS, PPT, TILE                 head dim, query heads per kv head, CTA size,
//                                            positions per thread, positions per tile (THREADS * PPT)
//   KEY_CODED, KEY_K, KEY_BITS, KEY_NB, KEY_NORM_F32, KEY_SLOT, KEY_N, KEY_CENTER   (and VAL_*)
//
// The slot layout is the CPU runtime's: the norm (binary16 or f32, little endian), then NB
// indices of BITS bits each, least significant bit first. Codebooks are f32, N x K row-major.
// A head's slots start 16-byte aligned and tiles start at multiples of TILE slots, so a tile of
// slots is copied to shared memory with 16-byte loads.

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short half; // binary16 bits (no cuda_fp16.h: NVRTC needs no include path)
typedef unsigned char u8;

__device__ __forceinline__ float h2f(half h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// One kv head of one sequence: device addresses of its parts and their counts. Every field is
// 64 bits wide so that the host writes it as an array of u64 (src/layout.rs, HEAD_FIELDS).
struct Head {
    u64 key_slots, val_slots;   // u8*
    u64 key_sinks, val_sinks;   // half* (sinks x D)
    u64 key_tail, val_tail;     // half* (tail rows x D)
    u64 key_means, val_means;   // half* (blocks x D), 0 without centering
    u64 key_ends, val_ends;     // u32* cumulative block ends, 0 without centering
    u64 key_scale;              // float* (D), 0 without scaling
    u64 qmean;                  // float* scratch: per key block, G query . mean dots
    u64 len, sinks, key_coded, val_coded, key_blocks, val_blocks;
};

#define WARPS (THREADS / 32)
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Index `blk` of a slot's packed indices (the bytes after the norm). `BITS` is a constant: the
// compiler keeps one branch. Reads up to 3 bytes past the index's first byte: staging buffers
// are padded for it.
template <int BITS>
__device__ __forceinline__ u32 slot_index(const u8* idx, int blk) {
    if (BITS == 8) return idx[blk];
    if (BITS == 16) return (u32)idx[2 * blk] | ((u32)idx[2 * blk + 1] << 8);
    const int bit = blk * BITS;
    const u8* p = idx + (bit >> 3);
    const u32 w = (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16);
    return (w >> (bit & 7)) & ((1u << BITS) - 1u);
}

template <bool F32>
__device__ __forceinline__ float slot_norm(const u8* s) {
    if (F32) {
        u32 b = (u32)s[0] | ((u32)s[1] << 8) | ((u32)s[2] << 16) | ((u32)s[3] << 24);
        return __int_as_float((int)b);
    }
    return h2f((half)((unsigned short)s[0] | ((unsigned short)s[1] << 8)));
}

// First block whose cumulative end exceeds `i` (the block slot `i` belongs to).
__device__ __forceinline__ int block_of(const u32* ends, int blocks, u32 i) {
    int lo = 0, hi = blocks - 1;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (__ldg(ends + mid) > i) hi = mid; else lo = mid + 1;
    }
    return lo;
}

// Copies `bytes` (a multiple of 16, 16-byte aligned both sides) from global to shared memory.
__device__ __forceinline__ void stage(u8* dst, const u8* src, int bytes) {
    const int4* s = (const int4*)src;
    int4* t = (int4*)dst;
    for (int i = threadIdx.x; i < bytes / 16; i += THREADS) t[i] = __ldg(s + i);
}

// ---------------------------------------------------------------------------------------------
// prepare: per (kv head, sequence), the scaled queries qs = q * s, the rotated ones
// qrot = P qs, and per key block the G dots qs . mean. Grid (kv heads, batch), D threads.
// queries: batch x (kv heads * G) x D. prep: per head, 2 x D x G floats (qs, then qrot), dim-major
// so that a dim's G values are one vector load.
extern "C" __global__ void prepare(const u64* heads, int kv_heads, const float* queries,
                                   const float* key_rotation, float* prep) {
    const int h = blockIdx.x, b = blockIdx.y, hh = b * kv_heads + h;
    const Head* hd = (const Head*)(heads) + hh;
    const int i = threadIdx.x;
    __shared__ float qs[G][D];
    const float* scale = (const float*)hd->key_scale;
    const float s = scale ? scale[i] : 1.0f;
    float* out = prep + (size_t)hh * 2 * G * D;
    for (int g = 0; g < G; g++) {
        const float v = queries[((size_t)hh * G + g) * D + i] * s;
        qs[g][i] = v;
        out[i * G + g] = v;
    }
    __syncthreads();
#if KEY_CODED
    // qrot_i = sum_j P[i][j] qs_j (P row-major).
    for (int g = 0; g < G; g++) {
        float acc = 0.0f;
        for (int j = 0; j < D; j++) acc = fmaf(key_rotation[i * D + j], qs[g][j], acc);
        out[G * D + i * G + g] = acc;
    }
#endif
#if KEY_CODED && KEY_CENTER
    // One warp per block: lanes over the dims, G dots each.
    const half* means = (const half*)hd->key_means;
    float* qmean = (float*)hd->qmean;
    const int lane = i & 31, warp = i >> 5;
    for (int blk = warp; blk < (int)hd->key_blocks; blk += D / 32) {
        float dot[G];
        for (int g = 0; g < G; g++) dot[g] = 0.0f;
        for (int j = lane; j < D; j += 32) {
            const float m = h2f(means[(size_t)blk * D + j]);
            for (int g = 0; g < G; g++) dot[g] = fmaf(qs[g][j], m, dot[g]);
        }
        for (int g = 0; g < G; g++) {
            const float t = warp_sum(dot[g]);
            if (lane == 0) qmean[(size_t)blk * G + g] = t;
        }
    }
#endif
}

// ---------------------------------------------------------------------------------------------
// attend: one CTA per (split, kv head, sequence). A split covers slot positions
// [split * split_len, ...) after the sinks (split 0 also takes the sinks first), in tiles of
// TILE positions: scores (one thread per position), an online softmax per query head, then
// the weighted sums: codes in the rotated domain (lanes over blocks), fp16 rows and the
// blocks' value means in the model's domain (threads over (head, dim) pairs).
// partial: per (head, split), G maxima, G sums, G x D rotated, G x D model-domain.

#define PAIRS ((G * D + THREADS - 1) / THREADS) // (head, dim) pairs per thread; pair = tid + p * THREADS < G * D
#define PARTIAL (2 * G + 2 * G * D)

#if VAL_CODED
#define V_LANES (VAL_NB < 32 ? VAL_NB : 32)       // lanes per position
#define V_PER_ITER (32 / V_LANES)                 // positions a warp takes at once
#define V_BPL (VAL_NB / V_LANES)                  // blocks per lane
#endif

struct Tile {
    int n;                  // positions in the tile
    int kc, vc;             // the first kc (vc) positions are key (value) slots
    const u8* key_slots;    // slot of position t < kc: key_slots + t * KEY_SLOT
    const half* key_rows;   // fp16 row of position t >= kc: key_rows + (t - kc) * D
    const u8* val_slots;
    const half* val_rows;
    int first_slot;         // slot index of position 0 (for the block of a position)
};

extern "C" __global__ void __launch_bounds__(THREADS)
attend(const u64* heads, int kv_heads, const float* prep, const float* key_codebook,
       const float* val_codebook, float scale, int split_len, int splits, float* partial) {
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hh = b * kv_heads + h;
    const Head* hd = (const Head*)(heads) + hh;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    extern __shared__ float4 smem4[];
    float* smem = (float*)smem4;
    float* s_qs = smem;                     // D x G
    float* s_qrot = s_qs + G * D;           // D x G
    float* s_w = s_qrot + G * D;            // TILE x G: logits, then weights
    float* s_wn = s_w + TILE * G;           // TILE x G: weight x value norm
    float* s_red = s_wn + TILE * G;         // WARPS x G
    float* s_seg = s_red + WARPS * G;       // TILE x G: value-mean segment sums
    int* s_vblk = (int*)(s_seg + TILE * G); // TILE
    float* s_kcb = (float*)(s_vblk + TILE); // KEY_N x KEY_K
    // Codebooks take whole 16-byte chunks, so that the slot buffers after them stay aligned.
#if KEY_CODED
    float* s_vcb = s_kcb + ((KEY_N * KEY_K + 3) & ~3);
#else
    float* s_vcb = s_kcb;
#endif
#if VAL_CODED
    u8* s_kslots = (u8*)(s_vcb + ((VAL_N * VAL_K + 3) & ~3));
#else
    u8* s_kslots = (u8*)s_vcb;
#endif
    u8* s_vslots = s_kslots + (KEY_CODED ? TILE * KEY_SLOT + 16 : 0);

    const float* q = prep + (size_t)hh * 2 * G * D;
    for (int i = tid; i < 2 * G * D; i += THREADS) s_qs[i] = q[i];
#if KEY_CODED
    for (int i = tid; i < KEY_N * KEY_K; i += THREADS) s_kcb[i] = __ldg(key_codebook + i);
#endif
#if VAL_CODED
    for (int i = tid; i < VAL_N * VAL_K; i += THREADS) s_vcb[i] = __ldg(val_codebook + i);
#endif

    const int len = (int)hd->len, sinks = (int)hd->sinks;
    const int kc_all = (int)hd->key_coded, vc_all = (int)hd->val_coded;
    const int after = len - sinks;
    const int lo = split * split_len;
    const int hi = min(after, lo + split_len);

    float m_run[G], l_run[G];
    for (int g = 0; g < G; g++) { m_run[g] = NEG_INF; l_run[g] = 0.0f; }
    float acc_o[PAIRS];
    for (int p = 0; p < PAIRS; p++) acc_o[p] = 0.0f;
#if VAL_CODED
    float acc_r[V_BPL][VAL_K][G];
    for (int a = 0; a < V_BPL; a++)
        for (int c = 0; c < VAL_K; c++)
            for (int g = 0; g < G; g++) acc_r[a][c][g] = 0.0f;
#endif
    __syncthreads();

    // Tile -1 (split 0 only): the sinks, TILE at a time; then the slot positions.
    const int first_tile = (split == 0) ? -((sinks + TILE - 1) / TILE) : 0;
    for (int tile = first_tile; ; tile++) {
        Tile t;
        if (tile < 0) {
            const int row0 = (tile - first_tile) * TILE;
            t.n = min(TILE, sinks - row0);
            t.kc = 0; t.vc = 0;
            t.key_slots = 0; t.val_slots = 0;
            t.key_rows = (const half*)hd->key_sinks + (size_t)row0 * D;
            t.val_rows = (const half*)hd->val_sinks + (size_t)row0 * D;
            t.first_slot = 0;
        } else {
            const int i0 = lo + tile * TILE;
            if (i0 >= hi) break;
            t.n = min(TILE, hi - i0);
            t.kc = max(0, min(t.n, kc_all - i0));
            t.vc = max(0, min(t.n, vc_all - i0));
            t.key_slots = (const u8*)hd->key_slots + (size_t)i0 * KEY_SLOT;
            t.val_slots = (const u8*)hd->val_slots + (size_t)i0 * VAL_SLOT;
            t.key_rows = (const half*)hd->key_tail + (size_t)max(0, i0 - kc_all) * D;
            t.val_rows = (const half*)hd->val_tail + (size_t)max(0, i0 - vc_all) * D;
            t.first_slot = i0;
        }
        if (t.n <= 0) continue;

        // Stage the tile's slots (whole 16-byte chunks; the tile start is aligned).
#if KEY_CODED
        if (t.kc > 0) stage(s_kslots, t.key_slots, (t.kc * KEY_SLOT + 15) & ~15);
#endif
#if VAL_CODED
        if (t.vc > 0) stage(s_vslots, t.val_slots, (t.vc * VAL_SLOT + 15) & ~15);
#endif
        __syncthreads();

        // Scores: thread `tid` takes positions tid + r * THREADS. Queries are dim-major
        // (s_qs[j * G + g]): a dim's G values load once for the thread's PPT positions.
        float logit[PPT][G];
        for (int r = 0; r < PPT; r++)
            for (int g = 0; g < G; g++) logit[r][g] = 0.0f;
#if KEY_CODED
        {
            const u8* idx[PPT];
            bool code[PPT];
            for (int r = 0; r < PPT; r++) {
                const int pos = tid + r * THREADS;
                code[r] = pos < t.kc;
                idx[r] = s_kslots + (code[r] ? pos : 0) * KEY_SLOT + (KEY_NORM_F32 ? 4 : 2);
            }
            for (int blk = 0; blk < KEY_NB; blk++) {
                float qb[KEY_K][G];
                for (int j = 0; j < KEY_K; j++)
                    for (int g = 0; g < G; g++) qb[j][g] = s_qrot[(blk * KEY_K + j) * G + g];
                for (int r = 0; r < PPT; r++) {
                    if (!code[r]) continue;
                    const float* c = s_kcb + slot_index<KEY_BITS>(idx[r], blk) * KEY_K;
                    for (int j = 0; j < KEY_K; j++) {
                        const float cj = c[j];
                        for (int g = 0; g < G; g++) logit[r][g] = fmaf(qb[j][g], cj, logit[r][g]);
                    }
                }
            }
            for (int r = 0; r < PPT; r++) {
                if (!code[r]) continue;
                const int pos = tid + r * THREADS;
                const float norm = slot_norm<KEY_NORM_F32>(s_kslots + pos * KEY_SLOT);
                for (int g = 0; g < G; g++) logit[r][g] *= norm;
#if KEY_CENTER
                const int blk = block_of((const u32*)hd->key_ends, (int)hd->key_blocks,
                                         (u32)(t.first_slot + pos));
                const float* qm = (const float*)hd->qmean + (size_t)blk * G;
                for (int g = 0; g < G; g++) logit[r][g] += qm[g];
#endif
            }
        }
#endif
        for (int r = 0; r < PPT; r++) {
            const int pos = tid + r * THREADS;
            if (pos < t.kc || pos >= t.n) continue;
            const half* row = t.key_rows + (size_t)(pos - t.kc) * D;
            for (int j = 0; j < D; j += 8) {
                const int4 raw = __ldg((const int4*)(row + j));
                const half* hv = (const half*)&raw;
                for (int e = 0; e < 4; e++) {
                    const float2 f = make_float2(h2f(hv[2 * e]), h2f(hv[2 * e + 1]));
                    for (int g = 0; g < G; g++) {
                        logit[r][g] = fmaf(s_qs[(j + 2 * e) * G + g], f.x, logit[r][g]);
                        logit[r][g] = fmaf(s_qs[(j + 2 * e + 1) * G + g], f.y, logit[r][g]);
                    }
                }
            }
        }
        for (int r = 0; r < PPT; r++) {
            const bool live = tid + r * THREADS < t.n;
            for (int g = 0; g < G; g++) logit[r][g] = live ? logit[r][g] * scale : NEG_INF;
        }

        // Online softmax: the tile's maximum per head, then weights and sums.
        for (int g = 0; g < G; g++) {
            float m = logit[0][g];
            for (int r = 1; r < PPT; r++) m = fmaxf(m, logit[r][g]);
            m = warp_max(m);
            if (lane == 0) s_red[warp * G + g] = m;
        }
        __syncthreads();
        float alpha[G], m_new[G], wsum[G];
        for (int g = 0; g < G; g++) {
            float m = m_run[g];
            for (int w = 0; w < WARPS; w++) m = fmaxf(m, s_red[w * G + g]);
            m_new[g] = m;
            alpha[g] = (m_run[g] == NEG_INF) ? 0.0f : __expf(m_run[g] - m);
            wsum[g] = 0.0f;
        }
        for (int r = 0; r < PPT; r++) {
            const int pos = tid + r * THREADS;
            if (pos >= t.n) continue;
            float wt[G];
            for (int g = 0; g < G; g++) {
                wt[g] = __expf(logit[r][g] - m_new[g]);
                wsum[g] += wt[g];
                s_w[pos * G + g] = wt[g];
            }
#if VAL_CODED
            if (pos < t.vc) {
                const float vn = slot_norm<VAL_NORM_F32>(s_vslots + pos * VAL_SLOT);
                for (int g = 0; g < G; g++) s_wn[pos * G + g] = wt[g] * vn;
#if VAL_CENTER
                s_vblk[pos] = block_of((const u32*)hd->val_ends, (int)hd->val_blocks,
                                       (u32)(t.first_slot + pos));
#endif
            }
#endif
        }
        __syncthreads(); // s_red is read above before it is rewritten below
        for (int g = 0; g < G; g++) {
            const float s = warp_sum(wsum[g]);
            if (lane == 0) s_red[warp * G + g] = s;
        }
        __syncthreads();
        for (int g = 0; g < G; g++) {
            float s = 0.0f;
            for (int w = 0; w < WARPS; w++) s += s_red[w * G + g];
            l_run[g] = l_run[g] * alpha[g] + s;
            m_run[g] = m_new[g];
        }

        // Rescale the accumulators to the new maxima.
        for (int p = 0; p < PAIRS; p++)
            if (tid + p * THREADS < G * D) acc_o[p] *= alpha[(tid + p * THREADS) / D];
#if VAL_CODED
        for (int a = 0; a < V_BPL; a++)
            for (int c = 0; c < VAL_K; c++)
                for (int g = 0; g < G; g++) acc_r[a][c][g] *= alpha[g];

        // Value codes, rotated domain: lanes over blocks, warps over positions.
        {
            const int sub = lane / V_LANES, l = lane % V_LANES;
            for (int t0 = warp * V_PER_ITER; t0 < t.vc; t0 += WARPS * V_PER_ITER) {
                const int pos = t0 + sub;
                if (pos < t.vc) {
                    const u8* idx = s_vslots + pos * VAL_SLOT + (VAL_NORM_F32 ? 4 : 2);
                    float wn[G];
                    for (int g = 0; g < G; g++) wn[g] = s_wn[pos * G + g];
                    for (int a = 0; a < V_BPL; a++) {
                        const int blk = l + a * V_LANES;
                        const float* c = s_vcb + slot_index<VAL_BITS>(idx, blk) * VAL_K;
                        for (int j = 0; j < VAL_K; j++) {
                            const float cj = c[j];
                            for (int g = 0; g < G; g++) acc_r[a][j][g] = fmaf(wn[g], cj, acc_r[a][j][g]);
                        }
                    }
                }
            }
        }
#if VAL_CENTER
        // Each block's mean with the block's total weight in this tile.
        if (t.vc > 0) {
            __syncthreads();
            // Segment starts: positions whose block differs from the previous position's.
            for (int i = tid; i < t.vc * G; i += THREADS) {
                const int pos = i / G, g = i % G;
                if (pos == 0 || s_vblk[pos] != s_vblk[pos - 1]) {
                    float s = 0.0f;
                    int e = pos;
                    do { s += s_w[e * G + g]; e++; } while (e < t.vc && s_vblk[e] == s_vblk[pos]);
                    s_seg[pos * G + g] = s;
                }
            }
            __syncthreads();
            const half* means = (const half*)hd->val_means;
            for (int pos = 0; pos < t.vc; pos++) {
                if (pos > 0 && s_vblk[pos] == s_vblk[pos - 1]) continue;
                const half* mean = means + (size_t)s_vblk[pos] * D;
                for (int p = 0; p < PAIRS; p++) {
                    const int pair = tid + p * THREADS, g = pair / D, i = pair % D;
                    if (pair >= G * D) break;
                    acc_o[p] = fmaf(s_seg[pos * G + g], h2f(mean[i]), acc_o[p]);
                }
            }
        }
#endif
#endif
        // fp16 value rows, model domain: threads over (head, dim) pairs.
        for (int pos = t.vc; pos < t.n; pos++) {
            const half* row = t.val_rows + (size_t)(pos - t.vc) * D;
            for (int p = 0; p < PAIRS; p++) {
                const int pair = tid + p * THREADS, g = pair / D, i = pair % D;
                if (pair >= G * D) break;
                acc_o[p] = fmaf(s_w[pos * G + g], h2f(row[i]), acc_o[p]);
            }
        }
        __syncthreads(); // the tile's shared buffers are rewritten by the next tile
    }

    // Write the partial: maxima, sums, the rotated sums (warps added), the model-domain sums.
    float* out = partial + ((size_t)hh * splits + split) * PARTIAL;
    if (tid < G) { out[tid] = m_run[tid]; out[G + tid] = l_run[tid]; }
    float* rot = out + 2 * G;
    float* orig = rot + G * D;
    for (int p = 0; p < PAIRS; p++) {
        const int pair = tid + p * THREADS;
        if (pair < G * D) orig[pair] = acc_o[p];
    }
#if VAL_CODED
    // Reuse the weight buffers: G x D per warp would not fit, so warps add in turn.
    float* s_sum = s_w; // needs G * D floats: TILE * G * 2 >= G * D holds for TILE >= D / 2
    for (int i = tid; i < G * D; i += THREADS) s_sum[i] = 0.0f;
    __syncthreads();
    const int sub = lane / V_LANES, l = lane % V_LANES;
    for (int w = 0; w < WARPS; w++) {
        if (warp == w) {
            for (int s2 = 0; s2 < V_PER_ITER; s2++) {
                if (sub == s2) {
                    for (int a = 0; a < V_BPL; a++)
                        for (int j = 0; j < VAL_K; j++)
                            for (int g = 0; g < G; g++)
                                s_sum[g * D + (l + a * V_LANES) * VAL_K + j] += acc_r[a][j][g];
                }
                __syncwarp();
            }
        }
        __syncthreads();
    }
    for (int i = tid; i < G * D; i += THREADS) rot[i] = s_sum[i];
#else
    for (int i = tid; i < G * D; i += THREADS) rot[i] = 0.0f;
#endif
}

// ---------------------------------------------------------------------------------------------
// combine: per (kv head, sequence), merges the splits' partials and writes each query head's
// output: (P^T rotated + model-domain) / sum. Grid (kv heads, batch), D threads.
extern "C" __global__ void combine(int kv_heads, const float* partial, int splits,
                                   const float* val_rotation, float* out) {
    const int h = blockIdx.x, b = blockIdx.y, hh = b * kv_heads + h, i = threadIdx.x;
    __shared__ float s_rot[D];
    const float* base = partial + (size_t)hh * splits * PARTIAL;
    for (int g = 0; g < G; g++) {
        float m = NEG_INF;
        for (int s = 0; s < splits; s++) m = fmaxf(m, base[(size_t)s * PARTIAL + g]);
        float l = 0.0f, rot = 0.0f, orig = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float* p = base + (size_t)s * PARTIAL;
            if (p[g] == NEG_INF) continue;
            const float f = __expf(p[g] - m);
            l = fmaf(p[G + g], f, l);
            rot = fmaf(p[2 * G + g * D + i], f, rot);
            orig = fmaf(p[2 * G + G * D + g * D + i], f, orig);
        }
        float v = orig;
#if VAL_CODED
        __syncthreads();
        s_rot[i] = rot;
        __syncthreads();
        // (P^T r)_i = sum_j P[j][i] r_j: P row-major, thread i reads column i (coalesced).
        for (int j = 0; j < D; j++) v = fmaf(val_rotation[j * D + i], s_rot[j], v);
#endif
        out[((size_t)hh * G + g) * D + i] = v / l;
    }
}
