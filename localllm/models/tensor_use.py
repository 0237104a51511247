"""After a model is built: every tensor in the file must have been taken.

A tensor nobody asked for means the metadata and the tensors disagree (a
lowered block_count leaves the last layers' weights unread) or the file holds
weights this runtime does not implement (a bias llama.cpp would add). Either
way the output would be silently wrong, so the load is refused, as llama.cpp
refuses a file whose tensor count does not match what its loader created.
"""

from __future__ import annotations

from ..errors import GGUFError
from ..gguf import GGUFFile
from ..gguf.quote import quote


def check_all_tensors_used(g: GGUFFile, arch: str) -> None:
    unused = g.tensors.unrequested()
    if unused:
        raise GGUFError(
            f"{len(unused)} of {len(g.tensors)} tensors are not used by the {arch} model, "
            f"first {quote(unused[0])}: the metadata (block_count?) does not match the tensors, "
            f"or the file has weights localllm does not support"
        )
