"""Paged KV cache bookkeeping: which physical block holds which token of which sequence.

The KV pool is `num_blocks` fixed-size blocks of `block_size` token rows. Each
sequence has a block table; token `pos` of a sequence lives in row
`table[pos // block_size] * block_size + pos % block_size` of the pool. This
module only hands out block numbers; the runner owns the memory.

Every block is in exactly one state:

- free: unreferenced, content meaningless;
- evictable: unreferenced but still registered in the prefix cache, so a new
  sequence with the same prefix can pick it up; reused (and unregistered)
  least-recently-freed first when the free list is empty;
- referenced: in one or more block tables (`fork` shares, copy-on-write splits).

Prefix cache keys. A full block is registered under `(parent, tokens)`: the
entry id of the block before it in the sequence (or `_ROOT`) and its own token
ids. Entry ids are never reused, so an entry id names one exact token history,
and a dict lookup on the whole tuple (Python compares keys on a hash match)
can never return a block whose history differs, whatever the hashes do.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence

__all__ = ["BlockManager", "OutOfBlocks"]

_ROOT = -1  # parent entry of a sequence's first block


class OutOfBlocks(RuntimeError):
    """append_slots was asked for more blocks than are free (call can_append first)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = 32, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching

        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # oldest first
        self._refcount = [0] * num_blocks

        self._tables: dict[str, list[int]] = {}
        self._num_tokens: dict[str, int] = {}  # token slots each table covers
        # Entry ids naming each sequence's committed full blocks, in order;
        # the last one is the parent of the next block to commit.
        self._chains: dict[str, list[int]] = {}

        self._cache: dict[tuple[int, tuple[int, ...]], int] = {}  # key -> block
        self._block_meta: dict[int, tuple[tuple[int, tuple[int, ...]], int]] = {}  # block -> (key, entry)
        self._next_entry = 0

    # ---- queries ----------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation can take: free plus evictable."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cache)

    def blocks_needed(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def has_seq(self, seq_id: str) -> bool:
        return seq_id in self._tables

    def num_tokens(self, seq_id: str) -> int:
        """Token slots the sequence's table covers (computed or reserved for this step)."""
        return self._num_tokens[seq_id]

    def block_table(self, seq_id: str) -> list[int]:
        return list(self._tables[seq_id])

    def slot(self, seq_id: str, pos: int) -> int:
        if not 0 <= pos < self._num_tokens[seq_id]:
            raise IndexError(f"position {pos} is outside sequence {seq_id!r} "
                             f"({self._num_tokens[seq_id]} slots)")
        bs = self.block_size
        return self._tables[seq_id][pos // bs] * bs + pos % bs

    def refcount(self, block: int) -> int:
        return self._refcount[block]

    # ---- sequence lifetime ------------------------------------------------

    def allocate_prefix(self, seq_id: str, token_ids: Sequence[int]) -> int:
        """Start a sequence, sharing the longest cached chain of full blocks of its tokens.

        Returns the number of cached tokens (a multiple of block_size). At least
        one token is always left uncached, since its logits are needed.
        """
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} already has blocks")
        blocks, entries = self._match(token_ids)
        for b in blocks:
            if self._refcount[b] == 0:
                del self._evictable[b]
            self._refcount[b] += 1
        self._tables[seq_id] = blocks
        self._num_tokens[seq_id] = len(blocks) * self.block_size
        self._chains[seq_id] = entries
        return len(blocks) * self.block_size

    def cached_prefix_len(self, token_ids: Sequence[int]) -> int:
        """What allocate_prefix would return, without taking anything."""
        return len(self._match(token_ids)[0]) * self.block_size

    def fork(self, parent_id: str, child_id: str) -> None:
        """Give child_id the parent's blocks, shared; the first write to a shared block copies it."""
        if child_id in self._tables:
            raise ValueError(f"sequence {child_id!r} already has blocks")
        table = self._tables[parent_id]
        for b in table:
            self._refcount[b] += 1
        self._tables[child_id] = list(table)
        self._num_tokens[child_id] = self._num_tokens[parent_id]
        self._chains[child_id] = list(self._chains[parent_id])

    def free(self, seq_id: str) -> None:
        """Drop the sequence; its unshared blocks become free, or evictable if cached."""
        table = self._tables.pop(seq_id)
        del self._num_tokens[seq_id]
        del self._chains[seq_id]
        # Tail first, so a chain's later blocks are evicted before its head,
        # which more requests are likely to share.
        for b in reversed(table):
            self._release(b)

    def truncate(self, seq_id: str, n_tokens: int) -> None:
        """Shrink the sequence to its first n_tokens slots (rejected speculative tokens);
        the blocks past them go back. Committed blocks cannot be dropped."""
        n = self._num_tokens[seq_id]
        if not 0 <= n_tokens <= n:
            raise ValueError(f"cannot truncate sequence {seq_id!r} of {n} tokens to {n_tokens}")
        if n_tokens < len(self._chains[seq_id]) * self.block_size:
            raise ValueError(f"cannot truncate sequence {seq_id!r} into its committed blocks")
        table = self._tables[seq_id]
        keep = self.blocks_needed(n_tokens)
        for b in reversed(table[keep:]):
            self._release(b)
        del table[keep:]
        self._num_tokens[seq_id] = n_tokens

    # ---- growth -----------------------------------------------------------

    def can_append(self, seq_id: str, n_new: int) -> bool:
        return self._blocks_to_take(seq_id, n_new) <= self.num_free_blocks

    def append_slots(self, seq_id: str, n_new: int) -> list[tuple[int, int]]:
        """Cover `num_tokens + n_new` slots; return the (src, dst) block copies to do first.

        A copy appears when the block about to be written is shared
        (copy-on-write): the sequence gets a fresh block, and the runner must
        copy every KV row of src into dst before the step writes into it.
        All or nothing: on OutOfBlocks nothing has changed.
        """
        if n_new < 0:
            raise ValueError(f"n_new must be >= 0, got {n_new}")
        need = self._blocks_to_take(seq_id, n_new)
        if need > self.num_free_blocks:
            raise OutOfBlocks(f"sequence {seq_id!r} needs {need} more KV blocks, "
                              f"{self.num_free_blocks} are free")
        table = self._tables[seq_id]
        n = self._num_tokens[seq_id]
        copies = []
        if self._writes_shared_block(seq_id, n_new):
            src = table[-1]
            dst = self._take_block()
            self._refcount[src] -= 1  # still >= 1: another table holds it
            table[-1] = dst
            copies.append((src, dst))
        while len(table) < self.blocks_needed(n + n_new):
            table.append(self._take_block())
        self._num_tokens[seq_id] = n + n_new
        return copies

    # ---- prefix cache -----------------------------------------------------

    def commit(self, seq_id: str, token_ids: Sequence[int], num_computed: int) -> None:
        """Register every full block below num_computed, whose KV the runner has now written."""
        if not self.enable_prefix_caching:
            return
        if num_computed > self._num_tokens[seq_id]:
            raise ValueError(f"cannot commit {num_computed} tokens of sequence {seq_id!r}: "
                             f"only {self._num_tokens[seq_id]} slots are allocated")
        bs = self.block_size
        table = self._tables[seq_id]
        chain = self._chains[seq_id]
        for i in range(len(chain), num_computed // bs):
            tokens = tuple(token_ids[i * bs:(i + 1) * bs])
            key = (chain[-1] if chain else _ROOT, tokens)
            block = table[i]
            meta = self._block_meta.get(block)
            if meta is not None:
                # Shared with a sequence that registered it first (fork); its
                # entry names the same history, whatever our chain's ids are.
                if meta[0][1] != tokens:
                    raise ValueError(f"sequence {seq_id!r} commits tokens that differ from "
                                     f"block {block}'s cached tokens")
                chain.append(meta[1])
                continue
            owner = self._cache.get(key)
            if owner is not None:
                # Another block already holds this exact history; keep that
                # one as the cached copy and leave ours unregistered.
                chain.append(self._block_meta[owner][1])
                continue
            entry = self._next_entry
            self._next_entry += 1
            self._cache[key] = block
            self._block_meta[block] = (key, entry)
            chain.append(entry)

    # ---- checks -----------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (tests call this)."""

        def fail(msg: str) -> None:
            raise AssertionError(msg)

        free = set(self._free)
        if len(free) != len(self._free):
            fail("a block is on the free list twice")
        evictable = set(self._evictable)
        held = Counter()
        for seq_id, table in self._tables.items():
            if len(set(table)) != len(table):
                fail(f"sequence {seq_id!r} holds a block twice: {table}")
            held.update(table)
            n = self._num_tokens[seq_id]
            if len(table) != self.blocks_needed(n):
                fail(f"sequence {seq_id!r} has {len(table)} blocks for {n} tokens")
            if len(self._chains[seq_id]) > n // self.block_size:
                fail(f"sequence {seq_id!r} committed more blocks than it has full")
        for b in range(self.num_blocks):
            rc = self._refcount[b]
            states = (b in free) + (b in evictable) + (rc > 0)
            if states != 1:
                fail(f"block {b} is in {states} states (free={b in free}, "
                     f"evictable={b in evictable}, refcount={rc})")
            if rc != held[b]:
                fail(f"block {b} has refcount {rc} but {held[b]} tables hold it")
            if b in free and b in self._block_meta:
                fail(f"free block {b} still has a prefix-cache key")
            if b in evictable and b not in self._block_meta:
                fail(f"evictable block {b} has no prefix-cache key")
        if len(self._cache) != len(self._block_meta):
            fail("prefix cache and block keys disagree in size")
        for key, b in self._cache.items():
            if self._block_meta.get(b, (None,))[0] != key:
                fail(f"prefix cache maps a key to block {b}, which has another key")
        if any(b >= self.num_blocks or b < 0 for b in held):
            fail("a table holds a block number outside the pool")

    # ---- internals --------------------------------------------------------

    def _match(self, token_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Blocks and entry ids of the longest cached chain, leaving one token uncached."""
        blocks: list[int] = []
        entries: list[int] = []
        if not self.enable_prefix_caching:
            return blocks, entries
        bs = self.block_size
        parent = _ROOT
        for i in range(max(0, (len(token_ids) - 1) // bs)):
            block = self._cache.get((parent, tuple(token_ids[i * bs:(i + 1) * bs])))
            if block is None:
                break
            parent = self._block_meta[block][1]
            blocks.append(block)
            entries.append(parent)
        return blocks, entries

    def _writes_shared_block(self, seq_id: str, n_new: int) -> bool:
        """Whether the next write lands in a partly filled block that another table also holds."""
        n = self._num_tokens[seq_id]
        return n_new > 0 and n % self.block_size != 0 and self._refcount[self._tables[seq_id][-1]] > 1

    def _blocks_to_take(self, seq_id: str, n_new: int) -> int:
        n = self._num_tokens[seq_id]
        grow = self.blocks_needed(n + n_new) - len(self._tables[seq_id])
        return grow + (1 if self._writes_shared_block(seq_id, n_new) else 0)

    def _release(self, block: int) -> None:
        self._refcount[block] -= 1
        if self._refcount[block] == 0:
            if block in self._block_meta:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def _take_block(self) -> int:
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._evictable.popitem(last=False)
            key, _entry = self._block_meta.pop(block)
            del self._cache[key]
        self._refcount[block] = 1
        return block
