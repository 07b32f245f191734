// Encoding on the GPU: rows of D floats into the CPU runtime's slots (norm, then packed
// indices), one CTA of D threads per row.
//
// Compiled by NVRTC with the configuration's constants defined before this text (src/source.rs):
//   D, K, N, BITS, NB (= D / K), NORM_F32, SLOT, SCALAR (1: K = 1 with sorted codewords)
//
// The steps are the runtime's `Codec::encode`: the norm in f64, the stored norm (binary16
// round-to-nearest-even, or f32), the unit vector `x * (1 / norm)` in f32, the rotation `P u`,
// then per block the nearest codeword: for the scalar code the sorted codewords' midpoints
// (thresholds), otherwise an exhaustive search over the codebook in shared memory (the lowest
// index among equal distances). `status[row]`: 0 encoded, 1 a non-finite value, 2 a norm the
// norm format cannot hold.

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short half;
typedef unsigned char u8;

#define HALF_MAX 65504.0

__device__ __forceinline__ half f2h(float f) {
    half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float h2f(half h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

extern "C" __global__ void encode(const float* rows, int count, const float* rotation,
                                  const float* codebook, const float* norms_sq, u8* slots,
                                  u32* status) {
    extern __shared__ float smem[];
    float* s_cb = smem;                    // N x K (not used by the scalar code)
    float* s_nsq = s_cb + (SCALAR ? 0 : N * K);
    float* s_unit = s_nsq + (SCALAR ? 0 : N); // D
    float* s_rot = s_unit + D;             // D
    double* s_red = (double*)(s_rot + D + (D & 1)); // D / 32 partial sums
    u32* s_idx = (u32*)(s_red + D / 32 + 1);    // NB
    __shared__ int s_bad;

    const int i = threadIdx.x;
#if !SCALAR
    for (int j = i; j < N * K; j += D) s_cb[j] = codebook[j];
    for (int j = i; j < N; j += D) s_nsq[j] = norms_sq[j];
#endif
    for (int row = blockIdx.x; row < count; row += gridDim.x) {
        const float x = rows[(size_t)row * D + i];
        if (i == 0) s_bad = 0;
        __syncthreads();
        if (!isfinite(x)) s_bad = 1;
        double sq = (double)x * (double)x;
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        if ((i & 31) == 0) s_red[i >> 5] = sq;
        __syncthreads();
        double total = 0.0;
        for (int w = 0; w < D / 32; w++) total += s_red[w];
        const double norm = sqrt(total);
        u8* slot = slots + (size_t)row * SLOT;
        float stored;
        int bad = s_bad;
#if NORM_F32
        stored = (float)norm;
        if (!bad && !isfinite(stored)) bad = 2;
        if (i < 4) slot[i] = (u8)(__float_as_uint(stored) >> (8 * i));
#else
        const half h = f2h((float)norm);
        stored = h2f(h);
        if (!bad && (norm > HALF_MAX || !isfinite(stored))) bad = 2;
        if (i < 2) slot[i] = (u8)(h >> (8 * i));
#endif
        if (bad) {
            if (i == 0) status[row] = (u32)bad;
            __syncthreads();
            continue;
        }
        // Zero norm (or one that rounds to zero): every index 0, as on the CPU.
        const bool live = stored > 0.0f && norm > 0.0;
        if (live) {
            const double inv = 1.0 / norm;
            s_unit[i] = (inv <= 3.4028234663852886e38) ? x * (float)inv : (float)((double)x * inv);
        }
        __syncthreads();
        if (live) {
            float acc = 0.0f;
            for (int j = 0; j < D; j++) acc = fmaf(rotation[i * D + j], s_unit[j], acc);
            s_rot[i] = acc;
        }
        __syncthreads();
        if (i < NB) {
            u32 best = 0;
            if (live) {
#if SCALAR
                // Sorted codewords: the index is the number of midpoints below the value.
                const float y = s_rot[i];
                for (int c = 0; c + 1 < N; c++)
                    if (y > 0.5f * (codebook[c] + codebook[c + 1])) best = c + 1;
#else
                const float* y = s_rot + i * K;
                float best_d = 3.4e38f;
                for (int c = 0; c < N; c++) {
                    float dot = 0.0f;
                    for (int j = 0; j < K; j++) dot = fmaf(y[j], s_cb[c * K + j], dot);
                    const float dist = s_nsq[c] - 2.0f * dot;
                    if (dist < best_d) { best_d = dist; best = c; }
                }
#endif
            }
            s_idx[i] = best;
        }
        __syncthreads();
        // Pack: thread j writes index byte j (bits 8j .. 8j + 7, least significant bit first).
        const int index_bytes = SLOT - (NORM_F32 ? 4 : 2);
        if (i < index_bytes) {
            u32 byte = 0;
            const int first = (8 * i) / BITS, last = min(NB - 1, (8 * i + 7) / BITS);
            for (int b = first; b <= last; b++) {
                const int shift = b * BITS - 8 * i; // where block b's bit 0 lands in this byte
                const u64 v = (u64)s_idx[b];
                byte |= (u32)(shift >= 0 ? (v << shift) : (v >> -shift)) & 0xffu;
            }
            slot[(NORM_F32 ? 4 : 2) + i] = (u8)byte;
        }
        if (i == 0) status[row] = 0;
        __syncthreads();
    }
}
