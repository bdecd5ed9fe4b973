// Block-sparse attention forward for Hopper (sm_90a): TMA loads, mbarrier pipelines, wgmma,
// warp specialization. First version (issue 13); notes/hopper_kernel.md has the design and its status.
//
// Contract: docs/design.md, "Concrete contract (as built)"; the same semantics as block_sparse_fwd.cu,
// which is this kernel's slow twin. A work item is one (batch-or-sequence b, head h, query row-block r)
// (block_q = 128 rows); `work` lists them long rows first. CTA c of a grid of G computes item c of that
// list first, then the next untaken one (a global counter, so a CTA that started late or got short rows
// takes more: greedy longest-first): with G = the number of items each CTA computes one (v1), with G =
// the number of SMs the kernel is persistent, and the producer loads the next item's Q and first K/V
// tiles while the consumers finish the current one. The producer passes each item to the consumers
// through two shared-memory mailboxes (mbarriers slot_full / slot_empty).
// 384 threads = 3 warpgroups:
//   warpgroup 0 (producer, few registers): one thread issues the TMA loads of the Q tile (once) and of
//     the K and V tiles of the CSR row (key block col_idx[p] = one tile of BN = block_k keys) into an
//     NSTAGE-deep ring; full barriers complete on the TMA byte count, empty barriers on the consumers'
//     arrivals.
//   warpgroups 1, 2 (consumers, 64 query rows each): S = Q K^T (wgmma, A = Q and B = K from shared
//     memory), token mask (FULL: bounds only; PROGRAM: the group's program; BITMASK: the block's bits),
//     online softmax in registers (log2 domain), P converted to 16-bit in registers and used as the
//     register A operand of O += P V (B = V from shared memory, MN-major through the descriptor).
//   With SP_PINGPONG the two consumer warpgroups take turns issuing their GEMMs (named barriers), so
//   one warpgroup's softmax overlaps the other's matrix work; within a warpgroup, PV(t) and QK(t+1)
//   are issued back to back and the mask of tile t+1 is computed while they run.
// Shared-memory tiles are in the TMA 128-byte swizzle: a [rows][HD] tile is stored as HD/64 panels of
// [rows][64] elements (128-byte rows), each panel 1024-byte aligned.
//
// Compile-time configuration (-D): SP_BF16 (0 = fp16, 1 = bf16), SP_HD (64|128), SP_LK (64|128, layout
// block_k = keys per tile), SP_NSTAGE (2..4), SP_PINGPONG (0|1), SP_OVERLAP (0|1: QK(t+1) is issued
// before PV(t) and waited alone, so the exponentials of tile t+1 run while PV(t) is on the tensor cores,
// FA3's intra-warpgroup overlap). block_q is 128 (SP_LQ must be 128).
// Packed varlen is handled through the tensor maps' coordinates (see the launcher, hopper_backend.py).

#include "mask_program.cuh"

#ifndef SP_BF16
#define SP_BF16 1
#endif
#ifndef SP_HD
#define SP_HD 128
#endif
#ifndef SP_LK
#define SP_LK 128
#endif
#ifndef SP_LQ
#define SP_LQ 128
#endif
#ifndef SP_NSTAGE
#define SP_NSTAGE 2
#endif
#ifndef SP_PINGPONG
#define SP_PINGPONG 1
#endif
#ifndef SP_OVERLAP
#define SP_OVERLAP 1
#endif
#ifndef SP_PRODUCER_REGS
#define SP_PRODUCER_REGS 40
#endif
#ifndef SP_CONSUMER_REGS
#define SP_CONSUMER_REGS 232
#endif

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

