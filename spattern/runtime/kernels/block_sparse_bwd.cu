// Block-sparse FlashAttention-2-style backward over a CSR BlockLayout (and its CSC transpose).
//
// Contract: docs/design.md ("Concrete contract"); launcher: spattern/runtime/cupy_bwd.py.
// With P = softmax(scale * Q K^T) over the allowed keys (rebuilt from the forward's LSE),
// dO the output gradient and delta_i = sum_d dO[i, d] * O[i, d]:
//   dV = P^T dO,   dP = dO V^T,   dS = P o (dP - delta),   dQ = scale * dS K,   dK = scale * dS^T Q.
// Three kernels (one module per instantiation):
//   sp_bwd_delta: delta = rowsum(dO * O) in fp32 (8 threads per row).
//   sp_bwd_dq:    one CTA per (b, h, 64-query tile); streams the row's key tiles along the CSR row
//                 (2-stage cp.async) and accumulates dQ in registers (no atomics: deterministic).
//   sp_bwd_dkdv:  one CTA per (b, kv head, 64-key tile); streams the query tiles of the key block's
//                 CSC column, for every query head of the kv head's group (GQA sums in registers),
//                 and accumulates dK and dV in registers.
// Each of the 4 warps owns 16 rows (queries in dq, keys in dkdv); S/dP/dV/dK/dQ use
// mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate) with ldmatrix operands from 128-byte
// XOR-swizzled tiles. Token masks: a 64 x 64 tile mask is built in shared memory as one 64-bit key
// mask per query row (FULL: bounds only; PROGRAM: the group's postfix program; BITMASK: two words
// of the layout's bitmask), written for the next tile while the current one computes.
// Masked elements get P = 0 (never exp of -inf - LSE), so empty rows and columns give zeros.
//
// Compile-time configuration (-D): SP_BF16 (0 = fp16, 1 = bf16), SP_HD (64|128), SP_LQ (64|128,
// layout block_q), SP_LK (64|128, layout block_k). The mask-program header is inlined by the launcher.

#include "mask_program.cuh"

#ifndef SP_BF16
#define SP_BF16 1
#endif
#ifndef SP_HD
#define SP_HD 128
#endif
#ifndef SP_LQ
#define SP_LQ 128
#endif
#ifndef SP_LK
#define SP_LK 128
#endif

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

namespace spb {

constexpr int HD = SP_HD;
constexpr int LQ = SP_LQ;
constexpr int LK = SP_LK;
constexpr int BT = 64;              // rows of every tile (queries or keys)
constexpr int QSPLIT = LQ / BT;     // 64-query tiles per layout block row
constexpr int KSPLIT = LK / BT;     // 64-key tiles per layout block column
constexpr int NW = 4;               // warps, 16 rows each
constexpr int NT = NW * 32;
constexpr int CH = HD / 8;          // 16-byte chunks per row
constexpr int NJ = BT / 8;          // n8 tiles of S per warp
constexpr int ND = HD / 8;          // n8 tiles of a head-dim accumulator
constexpr int TILE = BT * HD * 2;   // bytes of one [64][HD] tile
constexpr int MAX_GROUP = 64;       // query heads per kv head handled by one dkdv CTA
constexpr float LOG2E = 1.4426950408889634f;

static_assert(HD == 64 || HD == 128, "SP_HD must be 64 or 128");
static_assert(LQ == 64 || LQ == 128, "SP_LQ must be 64 or 128");
static_assert(LK == 64 || LK == 128, "SP_LK must be 64 or 128");

__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

#include "mma_sm80.cuh"
__device__ __forceinline__ float to_f(u16 x) {
#if SP_BF16
  return __uint_as_float(((u32)x) << 16);
#else
  float f;
  asm("{ .reg .f16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }\n" : "=f"(f) : "h"(x));
  return f;
#endif
}

// Byte offset of (row, 16-byte chunk) in a swizzled [rows][HD] tile.
__device__ __forceinline__ u32 swz(int row, int chunk) { return (u32)((row * HD + ((chunk ^ (row & 7)) << 3)) * 2); }

// cp.async rows [row0, row0 + 64) of a [tokens][HD] matrix into a swizzled tile; rows >= lim are zeros.
__device__ __forceinline__ void load_tile(u32 s_base, const u16* g, long long sn, int row0, int lim, int tid) {
#pragma unroll
  for (int it = 0; it < BT * CH / NT; ++it) {
    const int idx = tid + it * NT;
    const int row = idx / CH, c = idx % CH;
    const int tok = row0 + row;
    const bool ok = tok < lim;
    cp_async16(s_base + swz(row, c), ok ? g + (long long)tok * sn + c * 8 : g, ok ? 16 : 0);
  }
}

// acc[16 rows][ND n8 tiles] += A (16 x 64, from the fp32 accumulator s, packed) * B, where B is a
// [64 tokens][HD] swizzled tile read transposed (tokens are the reduction dimension).
__device__ __forceinline__ void mma_p_tile(float (*acc)[4], const float (*s)[4], u32 sB, int lane) {
#pragma unroll
  for (int ks = 0; ks < BT / 16; ++ks) {
    u32 a[4];
    a[0] = pack2(s[2 * ks][0], s[2 * ks][1]);
    a[1] = pack2(s[2 * ks][2], s[2 * ks][3]);
    a[2] = pack2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
    a[3] = pack2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
#pragma unroll
    for (int dp = 0; dp < ND / 2; ++dp) {
      u32 b0, b1, b2, b3;
      ldsm_x4_t(sB + swz(ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4)), b0, b1, b2, b3);
      mma16816(acc[2 * dp], a, b0, b1);
      mma16816(acc[2 * dp + 1], a, b2, b3);
    }
  }
}

