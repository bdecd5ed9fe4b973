"""BlockLayout: the CSR block metadata that is the contract between compiler and runtime.

Query blocks of ``block_q`` tokens are rows, key blocks of ``block_k`` tokens are columns. One CSR
per layout group; groups broadcast over (batch, heads) and are stored concatenated.

Arrays (numpy, host):

- ``row_ptr``     int32  [G, R+1]  offsets into the flat arrays below; global, so ``row_ptr[g, 0]``
                                    is where group g starts and ``row_ptr[G-1, R]`` is the total nnz.
                                    R = ceil(q_len / block_q).
- ``col_idx``     int32  [nnz]     key-block index, ascending and unique within a row.
- ``block_kind``  uint8  [nnz]     FULL (0): every in-range pair allowed; PROGRAM (1): partial, the
                                    group's mask program decides per element; BITMASK (2): partial,
                                    ``bitmasks[mask_idx]`` decides.
- ``mask_idx``    int32  [nnz]     index into ``bitmasks`` for BITMASK blocks, -1 otherwise.
- ``bitmasks``    uint32 [M, block_q, ceil(block_k/32)]  bit c%32 of word c//32 of row r: query
                                    row*block_q + r may attend key col*block_k + c. Bits of
                                    out-of-range tokens are 0. Blocks with the same mask may share
                                    one entry (the compiler stores each distinct mask once:
                                    ``dedupe_bitmasks``), so M <= the number of BITMASK blocks.
- ``programs``    int32  [G, P, 4] each group's mask program (``spattern.ir.program``).
- ``program_len`` int32  [G]       its length; 0 when the group has none.

Scalars: ``q_len``, ``kv_len``, ``block_q``, ``block_k``, ``group_shape = (Bg, Hg)`` with Bg in
{1, B} and Hg in {1, H}: (b, h) uses group (b if Bg > 1 else 0) * Hg + (h if Hg > 1 else 0).
Out-of-range tokens of the last row/column blocks are never attended, whatever the kind says.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spattern.ir import program as prog
from spattern.ir.blocks import Grid
from spattern.utils.errors import UserError

FULL, PROGRAM, BITMASK = 0, 1, 2
DEVICE_CACHE_SIZE = 32  # entries per layout in ``BlockLayout.cached``
KIND_NAMES = {FULL: "full", PROGRAM: "program", BITMASK: "bitmask"}


class LayoutError(ValueError):
    """An invalid BlockLayout (what is wrong, where)."""


class LayoutFileError(LayoutError, UserError):
    """A file that ``BlockLayout.load`` cannot read as a spattern layout (the one load error; a
    ``UserError``: the CLI prints its one-line message and exits 2)."""


FORMAT_VERSION = 1


@dataclass(eq=False, frozen=True)
class BlockLayout(Grid):
    """Frozen: layouts are shared (the compiler caches them), so nothing may change one in place;
    use ``spattern.compiler.layout.replace(layout, ...)`` for a modified copy. Only the internal
    caches (device copies, the CSC transpose, the validated flag) are filled in lazily."""

    q_len: int
    kv_len: int
    block_q: int
    block_k: int
    group_shape: tuple[int, int]
    row_ptr: np.ndarray
    col_idx: np.ndarray
    block_kind: np.ndarray
    mask_idx: np.ndarray
    bitmasks: np.ndarray
    programs: np.ndarray
    program_len: np.ndarray
    pattern: str = ""
    _device_cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _csc: Any = field(default=None, repr=False)

    # --- shapes ----------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return int(self.group_shape[0] * self.group_shape[1])

    # n_rows, n_cols, row_extent, col_extent: the block geometry (``spattern.ir.blocks.Grid``);
    # equality is identity (``equals`` compares contents), not Grid's field comparison
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def nnz(self) -> int:
        return int(self.col_idx.size)

    @property
    def words_per_row(self) -> int:
        return -(-self.block_k // 32)

    def group_of(self, b: int, h: int) -> int:
        Bg, Hg = self.group_shape
        return (b if Bg > 1 else 0) * Hg + (h if Hg > 1 else 0)

    def row_counts(self) -> np.ndarray:
        """int [G, R]: blocks per row."""
        return np.diff(self.row_ptr.astype(np.int64), axis=1)

    def group_slice(self, g: int) -> slice:
        return slice(int(self.row_ptr[g, 0]), int(self.row_ptr[g, -1]))

    def block_rows(self) -> np.ndarray:
        """int64 [nnz]: the row of each stored block."""
        counts = self.row_counts().reshape(-1)
        return np.repeat(np.tile(np.arange(self.n_rows), self.n_groups), counts)

    def block_groups(self) -> np.ndarray:
        """int64 [nnz]: the group of each stored block."""
        return np.repeat(np.arange(self.n_groups), self.row_counts().sum(axis=1))

    # --- validation ------------------------------------------------------------------------
    def mark_validated(self) -> None:
        object.__setattr__(self, "_validated", True)

    def validate(self) -> "BlockLayout":
        """Check dtypes, shapes, monotone row pointers, sorted unique in-range columns, kinds."""

        def fail(msg):
            raise LayoutError(f"invalid BlockLayout: {msg}")

        for name, dt in (("row_ptr", np.int32), ("col_idx", np.int32), ("block_kind", np.uint8),
                         ("mask_idx", np.int32), ("bitmasks", np.uint32), ("programs", np.int32),
                         ("program_len", np.int32)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dt:
                fail(f"{name}: expected a numpy {np.dtype(dt).name} array, got "
                     f"{getattr(arr, 'dtype', type(arr).__name__)}")
        for name in ("q_len", "kv_len", "block_q", "block_k"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                fail(f"{name}: expected a positive int, got {v!r}")
        if self.block_q % 16 or self.block_k % 16:
            fail(f"block sizes must be multiples of 16, got ({self.block_q}, {self.block_k})")
        if len(self.group_shape) != 2 or min(self.group_shape) < 1:
            fail(f"group_shape: expected (Bg, Hg) >= 1, got {self.group_shape}")
        G, R, C = self.n_groups, self.n_rows, self.n_cols
        if self.row_ptr.shape != (G, R + 1):
            fail(f"row_ptr: expected shape {(G, R + 1)}, got {self.row_ptr.shape}")
        rp = self.row_ptr.astype(np.int64)
        if rp[0, 0] != 0:
            fail(f"row_ptr[0, 0]: expected 0, got {rp[0, 0]}")
        if np.any(np.diff(rp, axis=1) < 0):
            g, r = np.argwhere(np.diff(rp, axis=1) < 0)[0]
            fail(f"row_ptr of group {g} decreases at row {r}")
        if G > 1 and np.any(rp[1:, 0] != rp[:-1, -1]):
            fail("row_ptr: each group must start where the previous one ends")
        nnz = int(rp[-1, -1])
        for name in ("col_idx", "block_kind", "mask_idx"):
            if getattr(self, name).shape != (nnz,):
                fail(f"{name}: expected shape ({nnz},), got {getattr(self, name).shape}")
        if nnz:
            if self.col_idx.min() < 0 or self.col_idx.max() >= C:
                fail(f"col_idx: expected values in [0, {C}), got [{self.col_idx.min()}, {self.col_idx.max()}]")
            rows = self.block_rows()
            same_row = np.ones(nnz - 1, dtype=bool)
            starts = rp[:, :-1].reshape(-1)
            starts = starts[(starts > 0) & (starts < nnz)]
            same_row[starts - 1] = False
            bad = same_row & (np.diff(self.col_idx.astype(np.int64)) <= 0)
            if bad.any():
                n = int(np.argmax(bad))
                fail(f"col_idx not strictly ascending within row {rows[n]} (entry {n}: "
                     f"{self.col_idx[n]} then {self.col_idx[n + 1]})")
            kinds = self.block_kind
            if np.any(kinds > BITMASK):
                fail(f"block_kind: expected values in {{0, 1, 2}}, got {sorted(set(kinds.tolist()))}")
            is_bm = kinds == BITMASK
            if np.any(self.mask_idx[~is_bm] != -1):
                fail("mask_idx: expected -1 for blocks that are not BITMASK")
            M = self.bitmasks.shape[0]
            if is_bm.any() and (self.mask_idx[is_bm].min() < 0 or self.mask_idx[is_bm].max() >= M):
                fail(f"mask_idx: BITMASK blocks must index bitmasks [0, {M})")
            groups = self.block_groups()
            if np.any((kinds == PROGRAM) & (self.program_len[groups] == 0)):
                fail("a PROGRAM block belongs to a group without a mask program")
        if self.bitmasks.ndim != 3 or self.bitmasks.shape[1:] != (self.block_q, self.words_per_row):
            fail(f"bitmasks: expected shape (M, {self.block_q}, {self.words_per_row}), got {self.bitmasks.shape}")
        if self.programs.ndim != 3 or self.programs.shape[0] != G or self.programs.shape[2] != 4:
            fail(f"programs: expected shape ({G}, P, 4), got {self.programs.shape}")
        if self.program_len.shape != (G,):
            fail(f"program_len: expected shape ({G},), got {self.program_len.shape}")
        for g in range(G):
            n = int(self.program_len[g])
            if n:
                try:
                    prog.validate(self.programs[g, :n].tolist())
                except ValueError as e:
                    fail(f"program of group {g}: {e}")
        return self

    # --- token masks -----------------------------------------------------------------------
    def block_masks(self, idx: np.ndarray) -> np.ndarray:
        """bool [n, block_q, block_k]: token masks of stored blocks ``idx`` (in-range bits only)."""
        idx = np.asarray(idx, dtype=np.int64)
        bq, bk = self.block_q, self.block_k
        rows, groups = self.block_rows()[idx], self.block_groups()[idx]
        cols = self.col_idx[idx].astype(np.int64)
        qi = rows[:, None, None] * bq + np.arange(bq)[None, :, None]
        kj = cols[:, None, None] * bk + np.arange(bk)[None, None, :]
        in_range = (qi < self.q_len) & (kj < self.kv_len)
        out = np.broadcast_to(in_range, (idx.size, bq, bk)).copy()
        kinds = self.block_kind[idx]
        for g in np.unique(groups[kinds == PROGRAM]):
            sel = (kinds == PROGRAM) & (groups == g)
            p = self.programs[g, : self.program_len[g]].tolist()
            out[sel] &= np.asarray(prog.evaluate(p, qi[sel], kj[sel]), dtype=bool)
        bm = kinds == BITMASK
        if bm.any():
            out[bm] &= unpack_bits(self.bitmasks[self.mask_idx[idx[bm]]], bk)
        return out

    def to_dense(self, group: int | None = None) -> np.ndarray:
        """Token mask: bool [q_len, kv_len] for one group, or [G, q_len, kv_len] for all."""
        groups = range(self.n_groups) if group is None else [group]
        out = np.zeros((len(groups), self.q_len, self.kv_len), dtype=bool)
        bq, bk = self.block_q, self.block_k
        rows_all = self.block_rows()
        for n, g in enumerate(groups):
            sl = self.group_slice(g)
            idx = np.arange(sl.start, sl.stop)
            masks = self.block_masks(idx) if idx.size else np.zeros((0, bq, bk), dtype=bool)
            for m, e in enumerate(idx):
                r, c = rows_all[e], self.col_idx[e]
                q0, k0 = r * bq, c * bk
                q1, k1 = min(q0 + bq, self.q_len), min(k0 + bk, self.kv_len)
                out[n, q0:q1, k0:k1] = masks[m, : q1 - q0, : k1 - k0]
        return out[0] if group is not None else out

    def block_grid(self, group: int = 0) -> np.ndarray:
        """int8 [R, C]: -1 absent, else the block kind (for drawing)."""
        out = np.full((self.n_rows, self.n_cols), -1, dtype=np.int8)
        sl = self.group_slice(group)
        out[self.block_rows()[sl], self.col_idx[sl]] = self.block_kind[sl]
        return out

    # --- transpose (CSC) for backward passes ------------------------------------------------
    def csc(self) -> dict[str, np.ndarray]:
        """Per group, blocks by key-block column: ``col_ptr`` int32 [G, C+1] (global offsets),
        ``row_idx`` int32 [nnz] ascending within a column, ``perm`` int32 [nnz]: CSR position of
        each CSC entry (so block_kind[perm], mask_idx[perm] follow)."""
        if self._csc is None:
            G, C = self.n_groups, self.n_cols
            rows, groups = self.block_rows(), self.block_groups()
            key = (groups * C + self.col_idx) * self.n_rows + rows
            perm = np.argsort(key, kind="stable")
            counts = np.bincount(groups * C + self.col_idx, minlength=G * C).reshape(G, C)
            col_ptr = np.zeros((G, C + 1), dtype=np.int64)
            col_ptr[:, 1:] = np.cumsum(counts, axis=1)
            col_ptr += self.row_ptr[:, :1].astype(np.int64)
            object.__setattr__(self, "_csc", {
                "col_ptr": col_ptr.astype(np.int32),
                "row_idx": rows[perm].astype(np.int32),
                "perm": perm.astype(np.int32),
            })
        return self._csc

    # --- statistics --------------------------------------------------------------------------
    def _block_extents(self):
        """Per stored block: its row, group, column, in-range height and width, and its pair count
        when FULL (0 for partial blocks, which the callers count)."""
        rows, groups = self.block_rows(), self.block_groups()
        cols = self.col_idx.astype(np.int64)
        h = np.minimum((rows + 1) * self.block_q, self.q_len) - rows * self.block_q
        w = np.minimum((cols + 1) * self.block_k, self.kv_len) - cols * self.block_k
        per = np.where(self.block_kind == FULL, h * w, 0).astype(np.int64)
        return rows, groups, cols, h, w, per

    def pair_counts(self) -> np.ndarray:
        """int64 [G]: exact number of attended (query, key) pairs per group (cached).

        FULL blocks count their in-range area. BITMASK blocks count set bits (interior blocks by
        a byte popcount table, edge blocks through ``block_masks``). PROGRAM blocks are counted
        once per class of blocks with the same mask: a program's mask on a block depends on the
        block's position only through a few features per instruction (``_program_block_keys``),
        so blocks with equal features (e.g. every diagonal block of ``local(w) & causal``) have
        equal counts and only one of each class is evaluated. ``pair_counts_slow`` is the twin
        that evaluates every partial block."""
        cached = getattr(self, "_pair_counts", None)
        if cached is not None:
            return cached.copy()
        bq, bk = self.block_q, self.block_k
        rows, groups, cols, h, w, per = self._block_extents()
        bm = np.flatnonzero(self.block_kind == BITMASK)
        if bm.size:
            interior = (h[bm] == bq) & (w[bm] == bk)
            ones = _POPCOUNT8[self.bitmasks.view(np.uint8)].reshape(self.bitmasks.shape[0], -1).sum(axis=1)
            per[bm[interior]] = ones[self.mask_idx[bm[interior]]]
            edge = bm[~interior]
            for s in range(0, edge.size, 2048):
                per[edge[s : s + 2048]] = self.block_masks(edge[s : s + 2048]).sum(axis=(1, 2))
        for g in range(self.n_groups):
            idx = np.flatnonzero((self.block_kind == PROGRAM) & (groups == g))
            if not idx.size:
                continue
            program = self.programs[g, : self.program_len[g]]
            keys = _program_block_keys(program, rows[idx] * bq, cols[idx] * bk, h[idx], w[idx], bq, bk)
            _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            reps = idx[first]
            counts = np.concatenate([self.block_masks(reps[s : s + 2048]).sum(axis=(1, 2))
                                     for s in range(0, reps.size, 2048)])
            per[idx] = counts[inverse.reshape(-1)]
        out = np.bincount(groups, weights=per, minlength=self.n_groups).astype(np.int64)
        object.__setattr__(self, "_pair_counts", out)
        return out.copy()

    def pair_counts_slow(self) -> np.ndarray:
        """The twin of ``pair_counts``: every partial block's token mask evaluated and summed."""
        rows, groups, cols, h, w, per = self._block_extents()
        part = np.flatnonzero(self.block_kind != FULL)
        for s in range(0, part.size, 2048):
            chunk = part[s : s + 2048]
            per[chunk] = self.block_masks(chunk).sum(axis=(1, 2))
        return np.bincount(groups, weights=per, minlength=self.n_groups).astype(np.int64)

    def metadata_bytes(self) -> int:
        return int(sum(getattr(self, n).nbytes for n in
                       ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len")))

    def stats(self) -> dict[str, Any]:
        """Counts for one layout (summed over groups): blocks by kind, pairs, densities, bytes.
        Computed once per layout (layouts are frozen) and cached on it."""
        cached = getattr(self, "_stats", None)
        if cached is not None:
            return dict(cached)
        G = self.n_groups
        kinds = np.bincount(self.block_kind, minlength=3)
        pairs = int(self.pair_counts().sum())
        total_pairs = G * self.q_len * self.kv_len
        total_blocks = G * self.n_rows * self.n_cols
        out = {
            "pattern": self.pattern,
            "q_len": self.q_len,
            "kv_len": self.kv_len,
            "block": (self.block_q, self.block_k),
            "groups": G,
            "blocks": self.nnz,
            "full_blocks": int(kinds[FULL]),
            "program_blocks": int(kinds[PROGRAM]),
            "bitmask_blocks": int(kinds[BITMASK]),
            "pairs": pairs,
            "density": pairs / total_pairs,
            "block_density": self.nnz / total_blocks,
            "metadata_bytes": self.metadata_bytes(),
        }
        object.__setattr__(self, "_stats", out)
        return dict(out)

    # --- device copies ---------------------------------------------------------------------
    def cached(self, device, purpose: str, build: Callable[[], Any], *key) -> Any:
        """The one device-side cache of everything derived from this layout.

        ``build()`` runs once per (device, purpose, *key) and its result is kept on the layout
        itself (so it lives exactly as long as the layout: no global dict, no ``id()`` keys).
        Bounded: at most ``DEVICE_CACHE_SIZE`` entries, least recently used evicted first.
        Users: the CUDA launcher (tensors, work orders), the flex interop (BlockMasks), the top-k
        builder (shape-only parts)."""
        k = (str(device), purpose, *key)
        c = self._device_cache
        if k in c:
            c.move_to_end(k)
            return c[k]
        value = build()
        c[k] = value
        while len(c) > DEVICE_CACHE_SIZE:
            c.popitem(last=False)
        return value

    def to_device(self, device, csc: bool = False) -> dict[str, Any]:
        """torch tensors of the arrays on ``device``, cached per device: the ``_ARRAYS`` with their
        shapes and dtypes (uint32 bitmasks as int32), and with ``csc`` also ``csc()``'s ``col_ptr``,
        ``row_idx`` and ``perm`` (what the backward reads).

        One host-to-device copy: the arrays are packed into one buffer, pinned on CUDA and copied
        without blocking, so a layout built per step (outline's, per batch) does not stall the host
        on the GPU's queue as a copy from pageable memory may. The tensors are views of that one
        device buffer. A call without ``csc`` is served by an earlier call with it."""
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:  # one cache key per GPU: "cuda" and "cuda:0" alike
            dev = torch.device("cuda", torch.cuda.current_device())
        cache = self._device_cache
        if not csc and (str(dev), "arrays") not in cache and (str(dev), "arrays+csc") in cache:
            return self.cached(dev, "arrays+csc", lambda: None)
        if not csc:
            return self.cached(dev, "arrays", lambda: upload_arrays(self._host_arrays(), dev))

        def with_csc():
            have = cache.get((str(dev), "arrays"))  # e.g. a DeviceBlockLayout's: upload the CSC part only
            if have is not None:
                return {**have, **upload_arrays(self.csc(), dev)}
            return upload_arrays({**self._host_arrays(), **self.csc()}, dev)

        return self.cached(dev, "arrays+csc", with_csc)

    def _host_arrays(self) -> dict[str, np.ndarray]:
        a = {n: np.asarray(getattr(self, n), dtype=np.int32) for n in self._ARRAYS
             if n not in ("block_kind", "bitmasks")}
        a["block_kind"] = np.asarray(self.block_kind, dtype=np.uint8)
        a["bitmasks"] = self.bitmasks.view(np.int32)  # bit-preserving (torch has no uint32 kernels)
        return a

    # --- persistence -----------------------------------------------------------------------
    _ARRAYS = ("row_ptr", "col_idx", "block_kind", "mask_idx", "bitmasks", "programs", "program_len")

    def save(self, path: str | Path) -> Path:
        """Write an .npz file with every array and the scalars (as JSON, ``format`` =
        ``FORMAT_VERSION``). Written to a temporary file and renamed: never a torn file."""
        path = Path(path)
        meta = {"q_len": self.q_len, "kv_len": self.kv_len, "block_q": self.block_q,
                "block_k": self.block_k, "group_shape": list(self.group_shape),
                "pattern": self.pattern, "format": FORMAT_VERSION}
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                                **{n: getattr(self, n) for n in self._ARRAYS})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BlockLayout":
        """Read a layout written by ``save``. Any damaged, foreign or future-format file raises
        ``LayoutFileError`` (a ``ValueError``) saying the file is not a valid spattern layout and
        why; arrays are read with ``allow_pickle=False`` and the result is validated."""
        path = Path(path)

        def bad(why: str):
            return LayoutFileError(f"{path}: not a valid spattern layout file: {' '.join(why.split())}")

        if not path.is_file():
            raise bad("no such file") if not path.exists() else bad("not a regular file")
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as e:
            raise bad(f"cannot open it ({e})") from None
        if head != b"PK\x03\x04":
            what = "an empty file" if not head else f"it starts with {head!r}"
            raise bad(f"expected an .npz (zip) archive written by BlockLayout.save, but {what}")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [n for n in ("meta", *cls._ARRAYS) if n not in z.files]
                if missing:
                    raise bad(f"missing arrays {missing}")
                meta_raw = z["meta"]
                arrays = {n: z[n] for n in cls._ARRAYS}
        except LayoutFileError:
            raise
        except Exception as e:  # zip/zlib/npy format errors, EOF, pickled data, OS errors: one error
            raise bad(f"cannot read it as an .npz archive ({type(e).__name__}: {e})") from None
        try:
            meta = json.loads(meta_raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"metadata is not JSON ({e})") from None
        if not isinstance(meta, dict):
            raise bad(f"metadata: expected a JSON object, got {type(meta).__name__}")
        if meta.get("format") != FORMAT_VERSION:
            raise bad(f"format: expected {FORMAT_VERSION}, got {meta.get('format')!r}")
        ints = {}
        for k in ("q_len", "kv_len", "block_q", "block_k"):
            v = meta.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 30:
                raise bad(f"metadata {k}: expected an int in [1, 2**30], got {v!r}")
            ints[k] = v
        gs = meta.get("group_shape")
        if (not isinstance(gs, list) or len(gs) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 1 << 24 for x in gs)):
            raise bad(f"metadata group_shape: expected two positive ints, got {gs!r}")
        pattern = meta.get("pattern", "")
        if not isinstance(pattern, str):
            raise bad(f"metadata pattern: expected a string, got {type(pattern).__name__}")
        try:
            layout = cls(group_shape=(gs[0], gs[1]), pattern=pattern, **ints, **arrays)
            return layout.validate()
        except LayoutError as e:
            raise bad(str(e).removeprefix("invalid BlockLayout: ")) from None
        except Exception as e:  # validation of hostile arrays must not escape as anything else
            raise bad(f"arrays are inconsistent ({type(e).__name__}: {e})") from None

    def equals(self, other: "BlockLayout") -> bool:
        """Same shapes and the same arrays (bitmasks compared per block, not by storage order)."""
        if (self.q_len, self.kv_len, self.block_q, self.block_k, tuple(self.group_shape)) != (
            other.q_len, other.kv_len, other.block_q, other.block_k, tuple(other.group_shape)):
            return False
        for n in ("row_ptr", "col_idx", "block_kind", "program_len"):
            if not np.array_equal(getattr(self, n), getattr(other, n)):
                return False
        P = max(self.programs.shape[1], other.programs.shape[1])
        pa, pb = np.zeros((self.n_groups, P, 4), np.int32), np.zeros((other.n_groups, P, 4), np.int32)
        pa[:, : self.programs.shape[1]] = self.programs
        pb[:, : other.programs.shape[1]] = other.programs
        if not np.array_equal(pa, pb):
            return False
        bm = self.block_kind == BITMASK
        return np.array_equal(self.bitmasks[self.mask_idx[bm]], other.bitmasks[other.mask_idx[bm]])

    def __repr__(self):
        return (f"BlockLayout({self.pattern!r}, q_len={self.q_len}, kv_len={self.kv_len}, "
                f"block=({self.block_q}, {self.block_k}), groups={tuple(self.group_shape)}, nnz={self.nnz})")


