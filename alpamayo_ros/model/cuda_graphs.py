"""CUDA-graph capture of fixed-shape steps, with the plain call as the fallback.

A *step* is a function without arguments that reads and writes only tensors that outlive
it (the static KV cache, token and position buffers, the flow-matching state). On CUDA a
:class:`StepRunner` warms the step up on a side stream, captures one call into a
``torch.cuda.CUDAGraph`` and afterwards replays it: one launch instead of hundreds of
kernel launches and Python calls. Random draws use a generator registered with the graph,
so re-seeding that generator before a replay makes replays reproducible. Elsewhere (CPU),
or when the capture fails, the same step function is called directly: the fixed-shape code
path is the same either way, which is what the CPU tests rely on. A failed capture is kept
(``StepRunner.failure``) for the runtime to act on (see runtime.AlpamayoRuntime.warmup).

Capture runs the step during warm-up, so a caller captures before it fills the buffers
with real state (the fast path captures at the start of a call, before the prefill).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import torch

LOG = logging.getLogger("alpamayo_ros.model")
# Warm-up calls before a capture (initialises cuBLAS workspaces and lazy kernels).
WARMUP_CALLS = 2


class OnceLog:
    """Log each distinct event once (shape changes, captures, fallbacks) and keep the text.

    sink: extra callable receiving (level, message), e.g. a ROS logger adapter.
    """

    def __init__(self, sink: Optional[Callable[[int, str], None]] = None) -> None:
        self.sink = sink
        self.messages: list[str] = []
        self._seen: set = set()

    def once(self, key, message: str, level: int = logging.INFO) -> bool:
        """Log ``message`` unless ``key`` was logged before; True when it was logged now."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self.messages.append(message)
        LOG.log(level, message)
        if self.sink is not None:
            self.sink(level, message)
        return True


class StepRunner:
    """Calls ``step()``: as a replayed CUDA graph once :meth:`capture` succeeded, else directly.

    name: for messages; reset: puts the step's index buffers back to valid values (called
    before each warm-up call and the capture); generators: torch generators the step draws
    from (registered with the graph so their seed and offset are read at each replay);
    pool: a graph memory pool shared with the runtime's other graphs
    (torch.cuda.graph_pool_handle()).
    """

    def __init__(self, step: Callable[[], None], name: str, device: torch.device,
                 generators: Sequence[torch.Generator] = (), pool=None,
                 log: Optional[OnceLog] = None,
                 reset: Optional[Callable[[], None]] = None) -> None:
        self.step = step
        self.name = name
        self.device = torch.device(device)
        self.generators = tuple(generators)
        self.pool = pool
        self.log = log or OnceLog()
        self.reset = reset or (lambda: None)
        self.graph: Optional["torch.cuda.CUDAGraph"] = None
        # Why the capture failed ("ExceptionType: message"); None while it has not.
        self.failure: Optional[str] = None
        self.capture_seconds = 0.0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def capture(self) -> bool:
        """Capture the step (CUDA only; no-op after a failure); True if captured.

        Runs the step WARMUP_CALLS times for real (warm-up) and records one call; ``reset``
        (if given) runs before each of them, so the step always starts from valid indices.
        The step's buffers hold warm-up results afterwards. A failure is kept in
        ``failure``, logged once as an error, and the step runs without a graph.
        """
        if self.graph is not None or self.failure is not None:
            return self.graph is not None
        start = time.perf_counter()
        try:
            graph = self._record()
        except Exception as exc:  # the step still runs, uncaptured; the caller decides
            self.failure = f"{type(exc).__name__}: {exc}"
            self.log.once(("capture_failed", self.name),
                          f"CUDA graph capture of {self.name} failed ({self.failure}); it "
                          "runs without a graph (about 3x slower)", logging.ERROR)
            return False
        self.graph = graph
        self.capture_seconds = time.perf_counter() - start
        self.log.once(("captured", self.name),
                      f"captured {self.name} as a CUDA graph in {self.capture_seconds:.2f} s")
        return True

    def _record(self) -> "torch.cuda.CUDAGraph":
        """Warm the step up on a side stream and record one call into a CUDA graph."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.reset()
                self.step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        self.reset()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            self.step()
        torch.cuda.synchronize(self.device)
        return graph

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step()