// s[16 rows][64 cols] = A B^T with A = rows arow.. of tile sA, B = the 64 rows of tile sB (both [.][HD]).
__device__ __forceinline__ void mma_abt(float (*s)[4], u32 sA, int arow, u32 sB, int lane) {
#pragma unroll
  for (int j = 0; j < NJ; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll 4
  for (int kk = 0; kk < HD / 16; ++kk) {
    u32 a[4];
    ldsm_x4(sA + swz(arow + (lane & 15), kk * 2 + (lane >> 4)), a[0], a[1], a[2], a[3]);
#pragma unroll
    for (int jp = 0; jp < NJ / 2; ++jp) {
      u32 b0, b1, b2, b3;
      ldsm_x4(sB + swz(jp * 16 + (lane >> 4) * 8 + (lane & 7), kk * 2 + ((lane >> 3) & 1)), b0, b1, b2, b3);
      mma16816(s[2 * jp], a, b0, b1);
      mma16816(s[2 * jp + 1], a, b2, b3);
    }
  }
}

// Row mask of query qi over the 64 keys kv0.. of a tile (in-range keys only): FULL all, PROGRAM the
// group's program, BITMASK the two bitmask words of the row.
__device__ __forceinline__ u64 tile_row_mask(int kind, int qi, int qrow_in_block, int kv0, int ksub, int kvlen,
                                             const int4* prog, int plen, const u32* bm_block) {
  u64 m = ~0ull;
  if (kind == 1) {
    m = spk_mask::eval_program_row<true>(prog, plen, qi, kv0, 0);
  } else if (kind == 2) {
    constexpr int WPR = LK / 32;
    const u32* w = bm_block + qrow_in_block * WPR + ksub * 2;
    m = (u64)w[0] | ((u64)w[1] << 32);
  }
  return m & spk_mask::range_mask(0, kvlen - 1 - kv0);
}

// Write a warp's 16 rows x HD accumulator (scaled) through its own rows of a swizzled tile to global.
__device__ __forceinline__ void store_rows(float (*acc)[4], float mul, unsigned char* s8, int wrow, u16* G,
                                           long long sn, int tok0, int lim, int lane) {
  const int off = (lane & 3) * 4;
  const int rlo = wrow + (lane >> 2);
#pragma unroll
  for (int d = 0; d < ND; ++d) {
    *reinterpret_cast<u32*>(s8 + swz(rlo, d) + off) = pack2(acc[d][0] * mul, acc[d][1] * mul);
    *reinterpret_cast<u32*>(s8 + swz(rlo + 8, d) + off) = pack2(acc[d][2] * mul, acc[d][3] * mul);
  }
  __syncwarp();
#pragma unroll
  for (int it = 0; it < 16 * CH / 32; ++it) {
    const int idx = lane + it * 32;
    const int row = wrow + idx / CH, c = idx % CH;
    const int tok = tok0 + row;
    if (tok < lim) *reinterpret_cast<uint4*>(G + (long long)tok * sn + c * 8) = *reinterpret_cast<const uint4*>(s8 + swz(row, c));
  }
}

}  // namespace spb

