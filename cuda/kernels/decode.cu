// Decode attention on a FibQuant KV cache: one query position per sequence, every query head of
// a kv head together (GQA), over the cache's parts in position order (fp16 sinks, codec slots,
// fp16 tail), split over the context (flash-decoding) and merged by `combine`.
//
// Compiled by NVRTC with the configuration's constants defined before this text (see
// src/source.rs, which is the one place that writes them):
//   D, G, THREADS, TILE                      head dim, query heads per kv head, CTA size (128),
//                                            positions per tile (64)
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

// ---------------------------------------------------------------------------------------------
// prepare: per (kv head, sequence), the scaled queries qs = q * s, the rotated ones
// qrot = P qs, and per key block the G dots qs . mean. Grid (kv heads, batch), D threads.
// queries: batch x (kv heads * G) x D. prep: per head, 2 x G x D floats (qs, then qrot).
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
        out[g * D + i] = v;
    }
    __syncthreads();
#if KEY_CODED
    // qrot_i = sum_j P[i][j] qs_j (P row-major).
    for (int g = 0; g < G; g++) {
        float acc = 0.0f;
        for (int j = 0; j < D; j++) acc = fmaf(key_rotation[i * D + j], qs[g][j], acc);
        out[G * D + g * D + i] = acc;
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
// attend: one CTA (4 warps) per (split, kv head, sequence). A split covers slot positions
// [split * split_len, ...) after the sinks (split 0 takes the sinks first), in tiles of TILE = 64
// positions. Per tile:
//   1. the tile's slots, staged in shared memory while the previous tile computes (cp.async,
//      two buffers), are decoded to binary16 rows: codewords (rotated domain, unit norm: the
//      norm scales the score, or the weight) in s_rows, [position][dim], keys for the scores,
//      then values for the weighted sums; fp16 rows are
//      copied as they are;
//   2. scores on tensor cores (mma m16n8k16, f16 in, f32 out): each warp 16 positions x the G
//      heads, the query split in two binary16 parts (hi + lo) so that it enters at f32
//      precision; coded rows score against the rotated query, fp16 rows against the scaled one;
//   3. per head the tile's maximum, weights exp(logit - tile max) in binary16 (times the value
//      norm for coded rows), the running maximum and sum;
//   4. the weighted sums on tensor cores: each warp a quarter of the dims, every head at once;
//      the tile's sums join the running ones scaled by exp(tile max - running max), so weights
//      keep binary16's relative precision within every tile.
// The blocks' key means enter the scores (q . mean from `prepare`); value means join the
// model-domain sums with each block's weight. partial: per (head, split), G maxima, G sums,
// G x D rotated sums, G x D model-domain sums.

#define WARPS (THREADS / 32)
#define PARTIAL (2 * G + 2 * G * D)
#define PAIRS ((G * D + THREADS - 1) / THREADS) // (head, dim) pairs per thread: tid + p * THREADS
#define KSTR (D + 8)       // s_rows stride (halves): rows shift by 16 bytes across banks
#define PSTR (TILE + 8)    // s_p row stride (halves)
#define NT_G ((G + 7) / 8) // 8-head tiles of the scores
#define VN (D / 32)        // 8-dim tiles of the weighted sums per warp
#define KS (D / 16)        // k-steps of a score
#define R16(x) (((x) + 15) & ~15)
#define KEY_STAGE (KEY_CODED ? R16(TILE * KEY_SLOT + 16) : 0)
#define VAL_STAGE (VAL_CODED ? R16(TILE * VAL_SLOT + 16) : 0)

// The dynamic shared memory, in bytes from its start (src/source.rs mirrors these sizes).
#define QFRAG (NT_G * KS * 4 * 32)                // u32 fragments of one query (hi, lo)
#define OFF_ROWS 0                                 // decoded key rows, then value rows
#define OFF_PC (OFF_ROWS + TILE * KSTR * 2)
#define OFF_PF (OFF_PC + 16 * PSTR * 2)
#define OFF_Q (OFF_PF + 16 * PSTR * 2)             // the scaled, then the rotated query
#define OFF_LOGIT (OFF_Q + (1 + KEY_CODED) * QFRAG * 4)
#define OFF_SEG (OFF_LOGIT + TILE * G * 4)
#define OFF_META (OFF_SEG + (VAL_CODED * VAL_CENTER) * TILE * G * 4) // knorm, vnorm, kblk, vblk
#define OFF_STAT (OFF_META + 4 * TILE * 4)         // m, l, alpha, beta: 16 each
#define OFF_KCB (OFF_STAT + 4 * 16 * 4)
#define OFF_VCB (OFF_KCB + R16(KEY_CODED * KEY_N * KEY_K * 2))
#define OFF_KS (OFF_VCB + R16(VAL_CODED * VAL_N * VAL_K * 2))
#define OFF_VS (OFF_KS + 2 * KEY_STAGE)
#define SMEM_BYTES (OFF_VS + 2 * VAL_STAGE)

__device__ __forceinline__ half f2h(float f) {
    half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ u32 pack2(half lo, half hi) { return (u32)lo | ((u32)hi << 16); }

__device__ __forceinline__ u32 shared_address(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// c += a b for a 16 x 16 (row-major fragments) and b 16 x 8 (column-major), f32 accumulators.
__device__ __forceinline__ void mma16816(float* c, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The A fragments of the 16 x 16 block at (row0, col0) of a row-major binary16 tile.
__device__ __forceinline__ void load_a(u32* a, const half* tile, int stride, int row0, int col0, int lane) {
    const half* p = tile + (row0 + (lane & 15)) * stride + col0 + (lane >> 4) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(shared_address(p)));
}

// The B fragments of the 16 x 8 block at (row0, col0) of a row-major binary16 tile whose rows
// are the k dimension (the value rows: positions x dims), transposed on the way.
__device__ __forceinline__ void load_b_trans(u32* b, const half* tile, int stride, int row0, int col0, int lane) {
    const half* p = tile + (row0 + (lane & 15)) * stride + col0;
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(b[0]), "=r"(b[1]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(shared_address(smem_dst)), "l"(gmem_src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;"); }

// Starts copying `bytes` (rounded up to 16) from global to shared memory.
__device__ __forceinline__ void stage_async(u8* dst, const u8* src, int bytes) {
    for (int i = threadIdx.x; i < (bytes + 15) / 16; i += THREADS) cp_async16(dst + 16 * i, src + 16 * i);
}

// Copies `K` binary16 values (K * 2 bytes, aligned to that).
template <int K>
__device__ __forceinline__ void copy_halves(half* dst, const half* src) {
    if (K == 8) *(int4*)dst = *(const int4*)src;
    else if (K == 4) *(uint2*)dst = *(const uint2*)src;
    else if (K == 2) *(u32*)dst = *(const u32*)src;
    else for (int j = 0; j < K; j++) dst[j] = src[j];
}

// Decodes `count` staged slots into rows of `dst` (stride KSTR): codeword `idx` of block `blk`
// at dims blk * K ..; threads over (position, block), blocks fastest.
template <int K, int NB, int BITS, int N, int NORM_BYTES, int SLOT>
__device__ __forceinline__ void decode_rows(half* dst, const u8* slots, int count, const half* codebook) {
    for (int i = threadIdx.x; i < count * NB; i += THREADS) {
        const int pos = i / NB, blk = i % NB;
        u32 idx = slot_index<BITS>(slots + pos * SLOT + NORM_BYTES, blk);
        idx = min(idx, (u32)(N - 1));
        copy_halves<K>(dst + pos * KSTR + blk * K, codebook + idx * K);
    }
}

// Copies `count` fp16 rows of D values to rows `first ..` of `dst`, 16 bytes at a time.
__device__ __forceinline__ void copy_rows(half* dst, int first, const half* rows, int count) {
    for (int i = threadIdx.x; i < count * (D / 8); i += THREADS) {
        const int r = i / (D / 8), c = i % (D / 8);
        *(int4*)(dst + (first + r) * KSTR + c * 8) = __ldg((const int4*)(rows + (size_t)r * D) + c);
    }
}

// The B fragments of a query (G x D, f32, head-major) for head tile `nt`, k-step `ks`: hi and
// lo parts.
__device__ __forceinline__ void query_fragment(const float* q, int nt, int ks, int lane, u32* hi, u32* lo) {
    const int gid = lane >> 2, tig = lane & 3, g = nt * 8 + gid;
    for (int part = 0; part < 2; part++) {
        const int col = ks * 16 + 2 * tig + 8 * part;
        half h[2], l[2];
        for (int e = 0; e < 2; e++) {
            const float x = (g < G) ? q[g * D + col + e] : 0.0f;
            h[e] = f2h(x);
            l[e] = f2h(x - h2f(h[e]));
        }
        hi[part] = pack2(h[0], h[1]);
        lo[part] = pack2(l[0], l[1]);
    }
}

struct Tile {
    int n;                  // positions in the tile (0: no tile)
    int kc, vc;             // the first kc (vc) positions are key (value) slots
    const u8* key_slots;    // slot of position t < kc: key_slots + t * KEY_SLOT
    const half* key_rows;   // fp16 row of position t >= kc: key_rows + (t - kc) * D
    const u8* val_slots;
    const half* val_rows;
    int first_slot;         // slot index of position 0 (for the block of a position)
};

// Tile `tile` of a split: negative tiles are the sinks (split 0 only).
__device__ __forceinline__ Tile make_tile(const Head* hd, int tile, int first_tile, int lo, int hi) {
    Tile t;
    const int sinks = (int)hd->sinks, kc_all = (int)hd->key_coded, vc_all = (int)hd->val_coded;
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
        t.n = max(0, min(TILE, hi - i0));
        t.kc = max(0, min(t.n, kc_all - i0));
        t.vc = max(0, min(t.n, vc_all - i0));
        t.key_slots = (const u8*)hd->key_slots + (size_t)i0 * KEY_SLOT;
        t.val_slots = (const u8*)hd->val_slots + (size_t)i0 * VAL_SLOT;
        t.key_rows = (const half*)hd->key_tail + (size_t)max(0, i0 - kc_all) * D;
        t.val_rows = (const half*)hd->val_tail + (size_t)max(0, i0 - vc_all) * D;
        t.first_slot = i0;
    }
    return t;
}

__device__ __forceinline__ void stage_tile(const Tile& t, u8* kbuf, u8* vbuf) {
#if KEY_CODED
    if (t.kc > 0) stage_async(kbuf, t.key_slots, t.kc * KEY_SLOT);
#endif
#if VAL_CODED
    if (t.vc > 0) stage_async(vbuf, t.val_slots, t.vc * VAL_SLOT);
#endif
    cp_async_commit();
}

extern "C" __global__ void __launch_bounds__(THREADS, 4)
attend(const u64* heads, int kv_heads, const float* prep, const float* key_codebook,
       const float* val_codebook, float scale, int split_len, int splits, float* partial) {
    const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hh = b * kv_heads + h;
    const Head* hd = (const Head*)(heads) + hh;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3;

    extern __shared__ int4 smem4[];
    u8* smem = (u8*)smem4;
    half* s_rows = (half*)(smem + OFF_ROWS);
    half* s_pc = (half*)(smem + OFF_PC);
    half* s_pf = (half*)(smem + OFF_PF);
    u32* s_q = (u32*)(smem + OFF_Q);
    float* s_logit = (float*)(smem + OFF_LOGIT);
    float* s_seg = (float*)(smem + OFF_SEG);
    float* s_knorm = (float*)(smem + OFF_META);
    float* s_vnorm = s_knorm + TILE;
    int* s_kblk = (int*)(s_vnorm + TILE);
    int* s_vblk = s_kblk + TILE;
    float* s_m = (float*)(smem + OFF_STAT);
    float* s_l = s_m + 16;
    float* s_alpha = s_l + 16;
    float* s_beta = s_alpha + 16;
    half* s_kcb = (half*)(smem + OFF_KCB);
    half* s_vcb = (half*)(smem + OFF_VCB);
    u8* s_kslots = smem + OFF_KS;
    u8* s_vslots = smem + OFF_VS;

    const int len = (int)hd->len, sinks = (int)hd->sinks;
    const int after = len - sinks;
    const int lo = split * split_len;
    const int hi = min(after, lo + split_len);
    const int first_tile = (split == 0) ? -((sinks + TILE - 1) / TILE) : 0;

    // Start staging the first tile, then set up while it lands.
    Tile cur = make_tile(hd, first_tile, first_tile, lo, hi);
    stage_tile(cur, s_kslots, s_vslots);

    // Zero what may be read before it is written (a weight of 0 times a stale row must be 0:
    // rows stay finite), load the codebooks as binary16.
    for (int i = tid; i < OFF_Q / 16; i += THREADS) ((int4*)smem)[i] = make_int4(0, 0, 0, 0);
    if (tid < 16) { s_m[tid] = NEG_INF; s_l[tid] = 0.0f; s_alpha[tid] = 0.0f; s_beta[tid] = 0.0f; }
#if KEY_CODED
    for (int i = tid; i < KEY_N * KEY_K; i += THREADS) s_kcb[i] = f2h(__ldg(key_codebook + i));
#endif
#if VAL_CODED
    for (int i = tid; i < VAL_N * VAL_K; i += THREADS) s_vcb[i] = f2h(__ldg(val_codebook + i));
#endif

    // The queries' fragments in shared memory (per head tile and k-step: hi0, hi1, lo0, lo1 of
    // every lane): the scaled query (fp16 keys), then the rotated one (coded keys).
    const float* q = prep + (size_t)hh * 2 * G * D;
    for (int f = warp; f < (1 + KEY_CODED) * NT_G * KS; f += WARPS) {
        const int which = f / (NT_G * KS), nt = f % (NT_G * KS) / KS, ks = f % KS;
        u32 hi2[2], lo2[2];
        query_fragment(q + which * G * D, nt, ks, lane, hi2, lo2);
        u32* dst = s_q + which * QFRAG + ((nt * KS + ks) * 4) * 32;
        dst[lane] = hi2[0]; dst[32 + lane] = hi2[1]; dst[64 + lane] = lo2[0]; dst[96 + lane] = lo2[1];
    }

    float acc_r[VN][4], acc_f[VN][4];
    for (int v = 0; v < VN; v++)
        for (int e = 0; e < 4; e++) { acc_r[v][e] = 0.0f; acc_f[v][e] = 0.0f; }
#if VAL_CODED && VAL_CENTER
    float acc_m[PAIRS];
    for (int p = 0; p < PAIRS; p++) acc_m[p] = 0.0f;
#endif

    for (int tile = first_tile, buf = 0; cur.n > 0; tile++, buf ^= 1) {
        const Tile t = cur;
        const int n = t.n, kc = t.kc, vc = t.vc;
        u8* ks_buf = s_kslots + buf * KEY_STAGE;
        u8* vs_buf = s_vslots + buf * VAL_STAGE;
        // Stage the next tile into the other buffers, then wait for this one.
        cur = make_tile(hd, tile + 1, first_tile, lo, hi);
        stage_tile(cur, s_kslots + (buf ^ 1) * KEY_STAGE, s_vslots + (buf ^ 1) * VAL_STAGE);
        cp_async_wait_one();
        __syncthreads();

        // 1. Decode every position to binary16 rows.
        if (tid < TILE) {
            float kn = 1.0f, vn = 1.0f;
#if KEY_CODED
            if (tid < kc) {
                kn = slot_norm<KEY_NORM_F32>(ks_buf + tid * KEY_SLOT);
#if KEY_CENTER
                s_kblk[tid] = block_of((const u32*)hd->key_ends, (int)hd->key_blocks, (u32)(t.first_slot + tid));
#endif
            }
#endif
#if VAL_CODED
            if (tid < vc) {
                vn = slot_norm<VAL_NORM_F32>(vs_buf + tid * VAL_SLOT);
#if VAL_CENTER
                s_vblk[tid] = block_of((const u32*)hd->val_ends, (int)hd->val_blocks, (u32)(t.first_slot + tid));
#endif
            }
#endif
            s_knorm[tid] = kn;
            s_vnorm[tid] = vn;
        }
#if KEY_CODED
        decode_rows<KEY_K, KEY_NB, KEY_BITS, KEY_N, (KEY_NORM_F32 ? 4 : 2), KEY_SLOT>(s_rows, ks_buf, kc, s_kcb);
#endif
        if (n > kc) copy_rows(s_rows, kc, t.key_rows, n - kc);
        __syncthreads();

        // 2. Scores: warp `warp` takes positions 16 warp .. 16 warp + 15.
        const int r0 = 16 * warp + gid, r1 = r0 + 8;
        if (16 * warp < n) {
            const bool any_exact = 16 * warp + 16 > kc;
#if KEY_CODED
            const bool any_code = 16 * warp < kc;
#endif
            for (int nt = 0; nt < NT_G; nt++) {
                float cr[4] = {0.0f, 0.0f, 0.0f, 0.0f}, cf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int ks = 0; ks < KS; ks++) {
                    u32 a[4];
                    load_a(a, s_rows, KSTR, 16 * warp, ks * 16, lane);
                    const u32* fs = s_q + ((nt * KS + ks) * 4) * 32 + lane;
#if KEY_CODED
                    if (any_code) {
                        const u32* fr = fs + QFRAG;
                        const u32 bh[2] = {fr[0], fr[32]}, bl[2] = {fr[64], fr[96]};
                        mma16816(cr, a, bh);
                        mma16816(cr, a, bl);
                    }
#endif
                    if (any_exact) {
                        const u32 bh[2] = {fs[0], fs[32]}, bl[2] = {fs[64], fs[96]};
                        mma16816(cf, a, bh);
                        mma16816(cf, a, bl);
                    }
                }
                for (int e = 0; e < 4; e++) {
                    const int row = (e < 2) ? r0 : r1, g = nt * 8 + 2 * tig + (e & 1);
                    if (g >= G) continue;
                    float logit = cf[e];
#if KEY_CODED
                    if (row < kc) {
                        logit = cr[e] * s_knorm[row];
#if KEY_CENTER
                        logit += __ldg((const float*)hd->qmean + (size_t)s_kblk[row] * G + g);
#endif
                    }
#endif
                    s_logit[row * G + g] = (row < n) ? logit * scale : NEG_INF;
                }
            }
        }
        __syncthreads();

        // 3. Weights: warp w takes heads w, w + 4, ...; lanes over the tile's positions.
        for (int g = warp; g < G; g += WARPS) {
            float e0 = NEG_INF, e1 = NEG_INF;
            if (lane < n) e0 = s_logit[lane * G + g];
            if (lane + 32 < n) e1 = s_logit[(lane + 32) * G + g];
            const float mt = warp_max(fmaxf(e0, e1));
            e0 = (lane < n) ? __expf(e0 - mt) : 0.0f;
            e1 = (lane + 32 < n) ? __expf(e1 - mt) : 0.0f;
            const float st = warp_sum(e0 + e1);
            s_logit[lane * G + g] = e0;
            s_logit[(lane + 32) * G + g] = e1;
            const int p0 = lane, p1 = lane + 32;
            s_pc[g * PSTR + p0] = f2h(p0 < vc ? e0 * s_vnorm[p0] : 0.0f);
            s_pc[g * PSTR + p1] = f2h(p1 < vc ? e1 * s_vnorm[p1] : 0.0f);
            s_pf[g * PSTR + p0] = f2h(p0 >= vc ? e0 : 0.0f);
            s_pf[g * PSTR + p1] = f2h(p1 >= vc ? e1 : 0.0f);
            if (lane == 0) {
                const float m_old = s_m[g], m_new = fmaxf(m_old, mt);
                const float alpha = (m_old == NEG_INF) ? 0.0f : __expf(m_old - m_new);
                const float beta = __expf(mt - m_new);
                s_l[g] = s_l[g] * alpha + beta * st;
                s_m[g] = m_new;
                s_alpha[g] = alpha;
                s_beta[g] = beta;
            }
        }
        // The value rows replace the key rows (the scores are done with them).
#if VAL_CODED
        decode_rows<VAL_K, VAL_NB, VAL_BITS, VAL_N, (VAL_NORM_F32 ? 4 : 2), VAL_SLOT>(s_rows, vs_buf, vc, s_vcb);
#endif
        if (n > vc) copy_rows(s_rows, vc, t.val_rows, n - vc);
        __syncthreads();

#if VAL_CODED && VAL_CENTER
        // Each block's mean with the block's weight in this tile (model domain).
        for (int p = 0; p < PAIRS; p++) {
            const int pair = tid + p * THREADS;
            if (pair < G * D) acc_m[p] *= s_alpha[pair / D];
        }
        if (vc > 0) {
            for (int i = tid; i < vc * G; i += THREADS) {
                const int pos = i / G, g = i % G;
                if (pos == 0 || s_vblk[pos] != s_vblk[pos - 1]) {
                    float sum = 0.0f;
                    int e = pos;
                    do { sum += s_logit[e * G + g]; e++; } while (e < vc && s_vblk[e] == s_vblk[pos]);
                    s_seg[pos * G + g] = sum;
                }
            }
            __syncthreads();
            const half* means = (const half*)hd->val_means;
            for (int pos = 0; pos < vc; pos++) {
                if (pos > 0 && s_vblk[pos] == s_vblk[pos - 1]) continue;
                const half* mean = means + (size_t)s_vblk[pos] * D;
                for (int p = 0; p < PAIRS; p++) {
                    const int pair = tid + p * THREADS, g = pair / D, i = pair % D;
                    if (pair >= G * D) break;
                    acc_m[p] = fmaf(s_beta[g] * s_seg[pos * G + g], h2f(mean[i]), acc_m[p]);
                }
            }
        }
#endif

        // 4. Weighted sums: warp w takes dims [w D / 4, (w + 1) D / 4), every head.
        {
            const float al0 = s_alpha[gid], al1 = s_alpha[gid + 8];
            const float be0 = s_beta[gid], be1 = s_beta[gid + 8];
            for (int v = 0; v < VN; v++) {
                float cr[4] = {0.0f, 0.0f, 0.0f, 0.0f}, cf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int ks = 0; ks < TILE / 16; ks++) {
                    if (ks * 16 >= n) break;
                    u32 bb[2];
                    load_b_trans(bb, s_rows, KSTR, ks * 16, warp * (D / 4) + v * 8, lane);
#if VAL_CODED
                    if (ks * 16 < vc) {
                        u32 a[4];
                        load_a(a, s_pc, PSTR, 0, ks * 16, lane);
                        mma16816(cr, a, bb);
                    }
#endif
                    if (ks * 16 + 16 > vc) {
                        u32 a[4];
                        load_a(a, s_pf, PSTR, 0, ks * 16, lane);
                        mma16816(cf, a, bb);
                    }
                }
                for (int e = 0; e < 4; e++) {
                    const float al = (e < 2) ? al0 : al1, be = (e < 2) ? be0 : be1;
                    acc_r[v][e] = acc_r[v][e] * al + be * cr[e];
                    acc_f[v][e] = acc_f[v][e] * al + be * cf[e];
                }
            }
        }
        __syncthreads(); // the tile's shared buffers are rewritten by the next tile
    }

    // The partial: maxima, sums, the rotated sums, the model-domain sums.
    float* out = partial + ((size_t)hh * splits + split) * PARTIAL;
    if (tid < G) { out[tid] = s_m[tid]; out[G + tid] = s_l[tid]; }
    float* rot = out + 2 * G;
    float* orig = rot + G * D;
    for (int v = 0; v < VN; v++) {
        const int n0 = warp * (D / 4) + v * 8;
        for (int e = 0; e < 4; e++) {
            const int g = (e < 2) ? gid : gid + 8, dim = n0 + 2 * tig + (e & 1);
            if (g < G) {
                rot[g * D + dim] = acc_r[v][e];
                orig[g * D + dim] = acc_f[v][e];
            }
        }
    }
#if VAL_CODED && VAL_CENTER
    __syncthreads();
    for (int p = 0; p < PAIRS; p++) {
        const int pair = tid + p * THREADS;
        if (pair < G * D) orig[pair] += acc_m[p];
    }
#endif
}

// The layout facts the host mirrors (src/gpu.rs checks them when it loads the module).
extern "C" __global__ void layout_check(u32* out) {
    out[0] = SMEM_BYTES;
    out[1] = sizeof(Head);
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
