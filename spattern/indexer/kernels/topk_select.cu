// Top-k key-block selection per query-block row, fused into one launch.
//
// One CTA per (query block row r, batch element b). It turns the row's C block scores into
// 64-bit keys that sort by (score descending, key-block index ascending) -- forced blocks get
// +inf, blocks outside the causal range sort below everything --, bitonic-sorts them in shared
// memory, keeps the first count_r = row_ptr[r+1] - row_ptr[r] (= min(k, available), known on
// the host from the shape), sorts those ascending by block index and writes them to col_idx,
// with block_kind PROGRAM (1) for blocks that hold a key later than some query of the row
// (causal) and FULL (0) otherwise. Same semantics as spattern.indexer.select._select (the torch
// twin it is tested against).
//
// Limits: C <= 2048 key blocks (N <= 131,072 with 64-token blocks), count_r <= 1024.

#define MAX_C 2048
#define MAX_K 1024

__device__ __forceinline__ unsigned int order_bits(float f) {
    // a total order on floats that unsigned comparison follows
    unsigned int u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ void bitonic_desc(unsigned long long* a, int n) {
    // sorts a[0..n) descending; n a power of two; all threads of the CTA take part
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                int j = i ^ stride;
                if (j > i) {
                    bool desc = (i & size) == 0;
                    unsigned long long x = a[i], y = a[j];
                    if (desc ? (x < y) : (x > y)) { a[i] = y; a[j] = x; }
                }
            }
            __syncthreads();
        }
    }
}

__device__ void bitonic_asc_int(int* a, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                int j = i ^ stride;
                if (j > i) {
                    bool asc = (i & size) == 0;
                    int x = a[i], y = a[j];
                    if (asc ? (x > y) : (x < y)) { a[i] = y; a[j] = x; }
                }
            }
            __syncthreads();
        }
    }
}

extern "C" __global__ void topk_select(
    const float* __restrict__ scores,   // (B, R, C)
    const int* __restrict__ row_ptr,    // (B, R + 1), global offsets
    int* __restrict__ col_idx,          // (nnz,)
    unsigned char* __restrict__ kind,   // (nnz,)
    int R, int C, int q_len, int block_q, int block_k,
    int causal, int sink, int local)
{
    __shared__ unsigned long long keys[MAX_C];
    __shared__ int sel[MAX_K];
    const int r = blockIdx.x, b = blockIdx.y;
    const float* s = scores + ((long long)b * R + r) * C;
    const int last_q = min((r + 1) * block_q, q_len) - 1;
    const int diag = min(last_q / block_k, C - 1);
    int P = 1;
    while (P < C) P <<= 1;
    for (int c = threadIdx.x; c < P; c += blockDim.x) {
        unsigned long long key = 0ull;  // padding and invalid blocks: below every valid key
        if (c < C) {
            bool valid = !causal || (long long)c * block_k <= last_q;
            if (valid) {
                bool forced = c < sink || (c > diag - local && c <= diag);
                float f = s[c];
                if (f != f || f < -3.0e38f) f = -3.0e38f;   // NaN, -inf: the finite floor
                if (f > 3.0e38f) f = 3.0e38f;
                f += 0.0f;  // -0 -> +0: equal scores must tie (torch's sort treats them as equal)
                if (forced) f = __int_as_float(0x7f800000);  // +inf
                // low word: 0xFFFFFFFF - c, so that ties break towards the lower block index;
                // a valid key is never 0 (its high word is at least order_bits(-3e38) > 0)
                key = ((unsigned long long)order_bits(f) << 32) | (unsigned long long)(0xFFFFFFFFu - (unsigned)c);
            }
        }
        keys[c] = key;
    }
    __syncthreads();
    bitonic_desc(keys, P);
    const int* rp = row_ptr + (long long)b * (R + 1);
    const int start = rp[r];
    const int count = rp[r + 1] - start;
    int K = 1;
    while (K < count) K <<= 1;
    for (int t = threadIdx.x; t < K; t += blockDim.x)
        sel[t] = t < count ? (int)(0xFFFFFFFFu - (unsigned)(keys[t] & 0xFFFFFFFFull)) : 0x7FFFFFFF;
    __syncthreads();
    bitonic_asc_int(sel, K);
    for (int t = threadIdx.x; t < count; t += blockDim.x) {
        int c = sel[t];
        col_idx[start + t] = c;
        kind[start + t] = (causal && (long long)c * block_k + block_k - 1 > (long long)r * block_q) ? 1 : 0;
    }
}