_POPCOUNT8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.int64)


def _program_block_keys(program: np.ndarray, q0, k0, h, w, bq: int, bk: int) -> np.ndarray:
    """int64 [n, 2 + 2 * P]: per block (first query q0, first key k0, in-range extents h, w), values
    that determine the program's token mask on it. Two blocks with equal rows have equal masks.

    With off = q0 - k0, dq in [0, bq), dk in [0, bk) and dl = dq - dk in [-(bk-1), bq-1]:
    BAND(a, b) holds iff a - off <= dl <= b - off: the bounds clipped to [-bk, bq];
    DIFF_MOD(a, b) iff (off + dl - b) mod a == 0: (off - b) mod a; KEY_MOD(a): k0 mod a;
    QUERY_MOD(a): q0 mod a; KEY_RANGE(a, b) iff a - k0 <= dk < b - k0: the bounds clipped to
    [0, bk]; QUERY_RANGE likewise with q0 and bq; constants and operators: nothing."""
    q0, k0 = np.asarray(q0, np.int64), np.asarray(k0, np.int64)
    off = q0 - k0
    cols = [np.asarray(h, np.int64), np.asarray(w, np.int64)]
    zero = np.zeros_like(off)
    for op, a, b, _ in np.asarray(program, np.int64).tolist():
        if op == prog.BAND:
            cols += [np.clip(a - off, -bk, bq), np.clip(b - off, -bk, bq)]
        elif op == prog.DIFF_MOD:
            cols += [(off - b) % a, zero]
        elif op == prog.KEY_MOD:
            cols += [k0 % a, zero]
        elif op == prog.QUERY_MOD:
            cols += [q0 % a, zero]
        elif op == prog.KEY_RANGE:
            cols += [np.clip(a - k0, 0, bk), np.clip(b - k0, 0, bk)]
        elif op == prog.QUERY_RANGE:
            cols += [np.clip(a - q0, 0, bq), np.clip(b - q0, 0, bq)]
    return np.stack(cols, axis=1)


