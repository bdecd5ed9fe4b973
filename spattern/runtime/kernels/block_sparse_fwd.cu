// Block-sparse FlashAttention-2-style forward over a CSR BlockLayout.
//
// Contract: docs/design.md, "Concrete contract (as built)".
// One CTA computes one (batch-or-sequence b, head h, query row-block r) work item; the
// work items are visited in the order given by `work` (long rows first, computed on the GPU).
// Each warp owns SP_WM (16 or 32) query rows. Per key tile (BK = 64 keys):
//   S = Q K^T (mma.sync m16n8k16, fp32 accumulate, operands via ldmatrix),
//   token mask (FULL: bounds only; PROGRAM: group's postfix program; BITMASK: bit lookup),
//   online softmax in registers (log2 domain), O += P V (P re-packed from the S registers).
// K/V tiles stream along the CSR row with cp.async (SP_NSTAGE stages, one barrier per tile).
//
// Compile-time configuration (-D): SP_BF16 (0 = fp16, 1 = bf16), SP_HD (64|128, head dim),
// SP_LQ (64|128, layout block_q), SP_LK (64|128, layout block_k; processed as LK/64 tiles of 64 keys),
// SP_BQ (64|128, query rows per CTA; a layout row is split over LQ/BQ CTAs), SP_WM (16|32, query rows
// per warp), SP_NSTAGE (2|3, K/V pipeline stages), SP_KK_UNROLL (unroll of the QK^T k-loop).
// The launcher (cupy_backend.kernel_config) picks them; notes/kernel.md has the measurements.
// The only include is the shared mask-program evaluator, which the launcher inlines before compiling
// (so NVRTC needs no include path).

#include "mask_program.cuh"

#ifndef SP_BF16
#define SP_BF16 1
#endif
#ifndef SP_BQ
#define SP_BQ 64
#endif
#ifndef SP_HD
#define SP_HD 128
#endif
#ifndef SP_LK
#define SP_LK 64
#endif
#ifndef SP_WM
#define SP_WM 16
#endif
#ifndef SP_LQ
#define SP_LQ SP_BQ
#endif
#ifndef SP_KK_UNROLL
#define SP_KK_UNROLL 8
#endif
#ifndef SP_NSTAGE
#define SP_NSTAGE 3
#endif

typedef unsigned short u16;
typedef unsigned int u32;

