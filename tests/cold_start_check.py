"""One forward pass from an empty kernel cache, run in a fresh process by test_cold_start.

Usage: python cold_start_check.py MODEL TOKENS LOGITS.npy (TOKENS: ids like 5,9,13; with NUMBA_CACHE_DIR set to an empty
directory). Prints one JSON line: the parallel compile's report (prebuild.last_build)
and the cached functions that compiled after it (none when prebuild compiled the forward
pass's own signatures).
"""

import json
import sys

import numpy as np
from numba.core import event

from localllm.gguf import open_gguf
from localllm.models import load_model, prebuild

after: set[str] = set()


class _AfterBuild(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        # a compile that added no specialization only learnt that an argument must be literal
        # (numba retries with it, and loads that specialization from the cache)
        disp = ev.data["dispatcher"]
        name = prebuild.cached_name(disp)
        if prebuild.last_build is not None and name is not None and tuple(ev.data["args"]) in disp.overloads:
            after.add(name)


event.register("numba:compile", _AfterBuild())
model = load_model(open_gguf(sys.argv[1]))
tokens = [int(t) for t in sys.argv[2].split(",")]
np.save(sys.argv[3], model.forward(tokens, model.new_cache(64), logits_rows=range(len(tokens))))
build = prebuild.last_build
print(json.dumps({"workers": build.workers, "compiled": build.compiled, "after": sorted(after)}))
