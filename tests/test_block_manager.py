"""BlockManager: invariants under random operation sequences, copy-on-write, prefix cache, eviction."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from localllm.engine import BlockManager, OutOfBlocks


class FakeKV:
    """One value per pool row; a row holds the whole token history up to its position.

    That is what real KV depends on, so a block shared across different
    histories, or reused while a table still holds it, reads back wrong.
    """

    def __init__(self, bm: BlockManager):
        self.bm = bm
        self.rows: list[tuple[int, ...] | None] = [None] * (bm.num_blocks * bm.block_size)

    def copy_blocks(self, copies):
        bs = self.bm.block_size
        for src, dst in copies:
            self.rows[dst * bs:(dst + 1) * bs] = self.rows[src * bs:(src + 1) * bs]

    def write(self, seq_id: str, tokens: list[int], start: int) -> None:
        for pos in range(start, len(tokens)):
            self.rows[self.bm.slot(seq_id, pos)] = tuple(tokens[:pos + 1])

    def check(self, seq_id: str, tokens: list[int]) -> None:
        for pos in range(len(tokens)):
            assert self.rows[self.bm.slot(seq_id, pos)] == tuple(tokens[:pos + 1]), (seq_id, pos)


class BlockManagerMachine(RuleBasedStateMachine):
    """Sequences are started, grown, forked, committed and freed at random.

    Tokens come from {0, 1} with block size 4, so prefixes repeat and the
    prefix cache gets hits; the pool is small, so eviction and OutOfBlocks happen.
    """

    prefix_caching = True

    def __init__(self):
        super().__init__()
        self.bm = BlockManager(num_blocks=10, block_size=4, enable_prefix_caching=self.prefix_caching)
        self.kv = FakeKV(self.bm)
        self.tokens: dict[str, list[int]] = {}  # what each sequence has written (computed)
        self.pending: dict[str, list[int]] = {}  # prompt tokens not yet written
        self.next_id = 0

    def _new_id(self) -> str:
        self.next_id += 1
        return f"s{self.next_id}"

    @rule(prompt=st.lists(st.integers(0, 1), min_size=1, max_size=14), prefill=st.booleans())
    def start(self, prompt, prefill):
        self._start(prompt, prefill)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), prefill=st.booleans())
    def start_like_another(self, data, prefill):
        """A prompt that repeats part of a live sequence's history, so the cache can hit."""
        other = self.tokens[data.draw(st.sampled_from(sorted(self.tokens)))]
        cut = data.draw(st.integers(0, len(other)))
        self._start(other[:cut] + data.draw(st.lists(st.integers(0, 1), min_size=1, max_size=6)), prefill)

    def _start(self, prompt, prefill):
        """Take the cached prefix; with prefill, compute and commit the rest as the scheduler does."""
        sid = self._new_id()
        cached = self.bm.allocate_prefix(sid, prompt)
        assert cached % self.bm.block_size == 0 and 0 <= cached < len(prompt)
        if not self.prefix_caching:
            assert cached == 0
        self.tokens[sid] = prompt[:cached]
        self.pending[sid] = prompt[cached:]
        self.kv.check(sid, self.tokens[sid])  # a hit must carry exactly this history
        if not prefill:
            return
        if not self.bm.can_append(sid, len(prompt) - cached):
            self.bm.free(sid)  # the scheduler's rollback when the first chunk does not fit
            del self.tokens[sid], self.pending[sid]
            return
        self.kv.copy_blocks(self.bm.append_slots(sid, len(prompt) - cached))
        self.tokens[sid], self.pending[sid] = list(prompt), []
        self.kv.write(sid, prompt, cached)
        self.bm.commit(sid, prompt, len(prompt))

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), n=st.integers(1, 6))
    def append(self, data, n):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        bm = self.bm
        old = self.tokens[sid]
        new = (self.pending[sid] + data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))[:n]
        table = bm.block_table(sid)
        shared_write = len(old) % bm.block_size != 0 and bm.refcount(table[-1]) > 1
        if not bm.can_append(sid, n):
            before = (bm.block_table(sid), bm.num_tokens(sid), bm.num_free_blocks)
            with pytest.raises(OutOfBlocks):
                bm.append_slots(sid, n)
            assert (bm.block_table(sid), bm.num_tokens(sid), bm.num_free_blocks) == before
            return
        copies = bm.append_slots(sid, n)
        # A copy exactly when the partly filled last block is shared.
        assert copies == ([(table[-1], bm.block_table(sid)[len(table) - 1])] if shared_write else [])
        self.kv.copy_blocks(copies)
        self.tokens[sid] = old + new
        self.pending[sid] = self.pending[sid][n:]
        self.kv.write(sid, self.tokens[sid], len(old))

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.tokens)))
        child = self._new_id()
        self.bm.fork(parent, child)
        self.tokens[child] = list(self.tokens[parent])
        self.pending[child] = list(self.pending[parent])

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def commit(self, data):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        n = len(self.tokens[sid])
        k = data.draw(st.one_of(st.just(n), st.integers(0, n)))
        self.bm.commit(sid, self.tokens[sid], k)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.free(sid)
        del self.tokens[sid], self.pending[sid]
        with pytest.raises(KeyError):
            self.bm.free(sid)  # a second free is refused, never a double free

    @invariant()
    def consistent(self):
        self.bm.check_invariants()
        held = set()
        for sid, tokens in self.tokens.items():
            assert self.bm.num_tokens(sid) == len(tokens)
            held.update(self.bm.block_table(sid))
            self.kv.check(sid, tokens)
        assert self.bm.num_free_blocks + len(held) == self.bm.num_blocks  # nothing leaked

    def teardown(self):
        for sid in list(self.tokens):
            self.bm.free(sid)
        self.bm.check_invariants()
        assert self.bm.num_free_blocks == self.bm.num_blocks