def pack_bits(mask: np.ndarray) -> np.ndarray:
    """bool [..., block_k] -> uint32 [..., ceil(block_k/32)] (bit c%32 of word c//32)."""
    bk = mask.shape[-1]
    W = -(-bk // 32)
    padded = np.zeros(mask.shape[:-1] + (W * 32,), dtype=bool)
    padded[..., :bk] = mask
    return np.packbits(padded, axis=-1, bitorder="little").view("<u4").astype(np.uint32)


def unpack_bits(words: np.ndarray, block_k: int) -> np.ndarray:
    """uint32 [..., W] -> bool [..., block_k]."""
    b = np.unpackbits(np.ascontiguousarray(words).astype("<u4").view(np.uint8), axis=-1, bitorder="little")
    return b[..., :block_k].astype(bool)


def replace(layout: BlockLayout, **changes) -> BlockLayout:
    """A copy with fields changed (device caches are not carried over)."""
    changes.setdefault("_device_cache", OrderedDict())
    changes.setdefault("_csc", None)
    return dataclasses.replace(layout, **changes)


def first_use_unique(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rows (M, ...) -> (first, index): ``first`` the position of each distinct row's first occurrence,
    in order of first use, and ``index`` [M] each row's place in ``first`` (rows compared by their bytes)."""
    M = rows.shape[0]
    flat = np.ascontiguousarray(rows).reshape(M, -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).reshape(M)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.reshape(M)]


def dedupe_bitmasks(bitmasks: np.ndarray, mask_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bitmasks, mask_idx) with each distinct block mask stored once, in order of first use, and
    ``mask_idx`` pointing at it (-1 entries kept). Every reader goes through ``mask_idx``, so the token
    mask is unchanged; patterns that repeat a few partial-block shapes (a random block pattern at a finer
    grain than the layout's blocks, band edges of a per-row program turned into bits) keep far fewer
    words. Returns the inputs themselves when nothing repeats."""
    M = bitmasks.shape[0]
    if M < 2:
        return bitmasks, mask_idx
    first, index = first_use_unique(bitmasks)
    if first.size == M:
        return bitmasks, mask_idx
    new_idx = np.array(mask_idx, copy=True)
    used = new_idx >= 0
    new_idx[used] = index[new_idx[used]]
    return np.ascontiguousarray(bitmasks[first]), new_idx.astype(mask_idx.dtype)


def programs_as_bitmasks(layout: BlockLayout, max_blocks: int | None = None) -> BlockLayout:
    """The same token mask with every PROGRAM block stored as a BITMASK block. A kernel then reads bits
    instead of running the program per tile and head. Returns ``layout`` itself when it has no PROGRAM
    block or more than ``max_blocks`` of them.

    The masks are evaluated here, on the host, once per class of blocks with the same mask (the blocks'
    ``_program_block_keys``, as ``pair_counts`` does): every diagonal block of a band is one class, so the
    work grows with the number of distinct block shapes, not of blocks. Each distinct mask is stored once
    (``dedupe_bitmasks``)."""
    prog_idx = np.flatnonzero(layout.block_kind == PROGRAM)
    if prog_idx.size == 0 or (max_blocks is not None and prog_idx.size > max_blocks):
        return layout
    rows, groups, cols, h, w, _ = layout._block_extents()
    bq, bk = layout.block_q, layout.block_k
    kind = layout.block_kind.copy()
    mask_idx = layout.mask_idx.copy()
    words = [layout.bitmasks]
    stored = layout.bitmasks.shape[0]
    for g in np.unique(groups[prog_idx]):
        idx = prog_idx[groups[prog_idx] == g]
        program = layout.programs[g, : layout.program_len[g]]
        keys = _program_block_keys(program, rows[idx] * bq, cols[idx] * bk, h[idx], w[idx], bq, bk)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        reps = idx[first]
        words += [pack_bits(layout.block_masks(reps[s : s + 2048])).astype(np.uint32) for s in range(0, reps.size, 2048)]
        mask_idx[idx] = stored + inverse.reshape(-1)
        stored += reps.size
    kind[prog_idx] = BITMASK
    bitmasks, mask_idx = dedupe_bitmasks(np.concatenate(words, axis=0), mask_idx)
    return replace(layout, block_kind=kind, mask_idx=mask_idx, bitmasks=bitmasks)


def upload_arrays(arrays: dict[str, np.ndarray], device) -> dict[str, Any]:
    """numpy arrays -> torch tensors on ``device`` (same shapes and dtypes), through one copy of one
    byte buffer (each array at a 16-byte aligned offset; pinned and non-blocking on CUDA).

    The pinned staging buffer is torch's (its caching host allocator keeps it until the copy has
    run), so it may be dropped at once. On the CPU the tensors view a fresh host buffer."""
    import torch

    device = torch.device(device)
    dtypes = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32,
              np.dtype(np.int64): torch.int64, np.dtype(np.float32): torch.float32}
    offsets, total = {}, 0
    for name, a in arrays.items():
        offsets[name] = total
        total += -(-a.nbytes // 16) * 16
    pin = device.type == "cuda"
    host = torch.empty(max(total, 16), dtype=torch.uint8, pin_memory=pin)
    flat = host.numpy()
    for name, a in arrays.items():
        o = offsets[name]
        flat[o:o + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    buf = host.to(device, non_blocking=True) if device.type != "cpu" else host
    out = {}
    for name, a in arrays.items():
        o = offsets[name]
        out[name] = buf[o:o + a.nbytes].view(dtypes[a.dtype]).view(a.shape)
    return out