using namespace spb;

// delta[row] = sum_d dO[row, d] * O[row, d]; rows are (b, h, i) of (B, H, N, D) tensors, or (t, h) of
// packed (T, H, D) ones (then delta is (H, T)).
extern "C" __global__ void __launch_bounds__(256) sp_bwd_delta(const u16* __restrict__ O, const u16* __restrict__ dO,
                                                               float* __restrict__ delta, long long rows, int H,
                                                               long long T, int packed) {
  const long long row = (long long)blockIdx.x * 32 + (threadIdx.x >> 3);
  const int part = threadIdx.x & 7;
  float acc = 0.f;
  if (row < rows) {
#pragma unroll
    for (int c = 0; c < HD / 64; ++c) {
      const long long off = row * HD + (c * 8 + part) * 8;
      const uint4 a = *reinterpret_cast<const uint4*>(O + off);
      const uint4 b = *reinterpret_cast<const uint4*>(dO + off);
      const u16* x = reinterpret_cast<const u16*>(&a);
      const u16* y = reinterpret_cast<const u16*>(&b);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += to_f(x[e]) * to_f(y[e]);
    }
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  if (row < rows && part == 0) {
    const long long dst = packed ? (row % H) * T + row / H : row;
    delta[dst] = acc;
  }
}

// Shared-memory map of both main kernels: own tiles A, B ([64][HD] each), 2 stages x (C, D) tiles,
// 2 stages x 64 row masks, 2 stages x 64 (lse2, delta).
constexpr int SMEM_BYTES = 6 * TILE + 2 * 64 * 8 + 2 * 2 * 64 * 4;

extern "C" __global__ void __launch_bounds__(NT, 2)
sp_bwd_dq(const u16* __restrict__ Q, const u16* __restrict__ K, const u16* __restrict__ V,
          const u16* __restrict__ dO, const float* __restrict__ LSE, const float* __restrict__ Delta,
          u16* __restrict__ dQ,
          long long q_sb, long long q_sh, long long q_sn, long long k_sb, long long k_sh, long long k_sn,
          long long l_sb, long long l_sh, int H, int Hkv, int Nq, int Nk,
          const int* __restrict__ cu_seqlens, int varlen,
          const int* __restrict__ row_ptr, const int* __restrict__ col_idx,
          const unsigned char* __restrict__ block_kind, const int* __restrict__ mask_idx,
          const u32* __restrict__ bitmasks, const int* __restrict__ programs, const int* __restrict__ program_len,
          int Bg, int Hg, int R, int P, const int* __restrict__ work, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sQ = smem_u32(smem), sdO = sQ + TILE, sK0 = sQ + 2 * TILE, sV0 = sQ + 4 * TILE;
  u64* s_mask = reinterpret_cast<u64*>(smem + 6 * TILE);           // [2][64]
  float* s_row = reinterpret_cast<float*>(smem + 6 * TILE + 2 * 64 * 8);  // [2][2][64]: unused here
  (void)s_row;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  int wi = work[blockIdx.x];
  const int sub = wi % QSPLIT;
  wi /= QSPLIT;
  const int r = wi % R;
  const int bh = wi / R;
  const int h = bh % H, b = bh / H;
  int seq0 = 0, qlen = Nq, kvlen = Nk;
  if (varlen) {
    seq0 = cu_seqlens[b];
    qlen = kvlen = cu_seqlens[b + 1] - seq0;
  }
  const int q0 = r * LQ + sub * BT;
  if (q0 >= qlen) return;
  const int hk = h / (H / Hkv);
  const int g = (Bg > 1 ? b : 0) * Hg + (Hg > 1 ? h : 0);
  const int pstart = row_ptr[g * (R + 1) + r];
  const int ntiles = (row_ptr[g * (R + 1) + r + 1] - pstart) * KSPLIT;
  const int plen = min(program_len[g], spk_mask::MAX_PROGRAM);
  const int4* prog = reinterpret_cast<const int4*>(programs + (long long)g * P * 4);

  const u16* Qb = Q + b * q_sb + h * q_sh + (long long)seq0 * q_sn;
  const u16* dOb = dO + b * q_sb + h * q_sh + (long long)seq0 * q_sn;
  const u16* Kb = K + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  const u16* Vb = V + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  const float* Lb = LSE + b * l_sb + h * l_sh + seq0;
  const float* Db = Delta + b * l_sb + h * l_sh + seq0;

  // this thread's two rows: lse (log2 domain; +inf for rows with no key: P = 0) and delta
  const int wrow = warp * 16;
  float lse2[2], dlt[2];
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int i = q0 + wrow + (lane >> 2) + hi * 8;
    const float l = i < qlen ? Lb[i] : neg_inf();
    lse2[hi] = l == neg_inf() ? pos_inf() : l * LOG2E;
    dlt[hi] = i < qlen ? Db[i] : 0.f;
  }

  float acc[ND][4];
#pragma unroll
  for (int d = 0; d < ND; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;

  if (ntiles > 0) {
    load_tile(sQ, Qb, q_sn, q0, qlen, tid);
    load_tile(sdO, dOb, q_sn, q0, qlen, tid);
  }
  // tile t: key block p = pstart + t / KSPLIT, keys kv0 = col * LK + (t % KSPLIT) * 64
  auto issue = [&](int t) -> bool {  // returns: tile needs a mask (and writes it for stage t % 2)
    if (t >= ntiles) return false;
    const int p = pstart + t / KSPLIT, ks = t % KSPLIT;
    const int kv0 = col_idx[p] * LK + ks * BT;
    const u32 st = (u32)(t & 1) * TILE;
    load_tile(sK0 + st, Kb, k_sn, kv0, kvlen, tid);
    load_tile(sV0 + st, Vb, k_sn, kv0, kvlen, tid);
    const int kind = block_kind[p];
    const bool need = kind != 0 || kv0 + BT > kvlen;
    if (need && tid < BT) {
      const int qi = q0 + tid;
      const u32* bmb = kind == 2 ? bitmasks + (long long)mask_idx[p] * LQ * (LK / 32) : bitmasks;
      s_mask[(t & 1) * 64 + tid] = tile_row_mask(kind, qi, sub * BT + tid, kv0, ks, kvlen, prog, plen, bmb);
    }
    return need;
  };
  bool need_next = issue(0);
  cp_async_commit();

  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait_all();
    __syncthreads();  // tile t (and its mask) visible; every warp is done with tile t - 1's stage
    const bool need = need_next;
    need_next = issue(t + 1);
    cp_async_commit();
    const u32 sK = sK0 + (u32)(t & 1) * TILE, sV = sV0 + (u32)(t & 1) * TILE;

    float s[NJ][4];
    mma_abt(s, sQ, wrow, sK, lane);  // S = Q K^T (16 queries x 64 keys)
    const int tq = lane & 3;
    u64 mrow[2] = {~0ull, ~0ull};
    if (need) {
      mrow[0] = s_mask[(t & 1) * 64 + wrow + (lane >> 2)];
      mrow[1] = s_mask[(t & 1) * 64 + wrow + (lane >> 2) + 8];
    }
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = j * 8 + 2 * tq + (c & 1);
        const bool ok = (mrow[c >> 1] >> col) & 1ull;
        s[j][c] = ok ? ex2(s[j][c] * scale_log2 - lse2[c >> 1]) : 0.f;  // P
      }
    float dp[NJ][4];
    mma_abt(dp, sdO, wrow, sV, lane);  // dP = dO V^T
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) dp[j][c] = s[j][c] * (dp[j][c] - dlt[c >> 1]);  // dS
    mma_p_tile(acc, dp, sK, lane);  // dQ += dS K
  }
  cp_async_wait_all();
  __syncthreads();
  u16* dQb = dQ + b * q_sb + h * q_sh + (long long)seq0 * q_sn;
  store_rows(acc, scale, smem, wrow, dQb, q_sn, q0, qlen, lane);  // through this warp's rows of sQ
}

