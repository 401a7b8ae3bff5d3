"""Fuzzing the public pool API with random programs (see poolprog.py for the rules).

Random sequences of calls with random arguments on BufferPool, Allocator, ObjectPool and
SlabPool, with released, freed and foreign objects and views kept or dropped: only documented
exceptions, never a crash, the counters agree with the model after every call, and everything
balances at the end. The corpus of interesting programs is replayed by test_corpus.py.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from poolprog import OPS, run_program
from relkit import fuzz_settings

# Arguments near the interesting edges: negatives, 0, size-class edges, huge and over-huge.
args = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([4095, 4096, 4097, 65536, 1 << 21, (1 << 21) + 1, 1 << 40, 1 << 63, 1 << 70]),
    st.integers(-(1 << 70), 1 << 70),
)
programs = st.fixed_dictionaries(
    {
        "config": st.lists(st.integers(0, 1000), min_size=4, max_size=4),
        "ops": st.lists(st.tuples(st.sampled_from(OPS), args, args), max_size=60),
    }
)


@fuzz_settings(1.0)
@given(program=programs)
def test_random_pool_programs(program: dict) -> None:
    run_program(program)