namespace sph {

constexpr int BQ = 128;               // query rows per CTA = layout block_q
constexpr int HD = SP_HD;
constexpr int BN = SP_LK;             // keys per tile = layout block_k
constexpr int NS = SP_NSTAGE;         // K/V ring depth
constexpr int PANELS = HD / 64;       // 64-element (128-byte) column panels of a row
constexpr int NCH = BN / 64;          // 64-key chunks of a tile (the mask evaluator works on 64 keys)
constexpr int NJ = BN / 8;            // n8 column groups of S per thread
constexpr int ND = HD / 8;            // n8 column groups of O per thread
constexpr int NT = 384;               // producer warpgroup + 2 consumer warpgroups
constexpr int NCONS = 256;            // consumer threads
constexpr u32 Q_BYTES = BQ * HD * 2;
constexpr u32 KV_BYTES = BN * HD * 2; // one K (or V) stage
constexpr u32 Q_PANEL = BQ * 128;     // bytes of one Q panel
constexpr u32 KV_PANEL = BN * 128;    // bytes of one K/V panel
constexpr u32 TILES_BYTES = Q_BYTES + 2 * NS * KV_BYTES;
constexpr u32 NBAR = 6 + 4 * NS;      // q_full, k/v full/empty[NS], q_empty, slot_full[2], slot_empty[2]
constexpr float LN2 = 0.6931471805599453f;
constexpr int BAR_SCHED = 1;          // named barriers 1, 2: the consumers' turn to issue GEMMs
constexpr int BAR_CLEAR = 3;          // named barrier 3: both consumer warpgroups cleared a V tile's tail
constexpr int BAR_PROG = 4;           // named barrier 4: the consumers (re)load the group's mask program
using spk_mask::MAX_PROGRAM;

static_assert(HD == 64 || HD == 128, "SP_HD must be 64 or 128");
static_assert(BN == 64 || BN == 128, "SP_LK must be 64 or 128");
static_assert(SP_LQ == 128, "the Hopper kernel takes block_q = 128 only");
static_assert(NS >= 2 && NS <= 4, "SP_NSTAGE must be 2, 3 or 4");
static_assert(TILES_BYTES + 1024 + NBAR * 8 + MAX_PROGRAM * 16 + 32 <= 232448, "shared memory over 227 KB");
static_assert(SP_PRODUCER_REGS * 128 + SP_CONSUMER_REGS * 256 <= 65536, "register file over 64K");

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

}  // namespace sph

using namespace sph;

#include "mma_sm80.cuh"
#include "sm90_ptx.cuh"

namespace sph {

// A CUtensorMap, opaque (128 bytes); passed by value as a __grid_constant__ parameter.
struct __align__(128) TensorMap {
  u64 w[16];
};

// Bits of this thread's 16 accumulator columns (j*8 + 2*tq + e, j < 8, e < 2) of a 64-bit column mask,
// packed into bit j*2 + e.
__device__ __forceinline__ u32 thread_cols(u64 cm, int tq) {
  u64 x = (cm >> (2 * tq)) & 0x0303030303030303ull;
  x = (x | (x >> 6)) & 0x000F000F000F000Full;
  x = (x | (x >> 12)) & 0x000000FF000000FFull;
  x = (x | (x >> 24)) & 0xFFFFull;
  return (u32)x;
}

// Bit of accumulator element (n8 group j, element c) in the packed per-thread tile mask:
// 16 bits per (row half, 64-key chunk); row half = c >> 1 (rows g and g + 8).
__device__ __forceinline__ int allow_bit(int j, int c) {
  return (((c >> 1) * NCH + (j >> 3)) << 4) + (j & 7) * 2 + (c & 1);
}

// Coordinates of row `row` (relative to the sequence start) of head `head`: unpacked tensors are mapped
// as (D, N, heads, B), packed ones as (D, heads, T, 1) (strides increase with the dimension).
__device__ __forceinline__ void tma_rows(u32 dst, const TensorMap* tm, u32 bar, int x, int row, int head, int b,
                                         int seq0, int varlen) {
  if (varlen)
    tma_load_4d(dst, tm, bar, x, head, seq0 + row, 0);
  else
    tma_load_4d(dst, tm, bar, x, row, head, b);
}

// Packed sequences: a V tile that runs past its sequence's end holds the next sequence's rows (the TMA
// zero-fills only past the whole tensor). Their P is 0, but 0 * NaN = NaN, so the 256 consumer threads
// clear rows [row0, BN) of every panel of the tile (whole 128-byte rows: the swizzle only permutes
// chunks inside a row), order the writes before the async proxy's reads (wgmma) and writes (the TMA
// that refills the stage), and wait for each other, since each warpgroup reads every row.
__device__ __forceinline__ void clear_tile_rows(u32 tile, int row0, int ctid) {
  constexpr int CPR = PANELS * 8;  // 16-byte chunks per row, all panels
  for (int i = ctid; i < (BN - row0) * CPR; i += NCONS)
    sts_zero16(tile + ((i % CPR) >> 3) * KV_PANEL + (row0 + i / CPR) * 128 + (i & 7) * 16);
  fence_proxy_async();
  named_sync(BAR_CLEAR, NCONS);
}

// One work item, decoded the same way by the producer and the consumers.
struct Item {
  int b, h, r, seq0, qlen, kvlen, q0, g, pstart, ntiles;
};


__device__ __forceinline__ Item decode_item(int wi, int H, int R, int Nq, int Nk, const int* __restrict__ cu_seqlens,
                                            int varlen, const int* __restrict__ row_ptr, int Bg, int Hg) {
  Item it;
  it.r = wi % R;
  const int bh = wi / R;
  it.h = bh % H;
  it.b = bh / H;
  it.seq0 = 0;
  it.qlen = Nq;
  it.kvlen = Nk;
  if (varlen) {
    it.seq0 = cu_seqlens[it.b];
    it.qlen = it.kvlen = cu_seqlens[it.b + 1] - it.seq0;
  }
  it.q0 = it.r * BQ;
  it.g = (Bg > 1 ? it.b : 0) * Hg + (Hg > 1 ? it.h : 0);
  it.pstart = row_ptr[it.g * (R + 1) + it.r];
  it.ntiles = row_ptr[it.g * (R + 1) + it.r + 1] - it.pstart;
  if (it.q0 >= it.qlen) it.ntiles = -1;  // a row block past this sequence's end: nothing to compute or write
  return it;
}

}  // namespace sph