class BlockManagerNoCacheMachine(BlockManagerMachine):
    prefix_caching = False


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestBlockManagerNoCacheMachine = BlockManagerNoCacheMachine.TestCase
TestBlockManagerNoCacheMachine.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)


def _grow(bm: BlockManager, sid: str, tokens: list[int]) -> list[tuple[int, int]]:
    """Start sid and give it slots for all of tokens, as computed; returns the copies."""
    cached = bm.allocate_prefix(sid, tokens)
    copies = bm.append_slots(sid, len(tokens) - cached)
    bm.check_invariants()
    return copies


def test_slot_follows_block_table():
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate_prefix("a", [1])
    bm.append_slots("a", 3)
    bm.allocate_prefix("b", [1])
    bm.append_slots("b", 2)
    bm.append_slots("a", 3)  # a's second block comes after b's
    ta = bm.block_table("a")
    assert len(ta) == 2 and bm.block_table("b")[0] not in ta
    assert [bm.slot("a", p) for p in range(6)] == [ta[p // 4] * 4 + p % 4 for p in range(6)]
    with pytest.raises(IndexError):
        bm.slot("a", 6)
    assert bm.blocks_needed(0) == 0 and bm.blocks_needed(4) == 1 and bm.blocks_needed(5) == 2


def test_copy_on_write_only_when_a_shared_block_is_written():
    bm = BlockManager(num_blocks=8, block_size=4)
    _grow(bm, "a", list(range(6)))  # blocks: full, half
    full, half = bm.block_table("a")
    bm.fork("a", "b")
    assert bm.refcount(full) == 2 and bm.refcount(half) == 2

    copies = bm.append_slots("b", 1)  # writes into the shared half block
    bm.check_invariants()
    assert len(copies) == 1 and copies[0][0] == half
    dst = copies[0][1]
    assert bm.block_table("b") == [full, dst] and bm.block_table("a") == [full, half]
    assert bm.refcount(half) == 1 and bm.refcount(dst) == 1 and bm.refcount(full) == 2

    assert bm.append_slots("a", 1) == []  # half is a's alone now
    assert bm.append_slots("b", 5) == []  # new blocks are never shared
    bm.check_invariants()


def test_fork_at_a_block_boundary_needs_no_copy():
    bm = BlockManager(num_blocks=8, block_size=4)
    _grow(bm, "a", list(range(8)))
    bm.fork("a", "b")
    assert bm.append_slots("b", 1) == [] and bm.append_slots("a", 1) == []
    assert bm.block_table("a")[:2] == bm.block_table("b")[:2]
    assert bm.block_table("a")[2] != bm.block_table("b")[2]
    bm.check_invariants()


def test_append_is_all_or_nothing():
    bm = BlockManager(num_blocks=3, block_size=4)
    _grow(bm, "a", list(range(6)))
    bm.fork("a", "b")
    # b needs a copy of the shared half block plus 2 more blocks: 3 > 1 free.
    assert not bm.can_append("b", 7)
    before = (bm.block_table("a"), bm.block_table("b"), bm.num_free_blocks, bm.num_tokens("b"))
    with pytest.raises(OutOfBlocks):
        bm.append_slots("b", 7)
    assert (bm.block_table("a"), bm.block_table("b"), bm.num_free_blocks, bm.num_tokens("b")) == before
    bm.check_invariants()
    assert bm.can_append("b", 2)  # the copy alone fits


def test_prefix_hits_need_committed_blocks():
    bm = BlockManager(num_blocks=16, block_size=4)
    prompt = list(range(10, 22))  # 12 tokens: 3 full blocks
    _grow(bm, "a", prompt)
    assert bm.allocate_prefix("b", prompt) == 0  # computed but not committed: no hit
    bm.free("b")

    bm.commit("a", prompt, 6)  # only the first full block is below 6
    assert bm.cached_prefix_len(prompt) == 4
    bm.commit("a", prompt, 12)
    # All 3 blocks are cached, but one token must stay to compute.
    assert bm.allocate_prefix("c", prompt) == 8
    assert bm.allocate_prefix("d", prompt + [99]) == 12
    assert bm.block_table("d") == bm.block_table("a")
    assert all(bm.refcount(b) == 3 for b in bm.block_table("a")[:2])
    bm.check_invariants()

    # A different token in block 2 ends the chain there; a different first block misses entirely.
    assert bm.cached_prefix_len(prompt[:5] + [0] + prompt[6:] + [1]) == 4
    assert bm.cached_prefix_len([0] + prompt[1:] + [1]) == 0


def test_chain_key_depends_on_the_whole_history():
    bm = BlockManager(num_blocks=16, block_size=2)
    _grow(bm, "a", [1, 2, 3, 4, 5])
    bm.commit("a", [1, 2, 3, 4, 5], 4)
    # Same second block [3, 4] after a different first block: no hit on it.
    assert bm.cached_prefix_len([9, 9, 3, 4, 5]) == 0
    assert bm.cached_prefix_len([1, 2, 3, 4, 5]) == 4


def test_freed_cached_blocks_stay_findable_until_the_pool_needs_them():
    bm = BlockManager(num_blocks=4, block_size=4)
    prompt = list(range(9))  # 2 full blocks + 1
    _grow(bm, "a", prompt)
    bm.commit("a", prompt, 9)
    cached = bm.block_table("a")[:2]
    bm.free("a")
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2
    assert bm.allocate_prefix("b", prompt) == 8 and bm.block_table("b") == cached
    bm.free("b")

    # Two fresh blocks come from the free list first; the cached ones survive.
    _grow(bm, "c", [50] * 8)
    assert bm.num_cached_blocks == 2 and bm.cached_prefix_len(prompt) == 8
    # The pool now needs the evictable blocks: the tail of the chain goes first.
    bm.append_slots("c", 1)
    assert bm.num_cached_blocks == 1 and bm.cached_prefix_len(prompt) == 4
    bm.append_slots("c", 4)
    assert bm.num_cached_blocks == 0 and bm.cached_prefix_len(prompt) == 0
    assert bm.num_free_blocks == 0
    bm.check_invariants()
    assert not bm.can_append("c", 4)


def test_duplicate_history_keeps_the_first_cached_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    prompt = [7, 7, 7, 7, 8]
    _grow(bm, "a", prompt)
    _grow(bm, "b", prompt)  # computed at the same time, before either committed
    bm.commit("a", prompt, 5)
    bm.commit("b", prompt, 5)
    assert bm.num_cached_blocks == 1
    assert bm.allocate_prefix("c", prompt) == 4 and bm.block_table("c") == bm.block_table("a")[:1]
    bm.free("b")  # b's copy was never registered: it goes straight to the free list
    bm.check_invariants()
    assert bm.num_free_blocks == 8 - 2  # a holds 2 blocks; c shares a's first


def test_disabled_prefix_caching_never_hits():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    prompt = list(range(9))
    _grow(bm, "a", prompt)
    bm.commit("a", prompt, 9)
    assert bm.num_cached_blocks == 0 and bm.allocate_prefix("b", prompt) == 0
    bm.free("a")
    bm.free("b")
    bm.check_invariants()
    assert bm.num_free_blocks == 8


def test_misuse_is_refused():
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate_prefix("a", [1, 2])
    with pytest.raises(ValueError):
        bm.allocate_prefix("a", [1, 2])
    with pytest.raises(ValueError):
        bm.append_slots("a", -1)
    bm.append_slots("a", 2)
    with pytest.raises(ValueError):
        bm.commit("a", [1, 2, 3], 3)  # more than the slots it has
    with pytest.raises(ValueError):
        BlockManager(num_blocks=0)