namespace spk {

constexpr int BQ = SP_BQ;            // query rows per CTA
constexpr int LQ = SP_LQ;            // layout block_q; a layout row is split over LQ / BQ CTAs
constexpr int SPLIT = LQ / BQ;
constexpr int HD = SP_HD;
constexpr int LK = SP_LK;
constexpr int BK = 64;               // keys per kernel tile
constexpr int KSUB = LK / BK;        // kernel tiles per layout block
constexpr int WM = SP_WM;            // query rows per warp (16 or 32)
constexpr int MT = WM / 16;          // m16 tiles per warp
constexpr int NW = BQ / WM;          // warps
constexpr int NT = NW * 32;          // threads
constexpr bool Q_IN_REGS = (MT == 1);  // Q fragments kept in registers (else re-read via ldmatrix)
constexpr int CH = HD / 8;           // 16-byte chunks per row
constexpr int NJ = BK / 8;           // n8 tiles of S per warp
constexpr int ND = HD / 8;           // n8 tiles of O per warp
using spk_mask::MAX_PROGRAM;
constexpr int KK_UNROLL = SP_KK_UNROLL;
constexpr int NSTAGE = SP_NSTAGE;    // K/V pipeline depth (2 or 3 stages; one barrier per tile)
constexpr int MINB = (NW <= 4) ? 2 : 1;
constexpr float LN2 = 0.6931471805599453f;

static_assert(BQ == 64 || BQ == 128, "SP_BQ must be 64 or 128");
static_assert(HD == 64 || HD == 128, "SP_HD must be 64 or 128");
static_assert(LK == 64 || LK == 128, "SP_LK must be 64 or 128");
static_assert(WM == 16 || WM == 32, "SP_WM must be 16 or 32");
static_assert(NSTAGE == 2 || NSTAGE == 3, "SP_NSTAGE must be 2 or 3");
static_assert(BQ % WM == 0, "SP_BQ must be a multiple of SP_WM");
static_assert((LQ == 64 || LQ == 128) && LQ % BQ == 0, "SP_LQ must be 64 or 128 and a multiple of SP_BQ");
static_assert(NJ * 4 == 32, "one 32-bit mask word per thread per tile");

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

#include "mma_sm80.cuh"

// Byte offset of (row, 16-byte chunk) in a swizzled [rows][HD] tile.
__device__ __forceinline__ u32 swz(int row, int chunk) {
  return (u32)((row * HD + ((chunk ^ (row & 7)) << 3)) * 2);
}

// Asynchronously copy rows [row0, row0 + ROWS) of a [tokens][HD] matrix into a swizzled tile;
// rows at or past `lim` are zero-filled (never read from global memory).
template <int ROWS>
__device__ __forceinline__ void load_rows(u32 s_base, const u16* g, long long sn, int row0, int lim,
                                          int tid) {
  constexpr int TOTAL = ROWS * CH;
  static_assert(TOTAL % NT == 0, "tile chunks divide evenly among threads");
#pragma unroll
  for (int it = 0; it < TOTAL / NT; ++it) {
    int idx = tid + it * NT;
    int row = idx / CH, c = idx % CH;
    int tok = row0 + row;
    bool ok = tok < lim;
    const u16* src = ok ? g + (long long)tok * sn + c * 8 : g;
    cp_async16(s_base + swz(row, c), src, ok ? 16 : 0);
  }
}

typedef unsigned long long u64;

using spk_mask::range_mask;

// Gather the bits of this thread's 16 columns (tile columns j*8 + 2*tq + e, j < 8, e < 2) of a
// 64-bit column mask into 16 bits: bit j*2 + e.
__device__ __forceinline__ u32 compact_cols(u64 cm, int tq) {
  u64 x = (cm >> (2 * tq)) & 0x0303030303030303ull;
  x = (x | (x >> 6)) & 0x000F000F000F000Full;
  x = (x | (x >> 12)) & 0x000000FF000000FFull;
  x = (x | (x >> 24)) & 0xFFFFull;
  return (u32)x;
}

// Bit of S element (n8-tile j, accumulator c) in the packed per-thread mask.
__device__ __forceinline__ int elem_bit(int j, int c) { return ((c >> 1) << 4) + j * 2 + (c & 1); }

}  // namespace spk

using namespace spk;