extern "C" __global__ void __launch_bounds__(NT, 2)
sp_bwd_dkdv(const u16* __restrict__ Q, const u16* __restrict__ K, const u16* __restrict__ V,
            const u16* __restrict__ dO, const float* __restrict__ LSE, const float* __restrict__ Delta,
            u16* __restrict__ dK, u16* __restrict__ dV,
            long long q_sb, long long q_sh, long long q_sn, long long k_sb, long long k_sh, long long k_sn,
            long long l_sb, long long l_sh, int H, int Hkv, int Nq, int Nk,
            const int* __restrict__ cu_seqlens, int varlen,
            const int* __restrict__ col_ptr, const int* __restrict__ row_idx, const int* __restrict__ perm,
            const unsigned char* __restrict__ block_kind, const int* __restrict__ mask_idx,
            const u32* __restrict__ bitmasks, const int* __restrict__ programs, const int* __restrict__ program_len,
            int Bg, int Hg, int C, int P, const int* __restrict__ work, float scale, float scale_log2) {
  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sK = smem_u32(smem), sV = sK + TILE, sQ0 = sK + 2 * TILE, sdO0 = sK + 4 * TILE;
  u64* s_mask = reinterpret_cast<u64*>(smem + 6 * TILE);                  // [2][64] query rows
  float* s_row = reinterpret_cast<float*>(smem + 6 * TILE + 2 * 64 * 8);  // [2][lse2 64, delta 64]
  __shared__ int s_hoff[MAX_GROUP + 1];  // tiles before query head hk * rep + i of this CTA
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  int wi = work[blockIdx.x];
  const int ksub = wi % KSPLIT;
  wi /= KSPLIT;
  const int c = wi % C;
  const int bk = wi / C;
  const int hk = bk % Hkv, b = bk / Hkv;
  int seq0 = 0, qlen = Nq, kvlen = Nk;
  if (varlen) {
    seq0 = cu_seqlens[b];
    qlen = kvlen = cu_seqlens[b + 1] - seq0;
  }
  const int k0 = c * LK + ksub * BT;
  if (k0 >= kvlen) return;
  const int rep = H / Hkv;
  if (tid == 0) {
    int acc = 0;
    for (int i = 0; i < rep && i < MAX_GROUP; ++i) {
      const int h = hk * rep + i;
      const int g = (Bg > 1 ? b : 0) * Hg + (Hg > 1 ? h : 0);
      s_hoff[i] = acc;
      acc += (col_ptr[g * (C + 1) + c + 1] - col_ptr[g * (C + 1) + c]) * QSPLIT;
    }
    s_hoff[rep < MAX_GROUP ? rep : MAX_GROUP] = acc;
  }
  __syncthreads();
  const int nh = rep < MAX_GROUP ? rep : MAX_GROUP;
  const int ntiles = s_hoff[nh];

  const u16* Kb = K + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  const u16* Vb = V + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  if (ntiles > 0) {
    load_tile(sK, Kb, k_sn, k0, kvlen, tid);
    load_tile(sV, Vb, k_sn, k0, kvlen, tid);
  }
  // tile t: query head h (found in s_hoff), CSC entry e, 64-query sub-tile qs
  auto issue = [&](int t) -> bool {
    if (t >= ntiles) return false;
    int i = 0;
    while (i + 1 < nh && s_hoff[i + 1] <= t) ++i;
    const int h = hk * rep + i;
    const int g = (Bg > 1 ? b : 0) * Hg + (Hg > 1 ? h : 0);
    const int loc = t - s_hoff[i];
    const int e = col_ptr[g * (C + 1) + c] + loc / QSPLIT, qs = loc % QSPLIT;
    const int r = row_idx[e], p = perm[e];
    const int q0 = r * LQ + qs * BT;
    const u32 st = (u32)(t & 1) * TILE;
    const long long qoff = b * q_sb + h * q_sh + (long long)seq0 * q_sn;
    load_tile(sQ0 + st, Q + qoff, q_sn, q0, qlen, tid);
    load_tile(sdO0 + st, dO + qoff, q_sn, q0, qlen, tid);
    float* rowv = s_row + (t & 1) * 128;
    if (tid < 64) {
      const int qi = q0 + tid;
      const float l = qi < qlen ? LSE[b * l_sb + h * l_sh + seq0 + qi] : neg_inf();
      rowv[tid] = l == neg_inf() ? pos_inf() : l * LOG2E;  // +inf: P = 0 for rows with no key
    } else {
      const int qi = q0 + tid - 64;
      rowv[tid] = qi < qlen ? Delta[b * l_sb + h * l_sh + seq0 + qi] : 0.f;
    }
    const int kind = block_kind[p];
    const bool need = kind != 0 || k0 + BT > kvlen;
    if (need && tid < BT) {
      const int plen = min(program_len[g], spk_mask::MAX_PROGRAM);
      const int4* prog = reinterpret_cast<const int4*>(programs + (long long)g * P * 4);
      const u32* bmb = kind == 2 ? bitmasks + (long long)mask_idx[p] * LQ * (LK / 32) : bitmasks;
      s_mask[(t & 1) * 64 + tid] = tile_row_mask(kind, q0 + tid, qs * BT + tid, k0, ksub, kvlen, prog, plen, bmb);
    }
    return need;
  };
  bool need_next = issue(0);
  cp_async_commit();

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int d = 0; d < ND; ++d) {
    dk[d][0] = dk[d][1] = dk[d][2] = dk[d][3] = 0.f;
    dv[d][0] = dv[d][1] = dv[d][2] = dv[d][3] = 0.f;
  }
  const int wrow = warp * 16;
  const int tq = lane & 3;
  const int kr = wrow + (lane >> 2);  // this thread's key rows kr, kr + 8 (tile-local)

  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait_all();
    __syncthreads();
    const bool need = need_next;
    need_next = issue(t + 1);
    cp_async_commit();
    const u32 sQ = sQ0 + (u32)(t & 1) * TILE, sdO = sdO0 + (u32)(t & 1) * TILE;
    const float* rowv = s_row + (t & 1) * 128;
    const u64* msk = s_mask + (t & 1) * 64;

    float s[NJ][4];
    mma_abt(s, sK, wrow, sQ, lane);  // S^T = K Q^T (16 keys x 64 queries)
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int qc = j * 8 + 2 * tq + e;
        const float l2 = rowv[qc];
        bool ok0 = true, ok1 = true;
        if (need) {
          const u64 m = msk[qc];
          ok0 = (m >> kr) & 1ull;
          ok1 = (m >> (kr + 8)) & 1ull;
        }
        s[j][e] = ok0 ? ex2(s[j][e] * scale_log2 - l2) : 0.f;          // P^T, key row kr
        s[j][2 + e] = ok1 ? ex2(s[j][2 + e] * scale_log2 - l2) : 0.f;  // key row kr + 8
      }
    mma_p_tile(dv, s, sdO, lane);  // dV += P^T dO
    float dp[NJ][4];
    mma_abt(dp, sV, wrow, sdO, lane);  // dP^T = V dO^T
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float dl = rowv[64 + j * 8 + 2 * tq + e];
        dp[j][e] = s[j][e] * (dp[j][e] - dl);
        dp[j][2 + e] = s[j][2 + e] * (dp[j][2 + e] - dl);
      }
    mma_p_tile(dk, dp, sQ, lane);  // dK += dS^T Q
  }
  cp_async_wait_all();
  __syncthreads();
  u16* dKb = dK + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  u16* dVb = dV + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  // each warp stages its rows through its own rows of the K and V tiles (read only by this warp)
  store_rows(dk, scale, smem, wrow, dKb, k_sn, k0, kvlen, lane);
  store_rows(dv, 1.f, smem + TILE, wrow, dVb, k_sn, k0, kvlen, lane);
}