// Everything but the tensor maps, as one by-value parameter: one argument for the launcher to pass instead
// of 28 (the host packs it with hopper_backend.PARAMS, every member 8 bytes, in this order).
struct Params {
  u16* O;                          // output, q's layout
  float* LSE;                      // (B, H, Nq) or (H, T) packed; unused unless write_lse
  long long o_sb, o_sh, o_sn;      // O strides (elements): batch, head, token
  long long l_sb, l_sh;            // LSE strides: batch, head
  const int* cu_seqlens;           // packed: (B + 1,) sequence starts
  const int* row_ptr;              // layout CSR (G, R + 1)
  const int* col_idx;              // key block of each stored block
  const unsigned char* block_kind; // 0 FULL, 1 PROGRAM, 2 BITMASK
  const int* mask_idx;             // BITMASK blocks: index into bitmasks
  const u32* bitmasks;             // (n, BQ, BN / 32) words
  const int* programs;             // (G, P, 4) mask program instructions
  const int* program_len;          // (G,)
  const int* work;                 // work items, long rows first
  int* next_slot;                  // scheduler counter, zeroed before the launch
  long long H, Hkv, Nq, Nk, varlen, Bg, Hg, R, P, n_work, write_lse;
  double scale_log2;               // scale * log2(e), > 0
};
static_assert(sizeof(Params) == 29 * 8, "Params: 29 members of 8 bytes (hopper_backend.PARAMS)");