extern "C" __global__ void __launch_bounds__(NT, MINB)
sp_block_sparse_fwd(const u16* __restrict__ Q, const u16* __restrict__ K, const u16* __restrict__ V,
                    u16* __restrict__ O, float* __restrict__ LSE,
                    long long q_sb, long long q_sh, long long q_sn,
                    long long k_sb, long long k_sh, long long k_sn,
                    long long v_sb, long long v_sh, long long v_sn,
                    long long o_sb, long long o_sh, long long o_sn,
                    long long l_sb, long long l_sh,
                    int H, int Hkv, int Nq, int Nk,
                    const int* __restrict__ cu_seqlens, int varlen,
                    const int* __restrict__ row_ptr, const int* __restrict__ col_idx,
                    const unsigned char* __restrict__ block_kind, const int* __restrict__ mask_idx,
                    const u32* __restrict__ bitmasks, const int* __restrict__ programs,
                    const int* __restrict__ program_len, int Bg, int Hg, int R, int P,
                    const int* __restrict__ work, float scale_log2, int write_lse) {
  extern __shared__ __align__(128) unsigned char smem[];
  int4* s_prog = reinterpret_cast<int4*>(smem);
  u16* s_q = reinterpret_cast<u16*>(smem + MAX_PROGRAM * 16);
  const u32 sQ = smem_u32(s_q);
  constexpr u32 STAGE = BK * HD * 2;
  const u32 sK0 = sQ + BQ * HD * 2;              // NSTAGE stages of K, then NSTAGE stages of V
  const u32 sV0 = sK0 + NSTAGE * STAGE;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  // ---- work item ----
  int wi = work[blockIdx.x];
  const int half = wi % SPLIT;  // which BQ-row part of the layout row
  wi /= SPLIT;
  const int r = wi % R;
  const int bh = wi / R;
  const int h = bh % H;
  const int b = bh / H;
  int seq0 = 0, qlen = Nq, kvlen = Nk;
  if (varlen) {
    seq0 = cu_seqlens[b];
    qlen = kvlen = cu_seqlens[b + 1] - seq0;
  }
  const int q0 = r * LQ + half * BQ;
  if (q0 >= qlen) return;
  const int hk = h / (H / Hkv);
  const int g = (Bg > 1 ? b : 0) * Hg + (Hg > 1 ? h : 0);
  const int pstart = row_ptr[g * (R + 1) + r];
  const int pend = row_ptr[g * (R + 1) + r + 1];
  const int ntiles = (pend - pstart) * KSUB;
  int plen = program_len[g];
  plen = plen < MAX_PROGRAM ? plen : MAX_PROGRAM;
  for (int i = tid; i < plen; i += NT) {
    const int* src = programs + ((long long)g * P + i) * 4;
    s_prog[i] = make_int4(src[0], src[1], src[2], src[3]);
  }

  const u16* Qb = Q + b * q_sb + h * q_sh + (long long)seq0 * q_sn;
  const u16* Kb = K + b * k_sb + hk * k_sh + (long long)seq0 * k_sn;
  const u16* Vb = V + b * v_sb + hk * v_sh + (long long)seq0 * v_sn;

  if (ntiles > 0) load_rows<BQ>(sQ, Qb, q_sn, q0, qlen, tid);  // an empty row needs no Q
  cp_async_commit();

  // CSR metadata of tile t: (first key, block kind); prefetched into registers ahead of use.
  auto meta = [&](int t) -> int2 {
    if (t >= ntiles) return make_int2(0, 0);
    const int p = pstart + t / KSUB;
    return make_int2(col_idx[p] * LK + (t % KSUB) * BK, (int)block_kind[p]);
  };
  auto issue_tile = [&](int t, int kv0) {
    if (t < ntiles) {
      const u32 st = (u32)(t % NSTAGE) * STAGE;
      load_rows<BK>(sK0 + st, Kb, k_sn, kv0, kvlen, tid);
      load_rows<BK>(sV0 + st, Vb, v_sn, kv0, kvlen, tid);
    }
    cp_async_commit();
  };
  // mq[i] = metadata of tile t + i; tile t + NSTAGE - 1 is issued in iteration t.
  int2 mq[NSTAGE + 1];
#pragma unroll
  for (int i = 0; i < NSTAGE; ++i) mq[i] = meta(i);
#pragma unroll
  for (int i = 0; i < NSTAGE - 1; ++i) issue_tile(i, mq[i].x);

  float o[MT][ND][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int d = 0; d < ND; ++d) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
  float m_[MT][2], l_[MT][2];  // running max (log2 domain) and partial sums, rows lo/hi
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m_[mt][0] = m_[mt][1] = neg_inf(), l_[mt][0] = l_[mt][1] = 0.f;
  u32 qf[Q_IN_REGS ? HD / 16 : 1][4];

  const int wrow = warp * WM;  // first row of this warp inside the block

  for (int t = 0; t < ntiles; ++t) {
    // Groups in flight: tiles t .. t+NSTAGE-2 (and Q before tile 0); wait until tile t has landed.
    cp_async_wait<NSTAGE - 2>();
    __syncthreads();  // tile t visible to all; every warp is done with tile t-1, whose stage is refilled next
    issue_tile(t + NSTAGE - 1, mq[NSTAGE - 1].x);
    mq[NSTAGE] = meta(t + NSTAGE);  // consumed next iteration; its latency hides behind this tile

    if (Q_IN_REGS && t == 0) {
#pragma unroll
      for (int kk = 0; kk < (Q_IN_REGS ? HD / 16 : 0); ++kk)
        ldsm_x4(sQ + swz(wrow + (lane & 15), kk * 2 + (lane >> 4)), qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
    }

    const int sub = t % KSUB;
    const int kv0 = mq[0].x;
    const int knd = mq[0].y;
    const u32 sK = sK0 + (u32)(t % NSTAGE) * STAGE;
    const u32 sV = sV0 + (u32)(t % NSTAGE) * STAGE;

    // ---- token mask bits (before the matmul: fewer live registers around the program call) ----
    const bool need_mask = knd != 0 || kv0 + BK > kvlen;
    unsigned long long allow = 0ull;  // bit mt*32 + elem_bit(j, c)
    if (need_mask) {
      const int tq = lane & 3;
      const u64 inb = range_mask(0, kvlen - 1 - kv0);
#pragma unroll 1
      for (int rr = 0; rr < 2 * MT; ++rr) {  // rows lo/hi of each m16 tile
        const int rc = wrow + (rr >> 1) * 16 + (rr & 1) * 8 + (lane >> 2);  // row inside the CTA tile
        u64 cm = ~0ull;                                                  // allowed tile columns
        if (knd == 1) {
          cm = spk_mask::eval_program_row<false>(s_prog, plen, q0 + rc, kv0, tq);
        } else if (knd == 2) {
          constexpr int WPR = LK / 32;
          const int rl = half * BQ + rc;  // row inside the layout block
          const u32* bm = bitmasks + (long long)mask_idx[pstart + t / KSUB] * LQ * WPR + sub * 2 + rl * WPR;
          cm = (u64)bm[0] | ((u64)bm[1] << 32);
        }
        allow |= (u64)compact_cols(cm & inb, tq) << (rr * 16);
      }
    }

    // ---- S = Q K^T ----
    float s[MT][NJ][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NJ; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll KK_UNROLL
    for (int kk = 0; kk < HD / 16; ++kk) {
      u32 a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (Q_IN_REGS) {
          a[mt][0] = qf[Q_IN_REGS ? kk : 0][0]; a[mt][1] = qf[Q_IN_REGS ? kk : 0][1];
          a[mt][2] = qf[Q_IN_REGS ? kk : 0][2]; a[mt][3] = qf[Q_IN_REGS ? kk : 0][3];
        } else {
          ldsm_x4(sQ + swz(wrow + mt * 16 + (lane & 15), kk * 2 + (lane >> 4)), a[mt][0], a[mt][1], a[mt][2],
                  a[mt][3]);
        }
      }
#pragma unroll
      for (int jp = 0; jp < NJ / 2; ++jp) {
        u32 b0, b1, b2, b3;
        ldsm_x4(sK + swz(jp * 16 + (lane >> 4) * 8 + (lane & 7), kk * 2 + ((lane >> 3) & 1)), b0, b1,
                b2, b3);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816(s[mt][2 * jp], a[mt], b0, b1);
          mma16816(s[mt][2 * jp + 1], a[mt], b2, b3);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        s[mt][j][0] *= scale_log2; s[mt][j][1] *= scale_log2;
        s[mt][j][2] *= scale_log2; s[mt][j][3] *= scale_log2;
      }

    // ---- apply the token mask (computed before the matmul, see above) ----
    if (need_mask) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            if (!((allow >> (mt * 32 + elem_bit(j, c))) & 1ull)) s[mt][j][c] = neg_inf();
          }
        }
      }
    }

    // ---- online softmax (log2 domain) ----
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float mx_lo = m_[mt][0], mx_hi = m_[mt][1];
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        mx_lo = fmaxf(mx_lo, fmaxf(s[mt][j][0], s[mt][j][1]));
        mx_hi = fmaxf(mx_hi, fmaxf(s[mt][j][2], s[mt][j][3]));
      }
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
      const float base_lo = (mx_lo == neg_inf()) ? 0.f : mx_lo;
      const float base_hi = (mx_hi == neg_inf()) ? 0.f : mx_hi;
      const float alpha_lo = ex2(m_[mt][0] - base_lo);
      const float alpha_hi = ex2(m_[mt][1] - base_hi);
      m_[mt][0] = mx_lo;
      m_[mt][1] = mx_hi;
      float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        s[mt][j][0] = ex2(s[mt][j][0] - base_lo);
        s[mt][j][1] = ex2(s[mt][j][1] - base_lo);
        s[mt][j][2] = ex2(s[mt][j][2] - base_hi);
        s[mt][j][3] = ex2(s[mt][j][3] - base_hi);
        sum_lo += s[mt][j][0] + s[mt][j][1];
        sum_hi += s[mt][j][2] + s[mt][j][3];
      }
      l_[mt][0] = l_[mt][0] * alpha_lo + sum_lo;
      l_[mt][1] = l_[mt][1] * alpha_hi + sum_hi;
