// Mask programs on the GPU: the one evaluator shared by the forward and backward kernels.
//
// A program is a postfix list of int4 instructions (op, a, b, c) over a stack of masks
// (spattern/ir/program.py is the contract; tests/test_single_sources.py checks that every
// OP_*, MAX_PROGRAM and MAX_STACK below equals the Python constant). ``mod`` is floor modulo.
// The evaluator works on one query row i and the 64 keys kv0 .. kv0 + 63 of a kernel tile and
// returns a 64-bit column mask (bit c: key kv0 + c allowed). Range ops (BAND, KEY_RANGE) fill
// whole column ranges, QUERY_* ops are all-or-nothing per row, and the per-element ops
// (DIFF_MOD, KEY_MOD) fill either all 64 columns (ALL_COLS) or only the 16 columns of an
// mma.sync accumulator owned by a thread with quad index tq (columns j*8 + 2*tq + e).
//
// The launchers inline this file in place of its #include line before compiling (NVRTC and nvcc
// routes alike), so no include path is needed.
#pragma once

namespace spk_mask {

typedef unsigned long long u64;

constexpr int OP_TRUE = 0;
constexpr int OP_FALSE = 1;
constexpr int OP_BAND = 2;
constexpr int OP_DIFF_MOD = 3;
constexpr int OP_KEY_MOD = 4;
constexpr int OP_QUERY_MOD = 5;
constexpr int OP_KEY_RANGE = 6;
constexpr int OP_QUERY_RANGE = 7;
constexpr int OP_OR = 8;
constexpr int OP_AND = 9;
constexpr int OP_ANDNOT = 10;
constexpr int OP_NOT = 11;
constexpr int MAX_PROGRAM = 64;
constexpr int MAX_STACK = 32;

__device__ __forceinline__ int fmod_floor(int x, int m) {
  int r = x % m;
  return r < 0 ? r + m : r;
}

// Mask of tile columns [lo, hi] intersected with [0, 63].
__device__ __forceinline__ u64 range_mask(int lo, int hi) {
  lo = lo < 0 ? 0 : lo;
  hi = hi > 63 ? 63 : hi;
  if (lo > hi) return 0ull;
  return (~0ull >> (63 - hi)) & (~0ull << lo);
}

// Columns [lo, hi] (64-bit arithmetic: program bounds reach +-2^30) of the tile.
__device__ __forceinline__ u64 range_mask_ll(long long lo, long long hi) {
  return (hi < 0 || lo > 63) ? 0ull : range_mask((int)(lo < 0 ? 0 : lo), (int)(hi > 63 ? 63 : hi));
}

// Evaluate the program for query i over keys kv0 .. kv0 + 63. ALL_COLS: per-element ops fill all
// 64 columns; otherwise only the thread's 16 accumulator columns (the only ones read afterwards).
template <bool ALL_COLS>
__device__ __forceinline__ u64 eval_program_row(const int4* prog, int plen, int i, int kv0, int tq) {
  u64 st[MAX_STACK];
  int sp = 0;
  for (int pc = 0; pc < plen; ++pc) {
    const int4 ins = prog[pc];
    const int a = ins.y, b = ins.z, c = ins.w;
    u64 m = 0ull;
    switch (ins.x) {
      case OP_TRUE: m = ~0ull; break;
      case OP_FALSE: m = 0ull; break;
      case OP_BAND:  // a <= i - key <= b  <=>  i - b <= key <= i - a
        m = range_mask_ll((long long)i - b - kv0, (long long)i - a - kv0);
        break;
      case OP_DIFF_MOD:
        if (ALL_COLS) {
#pragma unroll 8
          for (int col = 0; col < 64; ++col) m |= (u64)(fmod_floor(i - (kv0 + col), a) == b) << col;
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = j * 8 + 2 * tq + e;
              m |= (u64)(fmod_floor(i - (kv0 + col), a) == b) << col;
            }
        }
        break;
      case OP_KEY_MOD:
        if (ALL_COLS) {
#pragma unroll 8
          for (int col = 0; col < 64; ++col) {
            const int r = fmod_floor(kv0 + col, a);
            m |= (u64)(b <= r && r <= c) << col;
          }
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = j * 8 + 2 * tq + e;
              const int r = fmod_floor(kv0 + col, a);
              m |= (u64)(b <= r && r <= c) << col;
            }
        }
        break;
      case OP_QUERY_MOD: { const int r = fmod_floor(i, a); m = (b <= r && r <= c) ? ~0ull : 0ull; } break;
      case OP_KEY_RANGE:  // a <= key < b
        m = range_mask_ll((long long)a - kv0, (long long)b - 1 - kv0);
        break;
      case OP_QUERY_RANGE: m = (a <= i && i < b) ? ~0ull : 0ull; break;
      case OP_OR: { const u64 y = st[--sp]; const u64 x = st[--sp]; m = x | y; } break;
      case OP_AND: { const u64 y = st[--sp]; const u64 x = st[--sp]; m = x & y; } break;
      case OP_ANDNOT: { const u64 y = st[--sp]; const u64 x = st[--sp]; m = x & ~y; } break;
      case OP_NOT: { const u64 x = st[--sp]; m = ~x; } break;
      default: m = 0ull; break;
    }
    st[sp++] = m;
  }
  return sp > 0 ? st[sp - 1] : 0ull;
}

}  // namespace spk_mask