extern "C" __global__ void __launch_bounds__(NT, 1)
sp_hopper_fwd(const __grid_constant__ TensorMap tmQ, const __grid_constant__ TensorMap tmK,
              const __grid_constant__ TensorMap tmV, const __grid_constant__ Params prm) {
  u16* __restrict__ O = prm.O;
  float* __restrict__ LSE = prm.LSE;
  const long long o_sb = prm.o_sb, o_sh = prm.o_sh, o_sn = prm.o_sn, l_sb = prm.l_sb, l_sh = prm.l_sh;
  const int* __restrict__ cu_seqlens = prm.cu_seqlens;
  const int* __restrict__ row_ptr = prm.row_ptr;
  const int* __restrict__ col_idx = prm.col_idx;
  const unsigned char* __restrict__ block_kind = prm.block_kind;
  const int* __restrict__ mask_idx = prm.mask_idx;
  const u32* __restrict__ bitmasks = prm.bitmasks;
  const int* __restrict__ programs = prm.programs;
  const int* __restrict__ program_len = prm.program_len;
  const int* __restrict__ work = prm.work;
  int* __restrict__ next_slot = prm.next_slot;
  const int H = (int)prm.H, Hkv = (int)prm.Hkv, Nq = (int)prm.Nq, Nk = (int)prm.Nk, varlen = (int)prm.varlen;
  const int Bg = (int)prm.Bg, Hg = (int)prm.Hg, R = (int)prm.R, P = (int)prm.P, n_work = (int)prm.n_work;
  const int write_lse = (int)prm.write_lse;
  const float scale_log2 = (float)prm.scale_log2;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // Tiles at a 1024-byte aligned base (the 128-byte swizzle repeats every 8 rows of 128 bytes).
  const u32 raw = smem_u32(smem_raw);
  const u32 base = (raw + 1023u) & ~1023u;
  const u32 sQ = base;
  const u32 sK = sQ + Q_BYTES;
  const u32 sV = sK + NS * KV_BYTES;
  const u32 sBar = sV + NS * KV_BYTES;
  const u32 bar_q = sBar;
  auto bar_kf = [&](int s) { return sBar + 8u * (1 + s); };
  auto bar_vf = [&](int s) { return sBar + 8u * (1 + NS + s); };
  auto bar_ke = [&](int s) { return sBar + 8u * (1 + 2 * NS + s); };
  auto bar_ve = [&](int s) { return sBar + 8u * (1 + 3 * NS + s); };
  const u32 bar_qe = sBar + 8u * (1 + 4 * NS);
  auto bar_sf = [&](int i) { return sBar + 8u * (2 + 4 * NS + i); };  // slot i written (i = 0, 1)
  auto bar_se = [&](int i) { return sBar + 8u * (4 + 4 * NS + i); };  // slot i read by every consumer
  const u32 prog_off = ((sBar + 8u * NBAR - raw) + 15u) & ~15u;
  int4* s_prog = reinterpret_cast<int4*>(smem_raw + prog_off);
  // after the program: its group and length (read by the consumers; in shared memory, not registers,
  // so that nothing more stays live through the main loop), then the two work-slot mailboxes
  int* s_pmeta = reinterpret_cast<int*>(s_prog + MAX_PROGRAM);
  volatile int* s_slot = s_pmeta + 2;

  const int tid = threadIdx.x;
  const int cta = blockIdx.x, G = gridDim.x;
  auto item = [&](int wi) { return decode_item(wi, H, R, Nq, Nk, cu_seqlens, varlen, row_ptr, Bg, Hg); };

  if (tid == 0) {
    s_pmeta[0] = -1;  // no program loaded yet
    mbar_init(bar_q, 1);
    mbar_init(bar_qe, NCONS);
    for (int i = 0; i < 2; ++i) {
      mbar_init(bar_sf(i), 1);
      mbar_init(bar_se(i), NCONS);
    }
    for (int s = 0; s < NS; ++s) {
      mbar_init(bar_kf(s), 1);
      mbar_init(bar_vf(s), 1);
      mbar_init(bar_ke(s), NCONS);
      mbar_init(bar_ve(s), NCONS);
    }
    mbar_fence_init();
  }
  __syncthreads();

  // Pipeline counters, the same on both sides: T = K/V tiles loaded (consumed) before the current item
  // (stage T % NS, fill T / NS), nq = items with at least one tile before it (Q fill nq).
  if (tid < 128) {
    // =============================== producer warpgroup ===============================
    setmaxnreg_dec<SP_PRODUCER_REGS>();
    if (tid == 0) {
      tma_prefetch_desc(&tmQ);
      tma_prefetch_desc(&tmK);
      tma_prefetch_desc(&tmV);
      u32 T = 0, nq = 0;
      int slot = cta;  // the first item is the CTA's own; the next ones are taken from the shared counter
#pragma unroll 1
      for (int j = 0;; ++j) {
        // hand the slot to the consumers through mailbox j % 2 (once they have read its previous use)
        if (j >= 2) mbar_wait(bar_se(j & 1), ((j >> 1) - 1) & 1);
        s_slot[j & 1] = slot;
        mbar_arrive(bar_sf(j & 1));
        if (slot >= n_work) break;
        const Item it = item(work[slot]);
        if (it.ntiles <= 0) {
          slot = G + atomicAdd(next_slot, 1);
          continue;
        }
        const int hk = it.h / (H / Hkv);
        int next_col = col_idx[it.pstart];
#pragma unroll 1
        for (int t = 0; t < it.ntiles; ++t) {
          const u32 tt = T + (u32)t;
          const int st = (int)(tt % NS);
          const u32 use = tt / NS;  // how many times stage st was filled before
          const int kv0 = next_col * BN;
          if (t + 1 < it.ntiles) next_col = col_idx[it.pstart + t + 1];  // read ahead of its use
          if (use > 0) mbar_wait(bar_ke(st), (use - 1) & 1);
          mbar_arrive_expect_tx(bar_kf(st), KV_BYTES);
#pragma unroll
          for (int p = 0; p < PANELS; ++p)
            tma_rows(sK + st * KV_BYTES + p * KV_PANEL, &tmK, bar_kf(st), p * 64, kv0, hk, it.b, it.seq0, varlen);
          if (t == 0) {
            // Q of this item, once the consumers' last QK of the previous one is done with sQ
            if (nq > 0) mbar_wait(bar_qe, (nq - 1) & 1);
            mbar_arrive_expect_tx(bar_q, Q_BYTES);
#pragma unroll
            for (int p = 0; p < PANELS; ++p)
              tma_rows(sQ + p * Q_PANEL, &tmQ, bar_q, p * 64, it.q0, it.h, it.b, it.seq0, varlen);
            ++nq;
          }
          if (use > 0) mbar_wait(bar_ve(st), (use - 1) & 1);
          mbar_arrive_expect_tx(bar_vf(st), KV_BYTES);
#pragma unroll
          for (int p = 0; p < PANELS; ++p)
            tma_rows(sV + st * KV_BYTES + p * KV_PANEL, &tmV, bar_vf(st), p * 64, kv0, hk, it.b, it.seq0, varlen);
        }
        T += (u32)it.ntiles;
        // the next item, taken once this one's loads are issued (the producer runs NS tiles ahead of the
        // consumers): whichever CTA gets there first takes the next longest row (greedy, longest first)
        slot = G + atomicAdd(next_slot, 1);
      }
    }
    return;
  }

  // =============================== consumer warpgroups ===============================
  setmaxnreg_inc<SP_CONSUMER_REGS>();
  const int ctid = tid - 128;
  const int cw = ctid >> 7;               // consumer warpgroup 0 / 1: CTA rows [64 cw, 64 cw + 64)
  const int wq = (ctid >> 5) & 3;         // warp inside the warpgroup: 16 rows
  const int lane = tid & 31;
  const int tq = lane & 3;
  const int row_lo = cw * 64 + wq * 16 + (lane >> 2);  // this thread's rows: row_lo, row_lo + 8
  u32 T = 0, nq = 0;
#if SP_PINGPONG
  if (cw == 1) named_arrive(BAR_SCHED + 0, NCONS);  // warpgroup 0 issues first (once per CTA)
#endif

#pragma unroll 1
  for (int j = 0;; ++j) {
    mbar_wait(bar_sf(j & 1), (j >> 1) & 1);
    const int slot = s_slot[j & 1];
    mbar_arrive(bar_se(j & 1));
    if (slot >= n_work) break;
    int ntiles;
    float o[HD / 2];
    float m_lo = neg_inf(), m_hi = neg_inf(), l_lo = 0.f, l_hi = 0.f;
    {
      const Item it = item(work[slot]);
      ntiles = it.ntiles;
      if (ntiles < 0) continue;
      const int g_loaded = s_pmeta[0];
      if (it.g != g_loaded && ntiles > 0) {
        // the group's mask program. The first barrier: every consumer thread has read s_pmeta[0] for
        // this item and both warpgroups are past their last use of the previous program.
        named_sync(BAR_PROG, NCONS);
        int plen = program_len[it.g];
        plen = plen < MAX_PROGRAM ? plen : MAX_PROGRAM;
        for (int i = ctid; i < plen; i += NCONS) {
          const int* src = programs + ((long long)it.g * P + i) * 4;
          s_prog[i] = make_int4(src[0], src[1], src[2], src[3]);
        }
        if (ctid == 0) {
          s_pmeta[0] = it.g;
          s_pmeta[1] = plen;
        }
        named_sync(BAR_PROG, NCONS);
      }
#pragma unroll
      for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;

      if (ntiles > 0) {
        const int q0 = it.q0, kvlen = it.kvlen, pstart = it.pstart;
        float s[BN / 2];
        u32 pa[BN / 16][4];  // P as the A operand of PV, one m64k16 fragment per 16 keys

        // S = Q K^T for the tile in stage st (issued, not waited).
        auto issue_qk = [&](int st) {
#pragma unroll
          for (int kk = 0; kk < HD / 16; ++kk) {
            const u64 da = smem_desc(sQ + (kk >> 2) * Q_PANEL + cw * 64 * 128 + (kk & 3) * 32, 16, 1024);
            const u64 db = smem_desc(sK + st * KV_BYTES + (kk >> 2) * KV_PANEL + (kk & 3) * 32, 16, 1024);
            wgmma_ss<BN, 0>(s, da, db, kk > 0);
          }
        };
        // O += P V for the tile in stage st (issued, not waited). V is [keys][HD] in HD/64 panels: for the
        // B operand (K = keys, N = HD) that is MN-major, lbo = the panel stride.
        auto issue_pv = [&](int st) {
#pragma unroll
          for (int ks = 0; ks < BN / 16; ++ks) {
            const u64 db = smem_desc(sV + st * KV_BYTES + ks * 16 * 128, KV_PANEL, 1024);
            wgmma_rs<HD, 1>(o, pa[ks], db, 1);
          }
        };
        // Token mask of tile t (FULL: bounds only; PROGRAM; BITMASK), packed per thread (allow_bit).
        auto tile_mask = [&](int t, bool& need_mask) -> u64 {
          const int pidx = pstart + t;
          const int kv0 = col_idx[pidx] * BN;
          const int knd = block_kind[pidx];
          need_mask = knd != 0 || kv0 + BN > kvlen;
          u64 allow = ~0ull;
          if (need_mask) {
            allow = 0ull;
            const u32* bm = nullptr;
            if (knd == 2) bm = bitmasks + (long long)mask_idx[pidx] * (BQ * (BN / 32));
#pragma unroll 1
            for (int rr = 0; rr < 2; ++rr) {
              const int rc = row_lo + rr * 8;  // row inside the block
#pragma unroll
              for (int ch = 0; ch < NCH; ++ch) {
                const int kc = kv0 + ch * 64;
                u64 cm = ~0ull;
                if (knd == 1) {
                  cm = spk_mask::eval_program_row<false>(s_prog, s_pmeta[1], q0 + rc, kc, tq);
                } else if (knd == 2) {
                  const u32* w = bm + rc * (BN / 32) + ch * 2;
                  cm = (u64)w[0] | ((u64)w[1] << 32);
                }
                cm &= spk_mask::range_mask(0, kvlen - 1 - kc);
                allow |= (u64)thread_cols(cm, tq) << ((rr * NCH + ch) * 16);
              }
            }
          }
          return allow;
        };
        // Mask, online softmax of S in place (log2 domain): S becomes exp2(S scale - m) with one FFMA per
        // element (the scale is positive: supports() sends other scales to the mma.sync kernel, so the row
        // maximum of S scale is the scaled maximum of S); l and m updated; returns the factors O must be
        // rescaled by.
        auto softmax = [&](bool need_mask, u64 allow, float& alpha_lo, float& alpha_hi) {
          if (need_mask) {
#pragma unroll
            for (int jj = 0; jj < NJ; ++jj)
#pragma unroll
              for (int c = 0; c < 4; ++c)
                if (!((allow >> allow_bit(jj, c)) & 1ull)) s[jj * 4 + c] = neg_inf();
          }
          float mx_lo = neg_inf(), mx_hi = neg_inf();
#pragma unroll
          for (int jj = 0; jj < NJ; ++jj) {
            mx_lo = fmaxf(mx_lo, fmaxf(s[jj * 4 + 0], s[jj * 4 + 1]));
            mx_hi = fmaxf(mx_hi, fmaxf(s[jj * 4 + 2], s[jj * 4 + 3]));
          }
          mx_lo = fmaxf(m_lo, quad_max(mx_lo) * scale_log2);
          mx_hi = fmaxf(m_hi, quad_max(mx_hi) * scale_log2);
          const float base_lo = (mx_lo == neg_inf()) ? 0.f : mx_lo;
          const float base_hi = (mx_hi == neg_inf()) ? 0.f : mx_hi;
          alpha_lo = ex2(m_lo - base_lo);
          alpha_hi = ex2(m_hi - base_hi);
          m_lo = mx_lo;
          m_hi = mx_hi;
          float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
          for (int jj = 0; jj < NJ; ++jj) {
            s[jj * 4 + 0] = ex2(fmaf(s[jj * 4 + 0], scale_log2, -base_lo));
            s[jj * 4 + 1] = ex2(fmaf(s[jj * 4 + 1], scale_log2, -base_lo));
            s[jj * 4 + 2] = ex2(fmaf(s[jj * 4 + 2], scale_log2, -base_hi));
            s[jj * 4 + 3] = ex2(fmaf(s[jj * 4 + 3], scale_log2, -base_hi));
            sum_lo += s[jj * 4 + 0] + s[jj * 4 + 1];
            sum_hi += s[jj * 4 + 2] + s[jj * 4 + 3];
          }
          l_lo = l_lo * alpha_lo + sum_lo;
          l_hi = l_hi * alpha_hi + sum_hi;
        };
        // O *= alpha (PV of the previous tile done; skipped when no row maximum of the warp moved, the
        // usual case after the first tiles); P = S packed to 16-bit A fragments: keys 16 ks .. 16 ks + 15
        // are the S column groups 2 ks and 2 ks + 1.
        auto rescale_pack = [&](float alpha_lo, float alpha_hi) {
          if (__any_sync(0xffffffffu, alpha_lo != 1.f || alpha_hi != 1.f)) {
#pragma unroll
            for (int d = 0; d < ND; ++d) {
              o[d * 4 + 0] *= alpha_lo; o[d * 4 + 1] *= alpha_lo;
              o[d * 4 + 2] *= alpha_hi; o[d * 4 + 3] *= alpha_hi;
            }
          }
#pragma unroll
          for (int ks = 0; ks < BN / 16; ++ks) {
            pa[ks][0] = pack2(s[(2 * ks) * 4 + 0], s[(2 * ks) * 4 + 1]);
            pa[ks][1] = pack2(s[(2 * ks) * 4 + 2], s[(2 * ks) * 4 + 3]);
            pa[ks][2] = pack2(s[(2 * ks + 1) * 4 + 0], s[(2 * ks + 1) * 4 + 1]);
            pa[ks][3] = pack2(s[(2 * ks + 1) * 4 + 2], s[(2 * ks + 1) * 4 + 3]);
          }
        };
        // V of tile t (stage st) loaded; packed inputs: its rows past the sequence cleared.
        auto v_ready = [&](int t, int st) {
          mbar_wait(bar_vf(st), ((T + (u32)t) / NS) & 1);
          const int kv0 = col_idx[pstart + t] * BN;
          if (varlen && kv0 + BN > kvlen)  // uniform over the CTA: both warpgroups take it for the same t
            clear_tile_rows(sV + st * KV_BYTES, kvlen - kv0 > 0 ? kvlen - kv0 : 0, ctid);
        };
        // This warpgroup's turn at the tensor cores: take the ping-pong token, make O and P (written by
        // ordinary instructions) visible to the wgmmas, issue (and commit) the GEMMs, pass the token on.
        auto gemm_turn = [&](auto issue) {
#if SP_PINGPONG
          named_sync(BAR_SCHED + cw, NCONS);
#endif
#pragma unroll
          for (int i = 0; i < HD / 2; ++i) reg_fence(o[i]);
#pragma unroll
          for (int ks = 0; ks < BN / 16; ++ks)
#pragma unroll
            for (int e = 0; e < 4; ++e) reg_fence(pa[ks][e]);
          wgmma_fence();
          issue();
#if SP_PINGPONG
          named_arrive(BAR_SCHED + (cw ^ 1), NCONS);
#endif
        };

        // ---- tile 0: S(0) alone ----
        mbar_wait(bar_q, nq & 1);
        ++nq;
        {
          const int st = (int)(T % NS);
          bool need_mask;
          const u64 allow = tile_mask(0, need_mask);
          mbar_wait(bar_kf(st), (T / NS) & 1);
          gemm_turn([&] {  // O = 0 is set before the group is issued
            issue_qk(st);
            wgmma_commit();
          });
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < BN / 2; ++i) reg_fence(s[i]);
          mbar_arrive(bar_ke(st));
          if (ntiles == 1) mbar_arrive(bar_qe);
          float a_lo, a_hi;
          softmax(need_mask, allow, a_lo, a_hi);
          rescale_pack(a_lo, a_hi);
        }
        // ---- tiles 1 .. ntiles-1: issue S(t) and PV(t-1), mask(t) while they run, softmax(t) ----
#pragma unroll 1
        for (int t = 1; t < ntiles; ++t) {
          const u32 tt = T + (u32)t;
          const int st = (int)(tt % NS), sp = (int)((tt - 1) % NS);
          bool need_mask;  // computed here, where S is dead, not under the GEMMs: fewer live registers
          const u64 allow = tile_mask(t, need_mask);
          v_ready(t - 1, sp);
          mbar_wait(bar_kf(st), (tt / NS) & 1);
          gemm_turn([&] {
#if SP_OVERLAP
            issue_qk(st);
            wgmma_commit();
            issue_pv(sp);
            wgmma_commit();
#else
            issue_pv(sp);
            issue_qk(st);
            wgmma_commit();
#endif
          });
          float a_lo, a_hi;
#if SP_OVERLAP
          wgmma_wait<1>();  // S(t) done; PV(t-1) may still run under the exponentials
#pragma unroll
          for (int i = 0; i < BN / 2; ++i) reg_fence(s[i]);
          mbar_arrive(bar_ke(st));
          if (t + 1 == ntiles) mbar_arrive(bar_qe);
          softmax(need_mask, allow, a_lo, a_hi);
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < HD / 2; ++i) reg_fence(o[i]);
          mbar_arrive(bar_ve(sp));
#else
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < BN / 2; ++i) reg_fence(s[i]);
#pragma unroll
          for (int i = 0; i < HD / 2; ++i) reg_fence(o[i]);
          mbar_arrive(bar_ke(st));
          mbar_arrive(bar_ve(sp));
          if (t + 1 == ntiles) mbar_arrive(bar_qe);
          softmax(need_mask, allow, a_lo, a_hi);
#endif
          rescale_pack(a_lo, a_hi);
        }
        // ---- PV of the last tile ----
        {
          const int sl = (int)((T + (u32)ntiles - 1) % NS);
          v_ready(ntiles - 1, sl);
          gemm_turn([&] {
            issue_pv(sl);
            wgmma_commit();
          });
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < HD / 2; ++i) reg_fence(o[i]);
          mbar_arrive(bar_ve(sl));
        }
        T += (u32)ntiles;
      }
    }

    // ---- epilogue: O = acc / l (rows with no allowed key: 0), LSE = (m + log2 l) ln 2 (or -inf) ----
    const Item it = item(work[slot]);  // decoded again: nothing of it stays live through the main loop
    l_lo = quad_sum(l_lo);
    l_hi = quad_sum(l_hi);
    const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f;
    const float inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
    const int tok_lo = it.q0 + row_lo, tok_hi = tok_lo + 8;
    const int qlen = it.qlen;
    if (write_lse && tq == 0) {
      float* Lb = LSE + it.b * l_sb + it.h * l_sh + it.seq0;
      if (tok_lo < qlen) Lb[tok_lo] = l_lo > 0.f ? (m_lo + __log2f(l_lo)) * LN2 : neg_inf();
      if (tok_hi < qlen) Lb[tok_hi] = l_hi > 0.f ? (m_hi + __log2f(l_hi)) * LN2 : neg_inf();
    }
    u16* Ob = O + it.b * o_sb + it.h * o_sh + (long long)it.seq0 * o_sn;
    if (tok_lo < qlen) {
      u16* orow = Ob + (long long)tok_lo * o_sn + 2 * tq;
#pragma unroll
      for (int d = 0; d < ND; ++d)
        *reinterpret_cast<u32*>(orow + d * 8) = pack2(o[d * 4 + 0] * inv_lo, o[d * 4 + 1] * inv_lo);
    }
    if (tok_hi < qlen) {
      u16* orow = Ob + (long long)tok_hi * o_sn + 2 * tq;
#pragma unroll
      for (int d = 0; d < ND; ++d)
        *reinterpret_cast<u32*>(orow + d * 8) = pack2(o[d * 4 + 2] * inv_hi, o[d * 4 + 3] * inv_hi);
    }
  }
}