#pragma unroll
      for (int d = 0; d < ND; ++d) {
        o[mt][d][0] *= alpha_lo; o[mt][d][1] *= alpha_lo;
        o[mt][d][2] *= alpha_hi; o[mt][d][3] *= alpha_hi;
      }
    }

    // ---- O += P V ----
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      u32 a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = pack2(s[mt][2 * ks][0], s[mt][2 * ks][1]);
        a[mt][1] = pack2(s[mt][2 * ks][2], s[mt][2 * ks][3]);
        a[mt][2] = pack2(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
        a[mt][3] = pack2(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < ND / 2; ++dp) {
        u32 b0, b1, b2, b3;
        ldsm_x4_t(sV + swz(ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4)), b0, b1,
                  b2, b3);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816(o[mt][2 * dp], a[mt], b0, b1);
          mma16816(o[mt][2 * dp + 1], a[mt], b2, b3);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < NSTAGE; ++i) mq[i] = mq[i + 1];
  }
  cp_async_wait<0>();
  __syncthreads();  // every thread's copies into the Q tile have landed before it is reused for O

  // ---- epilogue ----
  // Stage O through this warp's own rows of the Q tile (only this warp ever reads them).
  __syncwarp();
  const int off = (lane & 3) * 4;  // bytes within a 16-byte chunk
  unsigned char* sq8 = reinterpret_cast<unsigned char*>(s_q);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float l_lo = l_[mt][0], l_hi = l_[mt][1];
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
    const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f;
    const float inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
    const int rlo = wrow + mt * 16 + (lane >> 2);
    if (write_lse && (lane & 3) == 0) {
      float* Lb = LSE + b * l_sb + h * l_sh + seq0;
      if (q0 + rlo < qlen) Lb[q0 + rlo] = l_lo > 0.f ? (m_[mt][0] + __log2f(l_lo)) * LN2 : neg_inf();
      if (q0 + rlo + 8 < qlen) Lb[q0 + rlo + 8] = l_hi > 0.f ? (m_[mt][1] + __log2f(l_hi)) * LN2 : neg_inf();
    }
#pragma unroll
    for (int d = 0; d < ND; ++d) {
      *reinterpret_cast<u32*>(sq8 + swz(rlo, d) + off) = pack2(o[mt][d][0] * inv_lo, o[mt][d][1] * inv_lo);
      *reinterpret_cast<u32*>(sq8 + swz(rlo + 8, d) + off) = pack2(o[mt][d][2] * inv_hi, o[mt][d][3] * inv_hi);
    }
  }
  __syncwarp();
  u16* Ob = O + b * o_sb + h * o_sh + (long long)seq0 * o_sn;
#pragma unroll
  for (int it = 0; it < WM * CH / 32; ++it) {
    const int idx = lane + it * 32;
    const int row = wrow + idx / CH, c = idx % CH;
    const int tok = q0 + row;
    if (tok < qlen) {
      const uint4 val = *reinterpret_cast<const uint4*>(sq8 + swz(row, c));
      *reinterpret_cast<uint4*>(Ob + (long long)tok * o_sn + c * 8) = val;
    }
  }
}
